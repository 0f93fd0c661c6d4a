//! `cbench gold` on the bundled dataset (real git repositories built in the
//! test run) and against reference reports.

use cbench::gold::GoldReport;

use crate::support::{cbench, dataset, json, real_dataset, text};

#[test]
fn gold_finds_exactly_the_designed_conflicts_and_every_gold_patch_passes() {
    let tmp = tempfile::tempdir().unwrap();
    let out_file = tmp.path().join("report.json");
    let out = cbench(&[
        "gold",
        "--dataset-dir",
        dataset().to_str().unwrap(),
        "--log-dir",
        tmp.path().to_str().unwrap(),
        "-o",
        out_file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let report = json(&out_file);
    assert_eq!(report["summary"]["total_pairs"], 10);
    assert_eq!(report["summary"]["conflicts"], 2);
    assert_eq!(report["summary"]["clean_merges"], 8);
    assert_eq!(report["summary"]["features_passing"], 5);
    let conflicts: Vec<(u64, u64)> = report["conflict_pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["f1"].as_u64().unwrap(), p["f2"].as_u64().unwrap()))
        .collect();
    assert_eq!(conflicts, vec![(1, 2), (4, 5)]);
    assert_eq!(
        report["per_task"]["cbench_textkit_task/task1"]["conflicts"],
        2
    );

    // A reference that disagrees on one pair: the difference is printed and the exit code is 1.
    let mut reference = report.clone();
    reference["all_results"][0]["has_conflict"] = serde_json::json!(false);
    let ref_file = tmp.path().join("reference.json");
    std::fs::write(&ref_file, reference.to_string()).unwrap();
    let out = cbench(&[
        "gold",
        "--no-tests",
        "--dataset-dir",
        dataset().to_str().unwrap(),
        "--log-dir",
        tmp.path().to_str().unwrap(),
        "--reference",
        ref_file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("cbench_textkit_task/task1 1,2: ours conflict, reference clean"),
        "{stdout}"
    );
}

#[test]
fn the_reference_gold_report_of_cooperbench_reads_in_our_shape() {
    let path = real_dataset().join("gold_conflict_report.json");
    let report: GoldReport = cbench::fsutil::read_json(&path).unwrap();
    assert_eq!(report.summary.total_pairs, 652);
    assert_eq!(report.summary.conflicts, 499);
    assert_eq!(report.all_results.len(), 652);
    assert_eq!(report.conflict_pairs.len(), 499);
}
