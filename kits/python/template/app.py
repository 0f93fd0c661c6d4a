"""__NAME__: a cbench agent plugin in Python.

Build:  ./build.sh            (writes __NAME__.wasm; installs the pinned componentize-py once)
Run:    cbench run --agent __NAME__.wasm -m oracle
Check:  cbench plugin inspect __NAME__.wasm

The kit (cbench_agent.py) wraps the host's imports; see its docstring for the error conventions.
"""

import json

from wit_world import exports
from cbench_agent import (
    SUBMIT_SENTINEL, agent_info, agent_run, assistant, bash, bash_tool, complete, outcome,
    receive, system, tool_result, user,
)

SYSTEM_PROMPT = (
    "You are a software engineer working in a git repository. Call the `bash` tool with one "
    f"command per reply. When the work is done, run `echo {SUBMIT_SENTINEL}`."
)


class Agent(exports.Agent):
    def info(self):
        # Capabilities: "messaging" to talk to teammates, "git" for the shared `team` remote.
        return agent_info("__NAME__", "0.1.0", ["messaging"])

    @agent_run
    def run(self, task):
        messages = [system(SYSTEM_PROMPT), user(task.feature_text)]
        for step in range(1, task.limits.max_steps + 1):
            for m in receive():
                messages.append(user(f"[Message from {m.sender}]: {m.content}"))
            reply = complete(messages, [bash_tool()])
            messages.append(assistant(reply.content, reply.tool_calls))
            if not reply.tool_calls:
                messages.append(user("Call the bash tool with one command."))
                continue
            for call in reply.tool_calls:
                command = json.loads(call.arguments).get("command", "")
                out = bash(command)
                if out.exit_code == 0 and out.output.strip().startswith(SUBMIT_SENTINEL):
                    return outcome("submitted", step, "submitted")
                messages.append(tool_result(call.id, f"exit code {out.exit_code}\n{out.output}"))
        return outcome("step-limit-reached", task.limits.max_steps, "out of steps")
