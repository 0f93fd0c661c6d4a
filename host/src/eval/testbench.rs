//! Where one pair's test runs happen: on the host (local backend: a fresh copy of
//! the base per run, the task's `run_tests.sh`) or in one fresh container per pair
//! (docker backend: the image's runner with patches under `/patches/`, as CooperBench).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::dataset::{Feature, Pair, Task};
use crate::docker::container::{Container, ContainerSpec, Shell, TarEntry};
use crate::docker::{images, Engine, ResourceLimits, RunLabels};
use crate::sandbox::docker::REPO_DIR;
use crate::sandbox::local::{run_script, BaseRepo};
use crate::sandbox::{ExecOutput, SandboxError};

/// How a run grades.
#[derive(Debug, Clone, Default)]
pub enum GradingBackend {
    /// On the host with the task's `run_tests.sh`.
    #[default]
    Local,
    /// In a fresh container per pair from the task's image.
    Docker(DockerGrading),
}

/// Docker grading settings.
#[derive(Debug, Clone)]
pub struct DockerGrading {
    pub engine: Arc<Engine>,
    pub image_prefix: String,
    pub limits: ResourceLimits,
    pub labels: RunLabels,
    /// Network of grading containers (runners may install packages): `bridge` or `none`.
    pub network: String,
}

/// An open test bench for one pair.
pub enum TestBench {
    Local,
    Docker {
        container: Container,
        runner: Vec<String>,
        base_commit: String,
    },
}

impl TestBench {
    /// Opens the bench for `pair` (starts its grading container on docker).
    pub async fn open(backend: &GradingBackend, pair: &Pair) -> Result<TestBench, SandboxError> {
        let GradingBackend::Docker(d) = backend else {
            return Ok(TestBench::Local);
        };
        let image = pair.task.image(&d.image_prefix);
        let info = images::inspect(&d.engine, &image, &pair.task).await?;
        let spec = ContainerSpec {
            image: image.clone(),
            labels: d
                .labels
                .object(&pair.task.label(), &pair.dir_name(), "grader"),
            limits: d.limits,
            network: d.network.clone(),
            env: Vec::new(),
            working_dir: REPO_DIR.into(),
        };
        let container = Container::start(&d.engine, &spec).await?;
        container.upload("/", &[TarEntry::dir("patches")]).await?;
        let (code, out) = container
            .exec_argv(&["git", "-C", REPO_DIR, "rev-parse", "HEAD"], &[])
            .await?;
        if code != 0 {
            return Err(SandboxError::Command(format!(
                "image {image}: no git repository at {REPO_DIR}: {}",
                out.trim()
            )));
        }
        Ok(TestBench::Docker {
            container,
            runner: info.runner,
            base_commit: out.trim().to_string(),
        })
    }

    /// Runs `feature`'s tests on the base plus `patch` (a host file; empty = no patch).
    #[allow(clippy::too_many_arguments)]
    pub async fn run(
        &self,
        task: &Task,
        base: &BaseRepo,
        scratch: &Path,
        feature: &Feature,
        patch: &Path,
        name: &str,
        timeout: Duration,
        cap: usize,
        env: &[(String, String)],
    ) -> Result<ExecOutput, SandboxError> {
        let patch_is_empty = std::fs::metadata(patch)
            .map(|m| m.len() == 0)
            .unwrap_or(true);
        match self {
            TestBench::Local => {
                let repo = scratch.join(format!("tree-{name}"));
                base.checkout_to(&repo).await?;
                let repo_arg = repo.display().to_string();
                let tests_arg = feature.tests_patch_path().display().to_string();
                let patch_arg = patch.display().to_string();
                let mut args = vec![repo_arg.as_str(), tests_arg.as_str()];
                if !patch_is_empty {
                    args.push(&patch_arg);
                }
                // The task's own trusted runner, unconfined (real runners install packages).
                // Not a login shell: the user's profile (pyenv init, …) would cost ~100 ms a run.
                let out = run_script(
                    &["bash".to_string()],
                    &task.test_runner(),
                    &args,
                    scratch,
                    env,
                    timeout,
                    cap,
                )
                .await;
                let _ = tokio::fs::remove_dir_all(&repo).await;
                out
            }
            TestBench::Docker {
                container,
                runner,
                base_commit,
            } => {
                let read = |p: &Path| {
                    std::fs::read(p).map_err(crate::sandbox::local::io(format!(
                        "reading {}",
                        p.display()
                    )))
                };
                let tests_name = format!("{name}.tests.patch");
                let patch_name = format!("{name}.patch");
                let mut entries = vec![TarEntry::file(
                    &format!("patches/{tests_name}"),
                    &read(&feature.tests_patch_path())?,
                    0o644,
                )];
                let mut args = vec![tests_name];
                if !patch_is_empty {
                    entries.push(TarEntry::file(
                        &format!("patches/{patch_name}"),
                        &read(patch)?,
                        0o644,
                    ));
                    args.push(patch_name);
                }
                container.upload("/", &entries).await?;
                // Each run starts from the base, whatever the previous run left
                // (ignored files such as installed dependencies stay).
                let script = format!(
                    "cd {REPO_DIR} && git reset -q --hard {base_commit} && git clean -q -fd\nexec {}\n",
                    runner
                        .iter()
                        .chain(args.iter())
                        .map(|a| shell_quote(a))
                        .collect::<Vec<_>>()
                        .join(" ")
                );
                Ok(container
                    .run_script(&script, Shell::Plain, REPO_DIR, &[], timeout, cap)
                    .await?)
            }
        }
    }

    /// Removes the grading container.
    pub async fn close(self) -> Result<(), SandboxError> {
        if let TestBench::Docker { container, .. } = self {
            container.remove().await?;
        }
        Ok(())
    }
}

/// Single-quotes `s` for sh.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-=:+".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}
