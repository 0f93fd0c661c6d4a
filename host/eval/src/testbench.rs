//! Where one pair's test runs happen: on the host (local backend: a fresh copy of
//! the base per run, the task's `run_tests.sh`) or in one fresh container per pair
//! (docker backend: the image's runner with patches under `/patches/`, as CooperBench).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::dataset::{Feature, Pair, Task};
use crate::docker::container::{Container, ContainerSpec, OneShot, TarEntry};
use crate::docker::{images, Engine, ResourceLimits, RunLabels};
use crate::sandbox::base::BaseRepo;
use crate::sandbox::confine::{toolchain_env, Confinement, Mounts};
use crate::sandbox::docker::REPO_DIR;
use crate::sandbox::local::{run_script, Launch};
use crate::sandbox::{ExecOutput, SandboxError};

/// How a run grades.
#[derive(Debug, Clone)]
pub enum GradingBackend {
    /// On the host with the task's `run_tests.sh`, confined like an agent (with network).
    Local(Confinement),
    /// In a fresh container per pair from the task's image.
    Docker(DockerGrading),
    /// In a fresh Modal sandbox per test run from the task's image.
    Modal(crate::modal_bench::ModalGrading),
    /// In a Cloud Batch job per test run, a container of the task's image.
    Gcp(crate::gcp_bench::GcpGrading),
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
    Local(Confinement),
    Docker(Box<DockerBench>),
    Modal(crate::modal_bench::ModalBench),
    Gcp(crate::gcp_bench::GcpBench),
}

/// A pair's docker grading: every test run in a container of its own, fresh from the
/// task's image, so no run sees what another left (installed hooks, files outside the
/// repository, `/patches`). Each container is started ahead, waiting to run the image's runner
/// as its main process (as CooperBench's `docker run IMAGE runner.sh …`), and ends with it.
pub struct DockerBench {
    engine: Arc<Engine>,
    spec: ContainerSpec,
    runner: Vec<String>,
    /// Containers started ahead for the next test runs, oldest first.
    ahead: tokio::sync::Mutex<std::collections::VecDeque<PendingGrader>>,
    /// Test runs still planned: containers are started ahead only for those.
    planned: std::sync::atomic::AtomicUsize,
    /// Used containers being removed while the next test runs (awaited by `close`).
    removing: cbench_core::background::Background,
}

/// A grading container being started.
type PendingGrader = tokio::task::JoinHandle<Result<OneShot, SandboxError>>;

/// Containers kept starting ahead of the test runs: every run of a two-feature coop pair (two
/// own, two merged), so its grading waits for no container start when its agents took longer
/// than the engine needs to start them (it starts them one at a time, ~0.2 s each).
const STARTED_AHEAD: usize = 4;

/// Starts one grading container, waiting to run `runner` in the repository.
async fn start_grader(
    engine: Arc<Engine>,
    spec: ContainerSpec,
    runner: Vec<String>,
) -> Result<OneShot, SandboxError> {
    Ok(Container::start_one_shot(&engine, &spec, &runner, REPO_DIR).await?)
}

impl DockerBench {
    /// Starts containers until `STARTED_AHEAD` (or every planned run) have one.
    fn top_up(&self, ahead: &mut std::collections::VecDeque<PendingGrader>) {
        let planned = self.planned.load(std::sync::atomic::Ordering::SeqCst);
        while ahead.len() < STARTED_AHEAD.min(planned) {
            ahead.push_back(tokio::spawn(start_grader(
                self.engine.clone(),
                self.spec.clone(),
                self.runner.clone(),
            )));
        }
    }

    /// A fresh container for one test run (the oldest started ahead, if any).
    async fn take(&self) -> Result<OneShot, SandboxError> {
        use std::sync::atomic::Ordering;
        let mut ahead = self.ahead.lock().await;
        let ready = ahead.pop_front();
        let _ = self
            .planned
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        self.top_up(&mut ahead);
        drop(ahead);
        match ready {
            Some(handle) => handle
                .await
                .map_err(|e| SandboxError::Command(format!("starting a grading container: {e}")))?,
            None => start_grader(self.engine.clone(), self.spec.clone(), self.runner.clone()).await,
        }
    }
}

impl TestBench {
    /// Opens the bench for `pair` (starts its first grading container on docker).
    pub async fn open(backend: &GradingBackend, pair: &Pair) -> Result<TestBench, SandboxError> {
        let d = match backend {
            GradingBackend::Local(confinement) => return Ok(TestBench::Local(confinement.clone())),
            GradingBackend::Docker(d) => d,
            GradingBackend::Modal(m) => {
                return Ok(TestBench::Modal(
                    crate::modal_bench::ModalBench::open(m, pair).await?,
                ))
            }
            GradingBackend::Gcp(g) => return Ok(TestBench::Gcp(g.bench(pair))),
        };
        let image = pair.task.image(&d.image_prefix);
        let info = images::inspect(&d.engine, &image, &pair.task).await?;
        let spec = ContainerSpec {
            image: image.clone(),
            labels: d
                .labels
                .object(&pair.task.label(), &pair.dir_name(), "grader"),
            // A test run writes what its runner needs (packages, caches): no per-file cap, as
            // a local grader has none; `--disk` is the agents' limit.
            limits: ResourceLimits {
                disk_bytes: u64::MAX,
                ..d.limits
            },
            network: d.network.clone(),
            env: Vec::new(),
            working_dir: REPO_DIR.into(),
            drop_capabilities: false,
            volumes: Vec::new(),
        };
        let grader = start_grader(d.engine.clone(), spec.clone(), info.runner.clone()).await?;
        let container = grader.container();
        let (code, out) = match container
            .exec_argv(&["git", "-C", REPO_DIR, "rev-parse", "HEAD"], &[])
            .await
        {
            Ok(answer) => answer,
            Err(e) => {
                let _ = container.remove().await;
                return Err(e.into());
            }
        };
        if code != 0 {
            let _ = container.remove().await;
            return Err(SandboxError::Command(format!(
                "image {image}: no git repository at {REPO_DIR}: {}",
                out.trim()
            )));
        }
        let ready = tokio::spawn(async move { Ok(grader) });
        Ok(TestBench::Docker(Box::new(DockerBench {
            engine: d.engine.clone(),
            spec,
            runner: info.runner,
            ahead: tokio::sync::Mutex::new([ready].into()),
            planned: std::sync::atomic::AtomicUsize::new(0),
            removing: Default::default(),
        })))
    }

    /// Says how many test runs follow: their containers start ahead (a few at a time), and
    /// none is started for a run that never comes.
    pub async fn expect_runs(&self, runs: usize) {
        if let TestBench::Docker(bench) = self {
            bench
                .planned
                .store(runs, std::sync::atomic::Ordering::SeqCst);
            bench.top_up(&mut *bench.ahead.lock().await);
        }
    }

    /// Whether a pair's test runs may all run at once: each on a remote machine of its own
    /// (Modal, Batch), so they neither share this machine nor wait for each other.
    pub fn runs_in_parallel(&self) -> bool {
        matches!(self, TestBench::Modal(_) | TestBench::Gcp(_))
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
    ) -> Result<ExecOutput, SandboxError> {
        let patch_is_empty = std::fs::metadata(patch)
            .map(|m| m.len() == 0)
            .unwrap_or(true);
        match self {
            TestBench::Local(confinement) => {
                // The layout CooperBench's runners expect: some (jinja, outlines) refuse to
                // run unless the repository's parent folder is `agent_workspace`.
                let holder = scratch.join(format!("tree-{name}"));
                let repo = holder.join("agent_workspace").join("repo");
                let home = scratch.join(format!("home-{name}"));
                base.checkout_to(&repo).await?;
                std::fs::create_dir_all(home.join("tmp"))
                    .map_err(crate::sandbox::io(format!("creating {}", home.display())))?;
                let runner = task.test_runner();
                let tests = feature.tests_patch_path();
                let repo_arg = repo.display().to_string();
                let tests_arg = tests.display().to_string();
                let patch_arg = patch.display().to_string();
                let mut args = vec![repo_arg.as_str(), tests_arg.as_str()];
                let mut readonly = vec![runner.clone(), tests.clone()];
                if let Some(cache) = std::env::var_os("TIKTOKEN_CACHE_DIR")
                    .map(std::path::PathBuf::from)
                    .filter(|p| p.is_absolute() && p.is_dir())
                {
                    readonly.push(cache);
                }
                if !patch_is_empty {
                    args.push(&patch_arg);
                    readonly.push(patch.to_path_buf());
                }
                // The runner executes the agent's code: it sees its tree, a private home, this
                // feature's tests and the patch, the system and toolchain directories read-only,
                // and the network (real runners install packages); never the dataset, the logs,
                // the user's files or cbench's environment.
                let mounts = Mounts {
                    writable: vec![holder.clone(), home.clone()],
                    readonly,
                    network: confinement.grading_network,
                    toolchains: true,
                    ..Mounts::default()
                };
                // Not a login shell: the user's profile (pyenv init, …) would cost ~100 ms a run.
                let launcher = confinement.isolation.launcher(&repo, &mounts, false);
                let env = grader_env(&home);
                let cgroup = confinement.cgroup()?;
                let launch = Launch {
                    launcher: &launcher,
                    cwd: scratch,
                    env: &env,
                    timeout,
                    output_cap: cap,
                    cgroup: cgroup.as_ref(),
                    // Graders' trees are fresh per run and removed after it; installs may be big.
                    file_size_limit: None,
                };
                let out = run_script(&launch, &runner, &args).await;
                drop(cgroup);
                // What the tests left may be any depth (the agent's code ran there).
                let (holder, home) = (holder.clone(), home.clone());
                let _ = tokio::task::spawn_blocking(move || {
                    let _ = cbench_core::fsutil::remove_tree(&holder);
                    let _ = cbench_core::fsutil::remove_tree(&home);
                })
                .await;
                out
            }
            TestBench::Modal(bench) => {
                bench
                    .run(feature, patch, patch_is_empty, name, timeout, cap)
                    .await
            }
            TestBench::Gcp(bench) => {
                bench
                    .run(feature, patch, patch_is_empty, name, timeout, cap)
                    .await
            }
            TestBench::Docker(bench) => {
                let read = |p: &Path| {
                    std::fs::read(p).map_err(crate::sandbox::io(format!("reading {}", p.display())))
                };
                let tests_name = format!("{name}.tests.patch");
                let patch_name = format!("{name}.patch");
                let mut entries = vec![
                    TarEntry::dir("patches"),
                    TarEntry::file(
                        &format!("patches/{tests_name}"),
                        &read(&feature.tests_patch_path())?,
                        0o644,
                    ),
                ];
                let mut args = vec![tests_name];
                if !patch_is_empty {
                    entries.push(TarEntry::file(
                        &format!("patches/{patch_name}"),
                        &read(patch)?,
                        0o644,
                    ));
                    args.push(patch_name);
                }
                let grader = bench.take().await?;
                if let Err(e) = grader.container().upload("/", &entries).await {
                    let _ = grader.container().remove().await;
                    return Err(e.into());
                }
                let (container, out) = grader.run(&args, timeout, cap).await?;
                // This run's container is never used again, whatever its code left in it
                // (removed while the next test runs; `close` waits for the removals).
                bench.removing.spawn(async move {
                    if let Err(e) = container.remove().await {
                        tracing::warn!("removing a grading container: {e}");
                    }
                });
                Ok(out)
            }
        }
    }

    /// Removes the grading containers started ahead and not used.
    pub async fn close(self) -> Result<(), SandboxError> {
        if let TestBench::Docker(bench) = self {
            let ahead: Vec<PendingGrader> = bench.ahead.lock().await.drain(..).collect();
            for pending in ahead {
                if let Ok(Ok(grader)) = pending.await {
                    grader.container().remove().await?;
                }
            }
            bench.removing.finished().await;
        }
        Ok(())
    }
}

/// Variables a local grader may inherit: locale, toolchain roots, package indexes and
/// proxies (those carrying credentials in their URL are dropped), harmless test
/// tuning. Everything else (API keys, tokens, cbench's own settings) stays out.
const GRADER_ENV_ALLOWED: [&str; 28] = [
    // A cache of encodings tiktoken's tests read (shown read-only when it exists).
    "TIKTOKEN_CACHE_DIR",
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TERM",
    "PYENV_VERSION",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_TRUSTED_HOST",
    "UV_INDEX_URL",
    "UV_EXTRA_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_INDEX",
    "UV_PYTHON",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "TOKENIZERS_PARALLELISM",
    "PYTHON_KEYRING_BACKEND",
    "GOFLAGS",
];

/// A local grader's environment, built from an allow-list, with a private home.
pub fn grader_env(home: &Path) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = GRADER_ENV_ALLOWED
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .filter(|(_, v)| !carries_credentials(v))
        .collect();
    env.extend(toolchain_env());
    let home_s = home.display().to_string();
    env.push(("HOME".into(), home_s.clone()));
    env.push(("TMPDIR".into(), format!("{home_s}/tmp")));
    env.push(("PYTHONDONTWRITEBYTECODE".into(), "1".into()));
    if !env.iter().any(|(k, _)| k == "LANG") {
        env.push(("LANG".into(), "C.UTF-8".into()));
    }
    env
}

/// `scheme://user:password@host…`: a URL with user information.
fn carries_credentials(value: &str) -> bool {
    value.split(',').any(|part| {
        part.split_once("://")
            .map(|(_, rest)| {
                rest.split(['/', '?', '#'])
                    .next()
                    .unwrap_or("")
                    .contains('@')
            })
            .unwrap_or(false)
    })
}

pub use cbench_core::exec::shell_quote;

#[cfg(test)]
mod tests {
    use super::carries_credentials;

    #[test]
    fn urls_with_user_information_are_recognised() {
        assert!(carries_credentials("http://user:pw@proxy:3128"));
        assert!(carries_credentials(
            "https://a.example,https://tok@b.example/simple"
        ));
        assert!(!carries_credentials("https://pypi.org/simple"));
        assert!(!carries_credentials("https://example.com/a@b"));
        assert!(!carries_credentials("localhost,127.0.0.1"));
    }
}
