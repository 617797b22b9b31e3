"""Tool builders: declarative SQL tools over a `Model`, named and described per world.

Each builder appends `Tool`s and records a `Ref` under a fixed key (e.g. "rec.cancel")
so task builders can call a tool without knowing what this world named it or its
parameters. The signed-in user is always row 1 of the user table, as in AWM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from envgen.procgen.model import Model, Table
from envgen.procgen.naming import article, plural, words
from envgen.world import SqlStep, Tool, ToolImpl

STOCKISH = ("stock", "left", "available", "on_hand", "slot", "copies", "inventory", "opening", "quota", "remaining",
            "claims", "spots", "servings", "portions", "open_")


MAX_TOOLS = 45
# Tools no task builder calls, dropped (in this order) when a world has more than MAX_TOOLS.
TRIMMABLE = ("promo.list", "msg.list", "audit.list", "tags.list", "pref.list", "hist.list", "notes.list", "points.history",
             "wait.list", "rec.get", "res.get", "lookup1.list")


@dataclass(frozen=True)
class Ref:
    """A built tool as tasks see it: its name and its parameters keyed by meaning."""

    name: str
    p: dict[str, str]


def stockish(t: Table) -> bool:
    """Whether the resource's count column is consumed by records (stock, seats left)."""
    return "count" in t.c and any(k in t.c["count"] for k in STOCKISH)


def _id(desc: str) -> dict[str, Any]:
    return {"type": "integer", "minimum": 1, "description": desc}


def _str(desc: str, **kw) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "description": desc, **kw}


class Toolkit:
    """Builds every tool a model supports; `tools` in order, `refs` by key."""

    def __init__(self, m: Model):
        self.m, self.n = m, m.naming
        self.tools: list[Tool] = []
        self.refs: dict[str, Ref] = {}

    # ------------------------------------------------------------ plumbing
    def add(self, key, kind, noun, descs, props, required, steps, *, plural_noun=False, verb=None, p=None, **fmt):
        name = self.n.tool(kind, noun, plural_noun=plural_noun, verb=verb)
        desc = self.n.describe(descs, **fmt)
        params = {"type": "object", "properties": props, "required": list(required), "additionalProperties": False}
        self.tools.append(Tool(name, desc, params, ToolImpl("sql", tuple(steps))))
        self.refs[key] = Ref(name, p or {})

    def trim(self, limit: int) -> None:
        """Drop tools that no task needs until at most `limit` remain."""
        for key in TRIMMABLE:
            if len(self.tools) <= limit:
                return
            ref = self.refs.pop(key, None)
            if ref is not None:
                self.tools = [t for t in self.tools if t.name != ref.name]

    def T(self, role: str) -> Table:
        return self.m.tables[role]

    def owned(self, rec: Table, param: str) -> SqlStep:
        return SqlStep("guard", f"SELECT 1 FROM {rec.name} WHERE {rec.c['pk']} = :{param} AND {rec.c['user']} = 1", expect="exists",
                       error=f"no {words(rec.noun)} with id {{{param}}} on your account")

    def exists(self, t: Table, param: str) -> SqlStep:
        return SqlStep("guard", f"SELECT 1 FROM {t.name} WHERE {t.c['pk']} = :{param}", expect="exists",
                       error=f"no {words(t.noun)} with id {{{param}}}")

    def log(self, action: str, detail_sql: str) -> list[SqlStep]:
        a = self.m.t("audit")
        if a is None:
            return []
        c = a.c
        return [SqlStep("write", f"INSERT INTO {a.name} ({c['user']}, {c['action']}, {c['detail']}, {c['created']}) "
                                 f"VALUES (1, '{action}', {detail_sql}, '{self.m.now}')")]

    def history(self, rec_param: str, new: str) -> list[SqlStep]:
        h, rec = self.m.t("history"), self.T("record")
        if h is None:
            return []
        c, r = h.c, rec.c
        return [SqlStep("write", f"INSERT INTO {h.name} ({c['record']}, {c['old']}, {c['new']}, {c['created']}) "
                                 f"SELECT {r['pk']}, {r['status']}, '{new}', '{self.m.now}' FROM {rec.name} WHERE {r['pk']} = :{rec_param}")]

    def select_cols(self, t: Table, keys: tuple[str, ...] | None = None) -> str:
        return ", ".join(f"{t.name}.{t.c[k]}" for k in (keys or tuple(t.c)) if k in t.c)


def build_tools(m: Model) -> Toolkit:
    """All tools of a world, in a stable order."""
    from envgen.procgen import tools_loyalty, tools_more

    k = Toolkit(m)
    _user_tools(k)
    for role in ("lookup0", "lookup1"):
        if m.t(role):
            _lookup_tool(k, role)
    if m.t("staff"):
        _staff_tool(k)
    _resource_tools(k)
    _record_tools(k)
    tools_more.build_extra(k)
    tools_loyalty.loyalty_tools(k)
    k.trim(MAX_TOOLS)
    return k


def _user_tools(k: Toolkit) -> None:
    u, n = k.T("user"), k.n
    c = u.c
    k.add("user.get", "get", "my_profile", ("Get the signed-in {u}'s profile.", "Returns your own {u} record (name, email, phone).",
          "Look up the profile of the current {u}.", "Profile of the logged-in {u}."), {}, (),
          [SqlStep("read", f"SELECT {k.select_cols(u)} FROM {u.name} WHERE {c['pk']} = 1", output="profile", shape="row")], u=words(u.noun))
    props = {"email": _str("New email address", pattern="^[^@ ]+@[^@ ]+$"), "phone": _str("New phone number"), "city": _str("New city")}
    k.add("user.update", "update", "my_profile", ("Update the signed-in {u}'s contact details; omitted fields stay as they are.",
          "Change your email, phone or city. Only the fields you pass are changed.", "Edit the current {u}'s profile.",
          "Modify profile fields (email, phone, city) of the logged-in {u}."), props, (),
          [SqlStep("guard", f"SELECT 1 FROM {u.name} WHERE {c['email']} = :email AND {c['pk']} <> 1", expect="absent",
                   error="the email {email} is already used by another account"),
           SqlStep("write", f"UPDATE {u.name} SET {c['email']} = COALESCE(:email, {c['email']}), {c['phone']} = COALESCE(:phone, {c['phone']}), "
                            f"{c['city']} = COALESCE(:city, {c['city']}) WHERE {c['pk']} = 1", output="updated")] + k.log("update_profile", "'profile'"),
          p={"email": "email", "phone": "phone", "city": "city"}, u=words(u.noun))


def _lookup_tool(k: Toolkit, role: str) -> None:
    t = k.T(role)
    k.add(f"{role}.list", "list", t.noun, ("List every {x} with its id.", "Returns all {xs}.", "All available {xs} (id and name).",
          "Enumerate {xs}; use the ids to filter other tools."), {}, (),
          [SqlStep("read", f"SELECT {k.select_cols(t)} FROM {t.name} ORDER BY {t.c['pk']}", output=plural(t.noun), shape="rows")],
          plural_noun=True, x=words(t.noun), xs=words(plural(t.noun)))


def _staff_tool(k: Toolkit) -> None:
    s, n = k.T("staff"), k.n
    c = s.c
    props = {n.qparam: _str(f"Text the {words(s.noun)}'s name contains"), "role": _str("Exact role or job title")}
    k.add("staff.list", "search", s.noun, ("List {xs}, optionally by name or role.", "Find {xs} by name or role.", "Returns {xs} (id, name, role).",
          "Directory of {xs}."), props, (),
          [SqlStep("read", f"SELECT {c['pk']}, {c['name']}, {c['role']} FROM {s.name} WHERE (:{n.qparam} IS NULL OR {c['name']} LIKE '%' || "
                           f":{n.qparam} || '%') AND (:role IS NULL OR {c['role']} = :role) ORDER BY {c['pk']}", output=plural(s.noun), shape="rows")],
          plural_noun=True, p={"query": n.qparam}, xs=words(plural(s.noun)))


def _resource_tools(k: Toolkit) -> None:
    r, n = k.T("resource"), k.n
    c, x = r.c, words(r.noun)
    props: dict[str, Any] = {n.qparam: _str(f"Text that the {x} {c['name']} contains")}
    where = [f"(:{n.qparam} IS NULL OR {c['name']} LIKE '%' || :{n.qparam} || '%')"]
    p = {"query": n.qparam}
    for lk in ("lookup0", "lookup1"):
        if lk in c:
            lt = k.T(lk)
            pname = n.param(lt.noun)
            props[pname] = _id(f"Only {words(plural(r.noun))} in this {words(lt.noun)}")
            where.append(f"(:{pname} IS NULL OR {c[lk]} = :{pname})")
            p[lk] = pname
    mp = f"max_{c['money']}"
    props[mp] = {"type": "number", "minimum": 0, "description": f"Upper bound on {c['money']}"}
    where.append(f"(:{mp} IS NULL OR {c['money']} <= :{mp})")
    p["max_money"] = mp
    k.add("res.search", "search", r.noun, ("Search {xs}; every filter is optional.", "Find {xs} by name, {lk} or price.",
          "Returns {xs} matching all given filters, ordered by id.", "Look for {xs}. Combine filters to narrow results."), props, (),
          [SqlStep("read", f"SELECT {k.select_cols(r)} FROM {r.name} WHERE {' AND '.join(where)} ORDER BY {c['pk']} LIMIT 50",
                   output=plural(r.noun), shape="rows")], plural_noun=True, p=p, xs=words(plural(r.noun)), lk=words(k.T("lookup0").noun))
    pid = n.param(r.noun)
    k.add("res.get", "get", r.noun, ("Get one {x} by id.", "Returns the full {x} record for the given id.",
          "Look up a single {x}; fails if the id does not exist.", "Details of {a}."), {pid: _id(f"The {x} id")}, (pid,),
          [k.exists(r, pid), SqlStep("read", f"SELECT {k.select_cols(r)} FROM {r.name} WHERE {c['pk']} = :{pid}", output=r.noun, shape="row")],
          p={"id": pid}, x=x, a=article(r.noun))
    lt = k.T("lookup0")
    lp = n.param(lt.noun)
    k.add("res.count", "count", r.noun, ("Count {xs} in a {lk}.", "Returns how many {xs} belong to the given {lk}.",
          "Number of {xs} per {lk}.", "Tally of {xs} in one {lk}."), {lp: _id(f"The {words(lt.noun)} id")}, (lp,),
          [k.exists(lt, lp), SqlStep("read", f"SELECT COUNT(*) FROM {r.name} WHERE {c['lookup0']} = :{lp}", output="count", shape="value")],
          plural_noun=True, p={"lookup0": lp}, xs=words(plural(r.noun)), lk=words(lt.noun))
    if k.m.arch.category in ("retail", "manufacturing inventory", "restaurants", "grocery delivery", "real estate", "hotel") or n.style % 2:
        up = {pid: _id(f"The {x} id"), c["money"]: {"type": "number", "minimum": 0, "description": f"New {c['money']}"}}
        sets = [f"{c['money']} = COALESCE(:{c['money']}, {c['money']})"]
        if "count" in c:
            up[c["count"]] = {"type": "integer", "minimum": 0, "description": f"New {c['count']}"}
            sets.append(f"{c['count']} = COALESCE(:{c['count']}, {c['count']})")
        k.add("res.update", "update", r.noun, ("Update a {x}'s {m} or {cnt}; omitted fields are unchanged.", "Edit {a} (staff only).",
              "Change the price or availability of a {x}.", "Modify {x} fields."), up, (pid,),
              [k.exists(r, pid), SqlStep("write", f"UPDATE {r.name} SET {', '.join(sets)} WHERE {c['pk']} = :{pid}", output="updated")]
              + k.log(f"update_{r.noun}", f"'{r.noun} ' || :{pid}"),
              p={"id": pid, "money": c["money"], "count": c.get("count", "")}, x=x, a=article(r.noun), m=c["money"], cnt=c.get("count", "details"))


def _record_tools(k: Toolkit) -> None:
    from envgen.procgen.tools_record import record_tools

    record_tools(k)
