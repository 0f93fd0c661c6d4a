"""mini_swe in Python: the same mini-swe-agent style loop as plugins/mini_swe (Rust), built with
the Python kit (kits/python). Bash is the only action; each command runs in a fresh shell at the
repository root; the agent submits by running a command whose first output line is the submit
sentinel; coop agents talk with `send_message <id> <<'MSG' … MSG` inside a command, which the
plugin lifts out and sends through the host. Keep it step for step identical to the Rust one:
a test compares their actions and patches."""

import json

from wit_world import exports
from cbench_agent import (
    SUBMIT_SENTINEL, LimitReached, AgentError, agent_info, agent_run, assistant, bash,
    bash_tool, complete, event, outcome, receive, send, tool_result, types, user, system,
)

VERSION = "0.3.0"
OUTPUT_LIMIT_CHARS = 10_000
OUTPUT_KEEP_CHARS = 5_000
CONFIG_KEYS = {"step_limit", "use_tools", "command_timeout_ms", "temperature", "max_output_tokens", "stop"}


def lines(text):
    """Rust's str::lines: split on \\n, drop one trailing \\r per line and a final empty line."""
    parts = text.split("\n")
    if parts and parts[-1] == "":
        parts.pop()
    return [p[:-1] if p.endswith("\r") else p for p in parts]


# --- prompts (same words as plugins/mini_swe/src/prompts.rs) --------------------------------

def system_prompt(task):
    text = (
        "You are a software engineer working in a git repository through a bash shell.\n"
        "Each reply must contain exactly one bash command: either call the `bash` tool, or write "
        "exactly one ```bash fenced block. Every command runs in a new shell at the repository "
        "root, so `cd` and variables do not carry over; chain with `&&` when needed.\n"
        "Commands have a time limit; avoid interactive programs and long-running servers.\n"
        f"When the work is complete, run `echo {SUBMIT_SENTINEL}` as a command of its own. "
        "Your changes in the working tree are collected automatically; do not print a patch."
    )
    if task.setting == types.Setting.COOP:
        me = task.agent_id
        team = ", ".join(task.teammates)
        text += (
            f"\n\nYou are {me}, one of a team. Your teammates ({team}) are implementing other "
            "features of the same repository in their own copies. Your changes and theirs will be "
            "merged with git, so agree on who edits which files and lines, and avoid editing the "
            "same lines."
        )
        if task.messaging_enabled:
            text += (
                "\nTo message a teammate, put this inside a bash command (it is delivered, not run):\n"
                "send_message <teammate-id> <<'MSG'\nyour message\nMSG\n"
                "Messages from teammates appear as `[Message from <id>]: ...`."
            )
        if task.git_enabled:
            text += (
                "\nA git remote named `team` is shared with your teammates. Publish your work with "
                f"`git push team HEAD:{me}` (only your own branch, `{me}`, accepts pushes). To read "
                "a teammate's work without touching your tree: `git fetch team`, then "
                "`git log team/<teammate-id>`, `git diff HEAD team/<teammate-id>` or "
                "`git show team/<teammate-id>:<file>`. Do not merge or cherry-pick their branch: "
                "both sets of changes are merged at the end, and a copy of theirs in yours makes "
                "that merge conflict."
            )
    return text


def task_prompt(task):
    return (
        "Implement the following in this repository.\n\n"
        f"{task.feature_text.strip()}\n\nStart by exploring the code."
    )


def cut_reply(problem):
    """A reply cut at the output-token cap: say so, rather than call it a format mistake."""
    return (
        f"Your reply was cut off at the output-token limit before it was complete ({problem}). "
        f"Reply again with a shorter answer: one bash command and little text. To finish, run "
        f"`echo {SUBMIT_SENTINEL}`."
    )


def format_error(problem):
    return (
        f"Format error: {problem}.\nReply with exactly one bash command (one `bash` tool call, or "
        f"one ```bash block). To finish, run `echo {SUBMIT_SENTINEL}`."
    )


def observation(exit_code, timed_out, output):
    if timed_out:
        return f"The command timed out and was killed.\n<output>\n{output}\n</output>"
    return f"<exit_code>{exit_code}</exit_code>\n<output>\n{output}\n</output>"


# --- actions (same rules as plugins/mini_swe/src/action.rs) ---------------------------------

class FormatError(Exception):
    pass


def bash_blocks(content):
    blocks, current = [], None
    for line in lines(content):
        trimmed = line.strip()
        if current is None:
            if trimmed in ("```bash", "```sh"):
                current = []
        elif trimmed == "```":
            blocks.append("\n".join(current))
            current = None
        else:
            current.append(line)
    return blocks


def parse_action(content, tool_calls):
    """(command, tool call id or None); raises FormatError."""
    if len(tool_calls) == 1:
        call = tool_calls[0]
        if call.name != "bash":
            raise FormatError(f"unknown tool `{call.name}`; the only tool is `bash`")
        try:
            args = json.loads(call.arguments)
        except ValueError as e:
            raise FormatError(f"the bash tool's arguments are not JSON: {e}") from None
        command = args.get("command") if isinstance(args, dict) else None
        if not isinstance(command, str):
            raise FormatError("the bash tool needs a string argument `command`")
        return command, call.id
    if len(tool_calls) > 1:
        raise FormatError(
            f"{len(tool_calls)} tool calls in one reply; make exactly one bash call per reply"
        )
    blocks = bash_blocks(content)
    if len(blocks) == 1:
        return blocks[0], None
    if not blocks:
        raise FormatError("no bash command found; reply with exactly one ```bash block")
    raise FormatError(f"{len(blocks)} bash blocks found; reply with exactly one ```bash block")


def parse_send_line(line):
    stripped = line.strip()
    if not stripped.startswith("send_message"):
        return None
    rest = stripped[len("send_message"):]
    if not rest or not rest[0].isspace():
        return None
    parts = rest.lstrip().split(None, 1)
    if len(parts) != 2:
        return None
    to, heredoc = parts
    heredoc = heredoc.strip()
    if not heredoc.startswith("<<"):
        return None
    delimiter = heredoc[2:].lstrip("-").strip().strip("'\"")
    if not to or not delimiter:
        return None
    return to, delimiter


def split_messages(command):
    """([(to, body)], the command with the message heredocs removed)."""
    outgoing, kept = [], []
    it = iter(lines(command))
    for line in it:
        parsed = parse_send_line(line)
        if parsed is None:
            kept.append(line)
            continue
        to, delimiter = parsed
        body = []
        for body_line in it:
            if body_line.strip() == delimiter:
                break
            body.append(body_line)
        outgoing.append((to, "\n".join(body)))
    return outgoing, "\n".join(kept)


def first_line_is_sentinel(output):
    first = lines(output.lstrip())
    return bool(first) and first[0].strip() == SUBMIT_SENTINEL


def truncate_middle(output):
    total = len(output)
    if total <= OUTPUT_LIMIT_CHARS:
        return output
    head = output[:OUTPUT_KEEP_CHARS]
    tail = output[total - OUTPUT_KEEP_CHARS:]
    elided = total - 2 * OUTPUT_KEEP_CHARS
    return f"{head}\n<output cut: {elided} characters elided>\n{tail}"


# --- the loop --------------------------------------------------------------------------------

class MiniSwe:
    def __init__(self, task, config):
        step_limit = config.get("step_limit")
        self.step_limit = task.limits.max_steps if step_limit is None else step_limit
        self.tools = [bash_tool()] if config.get("use_tools", True) else []
        self.command_timeout_ms = config.get("command_timeout_ms", 0)
        self.options = {
            "max_output_tokens": config.get("max_output_tokens"),
            "temperature": config.get("temperature"),
            "stop": config.get("stop") or [],
        }
        self.messages = [system(system_prompt(task)), user(task_prompt(task))]

    def run(self):
        steps = 0
        while steps < self.step_limit:
            for m in receive():
                self.messages.append(user(f"[Message from {m.sender}]: {m.content}"))
            steps += 1
            try:
                completion = complete(self.messages, self.tools, **self.options)
            except LimitReached as why:
                return outcome("limits-exceeded", steps, f"stopped by the host: {why}")
            self.messages.append(assistant(completion.content, completion.tool_calls))
            try:
                command, call_id = parse_action(completion.content, completion.tool_calls)
            except FormatError as problem:
                if completion.truncated:
                    event("truncated-reply", str(problem))
                    self.reply_format_error(completion.tool_calls, cut_reply(str(problem)))
                else:
                    event("format-error", str(problem))
                    self.reply_format_error(completion.tool_calls, format_error(str(problem)))
                continue
            summary = self.execute(command, call_id)
            if summary is not None:
                return outcome("submitted", steps, summary)
        return outcome("step-limit-reached", steps, f"step limit of {self.step_limit} reached")

    def reply_format_error(self, tool_calls, text):
        if not tool_calls:
            self.messages.append(user(text))
        for call in tool_calls:
            self.messages.append(tool_result(call.id, text))

    def execute(self, action_command, call_id):
        outgoing, command = split_messages(action_command)
        notes = []
        for to, body in outgoing:
            failure = send(to, body)
            notes.append(f"Message sent to {to}." if failure is None else f"Message to {to} NOT sent: {failure}")
        text = "\n".join(notes)
        if command.strip():
            output = bash(command, self.command_timeout_ms)
            if output.exit_code == 0 and first_line_is_sentinel(output.output):
                return f"submitted after running: {command.strip()}"
            if text:
                text += "\n"
            text += observation(output.exit_code, output.timed_out, truncate_middle(output.output))
        if not text:
            text = "(nothing to run)"
        if call_id is not None:
            self.messages.append(tool_result(call_id, text))
        else:
            self.messages.append(user(text))
        return None


class Agent(exports.Agent):
    def info(self):
        return agent_info("mini_swe_py", VERSION, ["messaging", "git"])

    @agent_run
    def run(self, task):
        config = {}
        if task.agent_config.strip():
            try:
                config = json.loads(task.agent_config)
            except ValueError as e:
                raise AgentError(f"mini_swe: invalid agent config: {e}") from None
            if not isinstance(config, dict):
                raise AgentError("mini_swe: invalid agent config: expected a JSON object")
            unknown = sorted(set(config) - CONFIG_KEYS)
            if unknown:
                raise AgentError(f"mini_swe: invalid agent config: unknown field `{unknown[0]}`")
        return MiniSwe(task, config).run()
