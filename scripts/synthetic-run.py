#!/usr/bin/env python3
"""Writes a synthetic cbench run of N pairs for benchmarking `cbench view` (and anything else that
reads runs): every file is shaped from a real run's pair (the template), with agents stretched to
S steps of realistic size and verdicts, spends and times drawn from a fixed seed.

    scripts/synthetic-run.py TEMPLATE_RUN_DIR OUT_RUN_DIR [--pairs 652] [--steps 100] [--repos 12]
"""
import argparse
import copy
import json
import os
import random
import shutil


def load(path):
    with open(path) as f:
        return json.load(f)


def dump(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(value, f)


def template_pair(run_dir):
    for root, dirs, files in os.walk(run_dir):
        if os.path.basename(root).startswith("features_") and "eval.json" in files:
            return root
    raise SystemExit(f"{run_dir}: no graded pair to use as a template")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("template")
    ap.add_argument("out")
    ap.add_argument("--pairs", type=int, default=652)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repos", type=int, default=12)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    tpl = template_pair(args.template)
    result_t = load(os.path.join(tpl, "result.json"))
    eval_t = load(os.path.join(tpl, "eval.json"))
    traj_t = {a: load(os.path.join(tpl, a, "trajectory.json")) for a in ("agent1", "agent2")}
    patch_t = {a: open(os.path.join(tpl, a, "patch.diff")).read() for a in ("agent1", "agent2")}
    conv_t = load(os.path.join(tpl, "conversation.json"))

    if os.path.exists(args.out):
        shutil.rmtree(args.out)
    config = load(os.path.join(args.template, "config.json"))
    config["name"] = os.path.basename(os.path.abspath(args.out))
    dump(os.path.join(args.out, "config.json"), config)

    observation = "\n".join(f"line {i}: " + "x" * 60 for i in range(25))  # ~1.7 KB, like `cat`
    made = 0
    task = 0
    while made < args.pairs:
        task += 1
        repo = f"synthetic{task % args.repos}_task"
        for a in range(1, 6):
            for b in range(a + 1, 6):
                if made >= args.pairs:
                    break
                made += 1
                pair_dir = os.path.join(args.out, repo, f"task{task}", f"features_{a}_{b}")
                ok1, ok2 = rng.random() < 0.7, rng.random() < 0.7
                conflict = rng.random() < 0.25
                merged_ok = ok1 and ok2 and (not conflict or rng.random() < 0.5)
                result = copy.deepcopy(result_t)
                result.update(repo=repo, task_id=task, features=[a, b], run_name=config["name"])
                result["duration_s"] = rng.uniform(30, 900)
                for agent, feature in zip(result["agents"], (a, b)):
                    agent["feature_ids"] = [feature]
                    agent["steps"] = args.steps
                    agent["cost_usd"] = rng.uniform(0.05, 2.0)
                    agent["token_usage"]["total_tokens"] = rng.randint(50_000, 900_000)
                dump(os.path.join(pair_dir, "result.json"), result)
                ev = copy.deepcopy(eval_t)
                ev["feature_ids"] = [a, b]
                ev["agent1"]["success"], ev["agent2"]["success"] = ok1, ok2
                ev["merged"].update(success=merged_ok, merge_conflict=conflict,
                                    merge_strategy="union" if conflict else "naive")
                ev["merge_strategy"] = ev["merged"]["merge_strategy"]
                ev["overall_success"] = merged_ok
                dump(os.path.join(pair_dir, "eval.json"), ev)
                for agent in ("agent1", "agent2"):
                    t = copy.deepcopy(traj_t[agent])
                    base = t["steps"][-1] if t["steps"] else {"action": "bash", "args": {}, "timestamp": t["start_time"]}
                    t["steps"] = [
                        dict(base, action="bash", args={"command": f"cat file{k}.py | head -25"},
                             observation=observation)
                        for k in range(args.steps)
                    ]
                    dump(os.path.join(pair_dir, agent, "trajectory.json"), t)
                    with open(os.path.join(pair_dir, agent, "patch.diff"), "w") as f:
                        f.write(patch_t[agent])
                dump(os.path.join(pair_dir, "conversation.json"), conv_t)
                with open(os.path.join(pair_dir, "merged.diff"), "w") as f:
                    f.write(patch_t["agent1"] + patch_t["agent2"])
    print(f"wrote {made} pairs into {args.out}")


if __name__ == "__main__":
    main()
