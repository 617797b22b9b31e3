"""`make demo`: the main job on the embedded defaults, no network needed.

Today it generates a catalog of procedural worlds with train / held-out splits, runs
the validation gate over it, replays every gold sequence of one held-out world
through the state runtime, and prints the catalog's summary table. Training and
evaluation phases join here as the engine grows (see the issues).

    python -m experiments.demo [--n 1000] [--out runs/demo]
"""

from __future__ import annotations

import argparse
import os
import time

from envgen.build import generate_catalog
from envgen.catalog import Catalog
from envgen.runtime import Episode, Slot, compile_world
from envgen.stats import format_summary, summarize


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="worlds to generate (default 1000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    args = ap.parse_args()
    catalog_dir = os.path.join(args.out, "catalog")
    phases = []

    t = time.perf_counter()
    report = generate_catalog(args.n, args.seed, catalog_dir, overwrite=True)
    phases.append(("generate + validate", time.perf_counter() - t))
    print(f"catalog: {report.path}  ({report.accepted} accepted, {report.rejected} rejected by the gate)")

    cat = Catalog.open(catalog_dir)
    t = time.perf_counter()
    world = cat.get(cat.ids("held-out")[0])
    compiled, slot = compile_world(world), Slot()
    print(f"\nreplaying the gold sequences of held-out world {world.id} [{world.scenario.category}]:")
    for task in world.tasks:
        ep = Episode(slot, compiled, task)
        outcomes = [ep.call(c.tool, c.arguments).outcome for c in task.gold or ()]
        verdict = ep.verdict(task.answer)
        ep.close()
        print(f"  {task.id:<10} {len(outcomes)} calls {'/'.join(sorted(set(outcomes))) or '-':<10} -> {verdict.result:<10} {task.instruction[:70]}")
    slot.close()
    phases.append(("replay one world", time.perf_counter() - t))

    t = time.perf_counter()
    summary = summarize(cat.worlds())
    phases.append(("summarize", time.perf_counter() - t))
    print("\n" + format_summary(summary))
    print("splits: " + ", ".join(f"{k} {len(v)} worlds" for k, v in cat.index["splits"].items()))
    print("\nphase wall times: " + ", ".join(f"{name} {secs:.1f}s" for name, secs in phases))


if __name__ == "__main__":
    main()
