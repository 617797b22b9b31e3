"""Benchmark: generate and validate N procedural worlds into a catalog (issue figure: 1,000 in < 2 min).

Prints the wall time of the whole build, the rate, the gate's verdicts, and the
catalog's summary table; compares one worker with all cores when --compare is given.

    python experiments/bench_generate.py --n 1000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from envgen.build import generate_catalog
from envgen.catalog import Catalog
from envgen.stats import format_summary, summarize


def run(n: int, seed: int, workers: int, out_root: str) -> tuple[float, int, int]:
    out = os.path.join(out_root, f"catalog-w{workers}")
    t0 = time.perf_counter()
    report = generate_catalog(n, seed, out, workers=workers, overwrite=True)
    return time.perf_counter() - t0, report.accepted, report.rejected


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--compare", action="store_true", help="also run with one worker, for the scaling row")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as root:
        rows = []
        for w in ([1] if args.compare else []) + [args.workers]:
            secs, ok, bad = run(args.n, args.seed, w, root)
            rows.append((w, secs, ok, bad))
        summary = summarize(Catalog.open(os.path.join(root, f"catalog-w{args.workers}")).worlds())
    print(f"\n{'workers':>8}{'seconds':>10}{'worlds/s':>10}{'accepted':>10}{'rejected':>10}")
    for w, secs, ok, bad in rows:
        print(f"{w:>8}{secs:>10.1f}{(ok + bad) / secs:>10.1f}{ok:>10}{bad:>10}")
    w, secs, ok, bad = rows[-1]
    print(f"\n{args.n} worlds generated and validated in {secs:.1f}s on {w} worker(s) "
          f"(target < 120 s); {100 * ok / (ok + bad):.1f}% pass the gate (target 100%)\n")
    print(format_summary(summary))


if __name__ == "__main__":
    main()
