#!/usr/bin/env python3
"""Write a small CooperBench run directory with CooperBench's OWN code (cooperbench==0.0.14).

What this is
------------
host/tests/fixtures/cooperbench-0.0.14/ holds two run directories, one per setting, for the
bundled task cbench_textkit_task/task1, feature pairs (1,2) and (3,4):

    coop-msa_v2-gemini-3-flash-fixture-cbench-textkit-1/   (setting coop)
    solo-msa_v2-gemini-3-flash-fixture-cbench-textkit-1/   (setting solo)

The names are what cooperbench.cli._generate_run_name() builds for
``cooperbench run --setting {coop,solo} -s fixture -r cbench_textkit_task -t 1`` with the
default model (vertex_ai/gemini-3-flash-preview) and agent (mini_swe_agent_v2).

Nothing in them is hand-written JSON. The script runs the real pipeline

    cooperbench.runner.core.run(...)                 (what `cooperbench run` calls)
      -> runner.coop.execute_coop / runner.solo.execute_solo
         -> agents.mini_swe_agent_v2.adapter.MiniSweAgentV2Runner.run
            -> agents.mini_swe_agent_v2.agents.default.DefaultAgent.run (the real agent loop)
      -> eval.evaluate._evaluate_single (auto-eval) -> eval.sandbox.test_merged / test_solo
    cooperbench.eval.evaluate.evaluate(..., force=True)   (what `cooperbench eval --force` calls)

with only the outside world replaced:

  * the LLM: ScriptedModel subclasses CooperBench's LitellmModel and overrides only
    ``_query`` (the litellm.completion call) to return a litellm.ModelResponse with a bash
    tool call from a fixed script (look around, message the colleague in coop, apply each
    feature's GOLD feature.patch from the dataset -- in solo the second one with
    ``git apply --recount -C0`` when plain ``git apply`` fails, as both append at the end of
    textkit/strings.py -- run the existing tests, write patch.txt, submit). Token counts in
    ``usage`` are MADE UP (about len(text)/4); the per-step ``cost`` is computed by
    CooperBench/litellm from them (litellm's price for vertex_ai/gemini-3-flash-preview).
  * the agent's container: LocalEnvironment subclasses CooperBench's DockerEnvironment and
    runs each command with bash in a local checkout of dataset/.../repo (committed exactly as
    the task's Dockerfile does), with /workspace/repo rewritten to that checkout.
  * Redis: MessagingConnector's ``redis.from_url`` returns an in-process list store, and
    runner.core.ensure_redis is a no-op.
  * the eval sandbox: eval.sandbox.get_backend returns LocalBackend, whose sandboxes run
    CooperBench's own shell scripts (branch setup, naive/union merge, runner.sh) locally
    against a fresh checkout, with /workspace/repo, /patches and /usr/local/bin/runner.sh
    rewritten to temp paths. Test results are therefore REAL (python unittest on the gold
    patches), not made up.

One deliberate shim (on by default, --faithful-runner turns it off): CooperBench's
eval.sandbox._parse_results only understands pytest/go/cargo/jest summaries. The bundled
runner.sh runs ``python3 -m unittest -v``, whose output has no "N passed" line, so real
CooperBench would record ``passed: false`` (tests_passed 0) for every feature even when the
tests pass. The shim makes the local copy of runner.sh print the unittest output followed by
a line ``(cbench fixture shim) N passed, M failed`` counted from that output, so the
recorded verdicts match a regrade. With --faithful-runner the eval.json files show what
CooperBench 0.0.14 would really record for this task (every feature "passed": false,
"error": null).

Which CooperBench function wrote each file (paths relative to the run directory):

  config.json                                   runner.core._save_config          (from run())
  summary.json                                  runner.core._save_summary         (from run())
  eval_summary.json                             eval.evaluate._save_summary       (from evaluate())
  coop/<repo>/<task>/f<a>_f<b>/conversation.json  runner.coop.execute_coop
  coop/<repo>/<task>/f<a>_f<b>/agent<fid>.patch    runner.coop.execute_coop  (fid = FEATURE id)
  coop/<repo>/<task>/f<a>_f<b>/agent<fid>_traj.json runner.coop.execute_coop
  coop/<repo>/<task>/f<a>_f<b>/result.json        runner.coop.execute_coop
  solo/<repo>/<task>/f<a>_f<b>/solo.patch         runner.solo.execute_solo
  solo/<repo>/<task>/f<a>_f<b>/solo_traj.json     runner.solo.execute_solo
  solo/<repo>/<task>/f<a>_f<b>/result.json        runner.solo.execute_solo
  */f<a>_f<b>/eval.json                           eval.evaluate._evaluate_single
                                                  (content from eval.sandbox.test_merged /
                                                  test_solo)

Known facts visible in the output (they are CooperBench 0.0.14 behaviour, not fixture bugs):
result.json token fields are 0 (the mini_swe_agent_v2 adapter never fills them; the real
counts are only in each trajectory message's extra.response.usage); conversation.json
entries have "timestamp": null (the extractor reads a top-level timestamp the messages do
not have); agent patches have no trailing newline (the adapter .strip()s `cat patch.txt`);
pair (1,2) conflicts under a naive git merge, so coop eval.json shows merge status
"conflicts" resolved with strategy "union"; "log_dir" fields are relative ("logs/<run>/...")
because the run is made from a scratch working directory with the default ./logs.

Regenerate
----------
    uv venv -p 3.12 /tmp/cb-venv14 && VIRTUAL_ENV=/tmp/cb-venv14 uv pip install cooperbench==0.0.14
    /tmp/cb-venv14/bin/python scripts/make-cooperbench-fixture.py            # from the repo root
    # options: --out DIR (default host/tests/fixtures/cooperbench-0.0.14), --faithful-runner

Timestamps, run ids, durations and the litellm response ids differ on every regeneration;
everything else is deterministic. Needs git and python3 on PATH; no Docker, Redis, network
or API key.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASET_SRC = REPO_ROOT / "dataset"
REPO_NAME = "cbench_textkit_task"
TASK_ID = 1
PAIRS = [[1, 2], [3, 4]]
SUBSET = "fixture"
MODEL = "vertex_ai/gemini-3-flash-preview"  # cooperbench 0.0.14 default (cli.py, runner/core.py)
AGENT = "mini_swe_agent_v2"  # cooperbench 0.0.14 default

TASK_DIR = DATASET_SRC / REPO_NAME / f"task{TASK_ID}"


def git_base_checkout(dest: Path) -> None:
    """Copy the task's repo and commit it the way the task's Dockerfile does."""
    shutil.copytree(TASK_DIR / "repo", dest)
    env = dict(
        os.environ,
        GIT_AUTHOR_NAME="cbench",
        GIT_AUTHOR_EMAIL="cbench@localhost",
        GIT_COMMITTER_NAME="cbench",
        GIT_COMMITTER_EMAIL="cbench@localhost",
        GIT_AUTHOR_DATE="2025-01-01T00:00:00Z",
        GIT_COMMITTER_DATE="2025-01-01T00:00:00Z",
    )
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=dest, check=True, env=env)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True, env=env)
    subprocess.run(["git", "commit", "-q", "--no-gpg-sign", "-m", "base"], cwd=dest, check=True, env=env)


# --------------------------------------------------------------------------- Redis stand-in
class MemRedis:
    """The four list operations MessagingConnector uses, in process."""

    def __init__(self):
        self.lists: dict[str, list] = {}
        self.lock = threading.Lock()

    def delete(self, key):
        with self.lock:
            self.lists.pop(key, None)

    def rpush(self, key, value):
        with self.lock:
            self.lists.setdefault(key, []).append(value)

    def lpop(self, key):
        with self.lock:
            items = self.lists.get(key)
            return items.pop(0) if items else None

    def llen(self, key):
        with self.lock:
            return len(self.lists.get(key, []))


MEM_REDIS = MemRedis()


def install_stubs(scratch: Path, shim: bool) -> None:
    import litellm

    import cooperbench.agents.mini_swe_agent_v2.adapter as adapter
    import cooperbench.agents.mini_swe_agent_v2.connectors.messaging as messaging
    import cooperbench.agents.mini_swe_agent_v2.environments.docker as docker_env
    import cooperbench.eval.sandbox as sandbox
    import cooperbench.runner.core as core
    from cooperbench.agents.mini_swe_agent_v2.models.litellm_model import LitellmModel

    features_md = {
        fid: (TASK_DIR / f"feature{fid}" / "feature.md").read_text() for fid in range(1, 6)
    }
    gold = {fid: (TASK_DIR / f"feature{fid}" / "feature.patch").read_text() for fid in range(1, 6)}
    barrier = threading.Barrier(2)  # coop pairs run one at a time (concurrency=1)

    # ------------------------------------------------------------------ agent container
    class LocalEnvironment(docker_env.DockerEnvironment):
        def _start_container(self):
            self.workdir = Path(tempfile.mkdtemp(prefix="agent-", dir=scratch)) / "repo"
            git_base_checkout(self.workdir)
            self.container_id = "local-" + self.workdir.parent.name

        def get_template_vars(self, **kwargs):
            # Fixed, container-like uname so the prompt does not embed this host's kernel.
            from cooperbench.agents.mini_swe_agent_v2.utils.serialize import recursive_merge

            uname = {"system": "Linux", "node": "sandbox", "release": "6.8.0", "version": "#1 SMP",
                     "machine": "x86_64"}
            return recursive_merge(self.config.model_dump(), uname, kwargs)

        def execute(self, action, cwd="", *, timeout=None):
            command = action.get("command", "").replace("/workspace/repo", str(self.workdir))
            r = subprocess.run(["bash", "-c", command], cwd=self.workdir, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=timeout or 120)
            out = r.stdout.replace(str(self.workdir), "/workspace/repo")
            output = {"output": out, "returncode": r.returncode, "exception_info": ""}
            self._check_finished(output)
            return output

        def cleanup(self):
            pass

    docker_env.DockerEnvironment = LocalEnvironment

    # ------------------------------------------------------------------ the LLM
    class ScriptedModel(LitellmModel):
        def _query(self, messages, **kwargs):
            task_text = messages[1]["content"]
            fids = [f for f in range(1, 6) if features_md[f].splitlines()[0] in task_text]
            m = re.search(r"You are \*\*(agent\d+)\*\*. Your colleague is (agent\d+)", task_text)
            me, peer = (m.group(1), m.group(2)) if m else ("solo", None)
            step = sum(1 for x in messages if x.get("role") == "assistant")
            files = sorted({p for f in fids for p in re.findall(r"^\+\+\+ b/(\S+)", gold[f], re.M)})
            script = [
                (f"I'll start by looking at the repository layout and the module(s) this touches: "
                 f"{', '.join(files)}.", f"ls textkit tests && cat {' '.join(files)}"),
            ]
            if peer:
                script.append((
                    f"Before editing, I'll tell {peer} which file and region I am changing so our "
                    f"patches merge cleanly.",
                    f"send_message {peer} <<'MSG'\nHi, {me} here. I'm implementing feature {fids[0]} "
                    f"and will only touch {', '.join(files)} (adding code at the end of the file). "
                    f"Which lines are you changing?\nMSG"))
            for f in fids:
                script.append((f"Now I'll implement feature {f}.",
                               f"cat > /tmp/feature{f}.patch <<'PATCH'\n{gold[f]}PATCH\n"
                               f"git apply /tmp/feature{f}.patch || git apply --recount -C0 /tmp/feature{f}.patch\n"
                               f"git diff --stat"))
            script.append(("Quick sanity check that the package still imports and the existing tests pass.",
                           "python3 -m unittest discover -s tests -t . 2>&1 | tail -3"))
            script.append(("Writing the patch for submission.", "git diff > patch.txt && cat patch.txt"))
            script.append(("The change is complete; submitting.", "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"))
            if peer and step == 2:
                barrier.wait(timeout=60)  # both have sent their message before step 3 runs
            text, cmd = script[min(step, len(script) - 1)]
            prompt_tokens = sum(len(str(x.get("content") or "")) for x in messages) // 4  # MADE UP
            completion_tokens = (len(text) + len(cmd)) // 4 + 12  # MADE UP
            return litellm.ModelResponse(
                id=f"fixture-{me}-{step}",
                model=self.config.model_name,
                created=int(time.time()),
                object="chat.completion",
                choices=[litellm.Choices(
                    index=0,
                    finish_reason="tool_calls",
                    message=litellm.Message(
                        role="assistant",
                        content=text,
                        tool_calls=[{"id": f"call_{me}_{step}", "type": "function",
                                     "function": {"name": "bash",
                                                  "arguments": json.dumps({"command": cmd})}}],
                    ),
                )],
                usage=litellm.Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                                    total_tokens=prompt_tokens + completion_tokens),
            )

    adapter.LitellmModel = ScriptedModel
    messaging.redis.from_url = lambda url, **kw: MEM_REDIS
    core.ensure_redis = lambda url="": None

    # ------------------------------------------------------------------ eval sandbox
    runner_src = (TASK_DIR / "runner.sh").read_text()
    if shim:
        last = "python3 -m unittest discover -s tests -t . -v"
        assert runner_src.rstrip().endswith(last)
        runner_src = runner_src.rstrip()[: -len(last)] + (
            "set +e\n"
            f'out="$({last} 2>&1)"; rc=$?\n'
            "printf '%s\\n' \"$out\"\n"
            "ran=$(printf '%s\\n' \"$out\" | sed -n 's/^Ran \\([0-9]*\\) tests\\{0,1\\} in.*/\\1/p')\n"
            "bad=$(printf '%s\\n' \"$out\" | grep -cE '\\.\\.\\. (FAIL|ERROR)$')\n"
            'echo "(cbench fixture shim) $((${ran:-0}-bad)) passed, $bad failed"\n'
            "exit $rc\n"
        )

    class Result:
        def __init__(self, cp):
            self.returncode = cp.returncode
            self._out, self._err = cp.stdout, cp.stderr

        def stdout_read(self):
            return self._out

        def stderr_read(self):
            return self._err

    class LocalSandbox:
        def __init__(self):
            self.root = Path(tempfile.mkdtemp(prefix="eval-", dir=scratch))
            git_base_checkout(self.root / "repo")
            (self.root / "patches").mkdir()
            self.runner = self.root / "runner.sh"
            self.runner.write_text(self._map(runner_src))

        def _map(self, s):
            return (s.replace("/usr/local/bin/runner.sh", str(self.root / "runner.sh"))
                     .replace("/workspace/repo", str(self.root / "repo"))
                     .replace("/patches", str(self.root / "patches")))

        def _unmap(self, s):
            return (s.replace(str(self.root / "repo"), "/workspace/repo")
                     .replace(str(self.root / "patches"), "/patches")
                     .replace(str(self.root / "runner.sh"), "/usr/local/bin/runner.sh"))

        def exec(self, *args):
            cp = subprocess.run([self._map(a) for a in args], cwd=self.root, text=True,
                                capture_output=True, timeout=600)
            cp.stdout, cp.stderr = self._unmap(cp.stdout), self._unmap(cp.stderr)
            return Result(cp)

        def terminate(self):
            pass

    class LocalBackend:
        def create_sandbox(self, image, timeout=600, **kw):
            return LocalSandbox()

    sandbox.get_backend = lambda name="docker": LocalBackend()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(REPO_ROOT / "host/tests/fixtures/cooperbench-0.0.14"))
    ap.add_argument("--faithful-runner", action="store_true",
                    help="run the bundled runner.sh unchanged (CooperBench then records passed=false)")
    args = ap.parse_args()

    import cooperbench

    if cooperbench.__version__ != "0.0.14":
        sys.exit(f"needs cooperbench==0.0.14, found {cooperbench.__version__}")

    scratch = Path(tempfile.mkdtemp(prefix="cb-fixture-"))
    work = scratch / "cwd"
    (work / "dataset" / "subsets").mkdir(parents=True)
    (work / "dataset" / REPO_NAME).symlink_to(DATASET_SRC / REPO_NAME)
    (work / "dataset" / "subsets" / f"{SUBSET}.json").write_text(json.dumps(
        {"name": SUBSET, "tasks": [{"repo": REPO_NAME, "task_id": TASK_ID, "pairs": PAIRS}]}, indent=2))
    os.chdir(work)  # CooperBench's defaults: ./dataset and ./logs

    install_stubs(scratch, shim=not args.faithful_runner)
    from cooperbench import evaluate, run
    from cooperbench.cli import _generate_run_name

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for setting in ("coop", "solo"):
        name = _generate_run_name(setting=setting, model=MODEL, agent=AGENT, subset=SUBSET,
                                  repo=REPO_NAME, task=TASK_ID)
        run(run_name=name, subset=SUBSET, repo=REPO_NAME, task_id=TASK_ID, model_name=MODEL,
            agent=AGENT, setting=setting, concurrency=1, backend="docker", auto_eval=True)
        evaluate(run_name=name, subset=SUBSET, force=True, backend="docker", concurrency=1)
        dest = out / name
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(work / "logs" / name, dest)
        print(f"wrote {dest}")
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
