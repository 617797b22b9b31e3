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

__all__ = ["generate_world", "generate_worlds", "categories"]


def categories() -> tuple[str, ...]:
    """The category label of every archetype."""
    return tuple(a.category for a in all_archetypes())


def generate_world(rng_seed: int, index: int) -> World:
    """World number `index` of the stream seeded by `rng_seed` (deterministic)."""
    archetypes = all_archetypes()
    order = random.Random(f"awmjax-procgen-order/{rng_seed}").sample(range(len(archetypes)), len(archetypes))
    arch = archetypes[order[index % len(archetypes)]]
    for attempt in range(20):
        rng = random.Random(f"awmjax-procgen/{rng_seed}/{index}/{attempt}")
        try:
            return _build(rng, arch)
        except RuntimeError:  # too few tasks fit this draw; draw again
            continue
    raise RuntimeError(f"could not generate world {index} of seed {rng_seed} ({arch.category})")


def generate_worlds(n: int, seed: int = 0) -> Iterator[World]:
    """The first `n` worlds of the stream seeded by `seed`."""
    for i in range(n):
        yield generate_world(seed, i)


def _build(rng: random.Random, arch) -> World:
    naming = Naming(rng)
    n_tables = rng.choice((6, 8, 10, 12, 13, 14, 15, 16, 16, 17, 18, 18, 19, 20, 20, 21, 22, 22, 23, 24))
    m = build_model(rng, arch, naming, n_tables)
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
