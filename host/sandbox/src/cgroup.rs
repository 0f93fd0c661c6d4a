//! Process and memory limits for local sandboxes and graders, from Linux control
//! groups (v2 when its `pids` and `memory` controllers can be delegated to us, else
//! the v1 `pids` and `memory` hierarchies). A cgroup also lets us kill everything a
//! command started, `setsid` children included, which a process group cannot.
//!
//! rlimits are no substitute: `RLIMIT_NPROC` does not apply to root, and
//! `RLIMIT_AS` counts address space, not memory (it breaks Go and the JVM).

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Limits of one sandbox (all its processes together).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessLimits {
    /// Maximum number of processes (threads count too).
    pub pids: u64,
    /// Memory in bytes; swap is not allowed beyond it.
    pub memory_bytes: u64,
    /// CPU time per wall second, in thousandths of a CPU (`--cpus 2` = 2000); 0 = no cap.
    pub cpu_millis: u64,
    /// Disk the sandbox may fill (watched between commands; see `disk`).
    pub disk_bytes: u64,
}

impl Default for ProcessLimits {
    fn default() -> Self {
        ProcessLimits {
            pids: 4096,
            memory_bytes: 8 << 30,
            cpu_millis: 2000,
            disk_bytes: super::disk::DEFAULT_DISK_BYTES,
        }
    }
}

/// The CFS period a CPU quota is expressed in (100 ms, the kernel's default).
const CPU_PERIOD_US: u64 = 100_000;

/// Where this machine lets us create limited cgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupRoot {
    /// One unified directory (our own cgroup's parent-to-be) with both controllers delegated.
    V2(PathBuf),
    /// The `pids` and `memory` v1 hierarchies, at our own cgroup in each, and `cpu` when
    /// it is writable too.
    V1 {
        pids: PathBuf,
        memory: PathBuf,
        cpu: Option<PathBuf>,
    },
}

/// Why limits cannot be enforced here.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct CgroupUnavailable(pub String);

static NEXT_GROUP: AtomicU64 = AtomicU64::new(0);
/// How often, and how many times, a cgroup being emptied is checked (2 s in all).
const POLL: Duration = Duration::from_micros(500);
const POLLS: u32 = 4000;

impl CgroupRoot {
    /// Finds writable cgroups with the `pids` and `memory` controllers.
    pub fn detect() -> Result<CgroupRoot, CgroupUnavailable> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| CgroupUnavailable(format!("reading /proc/self/mountinfo: {e}")))?;
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| CgroupUnavailable(format!("reading /proc/self/cgroup: {e}")))?;
        let mounts = parse_mounts(&mountinfo);
        let own = parse_own_cgroups(&own);
        let v1 = |controller: &str| -> Option<PathBuf> {
            let mount = mounts
                .iter()
                .find(|m| m.fstype == "cgroup" && m.options.iter().any(|o| o == controller))?;
            let own_path = own
                .iter()
                .find(|(controllers, _)| controllers.split(',').any(|c| c == controller))?
                .1
                .clone();
            Some(join_cgroup_path(&mount.point, &own_path))
        };
        if let (Some(pids), Some(memory)) = (v1("pids"), v1("memory")) {
            if writable_dir(&pids) && writable_dir(&memory) {
                let cpu = v1("cpu").filter(|c| writable_dir(c));
                return Ok(CgroupRoot::V1 { pids, memory, cpu });
            }
        }
        if let Some(mount) = mounts.iter().find(|m| m.fstype == "cgroup2") {
            if let Some((_, own_path)) = own.iter().find(|(c, _)| c.is_empty()) {
                let dir = join_cgroup_path(&mount.point, own_path);
                match v2_delegate(&dir) {
                    Ok(root) => return Ok(CgroupRoot::V2(root)),
                    Err(e) => return Err(e),
                }
            }
        }
        Err(CgroupUnavailable(
            "no writable cgroup with the pids and memory controllers".into(),
        ))
    }

    /// `cgroup v1` or `cgroup v2`, for the run header and config.json.
    pub fn mechanism(&self) -> &'static str {
        match self {
            CgroupRoot::V1 { .. } => "cgroup v1",
            CgroupRoot::V2(_) => "cgroup v2",
        }
    }

    /// Whether CPU quotas can be set here.
    pub fn limits_cpu(&self) -> bool {
        match self {
            CgroupRoot::V1 { cpu, .. } => cpu.is_some(),
            CgroupRoot::V2(root) => std::fs::read_to_string(root.join("cgroup.subtree_control"))
                .is_ok_and(|c| c.split_whitespace().any(|x| x == "cpu")),
        }
    }

    /// Creates a fresh cgroup with `limits` (removed, its processes killed, on drop).
    pub fn create(&self, limits: ProcessLimits) -> Result<SandboxCgroup, std::io::Error> {
        let name = format!(
            "cbench-{}-{}",
            std::process::id(),
            NEXT_GROUP.fetch_add(1, Ordering::Relaxed)
        );
        let group = match self {
            CgroupRoot::V2(root) => {
                let dir = root.join(&name);
                std::fs::create_dir(&dir)?;
                let group = SandboxCgroup::new(vec![dir.clone()], true)?;
                std::fs::write(dir.join("pids.max"), limits.pids.to_string())?;
                std::fs::write(dir.join("memory.max"), limits.memory_bytes.to_string())?;
                if limits.cpu_millis > 0 && dir.join("cpu.max").exists() {
                    std::fs::write(
                        dir.join("cpu.max"),
                        format!("{} {CPU_PERIOD_US}", cpu_quota_us(limits.cpu_millis)),
                    )?;
                }
                // Absent when the kernel has no swap accounting; nothing to cap then.
                let _ = std::fs::write(dir.join("memory.swap.max"), "0");
                group
            }
            CgroupRoot::V1 { pids, memory, cpu } => {
                let (p, m) = (pids.join(&name), memory.join(&name));
                std::fs::create_dir(&p)?;
                if let Err(e) = std::fs::create_dir(&m) {
                    let _ = std::fs::remove_dir(&p);
                    return Err(e);
                }
                let mut dirs = vec![p.clone(), m.clone()];
                let c = cpu
                    .as_ref()
                    .filter(|_| limits.cpu_millis > 0)
                    .map(|cpu| cpu.join(&name));
                if let Some(c) = &c {
                    if let Err(e) = std::fs::create_dir(c) {
                        let _ = std::fs::remove_dir(&p);
                        let _ = std::fs::remove_dir(&m);
                        return Err(e);
                    }
                    dirs.push(c.clone());
                }
                let group = SandboxCgroup::new(dirs, false)?;
                if let Some(c) = &c {
                    std::fs::write(c.join("cpu.cfs_period_us"), CPU_PERIOD_US.to_string())?;
                    std::fs::write(
                        c.join("cpu.cfs_quota_us"),
                        cpu_quota_us(limits.cpu_millis).to_string(),
                    )?;
                }
                std::fs::write(p.join("pids.max"), limits.pids.to_string())?;
                std::fs::write(
                    m.join("memory.limit_in_bytes"),
                    limits.memory_bytes.to_string(),
                )?;
                // memory+swap equal to memory: no swap (absent without swap accounting).
                let _ = std::fs::write(
                    m.join("memory.memsw.limit_in_bytes"),
                    limits.memory_bytes.to_string(),
                );
                group
            }
        };
        Ok(group)
    }

    /// Removes empty `cbench-<pid>-*` cgroups left by cbench processes that no longer run.
    pub fn remove_stale(&self) -> usize {
        let dirs: Vec<&PathBuf> = match self {
            CgroupRoot::V2(root) => vec![root],
            CgroupRoot::V1 { pids, memory, cpu } => {
                let mut dirs = vec![pids, memory];
                dirs.extend(cpu.as_ref());
                dirs
            }
        };
        let mut removed = 0;
        for parent in dirs {
            let Ok(entries) = std::fs::read_dir(parent) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(pid) = name
                    .strip_prefix("cbench-")
                    .and_then(|rest| rest.split('-').next())
                    .and_then(|pid| pid.parse::<i32>().ok())
                else {
                    continue;
                };
                if crate::process::process_alive(pid) {
                    continue;
                }
                let group = SandboxCgroup {
                    dirs: vec![entry.path()],
                    procs: Vec::new(),
                    v2: matches!(self, CgroupRoot::V2(_)),
                };
                group.kill_all();
                if std::fs::remove_dir(entry.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    }
}

/// One sandbox's (or grader's) cgroup in every hierarchy that limits it.
#[derive(Debug)]
pub struct SandboxCgroup {
    dirs: Vec<PathBuf>,
    /// `cgroup.procs` of each directory, ready for the pre-exec hook (no allocation there).
    procs: Vec<CString>,
    v2: bool,
}

impl SandboxCgroup {
    fn new(dirs: Vec<PathBuf>, v2: bool) -> Result<SandboxCgroup, std::io::Error> {
        let procs = dirs
            .iter()
            .map(|d| {
                CString::new(d.join("cgroup.procs").as_os_str().as_encoded_bytes())
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SandboxCgroup { dirs, procs, v2 })
    }

    /// A pre-exec hook that moves the calling process into this cgroup. It runs between
    /// fork and exec, so it only makes system calls (open, write, close) on paths
    /// prepared here.
    pub fn joiner(&self) -> impl FnMut() -> std::io::Result<()> + Send + Sync + 'static {
        let procs = self.procs.clone();
        move || {
            for path in &procs {
                // SAFETY: async-signal-safe calls on a valid NUL-terminated path.
                unsafe {
                    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                    libc::close(fd);
                    if written != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
            }
            Ok(())
        }
    }

    /// Kills every process in the cgroup, whatever session or group it moved to
    /// (blocking; for drops and sweeps).
    pub fn kill_all(&self) {
        for _ in 0..POLLS {
            if self.kill_round() {
                return;
            }
            std::thread::sleep(POLL);
        }
        self.warn_survivors();
    }

    /// `kill_all` for async code (after every command): waits without blocking a worker.
    pub async fn end_all(&self) {
        for _ in 0..POLLS {
            if self.kill_round() {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
        self.warn_survivors();
    }

    /// Signals what is in the cgroup; true once it is empty. A killed process leaves the
    /// list a moment later and a forking one may add more, hence rounds.
    fn kill_round(&self) -> bool {
        let Some(first) = self.dirs.first() else {
            return true;
        };
        let pids = read_pids(&first.join("cgroup.procs"));
        if pids.is_empty() {
            return true;
        }
        if !(self.v2 && std::fs::write(first.join("cgroup.kill"), "1").is_ok()) {
            for pid in pids {
                // SAFETY: kill(2) on a pid read from our own cgroup; no memory is touched.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        false
    }

    fn warn_survivors(&self) {
        if let Some(first) = self.dirs.first() {
            tracing::warn!("processes survived in {}", first.display());
        }
    }
}

impl Drop for SandboxCgroup {
    fn drop(&mut self) {
        self.kill_all();
        for dir in &self.dirs {
            // A killed process leaves its cgroup a moment after the signal.
            for _ in 0..100 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// A CFS quota for `cpu_millis` thousandths of a CPU (at least the kernel's 1 ms minimum).
fn cpu_quota_us(cpu_millis: u64) -> u64 {
    (cpu_millis.saturating_mul(CPU_PERIOD_US) / 1000).max(1000)
}

fn read_pids(procs: &Path) -> Vec<i32> {
    std::fs::read_to_string(procs)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn writable_dir(dir: &Path) -> bool {
    let Ok(c) = CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: access(2) on a valid NUL-terminated path.
    dir.is_dir() && unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0
}

/// Creates (or reuses) `<own>/cbench` with `pids` and `memory` enabled for its children.
/// Our own cgroup may not have both processes and controllers for children (v2's
/// "no internal processes" rule), so the limited cgroups live one level down, in a
/// directory that holds no process.
fn v2_delegate(own: &Path) -> Result<PathBuf, CgroupUnavailable> {
    let controllers = std::fs::read_to_string(own.join("cgroup.controllers")).unwrap_or_default();
    let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
    if !(has("pids") && has("memory")) {
        return Err(CgroupUnavailable(format!(
            "cgroup v2 at {}: the pids and memory controllers are not delegated (have: {})",
            own.display(),
            controllers.trim()
        )));
    }
    let enable = |dir: &Path| {
        std::fs::write(dir.join("cgroup.subtree_control"), "+pids +memory")?;
        // CPU quotas when the cpu controller is delegated too; limits work without it.
        if has("cpu") {
            let _ = std::fs::write(dir.join("cgroup.subtree_control"), "+cpu");
        }
        Ok::<(), std::io::Error>(())
    };
    enable(own).map_err(|e| {
        CgroupUnavailable(format!(
            "cgroup v2 at {}: cannot enable pids and memory for child groups: {e}",
            own.display()
        ))
    })?;
    let parent = own.join("cbench");
    match std::fs::create_dir(&parent) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(CgroupUnavailable(format!(
                "cgroup v2: creating {}: {e}",
                parent.display()
            )))
        }
    }
    enable(&parent).map_err(|e| {
        CgroupUnavailable(format!(
            "cgroup v2 at {}: cannot enable pids and memory: {e}",
            parent.display()
        ))
    })?;
    Ok(parent)
}

struct Mount {
    point: PathBuf,
    fstype: String,
    options: Vec<String>,
}

/// mountinfo lines: `id parent dev root point opts [tags] - fstype source superopts`.
fn parse_mounts(mountinfo: &str) -> Vec<Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let point = left.split(' ').nth(4)?;
            let mut right = right.split(' ');
            let fstype = right.next()?.to_string();
            let options = right
                .nth(1)
                .unwrap_or_default()
                .split(',')
                .map(str::to_string)
                .collect();
            Some(Mount {
                point: PathBuf::from(point.replace("\\040", " ")),
                fstype,
                options,
            })
        })
        .collect()
}

/// `/proc/self/cgroup` lines `id:controllers:path` → (controllers, path).
fn parse_own_cgroups(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            Some((parts.next()?.to_string(), parts.next()?.to_string()))
        })
        .collect()
}

fn join_cgroup_path(mount: &Path, own: &str) -> PathBuf {
    mount.join(own.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_and_own_cgroups_parse() {
        let info =
            "35 25 0:30 / /sys/fs/cgroup/pids rw,relatime shared:14 - cgroup cgroup rw,pids\n\
                    40 25 0:35 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";
        let mounts = parse_mounts(info);
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].point, PathBuf::from("/sys/fs/cgroup/pids"));
        assert!(mounts[0].options.iter().any(|o| o == "pids"));
        assert_eq!(mounts[1].fstype, "cgroup2");
        let own = parse_own_cgroups("8:pids:/\n4:memory:/a/b\n0::/user.slice");
        assert_eq!(own[1], ("memory".to_string(), "/a/b".to_string()));
        assert_eq!(own[2], (String::new(), "/user.slice".to_string()));
        assert_eq!(
            join_cgroup_path(Path::new("/sys/fs/cgroup/memory"), "/a/b"),
            PathBuf::from("/sys/fs/cgroup/memory/a/b")
        );
    }
}
