//! Grading on Modal, as CooperBench grades there: every test run in a sandbox of its own,
//! fresh from the task's image, the patches written to `/patches/`, the image's runner run
//! by path (`bash /usr/local/bin/runner.sh TESTS [PATCH]`: Modal images have their
//! entrypoint cleared), the sandbox terminated after the run whatever happened.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cbench_modal::{RemoteSandbox, SandboxDefinition};

use crate::dataset::{Feature, Pair};
use crate::docker::RunLabels;
use crate::sandbox::docker::REPO_DIR;
use crate::sandbox::modal::{
    run_remote_script, tags_of, write_remote_file, ModalImages, START_WAIT,
};
use crate::sandbox::{ExecOutput, SandboxError};
use cbench_core::exec::{shell_quote, Shell};

/// Where CooperBench's images keep the test runner.
const RUNNER: &str = "/usr/local/bin/runner.sh";
/// A grading sandbox outlives its test run by at most this much (Modal ends it then).
const SANDBOX_SLACK: Duration = Duration::from_secs(300);

/// Modal grading settings.
#[derive(Clone)]
pub struct ModalGrading {
    pub images: Arc<ModalImages>,
    pub image_prefix: String,
    pub cpus: f64,
    pub memory_mib: u32,
    /// Graders without network (`--grading-network none`); Modal's default network otherwise.
    pub block_network: bool,
    pub labels: RunLabels,
}

impl std::fmt::Debug for ModalGrading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModalGrading")
            .field("app_id", &self.images.app_id())
            .field("image_prefix", &self.image_prefix)
            .finish()
    }
}

/// One pair's Modal grading.
pub struct ModalBench {
    grading: ModalGrading,
    image_id: String,
    tags: cbench_modal::Tags,
}

impl ModalBench {
    /// Resolves the pair's image (built once per run).
    pub async fn open(grading: &ModalGrading, pair: &Pair) -> Result<ModalBench, SandboxError> {
        let tag = pair.task.image(&grading.image_prefix);
        let image_id = grading.images.get(&tag).await?;
        Ok(ModalBench {
            grading: grading.clone(),
            image_id,
            tags: tags_of(
                grading
                    .labels
                    .object(&pair.task.label(), &pair.dir_name(), "grader"),
            ),
        })
    }

    /// Runs `feature`'s tests with `patch` (a host file; empty = none) in a fresh sandbox.
    pub async fn run(
        &self,
        feature: &Feature,
        patch: &Path,
        patch_is_empty: bool,
        name: &str,
        timeout: Duration,
        cap: usize,
    ) -> Result<ExecOutput, SandboxError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(crate::sandbox::io(format!("reading {}", p.display())))
        };
        let tests = read(&feature.tests_patch_path())?;
        let patch_bytes = if patch_is_empty {
            None
        } else {
            Some(read(patch)?)
        };
        let definition = SandboxDefinition {
            image_id: self.image_id.clone(),
            entrypoint_args: crate::sandbox::modal::keep_alive(),
            cpus: self.grading.cpus,
            memory_mib: self.grading.memory_mib,
            timeout_secs: (timeout + SANDBOX_SLACK).as_secs().min(86_400) as u32,
            workdir: REPO_DIR.into(),
            block_network: self.grading.block_network,
            tags: self.tags.clone(),
        };
        let sandbox = RemoteSandbox::create(
            self.grading.images.client().clone(),
            self.grading.images.app_id(),
            &definition,
            START_WAIT,
        )
        .await?;
        let out = run_in(&sandbox, &tests, patch_bytes.as_deref(), name, timeout, cap).await;
        // This run's sandbox is never used again, whatever its code left in it.
        if let Err(e) = sandbox.terminate().await {
            tracing::warn!("terminating grading sandbox {}: {e}", sandbox.id());
        }
        out
    }
}

async fn run_in(
    sandbox: &RemoteSandbox,
    tests: &[u8],
    patch: Option<&[u8]>,
    name: &str,
    timeout: Duration,
    cap: usize,
) -> Result<ExecOutput, SandboxError> {
    let tests_name = format!("{name}.tests.patch");
    write_remote_file(sandbox, &format!("/patches/{tests_name}"), tests).await?;
    let mut args = vec![tests_name];
    if let Some(patch) = patch {
        let patch_name = format!("{name}.patch");
        write_remote_file(sandbox, &format!("/patches/{patch_name}"), patch).await?;
        args.push(patch_name);
    }
    let script = format!(
        "cd {REPO_DIR}\nexec bash {RUNNER} {}\n",
        args.iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    );
    run_remote_script(sandbox, &script, Shell::Plain, &[], timeout, cap).await
}
