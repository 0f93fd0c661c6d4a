//! Shared helpers: plugin builds, running the binary, reading results.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

/// The bundled dataset (override with CBENCH_TEST_DATASET).
pub fn dataset() -> PathBuf {
    std::env::var_os("CBENCH_TEST_DATASET")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("dataset"))
}

/// The copy of the real CooperBench dataset (CBENCH_REAL_DATASET, else ../shared next to
/// the workspace). Never copied into this repository; its absence is a failure, not a skip.
pub fn real_dataset() -> PathBuf {
    let path = std::env::var_os("CBENCH_REAL_DATASET")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("../shared/cooperbench-dataset"));
    assert!(
        path.is_dir(),
        "the real CooperBench dataset is needed at {} (set CBENCH_REAL_DATASET)",
        path.display()
    );
    path
}

/// Paths of the plugins, built once per test run for wasm32-wasip2.
pub struct Plugins {
    pub mini_swe: PathBuf,
    pub probe: PathBuf,
}

/// Builds the plugins (once) in their own target dir so the outer cargo lock is not contended.
pub fn plugins() -> &'static Plugins {
    static PLUGINS: OnceLock<Plugins> = OnceLock::new();
    PLUGINS.get_or_init(|| {
        let target_dir = workspace().join("target").join("test-plugins");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        // Linted while built (clippy-driver as the workspace's compiler, warnings denied): the
        // plugins' lints for their own target, without a separate `cargo clippy` pass.
        let clippy_driver = Command::new("rustup")
            .args(["which", "clippy-driver"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .expect("the plugins are linted while built: install clippy (`rustup component add clippy`)");
        let status = Command::new(cargo)
            .env("RUSTC_WORKSPACE_WRAPPER", clippy_driver)
            .env("CLIPPY_ARGS", "-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__")
            .current_dir(workspace())
            .args(["build", "--profile", "plugin", "--target", "wasm32-wasip2", "-p", "mini_swe", "-p", "probe"])
            .arg("--target-dir")
            .arg(&target_dir)
            .status()
            .expect("running cargo to build the test plugins");
        assert!(
            status.success(),
            "building (and linting) the plugins for wasm32-wasip2 failed: see the compiler's output above (is the target installed? `rustup target add wasm32-wasip2`)"
        );
        let out = target_dir.join("wasm32-wasip2").join("plugin");
        Plugins {
            mini_swe: out.join("mini_swe.wasm"),
            probe: out.join("probe.wasm"),
        }
    })
}

/// The Python and JavaScript mini_swe plugins, built once per test run with the kits' build
/// scripts (which install their pinned toolchains when missing).
pub struct KitPlugins {
    pub python: PathBuf,
    pub js: PathBuf,
}

/// Builds `plugins/mini_swe_py` and `plugins/mini_swe_js` (once) into target/test-plugins/kits.
pub fn kit_plugins() -> &'static KitPlugins {
    static KIT_PLUGINS: OnceLock<KitPlugins> = OnceLock::new();
    KIT_PLUGINS.get_or_init(|| {
        let out = workspace().join("target").join("test-plugins").join("kits");
        let build = |kit: &str, plugin: &str| {
            let wasm = out.join(format!("{plugin}.wasm"));
            let status = Command::new(workspace().join("kits").join(kit).join("build.sh"))
                .arg(workspace().join("plugins").join(plugin))
                .arg(&wasm)
                .status()
                .unwrap_or_else(|e| panic!("running kits/{kit}/build.sh: {e}"));
            assert!(
                status.success(),
                "kits/{kit}/build.sh failed for plugins/{plugin}"
            );
            wasm
        };
        KitPlugins {
            python: build("python", "mini_swe_py"),
            js: build("js", "mini_swe_js"),
        }
    })
}

/// Per pair of a run: `(pair dir relative to the run, each agent's patch sha256, eval.json
/// without when it was graded and how long that took)`, sorted by pair.
pub fn pair_grades(run_dir: &Path) -> Vec<(String, Vec<String>, Value)> {
    let mut out = Vec::new();
    let mut stack = vec![run_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "result.json") {
                let pair = path.parent().unwrap();
                let result = json(&path);
                let patches = result["agents"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a["patch_sha256"].as_str().unwrap().to_string())
                    .collect();
                let mut verdict = json(&pair.join("eval.json"));
                if let Some(fields) = verdict.as_object_mut() {
                    fields.remove("evaluated_at");
                    fields.remove("duration_s");
                }
                let rel = pair.strip_prefix(run_dir).unwrap().display().to_string();
                out.push((rel, patches, verdict));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The runs (directories with a config.json) under `logs`, sorted.
pub fn run_dirs(logs: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(logs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("config.json").is_file())
        .collect();
    dirs.sort();
    dirs
}

/// Compiled-component cache shared by the tests.
pub fn cache_dir() -> PathBuf {
    workspace().join("target").join("test-cache")
}

/// The binary under test: this build's, or `CBENCH_TEST_BIN` (to show a new test fails
/// against an older build).
pub fn cbench_bin() -> PathBuf {
    std::env::var_os("CBENCH_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_cbench")))
}

/// Runs the cbench binary.
pub fn cbench(args: &[&str]) -> Output {
    cbench_with_env(args, &[])
}

/// Runs the cbench binary with extra environment variables.
pub fn cbench_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(cbench_bin())
        .args(args)
        .env("CBENCH_CACHE_DIR", cache_dir())
        .env_remove("CBENCH_DATASET_DIR")
        .envs(env.iter().copied())
        .output()
        .expect("running cbench")
}

/// Runs the cbench binary in `cwd` (where it reads `.env`) with extra environment variables.
pub fn cbench_in(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(cbench_bin())
        .current_dir(cwd)
        .args(args)
        .env("CBENCH_CACHE_DIR", cache_dir())
        .env_remove("CBENCH_DATASET_DIR")
        .envs(env.iter().copied())
        .output()
        .expect("running cbench")
}

/// stdout + stderr as text, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A run in its own temporary log directory.
pub struct Run {
    pub logs: tempfile::TempDir,
    pub name: String,
    pub output: Output,
}

impl Run {
    /// `cbench run -n NAME --log-dir TMP --dataset-dir DATASET <extra>`.
    pub fn start(name: &str, extra: &[&str]) -> Run {
        Run::start_with_env(name, extra, &[])
    }

    /// Like `start`, with extra environment variables.
    pub fn start_with_env(name: &str, extra: &[&str], env: &[(&str, &str)]) -> Run {
        Run::start_as(name, extra, env, true)
    }

    /// Like `start`, not quiet: its progress lines are part of what is checked.
    pub fn start_loud(name: &str, extra: &[&str]) -> Run {
        Run::start_as(name, extra, &[], false)
    }

    fn start_as(name: &str, extra: &[&str], env: &[(&str, &str)], quiet: bool) -> Run {
        let logs = tempfile::tempdir().expect("temp log dir");
        let log_dir = logs.path().display().to_string();
        let dataset = dataset().display().to_string();
        let mut args = vec![
            "run",
            "-q",
            "-n",
            name,
            "--log-dir",
            &log_dir,
            "--dataset-dir",
            &dataset,
        ];
        if !quiet {
            args.retain(|a| *a != "-q");
        }
        args.extend_from_slice(extra);
        let output = cbench_with_env(&args, env);
        Run {
            logs,
            name: name.to_string(),
            output,
        }
    }

    /// Asserts exit 0.
    pub fn assert_ok(&self) -> &Run {
        assert!(
            self.output.status.success(),
            "cbench run failed:\n{}",
            text(&self.output)
        );
        self
    }

    /// The run directory.
    pub fn dir(&self) -> PathBuf {
        self.logs.path().join(&self.name)
    }

    /// A pair directory of the bundled task.
    pub fn pair(&self, a: u32, b: u32) -> PathBuf {
        self.dir()
            .join("cbench_textkit_task")
            .join("task1")
            .join(format!("features_{a}_{b}"))
    }
}

/// Parses a JSON file.
pub fn json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// Writes a file in a temp dir and returns its path as a string.
pub fn write_temp(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("writing temp file");
    path.display().to_string()
}

/// The Docker engine for the docker-backend tests (DOCKER_HOST, else the local socket),
/// with the bundled task's image built once from the offline base image
/// (CBENCH_BASE_IMAGE, default `cbench-base:bookworm`, made by scripts/docker-base.sh).
/// An unreachable engine or a missing base image fails the test: these tests are never
/// skipped silently.
pub fn docker() -> &'static std::sync::Arc<cbench::docker::Engine> {
    static ENGINE: OnceLock<std::sync::Arc<cbench::docker::Engine>> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let engine = runtime
            .block_on(cbench::docker::Engine::connect())
            .unwrap_or_else(|e| {
                panic!("the docker-backend tests need a Docker engine (.ci/run starts one): {e}")
            });
        let base = std::env::var("CBENCH_BASE_IMAGE").unwrap_or_else(|_| "cbench-base:bookworm".into());
        let dataset = dataset().display().to_string();
        let out = cbench(&[
            "images",
            "build",
            "--dataset-dir",
            &dataset,
            "-r",
            "cbench_textkit",
            "-t",
            "1",
            "--force",
            "--base-image",
            &base,
        ]);
        assert!(
            out.status.success(),
            "building the bundled task image from {base} failed (scripts/docker-base.sh makes the base):\n{}",
            text(&out)
        );
        engine
    })
}

/// The bundled task's image name.
pub const BUNDLED_IMAGE: &str = "akhatua/cooperbench-cbench-textkit:task1";

/// Ids of the containers carrying `label=value` (running or not).
pub async fn containers_labelled(
    engine: &cbench::docker::Engine,
    label: &str,
    value: &str,
) -> Vec<String> {
    let filters =
        std::collections::HashMap::from([("label".to_string(), vec![format!("{label}={value}")])]);
    engine
        .api()
        .list_containers(Some(
            bollard::query_parameters::ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .expect("listing containers")
        .into_iter()
        .filter_map(|c| c.id)
        .collect()
}

/// A real `redis-server` on a free loopback port, with an append-only file in its own temp dir
/// so a restart keeps the data (as a production Redis with persistence does). Fails the test,
/// never skips it, when Redis cannot start.
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl RedisServer {
    /// Starts one.
    pub fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("finding a free port");
        let mut server = RedisServer {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is needed by the Redis tests (.ci/run installs it: apt-get install redis-server)");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if self.ping() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!(
            "redis-server on port {} did not answer PING in 10 s",
            self.port
        );
    }

    fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let mut buf = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut buf).is_ok()
            && &buf == b"+PONG\r\n"
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGTERM, then waits).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// A synchronous connection for the test's own checks.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("connecting to the test's redis-server")
    }

    /// Keys matching `pattern`.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        redis::cmd("KEYS")
            .arg(pattern)
            .query(&mut self.connection())
            .expect("KEYS")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The patch the host computes from `sandbox`'s tree against `base` (default limits).
pub async fn patch_of(
    sandbox: &dyn cbench::sandbox::Sandbox,
    base: &cbench::sandbox::local::BaseRepo,
) -> Result<String, cbench::sandbox::patch::PatchError> {
    let scratch = tempfile::tempdir().expect("a scratch dir");
    cbench::sandbox::patch::compute(sandbox, base, scratch.path(), Default::default()).await
}

/// Docker options for tests: small limits, no networks, `pool` containers started ahead.
pub fn docker_options(pool: usize) -> cbench::backend::DockerOptions {
    cbench::backend::DockerOptions {
        image_prefix: "akhatua/cooperbench-".into(),
        limits: cbench::docker::ResourceLimits {
            cpus: 1.0,
            memory_bytes: 256 << 20,
            pids: 256,
            ..Default::default()
        },
        agent_network: "none".into(),
        grading_network: "none".into(),
        git_image: None,
        pool,
    }
}

/// The host's copy of the bundled task image's repository (what docker patches diff against).
pub async fn bundled_image_base(
    scratch: &Path,
) -> std::sync::Arc<cbench::sandbox::local::BaseRepo> {
    use cbench::backend::{Backend, BackendChoice};
    let options = docker_options(0);
    let backend = Backend::resolve(&BackendChoice::Docker(options), "it-image-base", &[])
        .await
        .expect("docker backend");
    let pairs = cbench::dataset::Dataset::discover(&dataset())
        .expect("dataset")
        .select(&cbench::dataset::Selection::default())
        .expect("selection");
    let bases = backend.base_repos(
        &scratch.join("bases"),
        cbench::repos::UpstreamRepos {
            cache_dir: scratch.join("cache"),
            mirror_dir: None,
        },
    );
    bases.get(&pairs[0].task).await.expect("the image's base")
}
