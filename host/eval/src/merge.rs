//! The merge policy (CooperBench 0.0.14): each patch on its own branch from the
//! base, naive `git merge`, and on conflict a retry with `merge=union`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::sandbox::git::git;
use crate::sandbox::SandboxError;
use crate::sandbox::{base::BaseRepo, io};

/// What to do when the naive merge conflicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MergePolicy {
    /// Retry with `merge=union` (CooperBench 0.0.14, the paper).
    Union,
    /// Grade the lead agent's (agent1's) patch alone (CooperBench 0.0.29).
    Lead,
}

impl MergePolicy {
    /// The name used in files and flags.
    pub fn as_str(&self) -> &'static str {
        match self {
            MergePolicy::Union => "union",
            MergePolicy::Lead => "lead",
        }
    }
}

/// How the merged tree was produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MergeStrategy {
    /// Naive merge succeeded.
    Naive,
    /// Naive merge conflicted; union merge succeeded.
    Union,
    /// Naive merge conflicted; the lead agent's patch alone is graded.
    Lead,
    /// No merged tree: a patch did not apply, or even the union merge failed.
    Failed,
}

impl MergeStrategy {
    /// The name used in files (`naive`, `union`, `lead`, `failed`).
    pub fn as_str(&self) -> &'static str {
        match self {
            MergeStrategy::Naive => "naive",
            MergeStrategy::Union => "union",
            MergeStrategy::Lead => "lead",
            MergeStrategy::Failed => "failed",
        }
    }
}

/// Result of merging the agents' patches.
#[derive(Debug, Clone)]
pub struct MergeOutcome {
    pub strategy: MergeStrategy,
    /// The naive merge conflicted.
    pub conflict: bool,
    /// `git diff base HEAD` of the merged tree (empty when failed).
    pub diff: String,
    /// Why there is no merged tree.
    pub error: Option<String>,
    /// Agents whose patch did not apply to the base.
    pub apply_failed: Vec<String>,
    /// Files the naive merge conflicted in.
    pub conflict_files: Vec<String>,
}

/// Merges `patches` (agent id, patch) in a copy of `base` under `scratch`.
/// The last agent's branch is checked out and the others merged into it in order
/// (two agents: agent1 into agent2, as the reference does).
pub async fn merge_patches(
    base: &BaseRepo,
    scratch: &Path,
    patches: &[(String, String)],
    policy: MergePolicy,
) -> Result<MergeOutcome, SandboxError> {
    let repo = scratch.join("merge");
    base.checkout_to(&repo).await?;
    let mut commits = Vec::new();
    let mut apply_failed = Vec::new();
    for (agent, patch) in patches {
        git(&repo, &["checkout", "-q", "-B", agent, &base.commit], &[]).await?;
        if !patch.trim().is_empty() {
            // Not `<agent>.patch`: the test runs read that one while the merge runs beside them.
            let file = scratch.join(format!("merge-input-{agent}.patch"));
            tokio::fs::write(&file, patch)
                .await
                .map_err(|source| SandboxError::Io {
                    what: format!("writing {}", file.display()),
                    source,
                })?;
            let file = file.display().to_string();
            // As CooperBench's grader: whitespace-tolerant first, then a 3-way apply.
            let applied = git(
                &repo,
                &[
                    "apply",
                    "--ignore-whitespace",
                    "--ignore-space-change",
                    &file,
                ],
                &[],
            )
            .await
            .is_ok()
                || git(&repo, &["apply", "--3way", &file], &[]).await.is_ok();
            // A tree git refuses to record (an encoding its own `.gitattributes` asks for that
            // the applied text does not carry) is the patch's doing as well.
            let recorded = applied && git(&repo, &["add", "-A"], &[]).await.is_ok();
            if !recorded {
                apply_failed.push(agent.clone());
                // Leave no half-applied 3-way state on this branch.
                git(&repo, &["reset", "-q", "--hard"], &[]).await?;
                git(&repo, &["clean", "-q", "-fd"], &[]).await?;
            }
        }
        git(&repo, &["add", "-A"], &[]).await?;
        git(
            &repo,
            &[
                "commit",
                "-q",
                "--allow-empty",
                "--no-gpg-sign",
                "-m",
                agent,
            ],
            &[],
        )
        .await?;
        commits.push(
            git(&repo, &["rev-parse", "HEAD"], &[])
                .await?
                .trim()
                .to_string(),
        );
    }
    if !apply_failed.is_empty() {
        return Ok(MergeOutcome {
            strategy: MergeStrategy::Failed,
            conflict: false,
            diff: String::new(),
            error: Some(format!(
                "the patch of {} does not apply to the base (or git cannot record the result)",
                apply_failed.join(" and ")
            )),
            apply_failed,
            conflict_files: Vec::new(),
        });
    }
    let Some((last, others)) = commits.split_last() else {
        return Ok(MergeOutcome {
            strategy: MergeStrategy::Naive,
            conflict: false,
            diff: String::new(),
            error: None,
            apply_failed,
            conflict_files: Vec::new(),
        });
    };
    let conflict_files = merge_all(&repo, last, others).await?;
    let strategy = if conflict_files.is_empty() {
        MergeStrategy::Naive
    } else {
        match policy {
            MergePolicy::Lead => {
                let lead = commits.first().unwrap_or(last);
                let diff = tree_diff(&repo, &base.commit, lead).await?;
                return Ok(MergeOutcome {
                    strategy: MergeStrategy::Lead,
                    conflict: true,
                    diff,
                    error: None,
                    apply_failed,
                    conflict_files,
                });
            }
            MergePolicy::Union => {
                enable_union_merge(&repo).await?;
                if !merge_all(&repo, last, others).await?.is_empty() {
                    return Ok(MergeOutcome {
                        strategy: MergeStrategy::Failed,
                        conflict: true,
                        diff: String::new(),
                        error: Some(format!(
                            "Merge conflict in {} (the union merge failed too)",
                            conflict_files.join(", ")
                        )),
                        apply_failed,
                        conflict_files,
                    });
                }
                MergeStrategy::Union
            }
        }
    };
    let diff = tree_diff(&repo, &base.commit, "HEAD").await?;
    Ok(MergeOutcome {
        strategy,
        conflict: strategy == MergeStrategy::Union,
        diff,
        error: None,
        apply_failed,
        conflict_files,
    })
}

/// `git diff from to` as a patch any runner applies (binary content included, no external
/// diff or textconv whatever the attributes say).
async fn tree_diff(repo: &Path, from: &str, to: &str) -> Result<String, SandboxError> {
    git(
        repo,
        &[
            "diff",
            "--binary",
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
            from,
            to,
        ],
        &[],
    )
    .await
}

/// Sets `* merge=union` in `.git/info/attributes`, not `.gitattributes`: it
/// outranks the repository's own file and never shows up in the merged diff.
async fn enable_union_merge(repo: &Path) -> Result<(), SandboxError> {
    let info = repo.join(".git").join("info");
    tokio::fs::create_dir_all(&info)
        .await
        .map_err(io("creating .git/info"))?;
    tokio::fs::write(info.join("attributes"), "* merge=union\n")
        .await
        .map_err(io("writing .git/info/attributes"))
}

/// Resets to the last agent's branch and merges the others; the files of the first merge
/// that conflicts (empty: every merge was clean).
async fn merge_all(
    repo: &Path,
    last: &str,
    others: &[String],
) -> Result<Vec<String>, SandboxError> {
    git(repo, &["checkout", "-q", "-f", "-B", "merged", last], &[]).await?;
    for commit in others {
        if git(
            repo,
            &["merge", "-q", "--no-edit", "--no-gpg-sign", commit],
            &[],
        )
        .await
        .is_err()
        {
            let unmerged = git(repo, &["diff", "--name-only", "--diff-filter=U", "-z"], &[])
                .await
                .unwrap_or_default();
            let mut files: Vec<String> = unmerged
                .split('\0')
                .filter(|f| !f.is_empty())
                .map(str::to_string)
                .collect();
            if files.is_empty() {
                // The merge failed before writing conflicts (e.g. it would overwrite a file).
                files.push("(the merge stopped before marking files)".into());
            }
            let _ = git(repo, &["merge", "--abort"], &[]).await;
            return Ok(files);
        }
    }
    Ok(Vec::new())
}
