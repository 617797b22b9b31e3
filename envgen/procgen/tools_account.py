"""Tools on account-level tables: activity log, notifications, addresses, payment
methods, messages, status history, settings and promotions."""

from __future__ import annotations

from envgen.procgen.model import PREFS
from envgen.procgen.naming import article, plural, words
from envgen.procgen.tools import Toolkit, _id, _str
from envgen.world import SqlStep

BRANDS = ("Visa", "Mastercard", "Amex", "Discover")


def _mine(k: Toolkit, key: str, role: str, descs: tuple[str, ...], extra_where: str = "", props=None, p=None) -> None:
    t = k.T(role)
    k.add(key, "mine", t.noun, descs, props or {}, (),
          [SqlStep("read", f"SELECT {k.select_cols(t)} FROM {t.name} WHERE {t.c['user']} = 1{extra_where} ORDER BY {t.c['pk']}",
                   output=plural(t.noun), shape="rows")], plural_noun=True, p=p, xs=words(plural(t.noun)), x=words(t.noun))


def _own_guard(t, param: str) -> SqlStep:
    return SqlStep("guard", f"SELECT 1 FROM {t.name} WHERE {t.c['pk']} = :{param} AND {t.c['user']} = 1", expect="exists",
                   error=f"no {words(t.noun)} with id {{{param}}} on your account")


def account_tools(k: Toolkit) -> None:
    """Tools for the account-level optional tables present in the model."""
    m, n = k.m, k.n
    now = m.now
    if m.t("audit"):
        t = k.T("audit")
        k.add("audit.list", "mine", t.noun, ("Your most recent {xs}, newest first.", "Returns up to `limit` entries of your {x}.",
              "Recent account {xs}.", "What happened on your account lately."),
              {"limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20, "description": "How many entries"}}, (),
              [SqlStep("read", f"SELECT {k.select_cols(t)} FROM {t.name} WHERE {t.c['user']} = 1 ORDER BY {t.c['pk']} DESC LIMIT :limit",
                       output=plural(t.noun), shape="rows")], plural_noun=True, x=words(t.noun), xs=words(plural(t.noun)))
    if m.t("notifications"):
        t = k.T("notifications")
        c = t.c
        _mine(k, "notif.list", "notifications", ("Your {xs}; pass unread_only to hide read ones.", "Returns your {xs}.", "List {xs} sent to you.",
              "All your {xs}."), f" AND (:unread_only IS NULL OR :unread_only = 0 OR {c['read']} = 0)",
              {"unread_only": {"type": "boolean", "description": "Only unread ones"}})
        np_ = n.param(t.noun)
        k.add("notif.read", "update", f"{t.noun}_read", ("Mark one of your {xs} as read.", "Sets {a} to read.", "Mark {x} read.",
              "Flag a {x} as seen."), {np_: _id(f"The {words(t.noun)} id")}, (np_,),
              [_own_guard(t, np_), SqlStep("write", f"UPDATE {t.name} SET {c['read']} = 1 WHERE {c['pk']} = :{np_}", output="updated")],
              verb="mark", p={"id": np_}, x=words(t.noun), xs=words(plural(t.noun)), a=article(t.noun))
    if m.t("addresses"):
        t = k.T("addresses")
        c, x = t.c, words(t.noun)
        _mine(k, "addr.list", "addresses", ("Your {xs}.", "Returns the {xs} on your account.", "List saved {xs}.", "All your {xs}."))
        props = {c["label"]: _str("A short name such as home or work"), c["street"]: _str("Street line"), c["city"]: _str("City")}
        k.add("addr.add", "create", t.noun, ("Save a new {x}.", "Adds {a} to your account.", "Store another {x}.", "New {x}."), props,
              tuple(props), [SqlStep("write", f"INSERT INTO {t.name} ({c['user']}, {c['label']}, {c['street']}, {c['city']}) "
                                              f"VALUES (1, :{c['label']}, :{c['street']}, :{c['city']})", save=f"{t.noun}_id")],
              p={"label": c["label"], "street": c["street"], "city": c["city"]}, x=x, a=article(t.noun))
        ap = n.param(t.noun)
        k.add("addr.delete", "delete", t.noun, ("Delete one of your {xs}.", "Removes {a} by id.", "Drop a saved {x}.", "Delete {x}."),
              {ap: _id(f"The {x} id")}, (ap,), [_own_guard(t, ap), SqlStep("write", f"DELETE FROM {t.name} WHERE {c['pk']} = :{ap}", output="deleted")],
              p={"id": ap}, x=x, xs=words(plural(t.noun)), a=article(t.noun))
    if m.t("payments"):
        t = k.T("payments")
        c, x = t.c, words(t.noun)
        _mine(k, "pay.list", "payments", ("Your {xs}.", "Returns the {xs} on file.", "List {xs} you saved.", "All your {xs}."))
        pp = n.param(t.noun)
        k.add("pay.default", "update", f"default_{t.noun}", ("Make one of your {xs} the default.", "Sets {a} as default; others are unset.",
              "Choose the default {x}.", "Default {x}."), {pp: _id(f"The {x} id")}, (pp,),
              [_own_guard(t, pp), SqlStep("write", f"UPDATE {t.name} SET {c['default']} = CASE WHEN {c['pk']} = :{pp} THEN 1 ELSE 0 END "
                                                   f"WHERE {c['user']} = 1", output="updated")],
              verb="set", p={"id": pp}, x=x, xs=words(plural(t.noun)), a=article(t.noun))
        if "payment" in k.T("record").c:
            rec = k.T("record")
            rid = n.param(rec.noun)
            k.add("pay.use", "update", f"{rec.noun}_{t.noun}", ("Pay one of your {rs} with a saved {x}.", "Sets the {x} used for {ra}.",
                  "Choose how to pay for a {r}.", "Attach {a} to a {r}."), {rid: _id(f"The {words(rec.noun)} id"), pp: _id(f"The {x} id")},
                  (rid, pp), [k.owned(rec, rid), _own_guard(t, pp),
                              SqlStep("write", f"UPDATE {rec.name} SET {rec.c['payment']} = :{pp} WHERE {rec.c['pk']} = :{rid}", output="updated")],
                  verb="set", p={"id": rid, "payment": pp}, x=x, a=article(t.noun), r=words(rec.noun), rs=words(plural(rec.noun)),
                  ra=article(rec.noun))
    if m.t("messages"):
        t = k.T("messages")
        c, x = t.c, words(t.noun)
        props = {c["subject"]: _str("Subject line"), c["body"]: _str("Message text")}
        k.add("msg.send", "create", t.noun, ("Send a {x} to the support team.", "Creates a {x} from you.", "Write to support.", "New {x}."),
              props, tuple(props), [SqlStep("write", f"INSERT INTO {t.name} ({c['user']}, {c['subject']}, {c['body']}, {c['created']}) "
                                                     f"VALUES (1, :{c['subject']}, :{c['body']}, '{now}')", save=f"{t.noun}_id")],
              verb="send", p={"subject": c["subject"], "body": c["body"]}, x=x)
        _mine(k, "msg.list", "messages", ("{xs} you sent.", "Returns your {xs}.", "Your {xs}.", "List your {xs}."))
    if m.t("history"):
        t, rec = k.T("history"), k.T("record")
        rid = n.param(rec.noun)
        k.add("hist.list", "get", f"{rec.noun}_{t.noun}", ("Status changes of one of your {rs}.", "Returns the {x} entries for {ra}.",
              "How a {r}'s status changed over time.", "{X} of a {r}."), {rid: _id(f"The {words(rec.noun)} id")}, (rid,),
              [k.owned(rec, rid), SqlStep("read", f"SELECT {k.select_cols(t)} FROM {t.name} WHERE {t.c['record']} = :{rid} ORDER BY {t.c['pk']}",
                                          output=plural(t.noun), shape="rows")],
              p={"record": rid}, x=words(t.noun), X=words(t.noun).capitalize(), r=words(rec.noun), rs=words(plural(rec.noun)), ra=article(rec.noun))
    if m.t("preferences"):
        t = k.T("preferences")
        c = t.c
        _mine(k, "pref.list", "preferences", ("Your {xs}.", "Returns every {x} on your account.", "List your {xs}.", "All {xs}."))
        keys = [kk for kk, _ in PREFS]
        k.add("pref.set", "update", t.noun, ("Change one of your existing {xs}.", "Sets the value of {a}.", "Update a {x}.", "Modify {x}."),
              {c["key"]: {"type": "string", "enum": keys, "description": "Which setting"}, c["value"]: _str("New value")}, (c["key"], c["value"]),
              [SqlStep("guard", f"SELECT 1 FROM {t.name} WHERE {c['user']} = 1 AND {c['key']} = :{c['key']}", expect="exists",
                       error=f"you have no {words(t.noun)} named {{{c['key']}}}"),
               SqlStep("write", f"UPDATE {t.name} SET {c['value']} = :{c['value']} WHERE {c['user']} = 1 AND {c['key']} = :{c['key']}",
                       output="updated")], p={"key": c["key"], "value": c["value"]}, x=words(t.noun), xs=words(plural(t.noun)), a=article(t.noun))
    if m.t("promotions"):
        t = k.T("promotions")
        c = t.c
        k.add("promo.list", "list", t.noun, ("List {xs}; active_only hides expired ones.", "Returns the {xs}.", "All {xs}.", "Current {xs}."),
              {"active_only": {"type": "boolean", "description": "Only active ones"}}, (),
              [SqlStep("read", f"SELECT {k.select_cols(t)} FROM {t.name} WHERE (:active_only IS NULL OR :active_only = 0 OR {c['active']} = 1) "
                               f"ORDER BY {c['pk']}", output=plural(t.noun), shape="rows")],
              plural_noun=True, xs=words(plural(t.noun)))
        k.add("promo.get", "get", t.noun, ("Look up a {x} by its code.", "Returns the {x} with this code.", "Details of a {x}.", "Check {a}."),
              {c["code"]: _str("The code")}, (c["code"],),
              [SqlStep("guard", f"SELECT 1 FROM {t.name} WHERE {c['code']} = :{c['code']}", expect="exists", error=f"unknown code {{{c['code']}}}"),
               SqlStep("read", f"SELECT {k.select_cols(t)} FROM {t.name} WHERE {c['code']} = :{c['code']}", output=t.noun, shape="row")],
              p={"code": c["code"]}, x=words(t.noun), a=article(t.noun))
