//! The docker backend's exec channel (one long-lived exec per container instead of one exec per
//! command): binary and huge output, a timeout that kills a `setsid` grandchild, the channel
//! killed mid-command (the sandbox falls back to plain execs), and 100 commands in a row
//! leaving no process behind.

use std::time::Duration;

use cbench::docker::container::ContainerSpec;
use cbench::docker::{ResourceLimits, RunLabels};
use cbench::sandbox::docker::{DockerSandbox, ExecPath, REPO_DIR};
use cbench::sandbox::{Sandbox, SandboxError};

use crate::support::{docker, BUNDLED_IMAGE};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

async fn sandbox(run: &RunLabels) -> DockerSandbox {
    let spec = ContainerSpec {
        image: BUNDLED_IMAGE.into(),
        labels: run.object("cbench_textkit_task/task1", "test", "agent1"),
        limits: ResourceLimits {
            cpus: 1.0,
            memory_bytes: 256 << 20,
            pids: 256,
            ..Default::default()
        },
        network: "none".into(),
        env: Vec::new(),
        working_dir: REPO_DIR.into(),
        drop_capabilities: true,
        volumes: Vec::new(),
    };
    let sandbox = DockerSandbox::create(docker(), &spec, None, &[])
        .await
        .expect("starting a sandbox container");
    assert_eq!(
        sandbox.exec_path().await,
        ExecPath::Channel,
        "the channel did not open"
    );
    // The engine is on this machine: the channel's bytes bypass it (so every test here
    // attacks the FIFO transport).
    assert!(
        sandbox.channel_over_fifos().await,
        "the channel did not move to its FIFOs"
    );
    sandbox
}

/// The command line of every process in the container, one per line.
const PROCESSES: &str =
    "for d in /proc/[0-9]*; do tr '\\0' ' ' < $d/cmdline 2>/dev/null; echo; done";

#[test]
fn binary_and_huge_output_come_through_the_channel() {
    docker();
    runtime().block_on(async {
        let sandbox = sandbox(&RunLabels::new("it-channel-output")).await;
        let out = sandbox
            .exec(
                "printf 'a\\000b\\377c\\nRES 9 0 0\\n\\303\\251\\000'; echo err >&2; exit 3",
                Duration::from_secs(10),
            )
            .await
            .expect("exec");
        assert_eq!(out.exit_code, 3);
        // NUL and an invalid UTF-8 byte survive (lossily decoded); a fake frame is just output.
        assert_eq!(out.output, "a\0b\u{FFFD}c\nRES 9 0 0\n\u{e9}\0err\n");
        let out = sandbox
            .exec("head -c 3000000 /dev/urandom", Duration::from_secs(30))
            .await
            .expect("exec");
        assert!(
            out.truncated && out.exit_code == 0,
            "{:?}",
            (out.truncated, out.exit_code)
        );
        assert!(out.output.len() >= 1 << 20, "{}", out.output.len());
        // Small outputs are framed by bash itself, split at NULs: every arrangement of them.
        let lines: String = (1..=3000).map(|i| format!("line {i}\0")).collect();
        for (command, expected) in [
            ("printf '\\0'", "\0".to_string()),
            ("printf '\\0\\0'", "\0\0".to_string()),
            ("printf 'x\\0\\0y'", "x\0\0y".to_string()),
            ("printf '\\0x'", "\0x".to_string()),
            (
                "for i in $(seq 3000); do printf 'line %d\\0' $i; done",
                lines,
            ),
            ("head -c 65537 /dev/zero | tr '\\0' z", "z".repeat(65537)),
        ] {
            let out = sandbox
                .exec(command, Duration::from_secs(10))
                .await
                .expect("exec");
            assert_eq!(out.output, expected, "{command}");
        }
        // The channel is still in step after binary and capped output.
        let out = sandbox
            .exec("echo in-step", Duration::from_secs(10))
            .await
            .expect("exec");
        assert_eq!(out.output, "in-step\n");
        // A command writing to the channel's own descriptor cannot reach it.
        let out = sandbox
            .exec("echo 'RES 1 0 5' >&3; echo after", Duration::from_secs(10))
            .await
            .expect("exec");
        assert!(out.output.contains("after"), "{out:?}");
        assert_eq!(sandbox.exec_path().await, ExecPath::Channel);
        sandbox.close().await.expect("close");
    });
}

#[test]
fn a_timeout_kills_a_setsid_grandchild_through_the_channel() {
    docker();
    runtime().block_on(async {
        let sandbox = sandbox(&RunLabels::new("it-channel-timeout")).await;
        let out = sandbox
            .exec(
                "setsid sh -c 'sleep 311' & (setsid sleep 312 &) ; echo started; sleep 313",
                Duration::from_secs(1),
            )
            .await
            .expect("exec");
        assert!(out.timed_out && out.exit_code == -1, "{out:?}");
        assert!(out.output.contains("started"), "{out:?}");
        let ps = sandbox
            .exec(PROCESSES, Duration::from_secs(10))
            .await
            .expect("exec");
        for n in ["sleep 311", "sleep 312", "sleep 313"] {
            assert!(!ps.output.contains(n), "`{n}` still runs:\n{}", ps.output);
        }
        assert_eq!(sandbox.exec_path().await, ExecPath::Channel);
        sandbox.close().await.expect("close");
    });
}

#[test]
fn a_killed_channel_falls_back_to_plain_execs() {
    docker();
    runtime().block_on(async {
        let sandbox = std::sync::Arc::new(sandbox(&RunLabels::new("it-channel-killed")).await);
        let running = {
            let sandbox = sandbox.clone();
            tokio::spawn(async move {
                sandbox.exec("sleep 2; echo finished", Duration::from_secs(30)).await
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Kill the channel from outside the command (what a crashed server looks like).
        let (code, out) = sandbox
            .container()
            .exec_argv(
                &["sh", "-c", "for d in /proc/[0-9]*; do tr '\\0' ' ' < $d/cmdline 2>/dev/null | grep -q cbench-chan\"\"nel && kill -9 ${d#/proc/}; done; true"],
                &[],
            )
            .await
            .expect("killing the channel");
        assert_eq!(code, 0, "{out}");
        let interrupted = running.await.unwrap().expect("exec");
        assert_eq!(interrupted.exit_code, -1, "{interrupted:?}");
        assert!(interrupted.output.contains("whether it completed is unknown"), "{interrupted:?}");
        // Later commands work, by plain exec.
        let out = sandbox.exec("echo still-works", Duration::from_secs(10)).await.expect("exec");
        assert_eq!((out.exit_code, out.output.as_str()), (0, "still-works\n"));
        assert_eq!(sandbox.exec_path().await, ExecPath::PlainExec);
        sandbox.close().await.expect("close");
    });
}

#[test]
fn a_hundred_commands_in_a_row_leave_no_process_behind() {
    docker();
    runtime().block_on(async {
        let sandbox = sandbox(&RunLabels::new("it-channel-100")).await;
        for i in 0..100 {
            let out = sandbox
                .exec(
                    &format!("echo {i}; sleep 30 & true"),
                    Duration::from_secs(10),
                )
                .await
                .expect("exec");
            assert_eq!(out.output, format!("{i}\n"));
        }
        let ps = sandbox
            .exec(PROCESSES, Duration::from_secs(10))
            .await
            .expect("exec");
        assert!(
            !ps.output.contains("sleep 30 "),
            "processes left behind:\n{}",
            ps.output
        );
        let count = sandbox
            .exec(
                "n=0; for d in /proc/[0-9]*; do [ -r $d/stat ] && n=$((n+1)); done; echo $n",
                Duration::from_secs(10),
            )
            .await
            .expect("exec");
        let count: usize = count.output.trim().parse().unwrap();
        // init, its sleep, the channel, the wrapper, the counting shell (and its subshells).
        assert!(count <= 7, "{count} processes:\n{}", ps.output);
        assert_eq!(sandbox.exec_path().await, ExecPath::Channel);
        sandbox.close().await.expect("close");
    });
}

#[test]
fn each_command_is_a_fresh_login_shell_that_sees_what_the_last_one_changed() {
    docker();
    runtime().block_on(async {
        let sandbox = sandbox(&RunLabels::new("it-channel-fresh")).await;
        // The next command's shell is started ahead, but after this one ended: it reads the
        // profile as changed, and inherits no variable, directory or option of this one.
        let out = sandbox
            .exec(
                "echo 'export CBENCH_FROM_PROFILE=42' >> ~/.profile; export LEAK=1; cd /tmp; set -e",
                Duration::from_secs(10),
            )
            .await
            .expect("exec");
        assert_eq!(out.exit_code, 0, "{out:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let out = sandbox
            .exec(
                "echo \"$CBENCH_FROM_PROFILE:${LEAK:-unset}:$(pwd):$-:$#\"; shopt -q login_shell && echo login",
                Duration::from_secs(10),
            )
            .await
            .expect("exec");
        assert_eq!(out.output, format!("42:unset:{REPO_DIR}:hBc:0\nlogin\n"));
        assert_eq!(sandbox.exec_path().await, ExecPath::Channel);
        sandbox.close().await.expect("close");
    });
}

#[test]
fn a_command_cannot_make_anything_run_between_commands() {
    docker();
    runtime().block_on(async {
        let sandbox = sandbox(&RunLabels::new("it-channel-between")).await;
        // The attacker: count its own runs, wake the shell waiting for the next command through
        // the server's pipe (reached by /proc), replace the scratch files with links, and try
        // to keep a process alive.
        let attack = r#"echo run >> /root/runs
for fd in /proc/$PPID/fd/*; do printf 'go\ngo\n' > "$fd" 2>/dev/null; done
ln -sf /dev/zero /tmp/cbench/channel.out.x; mv -f /tmp/cbench/channel.out.x /tmp/cbench/channel.out
ln -sf /dev/zero /tmp/cbench/channel.sh.x; mv -f /tmp/cbench/channel.sh.x /tmp/cbench/channel.sh
(setsid sh -c 'sleep 1; echo late >> /root/runs' &)
echo attacked"#;
        // (Its own output is lost: it replaced the file the server reads it from.)
        let out = sandbox
            .exec(attack, Duration::from_secs(10))
            .await
            .expect("exec");
        assert_eq!(out.exit_code, 0, "{out:?}");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let out = sandbox
            .exec("cat /root/runs; echo second", Duration::from_secs(10))
            .await
            .expect("exec");
        assert_eq!(
            out.output, "run\nsecond\n",
            "something ran between the commands"
        );
        let out = sandbox
            .exec("echo third", Duration::from_secs(10))
            .await
            .expect("exec");
        assert_eq!(out.output, "third\n");
        sandbox.close().await.expect("close");
    });
}

#[test]
fn a_command_cannot_reach_the_channels_descriptors() {
    docker();
    runtime().block_on(async {
        let sandbox = sandbox(&RunLabels::new("it-channel-fds")).await;
        // The server is not dumpable: its protocol descriptors (stdin: requests; fd 3: answers)
        // cannot be opened through /proc by a command, so none can be injected or forged.
        let out = sandbox
            .exec(
                "for fd in 0 3 5; do if echo 'REQ 99 login 10 1' > /proc/$PPID/fd/$fd; then echo \"opened $fd\"; fi; done 2>/dev/null; \
                 cat /proc/$PPID/cmdline | tr '\\0' ' ' | grep -o 'cbench-channel sealed'",
                Duration::from_secs(10),
            )
            .await
            .expect("exec");
        assert_eq!(out.output, "cbench-channel sealed\n", "{out:?}");
        let out = sandbox
            .exec("echo in-step", Duration::from_secs(10))
            .await
            .expect("exec");
        assert_eq!(out.output, "in-step\n");
        assert_eq!(sandbox.exec_path().await, ExecPath::Channel);
        sandbox.close().await.expect("close");
    });
}

#[test]
fn a_server_that_stops_reading_cannot_hold_the_host_past_the_deadline() {
    docker();
    runtime().block_on(async {
        let sandbox = sandbox(&RunLabels::new("it-channel-stopped")).await;
        // The next login shell, started ahead, stops the server (its parent) from the profile:
        // a request larger than the pipe then cannot be written.
        let out = sandbox
            .exec(
                "echo 'kill -STOP $PPID' >> ~/.profile; echo ok",
                Duration::from_secs(10),
            )
            .await
            .expect("exec");
        assert_eq!(out.output, "ok\n");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let big = format!("# {}\necho never", "x".repeat(300_000));
        let started = std::time::Instant::now();
        let out = sandbox
            .exec(&big, Duration::from_secs(2))
            .await
            .expect("exec");
        // The deadline, then at most the grace given a killed command to answer.
        assert!(
            started.elapsed() < Duration::from_secs(9),
            "the host waited {:?}",
            started.elapsed()
        );
        assert_eq!(out.exit_code, -1, "{out:?}");
        // Later commands work (the profile is the agent's: it is removed first).
        let out = sandbox
            .exec(
                "sed -i '/kill -STOP/d' ~/.profile; echo works",
                Duration::from_secs(10),
            )
            .await
            .expect("exec");
        assert_eq!(out.output, "works\n");
        sandbox.close().await.expect("close");
    });
}

#[test]
fn nothing_the_profile_starts_outlives_the_agent_in_a_container() {
    docker();
    runtime().block_on(async {
        let sandbox = sandbox(&RunLabels::new("it-channel-ghost")).await;
        let out = sandbox
            .exec(
                "echo '( sleep 0.5; echo late > /workspace/repo/LATE.txt ) </dev/null >/dev/null 2>&1 &' >> ~/.profile; echo ok",
                Duration::from_secs(10),
            )
            .await
            .expect("exec");
        assert_eq!(out.output, "ok\n");
        tokio::time::sleep(Duration::from_millis(100)).await;
        sandbox.stop_commands().await;
        tokio::time::sleep(Duration::from_millis(900)).await;
        // The tree is still readable (the patch is taken from it), unchanged.
        let read = sandbox.read_file("LATE.txt").await;
        assert!(read.is_err(), "a job outlived the agent: {read:?}");
        assert!(sandbox.read_file("README.md").await.is_ok() || sandbox.read_file("textkit/__init__.py").await.is_ok());
        sandbox.close().await.expect("close");
    });
}

#[test]
fn a_command_finds_the_channels_fifos_gone_and_their_directory_read_only() {
    docker();
    runtime().block_on(async {
        let sandbox = sandbox(&RunLabels::new("it-channel-fifos")).await;
        let host_dir = sandbox.fifo_dir().expect("the channel's FIFO directory");
        let listed: Vec<_> = std::fs::read_dir(&host_dir)
            .expect("the FIFO directory stays while the container lives")
            .collect();
        assert!(listed.is_empty(), "FIFOs left after the channel opened: {listed:?}");
        let out = sandbox
            .exec(
                "d=/run/cbench-channel; echo \"listed:$(ls -A $d)\"; \
                 touch $d/x 2>/dev/null && echo WROTE; mkfifo $d/in 2>/dev/null && echo MADE; \
                 for f in /proc/[0-9]*/fd/*; do readlink $f; done 2>/dev/null | grep -c cbench-channel; \
                 { exec 9<>$d/in; } 2>/dev/null && echo OPENED; true",
                Duration::from_secs(10),
            )
            .await
            .expect("exec");
        assert_eq!(out.output, "listed:\n0\n", "{out:?}");
        // The channel still answers.
        let out = sandbox.exec("echo hi", Duration::from_secs(10)).await.expect("exec");
        assert_eq!(out.output, "hi\n");
        assert!(sandbox.channel_over_fifos().await);
        sandbox.close().await.expect("close");
        drop(sandbox);
        assert!(!host_dir.exists(), "{} outlived its sandbox", host_dir.display());
    });
}

#[test]
fn fifos_that_do_not_connect_leave_the_channel_on_the_attached_streams() {
    use cbench::docker::channel::{ExecChannel, FifoPair};
    use cbench::docker::container::{Container, Shell};
    docker();
    runtime().block_on(async {
        let run = RunLabels::new("it-channel-fifo-fallback");
        let spec = ContainerSpec {
            image: BUNDLED_IMAGE.into(),
            labels: run.object("cbench_textkit_task/task1", "test", "agent1"),
            limits: ResourceLimits::default(),
            network: "none".into(),
            env: Vec::new(),
            working_dir: REPO_DIR.into(),
            drop_capabilities: true,
            volumes: Vec::new(),
        };
        // The container sees one pair of FIFOs, the host holds another (as when the engine
        // runs in a VM whose FIFOs are not this machine's): the server offers, our GO never
        // reaches it, and it says hello on its attached stdout instead.
        let mounted = FifoPair::create().expect("FIFOs");
        let other = FifoPair::create().expect("FIFOs");
        let container = Container::start_with_binds(docker(), &spec, &[mounted.mount()])
            .await
            .expect("a container");
        let started = std::time::Instant::now();
        let mut channel = ExecChannel::open(docker(), container.id(), REPO_DIR, &[], Some(&other))
            .await
            .expect("the channel opens on the attached streams");
        assert!(!channel.over_fifos());
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{:?}",
            started.elapsed()
        );
        let out = channel
            .run("echo hi", Shell::Login, Duration::from_secs(10), 1 << 20)
            .await
            .expect("a command");
        assert_eq!(out.output, "hi\n");
        // No FIFOs at all: no offer, the attached streams at once.
        let bare = Container::start(docker(), &spec)
            .await
            .expect("a container");
        let mut channel = ExecChannel::open(docker(), bare.id(), REPO_DIR, &[], Some(&other))
            .await
            .expect("the channel opens");
        assert!(!channel.over_fifos());
        container.remove().await.expect("remove");
        bare.remove().await.expect("remove");
    });
}

#[test]
fn a_command_can_trace_no_process_that_outlives_it() {
    // A traced process runs whatever the tracer writes into it: if init or anything the sweep
    // spares could be traced, a command could leave code running between commands (appending
    // to the next answer, writing into the tree after the agent's end).
    docker();
    runtime().block_on(async {
        let sandbox = sandbox(&RunLabels::new("it-channel-ptrace")).await;
        let trace_all = r#"python3 - <<'PY'
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
me = {os.getpid(), os.getppid()}
for p in sorted(int(d) for d in os.listdir('/proc') if d.isdigit()):
    if p in me:
        continue
    if libc.ptrace(16, p, 0, 0) == 0:
        libc.ptrace(17, p, 0, 0)
        print('TRACED', p, open('/proc/%d/cmdline' % p, 'rb').read().replace(b'\0', b' ').decode(errors='replace'))
    else:
        print('denied', p, os.strerror(ctypes.get_errno()))
PY"#;
        let out = sandbox
            .exec(trace_all, Duration::from_secs(30))
            .await
            .expect("exec");
        assert!(!out.output.contains("TRACED"), "{}", out.output);
        assert!(out.output.contains("denied 1 "), "init was not tried: {}", out.output);
        sandbox.close().await.expect("close");
    });
}

#[test]
fn a_process_named_like_a_zombie_is_swept_in_a_container() {
    use crate::local_shell::{DISGUISED_TICKER, TICKS_SINCE};
    docker();
    // Generous deadlines: under the whole suite's load a command here once took over 10 s.
    runtime().block_on(async {
        let sandbox = sandbox(&RunLabels::new("it-channel-disguised")).await;
        let out = sandbox
            .exec(DISGUISED_TICKER, Duration::from_secs(30))
            .await
            .expect("exec");
        assert_eq!(out.output, "started\n");
        let out = sandbox
            .exec(TICKS_SINCE, Duration::from_secs(30))
            .await
            .expect("exec");
        assert_eq!(out.output, "0\n", "the disguised process still writes");
        // The same through one docker exec per command (the channel's fallback).
        let out = sandbox
            .exec_plain(DISGUISED_TICKER, Duration::from_secs(30))
            .await
            .expect("exec");
        assert_eq!(out.output, "started\n");
        let out = sandbox
            .exec_plain(TICKS_SINCE, Duration::from_secs(30))
            .await
            .expect("exec");
        assert_eq!(
            out.output, "0\n",
            "the disguised process outlived a plain exec"
        );
        sandbox.close().await.expect("close");
    });
}

/// A command gets SIGINT and SIGQUIT as a `docker exec`'s does (a background job of a shell
/// without job control ignores both for good, and so would everything it starts), and one
/// that stops itself is not taken for finished: it runs to its deadline.
#[test]
fn a_command_gets_the_signals_of_a_docker_exec_and_stopping_itself_ends_nothing() {
    use crate::local_shell::{SIGNALS_AT_DEFAULTS, SIGNAL_PROBE};
    docker();
    runtime().block_on(async {
        let sandbox = sandbox(&RunLabels::new("it-channel-signals")).await;
        let out = sandbox
            .exec(SIGNAL_PROBE, Duration::from_secs(10))
            .await
            .expect("exec");
        assert_eq!(out.output, SIGNALS_AT_DEFAULTS, "{out:?}");
        let out = sandbox
            .exec("kill -STOP $$; echo resumed", Duration::from_secs(2))
            .await
            .expect("exec");
        assert!(out.timed_out && !out.output.contains("resumed"), "{out:?}");
        assert_eq!(
            sandbox
                .exec("echo next", Duration::from_secs(10))
                .await
                .expect("exec")
                .output,
            "next\n"
        );
        assert_eq!(sandbox.exec_path().await, ExecPath::Channel);
        // A plain docker exec (the channel's fallback, and Modal's and GCP's way) alike.
        let out = sandbox
            .exec_plain(SIGNAL_PROBE, Duration::from_secs(10))
            .await
            .expect("exec");
        assert_eq!(out.output, SIGNALS_AT_DEFAULTS, "{out:?}");
        sandbox.close().await.expect("close");
    });
}

#[test]
fn a_profile_that_takes_the_container_down_by_memory_between_commands_is_the_agents_limit() {
    // The next command's login shell runs the agent's profile while its model thinks: a
    // profile that runs the container out of memory (init first, its score raised) stops it
    // between commands. The next command is refused on the agent's limit, not failed as the
    // sandbox's failure (which would take the pair out of the score).
    docker();
    runtime().block_on(async {
        let sandbox = sandbox(&RunLabels::new("it-channel-profile-oom")).await;
        let out = sandbox
            .exec(
                r#"cat >> ~/.bashrc <<'RC'
( echo 1000 > /proc/1/oom_score_adj
  for i in $(seq 24); do python3 -c 'import time; b = bytearray(24 << 20); b[::4096] = b"x" * len(b[::4096]); time.sleep(60)' & done
  wait ) >/dev/null 2>&1 &
RC
echo planted"#,
                Duration::from_secs(10),
            )
            .await
            .expect("exec");
        assert_eq!(out.output, "planted\n", "{out:?}");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while sandbox.container().stopped_within(Duration::ZERO, std::time::SystemTime::UNIX_EPOCH).await.is_none() {
            assert!(std::time::Instant::now() < deadline, "the profile's attack did not stop the container");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let next = sandbox.exec("echo NOT-REFUSED", Duration::from_secs(10)).await;
        assert!(
            matches!(&next, Err(SandboxError::LimitExceeded(why)) if why.contains("out of memory")),
            "{next:?}"
        );
        sandbox.close().await.expect("close");
    });
}

#[test]
fn a_command_that_takes_the_channels_directory_away_leaves_every_answer_its_own() {
    // `chmod 000 /tmp` (root without CAP_DAC_OVERRIDE) leaves the channel's server unable to
    // write the next script: it once skipped reading the request's lines, took them for the
    // next frame, and from then on gave each command another's answer. Each command is now
    // answered on its own, as not run.
    docker();
    runtime().block_on(async {
        let sandbox = sandbox(&RunLabels::new("it-channel-tmp-gone")).await;
        let out = sandbox
            .exec("chmod 000 /tmp; echo done", Duration::from_secs(10))
            .await
            .expect("exec");
        assert_eq!(out.output, "done\n", "{out:?}");
        for word in ["alpha", "beta", "gamma"] {
            let out = sandbox
                .exec(&format!("echo {word}"), Duration::from_secs(10))
                .await
                .expect("exec");
            assert_eq!(out.exit_code, 126, "{out:?}");
            assert!(out.output.contains("did not run"), "{out:?}");
            assert!(
                !out.output.contains("done") && !out.output.contains("alpha"),
                "{out:?}"
            );
        }
        assert_eq!(sandbox.exec_path().await, ExecPath::Channel);
        sandbox.close().await.expect("close");
    });
}

#[test]
fn a_command_whose_container_stops_under_it_is_told_nothing_more_runs() {
    // The container stopping for a reason not the agent's (killed from outside here) is
    // reported as such, not as a connection that later commands get back: they fail as the
    // sandbox's failure (the agent's own way to stop it, memory, is in host_integrity.rs). Not
    // even after an earlier command ran a process out of memory: the engine's `OOMKilled`
    // flag stays set from then, but that kill did not stop the container.
    docker();
    runtime().block_on(async {
        let sandbox = std::sync::Arc::new(sandbox(&RunLabels::new("it-channel-init-gone")).await);
        let out = sandbox
            .exec(
                r#"python3 -c 'b = bytearray(1 << 30); b[::4096] = b"x" * len(b[::4096])'"#,
                Duration::from_secs(60),
            )
            .await
            .expect("exec");
        assert_eq!(out.exit_code, 137, "the memory hog was not killed: {out:?}");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let running = {
            let sandbox = sandbox.clone();
            tokio::spawn(async move {
                sandbox
                    .exec("sleep 5; echo finished", Duration::from_secs(30))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        sandbox
            .container()
            .kill()
            .await
            .expect("killing the container's init");
        let out = running.await.unwrap().expect("exec");
        assert_eq!(out.exit_code, -1, "{out:?}");
        assert!(out.output.contains("the container has stopped"), "{out:?}");
        assert!(!out.output.contains("work as before"), "{out:?}");
        let later = sandbox.exec("echo hi", Duration::from_secs(10)).await;
        assert!(matches!(&later, Err(SandboxError::Docker(_))), "{later:?}");
        sandbox.close().await.expect("close");
    });
}
