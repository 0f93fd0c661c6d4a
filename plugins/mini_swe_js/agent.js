// mini_swe in JavaScript: the same mini-swe-agent style loop as plugins/mini_swe (Rust), built
// with the JavaScript kit (kits/js, QuickJS). Bash is the only action; each command runs in a
// fresh shell at the repository root; the agent submits by running a command whose first output
// line is the submit sentinel; coop agents talk with `send_message <id> <<'MSG' … MSG` inside a
// command, which the plugin lifts out and sends through the host. Keep it step for step
// identical to the Rust one: a test compares their actions and patches.

import {
  SUBMIT_SENTINEL, AgentError, LimitReached, agentInfo, agentRun, assistant, bash, bashTool,
  complete, event, outcome, receive, send, system, toolResult, user,
} from "./cbench-agent.js";

const VERSION = "0.3.0";
const OUTPUT_LIMIT_CHARS = 10000;
const OUTPUT_KEEP_CHARS = 5000;
const CONFIG_KEYS = ["step_limit", "use_tools", "command_timeout_ms", "temperature", "max_output_tokens", "stop"];

/** Rust's str::lines: split on \n, drop one trailing \r per line and a final empty line. */
function lines(text) {
  const parts = text.split("\n");
  if (parts.length && parts[parts.length - 1] === "") parts.pop();
  return parts.map((p) => (p.endsWith("\r") ? p.slice(0, -1) : p));
}

// --- prompts (same words as plugins/mini_swe/src/prompts.rs) --------------------------------

function systemPrompt(task) {
  let text =
    "You are a software engineer working in a git repository through a bash shell.\n" +
    "Each reply must contain exactly one bash command: either call the `bash` tool, or write " +
    "exactly one ```bash fenced block. Every command runs in a new shell at the repository " +
    "root, so `cd` and variables do not carry over; chain with `&&` when needed.\n" +
    "Commands have a time limit; avoid interactive programs and long-running servers.\n" +
    `When the work is complete, run \`echo ${SUBMIT_SENTINEL}\` as a command of its own. ` +
    "Your changes in the working tree are collected automatically; do not print a patch.";
  if (task.setting === "coop") {
    const me = task.agentId;
    const team = task.teammates.join(", ");
    text +=
      `\n\nYou are ${me}, one of a team. Your teammates (${team}) are implementing other ` +
      "features of the same repository in their own copies. Your changes and theirs will be " +
      "merged with git, so agree on who edits which files and lines, and avoid editing the " +
      "same lines.";
    if (task.messagingEnabled) {
      text +=
        "\nTo message a teammate, put this inside a bash command (it is delivered, not run):\n" +
        "send_message <teammate-id> <<'MSG'\nyour message\nMSG\n" +
        "Messages from teammates appear as `[Message from <id>]: ...`.";
    }
    if (task.gitEnabled) {
      text +=
        "\nA git remote named `team` is shared with your teammates. Publish your work with " +
        `\`git push team HEAD:${me}\` (only your own branch, \`${me}\`, accepts pushes). To read ` +
        "a teammate's work without touching your tree: `git fetch team`, then " +
        "`git log team/<teammate-id>`, `git diff HEAD team/<teammate-id>` or " +
        "`git show team/<teammate-id>:<file>`. Do not merge or cherry-pick their branch: " +
        "both sets of changes are merged at the end, and a copy of theirs in yours makes " +
        "that merge conflict.";
    }
  }
  return text;
}

const taskPrompt = (task) =>
  `Implement the following in this repository.\n\n${task.featureText.trim()}\n\nStart by exploring the code.`;

// A reply cut at the output-token cap: say so, rather than call it a format mistake.
const cutReply = (problem) =>
  `Your reply was cut off at the output-token limit before it was complete (${problem}). ` +
  `Reply again with a shorter answer: one bash command and little text. To finish, run ` +
  `\`echo ${SUBMIT_SENTINEL}\`.`;

const formatError = (problem) =>
  `Format error: ${problem}.\nReply with exactly one bash command (one \`bash\` tool call, or ` +
  `one \`\`\`bash block). To finish, run \`echo ${SUBMIT_SENTINEL}\`.`;

function observation(exitCode, timedOut, output) {
  if (timedOut) return `The command timed out and was killed.\n<output>\n${output}\n</output>`;
  return `<exit_code>${exitCode}</exit_code>\n<output>\n${output}\n</output>`;
}

// --- actions (same rules as plugins/mini_swe/src/action.rs) ---------------------------------

class FormatError extends Error {}

function bashBlocks(content) {
  const blocks = [];
  let current = null;
  for (const line of lines(content)) {
    const trimmed = line.trim();
    if (current === null) {
      if (trimmed === "```bash" || trimmed === "```sh") current = [];
    } else if (trimmed === "```") {
      blocks.push(current.join("\n"));
      current = null;
    } else {
      current.push(line);
    }
  }
  return blocks;
}

/** { command, callId } (callId null for a text block); throws FormatError. */
function parseAction(content, toolCalls) {
  if (toolCalls.length === 1) {
    const call = toolCalls[0];
    if (call.name !== "bash") throw new FormatError(`unknown tool \`${call.name}\`; the only tool is \`bash\``);
    let args;
    try {
      args = JSON.parse(call.arguments);
    } catch (e) {
      throw new FormatError(`the bash tool's arguments are not JSON: ${e.message}`);
    }
    const command = args && typeof args === "object" ? args.command : undefined;
    if (typeof command !== "string") throw new FormatError("the bash tool needs a string argument `command`");
    return { command, callId: call.id };
  }
  if (toolCalls.length > 1) {
    throw new FormatError(`${toolCalls.length} tool calls in one reply; make exactly one bash call per reply`);
  }
  const blocks = bashBlocks(content);
  if (blocks.length === 1) return { command: blocks[0], callId: null };
  if (blocks.length === 0) throw new FormatError("no bash command found; reply with exactly one ```bash block");
  throw new FormatError(`${blocks.length} bash blocks found; reply with exactly one \`\`\`bash block`);
}

function parseSendLine(line) {
  const stripped = line.trim();
  if (!stripped.startsWith("send_message")) return null;
  const rest = stripped.slice("send_message".length);
  if (!rest || !/^\s/.test(rest)) return null;
  const m = /^(\S+)\s+([\s\S]*)$/.exec(rest.trimStart());
  if (!m) return null;
  const to = m[1];
  const heredoc = m[2].trim();
  if (!heredoc.startsWith("<<")) return null;
  const delimiter = heredoc.slice(2).replace(/^-+/, "").trim().replace(/^['"]+|['"]+$/g, "");
  if (!to || !delimiter) return null;
  return { to, delimiter };
}

/** { outgoing: [{to, body}], command } with the message heredocs removed. */
function splitMessages(command) {
  const outgoing = [];
  const kept = [];
  const all = lines(command);
  for (let i = 0; i < all.length; i++) {
    const parsed = parseSendLine(all[i]);
    if (!parsed) {
      kept.push(all[i]);
      continue;
    }
    const body = [];
    for (i++; i < all.length; i++) {
      if (all[i].trim() === parsed.delimiter) break;
      body.push(all[i]);
    }
    outgoing.push({ to: parsed.to, body: body.join("\n") });
  }
  return { outgoing, command: kept.join("\n") };
}

function firstLineIsSentinel(output) {
  const first = lines(output.trimStart());
  return first.length > 0 && first[0].trim() === SUBMIT_SENTINEL;
}

/** Keeps the first and last 5,000 characters (code points, as Rust counts) of long output. */
function truncateMiddle(output) {
  const chars = Array.from(output);
  if (chars.length <= OUTPUT_LIMIT_CHARS) return output;
  const head = chars.slice(0, OUTPUT_KEEP_CHARS).join("");
  const tail = chars.slice(chars.length - OUTPUT_KEEP_CHARS).join("");
  const elided = chars.length - 2 * OUTPUT_KEEP_CHARS;
  return `${head}\n<output cut: ${elided} characters elided>\n${tail}`;
}

// --- the loop --------------------------------------------------------------------------------

class MiniSwe {
  constructor(task, config) {
    this.stepLimit = config.step_limit ?? task.limits.maxSteps;
    this.tools = config.use_tools ?? true ? [bashTool()] : [];
    this.commandTimeoutMs = config.command_timeout_ms ?? 0;
    this.options = {
      maxOutputTokens: config.max_output_tokens ?? null,
      temperature: config.temperature ?? null,
      stop: config.stop ?? [],
    };
    this.messages = [system(systemPrompt(task)), user(taskPrompt(task))];
  }

  run() {
    let steps = 0;
    while (steps < this.stepLimit) {
      for (const m of receive()) this.messages.push(user(`[Message from ${m.sender}]: ${m.content}`));
      steps += 1;
      let completion;
      try {
        completion = complete(this.messages, this.tools, this.options);
      } catch (e) {
        if (e instanceof LimitReached) return outcome("limits-exceeded", steps, `stopped by the host: ${e.message}`);
        throw e;
      }
      this.messages.push(assistant(completion.content, completion.toolCalls));
      let action;
      try {
        action = parseAction(completion.content, completion.toolCalls);
      } catch (e) {
        if (!(e instanceof FormatError)) throw e;
        if (completion.truncated) {
          event("truncated-reply", e.message);
          this.replyFormatError(completion.toolCalls, cutReply(e.message));
        } else {
          event("format-error", e.message);
          this.replyFormatError(completion.toolCalls, formatError(e.message));
        }
        continue;
      }
      const summary = this.execute(action);
      if (summary !== null) return outcome("submitted", steps, summary);
    }
    return outcome("step-limit-reached", steps, `step limit of ${this.stepLimit} reached`);
  }

  replyFormatError(toolCalls, text) {
    if (toolCalls.length === 0) this.messages.push(user(text));
    for (const call of toolCalls) this.messages.push(toolResult(call.id, text));
  }

  execute(action) {
    const { outgoing, command } = splitMessages(action.command);
    const notes = outgoing.map(({ to, body }) => {
      const failure = send(to, body);
      return failure === null ? `Message sent to ${to}.` : `Message to ${to} NOT sent: ${failure}`;
    });
    let text = notes.join("\n");
    if (command.trim()) {
      const output = bash(command, this.commandTimeoutMs);
      if (output.exitCode === 0 && firstLineIsSentinel(output.output)) {
        return `submitted after running: ${command.trim()}`;
      }
      if (text) text += "\n";
      text += observation(output.exitCode, output.timedOut, truncateMiddle(output.output));
    }
    if (!text) text = "(nothing to run)";
    this.messages.push(action.callId !== null ? toolResult(action.callId, text) : user(text));
    return null;
  }
}

export const agent = {
  info() {
    return agentInfo("mini_swe_js", VERSION, ["messaging", "git"]);
  },
  run: agentRun((task) => {
    let config = {};
    if (task.agentConfig.trim()) {
      try {
        config = JSON.parse(task.agentConfig);
      } catch (e) {
        throw new AgentError(`mini_swe: invalid agent config: ${e.message}`);
      }
      if (!config || typeof config !== "object" || Array.isArray(config)) {
        throw new AgentError("mini_swe: invalid agent config: expected a JSON object");
      }
      const unknown = Object.keys(config).filter((k) => !CONFIG_KEYS.includes(k)).sort();
      if (unknown.length) throw new AgentError(`mini_swe: invalid agent config: unknown field \`${unknown[0]}\``);
    }
    return new MiniSwe(task, config).run();
  }),
};
