//! probe: a deliberately misbehaving plugin for the host's isolation tests.
//!
//! The mode comes from the agent config text: `read-host-file`, `spin`,
//! `hog-memory`, `chat`, `noop` or `wait-in-host`. The outcome summary reports what happened.

wit_bindgen::generate!({
    path: "../../wit",
    world: "agent-plugin",
});

use cooperbench::agent::messaging;
use cooperbench::agent::types::{AgentInfo, ExitStatus, Outcome, Task};
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
