//! probe: a deliberately misbehaving plugin for the host's isolation tests.
//!
//! The mode comes from the agent config text: `read-host-file`, `spin`,
//! `hog-memory`, `chat`, `noop`, `wait-in-host`, `print-and-panic`, `exec-options`,
//! `broadcast` or `git-remote`. The outcome summary reports what happened.
//!
//! It declares the `messaging` capability only, never `git`: the host must not give it the
//! team remote even when the user allows git.

wit_bindgen::generate!({
    path: "../../wit",
    world: "agent-plugin",
});

use cooperbench::agent::messaging;
use cooperbench::agent::sandbox::{self, ExecRequest};
use cooperbench::agent::types::{AgentInfo, Capability, ExitStatus, Outcome, Task};
use exports::cooperbench::agent::agent::Guest;

struct Probe;

fn done(summary: String) -> Result<Outcome, String> {
    Ok(Outcome {
        status: ExitStatus::Submitted,
        steps: 0,
        summary,
    })
}

impl Guest for Probe {
    fn info() -> AgentInfo {
        AgentInfo {
            name: "probe".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            capabilities: vec![Capability::Messaging],
        }
    }

    fn run(task: Task) -> Result<Outcome, String> {
        // A mode may be per agent: "agent1=spin;agent2=chat".
        let config = task.agent_config.trim();
        let mode = config
            .split(';')
            .find_map(|part| {
                let (who, mode) = part.split_once('=')?;
                (who.trim() == task.agent_id).then_some(mode.trim())
            })
            .unwrap_or(config);
        match mode {
            "read-host-file" => {
                let files = ["/etc/passwd", "/etc/hostname", "/proc/self/environ", "."];
                let mut report = Vec::new();
                for f in files {
                    let result = std::fs::read(f).map(|b| b.len());
                    report.push(format!("{f}: {result:?}"));
                }
                let env: Vec<_> = std::env::vars().collect();
                report.push(format!("env vars: {}", env.len()));
                report.push(format!("args: {}", std::env::args().count()));
                let net = std::net::TcpStream::connect("127.0.0.1:22").map(|_| ());
                report.push(format!("tcp: {net:?}"));
                done(report.join("\n"))
            }
            "noop" => done("did nothing".into()),
            "exec-options" => {
                let run = |command: &str, workdir: Option<&str>, env: Vec<(String, String)>| {
                    let request = ExecRequest {
                        command: command.into(),
                        timeout_ms: 0,
                        workdir: workdir.map(str::to_string),
                        env,
                    };
                    match sandbox::exec(&request) {
                        Ok(o) => format!("ok {} {}", o.exit_code, o.output.trim()),
                        Err(e) => format!("err {e:?}"),
                    }
                };
                let report = [
                    format!("mkdir: {}", run("mkdir -p sub/deeper", None, vec![])),
                    format!(
                        "in sub: {}",
                        run("basename \"$PWD\"", Some("sub/deeper"), vec![])
                    ),
                    format!(
                        "env: {}",
                        run(
                            "echo \"$GREETING\"",
                            None,
                            vec![("GREETING".into(), "it's $HOME".into())]
                        )
                    ),
                    format!(
                        "env gone: {}",
                        run("echo \"[${GREETING:-}]\"", None, vec![])
                    ),
                    format!("escape: {}", run("pwd", Some("../.."), vec![])),
                    format!(
                        "bad name: {}",
                        run("true", None, vec![("A=B; rm -rf .".into(), "x".into())])
                    ),
                ];
                done(report.join("\n"))
            }
            "broadcast" => {
                // Broadcast first, then wait to hear one: every teammate is still running
                // when it is reached, whatever the scheduling.
                let reached = messaging::broadcast(&format!("hello all from {}", task.agent_id))
                    .map_err(|e| format!("broadcast failed: {e:?}"))?;
                let heard: Vec<String> = messaging::wait(10_000)
                    .into_iter()
                    .map(|m| format!("{}: {}", m.sender, m.content))
                    .collect();
                done(format!("reached={reached:?} heard={heard:?}"))
            }
            "git-remote" => {
                let request = ExecRequest {
                    command: "git remote".into(),
                    timeout_ms: 0,
                    workdir: None,
                    env: vec![],
                };
                let remotes = sandbox::exec(&request)
                    .map(|o| o.output.trim().to_string())
                    .unwrap_or_else(|e| format!("{e:?}"));
                done(format!(
                    "git-enabled={} messaging-enabled={} remotes=[{remotes}]",
                    task.git_enabled, task.messaging_enabled
                ))
            }
            "slow-chat" => {
                // agent1: "one", a pause long enough to restart the bus, "two"; agent2 waits for
                // both. Proves a bus outage between two messages loses nothing.
                if task.agent_id == "agent1" {
                    messaging::send("agent2", "one").map_err(|e| format!("send one: {e:?}"))?;
                    let pause = ExecRequest {
                        command: "sleep 4".into(),
                        timeout_ms: 0,
                        workdir: None,
                        env: vec![],
                    };
                    sandbox::exec(&pause).map_err(|e| format!("{e:?}"))?;
                    messaging::send("agent2", "two").map_err(|e| format!("send two: {e:?}"))?;
                    let ack = messaging::wait(30_000);
                    return done(format!(
                        "sent one, two; got {:?}",
                        ack.iter().map(|m| &m.content).collect::<Vec<_>>()
                    ));
                }
                let mut heard = Vec::new();
                while heard.len() < 2 {
                    let got = messaging::wait(30_000);
                    if got.is_empty() {
                        return Err(format!("waited 30 s; heard {heard:?}"));
                    }
                    heard.extend(got.into_iter().map(|m| m.content));
                }
                messaging::send("agent1", "ack").map_err(|e| format!("send ack: {e:?}"))?;
                done(format!("heard {}", heard.join(" | ")))
            }
            "print-and-panic" => {
                // Output the host must keep, then a trap whose cause only the output explains.
                println!("probe stdout: starting {}", task.agent_id);
                eprintln!("probe stderr: about to fail");
                panic!("probe: deliberate failure after printing");
            }
            "wait-in-host" => {
                // 3 s spent waiting inside the host; none of it is plugin compute.
                for _ in 0..3 {
                    messaging::wait(1_000);
                }
                done("waited 3 s in the host".into())
            }
            "spin" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "hog-memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 16 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "chat" => {
                for mate in &task.teammates {
                    messaging::send(mate, &format!("hello from {}", task.agent_id))
                        .map_err(|e| format!("send to {mate} failed: {e:?}"))?;
                }
                let mut heard = Vec::new();
                while heard.len() < task.teammates.len() {
                    let got = messaging::wait(10_000);
                    if got.is_empty() {
                        return Err(format!("no message after 10 s; heard {heard:?}"));
                    }
                    heard.extend(
                        got.into_iter()
                            .map(|m| format!("{}: {}", m.sender, m.content)),
                    );
                }
                done(format!("heard {}", heard.join(" | ")))
            }
            other => Err(format!("probe: unknown mode `{other}`")),
        }
    }
}

export!(Probe);
