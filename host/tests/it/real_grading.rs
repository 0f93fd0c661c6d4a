//! Real tasks graded for real: one task of each repository of `../shared/real-repos`
//! (dirty-equals, click, jinja, chi) at its upstream base commit, its gold patches run under
//! the same confinement as grading, and the pair's naive-merge verdict compared with
//! CooperBench's own `gold_conflict_report.json`. The runners install their dependencies
//! from the package index (uv) or use the machine's Go toolchain.

use std::path::PathBuf;

use crate::support::{cbench, real_dataset, text, workspace};

/// The upstream base repositories, extracted once per test run.
fn repo_cache() -> PathBuf {
    static CACHE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    CACHE
        .get_or_init(|| {
            let archive = real_dataset().join("../real-repos/upstream-bases.tar.gz");
            assert!(
                archive.is_file(),
                "the real repositories are needed at {}",
                archive.display()
            );
            let dir = workspace().join("target").join("real-repos");
            std::fs::create_dir_all(&dir).unwrap();
            let status = std::process::Command::new("tar")
                .arg("xzf")
                .arg(&archive)
                .arg("-C")
                .arg(&dir)
                .status()
                .unwrap();
            assert!(status.success(), "extracting {}", archive.display());
            dir
        })
        .clone()
}

fn gold_matches_the_reference(repo: &str, task: &str) {
    let data = real_dataset();
    let logs = tempfile::tempdir_in(workspace().join("target")).unwrap();
    let reference = data.join("gold_conflict_report.json");
    let out = cbench(&[
        "gold",
        "--dataset-dir",
        &data.display().to_string(),
        "--repo-cache",
        &repo_cache().display().to_string(),
        "-r",
        repo,
        "-t",
        task,
        "-f",
        "1,2",
        "--isolation",
        "bwrap",
        "--reference",
        &reference.display().to_string(),
        "--log-dir",
        &logs.path().display().to_string(),
    ]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains("2/2 gold patches pass their own tests"),
        "{shown}"
    );
    assert!(
        shown.contains("no differences from the reference"),
        "{shown}"
    );
}

#[test]
fn dirty_equals_gold_passes_confined_and_merges_as_the_reference() {
    gold_matches_the_reference("samuelcolvin_dirty_equals_task", "43");
}

#[test]
fn click_gold_passes_confined_and_merges_as_the_reference() {
    gold_matches_the_reference("pallets_click_task", "2068");
}

#[test]
fn jinja_gold_passes_confined_and_merges_as_the_reference() {
    gold_matches_the_reference("pallets_jinja_task", "1465");
}

#[test]
fn chi_gold_passes_confined_and_merges_as_the_reference() {
    gold_matches_the_reference("go_chi_task", "26");
}
