"""Building catalogs: generate and validate worlds in parallel worker processes, then write.

Each worker generates a world from (seed, index), runs the validation gate on it and
returns the canonical JSON with any failures; the parent writes passing worlds to the
catalog and failing ones, with their reasons, to rejected.jsonl.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from tqdm import tqdm

from envgen.catalog import write_catalog
from envgen.gate import validate_world
from envgen.world import World, dumps, loads


@dataclass(frozen=True)
class BuildReport:
    """What a catalog build did."""

    path: str
    accepted: int
    rejected: int
    seconds: float
    failures_by_rule: dict[str, int]


_SLOT = None


def _generate_and_validate(job: tuple[int, int, str]) -> tuple[int, str, list[dict[str, Any]]]:
    from envgen.procgen import generate_world
    from envgen.runtime import Slot

    global _SLOT
    if _SLOT is None:
        _SLOT = Slot()  # one sandboxed connection per worker, reused for every world
    seed, index, profile = job
    world = generate_world(seed, index, profile)
    failures = validate_world(world, _SLOT)
    return index, dumps(world), [f.__dict__ for f in failures]


def generate_catalog(
    n: int,
    seed: int,
    out: str,
    *,
    workers: int | None = None,
    held_out: float = 0.1,
    overwrite: bool = False,
    progress: bool = True,
    profile: str = "full",
) -> BuildReport:
    """Generate `n` procedural worlds, validate each, and write the catalog at `out`.

    `profile` is "full" (the default catalog) or "compact" (fewer tools and tasks per
    world, for CPU-sized demos; see envgen.procgen.generate_world)."""
    from envgen.procgen import PROFILES

    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r}; allowed: {', '.join(PROFILES)}")
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    workers = workers or os.cpu_count() or 1
    start = time.perf_counter()
    results: list[tuple[int, str, list]] = []
    jobs = [(seed, i, profile) for i in range(n)]
    bar = tqdm(total=n, desc="generate+validate", unit="world", disable=not progress, dynamic_ncols=True)
    if workers == 1:
        for job in jobs:
            results.append(_generate_and_validate(job))
            bar.update()
    else:
        ctx = mp.get_context("fork")
        with ctx.Pool(workers) as pool:
            for r in pool.imap_unordered(_generate_and_validate, jobs, chunksize=8):
                results.append(r)
                bar.update()
    bar.close()
    results.sort(key=lambda r: r[0])  # output order independent of scheduling
    accepted = [loads(text) for _, text, fails in results if not fails]
    rejected = [{"index": i, "world": loads(text).id, "failures": fails} for i, text, fails in results if fails]
    by_rule: dict[str, int] = {}
    for r in rejected:
        for f in r["failures"]:
            by_rule[f["rule"]] = by_rule.get(f["rule"], 0) + 1
    path = write_catalog(
        out,
        accepted,
        rejected=rejected,
        held_out=held_out,
        overwrite=overwrite,
        provenance={"generator": "envgen.procgen", "profile": profile, "seed": seed, "n_requested": n, "held_out": held_out},
    )
    return BuildReport(str(path), len(accepted), len(rejected), time.perf_counter() - start, by_rule)


def validate_many(
    worlds: Iterable[World], *, on_result: Callable[[World, list], None] | None = None, progress: bool = True
) -> dict[str, list]:
    """Run the gate on many worlds in this process; world id -> failures."""
    from envgen.runtime import Slot

    slot = Slot()
    out = {}
    try:
        for world in tqdm(list(worlds), desc="validate", unit="world", disable=not progress, dynamic_ncols=True):
            failures = validate_world(world, slot)
            out[world.id] = failures
            if on_result:
                on_result(world, failures)
    finally:
        slot.close()
    return out
