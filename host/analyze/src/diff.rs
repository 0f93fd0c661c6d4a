//! What a unified diff changed: the files, the line ranges of the base each hunk replaced,
//! the function a hunk sits in (git's hunk-header context), and the names the added lines
//! define. Read as data: an agent wrote it.

use std::collections::BTreeSet;

/// One hunk: where it sits in the base and what it says it is inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hunk {
    /// First base line it replaces (1-based) and how many.
    pub old_start: u64,
    pub old_len: u64,
    /// Git's context for the hunk (`def reverse_words(text):`), when it printed one.
    pub context: Option<String>,
    /// Base lines it removes (a hunk that only adds changes no existing function).
    pub removed: u64,
}

/// One file of a patch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileChange {
    /// The path (the new one; the old one when deleted).
    pub path: String,
    pub hunks: Vec<Hunk>,
    /// Lines the patch adds to it.
    pub added: Vec<String>,
}

/// A patch, read.
#[derive(Debug, Clone, Default)]
pub struct PatchSummary {
    pub files: Vec<FileChange>,
    /// Names defined in added lines or changed by a hunk (computed once).
    symbols: BTreeSet<String>,
    /// Every identifier-like word of the added lines.
    words: std::collections::HashSet<String>,
}

impl PatchSummary {
    /// Reads `text` (a `git diff`); what is not a diff line is ignored. Inside a hunk, lines are
    /// content until the hunk's line counts are used up, so an added line that reads like a
    /// header (`++ b/x` added is `+++ b/x`) is content.
    pub fn parse(text: &str) -> PatchSummary {
        let mut files: Vec<FileChange> = Vec::new();
        // Base and new lines left in the current hunk.
        let mut left: (u64, u64) = (0, 0);
        let mut after_old_header = false;
        for line in text.lines() {
            if left.0 > 0 || left.1 > 0 {
                let file = files.last_mut();
                match line.as_bytes().first() {
                    Some(b'+') => {
                        left.1 = left.1.saturating_sub(1);
                        if let Some(file) = file {
                            file.added.push(line[1..].to_string());
                        }
                    }
                    Some(b'-') => {
                        left.0 = left.0.saturating_sub(1);
                        if let Some(hunk) = file.and_then(|f| f.hunks.last_mut()) {
                            hunk.removed += 1;
                        }
                    }
                    // `\ No newline at end of file`
                    Some(b'\\') => {}
                    _ => {
                        left.0 = left.0.saturating_sub(1);
                        left.1 = left.1.saturating_sub(1);
                    }
                }
                continue;
            }
            if let Some(rest) = line.strip_prefix("diff --git ") {
                // `a/x b/x`: the b side (the +++ line refines it).
                let path = rest
                    .rsplit_once(" b/")
                    .map(|(_, b)| b.to_string())
                    .unwrap_or_default();
                files.push(FileChange {
                    path,
                    ..FileChange::default()
                });
            } else if let Some(path) = line.strip_prefix("+++ b/").filter(|_| after_old_header) {
                if let Some(file) = files.last_mut() {
                    file.path = path.trim_end().to_string();
                }
            } else if line.starts_with("@@ ") {
                if let Some((hunk, new_len)) = parse_hunk_header(line) {
                    left = (hunk.old_len, new_len);
                    if let Some(file) = files.last_mut() {
                        file.hunks.push(hunk);
                    }
                }
            }
            after_old_header = line.starts_with("--- ");
        }
        files.retain(|f| !f.path.is_empty());
        let mut symbols = BTreeSet::new();
        let mut words = std::collections::HashSet::new();
        for file in &files {
            for line in &file.added {
                if let Some(name) = defined_name(line) {
                    symbols.insert(name);
                }
                for word in line
                    .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .filter(|w| !w.is_empty())
                {
                    if !words.contains(word) {
                        words.insert(word.to_string());
                    }
                }
            }
            // Git's context is the nearest definition above the hunk: the function changed
            // only when the hunk removes lines of it.
            for hunk in file.hunks.iter().filter(|h| h.removed > 0) {
                if let Some(name) = hunk.context.as_deref().and_then(defined_name) {
                    symbols.insert(name);
                }
            }
        }
        PatchSummary {
            files,
            symbols,
            words,
        }
    }

    /// Paths the patch touches.
    pub fn paths(&self) -> BTreeSet<String> {
        self.files.iter().map(|f| f.path.clone()).collect()
    }

    /// Whether the patch touches `target` (a path, or a path's tail: `strings.py`).
    pub fn touches(&self, target: &str) -> bool {
        let target = target.trim_start_matches("./");
        self.files.iter().any(|f| path_matches(&f.path, target))
    }

    /// The patch's paths that `target` names.
    pub fn matching_paths(&self, target: &str) -> Vec<String> {
        let target = target.trim_start_matches("./");
        self.files
            .iter()
            .filter(|f| path_matches(&f.path, target))
            .map(|f| f.path.clone())
            .collect()
    }

    /// Names the patch defines (in added lines) or changes (a hunk that removes lines).
    pub fn symbols(&self) -> &BTreeSet<String> {
        &self.symbols
    }

    /// Whether `name` is defined or changed by the patch, or is a word of a line it adds.
    pub fn mentions(&self, name: &str) -> bool {
        self.symbols.contains(name) || self.words.contains(name)
    }
}

/// `src/textkit/strings.py` matches `strings.py`, `textkit/strings.py` and itself.
pub fn path_matches(path: &str, target: &str) -> bool {
    !target.is_empty() && (path == target || path.ends_with(&format!("/{target}")))
}

/// `@@ -24,3 +24,8 @@ def title_case(text):` → its base range and context, and its new length.
fn parse_hunk_header(line: &str) -> Option<(Hunk, u64)> {
    let rest = line.strip_prefix("@@ -")?;
    let (old, rest) = rest.split_once(' ')?;
    let range = |text: &str| -> Option<(u64, u64)> {
        match text.split_once(',') {
            Some((start, len)) => Some((start.parse().ok()?, len.parse().ok()?)),
            None => Some((text.parse().ok()?, 1)),
        }
    };
    let (old_start, old_len) = range(old)?;
    let (new, rest) = rest.strip_prefix('+')?.split_once(' ')?;
    let (_, new_len) = range(new)?;
    let context = rest
        .strip_prefix("@@")
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty());
    Some((
        Hunk {
            old_start,
            old_len,
            context,
            removed: 0,
        },
        new_len,
    ))
}

/// The name a line defines: `def f(`, `class C`, `func F(` / `func (r T) F(`, `function f(`,
/// `fn f(`, `const f =`/`let f =` (JS), `type T struct`.
pub fn defined_name(line: &str) -> Option<String> {
    let line = line.trim_start();
    let line = line
        .strip_prefix("async ")
        .or_else(|| line.strip_prefix("export "))
        .or_else(|| line.strip_prefix("pub "))
        .unwrap_or(line);
    let after = [
        "def ",
        "class ",
        "function ",
        "fn ",
        "type ",
        "const ",
        "let ",
    ]
    .iter()
    .find_map(|k| line.strip_prefix(k))
    .or_else(|| {
        let rest = line.strip_prefix("func ")?;
        // A Go method: `func (r *T) Name(`.
        Some(match rest.strip_prefix('(') {
            Some(receiver) => receiver.split_once(')')?.1.trim_start(),
            None => rest,
        })
    })?;
    let name: String = after
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

/// `name` as a whole word of `line`.
pub fn contains_word(line: &str, name: &str) -> bool {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    line.match_indices(name).any(|(i, _)| {
        let before = line[..i].chars().next_back();
        let after = line[i + name.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

/// Files both patches change, with the hunks of each that overlap in the base (by line range)
/// and the functions they sit in.
pub fn overlaps(a: &PatchSummary, b: &PatchSummary) -> Vec<Overlap> {
    let mut out = Vec::new();
    for fa in &a.files {
        let Some(fb) = b.files.iter().find(|f| f.path == fa.path) else {
            continue;
        };
        let mut functions = BTreeSet::new();
        let mut overlapping = 0;
        for ha in &fa.hunks {
            for hb in &fb.hunks {
                // Ranges of base lines, each at least one line wide (an insertion after line N).
                let (a0, a1) = (ha.old_start, ha.old_start.saturating_add(ha.old_len.max(1)));
                let (b0, b1) = (hb.old_start, hb.old_start.saturating_add(hb.old_len.max(1)));
                if a0 < b1 && b0 < a1 {
                    overlapping += 1;
                    // A hunk's context names a function it changes only when it removes lines.
                    for hunk in [ha, hb].into_iter().filter(|h| h.removed > 0) {
                        if let Some(name) = hunk.context.as_deref().and_then(defined_name) {
                            functions.insert(name);
                        }
                    }
                }
            }
        }
        out.push(Overlap {
            file: fa.path.clone(),
            overlapping_hunks: overlapping,
            functions: functions.into_iter().collect(),
        });
    }
    out
}

/// A file two agents both changed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Overlap {
    pub file: String,
    /// Pairs of hunks whose base line ranges overlap (0: the same file, different places).
    pub overlapping_hunks: usize,
    /// Functions the overlapping hunks sit in.
    pub functions: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATCH: &str = "diff --git a/textkit/strings.py b/textkit/strings.py\nindex 1..2 100644\n--- a/textkit/strings.py\n+++ b/textkit/strings.py\n@@ -24,1 +24,4 @@ def is_blank(text):\n     return not text.strip()\n+\n+def reverse_words(text):\n+    return text\ndiff --git a/textkit/vowels.py b/textkit/vowels.py\nnew file mode 100644\n--- /dev/null\n+++ b/textkit/vowels.py\n@@ -0,0 +1,2 @@\n+class Vowels:\n+    pass\n";

    #[test]
    fn files_hunks_and_names_are_read_from_a_git_diff() {
        let p = PatchSummary::parse(PATCH);
        assert_eq!(
            p.paths().into_iter().collect::<Vec<_>>(),
            ["textkit/strings.py", "textkit/vowels.py"]
        );
        assert!(p.touches("strings.py") && p.touches("textkit/vowels.py"));
        assert!(!p.touches("kit/strings.py") && !p.touches("numbers.py"));
        let symbols = p.symbols();
        for name in ["reverse_words", "Vowels"] {
            assert!(symbols.contains(name), "{name}: {symbols:?}");
        }
        // Appended after is_blank, which it does not change.
        assert!(!symbols.contains("is_blank"), "{symbols:?}");
        let edit = PatchSummary::parse("diff --git a/a.py b/a.py\n--- a/a.py\n+++ b/a.py\n@@ -3,2 +3,2 @@ def is_blank(text):\n-    return 1\n+    return 2\n");
        assert!(edit.symbols().contains("is_blank"));
        assert!(p.mentions("text") && !p.mentions("tex"));
        assert_eq!(p.files[0].hunks[0].old_start, 24);
    }

    #[test]
    fn an_added_line_that_reads_like_a_header_is_content() {
        let forged = "diff --git a/textkit/strings.py b/textkit/strings.py\n--- a/textkit/strings.py\n+++ b/textkit/strings.py\n@@ -1,1 +1,3 @@\n x\n+++ b/textkit/vowels.py\n+y\n";
        let p = PatchSummary::parse(forged);
        assert_eq!(
            p.paths().into_iter().collect::<Vec<_>>(),
            ["textkit/strings.py"]
        );
        assert_eq!(p.files[0].added, ["++ b/textkit/vowels.py", "y"]);
    }

    #[test]
    fn overlapping_hunks_are_told_from_edits_elsewhere_in_the_same_file() {
        let a = PatchSummary::parse(PATCH);
        let near = PatchSummary::parse("diff --git a/textkit/strings.py b/textkit/strings.py\n--- a/textkit/strings.py\n+++ b/textkit/strings.py\n@@ -24,1 +24,2 @@ def is_blank(text):\n+x\n");
        let far = PatchSummary::parse("diff --git a/textkit/strings.py b/textkit/strings.py\n--- a/textkit/strings.py\n+++ b/textkit/strings.py\n@@ -2,1 +2,2 @@\n+y\n");
        assert_eq!(overlaps(&a, &near)[0].overlapping_hunks, 1);
        // Both only add after is_blank: no function of the base is changed.
        assert!(overlaps(&a, &near)[0].functions.is_empty());
        let edit = PatchSummary::parse("diff --git a/textkit/strings.py b/textkit/strings.py\n--- a/textkit/strings.py\n+++ b/textkit/strings.py\n@@ -24,1 +24,1 @@ def is_blank(text):\n-    x\n+    y\n");
        assert_eq!(overlaps(&a, &edit)[0].functions, ["is_blank"]);
        assert_eq!(overlaps(&a, &far)[0].overlapping_hunks, 0);
    }

    #[test]
    fn definitions_in_several_languages_are_named() {
        for (line, name) in [
            ("def f(x):", "f"),
            ("async def g():", "g"),
            ("class C(Base):", "C"),
            ("func (r *Router) Mount(p string) {", "Mount"),
            ("func New() *Mux {", "New"),
            ("export function h() {", "h"),
            ("pub fn k() {", "k"),
        ] {
            assert_eq!(defined_name(line).as_deref(), Some(name), "{line}");
        }
        assert_eq!(defined_name("return x"), None);
    }
}
