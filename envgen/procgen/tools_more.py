"""Tools on the optional tables: notes, reviews, favorites, tags, activity log,
notifications, addresses, payment methods, messages, status history, settings, promotions."""

from __future__ import annotations

from envgen.procgen.naming import article, plural, words
from envgen.procgen.tools import Toolkit, _id, _str
from envgen.world import SqlStep


def build_extra(k: Toolkit) -> None:
    """Tools for whichever optional tables the model has."""
    m, n = k.m, k.n
    rec, res = k.T("record"), k.T("resource")
    rid, pid = n.param(rec.noun), n.param(res.noun)
    now = m.now
    if m.t("notes"):
        t = k.T("notes")
        c, x = t.c, words(t.noun)
        k.add("notes.add", "create", t.noun, ("Add a {x} to one of your {rs}.", "Attach {a} to {ra}. Returns the new id.",
              "Writes a {x} on a {r} you own.", "New {x} on a {r}."), {rid: _id(f"The {words(rec.noun)} id"), c["body"]: _str(f"Text of the {x}")},
              (rid, c["body"]), [k.owned(rec, rid), SqlStep("write", f"INSERT INTO {t.name} ({c['record']}, {c['body']}, {c['created']}) "
                                                                   f"VALUES (:{rid}, :{c['body']}, '{now}')", save=f"{t.noun}_id")],
              p={"record": rid, "body": c["body"]}, x=x, a=article(t.noun), r=words(rec.noun), rs=words(plural(rec.noun)), ra=article(rec.noun))
        k.add("notes.list", "list", t.noun, ("List the {xs} on one of your {rs}.", "Returns every {x} attached to {ra}.",
              "{Xs} of a {r}, oldest first.", "All {xs} for a {r}."), {rid: _id(f"The {words(rec.noun)} id")}, (rid,),
              [k.owned(rec, rid), SqlStep("read", f"SELECT {k.select_cols(t)} FROM {t.name} WHERE {c['record']} = :{rid} ORDER BY {c['pk']}",
                                          output=plural(t.noun), shape="rows")],
              plural_noun=True, p={"record": rid}, x=x, xs=words(plural(t.noun)), Xs=words(plural(t.noun)).capitalize(),
              r=words(rec.noun), rs=words(plural(rec.noun)), ra=article(rec.noun))
    if m.t("reviews"):
        t = k.T("reviews")
        c, x = t.c, words(t.noun)
        props = {pid: _id(f"The {words(res.noun)} id"), c["rating"]: {"type": "integer", "minimum": 1, "maximum": 5, "description": "1 to 5"},
                 c["comment"]: _str("Optional comment")}
        k.add("rev.add", "create", t.noun, ("Leave a {x} (1-5) on a {r}; one per {r}.", "Post {a} for {ra}.",
              "Rate a {r} from 1 to 5 with an optional comment.", "New {x} on a {r}."), props, (pid, c["rating"]),
              [k.exists(res, pid), SqlStep("guard", f"SELECT 1 FROM {t.name} WHERE {c['resource']} = :{pid} AND {c['user']} = 1", expect="absent",
                                           error=f"you already left a {x} on {words(res.noun)} {{{pid}}}"),
               SqlStep("write", f"INSERT INTO {t.name} ({c['resource']}, {c['user']}, {c['rating']}, {c['comment']}, {c['created']}) "
                                f"VALUES (:{pid}, 1, :{c['rating']}, :{c['comment']}, '{now}')", save=f"{t.noun}_id")],
              p={"resource": pid, "rating": c["rating"], "comment": c["comment"]}, x=x, a=article(t.noun), r=words(res.noun), ra=article(res.noun))
        k.add("rev.list", "list", t.noun, ("List the {xs} of a {r} and their average.", "Returns {xs} for {ra} plus the mean {sc}.",
              "All {xs} of one {r}.", "{Xs} and average {sc} of a {r}."), {pid: _id(f"The {words(res.noun)} id")}, (pid,),
              [k.exists(res, pid), SqlStep("read", f"SELECT {k.select_cols(t)} FROM {t.name} WHERE {c['resource']} = :{pid} ORDER BY {c['pk']}",
                                           output=plural(t.noun), shape="rows"),
               SqlStep("read", f"SELECT ROUND(AVG({c['rating']}), 2) FROM {t.name} WHERE {c['resource']} = :{pid}", output="average", shape="value")],
              plural_noun=True, p={"resource": pid}, x=x, xs=words(plural(t.noun)), Xs=words(plural(t.noun)).capitalize(), r=words(res.noun),
              ra=article(res.noun), sc=c["rating"])
        vp = n.param(t.noun)
        k.add("rev.delete", "delete", t.noun, ("Delete one of your {xs}.", "Removes {a} you wrote.", "Delete a {x} by id (yours only).",
              "Remove your {x}."), {vp: _id(f"The {x} id")}, (vp,),
              [SqlStep("guard", f"SELECT 1 FROM {t.name} WHERE {c['pk']} = :{vp} AND {c['user']} = 1", expect="exists",
                       error=f"no {x} with id {{{vp}}} written by you"),
               SqlStep("write", f"DELETE FROM {t.name} WHERE {c['pk']} = :{vp}", output="deleted")],
              p={"id": vp}, x=x, xs=words(plural(t.noun)), a=article(t.noun))
    if m.t("favorites"):
        t = k.T("favorites")
        c, x = t.c, words(t.noun)
        rs = res.c
        k.add("fav.add", "create", t.noun, ("Save a {r} to your {xs}.", "Adds {ra} to your {xs}.", "Bookmark a {r}.", "New {x}."),
              {pid: _id(f"The {words(res.noun)} id")}, (pid,),
              [k.exists(res, pid), SqlStep("guard", f"SELECT 1 FROM {t.name} WHERE {c['resource']} = :{pid} AND {c['user']} = 1", expect="absent",
                                           error=f"{words(res.noun)} {{{pid}}} is already saved"),
               SqlStep("write", f"INSERT INTO {t.name} ({c['resource']}, {c['user']}, {c['created']}) VALUES (:{pid}, 1, '{now}')", save=f"{t.noun}_id")],
              p={"resource": pid}, x=x, xs=words(plural(t.noun)), r=words(res.noun), ra=article(res.noun))
        k.add("fav.remove", "delete", t.noun, ("Remove a {r} from your {xs}.", "Un-save {ra}.", "Drop a {r} from your {xs}.", "Remove {x}."),
              {pid: _id(f"The {words(res.noun)} id")}, (pid,),
              [SqlStep("guard", f"SELECT 1 FROM {t.name} WHERE {c['resource']} = :{pid} AND {c['user']} = 1", expect="exists",
                       error=f"{words(res.noun)} {{{pid}}} is not in your {words(plural(t.noun))}"),
               SqlStep("write", f"DELETE FROM {t.name} WHERE {c['resource']} = :{pid} AND {c['user']} = 1", output="deleted")],
              p={"resource": pid}, x=x, xs=words(plural(t.noun)), r=words(res.noun), ra=article(res.noun))
        k.add("fav.list", "mine", t.noun, ("List your {xs} with {r} names.", "Returns the {rs} you saved.", "Your saved {rs}.", "All {xs}."), {}, (),
              [SqlStep("read", f"SELECT {t.name}.{c['pk']}, {res.name}.{rs['pk']} AS {res.noun}_id, {res.name}.{rs['name']} FROM {t.name} "
                               f"JOIN {res.name} ON {res.name}.{rs['pk']} = {t.name}.{c['resource']} WHERE {t.name}.{c['user']} = 1 "
                               f"ORDER BY {t.name}.{c['pk']}", output=plural(t.noun), shape="rows")],
              plural_noun=True, xs=words(plural(t.noun)), r=words(res.noun), rs=words(plural(res.noun)))
    if m.t("tags"):
        t, j = k.T("tags"), k.T("restags")
        k.add("tags.list", "list", t.noun, ("List all {xs}.", "Returns every {x} with its id.", "All {xs}.", "Available {xs}."), {}, (),
              [SqlStep("read", f"SELECT {k.select_cols(t)} FROM {t.name} ORDER BY {t.c['pk']}", output=plural(t.noun), shape="rows")],
              plural_noun=True, x=words(t.noun), xs=words(plural(t.noun)))
        k.add("tags.of", "get", f"{res.noun}_{plural(t.noun)}", ("The {xs} of one {r}.", "Returns {xs} attached to {ra}.", "{Xs} on a {r}.",
              "Which {xs} a {r} has."), {pid: _id(f"The {words(res.noun)} id")}, (pid,),
              [k.exists(res, pid), SqlStep("read", f"SELECT {t.name}.{t.c['pk']}, {t.name}.{t.c['name']} FROM {j.name} JOIN {t.name} ON "
                                                   f"{t.name}.{t.c['pk']} = {j.name}.{j.c['tag']} WHERE {j.name}.{j.c['resource']} = :{pid} "
                                                   f"ORDER BY {t.name}.{t.c['pk']}", output=plural(t.noun), shape="rows")],
              p={"resource": pid}, xs=words(plural(t.noun)), Xs=words(plural(t.noun)).capitalize(), r=words(res.noun), ra=article(res.noun))
    from envgen.procgen.tools_account import account_tools

    account_tools(k)
