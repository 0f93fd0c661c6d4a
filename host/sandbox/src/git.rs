//! The one way the host runs git: on repositories it created itself, with every source of
//! configuration that content could steer switched off. No system or global config, `HOME`
//! pointing nowhere, no hooks, no fsmonitor, no attributes file, no pager, no external diff
//! or textconv. A `.gitconfig` or `.gitattributes` that arrives in a tree or a patch is then
//! just a file: attributes can only pick git's built-in behaviours (no filter, diff or merge
//! driver is configured anywhere for them to name).

use std::path::Path;
use std::process::Stdio;

use tokio::process::Command;

use super::io;
use super::SandboxError;

/// Fixed identity and date make the base commit id reproducible.
pub const BASE_COMMIT_ENV: [(&str, &str); 6] = [
    ("GIT_AUTHOR_NAME", "cbench"),
    ("GIT_AUTHOR_EMAIL", "cbench@localhost"),
    ("GIT_COMMITTER_NAME", "cbench"),
    ("GIT_COMMITTER_EMAIL", "cbench@localhost"),
    ("GIT_AUTHOR_DATE", "2025-01-01T00:00:00Z"),
    ("GIT_COMMITTER_DATE", "2025-01-01T00:00:00Z"),
];

/// Configuration given on the command line outranks every file git could read.
/// (An external diff cannot be unset here: callers pass `--no-ext-diff --no-textconv`.)
const PINNED_CONFIG: [&str; 15] = [
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "core.attributesFile=/dev/null",
    "core.excludesFile=/dev/null",
    "core.pager=cat",
    "core.sshCommand=false",
    "core.askPass=false",
    "core.editor=false",
    "core.untrackedCache=false",
    "core.symlinks=true",
    "commit.gpgSign=false",
    "tag.gpgSign=false",
    "gc.auto=0",
    "maintenance.auto=false",
    "advice.detachedHead=false",
];

/// A git command with the pinned configuration and a clean environment.
pub fn command(repo: &Path, args: &[&str], extra_env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new("git");
    for pinned in PINNED_CONFIG {
        cmd.arg("-c").arg(pinned);
    }
    cmd.args(args)
        .current_dir(repo)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        // Nothing under a home directory is read: not the user's, not the repository's.
        .env("HOME", "/nonexistent/cbench-home")
        .env("XDG_CONFIG_HOME", "/nonexistent/cbench-home")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_ATTR_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_PAGER", "cat")
        .env("GIT_NO_REPLACE_OBJECTS", "1")
        .env("LANG", "C")
        .envs(BASE_COMMIT_ENV)
        .envs(extra_env.iter().copied())
        .stdin(Stdio::null());
    cmd
}

/// Runs git (see [`command`]); returns stdout or an error carrying stderr.
pub async fn git(
    repo: &Path,
    args: &[&str],
    extra_env: &[(&str, &str)],
) -> Result<String, SandboxError> {
    let out = command(repo, args, extra_env)
        .output()
        .await
        .map_err(io(format!("running git {}", args.join(" "))))?;
    if !out.status.success() {
        return Err(SandboxError::Command(format!(
            "git {} failed in {}: {}",
            args.join(" "),
            repo.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
