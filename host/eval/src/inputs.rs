//! What a grade depends on, hashed: when the hash in eval.json still matches, the pair is
//! not graded again.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::dataset::Pair;
use crate::merge::MergePolicy;
use crate::setting::Setting;
use crate::{pair_label, EvalError, GradedPatch, GRADING_VERSION};

/// Hash of everything a grade depends on.
pub fn inputs_hash(
    pair: &Pair,
    setting: Setting,
    policy: MergePolicy,
    patches: &[GradedPatch],
) -> Result<String, EvalError> {
    let mut h = Sha256::new();
    h.update(GRADING_VERSION);
    h.update(setting.to_string());
    h.update(policy.as_str());
    let read = |path: PathBuf| {
        std::fs::read(&path).map_err(|source| EvalError::Read {
            pair: pair_label(pair),
            path,
            source,
        })
    };
    h.update(read(pair.task.test_runner())?);
    // The image's runner (docker backend) when the task has one: the hash is the
    // same whichever backend grades, so eval.json compares across backends.
    let image_runner = pair.task.dir.join("runner.sh");
    if image_runner.is_file() {
        h.update(read(image_runner)?);
    }
    for f in pair.feature_records() {
        h.update(f.id.to_le_bytes());
        h.update(read(f.tests_patch_path())?);
    }
    for p in patches {
        h.update(p.agent_id.as_bytes());
        h.update((p.patch.len() as u64).to_le_bytes());
        h.update(p.patch.as_bytes());
    }
    Ok(hex::encode(h.finalize()))
}

/// Hash of what the dataset gives a pair (not what agents made): the test runner(s), the
/// Dockerfile, and per feature its description, tests and gold patch.
pub fn task_inputs_hash(pair: &Pair) -> Result<String, EvalError> {
    let mut h = Sha256::new();
    let read = |path: PathBuf| {
        std::fs::read(&path).map_err(|source| EvalError::Read {
            pair: pair_label(pair),
            path,
            source,
        })
    };
    h.update(read(pair.task.test_runner())?);
    for optional in ["runner.sh", "Dockerfile"] {
        let path = pair.task.dir.join(optional);
        h.update(optional.as_bytes());
        if path.is_file() {
            h.update(read(path)?);
        }
    }
    for f in pair.feature_records() {
        h.update(f.id.to_le_bytes());
        for path in [
            f.description_path(),
            f.tests_patch_path(),
            f.gold_patch_path(),
        ] {
            let bytes = read(path)?;
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        }
    }
    Ok(hex::encode(h.finalize()))
}
