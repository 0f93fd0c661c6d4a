//! The merge policy (CooperBench 0.0.14): each patch on its own branch from the
//! base, naive `git merge`, and on conflict a retry with `merge=union`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::sandbox::local::{git, BaseRepo};
use crate::sandbox::SandboxError;

/// How the merged tree was produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MergeStrategy {
    /// Naive merge succeeded.
    Naive,
    /// Naive merge conflicted; union merge succeeded.
    Union,
    /// No merged tree: a patch did not apply, or even the union merge failed.
    Failed,
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
}

/// Merges `patches` (agent id, patch) in a copy of `base` under `scratch`.
/// The last agent's branch is checked out and the others merged into it in order
/// (two agents: agent1 into agent2, as the reference does).
pub async fn merge_patches(
    base: &BaseRepo,
    scratch: &Path,
    patches: &[(String, String)],
) -> Result<MergeOutcome, SandboxError> {
    let repo = scratch.join("merge");
    base.checkout_to(&repo).await?;
    let mut commits = Vec::new();
    for (agent, patch) in patches {
        git(&repo, &["checkout", "-q", "-B", agent, &base.commit], &[]).await?;
        if !patch.trim().is_empty() {
            let file = scratch.join(format!("{agent}.patch"));
            tokio::fs::write(&file, patch)
                .await
                .map_err(|source| SandboxError::Io {
                    what: format!("writing {}", file.display()),
                    source,
                })?;
            let file = file.display().to_string();
            if git(&repo, &["apply", &file], &[]).await.is_err() {
                if let Err(e) = git(&repo, &["apply", "--3way", &file], &[]).await {
                    return Ok(MergeOutcome {
                        strategy: MergeStrategy::Failed,
                        conflict: false,
                        diff: String::new(),
                        error: Some(format!("{agent}'s patch does not apply to the base: {e}")),
                    });
                }
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
    let Some((last, others)) = commits.split_last() else {
        return Ok(MergeOutcome {
            strategy: MergeStrategy::Naive,
            conflict: false,
            diff: String::new(),
            error: None,
        });
    };
    let mut strategy = MergeStrategy::Naive;
    if !merge_all(&repo, last, others).await? {
        strategy = MergeStrategy::Union;
        // .git/info/attributes, not .gitattributes: it outranks the repo's own file
        // and never shows up in the merged diff.
        let attributes = repo.join(".git").join("info").join("attributes");
        tokio::fs::create_dir_all(attributes.parent().unwrap_or(&repo))
            .await
            .map_err(|source| SandboxError::Io {
                what: "creating .git/info".into(),
                source,
            })?;
        tokio::fs::write(&attributes, "* merge=union\n")
            .await
            .map_err(|source| SandboxError::Io {
                what: "writing .git/info/attributes".into(),
                source,
            })?;
        if !merge_all(&repo, last, others).await? {
            return Ok(MergeOutcome {
                strategy: MergeStrategy::Failed,
                conflict: true,
                diff: String::new(),
                error: Some("the patches conflict and even the union merge failed".into()),
            });
        }
    }
    let diff = git(
        &repo,
        &["diff", "--binary", "--no-color", &base.commit, "HEAD"],
        &[],
    )
    .await?;
    Ok(MergeOutcome {
        strategy,
        conflict: strategy == MergeStrategy::Union,
        diff,
        error: None,
    })
}

/// Resets to the last agent's branch and merges the others; false on a conflict.
async fn merge_all(repo: &Path, last: &str, others: &[String]) -> Result<bool, SandboxError> {
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
            let _ = git(repo, &["merge", "--abort"], &[]).await;
            return Ok(false);
        }
    }
    Ok(true)
}
