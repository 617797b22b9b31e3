"""Static checks of a world's SQL through sqlglot's AST: parse, names, parameters, statement kinds.

Parse, do not pattern-match: every statement is parsed with sqlglot's SQLite dialect,
and every table and column it names is resolved against the schema parsed from the
world's own DDL. Results are problems as plain strings (empty list = clean).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import sqlglot
from sqlglot import exp

# Statement kinds a step may be: guards and reads query, writes modify rows.
_QUERY = (exp.Select, exp.Union, exp.Intersect, exp.Except)
_WRITE = (exp.Insert, exp.Update, exp.Delete)
_ROWID = frozenset({"rowid", "oid", "_rowid_"})
_TABLE_FUNCTIONS = frozenset({"json_each", "json_tree", "generate_series"})


@dataclass(frozen=True)
class Schema:
    """Tables and their columns, as parsed from the DDL."""

    tables: dict[str, frozenset[str]]


def parse_schema(ddl: list[str] | tuple[str, ...]) -> tuple[Schema, list[str]]:
    """Parse CREATE TABLE / CREATE INDEX statements; returns the schema and problems found."""
    tables: dict[str, frozenset[str]] = {}
    problems = []
    for i, sql in enumerate(ddl):
        try:
            stmts = [s for s in sqlglot.parse(sql, read="sqlite") if s is not None]
        except sqlglot.errors.ParseError as e:
            problems.append(f"schema[{i}]: does not parse: {_first_line(e)}")
            continue
        for stmt in stmts:
            if not isinstance(stmt, exp.Create):
                problems.append(f"schema[{i}]: only CREATE statements belong in the schema, got {stmt.key.upper()}")
                continue
            kind = (stmt.args.get("kind") or "").upper()
            if kind == "TABLE":
                target = stmt.this
                if not isinstance(target, exp.Schema):
                    problems.append(f"schema[{i}]: CREATE TABLE ... AS SELECT is not supported; list the columns")
                    continue
                name = target.this.name
                cols = frozenset(c.name for c in target.expressions if isinstance(c, exp.ColumnDef))
                if name in tables:
                    problems.append(f"schema[{i}]: table {name} is defined twice")
                tables[name] = cols
            elif kind not in ("INDEX", "UNIQUE INDEX", "TRIGGER", "VIEW"):
                problems.append(f"schema[{i}]: CREATE {kind} is not allowed in a world schema")
    return Schema(tables), problems


@functools.lru_cache(maxsize=1 << 16)
def parse_statements(sql: str) -> tuple[exp.Expression, ...] | str:
    """The statements of `sql` parsed by sqlglot (SQLite dialect), or the parse error text.

    Cached: procedural worlds repeat statements, and the gate reads each one twice.
    Callers must not mutate the trees.
    """
    try:
        return tuple(s for s in sqlglot.parse(sql, read="sqlite") if s is not None)
    except sqlglot.errors.ParseError as e:
        return _first_line(e)


def parameter_names(sql: str) -> set[str]:
    """Named parameters (:name) of a statement; empty if it does not parse."""
    stmts = parse_statements(sql)
    if isinstance(stmts, str):
        return set()
    return {p.name for s in stmts for p in s.find_all(exp.Placeholder) if p.name and p.name != "?" and not p.name.isdigit()}


def check_statement(sql: str, schema: Schema, *, want: str, bindable: set[str]) -> tuple[list[str], set[str]]:
    """Check one statement of kind `want` ("query" or "write"); returns (problems, parameter names used)."""
    stmts = parse_statements(sql)
    if isinstance(stmts, str):
        return [f"does not parse: {stmts}"], set()
    if len(stmts) != 1:
        return [f"must be exactly one statement, found {len(stmts)}"], set()
    stmt = stmts[0]
    body = stmt.this if isinstance(stmt, exp.With) else stmt
    if want == "query" and not isinstance(body, _QUERY):
        return [f"must be a SELECT, got {stmt.key.upper()}"], set()
    if want == "write" and not isinstance(body, _WRITE):
        return [f"must be an INSERT, UPDATE or DELETE, got {stmt.key.upper()}"], set()
    placeholders = [p.name for p in stmt.find_all(exp.Placeholder)]
    params = {n for n in placeholders if n and n != "?" and not n.isdigit()}
    problems = [f"parameter :{p} is not a declared parameter or a value saved by an earlier step" for p in sorted(params - bindable)]
    if len(params) < len(set(placeholders)):
        problems.append("uses positional parameters ('?' or '?1'); name every parameter (:name)")
    problems += _check_names(stmt, schema)
    return problems, params


def _check_names(stmt: exp.Expression, schema: Schema) -> list[str]:
    problems = []
    ctes = {c.alias_or_name for c in stmt.find_all(exp.CTE)}
    derived = {s.alias_or_name for s in stmt.find_all(exp.Subquery) if s.alias_or_name}
    aliases: dict[str, str] = {}
    open_sources = bool(ctes or derived)  # a CTE or derived table can supply any column name
    for t in stmt.find_all(exp.Table):
        name = t.name
        if name in ctes or name.lower() in _TABLE_FUNCTIONS or not name:
            if name.lower() in _TABLE_FUNCTIONS:
                open_sources = True
            continue
        if name not in schema.tables:
            problems.append(f"names unknown table {name}")
            continue
        aliases[t.alias_or_name] = name
        aliases.setdefault(name, name)
    if isinstance(stmt, exp.Insert) and isinstance(stmt.this, exp.Schema):
        table = stmt.this.this.name
        for ident in stmt.this.expressions:
            if table in schema.tables and ident.name not in schema.tables[table]:
                problems.append(f"inserts into unknown column {table}.{ident.name}")
    select_aliases = {a.alias for a in stmt.find_all(exp.Alias)}
    in_scope = set(aliases.values())
    for col in stmt.find_all(exp.Column):
        name, qual = col.name, col.table
        if not name or name.lower() in _ROWID or name == "*":
            continue
        if qual:
            if qual in ctes or qual in derived or qual == "excluded":
                continue
            table = aliases.get(qual)
            if table is None:
                problems.append(f"column {qual}.{name} refers to unknown table or alias {qual}")
            elif name not in schema.tables[table]:
                problems.append(f"names unknown column {table}.{name}")
        elif name not in select_aliases and not open_sources:
            if not any(name in schema.tables[t] for t in in_scope):
                where = ", ".join(sorted(in_scope)) or "no table"
                problems.append(f"names unknown column {name} (not in {where})")
    return problems


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0][:200]
