//! The agent attacks the host's own handling of what it leaves behind: its `.git` and config,
//! attributes, a tracked `.gitconfig`, links, the host's script files, the team remote, the
//! grading containers and trees, and sizes. Every test runs a scripted agent through the real
//! binary and then looks for what the attack would have produced on the host: marker files,
//! a host secret in any file of the run, a hook's output, state seen by a later test run.
//! On the local backend (bwrap) and the docker backend.

use std::path::{Path, PathBuf};

use serde_json::{json as j, Value};

use crate::support::{cbench_in, dataset, docker, json, plugins, text, workspace, write_temp};

const SUBMIT: &str = "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT";
/// The user's key in cbench's environment.
const KEY_CANARY: &str = "sk-canary-host-3b9d0e";
/// A root-only file on the host the attacker wants in its patch.
const SECRET_CANARY: &str = "HOST-SECRET-c4f1e27a";

/// One attack run's working directory (holds the markers and the host secret) and results.
struct Attack {
    cwd: tempfile::TempDir,
    pair: PathBuf,
    output: std::process::Output,
}

impl Attack {
    /// Where the attack's command `what` would leave its mark on the host.
    fn marker(cwd: &Path, what: &str) -> PathBuf {
        cwd.join(format!("pwned-{what}"))
    }

    fn secret_dir(cwd: &Path) -> PathBuf {
        cwd.join("host-secret")
    }

    /// Markers that exist: the attacks that worked.
    fn markers_found(&self) -> Vec<String> {
        std::fs::read_dir(self.cwd.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("pwned-"))
            .collect()
    }

    fn observations(&self, agent: &str) -> String {
        json(&self.pair.join(agent).join("trajectory.json"))["steps"]
            .as_array()
            .map(|steps| {
                steps
                    .iter()
                    .map(|s| s["observation"].as_str().unwrap_or_default().to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    }

    fn result(&self) -> Value {
        json(&self.pair.join("result.json"))
    }

    fn eval(&self) -> Value {
        json(&self.pair.join("eval.json"))
    }

    fn agent_status(&self, agent: &str) -> (String, String) {
        let result = self.result();
        let record = result["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["agent_id"] == agent)
            .unwrap()
            .clone();
        (
            record["status"].as_str().unwrap_or_default().to_string(),
            record["error"].as_str().unwrap_or_default().to_string(),
        )
    }

    /// The run finished, graded the pair, and counted no infrastructure error.
    fn assert_graded_not_infra(&self) {
        assert!(
            self.output.status.success(),
            "the run did not exit 0:\n{}\n{}",
            text(&self.output),
            std::fs::read_to_string(self.pair.join("../../../summary.json")).unwrap_or_default()
        );
        assert!(
            self.pair.join("eval.json").is_file(),
            "the pair was not graded"
        );
        let summary = json(&self.pair.join("../../../summary.json"));
        assert_eq!(summary["infra_errors"], j!(0), "{summary:#}");
        for agent in ["agent1", "agent2"] {
            assert!(
                self.pair.join(agent).join("trajectory.json").is_file(),
                "{agent}'s trajectory.json was not written"
            );
        }
    }
}

/// Runs `script` on pair 1,2 of the bundled task from a fresh working directory holding a
/// root-only host secret, with the user's key in the environment.
fn attack(name: &str, script: impl Fn(&Path) -> Value, extra: &[&str]) -> Attack {
    let cwd = tempfile::tempdir_in(workspace().join("target")).unwrap();
    let secret = Attack::secret_dir(cwd.path());
    std::fs::create_dir_all(&secret).unwrap();
    let secret_file = secret.join("secret.txt");
    std::fs::write(&secret_file, format!("{SECRET_CANARY}\n")).unwrap();
    std::fs::set_permissions(
        &secret_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let script = write_temp(cwd.path(), "script.json", &script(cwd.path()).to_string());
    let logs = cwd.path().join("logs").display().to_string();
    let data = dataset().display().to_string();
    let agent = plugins().mini_swe.display().to_string();
    let model = format!("scripted:{script}");
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
    ];
    args.extend_from_slice(extra);
    let output = cbench_in(cwd.path(), &args, &[("OPENAI_API_KEY", KEY_CANARY)]);
    let pair = cwd
        .path()
        .join("logs")
        .join(name)
        .join("cbench_textkit_task/task1/features_1_2");
    Attack { cwd, pair, output }
}

/// Everything under `dir` as text.
fn all_text(dir: &Path) -> String {
    let mut out = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(t) = std::fs::read(&p) {
                out.push_str(&String::from_utf8_lossy(&t));
            }
        }
    }
    out
}

const LOCAL: &[&str] = &["--isolation", "bwrap"];
const DOCKER: &[&str] = &["--backend", "docker"];

/// agent1 configures its repository to run commands whenever git looks at it (fsmonitor,
/// clean filter, textconv, external diff, pager, hooks, an included config, a tracked
/// `.gitconfig`), points `core.worktree` and alternates at the host, plants links to a host
/// secret and over the host's command scripts; agent2 deletes its `.git` and still works.
fn git_config_attack(cwd: &Path) -> Value {
    let m = |what: &str| Attack::marker(cwd, what).display().to_string();
    let secret_dir = Attack::secret_dir(cwd).display().to_string();
    let configure = format!(
        r#"git config core.fsmonitor "touch {fsmonitor}; false"
git config filter.evil.clean "touch {filter}; cat"
git config filter.evil.smudge cat
git config filter.evil.required true
git config diff.evil.textconv "touch {textconv}; cat"
git config diff.external "touch {external}"
git config core.pager "touch {pager}; cat"
git config core.sshCommand "touch {ssh}"
printf '* filter=evil diff=evil merge=evil\n' > .gitattributes
git config merge.evil.driver "touch {merge}; false"
mkdir -p .git/hooks .githooks
for h in post-index-change pre-commit post-checkout post-merge; do
  printf '#!/bin/sh\ntouch {hook}-%s\n' "$h" > .git/hooks/$h; cp .git/hooks/$h .githooks/$h
done
chmod +x .git/hooks/* .githooks/*
printf '[core]\n\tfsmonitor = touch {include}; false\n' > evil.cfg
git config include.path "$PWD/evil.cfg"
printf '[core]\n\tfsmonitor = touch {tracked}; false\n[filter "evil"]\n\tclean = touch {tracked}-filter; cat\n' > .gitconfig
echo '# agent1 was here' >> textkit/strings.py
ln -s {secret_dir}/secret.txt leak-link
echo configured"#,
        fsmonitor = m("fsmonitor"),
        filter = m("filter"),
        textconv = m("textconv"),
        external = m("external"),
        pager = m("pager"),
        ssh = m("ssh"),
        merge = m("merge-driver"),
        hook = m("hook"),
        include = m("include"),
        tracked = m("tracked-gitconfig"),
    );
    // Links where the host writes the next command scripts (local: ../scripts).
    let scripts = format!(
        r#"for n in $(seq 0 40); do ln -sf {target} ../scripts/cmd-$n.sh 2>/dev/null; done
ls -l ../scripts 2>&1 | head -3; echo scripts-tried"#,
        target = m("script-target")
    );
    let last = format!(
        r#"git config core.hooksPath "$PWD/.githooks"
mkdir -p .git/objects/info && echo {secret_dir} > .git/objects/info/alternates
git config core.worktree {secret_dir}
echo done-configuring"#
    );
    j!({
        "agent1": [
            {"bash": configure},
            {"bash": scripts},
            {"bash": "echo after-scripts"},
            {"bash": last},
            {"bash": SUBMIT}
        ],
        "agent2": [
            {"bash": "rm -rf .git && echo '# agent2 was here' >> textkit/vowels.py && echo removed-git"},
            {"bash": SUBMIT}
        ]
    })
}

fn assert_git_config_attack_refused(attack: &Attack) {
    assert!(
        attack.observations("agent1").contains("configured"),
        "{}",
        attack.observations("agent1")
    );
    assert_eq!(
        attack.markers_found(),
        Vec::<String>::new(),
        "agent-configured commands ran on the host"
    );
    attack.assert_graded_not_infra();
    let everything = all_text(&attack.pair);
    assert!(
        !everything.contains(SECRET_CANARY),
        "a host secret reached the run directory"
    );
    assert!(
        !everything.contains(KEY_CANARY),
        "the user's key reached the run directory"
    );
    let patch1 = std::fs::read_to_string(attack.pair.join("agent1/patch.diff")).unwrap();
    assert!(patch1.contains("+# agent1 was here"), "{patch1}");
    // The link is recorded as a link (its target's text), never followed.
    assert!(patch1.contains("new file mode 120000"), "{patch1}");
    // The tracked files are just files in the patch.
    assert!(patch1.contains("b/.gitconfig") && patch1.contains("b/.gitattributes"));
    // agent2 deleted its .git: its patch is still computed from its tree.
    let patch2 = std::fs::read_to_string(attack.pair.join("agent2/patch.diff")).unwrap();
    assert!(patch2.contains("+# agent2 was here"), "{patch2}");
    assert!(!patch2.contains(".git/"), "{patch2}");
    for agent in ["agent1", "agent2"] {
        assert_ne!(attack.agent_status(agent).0, "InfraError");
    }
    // The merged tree (both patches, .gitattributes naming an unconfigured driver) was graded.
    assert!(attack.pair.join("merged.diff").is_file());
}

#[test]
fn a_local_agents_git_config_attributes_and_links_do_nothing_on_the_host() {
    let attack = attack("git-config-local", git_config_attack, LOCAL);
    assert_git_config_attack_refused(&attack);
    assert!(
        !Attack::marker(attack.cwd.path(), "script-target").exists(),
        "the host wrote a command script through the agent's link"
    );
    assert!(
        attack.observations("agent1").contains("after-scripts"),
        "the command after the link attack did not run"
    );
}

#[test]
fn a_docker_agents_git_config_attributes_and_links_do_nothing_on_the_host() {
    docker();
    let attack = attack("git-config-docker", git_config_attack, DOCKER);
    assert_git_config_attack_refused(&attack);
}

/// agent1's patch, when imported by the tests, plants a `.pth` hook in every site-packages
/// it can write and files in `/patches` and `/tmp`; every later test run looks for them.
fn contamination_attack(_cwd: &Path) -> Value {
    let plant = r#"cat >> textkit/__init__.py <<'PYEOF'

def _cbench_plant():
    import os, site
    line = "import sys; sys.stderr.write('CONTAMINATED-BY-AN-EARLIER-RUN\\n')\n"
    dirs = list(site.getsitepackages()) + [site.getusersitepackages()]
    for d in dirs:
        try:
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "zz_cbench_plant.pth"), "w") as f:
                f.write(line)
            print("PLANTED-IN", d)
        except Exception:
            pass
    for p in ["/patches/planted.txt", "/tmp/planted.txt", os.path.expanduser("~/planted.txt")]:
        if os.path.exists(p):
            print("CONTAMINATED-BY-AN-EARLIER-RUN found", p)
        try:
            with open(p, "w") as f:
                f.write("x")
        except Exception:
            pass

_cbench_plant()
PYEOF
echo planted"#;
    j!({
        "agent1": [{"bash": plant}, {"bash": SUBMIT}],
        "agent2": [{"bash": "echo '# agent2' >> textkit/vowels.py"}, {"bash": SUBMIT}]
    })
}

fn assert_every_test_run_starts_clean(attack: &Attack) {
    attack.assert_graded_not_infra();
    let logs = attack.pair.join("eval_logs");
    let agent1 = std::fs::read_to_string(logs.join("agent1_feature1.log")).unwrap();
    assert!(
        agent1.contains("PLANTED-IN"),
        "the plant did not run, so the test proves nothing:\n{agent1}"
    );
    let mut later: Vec<PathBuf> = std::fs::read_dir(&logs)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| !p.ends_with("agent1_feature1.log"))
        .collect();
    later.sort();
    assert!(later.len() >= 3, "{later:?}");
    for log in later {
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            !text.contains("CONTAMINATED-BY-AN-EARLIER-RUN"),
            "{} saw state an earlier test run left:\n{text}",
            log.display()
        );
    }
}

#[test]
fn a_local_test_run_never_sees_what_an_earlier_one_planted() {
    let attack = attack("contaminate-local", contamination_attack, LOCAL);
    assert_every_test_run_starts_clean(&attack);
}

#[test]
fn a_docker_test_run_never_sees_what_an_earlier_one_planted() {
    docker();
    let attack = attack("contaminate-docker", contamination_attack, DOCKER);
    assert_every_test_run_starts_clean(&attack);
}

/// With `--git`, agent1 tries to plant a hook and change the config of the shared remote;
/// agent2 pushes afterwards.
fn team_remote_attack(_cwd: &Path) -> Value {
    let plant = r#"bare=$(git remote get-url team)
{ printf '#!/bin/sh\necho HOOK-RAN-IN-A-PUSH >&2\n' > "$bare/hooks/pre-receive" && chmod +x "$bare/hooks/pre-receive"; } 2>/dev/null && echo HOOK-PLANTED || echo hook-refused
{ printf '#!/bin/sh\necho HOOK-RAN-IN-A-PUSH >&2\n' > "$bare/hooks/update"; } 2>/dev/null && echo UPDATE-HOOK-REPLACED || echo update-hook-refused
git config --file "$bare/config" core.hooksPath /tmp 2>/dev/null && echo CONFIG-CHANGED || echo config-refused
touch team-done && echo planted-attempted"#;
    let push = r#"sleep 4; echo pushed-by-agent2 > NOTE2.txt && git add NOTE2.txt && git commit -qm note && git push team HEAD:agent2 2>&1; echo "push-exit=$?""#;
    j!({
        "agent1": [{"bash": plant}, {"bash": SUBMIT}],
        "agent2": [{"bash": push}, {"bash": SUBMIT}]
    })
}

#[test]
fn a_local_agent_cannot_plant_hooks_or_config_in_the_team_remote() {
    let attack = attack(
        "team-local",
        team_remote_attack,
        &["--isolation", "bwrap", "--git", "--no-messaging"],
    );
    attack.assert_graded_not_infra();
    let agent1 = attack.observations("agent1");
    for expected in ["hook-refused", "update-hook-refused", "config-refused"] {
        assert!(agent1.contains(expected), "{expected} missing:\n{agent1}");
    }
    let agent2 = attack.observations("agent2");
    assert!(agent2.contains("push-exit=0"), "{agent2}");
    assert!(!agent2.contains("HOOK-RAN-IN-A-PUSH"), "{agent2}");
}

/// What an agent does to its own tree or sandbox is its own failure: a patch over the cap is
/// rejected (the agent fails with the reason, the pair is graded), an oversized message is
/// not sent, and killing every process (on docker the exec channel included) or a fork bomb
/// changes nothing about how the pair is graded.
fn breakage_attack(_cwd: &Path) -> Value {
    let big_message = "x".repeat(100 << 10);
    j!({
        "agent1": [
            {"bash": "head -c 3000000 /dev/urandom > blob.bin && echo '# agent1' >> textkit/strings.py && echo wrote-blob"},
            {"bash": format!("send_message agent2 <<'MSG'\n{big_message}\nMSG\necho sent-big")},
            {"bash": "kill -9 -1 2>/dev/null; echo killed-everything"},
            {"bash": "(bomb() { bomb | bomb & }; bomb) 2>/dev/null; sleep 3; echo bombed"},
            // Signals to the sandbox's init (docker: the container's keep-alive) stop nothing.
            {"bash": "kill -TERM 1; kill -INT 1; kill -HUP 1; kill -KILL 1; sleep 1; echo signalled-init"},
            {"bash": "echo still-alive"},
            {"bash": SUBMIT}
        ],
        "agent2": [
            // Ignored build output over the patch limit is not part of the patch: no rejection.
            {"bash": "echo '# agent2 was here' >> textkit/vowels.py && mkdir -p build && echo 'build/' >> .gitignore && head -c 3000000 /dev/urandom > build/cache.bin && echo built"},
            {"bash": SUBMIT}
        ]
    })
}

fn assert_breakage_is_the_agents_failure(attack: &Attack) {
    attack.assert_graded_not_infra();
    let (status, error) = attack.agent_status("agent1");
    assert_eq!(status, "Error", "{error}");
    assert!(
        error.contains("patch rejected") && error.contains("blob.bin"),
        "{error}"
    );
    assert_eq!(
        std::fs::read_to_string(attack.pair.join("agent1/patch.diff")).unwrap(),
        ""
    );
    let agent1 = attack.observations("agent1");
    assert!(agent1.contains("still-alive"), "{agent1}");
    // The 100 KiB message was refused by the host and is nowhere on record.
    let conversation = std::fs::read_to_string(attack.pair.join("conversation.json")).unwrap();
    assert!(!conversation.contains("xxxxxxxxxxxxxxxx"), "{conversation}");
    let (status2, _) = attack.agent_status("agent2");
    assert_eq!(status2, "Submitted");
    let patch2 = std::fs::read_to_string(attack.pair.join("agent2/patch.diff")).unwrap();
    assert!(patch2.contains("+# agent2 was here"));
    assert!(
        patch2.contains("+build/") && !patch2.contains("cache.bin"),
        "{patch2}"
    );
    let eval = attack.eval();
    assert_eq!(eval["agent1"]["success"], j!(false), "{eval:#}");
}

/// Both agents replace Python's unittest with a stand-in that prints a pass and implement
/// nothing (found by a hostile review: graded as a full success).
fn fake_pass_attack(_cwd: &Path) -> Value {
    let fake =
        "mkdir -p unittest && : > unittest/__init__.py && cat > unittest/__main__.py <<'PY'\n\
                for i in range(6):\n    print(f'test_{i} (tests.test_x.T) ... ok')\n\
                print('-' * 70)\nprint('Ran 6 tests in 0.001s')\nprint()\nprint('OK')\nPY\n\
                printf 'import sys\\n' > sitecustomize.py && echo planted";
    j!({
        "agent1": [{"bash": fake}, {"bash": SUBMIT}],
        "agent2": [{"bash": fake}, {"bash": SUBMIT}]
    })
}

fn assert_stand_ins_dropped(attack: &Attack) {
    attack.assert_graded_not_infra();
    let eval = attack.eval();
    assert_eq!(eval["overall_success"], j!(false), "{eval:#}");
    for agent in ["agent1", "agent2"] {
        let grade = &eval[agent];
        assert_eq!(grade["success"], j!(false), "{eval:#}");
        let dropped: Vec<&str> = grade["dropped_test_files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        for stand_in in [
            "unittest/__main__.py",
            "unittest/__init__.py",
            "sitecustomize.py",
        ] {
            assert!(dropped.contains(&stand_in), "{agent}: {dropped:?}");
        }
    }
}

#[test]
fn a_local_stand_in_for_the_test_tooling_is_dropped_and_the_pair_fails() {
    assert_stand_ins_dropped(&attack("fake-pass", fake_pass_attack, &[]));
}

#[test]
fn a_docker_stand_in_for_the_test_tooling_is_dropped_and_the_pair_fails() {
    docker();
    assert_stand_ins_dropped(&attack("fake-pass-docker", fake_pass_attack, DOCKER));
}

#[test]
fn local_agent_caused_breakage_is_graded_as_the_agents_failure() {
    let attack = attack(
        "breakage-local",
        breakage_attack,
        &[
            "--isolation",
            "bwrap",
            "--max-patch-mb",
            "1",
            "--pids-limit",
            "128",
            "--command-timeout",
            "20",
        ],
    );
    assert_breakage_is_the_agents_failure(&attack);
}

#[test]
fn docker_agent_caused_breakage_is_graded_as_the_agents_failure() {
    docker();
    let attack = attack(
        "breakage-docker",
        breakage_attack,
        &[
            "--backend",
            "docker",
            "--max-patch-mb",
            "1",
            "--pids-limit",
            "128",
            "--command-timeout",
            "20",
        ],
    );
    assert_breakage_is_the_agents_failure(&attack);
}

/// A task whose runner cannot work in this environment (a tool it calls is missing) makes
/// its pairs "not gradable here": an infrastructure error naming the task and feature, run
/// again next time, never the agents' failure.
#[test]
fn a_runner_that_cannot_work_here_is_an_infrastructure_error_not_an_agent_failure() {
    let cwd = tempfile::tempdir_in(workspace().join("target")).unwrap();
    let data = cwd.path().join("dataset");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(dataset())
        .arg(&data)
        .status()
        .unwrap();
    assert!(copied.success());
    let runner = data.join("cbench_textkit_task/task1/run_tests.sh");
    let original = std::fs::read_to_string(&runner).unwrap();
    std::fs::write(
        &runner,
        original.replacen("set -e\n", "set -e\ncbench-no-such-tool --version\n", 1),
    )
    .unwrap();
    let logs = cwd.path().join("logs");
    let agent = plugins().mini_swe.display().to_string();
    let out = cbench_in(
        cwd.path(),
        &[
            "run",
            "-q",
            "-n",
            "not-gradable",
            "--log-dir",
            &logs.display().to_string(),
            "--dataset-dir",
            &data.display().to_string(),
            "--agent",
            &agent,
            "-m",
            "oracle",
            "-f",
            "1,2",
            "--isolation",
            "bwrap",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let pair = logs.join("not-gradable/cbench_textkit_task/task1/features_1_2");
    assert!(
        !pair.join("eval.json").exists(),
        "a pair that cannot be graded here got a score"
    );
    let summary = json(&logs.join("not-gradable/summary.json"));
    assert_eq!(summary["infra_errors"], j!(1), "{summary:#}");
    let why = summary.to_string();
    assert!(
        why.contains("cbench_textkit_task/task1 feature 1 is not gradable here"),
        "{why}"
    );
    assert!(why.contains("runner exit code 127"), "{why}");
}

/// An agent that fills its sandbox's disk is stopped by `--disk`: its next command is
/// refused, it ends `LimitsExceeded`, and the pair is graded.
fn disk_attack(_cwd: &Path) -> Value {
    j!({
        "agent1": [
            {"bash": "echo '# agent1' >> textkit/strings.py; head -c 80000000 /dev/zero > \"${TMPDIR:-/tmp}/big\"; fallocate -l 2G \"${TMPDIR:-/tmp}/huge\" 2>&1 | tail -1; ls -l \"${TMPDIR:-/tmp}\" | tail -2; echo filled"},
            {"bash": "echo NOT-REFUSED"},
            {"bash": SUBMIT}
        ],
        "agent2": [{"bash": SUBMIT}]
    })
}

fn assert_disk_limit_stops_the_agent(attack: &Attack) {
    attack.assert_graded_not_infra();
    let (status, error) = attack.agent_status("agent1");
    assert_eq!(status, "LimitsExceeded", "{error}");
    let agent1 = attack.observations("agent1");
    assert!(agent1.contains("filled"), "{agent1}");
    assert!(!agent1.contains("NOT-REFUSED"), "{agent1}");
    assert!(agent1.contains("over its limit of 50 MiB"), "{agent1}");
    let patch1 = std::fs::read_to_string(attack.pair.join("agent1/patch.diff")).unwrap();
    assert!(patch1.contains("+# agent1"), "{patch1}");
}

#[test]
fn a_local_agent_filling_its_disk_is_stopped() {
    let attack = attack(
        "disk-local",
        disk_attack,
        &["--isolation", "bwrap", "--disk", "50m"],
    );
    assert_disk_limit_stops_the_agent(&attack);
    // No file grew past the limit while it was written.
    assert!(
        !attack.observations("agent1").contains("2147483648"),
        "fallocate made a 2 GiB file"
    );
}

#[test]
fn a_docker_agent_filling_its_disk_is_stopped() {
    docker();
    let attack = attack(
        "disk-docker",
        disk_attack,
        &["--backend", "docker", "--disk", "50m"],
    );
    assert_disk_limit_stops_the_agent(&attack);
    // No file grew past the limit while it was written.
    assert!(
        !attack.observations("agent1").contains("2147483648"),
        "fallocate made a 2 GiB file"
    );
}

/// An agent that nests a directory past the path limit in its container's writable layer
/// (where a path walk cannot reach; the engine then reports no size at all) and fills the disk
/// beside it is stopped all the same: what cannot be measured cannot be held to `--disk`.
#[test]
fn a_docker_agent_hiding_its_disk_use_past_the_path_limit_is_stopped() {
    docker();
    let attack = attack(
        "disk-deep-docker",
        |_| {
            j!({
                "agent1": [
                    {"bash": "echo '# agent1' >> textkit/strings.py; python3 -c \"import os\nos.chdir('/tmp')\nfor _ in range(90):\n os.mkdir('d'*60); os.chdir('d'*60)\nopen('f','w').write('x')\"; head -c 80000000 /dev/zero > /tmp/big; echo filled"},
                    {"bash": "echo NOT-REFUSED"},
                    {"bash": SUBMIT}
                ],
                "agent2": [{"bash": SUBMIT}]
            })
        },
        &["--backend", "docker", "--disk", "50m"],
    );
    attack.assert_graded_not_infra();
    let (status, error) = attack.agent_status("agent1");
    assert_eq!(status, "LimitsExceeded", "{error}");
    let agent1 = attack.observations("agent1");
    assert!(agent1.contains("filled"), "{agent1}");
    assert!(!agent1.contains("NOT-REFUSED"), "{agent1}");
}

/// The out-of-memory killer takes the process with the highest score: an agent can raise its
/// container's init to the top and exhaust the memory with processes each scoring below it.
/// Init dies and the container stops. That is the agent's limit (LimitsExceeded), never an
/// infrastructure error, which would take the pair out of the score.
#[test]
fn a_docker_agent_that_takes_its_container_down_by_memory_ends_on_its_limit() {
    docker();
    let attack = attack(
        "init-oom-docker",
        |_| {
            j!({
                "agent1": [
                    {"bash": "echo '# agent1' >> textkit/strings.py; echo 1000 > /proc/1/oom_score_adj\nfor i in $(seq 24); do\n  python3 -c 'import time; b = bytearray(24 << 20); b[::4096] = b\"x\" * len(b[::4096]); time.sleep(60)' &\ndone\nwait"},
                    {"bash": "echo NOT-REFUSED"},
                    {"bash": SUBMIT}
                ],
                "agent2": [{"bash": SUBMIT}]
            })
        },
        &["--backend", "docker", "--memory", "256m"],
    );
    attack.assert_graded_not_infra();
    let (status, error) = attack.agent_status("agent1");
    assert_eq!(status, "LimitsExceeded", "{error}");
    assert!(error.contains("ran out of memory"), "{error}");
    let agent1 = attack.observations("agent1");
    assert!(!agent1.contains("NOT-REFUSED"), "{agent1}");
    assert!(!agent1.contains("work as before"), "{agent1}");
}

/// A patch whose `.gitattributes` asks git for an encoding its applied text no longer carries
/// (the BOM a UTF-16 file needs does not survive the patch) cannot be recorded in the merge:
/// the patch's failure to merge, never an infrastructure error.
#[test]
fn a_patch_git_cannot_record_in_the_merge_fails_the_merge_not_the_run() {
    let attack = attack(
        "unrecordable-merge",
        |_| {
            j!({
                "agent1": [
                    {"bash": "printf 'bad.txt working-tree-encoding=UTF-16\\n' > .gitattributes && printf 'abc\\n' | iconv -f UTF-8 -t UTF-16 > bad.txt && echo '# agent1' >> textkit/strings.py"},
                    {"bash": SUBMIT}
                ],
                "agent2": [{"bash": SUBMIT}]
            })
        },
        &[],
    );
    attack.assert_graded_not_infra();
    let eval = json(&attack.pair.join("eval.json"));
    assert_eq!(eval["merged"]["apply_failed"], j!(["agent1"]), "{eval:#}");
    assert_eq!(eval["merged"]["success"], j!(false), "{eval:#}");
}

/// An agent that deletes its whole repository leaves an empty tree (or none): graded, its own
/// outcome, never an infrastructure error.
fn repo_removal_attack(_cwd: &Path) -> Value {
    j!({
        "agent1": [
            {"bash": "here=$PWD; cd / && rm -rf \"$here\" /workspace/repo 2>/dev/null; echo removed"},
            {"bash": SUBMIT}
        ],
        "agent2": [{"bash": "echo '# agent2' >> textkit/vowels.py"}, {"bash": SUBMIT}]
    })
}

#[test]
fn a_local_agent_deleting_its_repository_is_graded() {
    let attack = attack("repo-gone-local", repo_removal_attack, LOCAL);
    attack.assert_graded_not_infra();
    assert_ne!(attack.agent_status("agent1").0, "InfraError");
}

#[test]
fn a_docker_agent_deleting_its_repository_is_graded() {
    docker();
    let attack = attack("repo-gone-docker", repo_removal_attack, DOCKER);
    attack.assert_graded_not_infra();
    let (status, error) = attack.agent_status("agent1");
    assert_eq!(status, "Error", "{error}");
    assert!(error.contains("is gone"), "{error}");
}
