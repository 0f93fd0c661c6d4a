//! Test-output parsers: count passed and failed tests from a runner's output.

/// Counts parsed from test output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TestCounts {
    pub passed: u32,
    pub failed: u32,
}

/// Tries each known format (unittest, pytest); None when no summary is found.
pub fn parse_test_output(output: &str) -> Option<TestCounts> {
    parse_pytest(output).or_else(|| parse_unittest(output))
}

/// `Ran N tests in …` followed by `OK` / `OK (skipped=s)` / `FAILED (failures=f, errors=e, skipped=s)`.
pub fn parse_unittest(output: &str) -> Option<TestCounts> {
    let mut ran: Option<u32> = None;
    let mut counts = None;
    for line in output.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("Ran ") {
            ran = rest.split_whitespace().next().and_then(|n| n.parse().ok());
            continue;
        }
        let Some(total) = ran else { continue };
        let verdict = if line.starts_with("OK") {
            Some(true)
        } else if line.starts_with("FAILED") {
            Some(false)
        } else {
            None
        };
        if let Some(ok) = verdict {
            let field = |name: &str| -> u32 {
                line.split(['(', ')', ','])
                    .filter_map(|part| part.trim().split_once('='))
                    .find(|(k, _)| k.trim() == name)
                    .and_then(|(_, v)| v.trim().parse().ok())
                    .unwrap_or(0)
            };
            let failed = field("failures") + field("errors") + field("unexpected successes");
            let skipped = field("skipped") + field("expected failures");
            let passed = total.saturating_sub(failed + skipped);
            let failed = if ok { 0 } else { failed.max(1) };
            counts = Some(TestCounts { passed, failed });
            ran = None;
        }
    }
    counts
}

/// pytest's final summary, e.g. `==== 3 passed, 1 failed, 2 errors in 0.12s ====`.
pub fn parse_pytest(output: &str) -> Option<TestCounts> {
    let line = output.lines().rev().find(|l| {
        let l = l.trim();
        l.starts_with('=')
            && l.ends_with('=')
            && l.contains(" in ")
            && (l.contains(" passed")
                || l.contains(" failed")
                || l.contains(" error")
                || l.contains("no tests ran"))
    })?;
    let mut counts = TestCounts::default();
    let words: Vec<&str> = line
        .split(|c: char| c == ',' || c == '=' || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .collect();
    for pair in words.windows(2) {
        let Ok(n) = pair[0].parse::<u32>() else {
            continue;
        };
        match pair[1] {
            "passed" => counts.passed += n,
            "failed" | "error" | "errors" => counts.failed += n,
            _ => {}
        }
    }
    Some(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unittest_ok() {
        let out = "test_a (t.A) ... ok\n\n----------------------------------------------------------------------\nRan 8 tests in 0.002s\n\nOK\n";
        assert_eq!(
            parse_unittest(out),
            Some(TestCounts {
                passed: 8,
                failed: 0
            })
        );
    }

    #[test]
    fn unittest_ok_with_skips() {
        let out = "Ran 5 tests in 0.002s\n\nOK (skipped=2)\n";
        assert_eq!(
            parse_unittest(out),
            Some(TestCounts {
                passed: 3,
                failed: 0
            })
        );
    }

    #[test]
    fn unittest_failures_and_errors() {
        let out = "FAIL: test_x\n----\nRan 8 tests in 0.003s\n\nFAILED (failures=2, errors=1)\n";
        assert_eq!(
            parse_unittest(out),
            Some(TestCounts {
                passed: 5,
                failed: 3
            })
        );
    }

    #[test]
    fn unittest_import_error_counts_as_failure() {
        let out = "ERROR: tests.test_feature1 (unittest.loader._FailedTest)\nImportError: cannot import name 'x'\nRan 6 tests in 0.001s\n\nFAILED (errors=1)\n";
        assert_eq!(
            parse_unittest(out),
            Some(TestCounts {
                passed: 5,
                failed: 1
            })
        );
    }

    #[test]
    fn pytest_summary() {
        let out = "tests/test_a.py::test_x PASSED\n========================= 3 passed, 1 failed, 2 errors in 0.12s =========================\n";
        assert_eq!(
            parse_pytest(out),
            Some(TestCounts {
                passed: 3,
                failed: 3
            })
        );
    }

    #[test]
    fn no_summary_is_none() {
        assert_eq!(parse_test_output("error: patch failed: a.py:3\n"), None);
    }
}
