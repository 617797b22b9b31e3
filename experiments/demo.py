"""`make demo`: the main job on the embedded defaults, no network needed.

1. generate a catalog of compact procedural worlds with a train split and a held-out split
   of unseen worlds (different worlds, not just different tasks), and show that every
   difficulty class and task type of the catalog appears in the held-out split;
2. evaluate the embedded SmolLM2-135M-Instruct on held-out tasks;
3. SFT warm start on the train split's gold trajectories, then GRPO steps with the code judge;
4. evaluate again on the same held-out tasks, after SFT and after GRPO; every evaluation
   also runs the teacher-forced gold check on those tasks (per gold call: would the policy
   pick the gold tool, write the whole call?), which moves where completion is still ~0;
5. print a before/after table by difficulty, save reward / loss / completion curves as PNG,
   and leave a run folder with the config, metrics, checkpoints, policies and transcripts.

    python -m experiments.demo [--out runs/demo] [--worlds 400] [--eval-tasks 48]
    python -m experiments.demo --quick     # a tiny configuration (tests; minutes)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
import tomllib
from collections import Counter
from pathlib import Path

CONFIG = Path(__file__).parent / "configs" / "demo.toml"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    ap.add_argument("--config", default=str(CONFIG), help="TOML run config (default experiments/configs/demo.toml)")
    ap.add_argument("--worlds", type=int, default=400, help="compact worlds to generate (default 400)")
    ap.add_argument("--eval-tasks", type=int, default=24, help="held-out tasks evaluated (default 24)")
    ap.add_argument("--policy", default="embedded", help="starting policy (default embedded)")
    ap.add_argument("--quick", action="store_true",
                    help="tiny configuration for tests: tiny-random policy, 40 worlds, 4 eval tasks, 1 SFT and 1 GRPO step")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return run(args)


def run(args) -> int:
    from envgen.build import generate_catalog
    from envgen.catalog import Catalog

    out = Path(args.out)
    previous = _set_aside(out)
    if previous is not None:
        print(f"the last run in {out} was moved to {previous}: every phase starts afresh")
    out.mkdir(parents=True)
    doc = tomllib.loads(Path(args.config).read_text(encoding="utf-8"))
    policy = "tiny-random" if args.quick else args.policy
    n_worlds, n_eval = (40, 4) if args.quick else (args.worlds, args.eval_tasks)
    doc.setdefault("train", {}).update(catalog=str(out / "catalog"), out=str(out / "grpo"), policy=policy)
    if args.quick:
        doc["train"].update(steps=1, tasks_per_step=2, group_size=2)
        doc.setdefault("rollout", {}).update(max_turns=2, max_new_tokens=16)
        doc.setdefault("sft", {}).update(epochs=1, max_tasks=4, batch=1)
    phases: list[tuple[str, float]] = []

    # 1. worlds
    t = time.perf_counter()
    report = generate_catalog(n_worlds, 0, str(out / "catalog"), held_out=0.2, overwrite=True, profile="compact",
                              progress=not args.quick)
    phases.append(("generate + validate worlds", time.perf_counter() - t))
    catalog = Catalog.open(out / "catalog")
    held_out = list(catalog.worlds("held-out"))
    print(f"catalog: {report.accepted} compact worlds ({report.rejected} rejected by the gate); "
          f"train {len(catalog.ids('train'))} worlds, held-out {len(held_out)} unseen worlds")
    print(coverage_table(list(catalog.worlds("train")), held_out))

    from awmjax.config import RunConfig

    cfg = RunConfig.from_dict(doc, source=args.config)
    _write_json(out / "config.json", cfg.to_dict())
    eval_worlds = _eval_worlds(held_out, n_eval)

    # 2. before
    t = time.perf_counter()
    n_eval = sum(len(w.tasks) for w in eval_worlds)
    gold: dict = {}  # the eval tasks' gold trajectories, played once for every gold check
    before, gc_before = _evaluate(policy, cfg, eval_worlds, n_eval, out / "eval" / "before", quick=args.quick,
                                  gold=gold)
    phases.append(("evaluate untrained", time.perf_counter() - t))

    # 3a. SFT warm start
    from awmjax.sft import run_sft

    t = time.perf_counter()
    sft_dir = run_sft(RunConfig.from_dict(doc, source=args.config), out=out / "sft", progress=not args.quick)
    phases.append(("SFT warm start", time.perf_counter() - t))
    t = time.perf_counter()
    after_sft, gc_sft = _evaluate(str(sft_dir), cfg, eval_worlds, n_eval, out / "eval" / "after_sft",
                                  quick=args.quick, gold=gold)
    phases.append(("evaluate after SFT", time.perf_counter() - t))

    # 3b. GRPO from the SFT policy, code judge
    from awmjax.train import train

    doc["train"]["policy"] = str(sft_dir / "policy")
    t = time.perf_counter()
    grpo_dir = train(RunConfig.from_dict(doc, source=args.config), progress=not args.quick)
    phases.append(("GRPO", time.perf_counter() - t))
    t = time.perf_counter()
    after, gc_after = _evaluate(str(grpo_dir), cfg, eval_worlds, n_eval, out / "eval" / "after_grpo",
                                quick=args.quick, gold=gold)
    phases.append(("evaluate after GRPO", time.perf_counter() - t))

    # 5. report
    summary = {"before": before.to_json(), "after_sft": after_sft.to_json(), "after_grpo": after.to_json(),
               "gold_check": {k: {g: v for g, v in r.to_json().items() if g != "turns"}
                              for k, r in (("before", gc_before), ("after_sft", gc_sft), ("after_grpo", gc_after))},
               "phases": dict(phases)}
    for v in summary.values():
        if isinstance(v, dict):
            v.pop("episodes", None)
    _write_json(out / "summary.json", summary)
    print("\n" + comparison_table([("untrained", before), ("after SFT", after_sft), ("after SFT + GRPO", after)]))
    print(f"\nheld-out completion: before {100 * before.completion:.1f}% -> after {100 * after.completion:.1f}% "
          f"(SFT alone {100 * after_sft.completion:.1f}%; {before.overall.episodes} tasks on "
          f"{len(eval_worlds)} unseen worlds)")
    checks = (gc_before, gc_sft, gc_after)
    rates = [r.rates() for r in checks]
    print(f"held-out gold check (teacher-forced, the same {rates[0]['calls']} gold calls of those tasks): "
          f"tool picked {_arrow([x['tool']['rate'] for x in rates])}; "
          f"whole call {_arrow([x['exact']['rate'] for x in rates])}  (untrained -> SFT -> SFT + GRPO)")
    if cfg.rollout.constrain_calls:
        print("every phase decoded tool calls under the tools' JSON schemas (rollout.constrain_calls): a call names "
              "a listed tool with arguments its schema accepts; which tool, which values, and when to answer are "
              "the policy's")
    pngs = _plots(out, [("untrained", before), ("after SFT", after_sft), ("after SFT + GRPO", after)], checks)
    print("plots: " + ", ".join(str(p) for p in pngs))
    print("phase wall times: " + ", ".join(f"{name} {secs:.0f}s" for name, secs in phases)
          + f"; total {sum(s for _, s in phases):.0f}s")
    print(f"run folder: {out}  (config.json, summary.json, sft/, grpo/ with checkpoints and metrics, "
          f"eval/*/transcripts/)")
    return 0


def _set_aside(out: Path) -> Path | None:
    """Move a previous run's folder to `<out>.previous` (replacing an older one there), so this
    run starts from nothing: the GRPO trainer resumes from checkpoints it finds in its folder,
    and would otherwise pick up the last run's steps after a new SFT policy (a second
    `make demo` then skipped GRPO and evaluated the old policy). Returns where it went."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise SystemExit(f"demo --out {out}: exists and is not a folder; pass another --out")
    if not any(out.iterdir()):
        out.rmdir()
        return None
    previous = out.with_name(out.name + ".previous")
    if previous.exists():
        shutil.rmtree(previous)
    out.rename(previous)
    return previous


def _eval_worlds(held_out, n_tasks: int):
    """Whole held-out worlds covering every difficulty class and task type present in the split
    first (a world that adds a kind not yet covered is taken before others), then in catalog
    order until n_tasks tasks are covered."""
    from awmjax.eval import difficulty_class

    def kinds(w):
        return {difficulty_class(t.difficulty) for t in w.tasks} | {tag for t in w.tasks for tag in t.tags}

    out, covered = [], set()
    for w in held_out:  # pass 1: coverage
        if kinds(w) - covered:
            out.append(w)
            covered |= kinds(w)
    for w in held_out:  # pass 2: fill
        if sum(len(x.tasks) for x in out) >= n_tasks:
            break
        if w not in out:
            out.append(w)
    return out


def _arrow(values) -> str:
    return " -> ".join(f"{100 * v:.1f}%" for v in values)


def _evaluate(source: str, cfg, worlds, limit: int, out: Path, *, quick: bool, gold: dict):
    """The held-out evaluation of one policy (episodes, `awmjax eval`) and its gold check
    (teacher-forced, `awmjax eval --gold-check`) on the same tasks; `gold` holds the gold
    samples between calls, played in the pool on the first."""
    from awmjax.eval import evaluate, write_report
    from awmjax.files import write_atomic
    from awmjax.goldcheck import frozen_layers, gold_check, gold_samples
    from awmjax.policy import load_policy
    from awmjax.sampler import Sampler
    from awmjax.sampling import SamplingConfig

    model, model_cfg, tok = load_policy(source, dtype=cfg.train.dtype, seed=cfg.train.seed)
    sampler = Sampler(model, model_cfg, max_cache_len=cfg.rollout.max_context, pad_id=tok.pad_id,
                      decode_fn=tok.decode)
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=cfg.rollout.max_new_tokens,
                              stop_token_ids=tuple(tok.stop_token_ids))
    name = {"tiny-random": "tiny-random", "embedded": "embedded SmolLM2-135M-Instruct"}.get(source, source)
    report = evaluate(sampler, tok, worlds, cfg.rollout, sampling, policy_name=name, split="held-out", limit=limit,
                      batch=min(limit, 32), progress=not quick)
    write_report(report, out)
    print("\n" + report.table())
    if "samples" not in gold:
        # SFT and GRPO train only the top layers: the ones below are the untrained policy's,
        # so their output is computed once for all three checks (gold_samples compares them)
        gold["samples"] = gold_samples(tok, worlds, cfg.rollout, limit=limit, row_tokens=cfg.rollout.max_context,
                                       share_layer=frozen_layers(model_cfg.num_layers, cfg.optim.train_top_layers))
    check = gold_check(model, tok, gold["samples"], policy_name=name, progress=not quick)
    write_atomic(out / "gold_check.json", json.dumps(check.to_json(), indent=1))
    print(check.table())
    return report, check


def coverage_table(train_worlds, held_out) -> str:
    """Tasks per difficulty class and per task type in each split (the held-out split must cover all)."""
    from awmjax.eval import DIFFICULTY_CLASSES, difficulty_class

    def counts(worlds):
        c = Counter()
        for w in worlds:
            for task in w.tasks:
                c[difficulty_class(task.difficulty)] += 1
                c.update(task.tags)
        return c

    tr, ho = counts(train_worlds), counts(held_out)
    keys = [k for k in DIFFICULTY_CLASSES if tr[k] or ho[k]] + sorted(k for k in tr | ho if k not in DIFFICULTY_CLASSES)
    missing = [k for k in keys if tr[k] and not ho[k]]
    lines = [f"{'tasks by kind':<16}{'train':>8}{'held-out':>10}"]
    lines += [f"{k:<16}{tr[k]:>8}{ho[k]:>10}" for k in keys]
    lines.append("every difficulty class and task type of the catalog is in the held-out split" if not missing
                 else f"missing from the held-out split: {', '.join(missing)}")
    return "\n".join(lines)


def comparison_table(reports) -> str:
    """Completion (and other outcomes) of each policy, overall and by difficulty."""
    from awmjax.eval import DIFFICULTY_CLASSES

    head = f"{'held-out completion':<22}{'n':>5}" + "".join(f"{name:>22}" for name, _ in reports)
    lines = [head]

    def cell(summary):
        lo, hi = summary.intervals["complete"]
        return f"{100 * summary.rates['complete']:5.1f}% [{100 * lo:4.1f},{100 * hi:5.1f}]"

    first = reports[0][1]
    lines.append(f"{'all tasks':<22}{first.overall.episodes:>5}" + "".join(f"{cell(r.overall):>22}" for _, r in reports))
    for k in DIFFICULTY_CLASSES:
        if k in first.by_difficulty:
            lines.append(f"{'  ' + k:<22}{first.by_difficulty[k].episodes:>5}"
                         + "".join(f"{cell(r.by_difficulty[k]) if k in r.by_difficulty else '-':>22}" for _, r in reports))
    for outcome, label in (("partial", "partial"), ("format_error", "format errors"), ("env_error", "env errors")):
        lines.append(f"{label:<22}{'':>5}" + "".join(f"{100 * r.overall.rates[outcome]:>21.1f}%" for _, r in reports))
    lines.append("completion in %, [95% Wilson interval]")
    return "\n".join(lines)


def _plots(out: Path, reports, checks) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from awmjax.eval import DIFFICULTY_CLASSES
    from awmjax.plots import plot_run, save_figure

    paths = []
    if (out / "grpo" / "metrics.jsonl").is_file():
        paths.append(plot_run(out / "grpo"))
    fig, axes = plt.subplots(1, 3, figsize=(18, 4))
    rows = [json.loads(line) for line in (out / "sft" / "metrics.jsonl").read_text().splitlines() if line.strip()]
    axes[0].plot([r["step"] for r in rows], [r["nll"] for r in rows], marker=".")
    axes[0].set_title("SFT: negative log-likelihood of the policy's turns")
    axes[0].set_xlabel("update")
    classes = ["all tasks"] + [k for k in DIFFICULTY_CLASSES if k in reports[0][1].by_difficulty]
    width = 0.8 / len(reports)
    for i, (name, r) in enumerate(reports):
        vals = [100 * r.completion] + [100 * r.by_difficulty[k].rates["complete"] if k in r.by_difficulty else 0.0
                                       for k in classes[1:]]
        axes[1].bar([x + i * width for x in range(len(classes))], vals, width, label=name)
    axes[1].set_xticks([x + width * (len(reports) - 1) / 2 for x in range(len(classes))], classes)
    axes[1].set_ylabel("held-out completion (%)")
    axes[1].set_title("held-out task completion by difficulty")
    axes[1].legend()
    groups = [("tool", "first calls"), ("tool", "later calls"), ("exact", "all turns")]
    for i, ((name, _), check) in enumerate(zip(reports, checks)):
        by_group = {g: check.rates(sel) for g, sel in check.groups().items()}
        axes[2].bar([x + i * width for x in range(len(groups))], [100 * by_group[g][k]["rate"] for k, g in groups],
                    width, label=name)
    axes[2].set_xticks([x + width * (len(reports) - 1) / 2 for x in range(len(groups))],
                       ["tool, first calls", "tool, later calls", "whole call"])
    axes[2].set_ylabel("% of held-out gold calls")
    axes[2].set_title("gold check (teacher-forced) on the same tasks")
    axes[2].legend()
    return paths + [save_figure(fig, out / "completion.png")]


def _write_json(path: Path, doc) -> None:
    from awmjax.files import write_atomic

    write_atomic(path, json.dumps(doc, indent=1, default=str))


if __name__ == "__main__":
    raise SystemExit(main())
