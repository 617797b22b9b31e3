"""The validation gate: a world enters a catalog only if every rule holds.

Rules, each named in the failures it reports:
- "sql": sqlglot parses the DDL and every statement of tools and checks; every table and
  column they name exists; every :parameter is declared or saved by an earlier step;
  statements are of the kind their step says; SQLite prepares each one under the
  sandbox's authorizer (a cheap second opinion that also refuses forbidden statements).
- "seed": the seed loads with foreign keys on; integrity_check and foreign_key_check are clean.
- "tools": every tool runs on the seed with valid arguments without an environment
  error, and answers missing, mistyped and out-of-range arguments with a clear
  invalid-arguments result, never an exception.
- "tasks": every gold sequence replays with each call succeeding and passes its check;
  the untouched seed does not pass it; a gold sequence that changes nothing cannot
  satisfy a task whose check needs a change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import apsw

from envgen import sqlcheck
from envgen.db import SandboxedDB
from envgen.runtime import CompiledWorld, Episode, Slot
from envgen.world import Tool, World

RULES = ("format", "sql", "seed", "tools", "tasks")


@dataclass(frozen=True)
class Failure:
    """One broken rule: which rule, where in the world, and what is wrong."""

    rule: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.where}: {self.message}"


def validate_world(world: World, slot: Slot | None = None) -> list[Failure]:
    """Every failure of every rule (empty list: the world passes the gate)."""
    own_slot = slot is None
    slot = slot or Slot()
    try:
        failures = check_sql(world)
        seed_failures, compiled = check_seed(world, slot)
        failures += seed_failures
        if compiled is not None:
            failures += check_tools(world, compiled, slot)
            failures += check_tasks(world, compiled, slot)
        return failures
    finally:
        if own_slot:
            slot.close()


def check_sql(world: World) -> list[Failure]:
    """Rule "sql": static checks of every statement through sqlglot."""
    schema, problems = sqlcheck.parse_schema(world.schema)
    failures = [Failure("sql", "schema", p) for p in problems]
    for table in world.seed:
        if table not in schema.tables:
            failures.append(Failure("sql", f"seed.{table}", f"seeds unknown table {table}"))
        else:
            for col in world.seed[table]["columns"]:
                if col not in schema.tables[table]:
                    failures.append(Failure("sql", f"seed.{table}", f"seeds unknown column {table}.{col}"))
    for tool in world.tools:
        if tool.impl.kind != "sql":
            continue
        bindable = set(tool.parameters.get("properties", {}))
        for j, step in enumerate(tool.impl.steps):
            want = "write" if step.op == "write" else "query"
            problems, _ = sqlcheck.check_statement(step.sql, schema, want=want, bindable=bindable)
            failures += [Failure("sql", f"tool {tool.name} step {j}", p) for p in problems]
            if step.save:
                bindable.add(step.save)
    for task in world.tasks:
        for j, a in enumerate(task.check.assertions):
            problems, _ = sqlcheck.check_statement(a.sql, schema, want="query", bindable=set())
            failures += [Failure("sql", f"task {task.id} assertion {j}", p) for p in problems]
        for table in (task.check.changes or {}).get("tables", {}):
            if table not in schema.tables:
                failures.append(Failure("sql", f"task {task.id} changes", f"names unknown table {table}"))
    return failures


def check_seed(world: World, slot: Slot) -> tuple[list[Failure], CompiledWorld | None]:
    """Rule "seed": load schema and seed with foreign keys on; integrity checks clean."""
    try:
        compiled = CompiledWorld.compile(world)
    except apsw.Error as e:
        return [Failure("seed", "seed", f"does not load: {e}")], None
    slot.reset(compiled)
    problems = slot.db.integrity_problems()
    if problems:
        return [Failure("seed", "seed", p) for p in problems], None
    return _prepare_all(world, slot.db), compiled


def _prepare_all(world: World, db: SandboxedDB) -> list[Failure]:
    """SQLite's own opinion: prepare (EXPLAIN) every tool statement under the authorizer."""
    failures = []
    for tool in world.tools:
        if tool.impl.kind != "sql":
            continue
        for j, step in enumerate(tool.impl.steps):
            names = sqlcheck.parameter_names(step.sql)
            try:
                with db.deadline_of():
                    db.conn.execute("EXPLAIN " + step.sql, {n: None for n in names}).fetchall()
            except apsw.AuthError:
                failures.append(Failure("sql", f"tool {tool.name} step {j}", f"refused by the sandbox: {'; '.join(db.denied)}"))
            except (apsw.Error, KeyError) as e:
                failures.append(Failure("sql", f"tool {tool.name} step {j}", f"SQLite cannot prepare it: {e}"))
    return failures


def check_tools(world: World, compiled: CompiledWorld, slot: Slot) -> list[Failure]:
    """Rule "tools": valid arguments never give env_error; invalid ones give invalid_arguments."""
    failures = []
    gold_args: dict[str, dict[str, Any]] = {}
    for task in world.tasks:
        for call in task.gold or ():
            gold_args.setdefault(call.tool, call.arguments)
    for tool in world.tools:
        where = f"tool {tool.name}"
        valid = gold_args.get(tool.name) or valid_arguments(tool)
        ep = Episode(slot, compiled)
        try:
            try:
                res = ep.call(tool.name, valid)
            except Exception as e:  # noqa: BLE001 - the rule is that nothing escapes a tool
                failures.append(Failure("tools", where, f"raised {type(e).__name__} on valid arguments {valid}: {e}"))
                continue
            if res.outcome in ("env_error", "invalid_arguments"):
                failures.append(Failure("tools", where, f"valid arguments {valid} gave {res.outcome}: {res.payload.get('error')}"))
            for label, bad in invalid_arguments(tool, valid):
                try:
                    res = ep.call(tool.name, bad)
                except Exception as e:  # noqa: BLE001
                    failures.append(Failure("tools", where, f"{label} raised {type(e).__name__}: {e}"))
                    continue
                if res.outcome != "invalid_arguments":
                    failures.append(Failure("tools", where, f"{label} {bad} gave {res.outcome}, expected a clear invalid-arguments error"))
        finally:
            ep.close()
    return failures


def valid_arguments(tool: Tool) -> dict[str, Any]:
    """Arguments that satisfy the tool's schema (required parameters only)."""
    props = tool.parameters.get("properties", {})
    return {name: _valid_value(props.get(name, {})) for name in tool.parameters.get("required", [])}


def _valid_value(p: dict[str, Any]) -> Any:
    if "enum" in p:
        return p["enum"][0]
    if "default" in p:
        return p["default"]
    t = p.get("type")
    t = t[0] if isinstance(t, list) else t
    if t in ("integer", "number"):
        lo = p.get("minimum", p.get("exclusiveMinimum", 0) + 1 if "exclusiveMinimum" in p else 1)
        return int(lo) if t == "integer" else float(lo)
    if t == "boolean":
        return True
    if t == "array":
        return []
    if t == "object":
        return {}
    return "x" * max(1, p.get("minLength", 1))


def invalid_arguments(tool: Tool, valid: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Argument sets that break the schema: a missing required one, wrong types, out of range."""
    props = tool.parameters.get("properties", {})
    cases = []
    for name in tool.parameters.get("required", []):
        cases.append((f"missing '{name}'", {k: v for k, v in valid.items() if k != name}))
    for name, p in props.items():
        t = p.get("type")
        if t in ("integer", "number"):
            cases.append((f"mistyped '{name}'", {**valid, name: "not-a-number"}))
            if "minimum" in p:
                cases.append((f"'{name}' below minimum", {**valid, name: p["minimum"] - 1}))
            if "maximum" in p:
                cases.append((f"'{name}' above maximum", {**valid, name: p["maximum"] + 1}))
        elif t == "string":
            cases.append((f"mistyped '{name}'", {**valid, name: 12345}))
            if "enum" in p:
                cases.append((f"'{name}' outside enum", {**valid, name: "\u2603not-an-option"}))
        elif t == "boolean":
            cases.append((f"mistyped '{name}'", {**valid, name: "yes"}))
    if tool.parameters.get("additionalProperties") is False:
        cases.append(("unknown argument", {**valid, "zz_unknown_argument": 1}))
    return cases


def check_tasks(world: World, compiled: CompiledWorld, slot: Slot) -> list[Failure]:
    """Rule "tasks": gold replays pass, the untouched seed fails, reads cannot fake a change."""
    failures = []
    for task in world.tasks:
        where = f"task {task.id}"
        ep = Episode(slot, compiled, task)
        try:
            untouched = ep.verdict(None)
            if untouched.result == "complete":
                failures.append(Failure("tasks", where, "the untouched seed already passes the check (a task must need work)"))
        finally:
            ep.close()
        if not task.gold:
            continue
        ep = Episode(slot, compiled, task)
        try:
            for k, call in enumerate(task.gold):
                res = ep.call(call.tool, call.arguments)
                if not res.ok:
                    failures.append(Failure("tasks", where, f"gold call {k} {call.tool} gave {res.outcome}: {res.payload.get('error')}"))
                    break
            else:
                verdict = ep.verdict(task.answer)
                if verdict.result != "complete":
                    failures.append(Failure("tasks", where, f"replaying the gold sequence gives {verdict.result}: {_why(verdict.evidence)}"))
                needs_change = task.check.kind == "sql" and not all(compiled.seed_states[task.id])
                if needs_change and not ep.changes():
                    failures.append(Failure("tasks", where, "the check needs a change but the gold sequence changes nothing"))
        finally:
            ep.close()
    return failures


def _why(evidence: dict[str, Any]) -> str:
    failed = [a["assertion"] for a in evidence.get("assertions", []) if not a["holds"]]
    parts = [f"assertion fails: {a}" for a in failed[:2]] + evidence.get("violations", [])[:2]
    if evidence.get("answer_matched") is False:
        parts.append("the answer does not match")
    if "verifier_error" in evidence:
        parts.append(evidence["verifier_error"])
    return "; ".join(parts) or str(evidence)[:200]
