"""CooperBench's Python API and command, as its users write them, on cbench's wheel.

The README's example runs verbatim (`from cooperbench import run, evaluate`, `gpt-4o`) in a
directory laid out as CooperBench users have it (`./dataset` holding the bundled task as
`llama_index_task/task8394`), with a local server playing gpt-4o on OpenAI's wire.
"""

import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "dataset" / "cbench_textkit_task" / "task1"
PLUGINS = ROOT / "target" / "test-plugins" / "wasm32-wasip2" / "plugin"
SUBMIT = "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"


def gold_command(feature_id):
    patch = (BUNDLED / f"feature{feature_id}" / "feature.patch").read_text()
    return (
        f"cat > \"$TMPDIR/gold.patch\" <<'GOLD_EOF'\n{patch.rstrip()}\nGOLD_EOF\n"
        f"git apply \"$TMPDIR/gold.patch\" && echo applied"
    )


class Gpt4o(BaseHTTPRequestHandler):
    """OpenAI's chat completions: the gold patch of the feature the prompt names, then submit."""

    requests = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        Gpt4o.requests.append((self.path, self.headers.get("authorization"), body["model"]))
        messages = body["messages"]
        task = "\n".join(m["content"] for m in messages if m["role"] == "user" and m["content"])
        replies = sum(1 for m in messages if m["role"] == "assistant")
        feature = next(
            (f for f in (1, 2) if (BUNDLED / f"feature{f}" / "feature.md").read_text().strip() in task),
            None,
        )
        if feature is None:
            self.send_response(400)
            self.end_headers()
            return
        command = gold_command(feature) if replies == 0 else SUBMIT
        reply = json.dumps({
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "On it.",
                "tool_calls": [{"id": f"call_{replies}", "type": "function", "function": {
                    "name": "bash", "arguments": json.dumps({"command": command})}}]}}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 100},
        }).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


@pytest.fixture()
def user_dir(tmp_path, monkeypatch):
    """A CooperBench user's working directory and shell: ./dataset, keys, installed plugins."""
    task = tmp_path / "dataset" / "llama_index_task" / "task8394"
    task.mkdir(parents=True)
    for entry in ("Dockerfile", "runner.sh", "run_tests.sh", "repo", "feature1", "feature2"):
        src = BUNDLED / entry
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, task / entry)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Gpt4o)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{server.server_address[1]}/v1")
    monkeypatch.setenv("CBENCH_PLUGIN_PATH", str(PLUGINS))
    monkeypatch.setenv("CBENCH_CACHE_DIR", str(ROOT / "target" / "test-cache"))
    monkeypatch.delenv("CBENCH_DATASET_DIR", raising=False)
    Gpt4o.requests.clear()
    yield tmp_path
    server.shutdown()


def pair_eval(logs, run):
    return json.loads((logs / run / "llama_index_task/task8394/features_1_2/eval.json").read_text())


def test_the_readme_example_runs_verbatim(user_dir):
    from cooperbench import run, evaluate

    # Run agents
    run(
        run_name="my-experiment",
        repo="llama_index_task",
        model_name="gpt-4o",
        setting="coop",  # or "solo"
    )

    # Evaluate patches
    evaluate(run_name="my-experiment")

    assert pair_eval(user_dir / "logs", "my-experiment")["overall_success"] is True
    assert Gpt4o.requests and all(
        path == "/v1/chat/completions" and auth == "Bearer sk-test" and model == "gpt-4o"
        for path, auth, model in Gpt4o.requests
    ), Gpt4o.requests


def test_cooperbench_keywords_agent_names_and_evaluate_filters(user_dir):
    import cooperbench

    logs = user_dir / "elsewhere"
    summary = cooperbench.run(
        run_name="scripted",
        repo="llama_index_task",
        task_id=8394,
        features=[1, 2],
        model_name="gpt-4o",
        agent="mini_swe_agent_v2",
        logs_dir=str(logs),
        auto_eval=False,
        quiet=True,
    )
    assert summary["pairs"] == 1 and summary["graded"] == 0, summary
    config = json.loads((logs / "scripted" / "config.json").read_text())
    assert config["agent"]["name"] == "mini_swe", config["agent"]
    summary = cooperbench.evaluate(
        run_name="scripted", repo="llama_index_task", task_id=8394, features=[1, 2],
        logs_dir=str(logs), quiet=True,
    )
    assert summary["graded"] == 1 and summary["overall_successes"] == 1, summary
    with pytest.raises(ValueError, match="feature 3 does not exist"):
        cooperbench.evaluate(run_name="scripted", features=[1, 3], logs_dir=str(logs), quiet=True)
    with pytest.raises(ValueError, match="no plugin of that name"):
        cooperbench.run(run_name="x", agent="openhands_sdk", logs_dir=str(logs), quiet=True)


def test_the_team_setting_with_cooperbenchs_feature_switches(user_dir):
    import cooperbench
    from cooperbench.team_harness import TeamHarnessConfig

    logs = user_dir / "team"
    summary = cooperbench.run(
        run_name="team-ablation",
        repo="llama_index_task",
        task_id=8394,
        features=[1, 2],
        model_name="oracle",
        agent="mini_swe_agent_v2",
        setting="team",
        team_features=TeamHarnessConfig(task_list=False, mcp=False),
        logs_dir=str(logs),
        auto_eval=False,
        quiet=True,
    )
    assert summary["pairs"] == 1, summary
    run = logs / "team-ablation"
    config = json.loads((run / "config.json").read_text())
    assert config["setting"] == "team"
    assert config["team_features"] == {
        "task_list": False, "scratchpad": True, "mcp": False, "auto_refresh": True, "protocol": True,
    }, config
    (result,) = run.glob("*/task*/features_*/result.json")
    assert json.loads(result.read_text())["lead_agent"] == "agent1"
    with pytest.raises(ValueError, match="unknown feature"):
        TeamHarnessConfig.with_only("task_list", "telepathy")
    with pytest.raises(TypeError, match="a TeamHarnessConfig or a dict"):
        cooperbench.run(run_name="x", setting="team", team_features=["task_list"],
                        logs_dir=str(logs), quiet=True)


def test_the_cooperbench_command_forwards_to_cbench(user_dir):
    command = Path(sys.executable).parent / "cooperbench"
    assert command.exists(), "the wheel installs a `cooperbench` console command"
    env = dict(os.environ)
    out = subprocess.run(
        [str(command), "run", "-n", "cli", "-r", "llama_index_task", "-m", "gpt-4o", "-q"],
        env=env, capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr
    assert pair_eval(user_dir / "logs", "cli")["overall_success"] is True
    out = subprocess.run([str(command), "eval", "-n", "cli", "-c", "2"], env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    out = subprocess.run([str(command), "evla"], env=env, capture_output=True, text=True)
    assert out.returncode == 2 and "'eval'" in out.stderr, out.stderr
