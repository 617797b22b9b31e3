"""The relational model of one world: tables, columns, foreign keys and seed rows.

`build_model` turns an archetype plus naming conventions into `Table`s in dependency
order (a table only references tables before it) and fills them with seed rows.
Columns are addressed by meaning (`t.c["money"]`), never by their drawn names.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from typing import Any

from envgen.procgen import words as wd
from envgen.procgen.archetypes import Archetype
from envgen.procgen.naming import Naming

OPTIONAL = ("staff", "lookup1", "notes", "reviews", "favorites", "tags", "audit", "notifications", "addresses",
            "payments", "messages", "history", "preferences", "promotions", "waitlist", "points", "hours")


@dataclass
class Table:
    """One table: meaning-keyed column names, DDL pieces and seed rows."""

    role: str
    noun: str
    name: str
    c: dict[str, str] = field(default_factory=dict)  # meaning -> column name (c["pk"] is the key)
    decls: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)  # table constraints (UNIQUE (...))
    rows: list[dict[str, Any]] = field(default_factory=list)  # meaning -> value

    def add(self, meaning: str, name: str, decl: str) -> None:
        self.c[meaning] = name
        self.decls.append(f"{name} {decl}")

    def ddl(self) -> str:
        return f"CREATE TABLE {self.name} ({', '.join(self.decls + self.extra)})"

    def insert(self, **values: Any) -> dict[str, Any]:
        row = {"pk": len(self.rows) + 1, **values}
        self.rows.append(row)
        return row

    def next_id(self) -> int:
        return len(self.rows) + 1

    def seed(self) -> dict[str, Any]:
        keys = list(self.c)
        return {"columns": [self.c[k] for k in keys], "rows": [[r.get(k) for k in keys] for r in self.rows]}


@dataclass
class Model:
    """All tables of a world plus the drawn vocabulary the tools and tasks speak."""

    arch: Archetype
    naming: Naming
    today: dt.date
    nouns: dict[str, str]  # role -> chosen synonym
    tables: dict[str, Table] = field(default_factory=dict)
    statuses: tuple[str, str, str, str] = ("pending", "confirmed", "completed", "cancelled")
    cancellable: tuple[str, ...] = ()  # statuses from which a record may be cancelled (set by the tools)
    small: bool = False  # few tables: give the core tables more rows so the seed stays at 50 rows or more
    lean: bool = False  # the compact profile: fewer people, resources and records, so listings stay short

    def t(self, role: str) -> Table | None:
        return self.tables.get(role)

    @property
    def now(self) -> str:
        return f"{self.today.isoformat()}T09:00:00"


def _rows(rng: random.Random, m: Model, lean: tuple[int, int], full: tuple[int, int]) -> int:
    """A core table's row count: drawn from `lean` in the compact profile, else from `full`."""
    return rng.randrange(*(lean if m.lean else full))


def build_model(rng: random.Random, arch: Archetype, naming: Naming, n_tables: int, lean: bool = False) -> Model:
    """Draw vocabulary and tables (about n_tables of them) and fill the seed rows (fewer when lean)."""
    res, rec = arch.resources[0], arch.records[0]
    lk0 = arch.lookups[0]
    nouns = {"user": rng.choice(arch.users), "staff": rng.choice(arch.staff), "lookup0": rng.choice(lk0.nouns),
             "resource": rng.choice(res.nouns), "record": rng.choice(rec.nouns)}
    if len(arch.lookups) > 1:
        nouns["lookup1"] = rng.choice(arch.lookups[1].nouns)
    generic = {"notes": ("note", "comment", "remark"), "reviews": ("review", "rating", "feedback"),
               "favorites": ("favorite", "wishlist_item", "saved_item", "bookmark"), "tags": ("tag", "label", "keyword"),
               "audit": ("audit_log", "activity_log", "event_log", "activity"), "notifications": ("notification", "alert", "inbox_message"),
               "addresses": ("address", "saved_address", "contact_address"), "payments": ("payment_method", "card", "wallet_card"),
               "messages": ("message", "support_message", "inquiry"), "history": ("status_change", "status_history", "transition"),
               "preferences": ("preference", "setting", "user_setting"), "promotions": ("promotion", "promo_code", "coupon"),
               "waitlist": ("waitlist_entry", "waitlist_spot", "queue_entry"), "points": ("points_entry", "reward_point", "loyalty_entry"),
               "hours": ("opening_hour", "business_hour", "service_hour")}
    for role, opts in generic.items():
        nouns[role] = rng.choice(opts)
    if len(set(nouns.values())) != len(nouns):  # synonyms collided (e.g. two "rating"s): keep roles apart
        seen: set[str] = set()
        for role in list(nouns):
            while nouns[role] in seen:
                nouns[role] = f"{role}_{nouns[role]}"
            seen.add(nouns[role])
    nouns["restags"] = f"{nouns['resource']}_{nouns['tags']}"
    today = dt.date(2024, 1, 1) + dt.timedelta(days=rng.randrange(0, 700))
    m = Model(arch, naming, today, nouns, statuses=rec.statuses, small=n_tables <= 9, lean=lean)
    pool = [r for r in OPTIONAL if r != "lookup1" or len(arch.lookups) > 1]
    rng.shuffle(pool)
    chosen: set[str] = set()
    room = n_tables - 4  # users, lookup0, resource and record are always there
    for role in pool:
        size = 2 if role == "tags" else 1  # tags come with a join table
        if size <= room:
            chosen.add(role)
            room -= size
    for role in ["lookup0", "lookup1", "user", "staff", "resource", "tags", "restags", "promotions", "payments", "record",
                 "notes", "reviews", "favorites", "audit", "notifications", "addresses", "messages", "history", "preferences",
                 "waitlist", "points", "hours"]:
        if role in ("lookup0", "user", "resource", "record") or role in chosen or (role == "restags" and "tags" in chosen):
            _BUILDERS[role](m, rng, role)
    return m


def _new(m: Model, role: str, noun: str) -> Table:
    n = m.naming
    t = Table(role, noun, n.table(noun))
    t.add("pk", n.pk(noun), "INTEGER PRIMARY KEY")
    m.tables[role] = t
    return t


def _ref(m: Model, t: Table, meaning: str, target: str, *, null: bool = False) -> None:
    ref = m.tables[target]
    t.add(meaning, m.naming.fk(ref.noun), f"INTEGER{'' if null else ' NOT NULL'} REFERENCES {ref.name}({ref.c['pk']})")


def _pick(rng: random.Random, t: Table) -> int:
    return rng.randrange(1, len(t.rows) + 1)


def _lookup(m: Model, rng: random.Random, role: str) -> None:
    lk = m.arch.lookups[int(role[-1])]
    t = _new(m, role, m.nouns[role])
    t.add("name", m.naming.name_col, "TEXT NOT NULL UNIQUE")
    for v in rng.sample(lk.values, min(len(lk.values), rng.randrange(4, 8))):
        t.insert(name=v)


def _people(m: Model, rng: random.Random, role: str) -> None:
    n = m.naming
    t = _new(m, role, m.nouns[role])
    t.add("name", n.person_col, "TEXT NOT NULL")
    t.add("email", rng.choice(("email", "email_address")), "TEXT NOT NULL UNIQUE")
    if role == "user":
        t.add("phone", rng.choice(("phone", "phone_number", "mobile")), "TEXT")
        t.add("city", rng.choice(("city", "home_city")), "TEXT")
    else:
        t.add("role", rng.choice(("role", "job_title", "position")), "TEXT NOT NULL")
    t.add("created", n.ts, "TEXT NOT NULL")
    taken: set[str] = set()
    for _ in range(_rows(rng, m, (6, 10), (14 if m.small else 8, 21)) if role == "user" else rng.randrange(3, 9)):
        name = wd.person(rng, taken)
        extra = {"phone": wd.phone(rng), "city": rng.choice(wd.CITIES)} if role == "user" else {"role": rng.choice(wd.ROLES)}
        t.insert(name=name, email=wd.email(name, rng), created=wd.stamp(m.today, rng, -900, -30), **extra)


def _resource(m: Model, rng: random.Random, role: str) -> None:
    res, n = m.arch.resources[0], m.naming
    t = _new(m, role, m.nouns[role])
    t.add("name", n.name_col, "TEXT NOT NULL UNIQUE")
    lookups = [r for r in ("lookup0", "lookup1") if r in m.tables]
    for r in lookups:
        _ref(m, t, r, r)
    money = n.col(rng.choice(res.money))
    t.add("money", money, f"REAL NOT NULL CHECK ({money} >= 0)")
    if res.count:
        t.add("count", n.col(rng.choice(res.count)), "INTEGER NOT NULL DEFAULT 0")
    if res.enum:
        t.add("enum", n.col(res.enum[0]), "TEXT")
    t.add("active", rng.choice(("is_active", "active", "available")), "INTEGER NOT NULL DEFAULT 1")
    names: set[str] = set()
    target = _rows(rng, m, (6, 11), (12 if m.small else 8, 26))
    for _ in range(target * 4):
        if len(names) >= target:
            break
        names.add(f"{rng.choice(res.mods)} {rng.choice(res.heads)}")
    lo, hi = res.count_range
    order = sorted(names)  # sets of str iterate in a per-process order: sort before shuffling
    rng.shuffle(order)
    for name in order:
        row = {"name": name, "money": wd.money(rng, *res.money_range), "active": 1 if rng.random() < 0.85 else 0}
        for r in lookups:
            row[r] = _pick(rng, m.tables[r])
        if res.count:
            row["count"] = rng.randrange(max(lo, 3), hi + 1) if rng.random() < 0.85 else lo
        if res.enum:
            row["enum"] = rng.choice(res.enum[1])
        t.insert(**row)


def _record(m: Model, rng: random.Random, role: str) -> None:
    rec, n = m.arch.records[0], m.naming
    t = _new(m, role, m.nouns[role])
    _ref(m, t, "user", "user")
    _ref(m, t, "resource", "resource")
    if "staff" in m.tables:
        _ref(m, t, "staff", "staff", null=True)
    if "payments" in m.tables:
        _ref(m, t, "payment", "payments", null=True)
    st = ", ".join(f"'{s}'" for s in rec.statuses)
    t.add("status", n.status_col, f"TEXT NOT NULL CHECK ({n.status_col} IN ({st}))")
    t.add("date", n.col(rng.choice(rec.date_cols)), "TEXT NOT NULL")
    if rec.qty:
        qty = n.col(rng.choice(rec.qty))
        t.add("qty", qty, f"INTEGER NOT NULL CHECK ({qty} > 0)")
    t.add("amount", rng.choice(("total", "amount", "total_cost", "charge")), "REAL NOT NULL DEFAULT 0")
    t.add("created", n.ts, "TEXT NOT NULL")
    resources, users = m.tables["resource"], m.tables["user"]
    for i in range(_rows(rng, m, (8, 13), (20 if m.small else 10, 36))):
        uid = 1 if i < 6 or rng.random() < 0.3 else _pick(rng, users)
        rid = _pick(rng, resources)
        qty = rng.randrange(1, min(rec.qty_max, 4) + 1) if rec.qty else 1
        status = rec.statuses[0] if i < 3 else rng.choice(rec.statuses)
        future = rec.future and status in rec.statuses[:2]
        row = {"user": uid, "resource": rid, "status": status,
               "date": wd.day(m.today, rng, 3, 90) if future else wd.day(m.today, rng, -300, -1),
               "amount": round(resources.rows[rid - 1]["money"] * qty, 2), "created": wd.stamp(m.today, rng, -300, -1)}
        if rec.qty:
            row["qty"] = qty
        if "staff" in m.tables:
            row["staff"] = _pick(rng, m.tables["staff"]) if rng.random() < 0.6 else None
        if "payments" in m.tables:
            row["payment"] = None
        t.insert(**row)


def _child(m: Model, rng: random.Random, role: str) -> None:
    n = m.naming
    t = _new(m, role, m.nouns[role])
    users, today = m.tables["user"], m.today
    if role == "notes":
        _ref(m, t, "record", "record")
        t.add("body", rng.choice(("body", "content", "note_text", "message")), "TEXT NOT NULL")
        t.add("created", n.ts, "TEXT NOT NULL")
        for _ in range(rng.randrange(3, 15)):
            t.insert(record=_pick(rng, m.tables["record"]), body=rng.choice(wd.NOTE_TEXTS), created=wd.stamp(today, rng, -200, -1))
    elif role in ("reviews", "favorites"):
        _ref(m, t, "resource", "resource")
        _ref(m, t, "user", "user")
        if role == "reviews":
            stars = rng.choice(("stars", "score", "rating_value"))
            t.add("rating", stars, f"INTEGER NOT NULL CHECK ({stars} BETWEEN 1 AND 5)")
            t.add("comment", rng.choice(("comment", "review_text", "remarks")), "TEXT")
        t.add("created", n.ts, "TEXT NOT NULL")
        t.extra.append(f"UNIQUE ({t.c['resource']}, {t.c['user']})")
        pairs = {(_pick(rng, m.tables["resource"]), _pick(rng, users)) for _ in range(rng.randrange(4, 16))}
        order = sorted(pairs)
        rng.shuffle(order)
        for rid, uid in order:
            extra = {"rating": rng.randrange(1, 6), "comment": rng.choice(wd.REVIEW_TEXTS)} if role == "reviews" else {}
            t.insert(resource=rid, user=uid, created=wd.stamp(today, rng, -300, -1), **extra)
    elif role == "tags":
        t.add("name", m.naming.name_col, "TEXT NOT NULL UNIQUE")
        for w in rng.sample(wd.TAG_WORDS, rng.randrange(4, 9)):
            t.insert(name=w)
    elif role == "restags":
        _ref(m, t, "resource", "resource")
        _ref(m, t, "tag", "tags")
        t.extra.append(f"UNIQUE ({t.c['resource']}, {t.c['tag']})")
        pairs = {(_pick(rng, m.tables["resource"]), _pick(rng, m.tables["tags"])) for _ in range(rng.randrange(5, 25))}
        for rid, tid in sorted(pairs):
            t.insert(resource=rid, tag=tid)


def _misc(m: Model, rng: random.Random, role: str) -> None:
    n, today = m.naming, m.today
    t = _new(m, role, m.nouns[role])
    users = m.tables["user"]
    if role == "audit":
        _ref(m, t, "user", "user")
        t.add("action", rng.choice(("action_name", "event_type", "operation")), "TEXT NOT NULL")
        t.add("detail", rng.choice(("detail", "details", "summary")), "TEXT")
        t.add("created", rng.choice(("logged_at", "occurred_at", "at_time")), "TEXT NOT NULL")
        for _ in range(rng.randrange(4, 15)):
            t.insert(user=_pick(rng, users), action=rng.choice(("login", "logout", "view", "export")), detail=None,
                     created=wd.stamp(today, rng, -60, -1))
    elif role == "notifications":
        _ref(m, t, "user", "user")
        t.add("message", rng.choice(("message", "title", "subject")), "TEXT NOT NULL")
        t.add("read", rng.choice(("is_read", "seen", "read_flag")), "INTEGER NOT NULL DEFAULT 0")
        t.add("created", n.ts, "TEXT NOT NULL")
        for i, text in enumerate(rng.sample(wd.NOTIFY_TEXTS, rng.randrange(4, 9))):
            t.insert(user=1 if i < 4 else _pick(rng, users), message=text.format(noun=m.nouns["record"].replace("_", " ")),
                     read=0 if i < 2 else rng.randrange(2), created=wd.stamp(today, rng, -40, -1))
    elif role == "addresses":
        _ref(m, t, "user", "user")
        t.add("label", rng.choice(("label", "nickname", "address_name")), "TEXT NOT NULL")
        t.add("street", rng.choice(("street", "line1", "street_address")), "TEXT NOT NULL")
        t.add("city", rng.choice(("city", "town")), "TEXT NOT NULL")
        for i, label in enumerate(rng.sample(wd.ADDRESS_LABELS, rng.randrange(3, 7))):
            t.insert(user=1 if i < 3 else _pick(rng, users), label=label, street=wd.street(rng), city=rng.choice(wd.CITIES))
    elif role == "payments":
        _ref(m, t, "user", "user")
        t.add("brand", rng.choice(("brand", "card_brand", "network")), "TEXT NOT NULL")
        t.add("last4", rng.choice(("last4", "last_four", "card_suffix")), "TEXT NOT NULL")
        t.add("default", rng.choice(("is_default", "preferred", "primary_flag")), "INTEGER NOT NULL DEFAULT 0")
        for i in range(rng.randrange(3, 8)):
            t.insert(user=1 if i < 2 else _pick(rng, users), brand=rng.choice(("Visa", "Mastercard", "Amex", "Discover")),
                     last4=f"{rng.randrange(10000):04d}", default=1 if i == 0 else 0)
    elif role == "messages":
        _ref(m, t, "user", "user")
        t.add("subject", rng.choice(("subject", "topic", "headline")), "TEXT NOT NULL")
        t.add("body", rng.choice(("body", "content", "text_body")), "TEXT NOT NULL")
        t.add("created", rng.choice(("sent_at", "sent_on", n.ts)), "TEXT NOT NULL")
        for _ in range(rng.randrange(2, 8)):
            t.insert(user=_pick(rng, users), subject=rng.choice(("Question", "Follow-up", "Feedback", "Billing")),
                     body=rng.choice(wd.NOTE_TEXTS), created=wd.stamp(today, rng, -90, -1))
    elif role == "history":
        _ref(m, t, "record", "record")
        t.add("old", rng.choice(("old_status", "from_status", "previous")), "TEXT")
        t.add("new", rng.choice(("new_status", "to_status", "next_status")), "TEXT NOT NULL")
        t.add("created", rng.choice(("changed_at", "changed_on", n.ts)), "TEXT NOT NULL")
        for rec in m.tables["record"].rows:
            if rec["status"] != m.statuses[0] and rng.random() < 0.5:
                t.insert(record=rec["pk"], old=m.statuses[0], new=rec["status"], created=rec["created"])
    elif role == "preferences":
        _ref(m, t, "user", "user")
        t.add("key", rng.choice(("pref_key", "setting_name", "option_key")), "TEXT NOT NULL")
        t.add("value", rng.choice(("pref_value", "setting_value", "option_value")), "TEXT NOT NULL")
        t.extra.append(f"UNIQUE ({t.c['user']}, {t.c['key']})")
        for key, vals in rng.sample(PREFS, rng.randrange(2, len(PREFS) + 1)):
            t.insert(user=1, key=key, value=rng.choice(vals))
    elif role == "promotions":
        t.add("code", rng.choice(("code", "promo_code", "voucher")), "TEXT NOT NULL UNIQUE")
        t.add("percent", rng.choice(("percent_off", "discount_pct", "discount_percent")), "INTEGER NOT NULL")
        t.add("active", rng.choice(("is_active", "active", "enabled")), "INTEGER NOT NULL DEFAULT 1")
        for code in rng.sample(PROMO_CODES, rng.randrange(3, 7)):
            t.insert(code=code, percent=rng.choice((5, 10, 15, 20, 25)), active=rng.randrange(2))

    elif role == "waitlist":
        _ref(m, t, "resource", "resource")
        _ref(m, t, "user", "user")
        t.add("created", n.ts, "TEXT NOT NULL")
        t.extra.append(f"UNIQUE ({t.c['resource']}, {t.c['user']})")
        pairs = {(_pick(rng, m.tables["resource"]), _pick(rng, users)) for _ in range(rng.randrange(2, 9))}
        for rid, uid in sorted(pairs):
            t.insert(resource=rid, user=uid, created=wd.stamp(today, rng, -30, -1))
    elif role == "points":
        _ref(m, t, "user", "user")
        t.add("points", rng.choice(("points", "point_delta", "amount_points")), "INTEGER NOT NULL")
        t.add("reason", rng.choice(("reason", "memo", "source")), "TEXT NOT NULL")
        t.add("created", n.ts, "TEXT NOT NULL")
        for i in range(rng.randrange(4, 12)):
            t.insert(user=1 if i < 4 else _pick(rng, users), points=rng.choice((50, 100, 150, 200, 250, 25)),
                     reason=rng.choice(("signup bonus", "purchase", "referral", "birthday", "review bonus")), created=wd.stamp(today, rng, -200, -1))
    elif role == "hours":
        t.add("day", rng.choice(("weekday", "day_of_week", "day_name")), "TEXT NOT NULL UNIQUE")
        t.add("opens", rng.choice(("opens_at", "open_time", "opening")), "TEXT NOT NULL")
        t.add("closes", rng.choice(("closes_at", "close_time", "closing")), "TEXT NOT NULL")
        for d in WEEKDAYS:
            late = d in ("Saturday", "Sunday")
            t.insert(day=d, opens=f"{rng.choice((7, 8, 9)) + (2 if late else 0):02d}:00", closes=f"{rng.choice((17, 18, 19, 20, 21)) - (2 if late else 0)}:{rng.choice(('00', '30'))}")


WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
PREFS = (("language", ("en", "fr", "es", "de")), ("newsletter", ("yes", "no")), ("theme", ("light", "dark")),
         ("contact_method", ("email", "sms", "phone")), ("timezone", ("UTC", "CET", "PST", "JST")))
PROMO_CODES = ("WELCOME10", "SPRING15", "LOYAL20", "FLASH5", "VIP25", "SUMMER10", "FALL15", "BUNDLE20")

_BUILDERS = {"lookup0": _lookup, "lookup1": _lookup, "user": _people, "staff": _people, "resource": _resource,
             "record": _record, "notes": _child, "reviews": _child, "favorites": _child, "tags": _child, "restags": _child}
_BUILDERS.update({r: _misc for r in ("audit", "notifications", "addresses", "payments", "messages", "history",
                                      "preferences", "promotions", "waitlist", "points", "hours")})
