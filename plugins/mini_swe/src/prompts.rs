//! Prompt texts, in our own words.

use crate::cooperbench::agent::types::{Setting, Task, TeamRole, ToolDefinition};
use crate::SUBMIT_SENTINEL;

/// The single tool offered to tool-calling models.
pub fn bash_tool() -> ToolDefinition {
    ToolDefinition {
        name: "bash".into(),
        description: "Run one bash command in a fresh shell at the repository root.".into(),
        parameters_schema: r#"{"type":"object","properties":{"command":{"type":"string","description":"The bash command to run."}},"required":["command"]}"#.into(),
    }
}

pub fn system_prompt(task: &Task) -> String {
    let mut text = format!(
        "You are a software engineer working in a git repository through a bash shell.\n\
         Each reply must contain exactly one bash command: either call the `bash` tool, or write \
         exactly one ```bash fenced block. Every command runs in a new shell at the repository \
         root, so `cd` and variables do not carry over; chain with `&&` when needed.\n\
         Commands have a time limit; avoid interactive programs and long-running servers.\n\
         When the work is complete, run `echo {SUBMIT_SENTINEL}` as a command of its own. \
         Your changes in the working tree are collected automatically; do not print a patch."
    );
    if task.setting != Setting::Solo {
        let team = task.teammates.join(", ");
        text.push_str(&format!(
            "\n\nYou are {me}, one of a team. Your teammates ({team}) are implementing other \
             features of the same repository in their own copies. Your changes and theirs will be \
             merged with git, so agree on who edits which files and lines, and avoid editing the \
             same lines.",
            me = task.agent_id
        ));
        if task.messaging_enabled {
            text.push_str(
                "\nTo message a teammate, put this inside a bash command (it is delivered, not run):\n\
                 send_message <teammate-id> <<'MSG'\nyour message\nMSG\n\
                 Messages from teammates appear as `[Message from <id>]: ...`.",
            );
        }
        if task.git_enabled {
            text.push_str(&format!(
                "\nA git remote named `team` is shared with your teammates. Publish your work with \
                 `git push team HEAD:{me}` (only your own branch, `{me}`, accepts pushes). To read \
                 a teammate's work without touching your tree: `git fetch team`, then \
                 `git log team/<teammate-id>`, `git diff HEAD team/<teammate-id>` or \
                 `git show team/<teammate-id>:<file>`. Do not merge or cherry-pick their branch: \
                 both sets of changes are merged at the end, and a copy of theirs in yours makes \
                 that merge conflict.",
                me = task.agent_id
            ));
        }
    }
    if let Some(team) = &task.team {
        text.push_str(&team_section(task, team));
    }
    text
}

/// The team setting: the role, what the lead and the members are expected to do, and the
/// team commands the user left on.
fn team_section(task: &Task, team: &crate::cooperbench::agent::types::TeamInfo) -> String {
    let me = &task.agent_id;
    let mut text = match team.role {
        TeamRole::Lead => format!(
            "\n\nYou are {me}, the team lead. Plan the work so that no two agents edit the same \
             lines, tell each member what to do, follow their progress and unblock them, and \
             implement your own feature. Everyone's changes are merged at the end."
        ),
        TeamRole::Member if team.task_list => format!(
            "\n\nYou are {me}, a team member; the lead is {lead}. Look at the task list for the \
             task meant for you, claim it, keep its status current (blocked with a note when \
             stuck, done when finished) and follow the lead's plan.",
            lead = team.lead
        ),
        TeamRole::Member => format!(
            "\n\nYou are {me}, a team member; the lead is {lead}. Follow the lead's plan.",
            lead = team.lead
        ),
    };
    if let Some(dir) = &team.scratchpad {
        text.push_str(&format!(
            "\nA directory shared by the whole team is at {dir} (also $CBENCH_SCRATCHPAD in every \
             command): leave plans, interface notes and partial diffs there for the others. It is \
             not graded; only your changes in the repository are."
        ));
    }
    if team.task_list || team.protocol {
        text.push('\n');
        text.push_str(crate::team::USAGE);
        if !team.task_list {
            text.push_str("\n(The task list is switched off in this run: coop-task-* fail.)");
        }
        if !team.protocol {
            text.push_str(
                "\n(Typed requests are switched off in this run: coop-request, coop-respond, \
                 coop-pending and coop-await fail.)",
            );
        }
    }
    text
}

pub fn task_prompt(task: &Task) -> String {
    format!(
        "Implement the following in this repository.\n\n{}\n\nStart by exploring the code.",
        task.feature_text.trim()
    )
}

pub fn format_error(problem: &str) -> String {
    format!(
        "Format error: {problem}.\nReply with exactly one bash command (one `bash` tool call, or \
         one ```bash block). To finish, run `echo {SUBMIT_SENTINEL}`."
    )
}

/// A reply cut at the output-token cap: the model should say less at once, not change format.
pub fn cut_reply(problem: &str) -> String {
    format!(
        "Your reply was cut off at the output-token limit before it was complete ({problem}). \
         Reply again with a shorter answer: one bash command and little text. To finish, run \
         `echo {SUBMIT_SENTINEL}`."
    )
}

pub fn observation(exit_code: i32, timed_out: bool, output: &str) -> String {
    if timed_out {
        format!("The command timed out and was killed.\n<output>\n{output}\n</output>")
    } else {
        format!("<exit_code>{exit_code}</exit_code>\n<output>\n{output}\n</output>")
    }
}
