//! Dataset discovery and selection on the bundled dataset and on crafted layouts.

use cbench::dataset::{Dataset, DatasetError, Selection};

use crate::support::dataset;

#[test]
fn bundled_dataset_has_one_task_with_five_features_and_ten_pairs() {
    let ds = Dataset::discover(&dataset()).unwrap();
    assert_eq!(ds.tasks.len(), 1);
    assert_eq!(ds.tasks[0].features.len(), 5);
    assert_eq!(ds.select(&Selection::default()).unwrap().len(), 10);
    let smoke = ds
        .select(&Selection {
            subset: Some("smoke".into()),
            ..Selection::default()
        })
        .unwrap();
    let groups: Vec<Vec<u32>> = smoke.iter().map(|p| p.features.clone()).collect();
    assert_eq!(groups, vec![vec![1, 2], vec![1, 3], vec![4, 5]]);
}

fn fake_task(root: &std::path::Path, repo: &str, task: &str, features: &[&str]) {
    for f in features {
        let dir = root.join(repo).join(task).join(f);
        std::fs::create_dir_all(&dir).unwrap();
        for file in ["feature.md", "feature.patch", "tests.patch"] {
            std::fs::write(dir.join(file), "x").unwrap();
        }
    }
}

#[test]
fn task_zero_is_a_task_id_not_a_wildcard() {
    let root = tempfile::tempdir().unwrap();
    fake_task(root.path(), "a_task", "task0", &["feature1", "feature2"]);
    fake_task(
        root.path(),
        "a_task",
        "task7",
        &["feature1", "feature2", "feature3"],
    );
    let ds = Dataset::discover(root.path()).unwrap();
    let t0 = ds
        .select(&Selection {
            task: Some(0),
            ..Selection::default()
        })
        .unwrap();
    assert_eq!(t0.len(), 1);
    assert_eq!(t0[0].task.id, 0);
    assert_eq!(ds.select(&Selection::default()).unwrap().len(), 1 + 3);
}

#[test]
fn malformed_feature_dirs_are_skipped_and_bad_subsets_name_the_file() {
    let root = tempfile::tempdir().unwrap();
    fake_task(
        root.path(),
        "a_task",
        "task1",
        &["feature1", "feature2", "featureX"],
    );
    std::fs::create_dir_all(root.path().join("a_task/task1/feature3")).unwrap(); // no files
    let ds = Dataset::discover(root.path()).unwrap();
    assert_eq!(ds.tasks[0].features.len(), 2);

    std::fs::create_dir_all(root.path().join("subsets")).unwrap();
    std::fs::write(root.path().join("subsets/bad.json"), "{ not json").unwrap();
    let err = ds
        .select(&Selection {
            subset: Some("bad".into()),
            ..Selection::default()
        })
        .unwrap_err();
    assert!(matches!(err, DatasetError::BadSubset { .. }));
    assert!(err.to_string().contains("subsets/bad.json"), "{err}");

    let err = ds
        .select(&Selection {
            features: Some(vec![1, 9]),
            ..Selection::default()
        })
        .unwrap_err();
    assert!(err.to_string().contains("feature 9"), "{err}");
}
