//! Which paths are test files, for Python, Go, TypeScript/JavaScript and Rust;
//! agents' edits to test files are dropped before grading so the hidden tests
//! apply to the tree they were written for.

/// True for paths a test runner treats as tests.
pub fn is_test_path(path: &str) -> bool {
    let path = path.trim_start_matches("./");
    let file = path.rsplit('/').next().unwrap_or(path);
    let dirs: Vec<&str> = path.split('/').rev().skip(1).collect();
    let in_dir = |names: &[&str]| dirs.iter().any(|d| names.contains(d));
    // Python: test_*.py, *_test.py, conftest.py, anything under tests/ or test/.
    if file.ends_with(".py")
        && (file.starts_with("test_")
            || file.ends_with("_test.py")
            || file == "conftest.py"
            || in_dir(&["tests", "test"]))
    {
        return true;
    }
    // Go: *_test.go and testdata/.
    if file.ends_with("_test.go") || in_dir(&["testdata"]) {
        return true;
    }
    // TypeScript / JavaScript: *.test.*, *.spec.*, __tests__/.
    let js = [".ts", ".tsx", ".js", ".jsx", ".mjs", ".cjs", ".mts", ".cts"];
    if js.iter().any(|ext| file.ends_with(ext)) {
        let stem = file.rsplit_once('.').map(|(s, _)| s).unwrap_or(file);
        if stem.ends_with(".test") || stem.ends_with(".spec") || in_dir(&["__tests__"]) {
            return true;
        }
    }
    // Rust: integration tests live in tests/ next to a crate's src/.
    if file.ends_with(".rs") && in_dir(&["tests"]) {
        return true;
    }
    false
}

/// Splits a unified diff into per-file blocks and drops those for test files and for files
/// that would replace the test tooling (`tooling`); a block is dropped when any path it names
/// is one: its header, `rename`/`copy` lines, `---`/`+++`.
/// Returns the kept patch and the dropped paths.
pub fn drop_test_files(patch: &str) -> (String, Vec<String>) {
    let mut kept = String::with_capacity(patch.len());
    let mut dropped = Vec::new();
    let mut blocks: Vec<&str> = Vec::new();
    let mut start = 0;
    for (offset, _) in patch.match_indices("diff --git ") {
        if offset > start && patch[..offset].ends_with('\n') {
            blocks.push(&patch[start..offset]);
            start = offset;
        }
    }
    blocks.push(&patch[start..]);
    for block in blocks {
        let paths = block_paths(block);
        match paths
            .iter()
            .find(|p| is_test_path(p) || crate::tooling::replaces_test_tooling(p))
        {
            Some(_) => dropped.push(paths.last().cloned().unwrap_or_default()),
            None => kept.push_str(block),
        }
    }
    (kept, dropped)
}

/// Every path a file block of a diff names, from its header lines (never its hunks).
fn block_paths(block: &str) -> Vec<String> {
    let mut lines = block.lines();
    let mut paths = Vec::new();
    let Some(header) = lines.next().and_then(|l| l.strip_prefix("diff --git ")) else {
        return paths;
    };
    // `a/P b/P`: split in the middle, so a path holding " b/" is read whole.
    let header = header.trim_end();
    let n = header.len();
    let symmetric = (n >= 5 && (n - 5) % 2 == 0)
        .then_some((n - 5) / 2)
        .filter(|k| header.is_char_boundary(2 + k) && header.is_char_boundary(5 + k))
        .filter(|k| header.starts_with("a/") && &header[2 + k..5 + k] == " b/")
        .filter(|k| header[2..2 + k] == header[5 + k..]);
    match symmetric {
        Some(k) => paths.push(header[2..2 + k].to_string()),
        None => {
            if let Some(pos) = header.rfind(" b/") {
                paths.push(header[2.min(pos)..pos].to_string());
                paths.push(header[pos + 3..].to_string());
            }
        }
    }
    for line in lines {
        if line.starts_with("@@") || line.starts_with("GIT binary patch") {
            break;
        }
        for prefix in [
            "rename from ",
            "rename to ",
            "copy from ",
            "copy to ",
            "--- a/",
            "+++ b/",
        ] {
            if let Some(path) = line.strip_prefix(prefix) {
                paths.push(path.trim_end().to_string());
            }
        }
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_test_paths_of_each_language() {
        for p in [
            "tests/test_core.py",
            "src/pkg/foo_test.py",
            "conftest.py",
            "tests/helpers/data.py",
            "mux_test.go",
            "middleware/testdata/x.txt",
            "src/__tests__/useForm.test.tsx",
            "src/logic/getValue.spec.ts",
            "src/__tests__/helpers.ts",
            "crates/typst/tests/str.rs",
        ] {
            assert!(is_test_path(p), "{p}");
        }
        for p in [
            "src/pkg/core.py",
            "mux.go",
            "src/useForm.ts",
            "crates/typst/src/lib.rs",
            "docs/testing.md",
        ] {
            assert!(!is_test_path(p), "{p}");
        }
    }

    #[test]
    fn paths_holding_space_b_slash_and_renames_are_read_whole() {
        let patch = "diff --git a/tests/q b/helper.py b/tests/q b/helper.py\nnew file mode 100644\n--- /dev/null\n+++ b/tests/q b/helper.py\n@@ -0,0 +1 @@\n+x\n\
diff --git a/tests/moved.py b/z b/tests/moved.py\nsimilarity index 100%\nrename from tests/moved.py\nrename to z b/tests/moved.py\n\
diff --git a/src/ok.py b/src/ok.py\n--- a/src/ok.py\n+++ b/src/ok.py\n@@ -1 +1 @@\n-a\n+b\n";
        let (kept, dropped) = drop_test_files(patch);
        assert_eq!(
            dropped,
            vec![
                "tests/q b/helper.py".to_string(),
                "z b/tests/moved.py".to_string()
            ]
        );
        assert!(kept.starts_with("diff --git a/src/ok.py") && !kept.contains("helper"));
    }

    #[test]
    fn test_file_blocks_are_dropped_from_a_patch() {
        let patch = "diff --git a/x.py b/x.py\n--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-a\n+b\ndiff --git a/tests/test_x.py b/tests/test_x.py\nnew file mode 100644\n--- /dev/null\n+++ b/tests/test_x.py\n@@ -0,0 +1 @@\n+t\n";
        let (kept, dropped) = drop_test_files(patch);
        assert_eq!(dropped, vec!["tests/test_x.py"]);
        assert!(kept.contains("b/x.py") && !kept.contains("test_x"));
    }
}
