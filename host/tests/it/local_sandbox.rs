//! The local sandbox: timeouts kill whole process groups, large commands work,
//! the environment is scrubbed, and the patch is the host's own diff.

use std::time::{Duration, Instant};

use cbench::sandbox::confine::{Confinement, IsolationMode, LocalOptions};
use cbench::sandbox::local::{BaseRepo, LocalSandbox};
use cbench::sandbox::Sandbox;

use crate::support::patch_of;

async fn sandbox(dir: &std::path::Path) -> LocalSandbox {
    sandbox_with(dir, &Confinement::none()).await
}

async fn sandbox_with(dir: &std::path::Path, confinement: &Confinement) -> LocalSandbox {
    let base = base_of(dir).await;
    LocalSandbox::create(&base, &dir.join("boxes"), confinement)
        .await
        .unwrap()
}

/// The base every sandbox of `dir` copies (made once).
async fn base_of(dir: &std::path::Path) -> BaseRepo {
    let src = dir.join("src");
    if !src.exists() {
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("a.txt"), "one\n").unwrap();
        return BaseRepo::from_source_tree(&src, &dir.join("base"))
            .await
            .unwrap();
    }
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(dir.join("base"))
        .output()
        .unwrap();
    BaseRepo {
        path: dir.join("base"),
        commit: String::from_utf8_lossy(&commit.stdout).trim().to_string(),
    }
}

async fn diff(sb: &LocalSandbox, dir: &std::path::Path) -> String {
    patch_of(sb, &base_of(dir).await).await.expect("the patch")
}

#[tokio::test]
async fn a_timed_out_command_and_its_children_are_killed() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path()).await;
    let marker = dir.path().join("survivor");
    let cmd = format!(
        "(sleep 2; touch {m}) & echo started; sleep 30",
        m = marker.display()
    );
    let t = Instant::now();
    let out = sb.exec(&cmd, Duration::from_millis(500)).await.unwrap();
    assert!(out.timed_out);
    assert!(out.output.contains("started"));
    assert!(t.elapsed() < Duration::from_secs(10));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !marker.exists(),
        "a child of the timed-out command kept running"
    );
}

#[tokio::test]
async fn background_jobs_die_with_their_command() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path()).await;
    let marker = dir.path().join("bg");
    let out = sb
        .exec(
            &format!("(sleep 1; touch {}) & echo done", marker.display()),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!marker.exists());
}

#[tokio::test]
async fn a_megabyte_command_runs_and_the_environment_is_scrubbed() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path()).await;
    // SAFETY: test-only; set before any thread of this test reads the environment.
    unsafe { std::env::set_var("CBENCH_TEST_SECRET", "hunter2") };
    let payload = "x".repeat(1 << 20);
    let cmd = format!("cat > big.txt <<'EOF'\n{payload}\nEOF\nwc -c < big.txt; env | grep -c CBENCH_TEST_SECRET || true");
    let out = sb.exec(&cmd, Duration::from_secs(30)).await.unwrap();
    let lines: Vec<&str> = out.output.lines().collect();
    assert_eq!(
        lines,
        vec![&*format!("{}", (1 << 20) + 1), "0"],
        "{}",
        out.output
    );
}

#[tokio::test]
async fn output_is_capped_and_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path()).await;
    let out = sb
        .exec(
            "head -c 3000000 /dev/zero | tr '\\0' y",
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert!(out.truncated);
    assert_eq!(out.output.len(), cbench::sandbox::local::DEFAULT_OUTPUT_CAP);
}

#[tokio::test]
async fn the_patch_includes_new_files_deletions_and_committed_work() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path()).await;
    sb.exec(
        "echo two >> a.txt && git add -A && git commit -qm mine && echo new > b.txt && mkdir -p d && echo z > d/c.txt",
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let diff = diff(&sb, dir.path()).await;
    assert!(diff.contains("+two"), "{diff}");
    assert!(
        diff.contains("b/b.txt") && diff.contains("new file mode"),
        "{diff}"
    );
    assert!(diff.contains("b/d/c.txt"), "{diff}");
    sb.exec("rm a.txt", Duration::from_secs(10)).await.unwrap();
    assert!(crate::local_sandbox::diff(&sb, dir.path())
        .await
        .contains("deleted file mode"));
    assert!(sb.read_file("../escape").await.is_err());
    assert!(sb.write_file("/etc/x", b"no").await.is_err());
}

/// Tens of thousands of new files: the host's check of their recorded sizes asks `git
/// cat-file` about each, whose answers once filled its pipe while the host was still writing
/// the questions, and the run hung for good (a killed run then read as an infrastructure
/// error). The patch is computed, or refused, in bounded time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_of_tens_of_thousands_of_new_files_does_not_hang_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path()).await;
    let out = sb
        .exec(
            "mkdir many && cd many && python3 -c \"\nfor i in range(60000): open(str(i), 'w').write('x')\"",
            Duration::from_secs(120),
        )
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0, "{out:?}");
    let base = base_of(dir.path()).await;
    let patch = tokio::time::timeout(Duration::from_secs(300), patch_of(&sb, &base))
        .await
        .expect("the patch of 60,000 new files was not computed within 5 minutes");
    let patch = patch.expect("the patch");
    assert!(
        patch.contains("b/many/59999"),
        "{}",
        &patch[..patch.len().min(500)]
    );
}

/// Our machines and CI install bubblewrap (scripts/test.sh does it when missing), so this
/// runs for real; without bwrap, `--isolation bwrap` must be refused instead.
#[tokio::test]
async fn bwrap_confines_commands_to_the_workspace_without_network() {
    let isolation = match Confinement::resolve(LocalOptions {
        mode: IsolationMode::Bwrap,
        ..Default::default()
    }) {
        Ok(i) => i,
        Err(e) => panic!("bubblewrap is required for this test (apt-get install bubblewrap): {e}"),
    };
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox_with(dir.path(), &isolation).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Not under /tmp: inside bwrap, /tmp is a private tmpfs where writes are allowed (and vanish).
    let outside = crate::support::workspace()
        .join("target")
        .join(format!("bwrap-escape-{}.txt", std::process::id()));
    let cmd = format!(
        "echo inside > inside.txt && cat inside.txt\n\
         (echo x > {outside}) 2>/dev/null && echo wrote-outside || echo outside-refused\n\
         (echo x > /etc/cbench-probe) 2>/dev/null && echo wrote-etc || echo etc-refused\n\
         python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)\" 2>/dev/null && echo net-open || echo net-refused",
        outside = outside.display()
    );
    let out = sb.exec(&cmd, Duration::from_secs(30)).await.unwrap();
    let lines: Vec<&str> = out
        .output
        .lines()
        .filter(|l| !l.contains("pyenv"))
        .collect();
    assert_eq!(
        lines,
        vec!["inside", "outside-refused", "etc-refused", "net-refused"],
        "{}",
        out.output
    );
    assert!(!outside.exists());
    assert!(diff(&sb, dir.path()).await.contains("b/inside.txt"));
}

/// Even unconfined (`--isolation none`), a sandbox's cgroup ends what a command left
/// running, `setsid` included, and limits its processes.
#[tokio::test]
async fn without_bwrap_the_cgroup_still_ends_setsid_children_and_caps_processes() {
    let confinement = Confinement::resolve(LocalOptions {
        mode: IsolationMode::None,
        limits: cbench::sandbox::cgroup::ProcessLimits {
            pids: 32,
            memory_bytes: 256 << 20,
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap();
    assert!(
        confinement.cgroups.is_ok(),
        "this machine (and CI) has writable cgroups: {:?}",
        confinement.cgroups
    );
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox_with(dir.path(), &confinement).await;
    let marker = dir.path().join("escaped");
    let out = sb
        .exec(
            &format!(
                "setsid sh -c 'sleep 1; touch {}' </dev/null >/dev/null 2>&1 & echo started",
                marker.display()
            ),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert!(out.output.contains("started"), "{}", out.output);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!marker.exists(), "a setsid child outlived its command");
    let fork_loop = r#"python3 -c '
import os, time
n = 0
try:
    for _ in range(100):
        if os.fork() == 0:
            time.sleep(5)
            os._exit(0)
        n += 1
    print("forked-all", n)
except OSError:
    print("stopped-at", n)
'"#;
    let out = sb.exec(fork_loop, Duration::from_secs(30)).await.unwrap();
    assert!(out.output.contains("stopped-at"), "{}", out.output);
}

/// The plugin's file access goes through what the agent left: links out of the tree are
/// neither read nor written through (a secret stays unread, no host file is written).
#[tokio::test]
async fn plugin_file_access_never_follows_a_link_out_of_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path()).await;
    let secret = dir.path().join("host-secret.txt");
    std::fs::write(&secret, "host secret\n").unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let out = sb
        .exec(
            &format!(
                "ln -s {secret} leak && ln -s {outside} out && ln -s ../.. up && echo linked",
                secret = secret.display(),
                outside = outside.display()
            ),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert!(out.output.contains("linked"), "{}", out.output);
    assert!(sb.read_file("leak").await.is_err());
    assert!(sb.read_file("up/host-secret.txt").await.is_err());
    assert!(sb.write_file("out/planted.txt", b"x").await.is_err());
    assert!(sb.write_file("leak", b"overwritten").await.is_err());
    assert!(!outside.join("planted.txt").exists());
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "host secret\n");
    // Inside the tree everything works as before.
    sb.write_file("new/dir/file.txt", b"ok").await.unwrap();
    assert_eq!(sb.read_file("new/dir/file.txt").await.unwrap(), b"ok");
}
