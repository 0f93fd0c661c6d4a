//! How local commands are confined: bubblewrap in a user namespace with no
//! capabilities, a filesystem of read-only system directories plus the sandbox's own
//! workspace, private /tmp, /proc and PID namespace, no network (agents), and
//! cgroup limits on processes and memory. The same policy confines graders, which
//! run the agents' code (with the network, since runners install packages).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::cgroup::{CgroupRoot, ProcessLimits, SandboxCgroup};
use super::SandboxError;

/// `--isolation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsolationMode {
    /// bwrap; an error naming the fix when it is missing.
    Auto,
    /// bwrap, or an error when it is missing.
    Bwrap,
    /// No confinement beyond the scrubbed environment (the user's explicit choice).
    None,
}

/// What the local backend was asked for: isolation and limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalOptions {
    pub mode: IsolationMode,
    pub limits: ProcessLimits,
    /// Graders keep the host's network (`--grading-network bridge`, the default: real
    /// runners install packages) or get none.
    pub grading_network: bool,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            mode: IsolationMode::Auto,
            limits: ProcessLimits::default(),
            grading_network: true,
        }
    }
}

/// System directories every confined command sees read-only (when they exist).
const SYSTEM_DIRS: [&str; 10] = [
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt", "/nix",
];
/// Files under /etc that hold secrets; replaced by an empty file.
const SECRET_FILES: [&str; 6] = [
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/shadow-",
    "/etc/gshadow-",
    "/etc/sudoers",
    "/etc/security/opasswd",
];
/// Directories under /etc that hold secrets; replaced by an empty directory.
const SECRET_DIRS: [&str; 4] = [
    "/etc/ssh",
    "/etc/ssl/private",
    "/etc/sudoers.d",
    "/etc/docker",
];
/// Credential files inside toolchain homes (cargo's registry token).
const TOOLCHAIN_SECRETS: [&str; 2] = ["credentials.toml", "credentials"];

/// How local commands are confined, resolved against this machine.
#[derive(Debug, Clone)]
pub enum Isolation {
    /// Plain processes with a scrubbed environment (`--isolation none`).
    None,
    /// bubblewrap with this policy.
    Bwrap(Arc<BwrapPolicy>),
}

/// What a bwrap'd command may see.
#[derive(Debug, Clone)]
pub struct BwrapPolicy {
    bwrap: PathBuf,
    /// Toolchain directories outside the system ones (graders: pyenv, rustup, cargo).
    toolchains: Vec<PathBuf>,
    /// Paths never shown (dataset, logs, cache, the user's working directory), masked
    /// when they lie inside a directory that is shown.
    hidden: Vec<PathBuf>,
}

impl PartialEq for Isolation {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

/// Isolation plus limits: everything a local command's launch needs.
#[derive(Debug, Clone)]
pub struct Confinement {
    pub isolation: Isolation,
    pub limits: ProcessLimits,
    /// Where limits come from; `Err` says why they are not enforced.
    pub cgroups: Result<CgroupRoot, String>,
    /// Graders keep the host's network.
    pub grading_network: bool,
}

/// What one launch may touch besides the system directories.
#[derive(Debug, Default, Clone)]
pub struct Mounts {
    /// Bound read-write at the same path.
    pub writable: Vec<PathBuf>,
    /// Bound read-only at the same path (files or directories).
    pub readonly: Vec<PathBuf>,
    /// Keep the host's network (graders); agents get none.
    pub network: bool,
    /// Also show the toolchain directories (graders run the user's toolchain).
    pub toolchains: bool,
    /// Bound read-write at the exec channel's directory (`/tmp/cbench`) over the private /tmp.
    pub channel_dir: Option<PathBuf>,
}

impl Isolation {
    /// Resolves the mode against what this machine has.
    pub fn resolve(mode: IsolationMode) -> Result<Isolation, SandboxError> {
        if mode == IsolationMode::None {
            return Ok(Isolation::None);
        }
        let found = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("bwrap"))
                .find(|candidate| candidate.is_file())
        });
        match found {
            Some(bwrap) => {
                let isolation = Isolation::Bwrap(Arc::new(BwrapPolicy {
                    bwrap,
                    toolchains: toolchain_dirs(),
                    hidden: default_hidden(),
                }));
                isolation.probe()?;
                Ok(isolation)
            }
            None => Err(SandboxError::Command(format!(
                "--isolation {}: bubblewrap (`bwrap`) is not installed, and without it agents' \
                 commands could read your files and keys; install it (`apt-get install bubblewrap`, \
                 `dnf install bubblewrap`) or pass `--isolation none` to run unconfined knowingly",
                if mode == IsolationMode::Auto {
                    "auto"
                } else {
                    "bwrap"
                }
            ))),
        }
    }

    /// Starts one confined `true`: a bubblewrap that is installed but cannot build its sandbox
    /// here (a container without user namespaces or with a masked /proc) is the machine's
    /// fault, said once before any agent runs, not every agent's failed command.
    fn probe(&self) -> Result<(), SandboxError> {
        let argv = self.launcher(Path::new("/"), &Mounts::default(), false);
        let out = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .args(["-c", "true"])
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| SandboxError::Command(format!("bubblewrap ({}): {e}", argv[0])))?;
        if out.status.success() {
            return Ok(());
        }
        Err(SandboxError::Command(format!(
            "bubblewrap ({}) is installed but cannot build its sandbox on this machine: {}; \
             inside a container it needs user namespaces and an unmasked /proc (docker: \
             `--security-opt seccomp=unconfined --security-opt systempaths=unconfined`; \
             Kubernetes: `procMount: Unmasked` with `hostUsers: false`)",
            argv[0],
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }

    /// Adds paths no confined command may see (the dataset, logs, caches).
    pub fn hide(&mut self, paths: &[PathBuf]) {
        if let Isolation::Bwrap(policy) = self {
            let policy = Arc::make_mut(policy);
            for p in paths {
                let p = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
                if !policy.hidden.contains(&p) {
                    policy.hidden.push(p);
                }
            }
        }
    }

    /// `bwrap` or `none`, for config.json.
    pub fn name(&self) -> &'static str {
        match self {
            Isolation::None => "none",
            Isolation::Bwrap(_) => "bwrap",
        }
    }

    /// The launcher of a persistent shell server: `launcher`'s, with the server itself as its PID
    /// namespace's init. Bubblewrap's own init would hold the server's pipes, and commands could
    /// open them through `/proc/1/fd`; the server is not dumpable, so they cannot.
    pub fn server_launcher(&self, chdir: &Path, mounts: &Mounts) -> Vec<String> {
        let mut argv = self.launcher(chdir, mounts, false);
        if let Some(at) = argv.iter().position(|a| a == "--unshare-pid") {
            argv.insert(at + 1, "--as-pid-1".into());
        }
        argv
    }

    /// The launcher of a command: `bash [-l]`, inside bwrap when confined.
    pub fn launcher(&self, chdir: &Path, mounts: &Mounts, login: bool) -> Vec<String> {
        let mut bash = vec!["bash".to_string()];
        if login {
            bash.push("-l".into());
        }
        let Isolation::Bwrap(policy) = self else {
            return bash;
        };
        let mut args = vec![policy.bwrap.display().to_string()];
        let mut push = |items: &[&str]| args.extend(items.iter().map(|s| s.to_string()));
        // No capabilities, and none regained: a user namespace whose root has an empty
        // bounding set cannot remount, unmount or mount anything.
        push(&[
            "--unshare-user",
            "--uid",
            "0",
            "--gid",
            "0",
            "--cap-drop",
            "ALL",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--die-with-parent",
            "--new-session",
        ]);
        if !mounts.network {
            push(&["--unshare-net"]);
        }
        // The private /tmp and /proc come first: a toolchain directory that lies under /tmp
        // (uv installed there, say) is then bound on top of it instead of hidden beneath it.
        push(&["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]);
        push(&["--tmpfs", "/var/tmp", "--dir", "/run"]);
        if let Some(dir) = &mounts.channel_dir {
            push(&[
                "--bind",
                &dir.display().to_string(),
                super::local_shell::CHANNEL_DIR_INSIDE,
            ]);
        }
        let mut shown: Vec<PathBuf> = Vec::new();
        for dir in SYSTEM_DIRS {
            let path = Path::new(dir);
            match std::fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_symlink() => {
                    if let Ok(target) = std::fs::read_link(path) {
                        push(&["--symlink", &target.display().to_string(), dir]);
                    }
                }
                Ok(m) if m.is_dir() => {
                    push(&["--ro-bind", dir, dir]);
                    shown.push(path.to_path_buf());
                }
                _ => {}
            }
        }
        if mounts.toolchains {
            for dir in &policy.toolchains {
                let d = dir.display().to_string();
                push(&["--ro-bind", &d, &d]);
                for secret in TOOLCHAIN_SECRETS {
                    let file = dir.join(secret);
                    if file.is_file() {
                        push(&["--ro-bind", "/dev/null", &file.display().to_string()]);
                    }
                }
                shown.push(dir.clone());
            }
        }
        for file in SECRET_FILES {
            if Path::new(file).exists() {
                push(&["--ro-bind", "/dev/null", file]);
            }
        }
        for dir in SECRET_DIRS {
            if Path::new(dir).is_dir() {
                push(&["--tmpfs", dir]);
            }
        }
        for hidden in &policy.hidden {
            let inside_shown = shown.iter().any(|s| hidden.starts_with(s));
            if !inside_shown {
                continue;
            }
            if hidden.is_dir() {
                push(&["--tmpfs", &hidden.display().to_string()]);
            } else if hidden.exists() {
                push(&["--ro-bind", "/dev/null", &hidden.display().to_string()]);
            }
        }
        for dir in &mounts.readonly {
            let d = dir.display().to_string();
            push(&["--ro-bind", &d, &d]);
        }
        for dir in &mounts.writable {
            let d = dir.display().to_string();
            push(&["--bind", &d, &d]);
        }
        push(&["--chdir", &chdir.display().to_string()]);
        args.extend(bash);
        args
    }
}

impl Confinement {
    /// Resolves the isolation mode and finds how limits can be enforced.
    pub fn resolve(options: LocalOptions) -> Result<Confinement, SandboxError> {
        Ok(Confinement {
            isolation: Isolation::resolve(options.mode)?,
            limits: options.limits,
            cgroups: CgroupRoot::detect().map_err(|e| e.0),
            grading_network: options.grading_network,
        })
    }

    /// Unconfined and unlimited (tools that run trusted scripts only, like `bench`).
    pub fn none() -> Confinement {
        Confinement {
            isolation: Isolation::None,
            limits: ProcessLimits::default(),
            cgroups: Err("not requested".into()),
            grading_network: true,
        }
    }

    /// A new limited cgroup for one sandbox or grader run (`None` when limits are unavailable).
    pub fn cgroup(&self) -> Result<Option<SandboxCgroup>, SandboxError> {
        match &self.cgroups {
            Ok(root) => root
                .create(self.limits)
                .map(Some)
                .map_err(super::io("creating the sandbox's cgroup")),
            Err(_) => Ok(None),
        }
    }

    /// One line for the run header and config.json.
    pub fn describe(&self) -> String {
        let limits = match &self.cgroups {
            Ok(root) => format!(
                "{} pids, {} MiB, {} by {}, {} MiB disk watched",
                self.limits.pids,
                self.limits.memory_bytes >> 20,
                if root.limits_cpu() && self.limits.cpu_millis > 0 {
                    format!("{} CPUs", self.limits.cpu_millis as f64 / 1000.0)
                } else {
                    "CPU not capped".to_string()
                },
                root.mechanism(),
                self.limits.disk_bytes >> 20
            ),
            Err(why) => format!(
                "process and memory limits NOT enforced: {why}; {} MiB disk watched",
                self.limits.disk_bytes >> 20
            ),
        };
        let graders = if self.grading_network {
            "graders: host network"
        } else {
            "graders: no network"
        };
        match &self.isolation {
            Isolation::None => {
                format!("none: UNCONFINED, agents can read your files and keys; {limits}")
            }
            Isolation::Bwrap(_) => format!(
                "bwrap: no capabilities, no network, own workspace only; {limits}; {graders}"
            ),
        }
    }
}

/// The user's home, config and the working directory (its `.env`) are never shown.
fn default_hidden() -> Vec<PathBuf> {
    let mut hidden = Vec::new();
    if let Some(home) = std::env::var_os("HOME") {
        hidden.push(PathBuf::from(home));
    }
    if let Ok(cwd) = std::env::current_dir() {
        hidden.push(cwd);
    }
    hidden
        .into_iter()
        .map(|p| std::fs::canonicalize(&p).unwrap_or(p))
        .collect()
}

/// Toolchains graders need that live outside the system directories: PATH entries
/// (with pyenv's root for its shims) and rustup/cargo homes.
pub fn toolchain_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut add = |p: PathBuf| {
        let p = std::fs::canonicalize(&p).unwrap_or(p);
        let system = SYSTEM_DIRS.iter().any(|s| p.starts_with(s));
        if p.is_dir() && !system && !dirs.iter().any(|d| p.starts_with(d)) {
            dirs.retain(|d| !d.starts_with(&p));
            dirs.push(p);
        }
    };
    for (var, _) in toolchain_env() {
        if let Some(value) = std::env::var_os(&var) {
            add(PathBuf::from(value));
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for entry in std::env::split_paths(&paths) {
            if entry.is_absolute() {
                add(entry);
            }
        }
    }
    dirs
}

/// Toolchain roots as environment variables, with their defaults under $HOME filled
/// in (graders get a private HOME, so the defaults would point nowhere).
pub fn toolchain_env() -> Vec<(String, String)> {
    let home = std::env::var("HOME").unwrap_or_default();
    let mut env = Vec::new();
    for (var, default) in [
        ("PYENV_ROOT", ".pyenv"),
        ("RUSTUP_HOME", ".rustup"),
        ("CARGO_HOME", ".cargo"),
        ("GOROOT", ""),
        ("GOPATH", "go"),
        ("JAVA_HOME", ""),
        ("NVM_DIR", ".nvm"),
    ] {
        let value = std::env::var(var).ok().or_else(|| {
            (!default.is_empty() && !home.is_empty())
                .then(|| format!("{home}/{default}"))
                .filter(|p| Path::new(p).is_dir())
        });
        if let Some(value) = value {
            env.push((var.to_string(), value));
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toolchain installed under /tmp (uv there, say) is visible to a grader: the private
    /// /tmp is mounted first and the toolchain bound on top of it.
    #[test]
    fn a_toolchain_under_tmp_is_not_hidden_by_the_private_tmp() {
        let Ok(Isolation::Bwrap(found)) = Isolation::resolve(IsolationMode::Bwrap) else {
            panic!("bubblewrap is required for this test (apt-get install bubblewrap)");
        };
        let toolchain = tempfile::Builder::new()
            .prefix("cbench-toolchain-")
            .tempdir_in("/tmp")
            .unwrap();
        let tool = toolchain.path().join("tool");
        std::fs::write(&tool, "#!/bin/sh\necho toolchain-reachable\n").unwrap();
        std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let isolation = Isolation::Bwrap(Arc::new(BwrapPolicy {
            bwrap: found.bwrap.clone(),
            toolchains: vec![toolchain.path().to_path_buf()],
            hidden: Vec::new(),
        }));
        let mounts = Mounts {
            toolchains: true,
            ..Mounts::default()
        };
        let launcher = isolation.launcher(Path::new("/"), &mounts, false);
        let out = std::process::Command::new(&launcher[0])
            .args(&launcher[1..])
            .arg("-c")
            .arg(tool.display().to_string())
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "toolchain-reachable\n",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
