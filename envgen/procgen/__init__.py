"""The procedural world generator: executable SQLite worlds with no model and no network.

`generate_world(seed, index)` draws a domain archetype (retail, hotel, insurance
claims, ...), naming conventions (table, column, tool and parameter names), a schema
with seed rows, SQL tools and ten checked tasks with gold call sequences. Only
`random.Random` seeded from (seed, index) is used, so the same arguments always give
byte-identical JSON (`envgen.world.dumps`).

Files: `archetypes` + `domains_a/_b` (domain vocabulary), `naming` (conventions),
`words` (value lists), `model` (tables and seed rows), `tools*` (SQL tools),
`tasks*` (tasks, checks and gold sequences).
"""

from __future__ import annotations

import dataclasses
import random
from typing import Iterator

from envgen.procgen.archetypes import all_archetypes
from envgen.procgen.model import build_model
from envgen.procgen.naming import Naming, plural
from envgen.procgen.naming import words as _words
from envgen.procgen.tasks import build_tasks
from envgen.procgen.tools import build_tools
from envgen.procgen import words as wd  # noqa: I001 (the module, not naming.words)
from envgen.world import Scenario, World

__all__ = ["generate_world", "generate_worlds", "categories", "PROFILES"]


def categories() -> tuple[str, ...]:
    """The category label of every archetype."""
    return tuple(a.category for a in all_archetypes())


PROFILES = ("full", "compact")


def generate_world(rng_seed: int, index: int, profile: str = "full") -> World:
    """World number `index` of the stream seeded by `rng_seed` (deterministic).

    profile "full" keeps every tool and ten tasks; "compact" (the CPU demo's worlds) keeps
    two of those tasks, of different kinds, over fewer seed rows (short listings), and only the tools their gold sequences call plus one distractor, so prompts are
    a few hundred tokens instead of a few thousand. The tasks are the same kinds as in the
    full world, so a compact catalog is smaller, not easier in kind.
    """
    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r}; allowed: {', '.join(PROFILES)}")
    archetypes = all_archetypes()
    order = random.Random(f"awmjax-procgen-order/{rng_seed}").sample(range(len(archetypes)), len(archetypes))
    arch = archetypes[order[index % len(archetypes)]]
    for attempt in range(20):
        rng = random.Random(f"awmjax-procgen/{rng_seed}/{index}/{attempt}")
        try:
            world = _build(rng, arch, lean=profile == "compact")
            return _compact(world, rng) if profile == "compact" else world
        except RuntimeError:  # too few tasks fit this draw; draw again
            continue
    raise RuntimeError(f"could not generate world {index} of seed {rng_seed} ({arch.category})")


def generate_worlds(n: int, seed: int = 0, profile: str = "full") -> Iterator[World]:
    """The first `n` worlds of the stream seeded by `seed`."""
    for i in range(n):
        yield generate_world(seed, i, profile)


COMPACT_TASKS = 2


def _compact(world: World, rng: random.Random) -> World:
    """The compact profile of a full world: two of its tasks and only the tools they need (+1).

    The two tasks are of different kinds (drawn in random order from: read-only, multi-step
    write, other write), so across a catalog every kind and difficulty keeps appearing.
    """
    tasks = list(world.tasks)
    rng.shuffle(tasks)
    kinds = [lambda t: "read-only" in t.tags, lambda t: "multi-step" in t.tags and "write" in t.tags,
             lambda t: "write" in t.tags and "multi-step" not in t.tags]
    rng.shuffle(kinds)
    picks: list = []
    for want in kinds:
        pick = next((t for t in tasks if want(t) and t not in picks), None)
        if pick is not None and len(picks) < COMPACT_TASKS:
            picks.append(pick)
    picks += [t for t in tasks if t not in picks][: COMPACT_TASKS - len(picks)]
    used = {c.tool for t in picks for c in t.gold or ()}
    spare = sorted(t.name for t in world.tools if t.name not in used)
    keep = used | {rng.choice(spare)} if spare else used
    picks.sort(key=lambda t: t.id)
    tasks = tuple(dataclasses.replace(t, id=f"t{i:02d}") for i, t in enumerate(picks))
    return dataclasses.replace(world, id="", tools=tuple(t for t in world.tools if t.name in keep), tasks=tasks)


def _build(rng: random.Random, arch, lean: bool = False) -> World:
    naming = Naming(rng)
    n_tables = rng.choice((6, 8, 10, 12, 13, 14, 15, 16, 16, 17, 18, 18, 19, 20, 20, 21, 22, 22, 23, 24))
    m = build_model(rng, arch, naming, n_tables, lean)
    kit = build_tools(m)
    tasks = build_tasks(m, kit, rng)
    name = rng.choice(arch.names).format(W=rng.choice(wd.PLACE_WORDS), C=rng.choice(wd.CITIES))
    user = m.tables["user"]
    desc = arch.blurb.format(users=_words(plural(user.noun)), resources=_words(plural(m.tables["resource"].noun)),
                             records=_words(plural(m.tables["record"].noun)))
    desc += f" Today is {m.today.isoformat()}. The signed-in {_words(user.noun)} is {user.rows[0]['name']} (id 1)."
    schema = tuple(t.ddl() for t in m.tables.values())
    seed = {t.name: t.seed() for t in m.tables.values()}
    return World(Scenario(name, desc, arch.category), schema, seed, tuple(kit.tools), tasks)
