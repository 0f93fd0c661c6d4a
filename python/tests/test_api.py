"""The Python API against the real library: the bundled dataset, the oracle, real sandboxes.

Needs the cbench wheel installed, the CLI at target/debug/cbench and the mini_swe plugin at
target/test-plugins (scripts/test.sh builds all three), redis-server on PATH and, for the
docker case, a Docker engine with the bundled task's image (the Rust tests build it).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

import cbench

ROOT = Path(__file__).resolve().parents[2]
DATASET = ROOT / "dataset"
CLI = ROOT / "target" / "debug" / "cbench"
PLUGIN = ROOT / "target" / "test-plugins" / "wasm32-wasip2" / "plugin" / "mini_swe.wasm"
ENV = {**os.environ, "CBENCH_CACHE_DIR": str(ROOT / "target" / "test-cache")}
os.environ["CBENCH_CACHE_DIR"] = ENV["CBENCH_CACHE_DIR"]


def setup_module():
    for needed in (CLI, PLUGIN):
        assert needed.exists(), f"{needed} is missing: scripts/test.sh builds it"


@pytest.fixture(scope="module")
def redis_url():
    """A real redis-server on a free loopback port, stopped by PID afterwards."""
    server = shutil.which("redis-server")
    assert server, "redis-server is needed (scripts/test.sh installs it)"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.time() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert time.time() < deadline and proc.poll() is None, "redis-server did not start"
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def logs():
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def eval_without_timing(path):
    data = json.loads(Path(path).read_text())
    data.pop("evaluated_at", None)
    data.pop("duration_s", None)
    return data


def pair_dirs(run_dir):
    return sorted(p for p in run_dir.glob("*/task*/features_*") if p.is_dir())


@pytest.fixture(scope="module")
def py_run(logs, redis_url):
    """The README's example on the bundled dataset: a coop run with messages through Redis."""
    summary = cbench.run(
        run_name="py-oracle",
        model_name="oracle",
        agent=str(PLUGIN),
        setting="coop",
        redis_url=redis_url,
        log_dir=logs,
        dataset_dir=DATASET,
        quiet=True,
    )
    return summary


def test_run_grades_the_bundled_dataset_as_the_cli_does(py_run, logs):
    cli = subprocess.run(
        [str(CLI), "run", "-q", "-n", "cli-oracle", "-m", "oracle", "--agent", str(PLUGIN),
         "--log-dir", str(logs), "--dataset-dir", str(DATASET)],
        env=ENV, capture_output=True, text=True,
    )
    assert cli.returncode == 0, cli.stderr
    assert py_run["pairs"] == 10 and py_run["infra_errors"] == 0, py_run
    cli_summary = json.loads((logs / "cli-oracle" / "summary.json").read_text())
    for key in ("overall_successes", "individual_successes", "merge_conflicts", "union_rescues"):
        assert py_run[key] == cli_summary[key], key
    py_pairs, cli_pairs = pair_dirs(logs / "py-oracle"), pair_dirs(logs / "cli-oracle")
    assert [p.relative_to(logs / "py-oracle") for p in py_pairs] == [
        p.relative_to(logs / "cli-oracle") for p in cli_pairs
    ]
    assert len(py_pairs) == 10
    for p, c in zip(py_pairs, cli_pairs):
        assert eval_without_timing(p / "eval.json") == eval_without_timing(c / "eval.json"), p.name
        for agent in ("agent1", "agent2"):
            assert (p / agent / "patch.diff").read_bytes() == (c / agent / "patch.diff").read_bytes()
    # The messages went through Redis: the run's config says so.
    config = json.loads((logs / "py-oracle" / "config.json").read_text())
    assert "redis" in json.dumps(config.get("message_bus")).lower(), config.get("message_bus")


def test_evaluate_regrades_the_run(py_run, logs):
    before = (logs / "py-oracle" / "cbench_textkit_task/task1/features_1_2/eval.json").read_text()
    summary = cbench.evaluate("py-oracle", force=True, log_dir=logs, dataset_dir=DATASET, quiet=True)
    assert summary["overall_successes"] == py_run["overall_successes"] == 9, summary
    after = (logs / "py-oracle" / "cbench_textkit_task/task1/features_1_2/eval.json").read_text()
    assert json.loads(after)["evaluated_at"] != json.loads(before)["evaluated_at"]
    assert eval_without_timing(logs / "py-oracle" / "cbench_textkit_task/task1/features_1_2/eval.json") \
        == {k: v for k, v in json.loads(before).items() if k not in ("evaluated_at", "duration_s")}


def test_load_run_gives_one_flat_dict_per_pair(py_run, logs):
    rows = cbench.load_run("py-oracle", log_dir=logs)
    assert len(rows) == 10
    assert all(isinstance(r, dict) for r in rows)
    by_pair = {r["pair"]: r for r in rows}
    row = by_pair["cbench_textkit_task/task1/features_4_5"]
    # The designed coordination failure: both pass alone, the union merge breaks feature 4.
    assert (row["agent1_success"], row["agent2_success"], row["overall_success"]) == (True, True, False)
    assert row["merge_strategy"] == "union" and row["features"] == [4, 5]
    assert row["eval"]["merged"]["merge_conflict"] is True
    assert sum(r["overall_success"] for r in rows) == py_run["overall_successes"]
    # Scalars at the top level, so a DataFrame gets a column each.
    for key in ("repo", "task_id", "overall_success", "steps", "cost_usd", "agent1_status"):
        assert not isinstance(row[key], (dict, list)), key
    with pytest.raises(ValueError, match="no run at"):
        cbench.load_run("no-such-run", log_dir=logs)


def test_compare_returns_the_head_to_head(py_run, logs):
    result = cbench.compare(["py-oracle", "cli-oracle"], log_dir=logs)
    overall = result["pairwise"][0]["overall"]
    assert result["compared_pairs"] == 10
    assert (overall["both"], overall["only_a"], overall["only_b"]) == (9, 0, 0), overall
    assert overall["mcnemar_p"] == 1.0, overall
    assert result["pairwise"][0]["disagreements"] == []


@pytest.mark.parametrize(
    "kwargs, cli_args",
    [
        ({"setting": "duo"}, ["--setting", "duo"]),
        ({"subset": "no-such-subset"}, ["-s", "no-such-subset"]),
        ({"concurrency": 0}, ["-c", "0"]),
    ],
)
def test_a_bad_argument_raises_value_error_with_the_clis_message(logs, kwargs, cli_args):
    args = dict(run_name="bad", model_name="oracle", agent=str(PLUGIN), redis_url=None,
                log_dir=logs, dataset_dir=DATASET, quiet=True)
    args.update(kwargs)
    with pytest.raises(ValueError) as raised:
        cbench.run(**args)
    cli = subprocess.run(
        [str(CLI), "run", "-q", "-n", "bad", "-m", "oracle", "--agent", str(PLUGIN),
         "--log-dir", str(logs), "--dataset-dir", str(DATASET), *cli_args],
        env=ENV, capture_output=True, text=True,
    )
    assert cli.returncode == 2, cli.stderr
    message = str(raised.value)
    assert message and message in cli.stderr, (message, cli.stderr)
    assert not (logs / "bad").exists()


def test_an_unreachable_redis_is_a_cbench_error_not_a_value_error(logs):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(cbench.CbenchError, match=f"127.0.0.1:{port}"):
        cbench.run(run_name="no-redis", model_name="oracle", agent=str(PLUGIN),
                   redis_url=f"redis://127.0.0.1:{port}", log_dir=logs, dataset_dir=DATASET, quiet=True)


CHILD = textwrap.dedent(
    """
    import sys, threading, time
    import cbench
    name, backend, logs, dataset, plugin, hang = sys.argv[1:]
    ticks = 0
    def tick():
        global ticks
        while True:
            time.sleep(0.05)
            ticks += 1
    threading.Thread(target=tick, daemon=True).start()
    try:
        cbench.run(run_name=name, model_name="scripted:" + hang, agent=plugin, backend=backend,
                   subset="smoke", redis_url=None, log_dir=logs, dataset_dir=dataset, quiet=True,
                   extra_args=["--command-timeout", "900"])
        print("RETURNED", flush=True)
    except KeyboardInterrupt:
        print("INTERRUPTED", ticks, flush=True)
    """
)


def docker_containers(name):
    out = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=cbench.run={name}"],
        capture_output=True, text=True, check=True,
    )
    return out.stdout.split()


def sleepers():
    out = subprocess.run(["pgrep", "-f", "sleep 600"], capture_output=True, text=True)
    return out.stdout.split()


@pytest.mark.parametrize("backend", ["local", "docker"])
def test_keyboard_interrupt_mid_run_leaves_no_sandbox_behind(logs, backend, tmp_path):
    hang = tmp_path / "hang.json"
    hang.write_text(json.dumps({"*": [{"bash": "sleep 600"}]}))
    name = f"py-interrupt-{backend}-{os.getpid()}"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, name, backend, str(logs), str(DATASET), str(PLUGIN), str(hang)],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # A suite started in the background (nohup, `&`) passes SIGINT on ignored, and Python
        # then installs no KeyboardInterrupt handler: the child gets the default, as a terminal's.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    started = time.time()
    # Every agent (3 pairs × 2) is inside its hanging command.
    while True:
        up = len(docker_containers(name)) if backend == "docker" else len(sleepers())
        if up >= 6:
            break
        assert child.poll() is None, child.communicate()
        assert time.time() - started < 120, f"only {up} sandboxes came up"
        time.sleep(0.2)
    time.sleep(0.5)
    child.send_signal(signal.SIGINT)
    stopped = time.time()
    out, err = child.communicate(timeout=60)
    assert time.time() - stopped < 30, "stopping took too long"
    assert out.startswith("INTERRUPTED"), (out, err)
    # The Python thread kept running while the run worked: the GIL was released.
    assert int(out.split()[1]) > 20, out
    if backend == "docker":
        assert docker_containers(name) == [], err
    else:
        assert sleepers() == [], err
    scratch = [p for p in Path(tempfile.gettempdir()).glob(f"cbench-run-{name}-*")]
    assert scratch == [], scratch
    assert json.loads((logs / name / "config.json").read_text())["backend"] == backend


def test_run_on_slurm_submits_the_pairs_and_returns_the_summary(logs):
    """`engine="slurm"`: the pairs go to the cluster scripts/test.sh starts, each task running
    the `cbench` command installed beside this interpreter; the summary is the local one's."""
    assert os.environ.get("SLURM_CONF"), "needs a Slurm cluster: scripts/test.sh starts one"
    summary = cbench.run(
        run_name="py-slurm",
        subset="smoke",
        model_name="oracle",
        agent=str(PLUGIN),
        concurrency=2,
        log_dir=logs,
        dataset_dir=DATASET,
        quiet=True,
        engine="slurm",
    )
    assert summary["pairs"] == 3 and summary["infra_errors"] == 0, summary
    cli = subprocess.run(
        [str(CLI), "run", "-q", "-n", "cli-smoke", "-s", "smoke", "-m", "oracle", "--agent",
         str(PLUGIN), "--log-dir", str(logs), "--dataset-dir", str(DATASET)],
        env=ENV, capture_output=True, text=True,
    )
    assert cli.returncode == 0, cli.stderr
    local = json.loads((logs / "cli-smoke" / "summary.json").read_text())
    assert summary["overall_successes"] == local["overall_successes"], (summary, local)
    task = (logs / "py-slurm" / "slurm" / "task.sh").read_text()
    assert str(Path(sys.executable).parent / "cbench") in task, task
    with pytest.raises(ValueError, match="does not apply to --engine local"):
        cbench.run(run_name="py-bad", model_name="oracle", agent=str(PLUGIN), log_dir=logs,
                   dataset_dir=DATASET, extra_args=["--k8s-image", "x"])
