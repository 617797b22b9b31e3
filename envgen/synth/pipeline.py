"""A synthesis run: scenarios, then every world through its stages concurrently, then one atomic catalog write.

Worlds that pass every stage (and so the whole validation gate) go into the catalog;
every other world is recorded in the catalog's `rejected.jsonl` with the stage that
gave up, the attempts it made and the last problems found. Nothing is written until
the end, and then atomically (`envgen.catalog.write_catalog`), so a crash leaves no
catalog, and the rerun replays the finished calls from the response cache.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

from tqdm import tqdm

from envgen.catalog import write_catalog
from envgen.synth.client import EndpointError, TransientError
from envgen.synth.scenarios import scenarios_stage
from envgen.synth.stages import STAGES, WORLD_STAGES, Context, Draft, StageFailed
from envgen.world import Scenario, World


@dataclass
class SynthReport:
    """What a run produced: the catalog path, accepted worlds, rejects with reasons, notes."""

    path: str
    accepted: list[World]
    rejected: list[dict[str, Any]]
    n_scenarios: int
    seconds: float
    notes: list[str] = field(default_factory=list)

    def rejects_by_stage(self) -> dict[str, int]:
        return dict(Counter(r["stage"] for r in self.rejected))


class StageBars:
    """One progress bar per stage (rate and ETA from tqdm); a world rejected early leaves later totals."""

    def __init__(self, n: int, enabled: bool):
        self.bars = {
            s: tqdm(total=n, desc=f"{s:<9}", unit="world" if s != "scenarios" else "scn", position=i,
                    disable=not enabled, dynamic_ncols=True, leave=True)
            for i, s in enumerate(STAGES)
        }

    def done(self, stage: str, k: int = 1) -> None:
        self.bars[stage].update(k)

    def set_total(self, n: int) -> None:
        for s in STAGES[1:]:
            self.bars[s].total = n
            self.bars[s].refresh()

    def dropped(self, after: str) -> None:
        for s in STAGES[STAGES.index(after) + 1 :]:
            self.bars[s].total = max(0, (self.bars[s].total or 0) - 1)
            self.bars[s].refresh()

    def close(self) -> None:
        for b in self.bars.values():
            b.close()


async def build_world(ctx: Context, scenario: Scenario, bars: StageBars) -> World | dict[str, Any]:
    """One scenario through stages 2-6: the World, or a rejection record naming the stage and why."""
    draft: Any = Draft(scenario)
    for stage_fn, stage in zip(WORLD_STAGES, STAGES[1:]):
        try:
            draft = await stage_fn(ctx, draft)
        except StageFailed as e:  # the gate kept refusing, or the endpoint failed (then the reason says so)
            bars.dropped(stage)
            return _reject(scenario, stage, e.attempts, e.errors)
        bars.done(stage)
    return draft


def _reject(scenario: Scenario, stage: str, attempts: int, errors: list[str]) -> dict[str, Any]:
    return {"scenario": scenario.name, "category": scenario.category, "stage": stage, "attempts": attempts, "failures": errors}


async def synthesize(
    ctx: Context,
    *,
    n: int,
    out: str,
    seeds: Sequence[str],
    scenarios: Sequence[Scenario] | None = None,
    category_cap: int | None = None,
    held_out: float = 0.1,
    overwrite: bool = False,
    progress: bool = True,
) -> SynthReport:
    """Synthesize up to `n` worlds through the AWM stages and write the catalog at `out` (atomically).

    Given `scenarios`, the first `n` are used as they are and stage 1 is skipped.
    """
    start = time.perf_counter()
    bars = StageBars(n, progress)
    dedup = None
    try:
        if scenarios is not None:
            scenarios = list(scenarios)[:n]
            ctx.notes.append(f"scenarios: {len(scenarios)} given, stage 1 skipped")
        else:
            try:
                scenarios, dedup = await scenarios_stage(ctx, seeds, n, cap=category_cap)
            except (StageFailed, EndpointError, TransientError) as e:
                scenarios = []
                ctx.notes.append(f"scenarios: {e}")
        bars.done("scenarios", len(scenarios))
        bars.set_total(len(scenarios))
        results = await asyncio.gather(*(build_world(ctx, s, bars) for s in scenarios))
    finally:
        bars.close()
        ctx.slot.close()
    accepted = [r for r in results if isinstance(r, World)]
    rejected = [r for r in results if not isinstance(r, World)]
    if len(scenarios) < n:
        ctx.notes.append(f"scenarios: {len(scenarios)} distinct of {n} requested")
    if dedup is not None and dedup.refused:
        ctx.notes.append(f"scenarios: {len(dedup.refused)} candidates refused by dedup ({ctx.dedup_method} similarity)")
    provenance = {
        "generator": "envgen.synth", "model": ctx.llm.model, "params": ctx.llm.params, "n_requested": n,
        "max_retries": ctx.max_retries, "tasks_per_world": ctx.tasks_per_world, "dedup": ctx.dedup_method,
        "scenarios": [s.name for s in scenarios],
    }
    path = write_catalog(out, accepted, rejected=rejected, held_out=held_out, overwrite=overwrite, provenance=provenance)
    return SynthReport(str(path), accepted, rejected, len(scenarios), time.perf_counter() - start, list(ctx.notes))
