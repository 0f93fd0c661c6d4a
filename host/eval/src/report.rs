//! eval.json: what grading found, per feature, per agent and for the merged tree.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::merge::{MergePolicy, MergeStrategy};
use crate::setting::Setting;

/// One feature's hidden tests on one tree.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeatureGrade {
    pub feature_id: u32,
    pub tests_passed: u32,
    pub tests_failed: u32,
    pub success: bool,
    pub exit_code: i32,
    pub error: Option<String>,
    /// Runner output, relative to the pair directory.
    pub log: String,
}

/// An agent's patch alone, against its own features' tests.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentGrade {
    pub tests_passed: u32,
    pub tests_failed: u32,
    pub success: bool,
    pub error: Option<String>,
    pub feature_ids: Vec<u32>,
    pub features: Vec<FeatureGrade>,
    /// Test files (and files that would replace the test tooling) the agent changed; dropped
    /// from its patch before grading.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped_test_files: Vec<String>,
}

/// The merged tree against every feature's tests.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MergedGrade {
    pub tests_passed: u32,
    pub tests_failed: u32,
    pub success: bool,
    /// The naive merge conflicted.
    pub merge_conflict: bool,
    pub merge_strategy: MergeStrategy,
    /// The policy applied on conflict (`union` or `lead`).
    pub merge_policy: MergePolicy,
    /// Agents whose patch did not apply to the base (the merge then fails).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apply_failed: Vec<String>,
    /// Files the naive merge conflicted in (kept when a policy resolved the conflict).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflict_files: Vec<String>,
    /// Why the merged tree failed: `Merge conflict in a.py, b.py`, the first failing test
    /// (`AssertionError in test_x`), or the runner's error.
    pub error: Option<String>,
    pub features: Vec<FeatureGrade>,
}

/// eval.json: CooperBench's shape (`agent1`, `agent2`, `merged`, `overall_success`) plus extras.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalReport {
    pub setting: Setting,
    pub feature_ids: Vec<u32>,
    /// `agent1`, `agent2`, … (coop) or `solo`.
    #[serde(flatten)]
    pub agents: BTreeMap<String, AgentGrade>,
    /// Absent in solo (one patch, nothing to merge).
    pub merged: Option<MergedGrade>,
    /// Every agent succeeded alone and the merged tree passed every feature's tests.
    pub overall_success: bool,
    pub merge_strategy: Option<MergeStrategy>,
    /// The policy this pair was graded under (part of the input hash: another one regrades).
    #[serde(default)]
    pub merge_policy: Option<MergePolicy>,
    /// Hash of patches, tests, runner and procedure; a mismatch means re-grade.
    pub inputs_sha256: String,
    /// The grading procedure's version (runs graded under different ones are not compared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grading_version: Option<String>,
    /// Hash of the pair's task as given (runner, Dockerfile, each feature's description, tests
    /// and gold patch), without the agents' patches: equal across runs of the same dataset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_inputs_sha256: Option<String>,
    pub evaluated_at: String,
    pub duration_s: f64,
}

impl EvalReport {
    /// Agents whose patch passed its own feature's tests alone.
    pub fn agents_ok(&self) -> usize {
        self.agents.values().filter(|a| a.success).count()
    }

    /// Every agent passed alone, but the merged tree failed: the pair's coordination failed.
    pub fn coordination_failure(&self) -> bool {
        let ok = self.agents_ok();
        ok > 0 && ok == self.agents.len() && self.merged.as_ref().is_some_and(|m| !m.success)
    }

    /// The naive merge conflicted and the union merge turned it into a passing tree.
    pub fn union_rescued(&self) -> bool {
        self.merged.as_ref().is_some_and(|m| {
            m.merge_conflict && m.success && m.merge_strategy == MergeStrategy::Union
        })
    }
}
