//! What a person watching a run sees: a scrolling log where every line names its pair
//! (`llama_index_task/task8394 features_1_2 · Agent 1 → Agent 2: "…"`) and, on a terminal, a live
//! status line below it (pairs done/total, successes, agents running, spend, ETA). Off a terminal
//! (CI, `| tee`) the same lines are printed plain, with no escape codes.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::message::Message;

/// The status line being drawn, if any: log lines on stderr are written above it.
static ACTIVE_BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// How often, off a terminal, a line says how the run stands (a status line does it live).
const HEARTBEAT: Duration = Duration::from_secs(60);

/// Overrides [`HEARTBEAT`], in seconds (documented in the README).
pub const HEARTBEAT_VAR: &str = "CBENCH_PROGRESS_EVERY_SECS";

/// Longest message excerpt shown on the terminal.
const MESSAGE_EXCERPT_CHARS: usize = 100;

/// Live counters behind the status line.
#[derive(Debug, Default)]
struct Tally {
    successes: usize,
    failures: usize,
    infra_errors: usize,
    /// Finished without a grade (`--no-auto-eval`).
    ungraded: usize,
    agents_running: usize,
    /// Pairs whose agents are done and whose patches are being graded.
    grading: usize,
    spend_usd: f64,
    /// What is counted ("pairs", "files").
    unit: &'static str,
    /// Items in all.
    total: usize,
    /// The run's summary is being printed: no more heartbeat lines.
    closed: bool,
}

struct Shared {
    /// The live status line; only when stdout is a terminal.
    bar: Option<ProgressBar>,
    tally: Mutex<Tally>,
}

impl Drop for Shared {
    // A run that ends with an error never reaches `finish`: lift the status line all the same,
    // so the error is printed on a clean line.
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            if !bar.is_finished() {
                bar.finish_and_clear();
            }
            if let Ok(mut active) = ACTIVE_BAR.lock() {
                *active = None;
            }
        }
    }
}

/// Where progress lines go (stdout, or nowhere when quiet); cheap to clone.
#[derive(Clone)]
pub struct Progress {
    shared: Option<Arc<Shared>>,
    /// `repo/task<id> features_a_b · `: set for the lines of one pair.
    prefix: Option<Arc<str>>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("quiet", &self.shared.is_none())
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// How a finished item went, for the status line's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Graded and successful (or a file fetched).
    Success,
    /// Graded and failed: a result.
    Failure,
    /// Not run or not graded because of the infrastructure.
    InfraError,
    /// Ran, not graded (`--no-auto-eval`).
    Ungraded,
}

impl Progress {
    /// Progress printed to stdout unless `quiet`; no live status line.
    pub fn new(quiet: bool) -> Progress {
        Progress {
            shared: (!quiet).then(|| {
                Arc::new(Shared {
                    bar: None,
                    tally: Mutex::new(Tally::default()),
                })
            }),
            prefix: None,
        }
    }

    /// Progress over `total` items (`unit`: "pairs", "files"): with a live status line when stdout
    /// is a terminal, plain lines otherwise.
    pub fn with_status(quiet: bool, total: usize, unit: &'static str) -> Progress {
        let live = std::io::stdout().is_terminal()
            && std::env::var_os("TERM").is_some_and(|t| t != "dumb");
        Progress::build(quiet, total, unit, live)
    }

    fn build(quiet: bool, total: usize, unit: &'static str, live: bool) -> Progress {
        if quiet {
            return Progress::new(true);
        }
        let bar = live.then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stdout());
            let style = ProgressStyle::with_template(
                "{bar:24} {pos}/{len} {prefix} · {msg} · {elapsed} elapsed · ETA {eta_known}",
            )
            .map(|style| {
                // Before the first item finishes there is nothing to estimate from.
                style.with_key(
                    "eta_known",
                    |state: &indicatif::ProgressState, out: &mut dyn std::fmt::Write| {
                        let _ = if state.pos() == 0 {
                            out.write_str("–")
                        } else {
                            write!(out, "{:#}", indicatif::HumanDuration(state.eta()))
                        };
                    },
                )
            })
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("█▌ ");
            // The counters are in place before the first frame is drawn (no empty field).
            bar.set_message(status_text(&Tally {
                unit,
                total,
                ..Tally::default()
            }));
            bar.set_style(style);
            bar.set_prefix(unit);
            bar
        });
        if let (Some(bar), Ok(mut active)) = (&bar, ACTIVE_BAR.lock()) {
            *active = Some(bar.clone());
        }
        let progress = Progress {
            shared: Some(Arc::new(Shared {
                bar,
                tally: Mutex::new(Tally {
                    unit,
                    total,
                    ..Tally::default()
                }),
            })),
            prefix: None,
        };
        progress.refresh();
        if !live && unit == "pairs" {
            progress.start_heartbeat();
        }
        if let Some(bar) = progress.shared.as_ref().and_then(|s| s.bar.as_ref()) {
            // Ticks keep `elapsed` and the ETA moving while no pair finishes.
            bar.enable_steady_tick(Duration::from_millis(500));
        }
        progress
    }

    /// Off a terminal, a line every [`HEARTBEAT`] while the run is on, so a log shows that
    /// agents still run (an agent can go minutes without a step).
    fn start_heartbeat(&self) {
        let Some(shared) = &self.shared else {
            return;
        };
        let every = std::env::var(HEARTBEAT_VAR)
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(Duration::from_secs_f64)
            .unwrap_or(HEARTBEAT);
        let weak = Arc::downgrade(shared);
        let started = std::time::Instant::now();
        let spawned = std::thread::Builder::new()
            .name("cbench-progress".into())
            .spawn(move || loop {
                std::thread::sleep(every);
                let Some(shared) = weak.upgrade() else {
                    return;
                };
                let Ok(tally) = shared.tally.lock() else {
                    return;
                };
                if tally.closed {
                    return;
                }
                let done = tally.successes + tally.failures + tally.infra_errors + tally.ungraded;
                let line = format!(
                    "· still running: {done}/{total} {unit} done · {status} · {elapsed} elapsed",
                    total = tally.total,
                    unit = tally.unit,
                    status = status_text(&tally),
                    elapsed = human_duration(started.elapsed()),
                );
                drop(tally);
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            });
        if let Err(e) = spawned {
            tracing::debug!("no progress heartbeat: {e}");
        }
    }

    /// The same output, every line prefixed with `label · ` (a pair's `repo/task<id> features_a_b`).
    pub fn for_item(&self, label: &str) -> Progress {
        Progress {
            shared: self.shared.clone(),
            prefix: Some(Arc::from(format!("{label} · "))),
        }
    }

    /// Prints one line (whole lines only, so concurrent pairs do not interleave mid-line),
    /// prefixed with this item's label if any; above the status line on a terminal.
    pub fn line(&self, text: &str) {
        let Some(shared) = &self.shared else {
            return;
        };
        // Lines carry agents' words (messages, file and test names): shown, never obeyed by
        // the terminal.
        let text = printable(text);
        let text = match &self.prefix {
            Some(prefix) => text
                .lines()
                .map(|l| format!("{prefix}{}", l.trim_start()))
                .collect::<Vec<_>>()
                .join("\n"),
            None => text.to_string(),
        };
        match &shared.bar {
            Some(bar) if !bar.is_finished() => bar.println(text),
            _ => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{text}");
                let _ = out.flush();
            }
        }
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
            "{} → {}: \"{excerpt}{ellipsis}\"",
            agent_display(&message.from),
            agent_display(&message.to)
        ));
    }

    /// Sets how many items there are in all (when known only after the status line started).
    pub fn set_total(&self, total: usize) {
        self.update(|t| t.total = total);
        if let Some(bar) = self.shared.as_ref().and_then(|s| s.bar.as_ref()) {
            bar.set_length(total as u64);
        }
    }

    /// `n` agents started (or, negative, ended).
    pub fn agents_running(&self, delta: isize) {
        self.update(|t| t.agents_running = t.agents_running.saturating_add_signed(delta));
    }

    /// `n` pairs started grading (or, negative, finished it).
    pub fn grading(&self, delta: isize) {
        self.update(|t| t.grading = t.grading.saturating_add_signed(delta));
    }

    /// Money spent on LLM calls.
    pub fn spent(&self, usd: f64) {
        if usd.is_finite() && usd > 0.0 {
            self.update(|t| t.spend_usd += usd);
        }
    }

    /// One item finished.
    pub fn finished(&self, outcome: Outcome) {
        self.update(|t| match outcome {
            Outcome::Success => t.successes += 1,
            Outcome::Failure => t.failures += 1,
            Outcome::InfraError => t.infra_errors += 1,
            Outcome::Ungraded => t.ungraded += 1,
        });
        if let Some(bar) = self.shared.as_ref().and_then(|s| s.bar.as_ref()) {
            bar.inc(1);
        }
    }

    /// Removes the status line (before the summary is printed).
    pub fn finish(&self) {
        if let Some(shared) = &self.shared {
            if let Ok(mut tally) = shared.tally.lock() {
                tally.closed = true;
            }
        }
        if let Some(bar) = self.shared.as_ref().and_then(|s| s.bar.as_ref()) {
            bar.finish_and_clear();
            if let Ok(mut active) = ACTIVE_BAR.lock() {
                *active = None;
            }
        }
    }

    fn update(&self, change: impl FnOnce(&mut Tally)) {
        let Some(shared) = &self.shared else {
            return;
        };
        if let Ok(mut tally) = shared.tally.lock() {
            change(&mut tally);
        }
        self.refresh();
    }

    fn refresh(&self) {
        let Some(shared) = &self.shared else {
            return;
        };
        let (Some(bar), Ok(tally)) = (&shared.bar, shared.tally.lock()) else {
            return;
        };
        bar.set_message(status_text(&tally));
    }
}

/// `✓ 3 succeeded · ✗ 1 failed · 4 agents running · $0.12 spent`.
fn status_text(t: &Tally) -> String {
    let mut parts = vec![format!("✓ {} succeeded", t.successes)];
    if t.failures > 0 {
        parts.push(format!("✗ {} failed", t.failures));
    }
    if t.infra_errors > 0 {
        parts.push(plural(
            t.infra_errors,
            "infrastructure error",
            "infrastructure errors",
        ));
    }
    if t.ungraded > 0 {
        parts.push(format!("{} not graded", t.ungraded));
    }
    if t.unit == "pairs" {
        parts.push(plural(t.agents_running, "agent", "agents") + " running");
    }
    if t.grading > 0 {
        parts.push(format!("grading {}", plural(t.grading, "pair", "pairs")));
    }
    if t.unit == "pairs" {
        parts.push(format!("${:.2} spent", t.spend_usd));
    }
    parts.join(" · ")
}

/// `1 pair`, `2 pairs`.
pub fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `agent1` → `Agent 1`; other ids unchanged.
pub fn agent_display(id: &str) -> String {
    match id.strip_prefix("agent") {
        Some(n) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => format!("Agent {n}"),
        _ => id.to_string(),
    }
}

/// stderr for log lines (`tracing`): each line is written with the live status line lifted, so
/// a warning never lands in the middle of it.
#[derive(Debug, Clone, Copy, Default)]
pub struct StderrAboveStatus;

impl Write for StderrAboveStatus {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = ACTIVE_BAR.lock().ok().and_then(|b| b.clone());
        match bar {
            Some(bar) if !bar.is_finished() => {
                bar.suspend(|| std::io::stderr().write_all(buf))?;
            }
            _ => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for StderrAboveStatus {
    type Writer = StderrAboveStatus;

    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

/// Whether stderr may carry ANSI colours: a terminal, and `NO_COLOR` unset (no-color.org).
pub fn stderr_colors() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
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

/// `226 KiB`, `18.3 MiB`, `1.2 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", b / (1u64 << 30) as f64)
    } else if bytes >= 1 << 20 {
        format!("{:.1} MiB", b / (1u64 << 20) as f64)
    } else if bytes >= 1 << 10 {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}

/// `text` with terminal control characters (escape sequences, carriage returns, bells) and
/// bidirectional overrides written out as `\u{…}`; newlines and tabs stay.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let bidi = matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
        if (c.is_control() && c != '\n' && c != '\t') || bidi {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(
            printable("a\u{1b}[2Jb\rc\u{7}"),
            "a\\u{1b}[2Jb\\u{d}c\\u{7}"
        );
        assert_eq!(printable("x\u{202E}y"), "x\\u{202e}y");
        assert_eq!(printable("ok\tline\nnext ✓"), "ok\tline\nnext ✓");
    }

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

    #[test]
    fn the_status_line_counts_what_a_person_asks_about() {
        let mut tally = Tally {
            successes: 3,
            failures: 1,
            agents_running: 4,
            spend_usd: 0.123,
            unit: "pairs",
            ..Tally::default()
        };
        assert_eq!(
            status_text(&tally),
            "✓ 3 succeeded · ✗ 1 failed · 4 agents running · $0.12 spent"
        );
        // While the last pairs are graded no agent runs: the line says what is going on.
        tally.agents_running = 0;
        tally.grading = 1;
        tally.infra_errors = 1;
        assert_eq!(
            status_text(&tally),
            "✓ 3 succeeded · ✗ 1 failed · 1 infrastructure error · 0 agents running · \
             grading 1 pair · $0.12 spent"
        );
        // Pairs run without grading count as done, not as successes or failures.
        let ungraded = Tally {
            ungraded: 2,
            agents_running: 1,
            unit: "pairs",
            ..Tally::default()
        };
        assert_eq!(
            status_text(&ungraded),
            "✓ 0 succeeded · 2 not graded · 1 agent running · $0.00 spent"
        );
    }
}
