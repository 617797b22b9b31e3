"""Stage 1: expand seed scenario names into many distinct scenarios (self-instruct), deduplicated.

Each round shows the model a few seed names and the names already taken and asks
for more. Candidates are compared with the kept ones by cosine similarity: of
embeddings when the endpoint serves them, otherwise of character-trigram counts.
As in AWM, a candidate above `reject` is a duplicate, and one between `near` and
`reject` is refused once its category already holds `cap` scenarios, so no domain
crowds out the others.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from envgen.synth.client import EmbeddingsUnavailable
from envgen.synth.stages import PROMPTS, Context, StageFailed, messages_for, run_stage
from envgen.world import Scenario, slugify

Vector = Any  # list[float] (embedding) or Counter (character trigrams)


def load_seeds(path: str | Path | None = None) -> list[str]:
    """Seed scenario names, one per line ('#' comments and blank lines skipped); the built-in list if no path."""
    p = Path(path) if path else PROMPTS / "seeds.txt"
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ValueError(f"cannot read seeds file {p} ({e.strerror}); give a text file with one scenario name per line") from None
    seeds = [s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#")]
    if not seeds:
        raise ValueError(f"seeds file {p} holds no scenario names; write one name per line")
    return seeds


def load_scenarios(path: str | Path) -> list[Scenario]:
    """Scenarios from JSONL lines {"name", "description", "category"?}, e.g. AWM's gen_scenario.jsonl.

    Without a category, the name's stem is used (AWM names scenarios "<category>_<n>").
    """
    p = Path(path)
    out = []
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ValueError(f"cannot read scenarios file {p} ({e.strerror}); give a JSONL file of {{name, description}}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
            name, description = doc["name"], doc["description"]
            if not (isinstance(name, str) and name.strip() and isinstance(description, str) and description.strip()):
                raise TypeError("name and description must be non-empty strings")
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{p}:{n}: not a scenario ({type(e).__name__}: {e}); "
                             'each line must be {"name": ..., "description": ..., "category": ... (optional)}') from None
        category = doc.get("category") or re.sub(r"_\d+$", "", name)
        out.append(Scenario(name.strip(), description.strip(), slugify(str(category)).replace("-", "_")))
    if not out:
        raise ValueError(f"scenarios file {p} holds no scenarios")
    return out


def scenario_text(s: Scenario) -> str:
    """What is compared for similarity: name and description."""
    return f"{s.name}. {s.description}"


def lexical_vector(text: str) -> Counter:
    """Character-trigram counts of the normalized text (the fallback when there are no embeddings)."""
    t = " " + re.sub(r"[^a-z0-9]+", " ", text.lower()).strip() + " "
    return Counter(t[i : i + 3] for i in range(len(t) - 2))


def cosine(a: Vector, b: Vector) -> float:
    """Cosine similarity of two dense vectors or two sparse counters."""
    if isinstance(a, Counter):
        dot = sum(v * b.get(k, 0) for k, v in a.items())
        na, nb = math.sqrt(sum(v * v for v in a.values())), math.sqrt(sum(v * v for v in b.values()))
    else:
        dot = sum(x * y for x, y in zip(a, b))
        na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


@dataclass
class Deduper:
    """Keeps scenarios that are neither near-copies of a kept one nor crowding a full category."""

    cap: int
    reject: float = 0.85
    near: float = 0.75
    kept: list[tuple[Scenario, Vector]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)

    def offer(self, s: Scenario, vec: Vector) -> bool:
        """Keep `s` unless it duplicates or crowds; records the reason when it is refused."""
        counts = Counter(k.category for k, _ in self.kept)
        best, best_name = 0.0, ""
        for k, v in self.kept:
            sim = 1.0 if k.name.lower() == s.name.lower() else cosine(vec, v)
            if sim > best:
                best, best_name = sim, k.name
        if best > self.reject:
            self.refused.append((s.name, f"near-duplicate of {best_name!r} (similarity {best:.2f})"))
            return False
        if best > self.near and counts[s.category] >= self.cap:
            self.refused.append((s.name, f"similar to {best_name!r} ({best:.2f}) and category {s.category} is full ({self.cap})"))
            return False
        self.kept.append((s, vec))
        return True


def _parse_scenarios(value: dict) -> tuple[list[Scenario], list[str]]:
    items = value.get("scenarios")
    if not isinstance(items, list) or not items:
        return [], ['the answer needs a non-empty list under "scenarios"']
    out, errors = [], []
    for i, it in enumerate(items):
        if not isinstance(it, dict) or not all(isinstance(it.get(k), str) and it[k].strip() for k in ("name", "description", "category")):
            errors.append(f'scenarios[{i}] needs non-empty strings "name", "description" and "category"')
            continue
        out.append(Scenario(it["name"].strip(), it["description"].strip(), slugify(it["category"]).replace("-", "_")))
    return out, errors


async def _vectors(ctx: Context, scenarios: Sequence[Scenario]) -> list[Vector]:
    texts = [scenario_text(s) for s in scenarios]
    if ctx.dedup_method != "lexical":
        try:
            vecs = await ctx.llm.embed("scenarios", texts)
            ctx.dedup_method = "embeddings"
            return vecs
        except EmbeddingsUnavailable as e:
            ctx.dedup_method = "lexical"
            ctx.notes.append(f"scenario dedup: lexical fallback ({str(e)[:160]})")
    return [lexical_vector(t) for t in texts]


async def scenarios_stage(
    ctx: Context, seeds: Sequence[str], n: int, *, cap: int | None = None, max_rounds: int | None = None, per_round: int = 10
) -> tuple[list[Scenario], Deduper]:
    """`n` distinct scenarios (fewer if the rounds run out), and the deduper with its refusals."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    cap = cap if cap is not None else max(1, math.ceil(0.08 * n))
    max_rounds = max_rounds if max_rounds is not None else 2 + math.ceil(n / per_round) * 2
    dedup = Deduper(cap)
    for r in range(max_rounds):
        missing = n - len(dedup.kept)
        if missing <= 0:
            break
        start = (r * 8) % len(seeds)
        examples = [seeds[(start + i) % len(seeds)] for i in range(min(8, len(seeds)))]
        taken = [s.name for s, _ in dedup.kept]
        msgs = messages_for(
            "scenarios",
            examples="\n".join(f"- {e}" for e in examples),
            taken="\n".join(f"- {t}" for t in taken) or "(none yet)",
            count=min(per_round, missing + 2),
        )
        try:
            candidates = await run_stage(ctx, "scenarios", msgs, _parse_scenarios)
        except StageFailed as e:
            ctx.notes.append(f"scenario round {r + 1}: refused after {e.attempts} attempts; last problem: {e.errors[0][:160]}")
            if e.endpoint or (r + 1 == max_rounds and not dedup.kept):
                raise
            continue
        kept_before = len(dedup.kept)
        for s, v in zip(candidates, await _vectors(ctx, candidates)):
            if len(dedup.kept) < n:
                dedup.offer(s, v)
        if ctx.dedup_method == "lexical" and dedup.kept and not isinstance(dedup.kept[0][1], Counter):
            # embeddings went away mid-run: compare like with like from here on
            dedup.kept = [(s, lexical_vector(scenario_text(s))) for s, _ in dedup.kept]
        if len(dedup.kept) == kept_before:
            ctx.notes.append(f"scenario round {r + 1}: no new distinct scenario")
    return [s for s, _ in dedup.kept], dedup
