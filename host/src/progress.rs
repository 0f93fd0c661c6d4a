//! Terminal progress in the documented shape: header, `[Task i/N] …`,
//! `Agent 1 → Agent 2: "…"`, `✓ Complete in …`, summary.

use std::io::Write;
use std::time::Duration;

use crate::messaging::Message;

/// Longest message excerpt shown on the terminal.
const MESSAGE_EXCERPT_CHARS: usize = 100;

/// Where progress lines go (stdout, or nowhere when quiet).
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    quiet: bool,
}

impl Progress {
    /// Progress printed to stdout unless `quiet`.
    pub fn new(quiet: bool) -> Progress {
        Progress { quiet }
    }

    /// Prints one line (whole lines only, so concurrent pairs do not interleave mid-line).
    pub fn line(&self, text: &str) {
        if self.quiet {
            return;
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }

    /// `Agent 1 → Agent 2: "…"`.
    pub fn message(&self, message: &Message) {
        let flat: String = message
            .content
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let excerpt: String = flat.chars().take(MESSAGE_EXCERPT_CHARS).collect();
        let ellipsis = if flat.chars().count() > MESSAGE_EXCERPT_CHARS {
            "…"
        } else {
            ""
        };
        self.line(&format!(
            "  {} → {}: \"{excerpt}{ellipsis}\"",
            agent_display(&message.from),
            agent_display(&message.to)
        ));
    }
}

/// `agent1` → `Agent 1`; other ids unchanged.
pub fn agent_display(id: &str) -> String {
    match id.strip_prefix("agent") {
        Some(n) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => format!("Agent {n}"),
        _ => id.to_string(),
    }
}

/// `3m 42s`, `12.3s`, `1h 02m`.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 3600 {
        format!("{}h {:02}m", secs / 3600, (secs % 3600) / 60)
    } else if secs >= 60 {
        format!("{}m {}s", secs / 60, secs % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_the_docs() {
        assert_eq!(human_duration(Duration::from_secs(222)), "3m 42s");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(human_duration(Duration::from_secs(3720)), "1h 02m");
    }

    #[test]
    fn agent_ids_display_as_names() {
        assert_eq!(agent_display("agent2"), "Agent 2");
        assert_eq!(agent_display("solo"), "solo");
    }
}
