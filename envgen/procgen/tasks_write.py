"""Write tasks: the check asserts the final state (false on the seed) and limits changes.

These builders need one or two calls; `tasks_long` holds those that need three or more,
and `tasks_account` the one- or two-call tasks on account tables.
"""

from __future__ import annotations

import datetime as dt

from envgen.procgen import words as wd
from envgen.procgen.naming import plural, words
from envgen.procgen.tasks import Ctx, Draft, q
from envgen.procgen.tools import stockish
from envgen.world import Assertion


def _a(sql: str, value, desc: str, op: str = "==") -> Assertion:
    return Assertion(sql, op, value, desc)


def _mine_once(ctx: Ctx, statuses) -> dict | None:
    """One of the user's records in `statuses` whose resource appears once among the user's records."""
    rec = ctx.t("record")
    mine = [r for r in rec.rows if r["user"] == 1]
    cand = [r for r in mine if r["status"] in statuses and sum(1 for o in mine if o["resource"] == r["resource"]) == 1]
    return ctx.rng.choice(cand) if cand else None


def _future(ctx: Ctx) -> str:
    return (ctx.m.today + dt.timedelta(days=ctx.rng.randrange(5, 60))).isoformat()


def _create(ctx: Ctx, row: dict, extra_new: int = 0):
    """Gold call, assertions and change rules for creating a record on resource `row`."""
    rec, res = ctx.t("record"), ctx.t("resource")
    qty = None
    if "qty" in rec.c:
        top = min(ctx.m.arch.records[0].qty_max, row.get("count", 99) if stockish(res) else 99)
        qty = ctx.rng.randrange(1, max(1, min(top, 4)) + 1)
    date = _future(ctx)
    call = ctx.call("rec.create", resource=row["pk"], qty=qty, date=date)
    c = rec.c
    where = f"{c['user']} = 1 AND {c['resource']} = {row['pk']} AND {c['status']} = {q(ctx.m.statuses[0])} AND {c['date']} = {q(date)}"
    if qty:
        where += f" AND {c['qty']} = {qty}"
    base = sum(1 for r in rec.rows if r["user"] == 1 and r["resource"] == row["pk"] and r["status"] == ctx.m.statuses[0]
               and r["date"] == date and (qty is None or r.get("qty") == qty))
    asserts = [_a(f"SELECT COUNT(*) FROM {rec.name} WHERE {where}", base + 1, f"a new {words(rec.noun)} for {row['name']} exists")]
    rules = [("record", ["insert"], None, None)]
    if stockish(res):
        rules.append(("resource", ["update"], [row["pk"]], ["count"]))
    new_id = len(rec.rows) + 1 + extra_new
    return call, asserts, rules, qty, date, new_id


def _bookable(ctx: Ctx, rows=None) -> dict | None:
    res = ctx.t("resource")
    ok = [r for r in (rows or res.rows) if r["active"] and (not stockish(res) or r["count"] >= 4)]
    return ctx.rng.choice(ok) if ok else None


DIRECT = ("book", "reserve", "rent", "borrow", "buy", "purchase", "enroll_in", "register_for", "apply_to", "join", "enter", "check_out")


def create_phrase(ctx: Ctx, name: str, qty=None) -> str:
    """'book Red Transit (rental days: 3)' or 'create a new pick request for High-Temp Gasket (quantity: 2)'."""
    rec = ctx.t("record")
    verb = ctx.m.arch.records[0].create_verbs[0]
    size = f" ({rec.c['qty'].replace('_', ' ')}: {qty})" if qty else ""
    if verb in DIRECT:
        return f"{verb.replace('_', ' ')} {name}{size}"
    return f"{verb.replace('_', ' ')} a new {words(rec.noun)} for {name}{size}"


def size_phrase(ctx: Ctx, qty) -> str:
    return f" ({ctx.t('record').c['qty'].replace('_', ' ')}: {qty})" if qty else ""


def _verb(ctx: Ctx, which: str) -> str:
    r = ctx.m.arch.records[0]
    return {"create": r.create_verbs, "cancel": r.cancel_verbs, "advance": r.advance_verbs}[which][0].replace("_", " ")


# ------------------------------------------------------------------ short (1-2 calls)


def create_by_name(ctx: Ctx) -> Draft | None:
    row = _bookable(ctx)
    if row is None:
        return None
    call, asserts, rules, qty, date, _ = _create(ctx, row)
    rec = ctx.t("record")
    phrase = create_phrase(ctx, row["name"], qty)
    text = ctx.say(("{P} on {d}.", "I want to {p}, date {d}.", "Set up a new {x} for {n}{size} on {d}.", "New {x}: {n}{size}, {d}."),
                   P=phrase[0].upper() + phrase[1:], p=phrase, n=row["name"], size=size_phrase(ctx, qty), d=date, x=words(rec.noun))
    return Draft(text, [ctx.call("res.search", query=row["name"]), call], asserts, ctx.changes(*rules), tags=["write", "lookup"])


def cancel_by_name(ctx: Ctx) -> Draft | None:
    rec, res = ctx.t("record"), ctx.t("resource")
    row = _mine_once(ctx, ctx.m.cancellable)
    if row is None:
        return None
    name = res.rows[row["resource"] - 1]["name"]
    text = ctx.say(("{V} my {x} for {n}.", "I no longer need my {x} for {n}; please {v} it.", "{V} the {n} {x} on my account.",
                    "My {x} for {n} should be {s3}."), V=_verb(ctx, "cancel").capitalize(), v=_verb(ctx, "cancel"), x=words(rec.noun), n=name,
                   s3=ctx.m.statuses[3].replace("_", " "))
    c = rec.c
    asserts = [_a(f"SELECT {c['status']} FROM {rec.name} WHERE {c['pk']} = {row['pk']}", ctx.m.statuses[3], "the record is cancelled")]
    rules = [("record", ["update"], [row["pk"]], ["status"])]
    if stockish(res):
        rules.append(("resource", ["update"], [row["resource"]], ["count"]))
        back = row.get("qty", 1)
        asserts.append(_a(f"SELECT {res.c['count']} FROM {res.name} WHERE {res.c['pk']} = {row['resource']}",
                          res.rows[row["resource"] - 1]["count"] + back, "the units went back"))
    gold = [ctx.call("rec.mine", status=row["status"] if ctx.rng.random() < 0.5 else None), ctx.call("rec.cancel", id=row["pk"])]
    return Draft(text, gold, asserts, ctx.changes(*rules), tags=["write", "lookup"])


def advance_by_name(ctx: Ctx) -> Draft | None:
    rec, res = ctx.t("record"), ctx.t("resource")
    row = _mine_once(ctx, ctx.m.statuses[:1])
    if row is None:
        return None
    name, st = res.rows[row["resource"] - 1]["name"], ctx.m.statuses
    text = ctx.say(("{V} my {x} for {n}.", "My {x} for {n} should now be {s1}.", "Move my {n} {x} from {s0} to {s1}."),
                   V=_verb(ctx, "advance").capitalize(), x=words(rec.noun), n=name, s0=st[0], s1=st[1].replace("_", " "))
    asserts = [_a(f"SELECT {rec.c['status']} FROM {rec.name} WHERE {rec.c['pk']} = {row['pk']}", st[1], "status advanced")]
    gold = [ctx.call("rec.mine", status=st[0]), ctx.call("rec.advance", id=row["pk"])]
    return Draft(text, gold, asserts, ctx.changes(("record", ["update"], [row["pk"]], ["status"])), tags=["write", "lookup", "status"])


def reschedule(ctx: Ctx) -> Draft | None:
    rec, res = ctx.t("record"), ctx.t("resource")
    row = _mine_once(ctx, ctx.m.statuses[:1])
    if row is None:
        return None
    name, date = res.rows[row["resource"] - 1]["name"], _future(ctx)
    if date == row["date"]:
        return None
    text = ctx.say(("Move my {x} for {n} to {d}.", "Change the {dc} of my {n} {x} to {d}.", "I need my {x} for {n} on {d} instead."),
                   x=words(rec.noun), n=name, d=date, dc=words(rec.c["date"]))
    asserts = [_a(f"SELECT {rec.c['date']} FROM {rec.name} WHERE {rec.c['pk']} = {row['pk']}", date, "date changed")]
    gold = [ctx.call("rec.mine"), ctx.call("rec.update", id=row["pk"], date=date)]
    return Draft(text, gold, asserts, ctx.changes(("record", ["update"], [row["pk"]], ["date"])), tags=["write", "lookup"])


def review_by_name(ctx: Ctx) -> Draft | None:
    if not ctx.has("rev.add"):
        return None
    res, rev = ctx.t("resource"), ctx.t("reviews")
    done = {r["resource"] for r in rev.rows if r["user"] == 1}
    cand = [r for r in res.rows if r["pk"] not in done]
    if not cand:
        return None
    row, stars, comment = ctx.rng.choice(cand), ctx.rng.randrange(1, 6), ctx.rng.choice(wd.REVIEW_TEXTS)
    text = ctx.say(("Leave a {s}-star {x} on {n} saying \"{c}\"", "Rate {n} {s} out of 5 with the comment \"{c}\".",
                    "I want to review {n}: {s} stars, \"{c}\""), s=stars, x=words(rev.noun), n=row["name"], c=comment)
    c = rev.c
    asserts = [_a(f"SELECT COUNT(*) FROM {rev.name} WHERE {c['resource']} = {row['pk']} AND {c['user']} = 1 AND {c['rating']} = {stars}", 1,
                  "the review exists")]
    gold = [ctx.call("res.search", query=row["name"]), ctx.call("rev.add", resource=row["pk"], rating=stars, comment=comment)]
    return Draft(text, gold, asserts, ctx.changes(("reviews", ["insert"], None, None)), tags=["write", "lookup"])


def favorite_by_name(ctx: Ctx) -> Draft | None:
    if not ctx.has("fav.add"):
        return None
    res, fav = ctx.t("resource"), ctx.t("favorites")
    done = {r["resource"] for r in fav.rows if r["user"] == 1}
    cand = [r for r in res.rows if r["pk"] not in done]
    if not cand:
        return None
    row = ctx.rng.choice(cand)
    text = ctx.say(("Add {n} to my {xs}.", "Save {n} for later.", "Put the {r} {n} on my {xs}, please."),
                   n=row["name"], xs=words(plural(fav.noun)), r=words(res.noun))
    asserts = [_a(f"SELECT COUNT(*) FROM {fav.name} WHERE {fav.c['resource']} = {row['pk']} AND {fav.c['user']} = 1", 1, "saved")]
    gold = [ctx.call("res.search", query=row["name"]), ctx.call("fav.add", resource=row["pk"])]
    return Draft(text, gold, asserts, ctx.changes(("favorites", ["insert"], None, None)), tags=["write", "lookup"])


def unfavorite(ctx: Ctx) -> Draft | None:
    if not ctx.has("fav.remove"):
        return None
    res, fav = ctx.t("resource"), ctx.t("favorites")
    mine = [r for r in fav.rows if r["user"] == 1]
    if not mine:
        return None
    row = ctx.rng.choice(mine)
    name = res.rows[row["resource"] - 1]["name"]
    text = ctx.say(("Remove {n} from my {xs}.", "I don't want {n} saved anymore.", "Take {n} off my {xs}."), n=name, xs=words(plural(fav.noun)))
    asserts = [_a(f"SELECT COUNT(*) FROM {fav.name} WHERE {fav.c['resource']} = {row['resource']} AND {fav.c['user']} = 1", 0, "removed")]
    gold = [ctx.call("fav.list"), ctx.call("fav.remove", resource=row["resource"])]
    return Draft(text, gold, asserts, ctx.changes(("favorites", ["delete"], [row["pk"]], None)), tags=["write", "lookup"])


SHORT = (create_by_name, cancel_by_name, advance_by_name, reschedule, review_by_name, favorite_by_name, unfavorite)
