"""Benchmark: how much of a slow judge's time the asynchronous overlap hides.

For a judge that takes L seconds per verdict (L = 0, 0.5, 2 by default), train the same
short run twice: synchronously ([judge] max_lag = 0: roll out, wait for the verdicts,
update) and overlapped (max_lag = 1: the next batch is sampled while verdicts are
pending). Reports the median step time of each, the time the trainer sat blocked on
judgements in each mode, and the share of judge time hidden:

    hidden = 1 - wait_overlap(L) / wait_sync(L)

(step-time differences are printed too, but on a shared 2-core machine their noise is
larger than small L, so the blocked time is the measure.)

The overlap can hide at most the rollout + update time of a step; the table prints
that time so the reader can see which L are below it.

    python experiments/bench_overlap.py [--policy tiny-random] [--steps 6]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from awmjax.config import RunConfig
from awmjax.train import train
from envgen.build import generate_catalog


def run(catalog: str, out: Path, policy: str, steps: int, latency: float, lag: int, tasks: int, group: int) -> list[dict]:
    cfg = RunConfig.from_dict({
        "train": {"catalog": catalog, "out": str(out), "policy": policy, "steps": steps, "tasks_per_step": tasks,
                  "group_size": group, "micro_batch": 4, "checkpoint_every": 10_000, "max_cache_len": 1024},
        # the mcp surface keeps prompts short (list_tools / call_tool), so a step is seconds on CPU
        "rollout": {"max_turns": 2, "max_new_tokens": 16, "max_context": 1024, "surface": "mcp"},
        "judge": {"name": f"delayed-code:{latency}", "max_lag": lag, "concurrency": 1024},
    })
    train(cfg, progress=False)
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", default="tiny-random")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--latencies", default="0,0.5,2")
    ap.add_argument("--tasks", type=int, default=4)
    ap.add_argument("--group", type=int, default=4)
    args = ap.parse_args()
    latencies = [float(x) for x in args.latencies.split(",")]
    with tempfile.TemporaryDirectory() as root:
        catalog = str(generate_catalog(8, 0, f"{root}/catalog", held_out=0.0, progress=False).path)
        table = {}
        for L in latencies:
            for lag in (0, 1):
                rows = run(catalog, Path(root) / f"L{L}-lag{lag}", args.policy, args.steps, L, lag, args.tasks, args.group)
                steady = rows[2:] or rows[1:]  # drop the compile step (and the overlap's fill step)
                table[(L, lag)] = {
                    "step": statistics.median(r["step_seconds"] for r in steady),
                    "work": statistics.median(r["rollout_seconds"] + r["train_seconds"] for r in steady),
                    "wait": statistics.median(r["judge_wait_seconds"] for r in steady),
                }
    print(f"\npolicy {args.policy}, {args.tasks} tasks x {args.group} episodes per step, median over steps 3..{args.steps}")
    print(f"{'judge L (s)':>12}{'rollout+update (s)':>20}{'sync step (s)':>15}{'overlap step (s)':>18}{'wait sync/ovl (s)':>20}{'judge time hidden':>19}")
    for L in latencies:
        s, o = table[(L, 0)], table[(L, 1)]
        hidden = "-" if s["wait"] <= 1e-3 else f"{100 * (1 - o['wait'] / s['wait']):.0f}%"
        print(f"{L:>12g}{s['work']:>20.2f}{s['step']:>15.2f}{o['step']:>18.2f}{s['wait']:>11.2f}/{o['wait']:<8.2f}{hidden:>19}")
    print("\ntarget: at least 90% hidden while L is below the rollout + update time")


if __name__ == "__main__":
    main()
