"""Domain archetypes: the vocabulary of each kind of world, as plain frozen data.

An archetype names who the signed-in user is (synonyms), the staff, lookup tables
with their values, the bookable/purchasable resources and the records a user makes
(orders, bookings, claims, ...) with their status lifecycle. The generator picks one
synonym of each per world, so the same archetype yields differently named worlds.
The archetype data itself lives in `domains_a` and `domains_b`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Lookup:
    """A small reference table (category, location, ...): noun synonyms and row labels."""

    nouns: tuple[str, ...]
    values: tuple[str, ...]


@dataclass(frozen=True)
class Resource:
    """Something users browse and act on (product, room, vehicle, course, ...)."""

    nouns: tuple[str, ...]
    heads: tuple[str, ...]  # head words of item names
    mods: tuple[str, ...]  # modifiers prefixed to head words
    money: tuple[str, ...]  # price column synonyms
    money_range: tuple[int, int]
    count: tuple[str, ...] = ()  # stock/capacity column synonyms; () for none
    count_range: tuple[int, int] = (0, 40)
    enum: tuple[str, tuple[str, ...]] | None = None  # an extra attribute: (column, values)


@dataclass(frozen=True)
class Record:
    """Something a user creates against a resource, with a status lifecycle."""

    nouns: tuple[str, ...]
    create_verbs: tuple[str, ...]
    statuses: tuple[str, str, str, str]  # initial, advanced, done, cancelled
    advance_verbs: tuple[str, ...]  # move initial -> advanced
    cancel_verbs: tuple[str, ...]
    date_cols: tuple[str, ...]
    qty: tuple[str, ...] = ()  # quantity column synonyms; () when a record is always one unit
    qty_max: int = 5
    resource: int = 0  # index into the archetype's resources
    future: bool = True  # record dates lie after the world's "today"


@dataclass(frozen=True)
class Archetype:
    """One domain: category label, naming material and its entities."""

    category: str
    names: tuple[str, ...]  # scenario name templates; {W} is a place word, {C} a city
    blurb: str  # description template with {users}, {resources}, {records}
    users: tuple[str, ...]
    staff: tuple[str, ...]
    lookups: tuple[Lookup, ...]
    resources: tuple[Resource, ...]
    records: tuple[Record, ...]


def all_archetypes() -> tuple[Archetype, ...]:
    """Every archetype, in a fixed order."""
    from envgen.procgen import domains_a, domains_b

    return domains_a.ARCHETYPES + domains_b.ARCHETYPES
