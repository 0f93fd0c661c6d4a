"""CooperBench's Python API, on cbench: `from cooperbench import run, evaluate` as CooperBench
documents it, with its parameter names and defaults, forwarded to cbench's in-process library.

    from cooperbench import run, evaluate
    run(run_name="my-experiment", repo="llama_index_task", model_name="gpt-4o", setting="coop")
    evaluate(run_name="my-experiment")

What differs from CooperBench (docs/cooperbench.md has the whole table):
- `agent` names resolve to cbench plugins: `mini_swe_agent_v2` (the default) and
  `mini_swe_agent` run cbench's mini_swe plugin; a `.wasm` path runs that plugin.
- `backend` defaults to cbench's local sandbox (bubblewrap); `"docker"` uses the task images as
  CooperBench does; `"modal"` and `"gcp"` are not in this build.
- Messages go through cbench's in-process bus unless `redis_url` is given.
- Results are written in cbench's layout (`<logs>/<run>/<repo>/task<id>/features_<a>_<b>/`);
  `cbench import cooperbench DIR` reads runs CooperBench wrote.
- Both return the run's summary (a dict) instead of None.

This package is installed by cbench's wheel. If CooperBench's own `cooperbench` package is
installed in the same environment, whichever was installed last owns the `cooperbench` name;
uninstall one of them (`pip uninstall cooperbench`) or import `cbench` directly.
"""

from __future__ import annotations

from typing import Any, List, Optional, Union

import cbench as _cbench
from cbench import CbenchError

__all__ = ["run", "evaluate", "CbenchError", "__version__"]

#: The CooperBench release whose API this package follows.
__version__ = "0.0.14+cbench"

_Features = Optional[Union[str, List[int]]]


def run(
    run_name: Optional[str] = None,
    subset: Optional[str] = None,
    repo: Optional[str] = None,
    task_id: Optional[int] = None,
    features: _Features = None,
    model_name: str = "vertex_ai/gemini-3-flash-preview",
    agent: str = "mini_swe_agent_v2",
    concurrency: int = 20,
    force: bool = False,
    redis_url: Optional[str] = None,
    setting: str = "coop",
    git_enabled: bool = False,
    messaging_enabled: bool = True,
    auto_eval: bool = True,
    eval_concurrency: int = 10,
    backend: str = "local",
    agent_config: Optional[str] = None,
    dataset_dir: Optional[str] = None,
    logs_dir: Optional[str] = None,
    **cbench_options: Any,
) -> Any:
    """CooperBench's `run()`: runs the agents on the selected pairs and grades them (unless
    `auto_eval=False`). Extra keyword arguments are cbench's own (`max_steps`, `quiet`,
    `merge_policy`, `extra_args`, ...)."""
    return _cbench.run(
        run_name=run_name,
        subset=subset,
        repo=repo,
        task_id=task_id,
        features=features,
        model_name=model_name,
        agent=agent,
        concurrency=concurrency,
        setting=setting,
        redis_url=redis_url,
        force=force,
        git_enabled=git_enabled,
        messaging_enabled=messaging_enabled,
        auto_eval=auto_eval,
        eval_concurrency=eval_concurrency,
        backend=backend,
        agent_config=agent_config,
        dataset_dir=dataset_dir,
        logs_dir=logs_dir,
        **cbench_options,
    )


def evaluate(
    run_name: str,
    subset: Optional[str] = None,
    repo: Optional[str] = None,
    task_id: Optional[int] = None,
    features: _Features = None,
    concurrency: int = 10,
    force: bool = False,
    backend: Optional[str] = None,
    dataset_dir: Optional[str] = None,
    logs_dir: Optional[str] = None,
    **cbench_options: Any,
) -> Any:
    """CooperBench's `evaluate()`: grades the run's pairs not graded yet (`force=True`: all),
    only those `subset`/`repo`/`task_id`/`features` select when given. `backend` defaults to
    the one the run used."""
    return _cbench.evaluate(
        run_name=run_name,
        subset=subset,
        repo=repo,
        task_id=task_id,
        features=features,
        concurrency=concurrency,
        force=force,
        backend=backend,
        dataset_dir=dataset_dir,
        logs_dir=logs_dir,
        **cbench_options,
    )
