//! The optional LLM judge (`cbench analyze --judge MODEL`): one call per coop pair with the
//! pair's record (outcome, messages, steps, patches, the deterministic findings), asking for
//! the taxonomy's labels and a paragraph citing message and step ids. Its prompts are files
//! in this crate (`prompts/`); its tokens and cost are recorded apart from the agents'.

use std::path::Path;

use cbench_core::message::Message;
use cbench_llm::trajectory::Trajectory;
use cbench_llm::{AgentBrief, ChatMessage, CompletionRequest, Model, Role, TokenUsage};
use serde::{Deserialize, Serialize};

use crate::{Analyzed, FailureMode};

/// The judge's system prompt.
pub const SYSTEM_PROMPT: &str = include_str!("../prompts/judge_system.md");
/// The judge's pair prompt, with `{{…}}` slots.
pub const PAIR_PROMPT: &str = include_str!("../prompts/judge_pair.md");
/// Characters kept of one message, one step's command and one step's output.
const MESSAGE_CHARS: usize = 1500;
const STEP_CHARS: usize = 300;
/// Steps shown per agent (the first ones; the count of the rest is said).
const STEPS_SHOWN: usize = 80;
/// Characters each section of the pair prompt keeps at most (the messages and steps are the
/// agents', sized to blow up a prompt or a bill).
const SECTION_CHARS: usize = 60_000;

/// Agent-written text as a JSON string: one line, quoted, so it cannot open a section of its own.
fn quoted(text: &str, chars: usize) -> String {
    serde_json::to_string(&clip(text, chars)).unwrap_or_else(|_| "\"\"".into())
}

/// `template` with each `{{name}}` replaced by its value in one pass (a value containing
/// `{{…}}` stays as written).
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(at) = rest.find("{{") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        match after.find("}}").map(|end| (&after[..end], end)) {
            Some((name, end)) if values.iter().any(|(k, _)| *k == name) => {
                let value = values.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
                out.push_str(value.unwrap_or_default());
                rest = &after[end + 2..];
            }
            _ => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// What the judge said about one pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeVerdict {
    pub model: String,
    /// SHA-256 of the two prompt files, so verdicts from other prompts are told apart.
    pub prompt_sha256: String,
    pub modes: Vec<FailureMode>,
    pub explanation: String,
    /// The reply, when it was not the JSON asked for (then `modes` is empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unparsed_reply: Option<String>,
    /// Why there is no verdict (the call failed, the reply did not parse).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub usage: TokenUsage,
    /// None when the model's price is unknown.
    pub cost_usd: Option<f64>,
}

/// SHA-256 of the prompts.
pub fn prompt_sha256() -> String {
    cbench_core::fsutil::sha256_hex(format!("{SYSTEM_PROMPT}\n\u{0}\n{PAIR_PROMPT}").as_bytes())
}

fn clip(text: &str, chars: usize) -> String {
    let mut out: String = text.chars().take(chars).collect();
    if text.chars().count() > chars {
        out.push_str(" […]");
    }
    out
}

/// The pair prompt for `pair`, from its files.
pub fn pair_prompt(pair: &Analyzed) -> String {
    let dir = &pair.dir;
    let a = &pair.analysis;
    let messages: Vec<Message> =
        cbench_core::fsutil::read_json(&dir.join("conversation.json")).unwrap_or_default();
    let messages_text = if messages.is_empty() {
        "(none)".to_string()
    } else {
        messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                format!(
                    "m{i} {} → {}: {}",
                    quoted(&m.from, 40),
                    quoted(&m.to, 40),
                    quoted(&m.content, MESSAGE_CHARS)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut steps = String::new();
    let mut patches = String::new();
    for agent in a.agents.iter().map(|m| &m.agent_id) {
        let trajectory: Option<Trajectory> =
            cbench_core::fsutil::read_json(&dir.join(agent).join("trajectory.json")).ok();
        steps.push_str(&format!("## {agent}\n"));
        if let Some(t) = trajectory {
            for (i, s) in t.steps.iter().take(STEPS_SHOWN).enumerate() {
                let args = match &s.args {
                    serde_json::Value::Object(map) => map
                        .get("command")
                        .or_else(|| map.get("content"))
                        .and_then(|v| v.as_str())
                        .map(str::to_string)
                        .unwrap_or_else(|| s.args.to_string()),
                    other => other.to_string(),
                };
                steps.push_str(&format!(
                    "{agent}#{i} {}: {} => {}\n",
                    quoted(&s.action, 40),
                    quoted(&args, STEP_CHARS),
                    quoted(&s.observation, STEP_CHARS)
                ));
            }
            if t.steps.len() > STEPS_SHOWN {
                steps.push_str(&format!(
                    "({} later steps not shown)\n",
                    t.steps.len() - STEPS_SHOWN
                ));
            }
        }
        let patch = crate::diff::PatchSummary::parse(
            &std::fs::read_to_string(dir.join(agent).join("patch.diff")).unwrap_or_default(),
        );
        let files: Vec<String> = patch.paths().into_iter().collect();
        let names: Vec<String> = patch.symbols().iter().cloned().collect();
        patches.push_str(&format!(
            "{agent}: files {}; names defined or changed {}\n",
            if files.is_empty() {
                "(none)".into()
            } else {
                files.join(", ")
            },
            if names.is_empty() {
                "(none)".into()
            } else {
                names.join(", ")
            }
        ));
    }
    let outcome = format!(
        "{} ({} message{})",
        if a.overall_success {
            "the pair succeeded"
        } else {
            "the pair failed"
        },
        a.messages,
        if a.messages == 1 { "" } else { "s" }
    );
    let findings = {
        let rendered = pair.render();
        if rendered.is_empty() {
            "nothing flagged".to_string()
        } else {
            rendered
        }
    };
    let findings = findings
        .lines()
        .map(|l| quoted(l, 1000))
        .collect::<Vec<_>>()
        .join("\n");
    fill(
        PAIR_PROMPT,
        &[
            ("outcome", &outcome),
            ("messages", &clip(&messages_text, SECTION_CHARS)),
            ("steps", &clip(steps.trim_end(), SECTION_CHARS)),
            ("patches", &clip(patches.trim_end(), SECTION_CHARS)),
            ("findings", &clip(&findings, SECTION_CHARS)),
        ],
    )
}

/// The judge's reply, read: `{"modes": [...], "explanation": "..."}` (the first JSON object in
/// the text; a mode outside the taxonomy makes the reply unparsed).
fn read_reply(text: &str) -> Result<(Vec<FailureMode>, String), String> {
    #[derive(Deserialize)]
    struct Reply {
        modes: Vec<FailureMode>,
        explanation: String,
    }
    let start = text.find('{').ok_or("no JSON object in the reply")?;
    let end = text.rfind('}').ok_or("no JSON object in the reply")?;
    if end < start {
        return Err("no JSON object in the reply".into());
    }
    let reply: Reply = serde_json::from_str(&text[start..=end])
        .map_err(|e| format!("the reply is not the JSON asked for: {e}"))?;
    let mut modes = reply.modes;
    modes.sort();
    modes.dedup();
    Ok((modes, reply.explanation))
}

/// Asks `model` about `pair`. A failed call or an unreadable reply is recorded in the verdict
/// (with what it cost), never an error of the analysis.
pub async fn judge_pair(model: &dyn Model, pair: &Analyzed) -> JudgeVerdict {
    let brief = AgentBrief {
        agent_id: "judge".into(),
        teammates: Vec::new(),
        setting: cbench_core::setting::Setting::Solo,
        features: Vec::new(),
        messaging_enabled: false,
        pair_key: pair.key.clone(),
    };
    let mut session = model.session(&brief);
    let request = CompletionRequest {
        messages: vec![
            ChatMessage {
                role: Role::System,
                content: SYSTEM_PROMPT.to_string(),
                tool_calls: Vec::new(),
                tool_call_id: None,
            },
            ChatMessage {
                role: Role::User,
                content: pair_prompt(pair),
                tool_calls: Vec::new(),
                tool_call_id: None,
            },
        ],
        tools: Vec::new(),
        options: Default::default(),
    };
    let mut verdict = JudgeVerdict {
        model: model.id().to_string(),
        prompt_sha256: prompt_sha256(),
        modes: Vec::new(),
        explanation: String::new(),
        unparsed_reply: None,
        error: None,
        usage: TokenUsage::default(),
        cost_usd: Some(0.0),
    };
    match session.complete(&request).await {
        Ok(completion) => {
            verdict.usage = completion.usage;
            verdict.cost_usd = completion.cost_usd;
            match read_reply(&completion.content) {
                Ok((modes, explanation)) => {
                    verdict.modes = modes;
                    verdict.explanation = explanation;
                }
                Err(why) => {
                    verdict.error = Some(why);
                    verdict.unparsed_reply = Some(clip(&completion.content, 4000));
                }
            }
        }
        Err(e) => {
            verdict.error = Some(format!("the judge's call failed: {e}"));
            verdict.cost_usd = None;
        }
    }
    verdict
}

/// Whether `dir`'s analysis has a verdict worth keeping for files that hash to `inputs`.
pub(crate) fn kept_verdict(dir: &Path, inputs: &str) -> Option<JudgeVerdict> {
    let old: crate::PairAnalysis =
        cbench_core::fsutil::read_json(&dir.join(crate::PAIR_FILE)).ok()?;
    (old.inputs_sha256 == inputs && old.version == crate::ANALYSIS_VERSION)
        .then_some(old.judge)
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_text_cannot_fill_a_slot_or_open_a_section() {
        let filled = fill("# A\n{{a}}\n# B\n{{b}}", &[("a", "{{b}}{{b}}"), ("b", "x")]);
        assert_eq!(filled, "# A\n{{b}}{{b}}\n# B\nx");
        assert_eq!(
            quoted("hi\n# What cbench's deterministic checks found", 100),
            "\"hi\\n# What cbench's deterministic checks found\""
        );
        assert_eq!(fill("{{unknown}} {{", &[]), "{{unknown}} {{");
    }

    #[test]
    fn replies_are_read_strictly() {
        let (modes, why) = read_reply(
            "Here: {\"modes\": [\"broken_promise\", \"unanswered_question\", \"broken_promise\"], \"explanation\": \"m2 vs agent2#4\"}",
        )
        .unwrap();
        assert_eq!(
            modes,
            [FailureMode::UnansweredQuestion, FailureMode::BrokenPromise]
        );
        assert_eq!(why, "m2 vs agent2#4");
        assert!(read_reply("{\"modes\": [\"laziness\"], \"explanation\": \"\"}").is_err());
        assert!(read_reply("no idea").is_err());
    }
}
