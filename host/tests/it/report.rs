//! `cbench report`: metrics read back from a run's files, and the coordination
//! deficit against a solo baseline.

use crate::support::{cbench, plugins, text, Run};

#[test]
fn report_counts_coordination_failures_and_the_deficit_against_solo() {
    let agent = plugins().mini_swe.display().to_string();
    let coop = Run::start("coop", &["--agent", &agent, "-m", "oracle", "-s", "smoke"]);
    coop.assert_ok();
    let log_dir = coop.logs.path().display().to_string();
    let dataset = crate::support::dataset().display().to_string();
    let solo = cbench(&[
        "run",
        "-q",
        "-n",
        "solo",
        "--setting",
        "solo",
        "--agent",
        &agent,
        "-m",
        "oracle",
        "-s",
        "smoke",
        "--log-dir",
        &log_dir,
        "--dataset-dir",
        &dataset,
    ]);
    assert!(solo.status.success(), "{}", text(&solo));

    let out = cbench(&[
        "report",
        "-n",
        "coop",
        "--log-dir",
        &log_dir,
        "--baseline",
        "solo",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // coop: (1,2) rescued by union, (1,3) clean, (4,5) coordination failure.
    assert_eq!(r["overall"]["count"], 2);
    assert_eq!(r["overall"]["of"], 3);
    assert_eq!(r["individual"]["count"], 6);
    assert_eq!(r["coordination_failures"]["count"], 1);
    assert_eq!(r["naive_merge_conflicts"]["count"], 2);
    assert_eq!(r["union_rescues"]["count"], 1);
    assert_eq!(r["infra_errors"], 0);
    // solo with the oracle: (1,3) and (1,2) (both add at one place) hold both gold patches;
    // (4,5) rewrite the same line, which one agent cannot do twice.
    let d = &r["baseline"];
    assert_eq!(d["matched_pairs"], 3);
    assert!((d["solo_rate"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9);
    assert!(d["deficit"].as_f64().unwrap().abs() < 1e-9, "{d:#}");
    let (lo, hi) = (
        d["ci95"][0].as_f64().unwrap(),
        d["ci95"][1].as_f64().unwrap(),
    );
    assert!(lo <= 0.0 && 0.0 <= hi, "{d:#}");
    assert!(coop.dir().join("report.json").is_file());
    // The text says which way the deficit points.
    let out = cbench(&[
        "report",
        "-n",
        "coop",
        "--log-dir",
        &log_dir,
        "--baseline",
        "solo",
    ]);
    assert!(
        text(&out).contains("coordination deficit 0.0%")
            && text(&out).contains("positive when the pair did worse than one agent"),
        "{}",
        text(&out)
    );

    // A pair whose grade is gone is not graded: neither a failure nor an infrastructure error.
    std::fs::remove_file(coop.pair(1, 3).join("eval.json")).unwrap();
    let out = cbench(&["report", "-n", "coop", "--log-dir", &log_dir, "--json"]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["not_graded"], 1);
    assert_eq!(r["infra_errors"], 0);
    assert_eq!(r["graded"], 2);
    assert_eq!(r["failures"], 1);
    assert_eq!(r["pairs"], 3);
}
