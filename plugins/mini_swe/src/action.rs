//! Turning a model reply into one bash action, and lifting `send_message`
//! heredocs out of a command.

use crate::cooperbench::agent::types::ToolCall;

/// Where an action came from; decides how its observation is returned.
#[derive(Debug, PartialEq)]
pub enum ActionSource {
    /// A tool call; the observation is a `tool` message with this id.
    ToolCall { id: String },
    /// A ```bash block in plain text; the observation is a user message.
    TextBlock,
}

/// One bash command the model asked for.
#[derive(Debug, PartialEq)]
pub struct Action {
    pub command: String,
    pub source: ActionSource,
}

/// A message lifted out of a command.
#[derive(Debug, PartialEq)]
pub struct Outgoing {
    pub to: String,
    pub body: String,
}

/// Accepts exactly one `bash` tool call, or (without tool calls) exactly one ```bash block.
pub fn parse_action(content: &str, tool_calls: &[ToolCall]) -> Result<Action, String> {
    match tool_calls {
        [] => {}
        [call] => {
            if call.name != "bash" {
                return Err(format!(
                    "unknown tool `{}`; the only tool is `bash`",
                    call.name
                ));
            }
            let args: serde_json::Value = serde_json::from_str(&call.arguments)
                .map_err(|e| format!("the bash tool's arguments are not JSON: {e}"))?;
            let command = args
                .get("command")
                .and_then(|c| c.as_str())
                .ok_or("the bash tool needs a string argument `command`")?;
            return Ok(Action {
                command: command.to_string(),
                source: ActionSource::ToolCall {
                    id: call.id.clone(),
                },
            });
        }
        many => {
            return Err(format!(
                "{} tool calls in one reply; make exactly one bash call per reply",
                many.len()
            ))
        }
    }
    let blocks = bash_blocks(content);
    match blocks.as_slice() {
        [one] => Ok(Action {
            command: one.clone(),
            source: ActionSource::TextBlock,
        }),
        [] => Err("no bash command found; reply with exactly one ```bash block".into()),
        many => Err(format!(
            "{} bash blocks found; reply with exactly one ```bash block",
            many.len()
        )),
    }
}

fn bash_blocks(content: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in content.lines() {
        let trimmed = line.trim();
        match current.as_mut() {
            None if trimmed == "```bash" || trimmed == "```sh" => current = Some(Vec::new()),
            None => {}
            Some(_) if trimmed == "```" => {
                if let Some(lines) = current.take() {
                    blocks.push(lines.join("\n"));
                }
            }
            Some(lines) => lines.push(line),
        }
    }
    blocks
}

/// Splits `send_message <id> <<'MSG' … MSG` heredocs out of `command`.
/// Returns the messages and the command with those lines removed.
pub fn split_messages(command: &str) -> (Vec<Outgoing>, String) {
    let mut outgoing = Vec::new();
    let mut kept = Vec::new();
    let mut lines = command.lines();
    while let Some(line) = lines.next() {
        let Some((to, delimiter)) = parse_send_line(line) else {
            kept.push(line);
            continue;
        };
        let mut body = Vec::new();
        for body_line in lines.by_ref() {
            if body_line.trim() == delimiter {
                break;
            }
            body.push(body_line);
        }
        outgoing.push(Outgoing {
            to,
            body: body.join("\n"),
        });
    }
    (outgoing, kept.join("\n"))
}

/// `send_message agent2 <<'MSG'` → ("agent2", "MSG"); quotes on the delimiter optional.
fn parse_send_line(line: &str) -> Option<(String, String)> {
    let rest = line.trim().strip_prefix("send_message")?;
    if !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let (to, heredoc) = rest.trim_start().split_once(char::is_whitespace)?;
    let delimiter = heredoc
        .trim()
        .strip_prefix("<<")?
        .trim_start_matches('-')
        .trim();
    let delimiter = delimiter.trim_matches(|c| c == '\'' || c == '"');
    if to.is_empty() || delimiter.is_empty() {
        return None;
    }
    Some((to.to_string(), delimiter.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, args: &str) -> ToolCall {
        ToolCall {
            id: "c1".into(),
            name: name.into(),
            arguments: args.into(),
        }
    }

    #[test]
    fn a_bash_tool_call_is_an_action() {
        let a = parse_action("", &[call("bash", r#"{"command":"ls -la"}"#)]).unwrap();
        assert_eq!(a.command, "ls -la");
        assert_eq!(a.source, ActionSource::ToolCall { id: "c1".into() });
    }

    #[test]
    fn one_text_block_is_an_action() {
        let a = parse_action("I will look.\n```bash\nls\npwd\n```\n", &[]).unwrap();
        assert_eq!(a.command, "ls\npwd");
        assert_eq!(a.source, ActionSource::TextBlock);
    }

    #[test]
    fn zero_or_two_blocks_are_format_errors() {
        assert!(parse_action("just words", &[]).is_err());
        assert!(parse_action("```bash\nls\n```\n```bash\npwd\n```", &[]).is_err());
        assert!(parse_action("", &[call("python", "{}")]).is_err());
        assert!(parse_action("", &[call("bash", "{}"), call("bash", "{}")]).is_err());
    }

    #[test]
    fn send_message_heredoc_is_lifted_and_the_rest_still_runs() {
        let cmd =
            "echo before\nsend_message agent2 <<'MSG'\nI edit a.py\nlines 1-9\nMSG\necho after";
        let (out, rest) = split_messages(cmd);
        assert_eq!(
            out,
            vec![Outgoing {
                to: "agent2".into(),
                body: "I edit a.py\nlines 1-9".into()
            }]
        );
        assert_eq!(rest, "echo before\necho after");
    }

    #[test]
    fn commands_mentioning_send_message_otherwise_are_left_alone() {
        let (out, rest) = split_messages("grep send_message_count x.py");
        assert!(out.is_empty());
        assert_eq!(rest, "grep send_message_count x.py");
    }
}
