//! The agent is the attacker. Scripted agents run the commands an escaping or peeking
//! agent would, and write a patch whose code attacks the grader; the tests read what
//! they got back (their trajectory and the grader's log) and what they left behind.
//! On the local backend (bwrap) and the docker backend alike.

use std::path::{Path, PathBuf};

use serde_json::{json as j, Value};

use crate::support::{cbench_in, dataset, docker, json, plugins, text, workspace, write_temp};

const SUBMIT: &str = "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT";
/// The API key in cbench's environment and the one in its working directory's `.env`.
/// Commands only ever mention them split in two, so a hit in an output is a real leak.
const ENV_CANARY: &str = "sk-canary-env-5f1c9a";
const DOTENV_CANARY: &str = "sk-canary-dotenv-77e2b4";

/// Paths on the host the attacker aims at.
struct Targets {
    /// A file the attacker tries to create outside its sandbox.
    host_marker: PathBuf,
    /// The same, from the grader.
    grader_marker: PathBuf,
    /// cbench's working directory (holds the `.env`).
    cwd: PathBuf,
    /// A service on the host's loopback (the test's own listener).
    loopback_port: u16,
}

/// agent1: probes, then plants code that attacks the grader at import, then submits.
fn attacker_script(t: &Targets, pids_limit: u32) -> Value {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let other_tests = dataset().join("cbench_textkit_task/task1/feature3/tests.patch");
    let probes = format!(
        r#"grep CapEff /proc/self/status
mount -o remount,rw / 2>/dev/null && echo REMOUNTED || echo remount-refused
umount -l /tmp 2>/dev/null && echo UNMOUNTED || echo umount-refused
mount -t tmpfs none /mnt 2>/dev/null && echo MOUNTED || echo mount-refused
echo "hidden-patches-found=$(find / \( -name tests.patch -o -name feature.patch \) 2>/dev/null | wc -l)"
cat /etc/shadow >/dev/null 2>&1 && echo SHADOW-READ || echo shadow-refused
ls -A '{home}' >/dev/null 2>&1 && echo HOME-LISTED || echo home-refused
echo "environ-hits=$(grep -l 'sk-can''ary' /proc/*/environ 2>/dev/null | wc -l)"
echo "cwd-env-hits=$(ls /proc/*/cwd/.env 2>/dev/null | wc -l)"
cat '{cwd}/.env' 2>/dev/null | head -c 200; echo
env | grep -c 'sk-can''ary' || true
(echo x > '{marker}') 2>/dev/null && echo WROTE-HOST || echo host-write-refused
python3 -c "import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)" 2>/dev/null && echo LOOPBACK-OPEN || echo loopback-closed"#,
        cwd = t.cwd.display(),
        marker = t.host_marker.display(),
        port = t.loopback_port,
    );
    let fork_loop = format!(
        r#"python3 -c '
import os, time
n = 0
try:
    for _ in range({tries}):
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        n += 1
    print("forked-all", n)
except OSError as e:
    print("fork-stopped-at", n)
'"#,
        tries = pids_limit * 4
    );
    let memory = r#"python3 -c 'b = bytearray(300 << 20); print("ALLOCATED", len(b))'; echo "alloc-exit=$?""#;
    let background = "setsid sh -c 'sleep 2; echo late > late.txt' >/dev/null 2>&1 < /dev/null & echo started-background";
    let after =
        "sleep 4; ls late.txt 2>/dev/null && echo BACKGROUND-SURVIVED || echo background-gone";
    let plant = format!(
        r#"cat >> textkit/__init__.py <<'PYEOF'

def _cbench_attack():
    import glob, os
    found = []
    for path in glob.glob("/proc/*/environ"):
        try:
            if b"sk-can" b"ary" in open(path, "rb").read():
                found.append(path)
        except Exception:
            pass
    for path in glob.glob("/proc/*/cwd/.env"):
        found.append(path)
    for path in [{other_tests:?}, {cwd_env:?}, {home:?} + "/.bash_history"]:
        try:
            open(path).read()
            found.append(path)
        except Exception:
            pass
    try:
        open({marker:?}, "w").write("x")
        found.append("wrote-host-file")
    except Exception:
        pass
    import socket
    try:
        socket.create_connection(("127.0.0.1", {port}), timeout=2)
        found.append("host-loopback")
    except Exception:
        pass
    names = sorted(os.environ)
    leaked = [k for k in names if "KEY" in k or "TOKEN" in k or k.startswith("CBENCH")]
    print("GRADER-PROBE found=%d %s leaked-env=%s" % (len(found), found, leaked))

_cbench_attack()
PYEOF
echo planted"#,
        other_tests = other_tests.display().to_string(),
        cwd_env = t.cwd.join(".env").display().to_string(),
        home = home,
        marker = t.grader_marker.display().to_string(),
        port = t.loopback_port,
    );
    j!({
        "agent1": [
            {"bash": probes},
            {"bash": fork_loop},
            {"bash": memory},
            {"bash": background},
            {"bash": after},
            {"bash": plant},
            {"bash": SUBMIT}
        ],
        "agent2": [{"bash": SUBMIT}]
    })
}

/// Runs the attacker on pair 1,2 in a fresh working directory holding a `.env`.
fn attack(
    name: &str,
    backend: &[&str],
) -> (PathBuf, tempfile::TempDir, Targets, std::net::TcpListener) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cwd = tempfile::tempdir_in(workspace().join("target")).unwrap();
    std::fs::write(
        cwd.path().join(".env"),
        format!("ANTHROPIC_API_KEY={DOTENV_CANARY}\n"),
    )
    .unwrap();
    let targets = Targets {
        host_marker: cwd.path().join("agent-wrote-this"),
        grader_marker: cwd.path().join("grader-wrote-this"),
        cwd: cwd.path().to_path_buf(),
        loopback_port: listener.local_addr().unwrap().port(),
    };
    let pids_limit = 64;
    let script = write_temp(
        cwd.path(),
        "script.json",
        &attacker_script(&targets, pids_limit).to_string(),
    );
    let logs = cwd.path().join("logs").display().to_string();
    let data = dataset().display().to_string();
    let agent = plugins().mini_swe.display().to_string();
    let model = format!("scripted:{script}");
    let pids = pids_limit.to_string();
    let mut args = vec![
        "run",
        "-q",
        "-n",
        name,
        "--log-dir",
        &logs,
        "--dataset-dir",
        &data,
        "--agent",
        &agent,
        "-m",
        &model,
        "-f",
        "1,2",
        "--pids-limit",
        &pids,
        "--memory",
        "128m",
    ];
    args.extend_from_slice(backend);
    let out = cbench_in(cwd.path(), &args, &[("OPENAI_API_KEY", ENV_CANARY)]);
    assert!(
        out.status.success(),
        "the attack run failed:\n{}",
        text(&out)
    );
    let pair = cwd
        .path()
        .join("logs")
        .join(name)
        .join("cbench_textkit_task/task1/features_1_2");
    (pair, cwd, targets, listener)
}

fn observations(pair: &Path) -> Vec<String> {
    json(&pair.join("agent1/trajectory.json"))["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["observation"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Everything under `dir` as text (trajectories, logs, patches).
fn all_text(dir: &Path) -> String {
    let mut out = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(t) = std::fs::read_to_string(&p) {
                out.push_str(&t);
            }
        }
    }
    out
}

fn assert_contained(pair: &Path, targets: &Targets, capabilities_dropped: bool) {
    let obs = observations(pair);
    let all = obs.join("\n");
    let probe = &obs[0];
    if capabilities_dropped {
        assert!(probe.contains("CapEff:\t0000000000000000"), "{probe}");
    }
    for expected in [
        "remount-refused",
        "umount-refused",
        "mount-refused",
        "hidden-patches-found=0",
        "environ-hits=0",
        "cwd-env-hits=0",
        "host-write-refused",
        "loopback-closed",
    ] {
        assert!(
            probe.contains(expected),
            "expected `{expected}` in:\n{probe}"
        );
    }
    assert!(!targets.host_marker.exists(), "the agent wrote a host file");
    // The fork loop stopped at the pids limit, the allocation over --memory failed.
    assert!(obs[1].contains("fork-stopped-at"), "{}", obs[1]);
    assert!(
        !obs[2].lines().any(|l| l.starts_with("ALLOCATED")),
        "{}",
        obs[2]
    );
    assert!(
        obs[2].contains("alloc-exit=137") || obs[2].contains("MemoryError"),
        "{}",
        obs[2]
    );
    // A `setsid` background process ended with its command.
    assert!(obs[4].contains("background-gone"), "{}", obs[4]);
    assert!(obs[5].contains("planted"), "{}", obs[5]);
    for canary in [ENV_CANARY, DOTENV_CANARY] {
        assert!(
            !all.contains(canary),
            "an agent command saw {canary}:\n{all}"
        );
    }
    // The grader ran the planted code and found nothing.
    let logs = all_text(&pair.join("eval_logs"));
    assert!(
        logs.contains("GRADER-PROBE found=0 [] leaked-env=[]"),
        "{logs}"
    );
    assert!(
        !targets.grader_marker.exists(),
        "the grader wrote a host file"
    );
    let everything = all_text(pair);
    for canary in [ENV_CANARY, DOTENV_CANARY] {
        assert!(
            !everything.contains(canary),
            "{canary} leaked into the run directory"
        );
    }
    assert!(
        !everything.contains("late.txt\n+late"),
        "the background job wrote into the patch"
    );
}

#[test]
fn a_local_agent_and_its_grader_can_neither_escape_nor_peek() {
    // Graders without the host network (`--grading-network none`): the default keeps it,
    // loopback included, for runners that install packages.
    let (pair, _cwd, targets, _listener) = attack(
        "attack-local",
        &["--isolation", "bwrap", "--grading-network", "none"],
    );
    let probe = &observations(&pair)[0];
    assert!(probe.contains("shadow-refused"), "{probe}");
    assert!(probe.contains("home-refused"), "{probe}");
    assert_contained(&pair, &targets, true);
}

#[test]
fn a_docker_agent_and_its_grader_can_neither_escape_nor_peek() {
    docker();
    let (pair, _cwd, targets, _listener) = attack("attack-docker", &["--backend", "docker"]);
    // The container's /etc/shadow and /root are the image's own, not the host's: the
    // host's home is simply not there.
    assert_contained(&pair, &targets, true);
}

#[test]
fn auto_isolation_without_bwrap_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs").display().to_string();
    let data = dataset().display().to_string();
    let agent = plugins().mini_swe.display().to_string();
    // A PATH without bwrap (but with bash, git and coreutils).
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["bash", "git", "cp", "python3"] {
        if let Some(found) = which(tool) {
            std::os::unix::fs::symlink(found, bin.join(tool)).unwrap();
        }
    }
    let path = bin.display().to_string();
    let args = [
        "run",
        "-q",
        "-n",
        "nobwrap",
        "--log-dir",
        &logs,
        "--dataset-dir",
        &data,
        "--agent",
        &agent,
        "-m",
        "oracle",
        "-f",
        "1,2",
    ];
    let out = cbench_in(dir.path(), &args, &[("PATH", &path)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bubblewrap") && err.contains("--isolation none"),
        "{err}"
    );
    assert!(!dir.path().join("logs/nobwrap/cbench_textkit_task").exists());

    // `none` is the user's explicit choice: it runs, says so, and config.json records it.
    let mut none = args.to_vec();
    none.extend_from_slice(&["--isolation", "none"]);
    none[3] = "unconfined";
    let out = cbench_in(dir.path(), &none, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("UNCONFINED"), "{}", text(&out));
    let config = json(&dir.path().join("logs/unconfined/config.json"));
    assert_eq!(config["isolation_mode"], "none");
    assert!(config["isolation"].as_str().unwrap().contains("UNCONFINED"));
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}
