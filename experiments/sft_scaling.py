"""How much does the SFT warm start learn per task of gold data, on worlds it never saw?

For each SFT size N (gold tasks of the train split, the demo's recipe otherwise), train
from the embedded policy and score it with the teacher-forced gold check on the same
held-out tasks: how often it would pick the gold tool, and write the whole gold call.
The untrained policy is the N = 0 row. Completion over whole episodes is too coarse at
this scale (it moves one task at a time); the check compares every policy on identical
contexts. Prints a table, writes OUT/scaling.json and OUT/scaling.png.

    python -m experiments.sft_scaling                       # N = 32, 64, 128 (about 22 min on 2 cores)
    python -m experiments.sft_scaling --tasks 16,32 --check-tasks 24 --out /tmp/scaling
"""

from __future__ import annotations

import argparse
import json
import os
import time
import tomllib
from pathlib import Path

CONFIG = Path(__file__).parent / "configs" / "demo.toml"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="32,64,128", help="SFT sizes in gold tasks, comma-separated (default 32,64,128)")
    ap.add_argument("--check-tasks", type=int, default=48, help="held-out tasks in the gold check (default 48)")
    ap.add_argument("--catalog", help="catalog to use (default: OUT/catalog, 400 compact worlds like make demo)")
    ap.add_argument("--config", default=str(CONFIG), help="run config (default experiments/configs/demo.toml)")
    ap.add_argument("--policy", default="embedded", help="starting policy (default embedded; tiny-random in tests)")
    ap.add_argument("--out", default="runs/sft_scaling", help="output folder (default runs/sft_scaling)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        sizes = sorted({int(x) for x in args.tasks.split(",") if x.strip()})
    except ValueError:
        raise SystemExit(f"--tasks {args.tasks!r}: give whole numbers separated by commas, e.g. 32,64,128") from None
    if not sizes or min(sizes) < 1:
        raise SystemExit(f"--tasks {args.tasks!r}: give at least one size >= 1")
    return run(args, sizes)


def run(args, sizes: list[int]) -> int:
    from awmjax.config import RunConfig
    from awmjax.files import write_atomic
    from awmjax.goldcheck import frozen_layers, gold_check, gold_samples
    from awmjax.policy import load_policy
    from awmjax.sft import run_sft
    from envgen.build import generate_catalog
    from envgen.catalog import Catalog

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    catalog_dir = Path(args.catalog) if args.catalog else out / "catalog"
    if not (catalog_dir / "index.json").is_file():
        if args.catalog:
            raise SystemExit(f"--catalog {args.catalog}: no catalog there (index.json missing); generate one with "
                             f"`awmjax worlds generate` or leave --catalog out")
        generate_catalog(400, 0, str(catalog_dir), held_out=0.2, overwrite=True, profile="compact", progress=True)
    catalog = Catalog.open(catalog_dir)
    held_out = list(catalog.worlds("held-out"))
    doc = tomllib.loads(Path(args.config).read_text(encoding="utf-8"))
    doc.setdefault("train", {}).update(catalog=str(catalog_dir), policy=args.policy, out=str(out / "unused"))
    run_cfg = RunConfig.from_dict(doc, source=args.config)
    rollout, top = run_cfg.rollout, run_cfg.optim.train_top_layers
    gold = None  # the held-out gold trajectories, played once; with train_top_layers every policy
    # shares the untrained one's lower layers, whose output is then computed once (compared first)

    rows, t_start = [], time.perf_counter()
    work = [0] + sizes  # the untrained policy, then each SFT size
    done_tasks = 0
    for i, n in enumerate(work):
        t = time.perf_counter()
        if n == 0:
            source, sft_seconds, tokens = args.policy, 0.0, 0
        else:
            doc["sft"] = {**doc.get("sft", {}), "max_tasks": n}
            sft_dir = run_sft(RunConfig.from_dict(doc, source=args.config), out=out / f"sft-{n}", progress=True)
            summary = json.loads((sft_dir / "summary.json").read_text())
            source, sft_seconds, tokens = str(sft_dir / "policy"), time.perf_counter() - t, summary["train_tokens"]
        model, model_cfg, tok = load_policy(source)
        if gold is None:
            gold = gold_samples(tok, held_out, rollout, limit=args.check_tasks, row_tokens=rollout.max_context,
                                share_layer=frozen_layers(model_cfg.num_layers, top))
        report = gold_check(model, tok, gold, policy_name=source, progress=True)
        groups = report.to_json()["groups"]
        rows.append({"sft_tasks": n, "sft_seconds": sft_seconds, "train_tokens": tokens, "checked_tasks": report.tasks,
                     "gold_calls": groups["all turns"]["calls"], "all": groups["all turns"],
                     "first_calls": groups["first calls"], "later_calls": groups["later calls"]})
        write_atomic(out / f"gold_check-{n}.json", json.dumps(report.to_json(), indent=1))
        # progress: SFT cost grows with its tasks, so the ETA weighs what is left by tasks
        done_tasks += n
        elapsed = time.perf_counter() - t_start
        left = sum(work[i + 1:])
        eta = f", about {elapsed / done_tasks * left / 60:.1f} min left" if done_tasks and left else ""
        print(f"[{i + 1}/{len(work)}] {n} SFT tasks: tool {100 * report.tool_rate:.1f}%  "
              f"({time.perf_counter() - t:.0f}s; elapsed {elapsed / 60:.1f} min{eta})", flush=True)
    write_atomic(out / "scaling.json", json.dumps({"check_tasks": args.check_tasks, "rows": rows}, indent=1))
    print("\n" + table(rows))
    print(f"plot: {plot(rows, out / 'scaling.png')}")
    return 0


def table(rows) -> str:
    def pct(g, k):
        lo, hi = g[k]["interval"]
        return f"{100 * g[k]['rate']:5.1f} [{100 * lo:4.1f},{100 * hi:5.1f}]"

    lines = [f"{'SFT tasks':>9}{'SFT s':>8}{'tokens':>9}{'checked':>9}{'calls':>7}"
             f"{'tool (all calls)':>22}{'tool (first calls)':>22}{'whole call':>22}"]
    for r in rows:
        lines.append(f"{r['sft_tasks']:>9}{r['sft_seconds']:>8.0f}{r['train_tokens']:>9}{r['checked_tasks']:>9}"
                     f"{r['gold_calls']:>7}{pct(r['all'], 'tool'):>22}{pct(r['first_calls'], 'tool'):>22}"
                     f"{pct(r['all'], 'exact'):>22}")
    lines.append("held-out gold check (teacher-forced), % of gold calls [95% Wilson interval]; "
                 "SFT tasks 0 = the untrained policy")
    return "\n".join(lines)


def plot(rows, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from awmjax.plots import save_figure

    fig, ax = plt.subplots(figsize=(7, 4))
    xs = [max(r["sft_tasks"], 1) for r in rows]
    for key, group, label in (("tool", "all", "tool, all calls"), ("tool", "first_calls", "tool, first calls"),
                              ("exact", "all", "whole call")):
        ys = [100 * r[group][key]["rate"] for r in rows]
        lo = [100 * (r[group][key]["rate"] - r[group][key]["interval"][0]) for r in rows]
        hi = [100 * (r[group][key]["interval"][1] - r[group][key]["rate"]) for r in rows]
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(r["sft_tasks"]) for r in rows])
    ax.set_xlabel("SFT gold tasks (0 = untrained)")
    ax.set_ylabel("% of held-out gold calls")
    ax.set_title("teacher-forced gold check on unseen worlds vs SFT data")
    ax.legend()
    return save_figure(fig, path)


if __name__ == "__main__":
    raise SystemExit(main())
