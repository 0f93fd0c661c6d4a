// cbench agent kit for JavaScript (componentize-qjs / QuickJS): a thin layer over the host's
// imports. A plugin module (agent.js) exports `agent = { info(), run(task) }`; this module gives
// it plain calls and the error conventions the host expects:
//
// * complete(...) asks the run's model. When the host refuses because a budget is spent it
//   throws LimitReached: let it propagate — agentRun() turns it into an outcome with status
//   "limits-exceeded", which is how a well-behaved agent stops.
// * bash(...), readFile, writeFile act in the agent's sandbox; a sandbox failure throws AgentError.
// * send/broadcast/receive/wait talk to teammates; send returns null when delivered, else the
//   reason as text (a failed send is information for the model, not a crash).
// * event(kind, detail) records a structured event in the trajectory.
// * agentRun(fn) wraps run: AgentError becomes the plugin's err (the host records the message);
//   any other exception prints its stack to stderr (kept in the agent's plugin_output.log) and
//   becomes err("<Name>: <message>"). Under QuickJS a `run` must report failure by throwing a
//   string; agentRun does that for you.
//
// Records use camelCase keys, enums are their WIT case names ("coop", "submitted"), option is
// value-or-null, u64 is a number.

import * as llm from "cooperbench:agent/llm@0.3.0";
import * as sandbox from "cooperbench:agent/sandbox@0.3.0";
import * as messaging from "cooperbench:agent/messaging@0.3.0";
import * as trajectory from "cooperbench:agent/trajectory@0.3.0";
// The team setting's task list and requests, used as generated: team.tasks(), team.claim(id), …
import * as team from "cooperbench:agent/team@0.3.0";
export { team };

/** The command output line mini-swe-style agents submit with (also what the oracle runs). */
export const SUBMIT_SENTINEL = "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT";

/** A failure the agent reports as its err (the host records the message). */
export class AgentError extends Error {}

/** The host refused an LLM call: a step, cost, token or time budget is spent. */
export class LimitReached extends Error {}

// The imports are namespaces or default objects depending on the toolchain; take either.
const api = (ns) => (ns && ns.default) || ns;

/** The value info() returns; capabilities are "messaging" and/or "git". */
export function agentInfo(name, version, capabilities = []) {
  for (const c of capabilities) {
    if (c !== "messaging" && c !== "git") {
      throw new Error(`unknown capability ${c}; use "messaging" or "git"`);
    }
  }
  return { name, version, capabilities: [...capabilities] };
}

/** An outcome; status is "submitted", "step-limit-reached" or "limits-exceeded". */
export function outcome(status, steps, summary) {
  return { status, steps, summary };
}

function errorText(e) {
  if (typeof e === "string") return e;
  if (e && typeof e === "object" && "tag" in e) {
    return e.val === undefined ? e.tag : `${e.tag}: ${e.val}`;
  }
  return String(e && e.message !== undefined ? e.message : e);
}

/** Wraps a run function with the kit's error conventions (see above). */
export function agentRun(run) {
  return (task) => {
    try {
      return run(task);
    } catch (e) {
      if (e instanceof LimitReached) {
        return outcome("limits-exceeded", 0, `stopped by the host: ${e.message}`);
      }
      if (e instanceof AgentError) throw e.message;
      const name = (e && e.name) || typeof e;
      // componentize-qjs has no `console` in some builds: the error text still carries it.
      if (typeof console !== "undefined" && console.error) {
        console.error(`${name}: ${errorText(e)}\n${(e && e.stack) || ""}`);
      }
      throw `${name}: ${errorText(e)}`;
    }
  };
}

// --- chat ------------------------------------------------------------------------------------

const message = (role, content, toolCalls = [], toolCallId = null) => ({
  role,
  content,
  toolCalls: [...toolCalls],
  toolCallId,
});

/** A system message. */
export const system = (content) => message("system", content);
/** A user message. */
export const user = (content) => message("user", content);
/** An assistant turn, as the model replied. */
export const assistant = (content, toolCalls = []) => message("assistant", content, toolCalls);
/** The answer to the tool call `callId`. */
export const toolResult = (callId, content) => message("tool", content, [], callId);

/** The usual single `bash` tool, taking {"command": "..."}. */
export function bashTool(description = "Run one bash command in a fresh shell at the repository root.") {
  const schema = {
    type: "object",
    properties: { command: { type: "string", description: "The bash command to run." } },
    required: ["command"],
  };
  return { name: "bash", description, parametersSchema: JSON.stringify(schema) };
}

/**
 * Asks the run's model. Throws LimitReached when a budget is spent, AgentError otherwise.
 * options: { maxOutputTokens, temperature, stop }.
 */
export function complete(messages, tools = [], options = {}) {
  const request = {
    messages: [...messages],
    tools: [...tools],
    options: {
      maxOutputTokens: options.maxOutputTokens ?? null,
      temperature: options.temperature ?? null,
      stop: options.stop ?? [],
    },
  };
  try {
    return api(llm).complete(request);
  } catch (e) {
    if (e && e.tag === "limit-exceeded") throw new LimitReached(e.val);
    if (e && e.tag === "provider") throw new AgentError(`LLM provider failed: ${e.val}`);
    if (e && e.tag === "invalid-request") throw new AgentError(`LLM request rejected: ${e.val}`);
    throw e;
  }
}

// --- sandbox ---------------------------------------------------------------------------------

function sandboxCall(f) {
  try {
    return f();
  } catch (e) {
    if (e && (e.tag === "failed" || e.tag === "invalid-argument")) {
      throw new AgentError(`sandbox failed: ${e.val}`);
    }
    throw e;
  }
}

/** Runs `command` in a fresh bash at the repository root (or opts.workdir); 0 = default timeout. */
export function bash(command, timeoutMs = 0, opts = {}) {
  const env = Object.entries(opts.env ?? {});
  return sandboxCall(() =>
    api(sandbox).exec({ command, timeoutMs, workdir: opts.workdir ?? null, env }),
  );
}

/** A file's bytes (Uint8Array), path relative to the repository root. */
export const readFile = (path) => sandboxCall(() => api(sandbox).readFile(path));

/** Writes a file (parents created), path relative to the repository root. */
export const writeFile = (path, contents) => sandboxCall(() => api(sandbox).writeFile(path, contents));

// --- messaging -------------------------------------------------------------------------------

function describeMessagingError(e) {
  if (e && e.tag === "unknown-recipient") return `no teammate named ${e.val}`;
  if (e && e.tag === "peer-finished") return `${e.val} has already finished`;
  if (e && e.tag === "unavailable") return `the message bus is unreachable: ${e.val}`;
  return "messaging is disabled in this run";
}

/** Sends a message; null when delivered, else why it was not. */
export function send(to, content) {
  try {
    api(messaging).send(to, content);
    return null;
  } catch (e) {
    return describeMessagingError(e);
  }
}

/** Sends to every teammate still working: { reached, error }. */
export function broadcast(content) {
  try {
    return { reached: api(messaging).broadcast(content), error: null };
  } catch (e) {
    return { reached: [], error: describeMessagingError(e) };
  }
}

/** Every message waiting in the inbox (never blocks). */
export const receive = () => api(messaging).receive();

/** Waits up to timeoutMs for at least one message. */
export const wait = (timeoutMs) => api(messaging).wait(timeoutMs);

/** Records a structured event (e.g. "format-error") in the trajectory. */
export const event = (kind, detail) => api(trajectory).event(kind, detail);
