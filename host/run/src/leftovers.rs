//! What an invocation killed without cleanup (`kill -9`, a crash) leaves on this
//! machine: scratch directories under the temp dir (repository copies, sandboxes)
//! and sandbox cgroups. Each scratch directory records its owner; anything whose
//! owner is gone is removed by the next run of the same name and by `cbench cleanup`.

use std::path::{Path, PathBuf};

/// The owner record inside every scratch directory.
const OWNER_FILE: &str = ".cbench-owner";

/// What a sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub scratch_dirs: usize,
    pub cgroups: usize,
}

/// A scratch directory `cbench-<kind>-<run>-XXXX` in the temp dir, owned by this process.
pub fn scratch_dir(kind: &str, run: &str) -> std::io::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("cbench-{kind}-{run}-"))
        .tempdir()?;
    // Only this user may enter: what agents leave inside (a setuid file, say) is out of other
    // local users' reach.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
    }
    let owner = format!(
        "{} {} {kind} {run}\n",
        std::process::id(),
        start_time(std::process::id() as i32).unwrap_or_default()
    );
    std::fs::write(dir.path().join(OWNER_FILE), owner)?;
    Ok(dir)
}

/// Removes scratch directories (of run `run`, or of every run) whose owner is gone,
/// and cgroups of dead cbench processes.
pub fn sweep(run: Option<&str>) -> Swept {
    let mut swept = Swept::default();
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return swept;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !entry.file_name().to_string_lossy().starts_with("cbench-") {
            continue;
        }
        let Some(owner) = read_owner(&path) else {
            continue;
        };
        if run.is_some_and(|r| r != owner.run) || owner.is_alive() {
            continue;
        }
        match remove_owned(&path) {
            Ok(()) => swept.scratch_dirs += 1,
            Err(e) => tracing::warn!("removing {}: {e}", path.display()),
        }
    }
    if let Ok(root) = crate::sandbox::cgroup::CgroupRoot::detect() {
        swept.cgroups = root.remove_stale();
    }
    swept
}

/// Removes a scratch directory, its owner record last: a removal that fails halfway leaves a
/// directory the next sweep still recognises.
fn remove_owned(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)?.flatten() {
        if entry.file_name() != OWNER_FILE {
            crate::fsutil::remove_tree(&entry.path())?;
        }
    }
    crate::fsutil::remove_tree(dir)
}

struct Owner {
    pid: i32,
    start: String,
    run: String,
}

impl Owner {
    /// The same process (pid and start time: a reused pid is another process).
    fn is_alive(&self) -> bool {
        crate::process::process_alive(self.pid)
            && start_time(self.pid).is_some_and(|s| s == self.start)
    }
}

fn read_owner(dir: &Path) -> Option<Owner> {
    let text = std::fs::read_to_string(dir.join(OWNER_FILE)).ok()?;
    let mut parts = text.trim().splitn(4, ' ');
    let pid = parts.next()?.parse().ok()?;
    let start = parts.next()?.to_string();
    let _kind = parts.next()?;
    let run = parts.next()?.to_string();
    Some(Owner { pid, start, run })
}

/// A process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat).
fn start_time(pid: i32) -> Option<String> {
    let stat = std::fs::read_to_string(PathBuf::from(format!("/proc/{pid}/stat"))).ok()?;
    // The command name (field 2) may contain spaces and parentheses; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_start_time_is_read_and_a_scratch_dir_is_ours() {
        assert!(start_time(std::process::id() as i32).is_some());
        let dir = scratch_dir("test", "own-run").unwrap();
        // Only its owner may enter: a setuid file an agent leaves inside is out of other
        // users' reach.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let owner = read_owner(dir.path()).unwrap();
        assert!(owner.is_alive());
        assert_eq!(owner.run, "own-run");
        // A live owner's directory survives a sweep.
        sweep(Some("own-run"));
        assert!(dir.path().is_dir());
    }
}
