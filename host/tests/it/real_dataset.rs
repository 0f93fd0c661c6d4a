//! The real CooperBench dataset (a copy lives in ../shared/cooperbench-dataset;
//! override with CBENCH_REAL_DATASET). Never copied into this repository.

use cbench::dataset::{Dataset, RepoSource, Selection};

use crate::support::{cbench, real_dataset, text};

fn count(ds: &Dataset, selection: Selection) -> (usize, usize, usize, usize) {
    let pairs = ds.select(&selection).unwrap();
    let listing = cbench::dataset::listing::list(&pairs, "p/", false);
    (
        listing.repos,
        listing.tasks,
        listing.features,
        listing.pairs,
    )
}

#[test]
fn full_lite_and_flash_have_the_documented_sizes() {
    let ds = Dataset::discover(&real_dataset()).unwrap();
    assert_eq!(count(&ds, Selection::default()), (12, 30, 199, 652));
    let subset = |name: &str| Selection {
        subset: Some(name.into()),
        ..Selection::default()
    };
    let (_, tasks, _, pairs) = count(&ds, subset("lite"));
    assert_eq!((tasks, pairs), (26, 100));
    let (_, tasks, _, pairs) = count(&ds, subset("flash"));
    assert_eq!((tasks, pairs), (20, 50));
}

#[test]
fn task_zero_and_three_or_four_feature_groups_are_selectable() {
    let ds = Dataset::discover(&real_dataset()).unwrap();
    let t0 = ds
        .select(&Selection {
            task: Some(0),
            ..Selection::default()
        })
        .unwrap();
    assert_eq!(t0.len(), 45);
    assert!(t0
        .iter()
        .all(|p| p.task.repo == "openai_tiktoken_task" && p.task.id == 0));
    for ids in [vec![1, 2, 3], vec![1, 2, 3, 4]] {
        let groups = ds
            .select(&Selection {
                task: Some(0),
                features: Some(ids.clone()),
                ..Selection::default()
            })
            .unwrap();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].features, ids);
    }
}

#[test]
fn every_task_names_its_upstream_repository_base_commit_and_image() {
    let ds = Dataset::discover(&real_dataset()).unwrap();
    assert_eq!(ds.tasks.len(), 30);
    for task in &ds.tasks {
        match &task.source {
            RepoSource::Upstream { url, commit } => {
                assert!(
                    url.starts_with("https://github.com/"),
                    "{}: {url}",
                    task.label()
                );
                assert_eq!(commit.len(), 40, "{}", task.label());
                assert!(commit.chars().all(|c| c.is_ascii_hexdigit()));
            }
            other => panic!("{}: {other:?}", task.label()),
        }
        let image = task.image("akhatua/cooperbench-");
        let expected_repo = task.repo.trim_end_matches("_task").replace('_', "-");
        assert_eq!(
            image,
            format!("akhatua/cooperbench-{expected_repo}:task{}", task.id)
        );
    }
    let outlines = ds
        .tasks
        .iter()
        .find(|t| t.repo == "dottxt_ai_outlines_task" && t.id == 1655)
        .unwrap();
    assert_eq!(
        outlines.image("akhatua/cooperbench-"),
        "akhatua/cooperbench-dottxt-ai-outlines:task1655"
    );
}

#[test]
fn dataset_list_prints_the_selection_and_stats_as_json() {
    let root = real_dataset().display().to_string();
    let out = cbench(&[
        "dataset",
        "list",
        "--dataset-dir",
        &root,
        "-s",
        "flash",
        "--json",
        "--stats",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let listing: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listing["pairs"], 50);
    assert_eq!(listing["tasks"], 20);
    let first = &listing["per_task"][0];
    assert!(first["features"][0]["lines_changed"].as_u64().unwrap() > 0);
    assert!(first["pairs"][0]["shared_files"].is_array());

    let out = cbench(&["dataset", "list", "--dataset-dir", &root]);
    assert!(String::from_utf8_lossy(&out.stdout)
        .starts_with("12 repos · 30 tasks · 199 features · 652 pairs"));
}
