//! Test-output parsers: count passed and failed tests from a runner's output.

/// Counts parsed from test output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TestCounts {
    pub passed: u32,
    pub failed: u32,
}

/// Tries each known format on the output without colour codes (runners that force
/// colour, like Pillow's pytest config, would otherwise hide their summary); None when
/// no summary is found.
pub fn parse_test_output(output: &str) -> Option<TestCounts> {
    let plain = strip_ansi(output);
    let output = plain.as_str();
    parse_cargo(output)
        .or_else(|| parse_go(output))
        .or_else(|| parse_jest(output))
        .or_else(|| parse_vitest(output))
        .or_else(|| parse_pytest(output))
        .or_else(|| parse_unittest(output))
}

/// Removes ANSI escape sequences (colours, cursor moves).
fn strip_ansi(text: &str) -> String {
    String::from_utf8_lossy(&strip_ansi_escapes::strip(text)).into_owned()
}

/// Numbers before the given words in one summary line, e.g. `3 passed, 1 failed`.
fn count_before(line: &str, words: &[&str]) -> u32 {
    let tokens: Vec<&str> = line
        .split(|c: char| {
            c == ',' || c == ';' || c == '|' || c == '(' || c == ')' || c.is_whitespace()
        })
        .filter(|w| !w.is_empty())
        .collect();
    tokens
        .windows(2)
        .filter(|pair| words.contains(&pair[1]))
        .filter_map(|pair| pair[0].parse::<u32>().ok())
        .sum()
}

/// cargo test: every `test result: ok. N passed; M failed; …` line, summed.
pub fn parse_cargo(output: &str) -> Option<TestCounts> {
    let mut found = false;
    let mut counts = TestCounts::default();
    for line in output
        .lines()
        .filter(|l| l.trim_start().starts_with("test result:"))
    {
        found = true;
        counts.passed += count_before(line, &["passed"]);
        counts.failed += count_before(line, &["failed"]);
    }
    found.then_some(counts)
}

/// go test: `--- PASS:` / `--- FAIL:` lines (-v); plain output (which prints failing tests but
/// not passing ones) counts packages on both sides, `ok  <pkg>` and `FAIL <pkg>`, so passes
/// and failures are the same unit.
pub fn parse_go(output: &str) -> Option<TestCounts> {
    let mut counts = TestCounts::default();
    let (mut verbose_lines, mut ok_packages, mut failed_packages) = (0u32, 0u32, 0u32);
    for line in output.lines() {
        let t = line.trim_start();
        if t.starts_with("--- PASS:") {
            counts.passed += 1;
            verbose_lines += 1;
        } else if t.starts_with("--- FAIL:") {
            counts.failed += 1;
            verbose_lines += 1;
        } else if line.starts_with("ok  \t") || line.starts_with("ok\t") || line.starts_with("ok  ")
        {
            ok_packages += 1;
        } else if line.starts_with("FAIL\t") {
            failed_packages += 1;
        }
    }
    if verbose_lines == 0 && ok_packages + failed_packages == 0 {
        return None;
    }
    let verbose = counts.passed > 0 || output.contains("=== RUN");
    if !verbose {
        return Some(TestCounts {
            passed: ok_packages,
            failed: failed_packages.max(u32::from(counts.failed > 0)),
        });
    }
    // A package that failed to build has no test lines: it still counts as a failure.
    if counts.failed == 0 && failed_packages > 0 {
        counts.failed = failed_packages;
    }
    Some(counts)
}

/// jest: `Tests:       1 failed, 12 passed, 13 total`.
pub fn parse_jest(output: &str) -> Option<TestCounts> {
    let line = output
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with("Tests:"))?;
    Some(TestCounts {
        passed: count_before(line, &["passed"]),
        failed: count_before(line, &["failed"]),
    })
}

/// vitest: ` Tests  12 passed | 1 failed (13)`.
pub fn parse_vitest(output: &str) -> Option<TestCounts> {
    let line = output.lines().rev().find(|l| {
        let t = strip_ansi(l);
        let t = t.trim_start();
        t.starts_with("Tests ") && (t.contains(" passed") || t.contains(" failed"))
    })?;
    let line = strip_ansi(line);
    Some(TestCounts {
        passed: count_before(&line, &["passed"]),
        failed: count_before(&line, &["failed"]),
    })
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

/// pytest's final summaries, e.g. `==== 3 passed, 1 failed, 2 errors in 0.12s ====`,
/// summed over every pytest invocation of the runner (some call it twice).
pub fn parse_pytest(output: &str) -> Option<TestCounts> {
    let mut found = false;
    let mut counts = TestCounts::default();
    for line in output.lines().filter(|l| {
        let l = l.trim();
        l.starts_with('=')
            && l.ends_with('=')
            && l.contains(" in ")
            && (l.contains(" passed")
                || l.contains(" failed")
                || l.contains(" error")
                || l.contains("no tests ran"))
    }) {
        found = true;
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
    }
    found.then_some(counts)
}

/// The first failing test, in CooperBench's eval.json style: `AssertionError in test_edge`
/// when the exception type is known, else `test_edge failed`. None when no failing test is
/// named in the output.
///
/// Only the format whose summary the counts came from is read (the order of
/// [`parse_test_output`]), so a line another tool would print means nothing. The tests run
/// the agent's code, which can print anything: this names a failure, it never decides one.
pub fn first_failure(output: &str) -> Option<String> {
    let plain = strip_ansi(output);
    let text = plain.as_str();
    let lines: Vec<&str> = text.lines().collect();
    if parse_cargo(text).is_some() {
        cargo_failure(&lines)
    } else if parse_go(text).is_some() {
        go_failure(&lines)
    } else if parse_jest(text).is_some() {
        jest_failure(&lines)
    } else if parse_vitest(text).is_some() {
        vitest_failure(&lines)
    } else if parse_pytest(text).is_some() {
        pytest_failure(&lines)
    } else if parse_unittest(text).is_some() {
        unittest_failure(&lines)
    } else {
        None
    }
}

/// Every failing test `output` names, in order, each once (the format read is the one
/// [`first_failure`] reads). Data from the agent's code: it names, it never decides.
pub fn failing_tests(output: &str) -> Vec<String> {
    /// The formats, in [`first_failure`]'s order.
    enum Format {
        Cargo,
        Go,
        Jest,
        Vitest,
        Pytest,
        Unittest,
    }
    let plain = strip_ansi(output);
    let text = plain.as_str();
    // The format is decided once, from the whole output (deciding it per line is quadratic).
    let format = if parse_cargo(text).is_some() {
        Format::Cargo
    } else if parse_go(text).is_some() {
        Format::Go
    } else if parse_jest(text).is_some() {
        Format::Jest
    } else if parse_vitest(text).is_some() {
        Format::Vitest
    } else if parse_pytest(text).is_some() {
        Format::Pytest
    } else if parse_unittest(text).is_some() {
        Format::Unittest
    } else {
        return Vec::new();
    };
    let pick = |l: &str| -> Option<String> {
        let l = l.trim_end();
        match format {
            Format::Cargo => Some(
                l.strip_prefix("test ")?
                    .strip_suffix(" ... FAILED")?
                    .trim()
                    .to_string(),
            ),
            Format::Go => {
                let name = l.trim_start().strip_prefix("--- FAIL: ")?;
                Some(name.split_whitespace().next()?.to_string())
            }
            Format::Jest => {
                let rest = l.trim_start().strip_prefix("✕ ")?;
                Some(match rest.rfind(" (") {
                    Some(i) if rest.ends_with(')') => rest[..i].trim().to_string(),
                    _ => rest.trim().to_string(),
                })
            }
            Format::Vitest => {
                let rest = l.trim_start().strip_prefix("FAIL ")?;
                rest.contains(" > ").then(|| rest.trim().to_string())
            }
            Format::Pytest => {
                let rest = l
                    .strip_prefix("FAILED ")
                    .or_else(|| l.strip_prefix("ERROR "))?;
                let node = rest.split(" - ").next()?.trim();
                node.contains("::").then(|| node.to_string())
            }
            Format::Unittest => {
                let rest = l
                    .strip_prefix("FAIL: ")
                    .or_else(|| l.strip_prefix("ERROR: "))?;
                Some(rest.split_whitespace().next()?.to_string())
            }
        }
    };
    let mut out: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(name) = pick(line).filter(|n| !n.is_empty()) {
            if out.len() < MAX_FAILING_TESTS && seen.insert(name.clone()) {
                out.push(name);
            }
        }
    }
    out
}

/// Failing tests [`failing_tests`] names at most (the output is the agent's code's).
pub const MAX_FAILING_TESTS: usize = 200;

/// `AssertionError` from `AssertionError: …`; None when the text does not start with an
/// exception's name.
fn exception_name(text: &str) -> Option<&str> {
    let name = text.trim().split(':').next()?.trim();
    let simple = name.rsplit('.').next().unwrap_or(name);
    let looks_like = [
        "Error",
        "Exception",
        "Failure",
        "Interrupt",
        "Exit",
        "Timeout",
    ]
    .iter()
    .any(|s| simple.ends_with(s));
    (looks_like
        && simple
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_'))
    .then_some(simple)
}

fn described(test: &str, exception: Option<&str>) -> String {
    match exception {
        Some(e) => format!("{e} in {test}"),
        None => format!("{test} failed"),
    }
}

/// pytest: `FAILED path::test - Error: msg` in the short summary, the exception type from the
/// summary or from the traceback's `path:line: ErrorType` line.
fn pytest_failure(lines: &[&str]) -> Option<String> {
    let summary = lines.iter().find_map(|l| {
        let rest = l
            .strip_prefix("FAILED ")
            .or_else(|| l.strip_prefix("ERROR "))?;
        let (node, message) = match rest.split_once(" - ") {
            Some((n, m)) => (n, Some(m)),
            None => (rest, None),
        };
        // A node id (`path::test`), not unittest's `FAILED (failures=1)`.
        node.contains("::").then_some((node.trim(), message))
    });
    let (node, message) = match summary {
        Some(found) => found,
        None => (
            lines.iter().find_map(|l| {
                let t = l.trim_end();
                let node = t.split_whitespace().next()?;
                (node.contains("::") && t.contains(" FAILED")).then_some(node)
            })?,
            None,
        ),
    };
    let test = node.rsplit("::").next().unwrap_or(node);
    let from_traceback = || {
        lines.iter().find_map(|l| {
            let (location, name) = l.rsplit_once(": ")?;
            let line_no = location.rsplit_once(':')?.1;
            (!location.contains(' ') && line_no.chars().all(|c| c.is_ascii_digit()))
                .then(|| exception_name(name))
                .flatten()
        })
    };
    let exception = message.and_then(exception_name).or_else(from_traceback);
    Some(described(test, exception))
}

/// unittest: `FAIL: test_x (module.Class.test_x)` (or `ERROR:`), the exception on the first
/// `Name: message` line of its traceback.
fn unittest_failure(lines: &[&str]) -> Option<String> {
    // unittest prints each failure's header right under a `=====` rule.
    let (at, test) = lines.windows(2).enumerate().find_map(|(i, w)| {
        if !w[0].starts_with("=====") {
            return None;
        }
        let rest = w[1]
            .strip_prefix("FAIL: ")
            .or_else(|| w[1].strip_prefix("ERROR: "))?;
        Some((i + 1, rest.split_whitespace().next()?))
    })?;
    let exception = lines[at + 1..]
        .iter()
        .take_while(|l| !l.starts_with("=====") && !l.starts_with("FAIL: "))
        .find_map(|l| {
            (!l.starts_with(' ') && l.contains(':'))
                .then(|| exception_name(l))
                .flatten()
        });
    Some(described(test, exception))
}

/// go test: `--- FAIL: TestName (0.00s)`.
fn go_failure(lines: &[&str]) -> Option<String> {
    lines.iter().find_map(|l| {
        let name = l.trim_start().strip_prefix("--- FAIL: ")?;
        Some(described(name.split_whitespace().next()?, None))
    })
}

/// cargo test: `test path::name ... FAILED`.
fn cargo_failure(lines: &[&str]) -> Option<String> {
    lines.iter().find_map(|l| {
        let name = l.strip_prefix("test ")?.strip_suffix(" ... FAILED")?;
        Some(described(name.trim(), None))
    })
}

/// jest: `✕ name (3 ms)`.
fn jest_failure(lines: &[&str]) -> Option<String> {
    lines.iter().find_map(|l| {
        let rest = l.trim_start().strip_prefix("✕ ")?;
        let name = match rest.rfind(" (") {
            Some(i) if rest.ends_with(')') => &rest[..i],
            _ => rest,
        };
        Some(described(name.trim(), None))
    })
}

/// vitest: ` FAIL  file > name`, the exception on the next line.
fn vitest_failure(lines: &[&str]) -> Option<String> {
    lines.iter().enumerate().find_map(|(i, l)| {
        let rest = l.trim_start().strip_prefix("FAIL ")?;
        let name = rest.rsplit(" > ").next()?.trim();
        if !rest.contains(" > ") {
            return None;
        }
        let exception = lines.get(i + 1).and_then(|next| exception_name(next));
        Some(described(name, exception))
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn failing_tests_are_named_once_each_from_a_long_log() {
        let mut log: String = (0..20_000)
            .map(|i| {
                format!(
                    "FAILED tests/test_x.py::test_{} - AssertionError\n",
                    i % 300
                )
            })
            .collect();
        log.push_str("===== 300 failed, 2 passed in 1.00s =====\n");
        let names = failing_tests(&log);
        assert_eq!(names.len(), MAX_FAILING_TESTS);
        assert_eq!(names[0], "tests/test_x.py::test_0");
        assert!(failing_tests("no summary at all\nFAILED a::b").is_empty());
    }
    use super::*;

    #[test]
    fn the_first_failing_test_is_named_as_cooperbench_documents() {
        assert_eq!(
            first_failure(PYTEST).as_deref(),
            Some("AssertionError in test_e")
        );
        assert_eq!(
            first_failure("FAILED tests/t.py::test_x[1] - KeyError: 'a'\n== 1 failed in 0.1s ==\n")
                .as_deref(),
            Some("KeyError in test_x[1]")
        );
        // A pytest-looking line in unittest output is not read as pytest's.
        let spoofed =
            "FAILED tests/t.py::test_fake - AssertionError: x\nRan 1 test in 0.001s\n\nOK\n";
        assert_eq!(first_failure(spoofed), None);
        assert_eq!(first_failure(GO_VERBOSE).as_deref(), Some("TestD failed"));
        assert_eq!(first_failure(GO_PLAIN).as_deref(), Some("TestD failed"));
        assert_eq!(first_failure(CARGO).as_deref(), Some("more::c failed"));
        assert_eq!(first_failure(JEST).as_deref(), Some("c failed"));
        assert_eq!(
            first_failure(VITEST).as_deref(),
            Some("AssertionError in c")
        );
        assert_eq!(first_failure("==== 3 passed in 0.1s ===="), None);
        let unittest = "test_a (t.T.test_a) ... ok\ntest_b (t.T.test_b) ... FAIL\n\n======\nFAIL: test_b (t.T.test_b)\n------\nTraceback (most recent call last):\n  File \"t.py\", line 5, in test_b\n    self.assertEqual(1, 2)\nAssertionError: 1 != 2\n\n------\nRan 2 tests in 0.001s\n\nFAILED (failures=1)\n";
        assert_eq!(
            first_failure(unittest).as_deref(),
            Some("AssertionError in test_b")
        );
    }

    /// Outputs captured from real runs of each tool (pytest 9.2, cargo 1.95, go 1.19,
    /// jest 30.5, vitest 4.1) on small suites with one failing test; paths anonymised.
    const CARGO: &str = include_str!("fixtures/cargo_test.txt");
    const GO_VERBOSE: &str = include_str!("fixtures/go_test_v.txt");
    const GO_PLAIN: &str = include_str!("fixtures/go_test_plain.txt");
    const JEST: &str = include_str!("fixtures/jest.txt");
    const VITEST: &str = include_str!("fixtures/vitest.txt");
    const PYTEST: &str = include_str!("fixtures/pytest.txt");

    #[test]
    fn cargo_test_sums_every_result_line() {
        assert_eq!(
            parse_test_output(CARGO),
            Some(TestCounts {
                passed: 5,
                failed: 1
            })
        );
    }

    #[test]
    fn go_test_verbose_counts_each_test() {
        // Subtests count: TestA, TestB, TestC, TestC/inner, TestS pass; TestD fails.
        assert_eq!(
            parse_test_output(GO_VERBOSE),
            Some(TestCounts {
                passed: 5,
                failed: 1
            })
        );
    }

    #[test]
    fn go_test_plain_counts_packages() {
        assert_eq!(
            parse_test_output(GO_PLAIN),
            Some(TestCounts {
                passed: 1,
                failed: 1
            })
        );
    }

    #[test]
    fn jest_summary() {
        assert_eq!(
            parse_test_output(JEST),
            Some(TestCounts {
                passed: 2,
                failed: 1
            })
        );
    }

    #[test]
    fn vitest_summary_with_colours() {
        assert_eq!(
            parse_test_output(VITEST),
            Some(TestCounts {
                passed: 2,
                failed: 1
            })
        );
    }

    #[test]
    fn pytest_verbose_run() {
        assert_eq!(
            parse_test_output(PYTEST),
            Some(TestCounts {
                passed: 4,
                failed: 1
            })
        );
    }

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

    #[test]
    fn forced_colour_pytest_output_is_counted() {
        // What Pillow's config (`--color=yes`) prints: the summary wrapped in colour codes.
        let out = "\u{1b}[32m\u{1b}[1m193 passed\u{1b}[0m\u{1b}[32m in 4.21s\u{1b}[0m\n\
                   \u{1b}[32m============================= \u{1b}[32m\u{1b}[1m193 passed\u{1b}[0m\u{1b}[32m in 4.21s\u{1b}[0m\u{1b}[32m ==============================\u{1b}[0m\n";
        assert_eq!(
            parse_test_output(out),
            Some(TestCounts {
                passed: 193,
                failed: 0
            })
        );
    }

    #[test]
    fn a_runner_calling_pytest_twice_is_counted_over_both_calls() {
        let out = "============================== 5 passed in 0.30s ===============================\n\
                   ========================= 1 failed, 2 passed in 0.21s ==========================\n";
        assert_eq!(
            parse_test_output(out),
            Some(TestCounts {
                passed: 7,
                failed: 1
            })
        );
    }

    #[test]
    fn plain_go_test_counts_packages_on_both_sides() {
        // Two failing tests in one package, one passing package: 1 passed, 1 failed (packages).
        let out = "--- FAIL: TestA (0.00s)\n--- FAIL: TestB (0.00s)\nFAIL\nFAIL\texample.com/m\t0.003s\nok  \texample.com/m/sub\t0.001s\nFAIL\n";
        assert_eq!(
            parse_go(out),
            Some(TestCounts {
                passed: 1,
                failed: 1
            })
        );
    }
}
