//! What a command left behind: its exit code and (capped) output.

/// Result of one command.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExecOutput {
    /// Exit code; -1 when killed by a signal or timed out.
    pub exit_code: i32,
    /// stdout and stderr merged in order, capped.
    pub output: String,
    /// The command hit its timeout and its process group was killed.
    pub timed_out: bool,
    /// Output exceeded the cap and was cut.
    pub truncated: bool,
}

/// How an exec'd script is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    /// `bash -l script` (agents' commands: a fresh login shell, as mini-swe-agent does).
    Login,
    /// `bash script` (graders: the image's environment as the entrypoint would see it).
    Plain,
}

/// Which processes the wrapper kills when a command ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sweep {
    /// Every process but init and the wrapper: a docker container runs one command at a time
    /// and nothing else of its own.
    All,
    /// Only processes carrying the command's marker variable (`CBENCH_CMD`): the sandbox runs
    /// processes of its provider's that must live (Modal's).
    Marked,
}

/// Keeps the container alive without depending on the image's entrypoint. It ignores every
/// signal a process inside can send it (an init without a handler ignores SIGKILL from its
/// own namespace), so an agent cannot stop its own container (or Modal sandbox) and void its
/// pair; cbench removes containers and terminates sandboxes from outside. Where the image has
/// bash, init runs from an execute-only copy of it (not dumpable: a command cannot trace it
/// and make it run its code, which no sweep would end) and waits on a pipe only it holds,
/// with no child (a keep-alive child could be traced, or replaced through `PATH`); it still
/// reaps orphans. Elsewhere it loops over `sleep`.
pub const KEEP_ALIVE: &str = r#"trap '' TERM INT HUP QUIT USR1 USR2 ALRM PIPE
b=/tmp/cbench-init
if command -v bash >/dev/null 2>&1 && rm -f "$b" "$b.fifo" && cp "$(command -v bash)" "$b" && chmod 0111 "$b" && mkfifo -m 600 "$b.fifo"; then
  exec "$b" -c 'trap "" TERM INT HUP QUIT USR1 USR2 ALRM PIPE; exec 9<>"$0.fifo"; rm -f "$0.fifo"; while :; do read -r -u 9 _; done' "$b"
fi
while :; do sleep 2147483647 & wait $!; done"#;

/// Where exec scripts and their pid files live inside a container or remote sandbox.
pub const SCRIPT_DIR: &str = "/tmp/cbench";

/// Scripts up to this size travel in the exec's argv; larger ones are written to the
/// sandbox first (the kernel caps one argument at 128 KiB, Modal's SDK a whole argv at 64 KiB).
pub const INLINE_SCRIPT_MAX: usize = 32 << 10;

/// Runs `$1` (a script) in its own session so the host can kill its whole process group on
/// timeout (the group id is written to `$1.pid`, and in `marked` mode also printed first on the
/// wrapper's own stderr as `cbench-pgid:N`, before the command can write anything anywhere), and
/// kills that group when the script ends.
/// A process that left the group (`setsid`, a double fork) is caught by the sweep that
/// follows (`$5`: `all` kills every process but init and the wrapper; `marked` only those
/// whose environment still carries `CBENCH_CMD=$1`), so nothing a command started outlives
/// it. stderr is merged into stdout. A login shell's profile resets PATH (Debian, Alpine), so
/// the image's PATH is put back first. A process that exits while the sweep reads it is
/// skipped silently (the group's stderr is silenced, not just `read`'s). The marked sweep reads
/// every environment with one `grep` a pass, kills each marked process with its group, and
/// looks again (a few passes at most) while some process's environment reads empty: that is a
/// process mid-`exec`, through which an escaped `setsid sleep` once slipped. A process that
/// drops the marker and leaves the group, re-`setsid`s on every fork faster than a pass, or
/// hides its `/proc` entry (a mount, with CAP_SYS_ADMIN) outlives its command: closing those
/// takes a PID namespace or cgroup per command.
pub const EXEC_WRAPPER: &str = r#"s="$1"
sweep="$5"
if [ "$3" = inline ]; then
  mkdir -p "${s%/*}" && printf '%s' "$4" > "$s" || exit 126
fi
if [ "$2" = login ]; then
  set -- bash -l -c 'export PATH="${CBENCH_IMAGE_PATH:+$CBENCH_IMAGE_PATH:}$PATH"; . "$0"' "$s"
else
  set -- bash "$s"
fi
# A background job of a shell without job control ignores SIGINT and SIGQUIT for good: the
# command gets them back at their defaults, as a `docker exec`'s has them (where `env` can).
env --default-signal=INT,QUIT true 2>/dev/null && set -- env --default-signal=INT,QUIT "$@"
if [ "$sweep" = marked ]; then
  CBENCH_CMD="$s" setsid "$@" </dev/null 2>&1 &
else
  setsid "$@" </dev/null 2>&1 &
fi
pid=$!
[ "$sweep" = marked ] && echo "cbench-pgid:$pid" >&2
echo "$pid" > "$s.pid"
wait "$pid"
code=$?
kill -9 "-$pid" 2>/dev/null
n=0
# The whole of a /proc/<pid>/stat in $st (a process may put a newline and a fake state in its name).
stat_of() {
  st=
  { while IFS= read -r l || [ -n "$l" ]; do st="$st$l "; done < "$1"; } 2>/dev/null
}
if [ "$sweep" = marked ]; then
  stat_of "/proc/$$/stat"
  set -- ${st##*) }
  own_group="${3:-0}"
  unsure=0
  while [ "$n" -lt 100 ]; do
    left=
    # One read of every environment a pass, no fork per process. A marked process is killed
    # with its group, which catches what it forks meanwhile (its session is the command's, so
    # no one else's process can be in that group).
    for f in $(grep -lzxF "CBENCH_CMD=$s" /proc/[0-9]*/environ 2>/dev/null); do
      p="${f#/proc/}"
      p="${p%/environ}"
      [ "$p" = 1 ] || [ "$p" = "$$" ] && continue
      stat_of "/proc/$p/stat"
      [ -n "$st" ] || continue
      set -- ${st##*) }
      case "$1" in Z*) continue ;; esac
      [ "${3:-0}" -gt 1 ] && [ "$3" != "$own_group" ] && kill -9 "-$3" 2>/dev/null
      kill -9 "$p" 2>/dev/null && left=1
    done
    # A process mid-exec reads as an empty environment (the kernel fills the new one in
    # last): while one does, look again, a few passes at most.
    if [ -z "$left" ] && [ "$unsure" -lt 5 ] \
      && grep -zc '' /proc/[0-9]*/environ 2>/dev/null | grep -q ':0$'; then
      unsure=$((unsure + 1))
      left=1
    fi
    [ -z "$left" ] && break
    n=$((n + 1))
  done
else
  while [ "$n" -lt 100 ]; do
    left=
    for d in /proc/[0-9]*; do
      p="${d#/proc/}"
      [ "$p" = 1 ] || [ "$p" = "$$" ] || [ ! -r "$d/stat" ] && continue
      stat_of "$d/stat"
      [ -n "$st" ] || continue
      case "${st##*) }" in Z*) continue ;; esac
      kill -9 "$p" 2>/dev/null && left=1
    done
    [ -z "$left" ] && break
    n=$((n + 1))
  done
fi
rm -f "$s" "$s.pid"
exit "$code""#;

/// Kills the process group whose id a wrapper wrote to `$1` (a timed-out command's).
pub const KILL_GROUP: &str = r#"pid=$(cat "$1" 2>/dev/null) && kill -9 "-$pid" 2>/dev/null; true"#;

/// The argv that runs `script` through [`EXEC_WRAPPER`]: inline in the argv (`Some(script)`)
/// or already written at `path`.
pub fn wrapper_argv(path: &str, shell: Shell, inline: Option<&str>, sweep: Sweep) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        EXEC_WRAPPER.into(),
        "cbench-exec".into(),
        path.into(),
        match shell {
            Shell::Login => "login",
            Shell::Plain => "plain",
        }
        .into(),
        if inline.is_some() {
            "inline"
        } else {
            "uploaded"
        }
        .into(),
        inline.unwrap_or("").into(),
        match sweep {
            Sweep::All => "all",
            Sweep::Marked => "marked",
        }
        .into(),
    ]
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Runs `command` through the wrapper in marked mode `rounds` times inside a fresh PID
    /// namespace (few processes, so each sweep is quick); `command` writes the pid of the
    /// process it tries to leave behind to `$PIDS`. Returns how often that process outlived
    /// its command.
    fn survivors(rounds: usize, command: &str) -> usize {
        let dir = tempfile::tempdir().unwrap();
        let wrapper = dir.path().join("wrapper.sh");
        std::fs::write(&wrapper, EXEC_WRAPPER).unwrap();
        let pid_file = dir.path().join("escaped.pid");
        let script = format!("export PIDS={}; {command}", pid_file.display());
        let driver = format!(
            r#"survived=0
i=0
while [ "$i" -lt {rounds} ]; do
  i=$((i + 1))
  rm -f {pid_file}
  sh -c "$(cat {wrapper})" cbench-exec {dir}/s$i plain inline {script} marked >/dev/null 2>&1
  p=$(cat {pid_file} 2>/dev/null)
  st=$(cat /proc/$p/stat 2>/dev/null)
  case "${{st##*) }}" in ""|Z*) ;; *) survived=$((survived + 1)); kill -9 "$p" ;; esac
done
echo "$survived""#,
            wrapper = wrapper.display(),
            dir = dir.path().display(),
            pid_file = pid_file.display(),
            script = shell_quote(&script),
        );
        let out = Command::new("unshare")
            .args(["--fork", "--pid", "--mount-proc", "sh", "-c", &driver])
            .output()
            .expect("running unshare (util-linux)");
        assert!(
            out.status.success(),
            "unshare needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }

    /// A command gets SIGINT and SIGQUIT at their defaults (the wrapper starts it as a
    /// background job, which a shell without job control makes ignore both for good).
    #[test]
    fn a_command_gets_sigint_and_sigquit_at_their_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("sh")
            .args(["-c", EXEC_WRAPPER, "cbench-exec"])
            .arg(dir.path().join("s"))
            .args([
                "plain",
                "inline",
                "m=$(grep SigIgn /proc/self/status | cut -f2); echo $((0x$m & 6))",
                "marked",
            ])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "0\n",
            "SIGINT or SIGQUIT ignored"
        );
    }

    /// The marked sweep once let ~2% of `setsid` escapes live: read mid-`exec`, a process's
    /// environment is empty, so its marker was not seen. 300 rounds made that certain to show.
    #[test]
    fn the_marked_sweep_catches_a_setsid_escape_even_mid_exec() {
        assert_eq!(survivors(300, "setsid sleep 300 & echo $! > $PIDS"), 0);
    }

    /// A process cloned with CLONE_PARENT is the wrapper's own child: a rule that skipped the
    /// wrapper's children (its `grep`s) let it live with its marker (found by a hostile review).
    #[test]
    fn a_clone_parent_child_that_left_the_group_is_swept() {
        let clone_parent = r#"exec perl -e 'use POSIX; if (syscall(56, 0x8000 | 17, 0, 0, 0, 0) == 0) { POSIX::setsid(); open(my $f, ">", $ENV{PIDS}); print $f "$$
"; close $f; exec "sleep", "300" } select(undef, undef, undef, 0.2)'"#;
        assert_eq!(survivors(5, clone_parent), 0);
    }

    /// Dropping the marker is not enough: a process that stays in a marked process's group
    /// goes with it.
    #[test]
    fn an_unmarked_process_in_a_marked_group_is_swept_with_it() {
        let unmarked =
            "setsid sh -c 'env -i sleep 300 & echo $! > $PIDS; exec sleep 300' & sleep 0.2";
        assert_eq!(survivors(5, unmarked), 0);
    }

    #[test]
    fn quoting_is_literal_for_sh() {
        assert_eq!(shell_quote("/tmp/a-b_c.d"), "/tmp/a-b_c.d");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("it's $x"), r"'it'\''s $x'");
    }
}
