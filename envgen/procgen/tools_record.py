"""Tools on the user's records (orders, bookings, claims, ...): list, get, create, change,
cancel, advance, total, assign. Status changes are guarded by the record's lifecycle."""

from __future__ import annotations

import datetime as dt
from typing import Any

from envgen.procgen.naming import article, plural, words
from envgen.procgen.tools import Toolkit, _id, stockish
from envgen.world import SqlStep

DATE = {"type": "string", "pattern": "^\\d{4}-\\d{2}-\\d{2}$", "description": "Date as YYYY-MM-DD"}


def record_tools(k: Toolkit) -> None:
    """Every tool on the record table."""
    m, n = k.m, k.n
    rec, res = k.T("record"), k.T("resource")
    rc, sc = rec.c, res.c
    arch = m.arch.records[0]
    x, xs, rx = words(rec.noun), words(plural(rec.noun)), words(res.noun)
    st = m.statuses
    rid = n.param(rec.noun)
    pid = n.param(res.noun)
    status_p = {"type": "string", "enum": list(st), "description": f"Only {xs} with this status"}

    cols = k.select_cols(rec) + f", {res.name}.{sc['name']} AS {res.noun}_{sc['name']}"
    join = f"FROM {rec.name} JOIN {res.name} ON {res.name}.{sc['pk']} = {rec.name}.{rc['resource']}"
    k.add("rec.mine", "mine", rec.noun, ("List your {xs}, optionally only those with a given status.", "Returns the signed-in user's {xs} with the {r} name.",
          "All {xs} on your account, newest last.", "Your {xs}; filter by status if you like."), {"status": status_p}, (),
          [SqlStep("read", f"SELECT {cols} {join} WHERE {rec.name}.{rc['user']} = 1 AND (:status IS NULL OR {rec.name}.{rc['status']} = :status) "
                           f"ORDER BY {rec.name}.{rc['pk']}", output=plural(rec.noun), shape="rows")],
          plural_noun=True, p={"status": "status"}, xs=xs, r=rx)
    k.add("rec.get", "get", rec.noun, ("Get one of your {xs} by id.", "Returns {a} on your account.", "Details of a single {x}.",
          "Look up {a} by its id."), {rid: _id(f"The {x} id")}, (rid,),
          [k.owned(rec, rid), SqlStep("read", f"SELECT {cols} {join} WHERE {rec.name}.{rc['pk']} = :{rid}", output=rec.noun, shape="row")],
          p={"id": rid}, xs=xs, x=x, a=article(rec.noun))

    # create
    props: dict[str, Any] = {pid: _id(f"The {rx} to use")}
    p = {"resource": pid}
    qty_sql = "1"
    if "qty" in rc:
        props[rc["qty"]] = {"type": "integer", "minimum": 1, "maximum": arch.qty_max, "default": 1, "description": f"How many ({rc['qty']})"}
        qty_sql, p["qty"] = f":{rc['qty']}", rc["qty"]
    props[rc["date"]] = DATE | {"description": f"{rc['date']} as YYYY-MM-DD (default: one week from today)"}
    p["date"] = rc["date"]
    dflt = dt.date.fromordinal(m.today.toordinal() + 7).isoformat()
    guards = [k.exists(res, pid),
              SqlStep("guard", f"SELECT {sc['active']} FROM {res.name} WHERE {sc['pk']} = :{pid}", expect="true",
                      error=f"{rx} {{{pid}}} is not available right now")]
    if stockish(res):
        guards.append(SqlStep("guard", f"SELECT {sc['count']} >= {qty_sql} FROM {res.name} WHERE {sc['pk']} = :{pid}", expect="true",
                              error=f"not enough {sc['count']} for {rx} {{{pid}}}"))
    cols_in = [rc["user"], rc["resource"], rc["status"], rc["date"], rc["amount"], rc["created"]]
    vals = ["1", f":{pid}", f"'{st[0]}'", f"COALESCE(:{rc['date']}, '{dflt}')",
            f"ROUND((SELECT {sc['money']} FROM {res.name} WHERE {sc['pk']} = :{pid}) * {qty_sql}, 2)", f"'{m.now}'"]
    if "qty" in rc:
        cols_in.append(rc["qty"])
        vals.append(qty_sql)
    new_id = f"new_{rec.noun}_id"
    writes = [SqlStep("write", f"INSERT INTO {rec.name} ({', '.join(cols_in)}) VALUES ({', '.join(vals)})", save=new_id)]
    if stockish(res):
        writes.append(SqlStep("write", f"UPDATE {res.name} SET {sc['count']} = {sc['count']} - {qty_sql} WHERE {sc['pk']} = :{pid}"))
    writes += k.log(f"create_{rec.noun}", f"'{rec.noun} ' || :{new_id}")
    k.add("rec.create", "create", rec.noun, ("Create a new {x} for a {r}; it starts as '{s0}'.", "{V} {a}. Returns the new {x} id.",
          "Makes {a} for the signed-in user (status '{s0}').", "New {x} for a {r}. Checks availability first."), props, (pid,),
          guards + writes, verb=_pick_verb(k, arch.create_verbs, True), p=p, x=x, r=rx, s0=st[0], V=arch.create_verbs[0].replace("_", " ").capitalize(),
          a=article(rec.noun))

    # update
    up = {rid: _id(f"The {x} id"), rc["date"]: DATE | {"description": f"New {rc['date']}"}}
    sets = [f"{rc['date']} = COALESCE(:{rc['date']}, {rc['date']})"]
    if "qty" in rc:
        up[rc["qty"]] = {"type": "integer", "minimum": 1, "maximum": arch.qty_max, "description": f"New {rc['qty']}"}
        sets.append(f"{rc['qty']} = COALESCE(:{rc['qty']}, {rc['qty']})")
        sets.append(f"{rc['amount']} = ROUND((SELECT {sc['money']} FROM {res.name} WHERE {res.name}.{sc['pk']} = {rec.name}.{rc['resource']}) "
                    f"* COALESCE(:{rc['qty']}, {rc['qty']}), 2)")
    k.add("rec.update", "update", rec.noun, ("Change a '{s0}' {x}; omitted fields stay the same.", "Edit one of your {xs} while it is still {s0}.",
          "Modify the date or size of {a}.", "Update {a} you own (only while '{s0}')."), up, (rid,),
          [k.owned(rec, rid), SqlStep("guard", f"SELECT {rc['status']} = '{st[0]}' FROM {rec.name} WHERE {rc['pk']} = :{rid}", expect="true",
                                      error=f"only {st[0]} {xs} can be changed"),
           SqlStep("write", f"UPDATE {rec.name} SET {', '.join(sets)} WHERE {rc['pk']} = :{rid}", output="updated")]
          + k.log(f"update_{rec.noun}", f"'{rec.noun} ' || :{rid}"),
          p={"id": rid, "date": rc["date"], "qty": rc.get("qty", "")}, s0=st[0], x=x, xs=xs, a=article(rec.noun))

    # cancel (allowed from the first one or two statuses, drawn per world)
    allowed = st[: 1 + (n.style % 2)]
    m.cancellable = allowed
    allowed_sql = ", ".join(f"'{s}'" for s in allowed)
    steps = [k.owned(rec, rid), SqlStep("guard", f"SELECT {rc['status']} IN ({allowed_sql}) FROM {rec.name} WHERE {rc['pk']} = :{rid}",
                                        expect="true", error=f"only {' or '.join(allowed)} {xs} can be {st[3]}")]
    steps += k.history(rid, st[3])
    steps.append(SqlStep("write", f"UPDATE {rec.name} SET {rc['status']} = '{st[3]}' WHERE {rc['pk']} = :{rid}", output="updated"))
    if stockish(res):
        q = rc.get("qty")
        back = f"(SELECT {q} FROM {rec.name} WHERE {rc['pk']} = :{rid})" if q else "1"
        steps.append(SqlStep("write", f"UPDATE {res.name} SET {sc['count']} = {sc['count']} + {back} WHERE {sc['pk']} = "
                                      f"(SELECT {rc['resource']} FROM {rec.name} WHERE {rc['pk']} = :{rid})"))
    steps += k.log(f"cancel_{rec.noun}", f"'{rec.noun} ' || :{rid}")
    k.add("rec.cancel", "cancel", rec.noun, ("Cancel {a}; only {al} ones can be cancelled.", "Sets one of your {xs} to '{s3}' (allowed while {al}).",
          "{V} {a} you own.", "Cancel a {x}. Refused unless its status is {al}."), {rid: _id(f"The {x} id")}, (rid,), steps,
          verb=_pick_verb(k, arch.cancel_verbs), p={"id": rid}, a=article(rec.noun), al=" or ".join(allowed), xs=xs, x=x, s3=st[3],
          V=arch.cancel_verbs[0].replace("_", " ").capitalize())

    steps = [k.owned(rec, rid), SqlStep("guard", f"SELECT {rc['status']} = '{st[0]}' FROM {rec.name} WHERE {rc['pk']} = :{rid}", expect="true",
                                        error=f"only {st[0]} {xs} can move to {st[1]}")]
    steps += k.history(rid, st[1])
    steps.append(SqlStep("write", f"UPDATE {rec.name} SET {rc['status']} = '{st[1]}' WHERE {rc['pk']} = :{rid}", output="updated"))
    steps += k.log(f"advance_{rec.noun}", f"'{rec.noun} ' || :{rid}")
    k.add("rec.advance", "advance", rec.noun, ("Move {a} from '{s0}' to '{s1}'.", "{V} one of your {xs} (it must be {s0}).",
          "Marks a {s0} {x} as {s1}.", "Status change {s0} -> {s1} for a {x}."), {rid: _id(f"The {x} id")}, (rid,), steps,
          verb=_pick_verb(k, arch.advance_verbs), p={"id": rid}, a=article(rec.noun), s0=st[0], s1=st[1], xs=xs, x=x,
          V=arch.advance_verbs[0].replace("_", " ").capitalize())

    k.add("rec.total", "total", f"{rec.noun}_{rc['amount'] if rc['amount'] != 'total' else 'amount'}", ("Sum of {amt} over your {xs}, optionally for one status.", "Returns the total {amt} of the signed-in user's {xs}.",
          "Adds up {amt} across your {xs}.", "Total {amt} (rounded to cents) of your {xs}."), {"status": status_p}, (),
          [SqlStep("read", f"SELECT ROUND(COALESCE(SUM({rc['amount']}), 0), 2) FROM {rec.name} WHERE {rc['user']} = 1 "
                           f"AND (:status IS NULL OR {rc['status']} = :status)", output="total", shape="value")],
          p={"status": "status"}, amt=rc["amount"], xs=xs)

    if "staff" in rc:
        s = k.T("staff")
        sp = n.param(s.noun)
        k.add("rec.assign", "assign", s.noun, ("Assign {sa} to one of your {xs}.", "Sets the {s} handling {a}.",
              "Choose which {s} looks after a {x}.", "Assign {s} to {x}."), {rid: _id(f"The {x} id"), sp: _id(f"The {words(s.noun)} id")},
              (rid, sp), [k.owned(rec, rid), k.exists(s, sp),
                          SqlStep("write", f"UPDATE {rec.name} SET {rc['staff']} = :{sp} WHERE {rc['pk']} = :{rid}", output="updated")]
              + k.log(f"assign_{s.noun}", f"'{rec.noun} ' || :{rid}"),
              verb="assign", p={"id": rid, "staff": sp}, s=words(s.noun), sa=article(s.noun), xs=xs, x=x, a=article(rec.noun))


def _pick_verb(k: Toolkit, verbs: tuple[str, ...], generic: bool = False) -> str | None:
    """A domain verb (book_room); with generic=True half the worlds use their generic verb instead (create_booking)."""
    if generic and k.n.style >= 2:
        return None
    return verbs[k.n.style % len(verbs)]
