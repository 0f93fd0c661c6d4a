//! The local backend's persistent confined shell (one bubblewrap per sandbox, the exec channel's
//! server inside it): the same semantics and the same attacks as one bubblewrap per command —
//! binary and capped output, a timeout that ends `setsid` grandchildren, nothing left running
//! between commands, each command a fresh login shell, a server commands cannot reach, and
//! output files the host never reads through a link.

use std::time::Duration;

use cbench::sandbox::confine::{Confinement, IsolationMode, LocalOptions};
use cbench::sandbox::local::{BaseRepo, LocalSandbox};
use cbench::sandbox::Sandbox;

fn confinement() -> Confinement {
    Confinement::resolve(LocalOptions {
        mode: IsolationMode::Bwrap,
        ..Default::default()
    })
    .unwrap_or_else(|e| {
        panic!("bubblewrap is required for this test (apt-get install bubblewrap): {e}")
    })
}

/// A bwrap sandbox of a one-file repository, its shell started.
async fn sandbox(dir: &std::path::Path) -> LocalSandbox {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), "one\n").unwrap();
    let base = BaseRepo::from_source_tree(&src, &dir.join("base"))
        .await
        .unwrap();
    let sandbox = LocalSandbox::create(&base, &dir.join("boxes"), &confinement())
        .await
        .unwrap();
    sandbox.start_shell().await;
    assert!(
        sandbox.uses_shell().await,
        "the persistent shell did not start"
    );
    sandbox
}

/// Every process the sandbox's PID namespace holds, one command line per line.
const PROCESSES: &str =
    "for d in /proc/[0-9]*; do tr '\\0' ' ' < $d/cmdline 2>/dev/null; echo; done";

async fn run(sandbox: &LocalSandbox, command: &str) -> cbench::sandbox::ExecOutput {
    sandbox
        .exec(command, Duration::from_secs(20))
        .await
        .expect("exec")
}

#[tokio::test]
async fn binary_and_capped_output_exit_codes_and_fake_frames_come_through() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path()).await;
    let out = run(
        &sb,
        "printf 'a\\000b\\377c\\nRES 9 0 @channel.out\\n'; echo err >&2; exit 3",
    )
    .await;
    assert_eq!(out.exit_code, 3);
    assert_eq!(out.output, "a\0b\u{FFFD}c\nRES 9 0 @channel.out\nerr\n");
    let out = run(&sb, "head -c 3000000 /dev/urandom").await;
    assert!(
        out.truncated && out.exit_code == 0,
        "{:?}",
        (out.truncated, out.exit_code)
    );
    assert!(out.output.len() >= 1 << 20, "{}", out.output.len());
    // Writing to the server's answer descriptor (fd 3) reaches nothing: it is not inherited.
    let out = run(&sb, "echo 'RES 1 0 @channel.out' >&3; echo after").await;
    assert!(out.output.contains("after"), "{out:?}");
    assert_eq!(run(&sb, "echo in-step").await.output, "in-step\n");
    assert!(sb.uses_shell().await);
}

#[tokio::test]
async fn a_timeout_ends_setsid_grandchildren_and_keeps_the_output_so_far() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path()).await;
    let out = sb
        .exec(
            "setsid sh -c 'sleep 2; echo x >> ~/late' & (setsid sleep 312 &); echo started; sleep 313",
            Duration::from_secs(1),
        )
        .await
        .expect("exec");
    assert!(out.timed_out && out.exit_code == -1, "{out:?}");
    assert_eq!(out.output, "started\n");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ps = run(&sb, PROCESSES).await;
    for n in ["sleep 2", "sleep 312", "sleep 313"] {
        assert!(!ps.output.contains(n), "`{n}` still runs:\n{}", ps.output);
    }
    assert_eq!(
        run(&sb, "cat ~/late 2>/dev/null; echo next").await.output,
        "next\n"
    );
    // A new shell serves the commands after the timeout.
    assert!(sb.uses_shell().await);
}

#[tokio::test]
async fn a_hundred_commands_in_a_row_leave_no_process_behind() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path()).await;
    for i in 0..100 {
        let out = run(
            &sb,
            &format!("echo {i}; sleep 30 & (setsid sleep 31 &); true"),
        )
        .await;
        assert_eq!(out.output, format!("{i}\n"));
    }
    let ps = run(&sb, PROCESSES).await;
    assert!(
        !ps.output.contains("sleep 30") && !ps.output.contains("sleep 31"),
        "processes left behind:\n{}",
        ps.output
    );
    let count = run(
        &sb,
        "n=0; for d in /proc/[0-9]*; do [ -r $d/stat ] && n=$((n+1)); done; echo $n",
    )
    .await;
    let count: usize = count.output.trim().parse().unwrap();
    // bubblewrap's init, the server, the command's shell (and its subshells).
    assert!(count <= 5, "{count} processes:\n{}", ps.output);
    assert!(sb.uses_shell().await);
}

#[tokio::test]
async fn each_command_is_a_fresh_login_shell_that_sees_what_the_last_one_changed() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path()).await;
    let repo = sb.repo();
    let out = run(
        &sb,
        "echo 'export CBENCH_FROM_PROFILE=42' >> ~/.profile; export LEAK=1; cd /; set -e; echo kept > /tmp/t",
    )
    .await;
    assert_eq!(out.exit_code, 0, "{out:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = run(
        &sb,
        "echo \"$CBENCH_FROM_PROFILE:${LEAK:-unset}:$(pwd):$-:$#\"; shopt -q login_shell && echo login",
    )
    .await;
    assert_eq!(
        out.output,
        format!("42:unset:{}:hBc:0\nlogin\n", repo.display())
    );
}

#[tokio::test]
async fn a_command_cannot_make_anything_run_between_commands() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path()).await;
    // The attacker: count its own runs, wake the shell waiting for the next command through
    // the server's pipe (reached by /proc), replace the scratch files with links and fifos, and
    // try to keep a process alive.
    let attack = r#"echo run >> ~/runs
for fd in /proc/$PPID/fd/*; do printf 'go\ngo\n' > "$fd" 2>/dev/null; done
for f in channel.out channel.out2 channel.sh channel.pid; do
  ln -sf /dev/zero /tmp/cbench/$f.x; mv -f /tmp/cbench/$f.x /tmp/cbench/$f
done
(setsid sh -c 'sleep 1; echo late >> ~/runs' &)
echo attacked"#;
    let out = run(&sb, attack).await;
    assert_eq!(out.exit_code, 0, "{out:?}");
    // Its own output went through a link, which the host does not follow.
    assert_eq!(out.output, "");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let out = run(&sb, "cat ~/runs; echo second").await;
    assert_eq!(
        out.output, "run\nsecond\n",
        "something ran between the commands"
    );
    assert_eq!(run(&sb, "echo third").await.output, "third\n");
    let fifo = "rm -f /tmp/cbench/channel.out /tmp/cbench/channel.out2; mkfifo /tmp/cbench/channel.out /tmp/cbench/channel.out2; echo fifo";
    let out = run(&sb, fifo).await;
    assert_eq!(out.output, "", "a fifo was read as output");
    assert_eq!(run(&sb, "echo fourth").await.output, "fourth\n");
    assert!(sb.uses_shell().await);
}

#[tokio::test]
async fn the_host_never_reads_output_through_a_link_to_its_own_files() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("host-secret.txt");
    std::fs::write(&secret, "HOST-SECRET\n").unwrap();
    let sb = sandbox(dir.path()).await;
    // The path means nothing inside the sandbox, but it would on the host if followed.
    let attack = format!(
        "for f in channel.out channel.out2; do ln -sf {s} /tmp/cbench/$f.x; mv -f /tmp/cbench/$f.x /tmp/cbench/$f; done; ln -sf {s} ~/link; echo done",
        s = secret.display()
    );
    let out = run(&sb, &attack).await;
    assert!(!out.output.contains("HOST-SECRET"), "{out:?}");
    // Nor past a deadline, when the host salvages the output itself.
    let timed = format!(
        "for f in channel.out channel.out2; do ln -sf {s} /tmp/cbench/$f.x; mv -f /tmp/cbench/$f.x /tmp/cbench/$f; done; sleep 30",
        s = secret.display()
    );
    let out = sb.exec(&timed, Duration::from_secs(1)).await.expect("exec");
    assert!(out.timed_out, "{out:?}");
    assert!(!out.output.contains("HOST-SECRET"), "{out:?}");
    assert_eq!(run(&sb, "echo after").await.output, "after\n");
}

#[tokio::test]
async fn a_command_cannot_reach_the_servers_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path()).await;
    // The server runs from an execute-only copy of bash, so it is not dumpable: its protocol
    // descriptors (stdin: requests; fd 3: answers) cannot be opened through /proc.
    let out = run(
        &sb,
        "for fd in 0 3 5; do if echo 'REQ 99 login - 1' > /proc/$PPID/fd/$fd; then echo \"opened $fd\"; fi; done 2>/dev/null; \
         cat /proc/$PPID/cmdline | tr '\\0' ' ' | grep -o 'cbench-channel sealed'",
    )
    .await;
    assert_eq!(out.output, "cbench-channel sealed\n", "{out:?}");
    // No process of the namespace holds a descriptor of the channel a command can open: the
    // server is its init (bubblewrap's own init would hold the pipes, and be dumpable), and it
    // cannot be stopped or killed from inside.
    let out = run(
        &sb,
        "for fd in /proc/1/fd/*; do l=$(readlink $fd 2>/dev/null) && echo \"init holds $fd: $l\"; done; \
         for fd in 0 1 2; do echo x 2>/dev/null > /proc/1/fd/$fd && echo \"wrote $fd\"; done; \
         kill -STOP 1; kill -9 1; echo signalled",
    )
    .await;
    assert!(
        !out.output.contains("init holds") && !out.output.contains("wrote"),
        "{out:?}"
    );
    assert!(out.output.ends_with("signalled\n"), "{out:?}");
    assert_eq!(run(&sb, "echo in-step").await.output, "in-step\n");
}

/// A process whose main thread exited while its other threads run shows as a zombie: it is
/// swept all the same.
#[tokio::test]
async fn a_zombie_leader_with_live_threads_is_swept() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path()).await;
    let ghost = r#"setsid python3 -c "
import ctypes, os, threading, time
def tick():
    while True:
        with open(os.path.expanduser('~/ticks'), 'a') as f:
            f.write('t\\n')
        time.sleep(0.05)
threading.Thread(target=tick).start()
time.sleep(0.2)
ctypes.CDLL(None).syscall({'x86_64': 60, 'aarch64': 93}[os.uname().machine], 0)
" </dev/null >/dev/null 2>&1 &
sleep 0.6; echo started"#;
    assert_eq!(run(&sb, ghost).await.output, "started\n");
    let out = run(
        &sb,
        "a=$(wc -l < ~/ticks); sleep 0.5; b=$(wc -l < ~/ticks); echo $((b - a))",
    )
    .await;
    assert_eq!(out.output, "0\n", "the ghost thread still writes");
}

/// A process may name itself with a newline and a fake state (`x) Z`), so that the first line
/// of its `/proc/<pid>/stat` reads like a zombie's: it is swept all the same.
#[tokio::test]
async fn a_process_named_like_a_zombie_is_swept() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path()).await;
    assert_eq!(run(&sb, DISGUISED_TICKER).await.output, "started\n");
    let out = run(&sb, TICKS_SINCE).await;
    assert_eq!(out.output, "0\n", "the disguised process still writes");
}

/// What an agent's profile starts after its last command ends with the agent: it cannot
/// change the tree the patch is taken from, or anything after.
#[tokio::test]
async fn nothing_the_profile_starts_outlives_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path()).await;
    let repo = sb.repo();
    let profile = "printf '%s\\n' '( sleep 0.5; echo late > \"$HOME/../repo/LATE.txt\" ) </dev/null >/dev/null 2>&1 &' > ~/.bash_profile; echo ok";
    assert_eq!(run(&sb, profile).await.output, "ok\n");
    // The next login shell, started ahead, has read the profile: its job is waiting.
    tokio::time::sleep(Duration::from_millis(100)).await;
    sb.stop_commands().await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(!repo.join("LATE.txt").exists(), "a job outlived the agent");
}

/// Descriptors cbench inherited from whatever started it never reach a command.
#[test]
fn descriptors_cbench_inherited_do_not_reach_commands() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("inherited-secret.txt");
    std::fs::write(&secret, "INHERITED-SECRET\n").unwrap();
    let script = crate::support::write_temp(
        dir.path(),
        "script.json",
        r#"{"*": [{"bash": "timeout 2 cat /proc/$$/fd/9 /proc/$$/fd/8 2>/dev/null; echo looked; ls /proc/$$/fd"},
                  {"bash": "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"}]}"#,
    );
    let logs = dir.path().join("logs");
    let command = format!(
        "exec 9<{secret} 8<{secret}; exec {bin} run -q -n inherit --agent {agent} -m scripted:{script} -f 1,2 --log-dir {logs} --dataset-dir {data}",
        secret = secret.display(),
        bin = crate::support::cbench_bin().display(),
        agent = crate::support::plugins().mini_swe.display(),
        logs = logs.display(),
        data = crate::support::dataset().display(),
    );
    let out = std::process::Command::new("bash")
        .args(["-c", &command])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", crate::support::text(&out));
    let trajectory = std::fs::read_to_string(
        logs.join("inherit/cbench_textkit_task/task1/features_1_2/agent1/trajectory.json"),
    )
    .unwrap();
    assert!(trajectory.contains("looked"), "the command did not run");
    assert!(
        !trajectory.contains("INHERITED-SECRET"),
        "an inherited descriptor was readable"
    );
}

/// The attack through a whole run: agent1's profile starts a job after its last command while
/// agent2 is still working; the job must die when agent1 ends, not when the pair does.
#[test]
fn a_job_from_the_profile_dies_when_its_agent_ends_not_when_the_pair_does() {
    let dir = tempfile::tempdir().unwrap();
    let script = crate::support::write_temp(
        dir.path(),
        "script.json",
        r#"{"agent1": [{"bash": "printf '%s\\n' '( sleep 1; echo late > \"$HOME/../repo/LATE.txt\" ) </dev/null >/dev/null 2>&1 &' > ~/.bash_profile; echo planted"},
                       {"bash": "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"}],
            "agent2": [{"bash": "sleep 3; echo slow"},
                       {"bash": "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"}]}"#,
    );
    let agent = crate::support::plugins().mini_swe.display().to_string();
    let model = format!("scripted:{script}");
    let run = crate::support::Run::start("ghost", &["--agent", &agent, "-m", &model, "-f", "1,2"]);
    run.assert_ok();
    let agent1 = run.pair(1, 2).join("agent1");
    let trajectory = std::fs::read_to_string(agent1.join("trajectory.json")).unwrap();
    assert!(
        trajectory.contains("planted"),
        "the profile was not written"
    );
    let patch = std::fs::read_to_string(agent1.join("patch.diff")).unwrap();
    assert!(
        !patch.contains("LATE.txt"),
        "a job outlived its agent:\n{patch}"
    );
}

/// Starts a `setsid` loop that renames itself `x) Z` + newline and appends to `~/ticks`.
/// Says `started` only once the disguise took.
pub(crate) const DISGUISED_TICKER: &str = r#"setsid bash -c 'printf "x) Z\n" > /proc/$$/comm; while :; do echo t >> ~/ticks; sleep 0.05; done' </dev/null >/dev/null 2>&1 &
sleep 0.4; grep -qs "x) Z" /proc/[0-9]*/comm && echo started"#;

/// Which of SIGINT and SIGQUIT a command ignores, and whether a SIGINT ends a process it
/// starts (a self-kill: no race with the child setting its own dispositions).
pub(crate) const SIGNAL_PROBE: &str = r#"m=$(grep SigIgn /proc/self/status | cut -f2); echo "INT and QUIT ignored: $((0x$m & 6))"; sh -c 'kill -INT $$; echo survived'; echo "interrupted: $?""#;

/// `SIGNAL_PROBE`'s answer where both signals are at their defaults.
pub(crate) const SIGNALS_AT_DEFAULTS: &str = "INT and QUIT ignored: 0\ninterrupted: 130\n";

/// How many ticks `DISGUISED_TICKER`'s loop wrote during half a second.
pub(crate) const TICKS_SINCE: &str =
    "a=$(wc -l < ~/ticks); sleep 0.5; b=$(wc -l < ~/ticks); echo $((b - a))";

/// A command gets SIGINT and SIGQUIT as a fresh process does (a background job of a shell
/// without job control ignores both for good, and so would everything it starts), and one
/// that stops itself is not taken for finished: it runs to its deadline.
#[tokio::test]
async fn a_command_gets_default_signals_and_stopping_itself_ends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path()).await;
    let out = run(&sb, SIGNAL_PROBE).await;
    assert_eq!(out.output, SIGNALS_AT_DEFAULTS, "{out:?}");
    let out = sb
        .exec("kill -STOP $$; echo resumed", Duration::from_secs(2))
        .await
        .expect("exec");
    assert!(out.timed_out && !out.output.contains("resumed"), "{out:?}");
    assert_eq!(run(&sb, "echo next").await.output, "next\n");
    assert!(sb.uses_shell().await);
}

/// A command past its deadline gets its own output, never the previous command's: the server
/// names each command's output file, so file times (coarse, and the previous command's to set)
/// decide nothing.
#[tokio::test]
async fn a_timed_out_command_never_gets_the_previous_commands_output() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path()).await;
    let out = run(
        &sb,
        "echo previous-output; touch -d '+1 hour' \"$(readlink /proc/$$/fd/1)\"",
    )
    .await;
    assert_eq!(out.output, "previous-output\n");
    let out = sb
        .exec("echo own-output; kill -STOP $$", Duration::from_secs(1))
        .await
        .expect("exec");
    assert!(out.timed_out, "{out:?}");
    assert_eq!(out.output, "own-output\n");
}
