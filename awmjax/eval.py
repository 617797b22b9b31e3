"""The evaluation harness: every task of a split, one episode each, a table with 95% intervals.

`evaluate(policy, tokenizer, worlds, ...)` runs the episodes through the same rollout code
training uses (`awmjax.rollout.run_episodes`, so the tool surface and the history limit
mean the same thing in both) and returns an `EvalReport`: outcome rates with Wilson
intervals, mean turns and tool calls with normal intervals, and the same table broken
down by difficulty (calls in the gold sequence) and by task type (tags).
`write_report` saves `report.json` and one readable transcript per episode (each turn,
each call, each tool response, the changeset and the verdict) plus `episodes.jsonl`.

The policy is anything with the rollout's `generate` (the jitted Sampler of a local
model, `awmjax.endpoint.EndpointPolicy` for an OpenAI-compatible server, or a script).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from awmjax.files import write_atomic
from awmjax.rollout import EPISODE_OUTCOMES, EpisodeResult, RolloutConfig, run_episodes
from awmjax.sampling import SamplingConfig

# the table's columns, in the order a reader expects them
RATE_NAMES = {"complete": "completed", "partial": "partial", "incomplete": "incomplete",
              "format_error": "format error", "env_error": "env error"}
DIFFICULTY_CLASSES = ("1 call", "2 calls", "3 calls", "4+ calls")


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (good at 0 and 1, unlike the normal one)."""
    if n == 0:
        return (0.0, 0.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def mean_interval(values: Sequence[float], z: float = 1.96) -> tuple[float, float, float]:
    """(mean, low, high): the normal-approximation interval of a mean."""
    n = len(values)
    if n == 0:
        return (0.0, 0.0, 0.0)
    m = sum(values) / n
    if n == 1:
        return (m, m, m)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    half = z * sd / math.sqrt(n)
    return (m, m - half, m + half)


def difficulty_class(calls: int) -> str:
    """The difficulty bucket of a task with `calls` gold calls."""
    return DIFFICULTY_CLASSES[min(max(calls, 1), 4) - 1]


@dataclass
class Summary:
    """Rates (with 95% Wilson intervals) and means of a set of episodes."""

    episodes: int
    rates: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    turns: tuple[float, float, float]
    tool_calls: tuple[float, float, float]

    @classmethod
    def of(cls, results: Sequence[EpisodeResult]) -> "Summary":
        n = len(results)
        counts = {o: sum(1 for r in results if r.outcome == o) for o in EPISODE_OUTCOMES}
        return cls(
            episodes=n,
            rates={o: (c / n if n else 0.0) for o, c in counts.items()},
            intervals={o: wilson(c, n) for o, c in counts.items()},
            turns=mean_interval([r.turns for r in results]),
            tool_calls=mean_interval([r.tool_calls for r in results]),
        )


@dataclass
class EvalReport:
    """What `awmjax eval` prints and saves."""

    policy: str
    split: str
    surface: str
    history_window: int | None
    overall: Summary
    by_difficulty: dict[str, Summary]
    by_type: dict[str, Summary]
    seconds: float
    episodes: list[EpisodeResult] = field(default_factory=list, repr=False)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def completion(self) -> float:
        return self.overall.rates["complete"]

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy, "split": self.split, "surface": self.surface,
            "history_window": self.history_window, "seconds": self.seconds, "settings": self.settings,
            "overall": asdict(self.overall),
            "by_difficulty": {k: asdict(v) for k, v in self.by_difficulty.items()},
            "by_type": {k: asdict(v) for k, v in self.by_type.items()},
            "episodes": [episode_record(e) for e in self.episodes],
        }

    def table(self) -> str:
        """The printed table: one row for all tasks, then by difficulty and by task type."""
        head = f"{'':<22}{'n':>5}" + "".join(f"{RATE_NAMES[o]:>22}" for o in EPISODE_OUTCOMES) + f"{'turns':>18}{'tool calls':>18}"
        lines = [f"policy {self.policy}  split {self.split}  surface {self.surface}  history window "
                 f"{self.history_window if self.history_window is not None else 'full'}"
                 + ("  calls constrained to the tools' schemas" if self.settings.get("constrain_calls") else "")
                 + f"  ({self.seconds:.1f}s)", head]

        def row(name: str, s: Summary) -> str:
            cells = "".join(f"{_pct(s.rates[o], s.intervals[o]):>22}" for o in EPISODE_OUTCOMES)
            return f"{name:<22}{s.episodes:>5}{cells}{_mean(s.turns):>18}{_mean(s.tool_calls):>18}"

        lines.append(row("all tasks", self.overall))
        for k in DIFFICULTY_CLASSES:
            if k in self.by_difficulty:
                lines.append(row(f"  {k}", self.by_difficulty[k]))
        for k, s in sorted(self.by_type.items()):
            lines.append(row(f"  {k}", s))
        lines.append("rates in %, [95% Wilson interval]; turns and tool calls: mean [95% interval]")
        return "\n".join(lines)


def _pct(p: float, ci: tuple[float, float]) -> str:
    return f"{100 * p:5.1f} [{100 * ci[0]:4.1f},{100 * ci[1]:5.1f}]"


def _mean(m: tuple[float, float, float]) -> str:
    return f"{m[0]:.2f} [{m[1]:.2f},{m[2]:.2f}]"


def split_tasks(worlds: Sequence[Any], limit: int | None = None) -> list[tuple[Any, Any]]:
    """(world, task) pairs of the worlds, in order, at most `limit` of them."""
    items = [(w, t) for w in worlds for t in w.tasks]
    return items if limit is None else items[:limit]


def evaluate(
    policy,
    tokenizer,
    worlds: Sequence[Any],
    rollout: RolloutConfig,
    sampling: SamplingConfig,
    *,
    policy_name: str,
    split: str = "",
    limit: int | None = None,
    batch: int = 32,
    pool=None,
    progress: bool = True,
) -> EvalReport:
    """Run one episode per task of `worlds` (at most `limit`) and summarize them.

    `batch` episodes run at once (one sampler call per turn for all of them). A pool is
    made (and closed) here unless one is given; it must have at least `batch` slots.
    """
    from tqdm import tqdm

    from envgen.pool import Pool

    items = split_tasks(worlds, limit)
    if not items:
        raise ValueError(f"no tasks to evaluate in split {split!r}: the catalog has no worlds there")
    own_pool = pool is None
    if own_pool:
        pool = Pool(n_slots=min(batch, len(items)), observation_chars=rollout.observation_chars)
        pool.register(sorted({w.id: w for w, _ in items}.values(), key=lambda w: w.id))
    t0 = time.perf_counter()
    results: list[EpisodeResult] = []
    bar = tqdm(total=len(items), desc=f"eval {split}", unit="ep", disable=not progress, dynamic_ncols=True)
    try:
        for start in range(0, len(items), batch):
            chunk = [(w, t, start + i) for i, (w, t) in enumerate(items[start : start + batch])]
            results += run_episodes(policy, tokenizer, pool, chunk, rollout, sampling)
            done = sum(1 for r in results if r.outcome == "complete")
            bar.update(len(chunk))
            bar.set_postfix(completed=f"{done}/{len(results)}")
    finally:
        bar.close()
        if own_pool:
            pool.close()
    tasks = {(w.id, t.id): t for w, t in items}
    by_diff: dict[str, list] = {}
    by_type: dict[str, list] = {}
    for r in results:
        task = tasks[(r.world_id, r.task_id)]
        by_diff.setdefault(difficulty_class(task.difficulty), []).append(r)
        for tag in task.tags:
            by_type.setdefault(tag, []).append(r)
    return EvalReport(
        policy=policy_name, split=split, surface=rollout.surface, history_window=rollout.history_window,
        overall=Summary.of(results),
        by_difficulty={k: Summary.of(v) for k, v in by_diff.items()},
        by_type={k: Summary.of(v) for k, v in by_type.items()},
        seconds=time.perf_counter() - t0, episodes=results,
        settings={"max_turns": rollout.max_turns, "max_new_tokens": rollout.max_new_tokens,
                  "temperature": sampling.temperature, "top_p": sampling.top_p, "seed": sampling.seed,
                  "tasks": len(items), "constrain_calls": rollout.constrain_calls},
    )


def episode_record(e: EpisodeResult) -> dict[str, Any]:
    """One episode as JSON: the messages, the outcome, the changeset and the verdict."""
    return {
        "world": e.world_id, "task": e.task_id, "outcome": e.outcome, "end_reason": e.end_reason,
        "turns": e.turns, "tool_calls": e.tool_calls, "final_answer": e.final_answer,
        "errors": e.messages, "verdict": e.verdict, "changes": e.changes,
        "messages": e.conversation.messages(),
    }


def transcript(e: EpisodeResult) -> str:
    """A readable transcript: each turn, each call, each tool response, the changeset and the verdict."""
    rec = episode_record(e)
    out = [f"# {e.world_id} / {e.task_id}: {e.outcome} (ended by {e.end_reason or 'judge'}; "
           f"{e.turns} turns, {e.tool_calls} tool calls)", ""]
    for m in rec["messages"]:
        if m["role"] == "system":
            continue
        title = {"user": "TASK", "assistant": "AGENT", "tool": "TOOL RESPONSE"}.get(m["role"], m["role"].upper())
        out += [f"## {title}", m["content"].strip(), ""]
    if e.messages:
        out += ["## ERRORS", *e.messages, ""]
    out += ["## CHANGESET", json.dumps(e.changes, indent=1, ensure_ascii=False, default=str), ""]
    out += ["## VERDICT", json.dumps(e.verdict, indent=1, ensure_ascii=False, default=str), ""]
    return "\n".join(out)


def write_report(report: EvalReport, out: str | os.PathLike) -> Path:
    """report.json, table.txt, episodes.jsonl and transcripts/<world>__<task>.md under `out`."""
    root = Path(out)
    (root / "transcripts").mkdir(parents=True, exist_ok=True)
    write_atomic(root / "report.json", json.dumps(report.to_json(), indent=1, ensure_ascii=False, default=str))
    write_atomic(root / "table.txt", report.table() + "\n")
    write_atomic(root / "episodes.jsonl", "".join(json.dumps(episode_record(e), ensure_ascii=False, default=str) + "\n"
                                                   for e in report.episodes))
    for e in report.episodes:
        write_atomic(root / "transcripts" / f"{e.world_id}__{e.task_id}.md", transcript(e))
    return root
