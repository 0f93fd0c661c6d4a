//! What a message says, read by syntax: its sentences, which are questions, and which claim
//! something checkable about the sender's own work ("I will change X", "I won't touch Y",
//! "I added Z"), with the files and names each claim is about.

use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// What a claim says the sender does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimKind {
    /// "I will change / add / take X": a promise about the sender's patch.
    Intends,
    /// "I won't touch X": a promise the sender's patch leaves X alone.
    Avoids,
    /// "I added / changed X": a report about the sender's patch.
    Did,
}

/// One claim in a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub kind: ClaimKind,
    /// The sentence, as written.
    pub sentence: String,
    /// Files it names (`textkit/strings.py`, `vowels.py`).
    pub files: Vec<String>,
    /// Functions, classes or other names it names (`reverse_words`).
    pub names: Vec<String>,
}

/// The sentences of a message: ended by `?`, `!`, a line break, or a `.` before a space and
/// a capital (so `strings.py` stays whole).
pub fn sentences(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut current = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c == '\n' {
            push_sentence(&mut out, &mut current);
            continue;
        }
        current.push(c);
        let next = chars.get(i + 1).copied();
        let ends = match c {
            '?' | '!' => next.is_none_or(char::is_whitespace),
            '.' => match next {
                None => true,
                Some(n) if n.is_whitespace() => chars
                    .get(i + 2)
                    .is_none_or(|after| after.is_uppercase() || after.is_whitespace()),
                _ => false,
            },
            _ => false,
        };
        if ends {
            push_sentence(&mut out, &mut current);
        }
    }
    push_sentence(&mut out, &mut current);
    out
}

fn push_sentence(out: &mut Vec<String>, current: &mut String) {
    let sentence = current.trim();
    if !sentence.is_empty() {
        out.push(sentence.to_string());
    }
    current.clear();
}

/// The questions of a message: its sentences ending in `?`.
pub fn questions(text: &str) -> Vec<String> {
    sentences(text)
        .into_iter()
        .filter(|s| s.trim_end_matches(['"', '\'', ')', '`']).ends_with('?'))
        .collect()
}

fn claim_patterns() -> &'static [(ClaimKind, Regex)] {
    static PATTERNS: OnceLock<Vec<(ClaimKind, Regex)>> = OnceLock::new();
    PATTERNS.get_or_init(|| {
        let who = r"(?:^|[\s,;:(])(?:i|we)";
        let change = r"(?:touch|change|modify|edit|update|rewrite|alter)";
        let make = r"(?:change|modify|edit|update|add|create|write|implement|rewrite|put|append|take|own|handle|work on)";
        let done = r"(?:added|created|wrote|written|changed|modified|updated|implemented|edited|appended|put|rewrote|renamed)";
        let build = |p: String| Regex::new(&format!("(?i){p}")).expect("a valid claim pattern");
        vec![
            (
                ClaimKind::Avoids,
                build(format!(
                    r"{who}\s*(?:won'?t|will not|shall not|am not going to|'m not going to|do not|don'?t|will stay away from|'ll stay away from|will leave)\s+(?:{change}\b|(?:alone\b))?"
                )),
            ),
            (
                ClaimKind::Did,
                build(format!(r"{who}\s*(?:have\s+|'ve\s+|just\s+)*{done}\b")),
            ),
            (
                ClaimKind::Intends,
                build(format!(
                    r"{who}\s*(?:'ll|will|am going to|'m going to|plan to|intend to|am|'m)?\s*(?:be\s+)?(?:also\s+)?{make}(?:ing)?\b"
                )),
            ),
        ]
    })
}

fn file_pattern() -> &'static Regex {
    static FILE: OnceLock<Regex> = OnceLock::new();
    FILE.get_or_init(|| {
        Regex::new(r"(?:[A-Za-z0-9_.-]+/)*[A-Za-z0-9_-]+\.[A-Za-z][A-Za-z0-9]{0,4}\b")
            .expect("a valid path pattern")
    })
}

fn name_pattern() -> &'static Regex {
    static NAME: OnceLock<Regex> = OnceLock::new();
    NAME.get_or_init(|| {
        Regex::new(
            r"`([A-Za-z_][A-Za-z0-9_]*)(?:\(\))?`|\b([A-Za-z_][A-Za-z0-9_]*)\(\)|(?i:\b(?:function|method|class|def|func|struct|type)\s+)`?([A-Za-z_][A-Za-z0-9_]*)",
        )
        .expect("a valid name pattern")
    })
}

/// Files and names read from one claim at most.
const MAX_TARGETS: usize = 20;

/// The claims of a message (one per sentence at most: the first pattern that reads it).
pub fn claims(text: &str) -> Vec<Claim> {
    let mut out = Vec::new();
    for sentence in sentences(text) {
        if sentence.trim_end().ends_with('?') {
            continue;
        }
        let Some((kind, rest)) = claim_patterns().iter().find_map(|(kind, re)| {
            re.find(&sentence)
                .map(|m| (*kind, sentence[m.end()..].to_string()))
        }) else {
            continue;
        };
        let files: Vec<String> = file_pattern()
            .find_iter(&rest)
            .take(MAX_TARGETS)
            .map(|m| m.as_str().trim_start_matches("./").to_string())
            .filter(|f| !f.chars().all(|c| c.is_ascii_digit() || c == '.'))
            .collect();
        let mut names: Vec<String> = Vec::new();
        for caps in name_pattern().captures_iter(&rest) {
            if let Some(name) = caps.get(1).or(caps.get(2)).or(caps.get(3)) {
                let name = name.as_str().to_string();
                // `strings.py` read as a name is the file's.
                if !files.iter().any(|f| f.contains(&name)) && !names.contains(&name) {
                    names.push(name);
                }
                if names.len() >= MAX_TARGETS {
                    break;
                }
            }
        }
        out.push(Claim {
            kind,
            sentence,
            files,
            names,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_keep_paths_whole() {
        assert_eq!(
            sentences("I take strings.py. Which lines will you touch? ok!\nnext line"),
            [
                "I take strings.py.",
                "Which lines will you touch?",
                "ok!",
                "next line"
            ]
        );
        assert_eq!(
            questions("Done. Are you editing `foo`? Thanks."),
            ["Are you editing `foo`?"]
        );
    }

    #[test]
    fn claims_name_their_kind_files_and_names() {
        let c = claims("I am agent2; I will change: textkit/strings.py");
        assert_eq!(c.len(), 1);
        assert_eq!(
            (c[0].kind, c[0].files.clone()),
            (ClaimKind::Intends, vec!["textkit/strings.py".to_string()])
        );
        let c = claims("New file vowels.py, I won't touch strings.py.");
        assert_eq!(
            (c[0].kind, c[0].files.clone()),
            (ClaimKind::Avoids, vec!["strings.py".to_string()])
        );
        let c = claims("I added `count_vowels()` and a test file tests/test_vowels.py.");
        assert_eq!(c[0].kind, ClaimKind::Did);
        assert_eq!(c[0].names, ["count_vowels"]);
        assert_eq!(c[0].files, ["tests/test_vowels.py"]);
        let c = claims("I'll also add a docstring to the function reverse_words.");
        assert_eq!(
            (c[0].kind, c[0].names.clone()),
            (ClaimKind::Intends, vec!["reverse_words".to_string()])
        );
        let c = claims("I will write a docstring.");
        assert!(c[0].files.is_empty() && c[0].names.is_empty());
        assert!(claims("Which lines will you touch?").is_empty());
        assert!(claims("The tests pass on 3.11.").is_empty());
    }
}
