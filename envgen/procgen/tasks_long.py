"""Multi-step write tasks (three or more calls): each reads a result and uses it to
choose the next call's arguments (an id found by name, a new id, the cheapest item)."""

from __future__ import annotations

from envgen.procgen import words as wd
from envgen.procgen.naming import plural, words
from envgen.procgen.tasks import Ctx, Draft
from envgen.procgen.tasks_write import _a, _bookable, _create, _mine_once, _verb, create_phrase, size_phrase
from envgen.procgen.tools import stockish
from envgen.procgen.words import fmt_num


def create_with_note(ctx: Ctx) -> Draft | None:
    """Find by name, create, then attach a note to the new record."""
    if not ctx.has("notes.add"):
        return None
    row = _bookable(ctx)
    if row is None:
        return None
    rec, notes = ctx.t("record"), ctx.t("notes")
    call, asserts, rules, qty, date, new_id = _create(ctx, row)
    body = ctx.rng.choice(wd.NOTE_TEXTS)
    size, phrase = size_phrase(ctx, qty), create_phrase(ctx, row["name"], qty)
    text = ctx.say(("{P} for {d} and add a {nx} to it: \"{b}\"", "I'd like a new {x} for {n}{size} on {d}. Attach the {nx} \"{b}\"",
                    "New {x}: {n}{size}, {d}; {nx}: \"{b}\""), P=phrase[0].upper() + phrase[1:], n=row["name"], size=size, d=date,
                   nx=words(notes.noun), b=body, x=words(rec.noun))
    asserts.append(_a(f"SELECT COUNT(*) FROM {notes.name} WHERE {notes.c['record']} = {new_id} AND {notes.c['body']} = '{body.replace(chr(39), chr(39) * 2)}'",
                      1, "the note is on the new record"))
    rules.append(("notes", ["insert"], None, None))
    gold = [ctx.call("res.search", query=row["name"]), call, ctx.call("notes.add", record=new_id, body=body)]
    return Draft(text, gold, asserts, ctx.changes(*rules), tags=["write", "lookup", "multi-step"])


def cheapest_create(ctx: Ctx) -> Draft | None:
    """Create a record for the cheapest available resource in a lookup group."""
    res, lk, rec = ctx.t("resource"), ctx.t("lookup0"), ctx.t("record")
    group = ctx.rng.choice(lk.rows)
    items = sorted((r for r in res.rows if r["lookup0"] == group["pk"]), key=lambda r: r["money"])
    if len(items) < 2 or items[0]["money"] == items[1]["money"] or not _bookable(ctx, items[:1]):
        return None
    row = items[0]
    call, asserts, rules, qty, date, _ = _create(ctx, row)
    size = size_phrase(ctx, qty)
    text = ctx.say(("Find the cheapest {r} in {g} and set up a {x} for it{size} on {d}.",
                    "Look up the lowest-{m} {r} in the {g} {lk}, then make a {x} for it{size} for {d}.",
                    "I want a {x}{size} on {d} for whichever {r} in {g} costs least."),
                   r=words(res.noun), g=group["name"], size=size, d=date, m=words(res.c["money"]), lk=words(lk.noun), x=words(rec.noun))
    gold = [ctx.call("lookup0.list"), ctx.call("res.search", lookup0=group["pk"]), call]
    return Draft(text, gold, asserts, ctx.changes(*rules), tags=["write", "lookup", "multi-step"])


def cancel_and_replace(ctx: Ctx) -> Draft | None:
    """Cancel my record for A, then create one for B instead."""
    rec, res = ctx.t("record"), ctx.t("resource")
    old = _mine_once(ctx, ctx.m.cancellable)
    if old is None:
        return None
    new = _bookable(ctx, [r for r in res.rows if r["pk"] != old["resource"]])
    if new is None:
        return None
    call, asserts, rules, qty, date, new_id = _create(ctx, new)
    a, b = res.rows[old["resource"] - 1]["name"], new["name"]
    size, phrase = size_phrase(ctx, qty), create_phrase(ctx, b, qty)
    text = ctx.say(("{C} my {x} for {a} and {p} for {d} instead.", "Swap my {a} {x} for {b}{size} on {d}: {c} the old one first.",
                    "I changed my mind about {a}. {C} that {x} and {p}, date {d}."),
                   C=_verb(ctx, "cancel").capitalize(), c=_verb(ctx, "cancel"), p=phrase, x=words(rec.noun), a=a, b=b, size=size, d=date)
    asserts.append(_a(f"SELECT {rec.c['status']} FROM {rec.name} WHERE {rec.c['pk']} = {old['pk']}", ctx.m.statuses[3], "old one cancelled"))
    rules = [("record", ["insert", "update"], [old["pk"], new_id], ["status"])]
    if stockish(res):
        rules.append(("resource", ["update"], [old["resource"], new["pk"]], ["count"]))
    gold = [ctx.call("rec.mine"), ctx.call("rec.cancel", id=old["pk"]), ctx.call("res.search", query=b), call]
    return Draft(text, gold, asserts, ctx.changes(*rules), tags=["write", "lookup", "multi-step"])


def assign_by_names(ctx: Ctx) -> Draft | None:
    """Assign a staff member (named) to my record for a resource (named)."""
    if not ctx.has("rec.assign"):
        return None
    rec, res, staff = ctx.t("record"), ctx.t("resource"), ctx.t("staff")
    row = _mine_once(ctx, ctx.m.statuses)
    if row is None:
        return None
    cand = [s for s in staff.rows if s["pk"] != row["staff"] and sum(1 for o in staff.rows if o["name"] == s["name"]) == 1]
    if not cand:
        return None
    person = ctx.rng.choice(cand)
    name = res.rows[row["resource"] - 1]["name"]
    text = ctx.say(("Have {p} take care of my {x} for {n}.", "Assign {s} {p} to my {n} {x}.", "I'd like {p} to handle my {x} for {n}."),
                   p=person["name"], s=words(staff.noun), x=words(rec.noun), n=name)
    asserts = [_a(f"SELECT {rec.c['staff']} FROM {rec.name} WHERE {rec.c['pk']} = {row['pk']}", person["pk"], "assigned")]
    first = person["name"].split(" ")[0] if ctx.rng.random() < 0.5 else person["name"]
    gold = [ctx.call("rec.mine"), ctx.call("staff.list", query=first), ctx.call("rec.assign", id=row["pk"], staff=person["pk"])]
    return Draft(text, gold, asserts, ctx.changes(("record", ["update"], [row["pk"]], ["staff"])), tags=["write", "lookup", "multi-step"])


def favorite_all_under(ctx: Ctx) -> Draft | None:
    """Save every resource of a group under a price limit (one call per match)."""
    if not ctx.has("fav.add"):
        return None
    res, lk, fav = ctx.t("resource"), ctx.t("lookup0"), ctx.t("favorites")
    group = ctx.rng.choice(lk.rows)
    items = sorted((r for r in res.rows if r["lookup0"] == group["pk"]), key=lambda r: r["money"])
    done = {r["resource"] for r in fav.rows if r["user"] == 1}
    for k in (3, 2, 1):
        if len(items) > k and items[k - 1]["money"] < items[k]["money"] and not any(r["pk"] in done for r in items[:k]):
            chosen = items[:k]
            break
    else:
        return None
    limit_v = chosen[-1]["money"]
    limit = fmt_num(limit_v)
    text = ctx.say(("Save every {r} in {g} that costs at most {lim} to my {xs}.", "Add all {g} {rs} priced {lim} or less to my {xs}.",
                    "Bookmark each {r} under {lk} {g} with a {m} no higher than {lim}."),
                   r=words(res.noun), rs=words(plural(res.noun)), g=group["name"], lim=limit, xs=words(plural(fav.noun)),
                   lk=words(lk.noun), m=words(res.c["money"]))
    ids = ", ".join(str(r["pk"]) for r in chosen)
    asserts = [_a(f"SELECT COUNT(*) FROM {fav.name} WHERE {fav.c['user']} = 1 AND {fav.c['resource']} IN ({ids})", len(chosen), "all saved")]
    gold = [ctx.call("lookup0.list"), ctx.call("res.search", lookup0=group["pk"], max_money=limit_v)]
    gold += [ctx.call("fav.add", resource=r["pk"]) for r in chosen]
    return Draft(text, gold, asserts, ctx.changes(("favorites", ["insert"], None, None)), tags=["write", "lookup", "multi-step"])


def delete_my_review(ctx: Ctx) -> Draft | None:
    """Find the resource, list its reviews, delete mine."""
    if not ctx.has("rev.delete"):
        return None
    res, rev = ctx.t("resource"), ctx.t("reviews")
    mine = [r for r in rev.rows if r["user"] == 1]
    if not mine:
        return None
    row = ctx.rng.choice(mine)
    name = res.rows[row["resource"] - 1]["name"]
    text = ctx.say(("Delete my {x} of {n}.", "Remove the {x} I wrote for {n}.", "I regret my {x} on {n}; take it down."), x=words(rev.noun), n=name)
    asserts = [_a(f"SELECT COUNT(*) FROM {rev.name} WHERE {rev.c['pk']} = {row['pk']}", 0, "review deleted")]
    gold = [ctx.call("res.search", query=name), ctx.call("rev.list", resource=row["resource"]), ctx.call("rev.delete", id=row["pk"])]
    return Draft(text, gold, asserts, ctx.changes(("reviews", ["delete"], [row["pk"]], None)), tags=["write", "lookup", "multi-step"])


def pay_with_card(ctx: Ctx) -> Draft | None:
    """Attach a saved card (named by brand and last digits) to my record for a resource."""
    if not ctx.has("pay.use"):
        return None
    rec, res, pay = ctx.t("record"), ctx.t("resource"), ctx.t("payments")
    row = _mine_once(ctx, ctx.m.statuses)
    cards = [p for p in pay.rows if p["user"] == 1]
    if row is None or not cards:
        return None
    card, name = ctx.rng.choice(cards), res.rows[row["resource"] - 1]["name"]
    text = ctx.say(("Pay for my {x} for {n} with my {b} ending in {l}.", "Use the {b} card ending {l} on my {n} {x}."),
                   x=words(rec.noun), n=name, b=card["brand"], l=card["last4"])
    asserts = [_a(f"SELECT {rec.c['payment']} FROM {rec.name} WHERE {rec.c['pk']} = {row['pk']}", card["pk"], "card attached")]
    gold = [ctx.call("rec.mine"), ctx.call("pay.list"), ctx.call("pay.use", id=row["pk"], payment=card["pk"])]
    return Draft(text, gold, asserts, ctx.changes(("record", ["update"], [row["pk"]], ["payment"])), tags=["write", "lookup", "multi-step"])


BUILDERS = (create_with_note, cheapest_create, cancel_and_replace, assign_by_names, favorite_all_under, delete_my_review, pay_with_card)
