"""Task assembly: ten tasks per world, mixing read-only questions, single writes and
multi-step lookup-then-act work, each with a gold call sequence and a SQL check.

Task builders (in `tasks_read` and `tasks_write`) take a `Ctx` and return a `Draft` or
None when the world lacks what they need. Every draft predicts its effects from the
seed (new ids are max id + 1), so the gold sequence is known before anything runs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable

from envgen.procgen.model import Model, Table
from envgen.procgen.tools import Ref, Toolkit
from envgen.world import Assertion, Call, Check, Task

N_TASKS = 10
OPENERS = ("", "", "", "Please ", "Hi! ", "Could you ", "I need you to ", "Hey, can you ", "Quick one: ")


@dataclass
class Draft:
    """A task before numbering: instruction, gold calls, check parts, tags."""

    instruction: str
    gold: list[Call]
    assertions: list[Assertion] = field(default_factory=list)
    changes: dict[str, Any] | None = None
    answer: str | None = None
    contains: list[str] | None = None
    tags: list[str] = field(default_factory=list)


class Ctx:
    """What a task builder needs: the model, the tools by key, and the world's rng."""

    def __init__(self, m: Model, k: Toolkit, rng: random.Random):
        self.m, self.k, self.rng = m, k, rng

    def has(self, *keys: str) -> bool:
        return all(key in self.k.refs for key in keys)

    def ref(self, key: str) -> Ref:
        return self.k.refs[key]

    def call(self, tool_key: str, /, **args: Any) -> Call:
        """A gold call; argument keys are meanings, mapped to this world's parameter names."""
        r = self.k.refs[tool_key]
        return Call(r.name, {r.p.get(a, a): v for a, v in args.items() if v is not None})

    def t(self, role: str) -> Table:
        return self.m.tables[role]

    def say(self, templates: tuple[str, ...], **kw: Any) -> str:
        """One phrasing of an instruction, sometimes with a polite or casual opener."""
        text = self.rng.choice(templates).format(**kw)
        if text.endswith("?") or text.startswith(("I ", "I'", "My ")):
            return self.rng.choice(("", "", "Hi! ", "Hello. ", "Quick question. " if text.endswith("?") else "")) + text
        opener = self.rng.choice(OPENERS)
        if opener in ("", "Hi! "):
            return opener + text
        text = opener + text[0].lower() + text[1:]
        return text[:-1] + "?" if opener.endswith("you ") and text.endswith(".") else text

    def changes(self, *rules: tuple[str, list[str], list[Any] | None, list[str] | None], log: bool = True) -> dict[str, Any]:
        """A change limit: (role, ops, pks, column meanings) per table, plus log tables the tools write."""
        tables: dict[str, Any] = {}
        for role, ops, pks, cols in rules:
            t = self.t(role)
            rule: dict[str, Any] = {"ops": ops}
            if pks is not None:
                rule["pks"] = pks
            if cols is not None:
                rule["columns"] = [t.c[c] for c in cols]
            tables[t.name] = rule
        if log:
            for role in ("audit", "history"):
                if role in self.m.tables:
                    tables[self.t(role).name] = {"ops": ["insert"]}
        return {"tables": tables}


def q(sql_value: Any) -> str:
    """An SQL literal for a seed value."""
    if sql_value is None:
        return "NULL"
    if isinstance(sql_value, str):
        return "'" + sql_value.replace("'", "''") + "'"
    return repr(sql_value)


def build_tasks(m: Model, k: Toolkit, rng: random.Random) -> tuple[Task, ...]:
    """Exactly ten tasks: 2-3 read-only, at least half with three or more calls where possible."""
    from envgen.procgen import tasks_account, tasks_long, tasks_read, tasks_write

    ctx = Ctx(m, k, rng)
    reads, writes_long = list(tasks_read.BUILDERS), list(tasks_long.BUILDERS)
    writes_short = list(tasks_write.SHORT + tasks_account.BUILDERS)
    plan = [("r", rng.randrange(2, 4)), ("wl", rng.randrange(4, 7))]
    plan.append(("ws", N_TASKS - plan[0][1] - plan[1][1]))
    drafts: list[Draft] = []
    seen: set[str] = set()
    for kind, want in plan:
        pool = {"r": reads, "wl": writes_long, "ws": writes_short}[kind]
        _fill(ctx, pool, want, drafts, seen)
    _fill(ctx, writes_short + writes_long + reads, N_TASKS - len(drafts), drafts, seen)
    if len(drafts) < N_TASKS:
        raise RuntimeError(f"only {len(drafts)} tasks could be built for a {m.arch.category} world")
    return tuple(_finish(i, d) for i, d in enumerate(drafts))


def _fill(ctx: Ctx, pool: list[Callable[[Ctx], Draft | None]], want: int, drafts: list[Draft], seen: set[str]) -> None:
    got, tries = 0, 0
    while got < want and tries < want * 12 and pool:
        tries += 1
        fresh = [b for b in pool if b.__name__ not in seen]  # prefer task types this world has not used yet
        builder = ctx.rng.choice(fresh or pool)
        d = builder(ctx)
        if d is None or d.instruction in seen:
            continue
        key = "|".join(f"{c.tool}{sorted(c.arguments.items())}" for c in d.gold)
        if key in seen:
            continue
        seen.update((d.instruction, key, builder.__name__))
        drafts.append(d)
        got += 1


def _finish(i: int, d: Draft) -> Task:
    tags = list(d.tags)
    if len(d.gold) >= 3 and "multi-step" not in tags:
        tags.append("multi-step")
    answer = {"contains": d.contains} if d.contains else None
    check = Check("sql", assertions=tuple(d.assertions), answer=answer, changes=d.changes)
    return Task(id=f"t{i:02d}", instruction=d.instruction, check=check, gold=tuple(d.gold), answer=d.answer, tags=tuple(tags))
