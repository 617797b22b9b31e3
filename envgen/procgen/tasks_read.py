"""Read-only tasks: questions answered from tool results; any write is a violation."""

from __future__ import annotations

from envgen.procgen.naming import plural, words
from envgen.procgen.tasks import Ctx, Draft
from envgen.procgen.words import fmt_num

NO_CHANGES = {"tables": {}}


def _ro(instruction: str, gold, answer: str, contains: list[str], *tags: str) -> Draft:
    return Draft(instruction, gold, changes=NO_CHANGES, answer=answer, contains=contains, tags=["read-only", *tags])


def price_of(ctx: Ctx) -> Draft | None:
    """What does <resource> cost?"""
    res = ctx.t("resource")
    row = ctx.rng.choice(res.rows)
    r, money = words(res.noun), words(res.c["money"])
    text = ctx.say(("How much does the {n} {r} cost?", "What is the {m} of {n}?", "I'd like to know the {m} for the {r} called {n}.",
                    "{m} of {n}?"), n=row["name"], r=r, m=money)
    v = fmt_num(row["money"])
    return _ro(text, [ctx.call("res.search", query=row["name"])], f"The {money} of {row['name']} is {v}.", [v], "lookup")


def count_in_lookup(ctx: Ctx) -> Draft | None:
    """How many resources in lookup <L>?"""
    res, lk = ctx.t("resource"), ctx.t("lookup0")
    row = ctx.rng.choice(lk.rows)
    n = sum(1 for r in res.rows if r["lookup0"] == row["pk"])
    text = ctx.say(("How many {rs} are there in the {v} {lk}?", "Count the {rs} listed under {lk} '{v}'.",
                    "I'm curious how many {rs} fall in {v}.", "Number of {rs} in {lk} {v}?"),
                   rs=words(plural(res.noun)), v=row["name"], lk=words(lk.noun))
    gold = [ctx.call("lookup0.list"), ctx.call("res.count", lookup0=row["pk"])]
    return _ro(text, gold, f"There are {n} {words(plural(res.noun))} in {row['name']}.", [str(n)], "aggregate", "lookup")


def total_spent(ctx: Ctx) -> Draft | None:
    """Total amount over my records with a status."""
    rec = ctx.t("record")
    used = sorted({r["status"] for r in rec.rows if r["user"] == 1})
    status = ctx.rng.choice(used) if used else ctx.m.statuses[0]
    cents = sum(round(r["amount"] * 100) for r in rec.rows if r["user"] == 1 and r["status"] == status)
    v = fmt_num(cents / 100)
    text = ctx.say(("What is the total {a} of my {s} {xs}?", "Add up the {a} across all my {xs} that are {s}.",
                    "How much do my {s} {xs} come to in total?", "Sum of {a} for my {s} {xs}?"),
                   a=rec.c["amount"].replace("_", " ") if rec.c["amount"] != "total" else "amount", s=status.replace("_", " "),
                   xs=words(plural(rec.noun)))
    return _ro(text, [ctx.call("rec.total", status=status)], f"The total is {v}.", [v], "aggregate")


def my_status(ctx: Ctx) -> Draft | None:
    """What's the status of my record for <resource>?"""
    rec, res = ctx.t("record"), ctx.t("resource")
    mine = [r for r in rec.rows if r["user"] == 1]
    once = [r for r in mine if "_" not in r["status"] and sum(1 for o in mine if o["resource"] == r["resource"]) == 1]
    if not once:
        return None
    row = ctx.rng.choice(once)
    name = res.rows[row["resource"] - 1]["name"]
    text = ctx.say(("What is the status of my {x} for {n}?", "Where does my {x} for {n} stand?", "Is my {n} {x} still {s0}? Tell me its status.",
                    "Status of my {x} ({n})?"), x=words(rec.noun), n=name, s0=ctx.m.statuses[0])
    st = row["status"]
    return _ro(text, [ctx.call("rec.mine")], f"Your {words(rec.noun)} for {name} is {st}.", [st], "lookup")


def cheapest_in(ctx: Ctx) -> Draft | None:
    """Which resource in lookup <L> is cheapest?"""
    res, lk = ctx.t("resource"), ctx.t("lookup0")
    row = ctx.rng.choice(lk.rows)
    items = sorted((r for r in res.rows if r["lookup0"] == row["pk"]), key=lambda r: r["money"])
    if len(items) < 2 or items[0]["money"] == items[1]["money"]:
        return None
    best = items[0]
    text = ctx.say(("Which {r} in the {v} {lk} is the cheapest?", "Find the lowest-{m} {r} under {v}.",
                    "I want the cheapest {r} in {v} - which one is it?", "Cheapest {r} in {lk} {v}?"),
                   r=words(res.noun), v=row["name"], lk=words(lk.noun), m=words(res.c["money"]))
    gold = [ctx.call("lookup0.list"), ctx.call("res.search", lookup0=row["pk"])]
    return _ro(text, gold, f"The cheapest is {best['name']} at {fmt_num(best['money'])}.", [best["name"]], "lookup", "aggregate")


def avg_rating(ctx: Ctx) -> Draft | None:
    """Average rating of <resource> (optionally: of the cheapest in <L>)."""
    if "reviews" not in ctx.m.tables:
        return None
    res, rev = ctx.t("resource"), ctx.t("reviews")
    rated = sorted({r["resource"] for r in rev.rows})
    if not rated:
        return None
    pid = ctx.rng.choice(rated)
    name = res.rows[pid - 1]["name"]
    scores = [r["rating"] for r in rev.rows if r["resource"] == pid]
    avg = round(sum(scores) / len(scores) + 1e-9, 2)
    v = fmt_num(avg)
    text = ctx.say(("What is the average {s} of {n}?", "How well rated is the {r} {n}? Give me the mean {s}.",
                    "Average {s} for {n}, please.", "I'd like the average {x} {s} of {n}."),
                   s=rev.c["rating"].replace("_", " "), n=name, r=words(res.noun), x=words(rev.noun))
    gold = [ctx.call("res.search", query=name), ctx.call("rev.list", resource=pid)]
    return _ro(text, gold, f"{name} has an average {rev.c['rating']} of {v}.", [v], "lookup", "aggregate")


def handler_of(ctx: Ctx) -> Draft | None:
    """Who handles my record for <resource>? (record list, then staff list)"""
    if not ctx.has("staff.list"):
        return None
    rec, res, staff = ctx.t("record"), ctx.t("resource"), ctx.t("staff")
    mine = [r for r in rec.rows if r["user"] == 1]
    cand = [r for r in mine if r["staff"] and sum(1 for o in mine if o["resource"] == r["resource"]) == 1]
    if not cand:
        return None
    row = ctx.rng.choice(cand)
    name, person = res.rows[row["resource"] - 1]["name"], staff.rows[row["staff"] - 1]["name"]
    text = ctx.say(("Which {s} is assigned to my {x} for {n}?", "Who is handling my {n} {x}? I need their name.",
                    "Tell me the name of the {s} on my {x} for {n}."), s=words(staff.noun), x=words(rec.noun), n=name)
    gold = [ctx.call("rec.mine"), ctx.call("staff.list")]
    return _ro(text, gold, f"{person} is handling it.", [person], "lookup")


def promo_discount(ctx: Ctx) -> Draft | None:
    """How much off does promo code X give?"""
    if not ctx.has("promo.get"):
        return None
    t = ctx.t("promotions")
    row = ctx.rng.choice(t.rows)
    text = ctx.say(("What discount does the code {c} give?", "How many percent off is {c}?", "Check code {c} for me: what's the discount?"),
                   c=row["code"])
    return _ro(text, [ctx.call("promo.get", code=row["code"])], f"{row['code']} gives {row['percent']}% off.", [str(row["percent"])], "lookup")


def rating_of_cheapest(ctx: Ctx) -> Draft | None:
    """Average rating of the cheapest resource in <L>: three calls, each feeding the next."""
    if "reviews" not in ctx.m.tables:
        return None
    res, lk, rev = ctx.t("resource"), ctx.t("lookup0"), ctx.t("reviews")
    row = ctx.rng.choice(lk.rows)
    items = sorted((r for r in res.rows if r["lookup0"] == row["pk"]), key=lambda r: r["money"])
    if len(items) < 2 or items[0]["money"] == items[1]["money"]:
        return None
    best = items[0]
    scores = [r["rating"] for r in rev.rows if r["resource"] == best["pk"]]
    if not scores:
        return None
    v = fmt_num(round(sum(scores) / len(scores) + 1e-9, 2))
    text = ctx.say(("What's the average {s} of the cheapest {r} in {v}?", "Find the cheapest {r} in the {v} {lk} and tell me its average {s}."),
                   s=rev.c["rating"].replace("_", " "), r=words(res.noun), v=row["name"], lk=words(lk.noun))
    gold = [ctx.call("lookup0.list"), ctx.call("res.search", lookup0=row["pk"]), ctx.call("rev.list", resource=best["pk"])]
    return _ro(text, gold, f"The cheapest is {best['name']}; its average {rev.c['rating']} is {v}.", [v], "lookup", "aggregate")


def points_balance(ctx: Ctx) -> Draft | None:
    """How many points do I have?"""
    if not ctx.has("points.balance"):
        return None
    t = ctx.t("points")
    bal = sum(r["points"] for r in t.rows if r["user"] == 1)
    text = ctx.say(("How many points do I have?", "What's my current points balance?", "Tell me my loyalty points total."))
    return _ro(text, [ctx.call("points.balance")], f"You have {bal} points.", [str(bal)], "aggregate")


def closing_time(ctx: Ctx) -> Draft | None:
    """When do you open/close on a weekday?"""
    if not ctx.has("hours.get"):
        return None
    t = ctx.t("hours")
    row = ctx.rng.choice(t.rows)
    which = ctx.rng.choice(("opens", "closes"))
    text = ctx.say(("What time do you {w} on {d}?", "When do you {w} on {d}s?", "I need the {w2} time for {d}."),
                   w="open" if which == "opens" else "close", w2="opening" if which == "opens" else "closing", d=row["day"])
    return _ro(text, [ctx.call("hours.get", day=row["day"])], f"On {row['day']} we {which[:-1]} at {row[which]}.", [row[which]], "lookup")


BUILDERS = (points_balance, closing_time, price_of, count_in_lookup, total_spent, my_status, cheapest_in, avg_rating, handler_of, promo_discount, rating_of_cheapest)
