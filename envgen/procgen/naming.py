"""Naming conventions drawn per world: tables, keys, timestamps, tool verbs, descriptions.

A policy trained on these worlds has to read the tool list: the same operation is
`get_order`, `fetchPurchase` or `lookup_order` depending on the world.
"""

from __future__ import annotations

import random

# SQL words that must not become bare table or column names.
RESERVED = frozenset({
    "order", "group", "case", "check", "index", "table", "user", "key", "transaction", "values", "select",
    "where", "from", "to", "by", "default", "limit", "offset", "primary", "references", "unique", "plan",
    "action", "view", "trigger", "release", "set", "update", "delete", "insert", "row", "rows", "range",
    "filter", "window", "match", "class", "file", "event", "level", "section", "session", "state", "function",
    "column", "constraint", "foreign", "join", "left", "right", "natural", "cross", "inner", "outer", "having", "not",
    "null", "is", "in", "like", "between", "exists", "all", "any", "as", "on", "if", "replace", "temp", "with",
    "over", "partition", "current", "first", "last", "type", "date", "time", "timestamp", "year", "month", "day",
    "interval", "collate", "glob", "regexp", "escape", "end", "begin", "commit", "rollback", "abort", "fail",
    "ignore", "cast", "else", "then", "when", "do", "nothing", "returning", "union", "except", "intersect", "order_by",
})

VERBS = {
    "get": ("get", "fetch", "lookup", "retrieve", "show", "view", "read"),
    "search": ("search", "find", "list", "browse", "query", "filter"),
    "mine": ("list_my", "get_my", "my", "fetch_my", "show_my"),
    "create": ("create", "add", "new", "register", "make", "submit"),
    "update": ("update", "edit", "modify", "change", "patch"),
    "delete": ("delete", "remove", "drop", "discard"),
    "count": ("count", "tally", "number_of"),
    "total": ("total", "sum", "get_total"),
    "list": ("list", "get_all", "all", "browse"),
}
QUERY_PARAMS = ("query", "q", "keyword", "search", "name_contains", "text")
TIMESTAMPS = ("created_at", "created_on", "creation_date", "date_created", "inserted_at")
NAME_COLS = ("name", "title", "label")
PERSON_COLS = ("full_name", "name", "display_name")
STATUS_COLS = ("status", "state_code", "current_status", "stage")


def plural(noun: str) -> str:
    """English plural of a snake_case noun (the last word is pluralized)."""
    head, _, last = noun.rpartition("_")
    if last.endswith("y") and last[-2:-1] not in "aeiou":
        p = last[:-1] + "ies"
    elif last.endswith(("s", "x", "ch", "sh")):
        p = last + "es"
    else:
        p = last + "s"
    return f"{head}_{p}" if head else p


def words(noun: str) -> str:
    """A snake_case noun as words."""
    return noun.replace("_", " ")


def article(noun: str) -> str:
    """'a' or 'an' plus the noun as words."""
    w = words(noun)
    return ("an " if w[0] in "aeiou" else "a ") + w


class Naming:
    """One world's naming conventions, drawn once from the world's rng."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.table_style = rng.choice(("plural", "plural", "singular", "tbl_plural", "tbl_singular", "prefix"))
        self.prefix = rng.choice(("app", "core", "main", "biz"))
        self.pk_style = rng.choice(("id", "id", "entity_id"))
        self.fk_style = rng.choice(("entity_id", "entity_id", "entity_ref"))
        self.ts = rng.choice(TIMESTAMPS)
        self.name_col = rng.choice(NAME_COLS)
        self.person_col = rng.choice(PERSON_COLS)
        self.status_col = rng.choice(STATUS_COLS)
        self.camel = rng.random() < 0.2
        self.verbs = {k: rng.choice(v) for k, v in VERBS.items()}
        self.qparam = rng.choice(QUERY_PARAMS)
        self.style = rng.randrange(4)  # description style
        self.id_param = rng.choice(("entity_id", "entity_id", "id_suffix"))
        self.used: set[str] = set()

    # ------------------------------------------------------------ schema names
    def table(self, noun: str) -> str:
        """The table name for an entity noun."""
        s = self.table_style
        base = {"plural": plural(noun), "singular": noun, "tbl_plural": "tbl_" + plural(noun),
                "tbl_singular": "tbl_" + noun, "prefix": f"{self.prefix}_{plural(noun)}"}[s]
        return plural(noun) if base in RESERVED else base

    def pk(self, noun: str) -> str:
        """The primary key column of an entity's table."""
        return "id" if self.pk_style == "id" else f"{noun}_id"

    def fk(self, noun: str) -> str:
        """A column referencing an entity."""
        return f"{noun}_ref" if self.fk_style == "entity_ref" else f"{noun}_id"

    def col(self, name: str) -> str:
        """A plain column name, made safe from SQL keywords."""
        return f"{name}_value" if name in RESERVED else name

    def param(self, noun: str) -> str:
        """The parameter name carrying an entity id."""
        return f"{noun}_id" if self.id_param == "entity_id" else f"{noun}_no"

    # ------------------------------------------------------------ tool names
    def tool(self, kind: str, noun: str, *, plural_noun: bool = False, verb: str | None = None) -> str:
        """A unique tool name for an operation kind on a noun (verb overrides the world's verb)."""
        v = verb or self.verbs[kind]
        n = plural(noun) if plural_noun else noun
        parts = f"{v}_{n}".split("_")
        if self.camel:
            name = parts[0] + "".join(p.capitalize() for p in parts[1:])
        else:
            name = "_".join(parts)
        base, k = name, 2
        while name in self.used:
            name = f"{base}{k}" if self.camel else f"{base}_{k}"
            k += 1
        self.used.add(name)
        return name

    def describe(self, options: tuple[str, ...], **kw) -> str:
        """One of several description phrasings, picked by the world's style."""
        return options[self.style % len(options)].format(**kw)
