"""Tools on the waitlist, loyalty-points and opening-hours tables."""

from __future__ import annotations

from envgen.procgen.model import WEEKDAYS
from envgen.procgen.naming import article, plural, words
from envgen.procgen.tools import Toolkit, _id, _str
from envgen.world import SqlStep


def loyalty_tools(k: Toolkit) -> None:
    """Tools for the waitlist, points and hours tables present in the model."""
    m, n = k.m, k.n
    res = k.T("resource")
    pid = n.param(res.noun)
    if m.t("waitlist"):
        t = k.T("waitlist")
        c, rs = t.c, res.c
        k.add("wait.join", "create", t.noun, ("Join the waitlist for a {r}.", "Adds you to the waiting list of {ra}.", "Queue up for a {r}.",
              "New {x}."), {pid: _id(f"The {words(res.noun)} id")}, (pid,),
              [k.exists(res, pid), SqlStep("guard", f"SELECT 1 FROM {t.name} WHERE {c['resource']} = :{pid} AND {c['user']} = 1", expect="absent",
                                           error=f"you are already waiting for {words(res.noun)} {{{pid}}}"),
               SqlStep("write", f"INSERT INTO {t.name} ({c['resource']}, {c['user']}, {c['created']}) VALUES (:{pid}, 1, '{m.now}')",
                       save=f"{t.noun}_id")], p={"resource": pid}, x=words(t.noun), r=words(res.noun), ra=article(res.noun))
        k.add("wait.leave", "delete", t.noun, ("Leave the waitlist for a {r}.", "Removes you from the waiting list of {ra}.",
              "Stop waiting for a {r}.", "Delete {x}."), {pid: _id(f"The {words(res.noun)} id")}, (pid,),
              [SqlStep("guard", f"SELECT 1 FROM {t.name} WHERE {c['resource']} = :{pid} AND {c['user']} = 1", expect="exists",
                       error=f"you are not waiting for {words(res.noun)} {{{pid}}}"),
               SqlStep("write", f"DELETE FROM {t.name} WHERE {c['resource']} = :{pid} AND {c['user']} = 1", output="deleted")],
              p={"resource": pid}, x=words(t.noun), r=words(res.noun), ra=article(res.noun))
        k.add("wait.list", "mine", t.noun, ("The {rs} you are waiting for.", "Returns your {xs}.", "Your waitlist.", "All your {xs}."), {}, (),
              [SqlStep("read", f"SELECT {t.name}.{c['pk']}, {res.name}.{rs['pk']} AS {res.noun}_id, {res.name}.{rs['name']} FROM {t.name} "
                               f"JOIN {res.name} ON {res.name}.{rs['pk']} = {t.name}.{c['resource']} WHERE {t.name}.{c['user']} = 1 "
                               f"ORDER BY {t.name}.{c['pk']}", output=plural(t.noun), shape="rows")],
              plural_noun=True, xs=words(plural(t.noun)), rs=words(plural(res.noun)))
    if m.t("points"):
        t = k.T("points")
        c = t.c
        bal = f"SELECT COALESCE(SUM({c['points']}), 0) FROM {t.name} WHERE {c['user']} = 1"
        k.add("points.balance", "get", f"{t.noun}_balance", ("Your current points balance.", "Returns the sum of your {xs}.",
              "How many points you have.", "Points balance of the signed-in user."), {}, (),
              [SqlStep("read", bal, output="balance", shape="value")], xs=words(plural(t.noun)))
        k.add("points.history", "mine", t.noun, ("Your {xs}, oldest first.", "Returns every {x} on your account.", "Points history.",
              "All your {xs}."), {}, (),
              [SqlStep("read", f"SELECT {k.select_cols(t)} FROM {t.name} WHERE {c['user']} = 1 ORDER BY {c['pk']}", output=plural(t.noun),
                       shape="rows")], plural_noun=True, x=words(t.noun), xs=words(plural(t.noun)))
        props = {c["points"]: {"type": "integer", "minimum": 1, "maximum": 100000, "description": "How many points to redeem"},
                 c["reason"]: _str("What the points are for")}
        k.add("points.redeem", "redeem", "points", ("Redeem points; refused if the balance is too low.", "Spends some of your points.",
              "Use points from your balance.", "Redeem {xs}."), props, (c["points"],),
              [SqlStep("guard", f"SELECT ({bal}) >= :{c['points']}", expect="true", error="not enough points (you asked for {" + c["points"] + "})"),
               SqlStep("write", f"INSERT INTO {t.name} ({c['user']}, {c['points']}, {c['reason']}, {c['created']}) "
                                f"VALUES (1, -:{c['points']}, COALESCE(:{c['reason']}, 'redemption'), '{m.now}')", save=f"{t.noun}_id")],
              verb="redeem", p={"points": c["points"], "reason": c["reason"]}, xs=words(plural(t.noun)))
    if m.t("hours"):
        t = k.T("hours")
        c = t.c
        k.add("hours.get", "get", plural(t.noun), ("Opening hours, for one day or the whole week.", "Returns when we open and close.",
              "Business hours by weekday.", "When {xs} apply."), {c["day"]: {"type": "string", "enum": list(WEEKDAYS), "description": "A weekday"}}, (),
              [SqlStep("read", f"SELECT {k.select_cols(t)} FROM {t.name} WHERE (:{c['day']} IS NULL OR {c['day']} = :{c['day']}) ORDER BY {c['pk']}",
                       output=plural(t.noun), shape="rows")], p={"day": c["day"]}, xs=words(plural(t.noun)))
