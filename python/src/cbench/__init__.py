"""cbench from Python: the API CooperBench documents, running in-process on cbench's Rust library.

    from cbench import run, evaluate, load_run, compare
    summary = run(run_name="my-experiment", repo="llama_index_task", model_name="gpt-4o",
                  setting="coop", backend="docker")
    evaluate(run_name="my-experiment")
    pairs = load_run("my-experiment")          # list of dicts: pandas.DataFrame(pairs)

CooperBench's own names work too: `from cooperbench import run, evaluate` (the `cooperbench`
package in this wheel), `logs_dir=`, `agent="mini_swe_agent_v2"`, and the `cooperbench` command.

Arguments are checked exactly as `cbench run` / `cbench eval` check them: a bad one raises
ValueError with the CLI's message; a failure of cbench's machinery (Docker, Redis, files, a lock)
raises CbenchError. The GIL is released while a run works; Ctrl-C (KeyboardInterrupt) stops it
and removes its sandboxes, keeping every result already written.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from typing import Any, Iterable, Optional, Sequence, Union

from . import _native
from ._native import CbenchError

__all__ = ["run", "evaluate", "load_run", "compare", "main", "CbenchError"]

_PathLike = Union[str, "os.PathLike[str]"]


def _flag(argv: list, name: str, value: Any) -> None:
    if value is not None:
        argv += [name, os.fspath(value) if isinstance(value, os.PathLike) else str(value)]


def _one_of(name: str, value: Any, alias: str, alias_value: Any) -> Any:
    if value is not None and alias_value is not None and value != alias_value:
        raise ValueError(f"{name} and {alias} name the same directory; give one of them")
    return value if value is not None else alias_value


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The `cbench` command line, in-process (the `cbench` console script of this wheel)."""
    import sys

    return _native.main(list(sys.argv[1:] if argv is None else argv))


def _features(features: Optional[Union[str, Iterable[int]]]) -> Optional[str]:
    if features is None or isinstance(features, str):
        return features
    return ",".join(str(f) for f in features)


def run(
    run_name: Optional[str] = None,
    subset: Optional[str] = None,
    repo: Optional[str] = None,
    task_id: Optional[int] = None,
    features: Optional[Union[str, Sequence[int]]] = None,
    model_name: str = "vertex_ai/gemini-3-flash-preview",
    agent: Union[_PathLike, Sequence[_PathLike]] = "mini_swe",
    concurrency: int = 30,
    setting: str = "coop",
    redis_url: Optional[str] = None,
    force: bool = False,
    git_enabled: bool = False,
    messaging_enabled: bool = True,
    auto_eval: bool = True,
    eval_concurrency: int = 10,
    backend: str = "local",
    agent_config: Optional[_PathLike] = None,
    *,
    merge_policy: Optional[str] = None,
    max_steps: Optional[int] = None,
    log_dir: Optional[_PathLike] = None,
    dataset_dir: Optional[_PathLike] = None,
    quiet: bool = False,
    extra_args: Sequence[str] = (),
    logs_dir: Optional[_PathLike] = None,
    engine: str = "local",
    team_features: Any = None,
    team_lead: Optional[int] = None,
) -> Any:
    """Runs agents on the selected pairs and grades them (as `cbench run`); returns summary.json
    as a dict (a list of them when `agent` names several plugins, which are then compared).

    `engine="slurm"` or `"kubernetes"` submits the pairs to that scheduler (its settings, such
    as `--k8s-image`, in `extra_args`) and follows them; with `--detach` it returns None once
    submitted. Slurm tasks run the `cbench` command installed beside this interpreter.

    `agent` is a plugin name (`cbench plugin list`; CooperBench's `mini_swe_agent_v2` means
    mini_swe) or a .wasm path; `@sha256:<hex>` pins it. With `redis_url`, a coop run's messages
    go through that Redis server with CooperBench's keys; without it, through cbench's
    in-process bus (no server needed, the same messages). `logs_dir` is CooperBench's name for
    `log_dir`. `extra_args` passes any other `cbench run` flag as is.

    `setting="team"` is CooperBench 0.0.29's team setting; `team_features` switches its
    mechanisms as CooperBench's does (a `TeamHarnessConfig`, or a dict with `task_list`,
    `scratchpad`, `mcp`, `auto_refresh`, `protocol`; false turns one off), `team_lead` picks the
    lead (agent K, 1-based).
    """
    log_dir = _one_of("log_dir", log_dir, "logs_dir", logs_dir)
    argv: list = []
    _flag(argv, "-n", run_name)
    _flag(argv, "-s", subset)
    _flag(argv, "-r", repo)
    _flag(argv, "-t", task_id)
    _flag(argv, "-f", _features(features))
    _flag(argv, "-m", model_name)
    agents = [agent] if isinstance(agent, (str, os.PathLike)) else list(agent)
    for a in agents:
        _flag(argv, "--agent", a)
    _flag(argv, "-c", concurrency)
    _flag(argv, "--setting", setting)
    for flag in _team_flags(team_features):
        argv.append(flag)
    _flag(argv, "--team-lead", team_lead)
    if redis_url is not None and setting in ("coop", "team") and messaging_enabled:
        _flag(argv, "--redis", redis_url)
    if force:
        argv.append("--force")
    if git_enabled:
        argv.append("--git")
    if not messaging_enabled:
        argv.append("--no-messaging")
    if not auto_eval:
        argv.append("--no-auto-eval")
    _flag(argv, "--eval-concurrency", eval_concurrency)
    _flag(argv, "--backend", backend)
    _flag(argv, "--agent-config", agent_config)
    _flag(argv, "--merge-policy", merge_policy)
    _flag(argv, "--max-steps", max_steps)
    _flag(argv, "--log-dir", log_dir)
    _flag(argv, "--dataset-dir", dataset_dir)
    if quiet:
        argv.append("-q")
    if engine != "local":
        _flag(argv, "--engine", engine)
        # The tasks cannot run this interpreter's extension: they run the console command.
        exe = shutil.which("cbench", path=os.path.dirname(sys.executable)) or shutil.which("cbench")
        if exe and "CBENCH_EXE" not in os.environ:
            os.environ["CBENCH_EXE"] = exe
    argv += list(extra_args)
    return json.loads(_native.run(argv))


_TEAM_FEATURES = ("task_list", "scratchpad", "mcp", "auto_refresh", "protocol")


def _team_flags(features: Any) -> list:
    """`--team-no-*` for each mechanism `features` switches off (CooperBench's TeamHarnessConfig
    or a dict of the same names)."""
    if features is None:
        return []
    if isinstance(features, dict):
        unknown = sorted(set(features) - set(_TEAM_FEATURES))
        if unknown:
            raise ValueError(f"unknown feature(s) {unknown}; expected subset of {sorted(_TEAM_FEATURES)}")
        get = features.get
    elif all(hasattr(features, name) for name in _TEAM_FEATURES):
        def get(name, default=True):
            return getattr(features, name, default)
    else:
        raise TypeError(
            "team_features: a TeamHarnessConfig or a dict of "
            f"{', '.join(_TEAM_FEATURES)}; got {type(features).__name__}"
        )
    return [f"--team-no-{name.replace('_', '-')}" for name in _TEAM_FEATURES if not get(name, True)]


def evaluate(
    run_name: str,
    concurrency: int = 10,
    backend: Optional[str] = None,
    force: bool = False,
    *,
    merge_policy: Optional[str] = None,
    log_dir: Optional[_PathLike] = None,
    dataset_dir: Optional[_PathLike] = None,
    quiet: bool = False,
    extra_args: Sequence[str] = (),
    subset: Optional[str] = None,
    repo: Optional[str] = None,
    task_id: Optional[int] = None,
    features: Optional[Union[str, Sequence[int]]] = None,
    logs_dir: Optional[_PathLike] = None,
) -> Any:
    """Grades a run's patches again where they are not graded yet (`force=True`: all of them),
    as `cbench eval`; returns summary.json as a dict. `concurrency` is grading concurrency;
    `backend` and `merge_policy` default to the run's own; `subset`, `repo`, `task_id` and
    `features` grade only the run's pairs they select (as CooperBench's `evaluate`)."""
    log_dir = _one_of("log_dir", log_dir, "logs_dir", logs_dir)
    argv: list = []
    _flag(argv, "-n", run_name)
    _flag(argv, "-s", subset)
    _flag(argv, "-r", repo)
    _flag(argv, "-t", task_id)
    _flag(argv, "-f", _features(features))
    _flag(argv, "--eval-concurrency", concurrency)
    _flag(argv, "--backend", backend)
    if force:
        argv.append("--force")
    _flag(argv, "--merge-policy", merge_policy)
    _flag(argv, "--log-dir", log_dir)
    _flag(argv, "--dataset-dir", dataset_dir)
    if quiet:
        argv.append("-q")
    argv += list(extra_args)
    return json.loads(_native.evaluate(argv))


def _flat(record: dict) -> dict:
    """One pair as a flat row (the raw files stay under `result` and `eval`)."""
    result = record.get("result") or {}
    ev = record.get("eval") or {}
    merged = ev.get("merged") or {}
    agents = result.get("agents") or []
    costs = [a.get("cost_usd") for a in agents]
    row = {
        "pair": record["pair"],
        "repo": record["repo"],
        "task_id": record["task_id"],
        "features": [int(f) for f in record["features"].split("_")[1:] if f.isdigit()],
        "setting": result.get("setting") or ev.get("setting"),
        "model": result.get("model"),
        "graded": bool(ev),
        "overall_success": ev.get("overall_success"),
        "merged_success": merged.get("success"),
        "merge_strategy": ev.get("merge_strategy"),
        "merge_conflict": merged.get("merge_conflict"),
        "messages": result.get("messages"),
        "duration_s": result.get("duration_s"),
        "steps": sum(a.get("steps") or 0 for a in agents) if agents else None,
        "cost_usd": None if not costs or any(c is None for c in costs) else sum(costs),
    }
    for a in agents:
        agent_id = a.get("agent_id")
        row[f"{agent_id}_status"] = a.get("status")
        graded = ev.get(agent_id) or {}
        row[f"{agent_id}_success"] = graded.get("success")
    row["result"] = record.get("result")
    row["eval"] = record.get("eval")
    return row


def load_run(name: str, log_dir: _PathLike = "logs") -> list:
    """The run's pairs, one dict each (ready for `pandas.DataFrame(...)`): key, repo, task,
    features, success and merge fields, cost, steps, per-agent status and success, and the raw
    result.json / eval.json under `result` and `eval`."""
    run_dir = os.path.join(os.fspath(log_dir), name)
    return [_flat(r) for r in json.loads(_native.load_run(run_dir))]


def compare(names: Sequence[str], log_dir: _PathLike = "logs", allow_mismatch: bool = False) -> Any:
    """Head to head of two or more runs on the pairs graded in all of them (as `cbench compare
    --json`): per-run rates with Wilson intervals, the paired table, exact McNemar and the
    paired bootstrap, per repository, and the pairs where they disagree."""
    return json.loads(_native.compare(os.fspath(log_dir), list(names), allow_mismatch))
