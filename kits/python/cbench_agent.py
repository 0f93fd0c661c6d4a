"""cbench agent kit for Python (componentize-py): a thin layer over the host's imports.

A plugin module (``app.py``) defines ``class Agent`` with ``info()`` and ``run(task)``; this
module gives it plain Python calls and the error conventions the host expects:

* ``complete(...)`` asks the run's model. When the host refuses because a budget is spent it
  raises ``LimitReached``: let it propagate — ``@agent_run`` turns it into an outcome with status
  ``limits-exceeded``, which is how a well-behaved agent stops.
* ``bash(...)``, ``read_file``, ``write_file`` act in the agent's sandbox; a sandbox failure
  raises ``AgentError``.
* ``send``/``broadcast``/``receive``/``wait`` talk to teammates; ``send`` returns ``None`` when
  delivered, else the reason as text (a failed send is information for the model, not a crash).
* ``event(kind, detail)`` records a structured event in the trajectory.
* ``@agent_run`` wraps ``run``: ``AgentError`` becomes the plugin's ``err`` (the host records the
  message), any other exception prints its traceback to stderr (kept in the agent's
  ``plugin_output.log``) and becomes ``err("<Type>: <message>")`` instead of a trap.
"""

import functools
import json
import sys
import traceback
from typing import Iterable, List, Optional, Sequence, Tuple

from componentize_py_types import Err
# `team`: the team setting's task list and requests (WIT 0.3.0), used as generated:
# team.tasks(), team.claim(id), team.update(id, status, note), team.request(to, kind, body), …
from wit_world.imports import llm, messaging, sandbox, team, trajectory, types

__all__ = [
    "AgentError", "LimitReached", "SUBMIT_SENTINEL", "agent_info", "agent_run", "assistant",
    "bash", "bash_tool", "broadcast", "complete", "event", "outcome", "read_file", "receive",
    "send", "system", "team", "tool_result", "types", "user", "wait", "write_file",
]

#: The command output line mini-swe-style agents submit with (also what the oracle model runs).
SUBMIT_SENTINEL = "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"


class AgentError(Exception):
    """A failure the agent reports as its `err` (the host records the message)."""


class LimitReached(Exception):
    """The host refused an LLM call: a step, cost, token or time budget is spent."""


# --- identity -------------------------------------------------------------------------------

_CAPABILITIES = {"messaging": types.Capability.MESSAGING, "git": types.Capability.GIT}


def agent_info(name: str, version: str, capabilities: Iterable[str] = ()) -> types.AgentInfo:
    """The value `info()` returns; capabilities are "messaging" and/or "git"."""
    try:
        caps = [_CAPABILITIES[c] for c in capabilities]
    except KeyError as e:
        raise ValueError(f"unknown capability {e}; use 'messaging' or 'git'") from None
    return types.AgentInfo(name=name, version=version, capabilities=caps)


def outcome(status: str, steps: int, summary: str) -> types.Outcome:
    """An outcome; status is "submitted", "step-limit-reached" or "limits-exceeded"."""
    statuses = {
        "submitted": types.ExitStatus.SUBMITTED,
        "step-limit-reached": types.ExitStatus.STEP_LIMIT_REACHED,
        "limits-exceeded": types.ExitStatus.LIMITS_EXCEEDED,
    }
    return types.Outcome(status=statuses[status], steps=steps, summary=summary)


def agent_run(run):
    """Decorates `Agent.run` with the kit's error conventions (see the module docs)."""

    @functools.wraps(run)
    def wrapper(self, task):
        try:
            return run(self, task)
        except Err:
            raise
        except LimitReached as e:
            return outcome("limits-exceeded", 0, f"stopped by the host: {e}")
        except AgentError as e:
            raise Err(str(e))
        except Exception as e:  # noqa: BLE001 - any bug becomes a readable err, not a trap
            traceback.print_exc(file=sys.stderr)
            sys.stderr.flush()
            raise Err(f"{type(e).__name__}: {e}")

    return wrapper


# --- chat ------------------------------------------------------------------------------------

def _message(role, content, tool_calls=None, tool_call_id=None) -> types.ChatMessage:
    return types.ChatMessage(
        role=role, content=content, tool_calls=list(tool_calls or []), tool_call_id=tool_call_id
    )


def system(content: str) -> types.ChatMessage:
    """A system message."""
    return _message(types.Role.SYSTEM, content)


def user(content: str) -> types.ChatMessage:
    """A user message."""
    return _message(types.Role.USER, content)


def assistant(content: str, tool_calls: Sequence[types.ToolCall] = ()) -> types.ChatMessage:
    """An assistant turn, as the model replied."""
    return _message(types.Role.ASSISTANT, content, tool_calls)


def tool_result(call_id: str, content: str) -> types.ChatMessage:
    """The answer to the tool call `call_id`."""
    return _message(types.Role.TOOL, content, tool_call_id=call_id)


def bash_tool(description: str = "Run one bash command in a fresh shell at the repository root.") -> types.ToolDefinition:
    """The usual single `bash` tool, taking `{"command": "..."}`."""
    schema = {
        "type": "object",
        "properties": {"command": {"type": "string", "description": "The bash command to run."}},
        "required": ["command"],
    }
    return types.ToolDefinition(
        name="bash", description=description, parameters_schema=json.dumps(schema, separators=(",", ":"))
    )


def complete(
    messages: Sequence[types.ChatMessage],
    tools: Sequence[types.ToolDefinition] = (),
    *,
    max_output_tokens: Optional[int] = None,
    temperature: Optional[float] = None,
    stop: Sequence[str] = (),
) -> llm.Completion:
    """Asks the run's model. Raises LimitReached when a budget is spent, AgentError otherwise."""
    request = llm.CompletionRequest(
        messages=list(messages),
        tools=list(tools),
        options=llm.RequestOptions(
            max_output_tokens=max_output_tokens, temperature=temperature, stop=list(stop)
        ),
    )
    try:
        return llm.complete(request)
    except Err as e:
        error = e.value
        if isinstance(error, llm.LlmError_LimitExceeded):
            raise LimitReached(error.value) from None
        if isinstance(error, llm.LlmError_Provider):
            raise AgentError(f"LLM provider failed: {error.value}") from None
        raise AgentError(f"LLM request rejected: {error.value}") from None


# --- sandbox ---------------------------------------------------------------------------------

def _sandbox_error(e: Err) -> AgentError:
    return AgentError(f"sandbox failed: {e.value.value}")


def bash(
    command: str,
    timeout_ms: int = 0,
    *,
    workdir: Optional[str] = None,
    env: Optional[dict] = None,
) -> sandbox.ExecOutput:
    """Runs `command` in a fresh bash at the repository root (or `workdir`); 0 = default timeout."""
    request = sandbox.ExecRequest(
        command=command,
        timeout_ms=timeout_ms,
        workdir=workdir,
        env=[(k, v) for k, v in (env or {}).items()],
    )
    try:
        return sandbox.exec(request)
    except Err as e:
        raise _sandbox_error(e) from None


def read_file(path: str) -> bytes:
    """A file's bytes, path relative to the repository root."""
    try:
        return sandbox.read_file(path)
    except Err as e:
        raise _sandbox_error(e) from None


def write_file(path: str, contents: bytes) -> None:
    """Writes a file (parents created), path relative to the repository root."""
    try:
        sandbox.write_file(path, contents)
    except Err as e:
        raise _sandbox_error(e) from None


# --- messaging -------------------------------------------------------------------------------

def _describe_messaging_error(error) -> str:
    if isinstance(error, messaging.MessagingError_UnknownRecipient):
        return f"no teammate named {error.value}"
    if isinstance(error, messaging.MessagingError_PeerFinished):
        return f"{error.value} has already finished"
    if isinstance(error, messaging.MessagingError_Unavailable):
        return f"the message bus is unreachable: {error.value}"
    return "messaging is disabled in this run"


def send(to: str, content: str) -> Optional[str]:
    """Sends a message; None when delivered, else why it was not."""
    try:
        messaging.send(to, content)
        return None
    except Err as e:
        return _describe_messaging_error(e.value)


def broadcast(content: str) -> Tuple[List[str], Optional[str]]:
    """Sends to every teammate still working: (who it reached, why not when it failed)."""
    try:
        return messaging.broadcast(content), None
    except Err as e:
        return [], _describe_messaging_error(e.value)


def receive() -> List[messaging.Message]:
    """Every message waiting in the inbox (never blocks)."""
    return messaging.receive()


def wait(timeout_ms: int) -> List[messaging.Message]:
    """Waits up to `timeout_ms` for at least one message."""
    return messaging.wait(timeout_ms)


def event(kind: str, detail: str) -> None:
    """Records a structured event (e.g. "format-error") in the trajectory."""
    trajectory.event(kind, detail)
