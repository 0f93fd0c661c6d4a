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

/// Splits a unified diff into per-file blocks and drops those for test files.
/// Returns the kept patch and the dropped paths.
pub fn drop_test_files(patch: &str) -> (String, Vec<String>) {
    let mut kept = String::with_capacity(patch.len());
    let mut dropped = Vec::new();
    let mut keep_block = true;
    for line in patch.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix("diff --git ") {
            let path = rest
                .trim_end()
                .rfind(" b/")
                .map(|pos| rest[pos + 3..].trim_end().to_string())
                .unwrap_or_default();
            keep_block = !is_test_path(&path);
            if !keep_block {
                dropped.push(path);
            }
        }
        if keep_block {
            kept.push_str(line);
        }
    }
    (kept, dropped)
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
    fn test_file_blocks_are_dropped_from_a_patch() {
        let patch = "diff --git a/x.py b/x.py\n--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-a\n+b\ndiff --git a/tests/test_x.py b/tests/test_x.py\nnew file mode 100644\n--- /dev/null\n+++ b/tests/test_x.py\n@@ -0,0 +1 @@\n+t\n";
        let (kept, dropped) = drop_test_files(patch);
        assert_eq!(dropped, vec!["tests/test_x.py"]);
        assert!(kept.contains("b/x.py") && !kept.contains("test_x"));
    }
}
