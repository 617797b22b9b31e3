"""One- and two-call write tasks on the profile and account tables."""

from __future__ import annotations

from envgen.procgen import words as wd
from envgen.procgen.model import PREFS
from envgen.procgen.naming import words
from envgen.procgen.tasks import Ctx, Draft, q
from envgen.procgen.tasks_write import _a, _mine_once
from envgen.procgen.words import fmt_num


def update_email(ctx: Ctx) -> Draft | None:
    u = ctx.t("user")
    name = u.rows[0]["name"]
    new = f"{name.split(' ')[0].lower()}.{ctx.rng.choice(('work', 'home', 'new', 'alt'))}{ctx.rng.randrange(10, 99)}@{ctx.rng.choice(wd.DOMAINS)}"
    text = ctx.say(("Change my email to {e}.", "Update the email on my profile to {e}.", "My new email address is {e}; please save it.",
                    "Set my contact email to {e}."), e=new)
    asserts = [_a(f"SELECT {u.c['email']} FROM {u.name} WHERE {u.c['pk']} = 1", new, "email updated")]
    gold = [ctx.call("user.update", email=new)]
    if ctx.rng.random() < 0.5:
        gold.insert(0, ctx.call("user.get"))
    return Draft(text, gold, asserts, ctx.changes(("user", ["update"], [1], ["email"])), tags=["write", "profile"])


def mark_notification(ctx: Ctx) -> Draft | None:
    if not ctx.has("notif.read"):
        return None
    t = ctx.t("notifications")
    mine = [r for r in t.rows if r["user"] == 1]
    cand = [r for r in mine if r["read"] == 0 and sum(1 for o in mine if o["message"] == r["message"]) == 1]
    if not cand:
        return None
    row = ctx.rng.choice(cand)
    text = ctx.say(("Mark the {x} \"{m}\" as read.", "I've seen the {x} titled \"{m}\"; mark it read.", "Clear the unread flag on \"{m}\"."),
                   x=words(t.noun), m=row["message"])
    asserts = [_a(f"SELECT {t.c['read']} FROM {t.name} WHERE {t.c['pk']} = {row['pk']}", 1, "marked read")]
    gold = [ctx.call("notif.list", unread_only=True), ctx.call("notif.read", id=row["pk"])]
    return Draft(text, gold, asserts, ctx.changes(("notifications", ["update"], [row["pk"]], ["read"]), log=False), tags=["write", "lookup"])


def delete_address(ctx: Ctx) -> Draft | None:
    if not ctx.has("addr.delete"):
        return None
    t = ctx.t("addresses")
    mine = [r for r in t.rows if r["user"] == 1]
    cand = [r for r in mine if sum(1 for o in mine if o["label"] == r["label"]) == 1]
    if not cand:
        return None
    row = ctx.rng.choice(cand)
    text = ctx.say(("Delete my {l} {x}.", "Remove the {x} labelled {l} from my account.", "I moved out - drop my '{l}' {x}."),
                   l=row["label"], x=words(t.noun))
    asserts = [_a(f"SELECT COUNT(*) FROM {t.name} WHERE {t.c['pk']} = {row['pk']}", 0, "address deleted")]
    gold = [ctx.call("addr.list"), ctx.call("addr.delete", id=row["pk"])]
    return Draft(text, gold, asserts, ctx.changes(("addresses", ["delete"], [row["pk"]], None), log=False), tags=["write", "lookup"])


def add_address(ctx: Ctx) -> Draft | None:
    if not ctx.has("addr.add"):
        return None
    t = ctx.t("addresses")
    used = {r["label"] for r in t.rows if r["user"] == 1}
    free = [lb for lb in wd.ADDRESS_LABELS if lb not in used]
    if not free:
        return None
    label, street, city = ctx.rng.choice(free), wd.street(ctx.rng), ctx.rng.choice(wd.CITIES)
    text = ctx.say(("Save a new {x} called {l}: {s}, {c}.", "Add my {l} {x} - {s} in {c}.", "Please store {s}, {c} as my {l} {x}."),
                   x=words(t.noun), l=label, s=street, c=city)
    c = t.c
    asserts = [_a(f"SELECT COUNT(*) FROM {t.name} WHERE {c['user']} = 1 AND {c['label']} = {q(label)} AND {c['street']} = {q(street)} "
                  f"AND {c['city']} = {q(city)}", 1, "address saved")]
    gold = [ctx.call("addr.add", label=label, street=street, city=city)]
    return Draft(text, gold, asserts, ctx.changes(("addresses", ["insert"], None, None), log=False), tags=["write"])


def default_payment(ctx: Ctx) -> Draft | None:
    if not ctx.has("pay.default"):
        return None
    t = ctx.t("payments")
    cand = [r for r in t.rows if r["user"] == 1 and not r["default"]]
    if not cand:
        return None
    row = ctx.rng.choice(cand)
    text = ctx.say(("Make my {b} ending in {l} the default {x}.", "Use the {b} card ending {l} by default from now on.",
                    "Set {b} ...{l} as my default."), b=row["brand"], l=row["last4"], x=words(t.noun))
    c = t.c
    asserts = [_a(f"SELECT {c['default']} FROM {t.name} WHERE {c['pk']} = {row['pk']}", 1, "now default"),
               _a(f"SELECT SUM({c['default']}) FROM {t.name} WHERE {c['user']} = 1", 1, "only one default")]
    mine = [r["pk"] for r in t.rows if r["user"] == 1]
    gold = [ctx.call("pay.list"), ctx.call("pay.default", id=row["pk"])]
    return Draft(text, gold, asserts, ctx.changes(("payments", ["update"], mine, ["default"]), log=False), tags=["write", "lookup"])


def update_price(ctx: Ctx) -> Draft | None:
    if not ctx.has("res.update"):
        return None
    res = ctx.t("resource")
    row = ctx.rng.choice(res.rows)
    new = float(max(1, round(row["money"] * ctx.rng.choice((0.8, 0.9, 1.1, 1.25)))))
    if new == row["money"]:
        return None
    text = ctx.say(("Set the {m} of {n} to {v}.", "{n} should now cost {v}.", "Change {n}'s {m} to {v}."),
                   m=words(res.c["money"]), n=row["name"], v=fmt_num(new))
    asserts = [_a(f"SELECT {res.c['money']} FROM {res.name} WHERE {res.c['pk']} = {row['pk']}", new, "price changed")]
    gold = [ctx.call("res.search", query=row["name"]), ctx.call("res.update", id=row["pk"], money=new)]
    return Draft(text, gold, asserts, ctx.changes(("resource", ["update"], [row["pk"]], ["money"])), tags=["write", "lookup"])


def note_on_record(ctx: Ctx) -> Draft | None:
    if not ctx.has("notes.add"):
        return None
    rec, res, notes = ctx.t("record"), ctx.t("resource"), ctx.t("notes")
    row = _mine_once(ctx, ctx.m.statuses)
    if row is None:
        return None
    body, name = ctx.rng.choice(wd.NOTE_TEXTS), res.rows[row["resource"] - 1]["name"]
    text = ctx.say(("Add a {nx} to my {x} for {n}: \"{b}\"", "Put the {nx} \"{b}\" on my {n} {x}.", "On my {x} for {n}, note: \"{b}\""),
                   nx=words(notes.noun), x=words(rec.noun), n=name, b=body)
    c = notes.c
    base = sum(1 for r in notes.rows if r["record"] == row["pk"] and r["body"] == body)
    asserts = [_a(f"SELECT COUNT(*) FROM {notes.name} WHERE {c['record']} = {row['pk']} AND {c['body']} = {q(body)}", base + 1, "note added")]
    gold = [ctx.call("rec.mine"), ctx.call("notes.add", record=row["pk"], body=body)]
    return Draft(text, gold, asserts, ctx.changes(("notes", ["insert"], None, None)), tags=["write", "lookup"])


def send_message(ctx: Ctx) -> Draft | None:
    if not ctx.has("msg.send"):
        return None
    t = ctx.t("messages")
    subject = ctx.rng.choice(("Opening hours", "Refund question", "Account access", "Invoice copy", "Accessibility"))
    body = ctx.rng.choice(wd.NOTE_TEXTS)
    text = ctx.say(("Send support a {x} with subject \"{s}\" and text \"{b}\"", "Write to the team - subject: {s}; message: \"{b}\""),
                   x=words(t.noun), s=subject, b=body)
    c = t.c
    asserts = [_a(f"SELECT COUNT(*) FROM {t.name} WHERE {c['user']} = 1 AND {c['subject']} = {q(subject)} AND {c['body']} = {q(body)}", 1, "sent")]
    return Draft(text, [ctx.call("msg.send", subject=subject, body=body)], asserts, ctx.changes(("messages", ["insert"], None, None), log=False),
                 tags=["write"])


def set_preference(ctx: Ctx) -> Draft | None:
    if not ctx.has("pref.set"):
        return None
    t = ctx.t("preferences")
    row = ctx.rng.choice(t.rows)
    options = [v for k, vals in PREFS if k == row["key"] for v in vals if v != row["value"]]
    value = ctx.rng.choice(options)
    text = ctx.say(("Set my {k} {x} to {v}.", "Change my {k} to {v}.", "I'd prefer {k} = {v} from now on."),
                   k=row["key"].replace("_", " "), x=words(t.noun), v=value)
    c = t.c
    asserts = [_a(f"SELECT {c['value']} FROM {t.name} WHERE {c['pk']} = {row['pk']}", value, "preference set")]
    gold = [ctx.call("pref.set", key=row["key"], value=value)]
    return Draft(text, gold, asserts, ctx.changes(("preferences", ["update"], [row["pk"]], ["value"]), log=False), tags=["write"])


def join_waitlist(ctx: Ctx) -> Draft | None:
    if not ctx.has("wait.join"):
        return None
    res, t = ctx.t("resource"), ctx.t("waitlist")
    done = {r["resource"] for r in t.rows if r["user"] == 1}
    cand = [r for r in res.rows if r["pk"] not in done]
    if not cand:
        return None
    row = ctx.rng.choice(cand)
    text = ctx.say(("Put me on the waitlist for {n}.", "Add me to the waiting list of {n}.", "I want to wait for {n} - sign me up for its waitlist."),
                   n=row["name"])
    c = t.c
    asserts = [_a(f"SELECT COUNT(*) FROM {t.name} WHERE {c['resource']} = {row['pk']} AND {c['user']} = 1", 1, "on the waitlist")]
    gold = [ctx.call("res.search", query=row["name"]), ctx.call("wait.join", resource=row["pk"])]
    return Draft(text, gold, asserts, ctx.changes(("waitlist", ["insert"], None, None), log=False), tags=["write", "lookup"])


def redeem_points(ctx: Ctx) -> Draft | None:
    if not ctx.has("points.redeem"):
        return None
    t = ctx.t("points")
    bal = sum(r["points"] for r in t.rows if r["user"] == 1)
    if bal < 50:
        return None
    amount = ctx.rng.choice([v for v in (25, 50, 100, 150, 200) if v <= bal])
    text = ctx.say(("Redeem {a} of my points.", "Use {a} points from my balance.", "I'd like to spend {a} points."), a=amount)
    c = t.c
    asserts = [_a(f"SELECT SUM({c['points']}) FROM {t.name} WHERE {c['user']} = 1", bal - amount, "balance reduced")]
    gold = [ctx.call("points.balance"), ctx.call("points.redeem", points=amount)]
    return Draft(text, gold, asserts, ctx.changes(("points", ["insert"], None, None), log=False), tags=["write"])


BUILDERS = (join_waitlist, redeem_points, update_email, mark_notification, delete_address, add_address, default_payment, update_price, note_on_record, send_message,
            set_preference)
