// __NAME__: a cbench agent plugin in JavaScript (QuickJS).
//
// Build:  ./build.sh            (writes __NAME__.wasm; installs the pinned componentize-qjs once)
// Run:    cbench run --agent __NAME__.wasm -m oracle
// Check:  cbench plugin inspect __NAME__.wasm
//
// The kit (cbench-agent.js) wraps the host's imports; see its header for the error conventions.

import {
  SUBMIT_SENTINEL, agentInfo, agentRun, assistant, bash, bashTool, complete, outcome, receive,
  system, toolResult, user,
} from "./cbench-agent.js";

const SYSTEM_PROMPT =
  "You are a software engineer working in a git repository. Call the `bash` tool with one " +
  `command per reply. When the work is done, run \`echo ${SUBMIT_SENTINEL}\`.`;

export const agent = {
  info() {
    // Capabilities: "messaging" to talk to teammates, "git" for the shared `team` remote.
    return agentInfo("__NAME__", "0.1.0", ["messaging"]);
  },
  run: agentRun((task) => {
    const messages = [system(SYSTEM_PROMPT), user(task.featureText)];
    for (let step = 1; step <= task.limits.maxSteps; step++) {
      for (const m of receive()) messages.push(user(`[Message from ${m.sender}]: ${m.content}`));
      const reply = complete(messages, [bashTool()]);
      messages.push(assistant(reply.content, reply.toolCalls));
      if (reply.toolCalls.length === 0) {
        messages.push(user("Call the bash tool with one command."));
        continue;
      }
      for (const call of reply.toolCalls) {
        const command = JSON.parse(call.arguments).command ?? "";
        const out = bash(command);
        if (out.exitCode === 0 && out.output.trim().startsWith(SUBMIT_SENTINEL)) {
          return outcome("submitted", step, "submitted");
        }
        messages.push(toolResult(call.id, `exit code ${out.exitCode}\n${out.output}`));
      }
    }
    return outcome("step-limit-reached", task.limits.maxSteps, "out of steps");
  }),
};
