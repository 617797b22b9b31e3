"""Summary statistics of a set of worlds, in the shape of AWM's table (mean / median / P90)."""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any, Iterable

from envgen.world import World


def _p90(values: list[float]) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))] if s else 0.0


def summarize(worlds: Iterable[World]) -> dict[str, Any]:
    """Per-world and per-task distributions plus distinct-name counts."""
    per_world: dict[str, list[float]] = {"tables": [], "tools": [], "seed rows": [], "tasks": []}
    calls: list[float] = []
    categories: Counter = Counter()
    tags: Counter = Counter()
    names = {"tool names": set(), "table names": set(), "column names": set(), "scenario names": set()}
    n = 0
    for w in worlds:
        n += 1
        per_world["tables"].append(len(w.seed) or len(w.schema))
        per_world["tools"].append(len(w.tools))
        per_world["seed rows"].append(w.seed_row_count())
        per_world["tasks"].append(len(w.tasks))
        categories[w.scenario.category] += 1
        names["scenario names"].add(w.scenario.name)
        names["tool names"].update(t.name for t in w.tools)
        for table, spec in w.seed.items():
            names["table names"].add(table)
            names["column names"].update(spec["columns"])
        for t in w.tasks:
            calls.append(t.difficulty)
            tags.update(t.tags)
    rows = {k: _dist(v) for k, v in per_world.items()}
    rows["calls per gold sequence"] = _dist(calls)
    return {
        "worlds": n,
        "tasks": len(calls),
        "distributions": rows,
        "share of tasks with >= 3 calls": (sum(c >= 3 for c in calls) / len(calls)) if calls else 0.0,
        "categories": dict(sorted(categories.items())),
        "task tags": dict(sorted(tags.items())),
        "distinct names": {k: len(v) for k, v in names.items()},
    }


def _dist(values: list[float]) -> dict[str, float]:
    if not values:
        return {"mean": 0.0, "median": 0.0, "p90": 0.0, "min": 0.0, "max": 0.0}
    return {
        "mean": statistics.fmean(values),
        "median": statistics.median(values),
        "p90": _p90(values),
        "min": min(values),
        "max": max(values),
    }


def format_summary(s: dict[str, Any]) -> str:
    """The summary as a plain-text table."""
    lines = [f"{s['worlds']} worlds, {s['tasks']} tasks", "", f"{'per world / task':<26}{'mean':>8}{'median':>8}{'P90':>8}{'min':>7}{'max':>7}"]
    for name, d in s["distributions"].items():
        lines.append(f"{name:<26}{d['mean']:>8.1f}{d['median']:>8.1f}{d['p90']:>8.1f}{d['min']:>7.0f}{d['max']:>7.0f}")
    lines += ["", f"tasks needing >= 3 calls: {100 * s['share of tasks with >= 3 calls']:.1f}%", ""]
    lines.append("distinct names: " + ", ".join(f"{k} {v}" for k, v in s["distinct names"].items()))
    lines.append(f"categories ({len(s['categories'])}): " + ", ".join(f"{k} {v}" for k, v in s["categories"].items()))
    if s["task tags"]:
        lines.append("task types: " + ", ".join(f"{k} {v}" for k, v in s["task tags"].items()))
    return "\n".join(lines)
