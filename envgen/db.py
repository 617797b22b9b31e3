"""Sandboxed in-memory SQLite connections (APSW): the one place that opens a world database.

Tool SQL is untrusted (a model may have written it). Every connection made here has:
- an authorizer that lets statements read and write rows of the world's own tables
  and nothing else (no ATTACH, PRAGMA, schema changes, transaction control,
  `load_extension`, nor reads of `sqlite_master`);
- SQLite's defensive mode and tight limits (value length, SQL length, no attached
  databases, expression depth, ...);
- a progress handler that interrupts any statement past its deadline.

The engine's own statements (loading the schema, integrity checks, savepoints) run
inside `db.trusted()`, which lifts the authorizer and never caches the statement, so a
statement prepared while trusted can never be replayed later without authorization.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Iterator

import apsw

# Functions a tool may not call even though the authorizer sees them as plain functions.
_DENIED_FUNCTIONS = frozenset({"load_extension", "sqlite_compileoption_get", "sqlite_offset"})

_SYSTEM_PREFIXES = ("sqlite_", "pragma_")
_INTROSPECTION_PRAGMAS = frozenset({"table_info", "table_xinfo"})
_ROW_OPS = {apsw.SQLITE_INSERT, apsw.SQLITE_UPDATE, apsw.SQLITE_DELETE, apsw.SQLITE_READ}
_ALWAYS_OK = {apsw.SQLITE_SELECT, apsw.SQLITE_RECURSIVE}


@dataclass(frozen=True)
class Limits:
    """SQLite limits and the per-call deadline applied to every sandboxed connection."""

    max_length: int = 1_000_000  # bytes in one string or blob value
    max_sql_length: int = 100_000
    max_expr_depth: int = 100
    max_compound_select: int = 50
    max_like_pattern: int = 500
    max_variables: int = 256
    max_trigger_depth: int = 8
    call_seconds: float = 1.0  # wall-clock deadline of one tool call or check
    progress_steps: int = 2000  # VM instructions between deadline checks

    def __post_init__(self):
        for name in ("max_length", "max_sql_length", "max_expr_depth", "progress_steps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"Limits.{name} must be positive, got {getattr(self, name)}")
        if self.call_seconds <= 0:
            raise ValueError(f"Limits.call_seconds must be positive, got {self.call_seconds}")


class SandboxedDB:
    """One in-memory APSW connection under the sandbox, holding one world's tables."""

    def __init__(self, limits: Limits = Limits(), statement_cache: int = 100):
        self.limits = limits
        self.conn = apsw.Connection(":memory:", statementcachesize=statement_cache)
        self.tables: frozenset[str] = frozenset()
        self._trusted = 0
        self.deadline = float("inf")
        self.denied: list[str] = []  # what the authorizer refused in the current call
        c = self.conn
        c.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 1)
        c.config(apsw.SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0)
        c.config(apsw.SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0)
        c.limit(apsw.SQLITE_LIMIT_LENGTH, limits.max_length)
        c.limit(apsw.SQLITE_LIMIT_SQL_LENGTH, limits.max_sql_length)
        c.limit(apsw.SQLITE_LIMIT_ATTACHED, 0)
        c.limit(apsw.SQLITE_LIMIT_EXPR_DEPTH, limits.max_expr_depth)
        c.limit(apsw.SQLITE_LIMIT_COMPOUND_SELECT, limits.max_compound_select)
        c.limit(apsw.SQLITE_LIMIT_LIKE_PATTERN_LENGTH, limits.max_like_pattern)
        c.limit(apsw.SQLITE_LIMIT_VARIABLE_NUMBER, limits.max_variables)
        c.limit(apsw.SQLITE_LIMIT_TRIGGER_DEPTH, limits.max_trigger_depth)
        c.set_authorizer(self._authorize)
        c.set_progress_handler(self._progress, limits.progress_steps)
        with self.trusted():
            self.conn.execute("PRAGMA foreign_keys = ON", can_cache=False)

    # ------------------------------------------------------------------ sandbox hooks

    def _authorize(self, op: int, p1: str | None, p2: str | None, dbname: str | None, trigger: str | None) -> int:
        if self._trusted:
            return apsw.SQLITE_OK
        if op in _ALWAYS_OK:
            return apsw.SQLITE_OK
        if op in _ROW_OPS:
            if p1 in self.tables and dbname in (None, "main"):
                return apsw.SQLITE_OK
            # A read with no database name is a read of a common table expression (its rows
            # come from statements authorized on their own), or a read of a table that
            # names no column (count(*)): the schema tables and the eponymous virtual
            # tables (sqlite_dbpage, pragma_*) stay denied.
            if op == apsw.SQLITE_READ and dbname is None and not (p1 or "sqlite_").lower().startswith(_SYSTEM_PREFIXES):
                return apsw.SQLITE_OK
        elif op == apsw.SQLITE_FUNCTION:
            if (p2 or "").lower() not in _DENIED_FUNCTIONS:
                return apsw.SQLITE_OK
        elif op == apsw.SQLITE_PRAGMA:
            # The change-recording session reads a table's column list the first time a
            # tool writes to it, from inside the tool's statement; that read-only look at
            # the world's own tables is the one pragma allowed.
            if (p1 or "").lower() in _INTROSPECTION_PRAGMAS and p2 in self.tables:
                return apsw.SQLITE_OK
        self.denied.append(f"{apsw.mapping_authorizer_function.get(op, op)} {p1 or ''}".strip())
        return apsw.SQLITE_DENY

    def _progress(self) -> bool:
        return time.monotonic() > self.deadline  # True interrupts the statement

    @contextlib.contextmanager
    def trusted(self) -> Iterator[None]:
        """Run the engine's own statements with the authorizer lifted and no deadline."""
        self._trusted += 1
        saved, self.deadline = self.deadline, float("inf")
        try:
            yield
        finally:
            self._trusted -= 1
            self.deadline = saved

    def run_trusted(self, sql: str) -> None:
        """Run one engine statement (savepoints, rollbacks) as `trusted()` does, never cached.

        The same as `with self.trusted(): self.conn.execute(sql, can_cache=False)`, without
        the generator context manager: the pool runs a few of these per episode.
        """
        self._trusted += 1
        saved, self.deadline = self.deadline, float("inf")
        try:
            self.conn.execute(sql, can_cache=False)
        finally:
            self._trusted -= 1
            self.deadline = saved

    @contextlib.contextmanager
    def deadline_of(self, seconds: float | None = None) -> Iterator[None]:
        """Interrupt any statement that runs past `seconds` (default: the call deadline)."""
        self.deadline = time.monotonic() + (self.limits.call_seconds if seconds is None else seconds)
        self.denied.clear()
        try:
            yield
        finally:
            self.deadline = float("inf")

    # ------------------------------------------------------------------ state

    def load_schema_and_seed(self, schema: tuple[str, ...] | list[str], seed: dict[str, dict[str, Any]]) -> None:
        """Create the tables and insert the seed rows (foreign keys enforced)."""
        with self.trusted():
            for ddl in schema:
                self.conn.execute(ddl, can_cache=False)
            self.refresh_tables()
            # Foreign keys are checked at commit, so the seed's table order does not matter
            # (canonical JSON sorts the tables by name).
            self.conn.execute("BEGIN; PRAGMA defer_foreign_keys = ON", can_cache=False)
            try:
                for table, spec in seed.items():
                    cols = spec["columns"]
                    sql = f"INSERT INTO {quote_ident(table)} ({', '.join(map(quote_ident, cols))}) VALUES ({', '.join('?' * len(cols))})"
                    self.conn.executemany(sql, spec["rows"], can_cache=False)
                self.conn.execute("COMMIT", can_cache=False)
            except BaseException:
                if not self.conn.getautocommit():
                    self.conn.execute("ROLLBACK", can_cache=False)
                raise

    def refresh_tables(self) -> None:
        """Re-read which tables exist; tools may touch only these."""
        with self.trusted():
            rows = self.conn.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'", can_cache=False
            ).fetchall()
        self.tables = frozenset(r[0] for r in rows)

    def image(self) -> bytes:
        """The database serialized to bytes (the template image)."""
        with self.trusted():  # serialize reads the sqlite_dbpage table, which tools may not
            image = self.conn.serialize("main")
        if image is None:
            raise RuntimeError("SQLite could not serialize the database")
        return image

    def restore(self, image: bytes, tables: frozenset[str] | None = None) -> None:
        """Replace the whole database with `image` (reset)."""
        with self.trusted():
            self.conn.deserialize("main", image)
        if tables is None:
            self.refresh_tables()
        else:
            self.tables = tables

    def integrity_problems(self) -> list[str]:
        """Problems reported by PRAGMA integrity_check and foreign_key_check (empty when clean)."""
        with self.trusted():
            problems = [r[0] for r in self.conn.execute("PRAGMA integrity_check", can_cache=False) if r[0] != "ok"]
            for table, rowid, parent, _ in self.conn.execute("PRAGMA foreign_key_check", can_cache=False):
                problems.append(f"foreign key violation: {table} row {rowid} references missing {parent} row")
        return problems

    def columns(self, table: str) -> list[str]:
        """Column names of `table`, in order."""
        with self.trusted():
            return [r[1] for r in self.conn.execute(f"PRAGMA table_info({quote_ident(table)})", can_cache=False)]

    def primary_key(self, table: str) -> list[str]:
        """Primary-key column names of `table` (rowid tables without one give ['rowid'])."""
        with self.trusted():
            info = list(self.conn.execute(f"PRAGMA table_info({quote_ident(table)})", can_cache=False))
        pk = [r[1] for r in sorted(info, key=lambda r: r[5]) if r[5] > 0]
        return pk or ["rowid"]

    def dump(self) -> dict[str, list[tuple]]:
        """Every table's rows ordered by primary key: the logical state, for comparisons."""
        out = {}
        for table in sorted(self.tables):
            order = ", ".join(quote_ident(c) for c in self.primary_key(table))
            with self.trusted():
                out[table] = self.conn.execute(
                    f"SELECT * FROM {quote_ident(table)} ORDER BY {order}", can_cache=False
                ).fetchall()
        return out

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


def quote_ident(name: str) -> str:
    """Quote an SQL identifier (table or column name) safely."""
    return '"' + name.replace('"', '""') + '"'


class ChangeRecorder:
    """Records an episode's row-level changes with an APSW session (the changeset)."""

    def __init__(self, db: SandboxedDB):
        self.db = db
        self.session = apsw.Session(db.conn, "main")
        self.session.attach()

    def changeset(self) -> bytes:
        """The raw SQLite changeset of everything changed since the recorder started."""
        with self.db.trusted():  # the session reads the tables through its own statements
            return self.session.changeset()

    def changes(self, columns_of) -> list[dict[str, Any]]:
        """Changed rows as JSON-ready dicts: table, op, pk, old and new values by column."""
        return decode_changeset(self.changeset(), columns_of)

    def close(self) -> None:
        """Stop recording."""
        self.session.close()


def decode_changeset(changeset: bytes, columns_of) -> list[dict[str, Any]]:
    """Decode a changeset into dicts; `columns_of(table)` gives column names.

    For updates, `old` and `new` hold only the changed columns (plus the primary key in `pk`).
    Rows are sorted by (table, primary key) so that equal changes give equal output.
    """
    out = []
    for ch in apsw.Changeset.iter(changeset):
        cols = columns_of(ch.name)
        pk_idx = sorted(ch.pk_columns)
        row = ch.new if ch.op == "INSERT" else ch.old
        pk = {cols[i]: row[i] for i in pk_idx}
        entry: dict[str, Any] = {"table": ch.name, "op": ch.op.lower(), "pk": pk}
        if ch.op == "INSERT":
            entry["new"] = {c: _jsonable(v) for c, v in zip(cols, ch.new)}
        elif ch.op == "DELETE":
            entry["old"] = {c: _jsonable(v) for c, v in zip(cols, ch.old)}
        else:
            changed = [i for i, v in enumerate(ch.new) if v is not apsw.no_change]
            entry["old"] = {cols[i]: _jsonable(ch.old[i]) for i in changed}
            entry["new"] = {cols[i]: _jsonable(ch.new[i]) for i in changed}
        out.append(entry)
    out.sort(key=lambda e: (e["table"], repr(sorted(e["pk"].items()))))
    return out


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return {"blob_hex": v.hex()}
    return v
