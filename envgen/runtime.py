"""Compiled worlds and single-slot episodes: the in-process core of the state pools.

- `CompiledWorld`: a world compiled once: the seeded database serialized to bytes (the
  template image), its tables and columns, compiled tools, and each SQL check's
  assertion values on the seed (so progress counts only real work). Cached by world id.
- `Slot`: one sandboxed in-memory connection that can hold any compiled world.
- `Episode`: one task being attempted in a slot: reset, tool calls, changes, verdict.

The pool (`envgen.pool`) runs many slots across worker processes with the same classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from envgen.args import compile_validator
from envgen.checks import Verdict, assertion_states, judge_sql_check
from envgen.app_child import table_changes
from envgen.db import ChangeRecorder, Limits, SandboxedDB, quote_ident
from envgen.sandbox import DbState, PythonSandbox
from envgen.sqltool import CompiledSqlTool, ToolResult, error_result
from envgen.world import Task, Tool, World


@dataclass
class CompiledWorld:
    """A world ready to run: template image, schema facts, compiled tools, seed check states."""

    world: World
    image: bytes
    tables: frozenset[str]
    columns: dict[str, list[str]]
    sql_tools: dict[str, CompiledSqlTool]
    seed_states: dict[str, list[bool]] = field(default_factory=dict)  # task id -> assertion holds on seed

    @property
    def id(self) -> str:
        return self.world.id

    def tool(self, name: str) -> Tool | None:
        """The world's tool called `name`, or None."""
        return self.world.tool(name)

    @cached_property
    def python_validators(self) -> dict[str, Any]:
        """Argument validators of the Python tools, compiled once per world."""
        return {t.name: compile_validator(t.parameters) for t in self.world.tools if t.impl.kind != "sql"}

    @property
    def sql_only(self) -> bool:
        """Whether every tool and check is SQL (no Python sandbox needed)."""
        return len(self.sql_tools) == len(self.world.tools) and all(t.check.kind == "sql" for t in self.world.tasks)

    @classmethod
    def compile(cls, world: World, limits: Limits = Limits()) -> "CompiledWorld":
        """Load schema and seed into a sandboxed database and prepare tools and checks."""
        db = SandboxedDB(limits)
        try:
            db.load_schema_and_seed(world.schema, world.seed)
            columns = {t: db.columns(t) for t in db.tables}
            tools = {t.name: CompiledSqlTool.compile(t) for t in world.tools if t.impl.kind == "sql"}
            seed_states = {t.id: assertion_states(db, t.check) for t in world.tasks if t.check.kind == "sql"}
            return cls(world, db.image(), db.tables, columns, tools, seed_states)
        finally:
            db.close()


_COMPILED: dict[str, CompiledWorld] = {}
COMPILE_CACHE_SIZE = 4096


def compile_world(world: World) -> CompiledWorld:
    """Compile a world, cached by its content id (a changed world has a new id)."""
    cw = _COMPILED.get(world.id)
    if cw is None:
        if len(_COMPILED) >= COMPILE_CACHE_SIZE:
            _COMPILED.pop(next(iter(_COMPILED)))
        cw = _COMPILED[world.id] = CompiledWorld.compile(world)
    return cw


class Slot:
    """One sandboxed in-memory database that episodes of any world can use in turn.

    Two ways to reset, both to the exact seeded state:
    - "deserialize": load the world's template image (about 30 us for the 20 KiB test
      world, 50-75 us for a 20-table procedural world, plus about 50 us on the next call
      to re-read the schema, and a re-prepare of each statement on first use);
    - "rollback": when the slot already holds the same world, roll back to the savepoint
      opened right after the last deserialize (about 5-10 us; the schema and prepared
      statements stay valid). GRPO groups run one task many times, and the pool hands
      a world's idle connections to its next episodes, so most resets take this path.
    "auto" (the default) rolls back when it can. Worlds with Python tools or checks
    always deserialize: they hand the database to the sandbox as an image, and
    `serialize` does not see the changes of an open transaction.
    """

    BASE = "episode_base"
    _ROLLBACK_TO_BASE, _SAVEPOINT_BASE = f"ROLLBACK TO {BASE}", f"SAVEPOINT {BASE}"

    def __init__(self, limits: Limits = Limits(), python: PythonSandbox | None = None, reset_method: str = "auto"):
        if reset_method not in ("auto", "deserialize"):
            raise ValueError(f"Slot reset_method={reset_method!r}; allowed: 'auto', 'deserialize'")
        self.db = SandboxedDB(limits)
        self.python = python  # sandbox process for Python tools and checks, made on demand
        self.world: CompiledWorld | None = None
        self.reset_method = reset_method
        self.held = False  # the savepoint at the template state is open
        self.serial = 0  # resets so far: names this slot's database states for the sandbox
        self._changes_at_reset = 0

    def reset(self, world: CompiledWorld) -> str:
        """Restore the world's exact seeded state, whatever came before; returns the method used."""
        if self.held and self.world is world:
            self.db.run_trusted(self._ROLLBACK_TO_BASE)
            return "rollback"
        if not self.db.conn.getautocommit():
            self.db.run_trusted("ROLLBACK")
        self.held = False
        self.db.restore(world.image, world.tables)
        self.world = world
        self.serial += 1
        self._changes_at_reset = self.db.conn.total_changes()
        if self.reset_method == "auto" and world.sql_only:
            self._hold()
        return "deserialize"

    def _hold(self) -> None:
        self.db.run_trusted(self._SAVEPOINT_BASE)
        self.held = True

    def image(self) -> bytes:
        """The current state as an image (commits the held savepoint: the next reset deserializes)."""
        if self.held:
            with self.db.trusted():
                self.db.conn.execute(f"RELEASE {self.BASE}", can_cache=False)
            self.held = False
        return self.db.image()

    def lost_transaction(self) -> bool:
        """Whether SQLite rolled back the held savepoint (it does so when a write is interrupted)."""
        return self.held and self.db.conn.getautocommit()

    def hold(self) -> None:
        """Open the savepoint at the current state (the template state, right after a reset)."""
        self._hold()

    def state(self) -> DbState:
        """This slot's database for the sandbox: unchanged since the reset, it is the world's template."""
        changes = self.db.conn.total_changes()
        if changes == self._changes_at_reset:
            return DbState(f"slot-{id(self)}", f"template:{self.world.id}", self.image, (self.world.id, self.world.image))
        return DbState(f"slot-{id(self)}", f"{self.serial}:{changes}", self.image)

    def sandbox(self) -> PythonSandbox:
        """The Python sandbox of this slot (started on first use)."""
        if self.python is None:
            self.python = PythonSandbox()
        return self.python

    def close(self, *, close_sandbox: bool = True) -> None:
        """Release the connection and (unless shared) the sandbox process."""
        self.db.close()
        if self.python is not None and close_sandbox:
            self.python.close()


class Episode:
    """One attempt at a task: reset the slot, record changes, call tools, judge."""

    def __init__(self, slot: Slot, world: CompiledWorld, task: Task | None = None):
        self.slot, self.world, self.task = slot, world, task
        self.reset_method = slot.reset(world)
        # Started just before the first tool that can write: until then there is nothing to
        # record, and a read-only episode skips the session altogether.
        self.recorder: ChangeRecorder | None = None
        self.calls = 0
        self._writes: list[tuple[CompiledSqlTool, Any]] = []  # successful writing calls, for _replay
        self.broken: str | None = None  # why the state is no longer trustworthy, if it is not

    def call(self, tool_name: str, arguments: Any) -> ToolResult:
        """Run one tool call (unknown tools are reported as invalid, never raised)."""
        self.calls += 1
        if self.broken:
            return error_result("env_error", self.broken)
        sql_tool = self.world.sql_tools.get(tool_name)  # every SQL tool of the world, by name
        if sql_tool is None:
            tool = self.world.tool(tool_name)
            if tool is None:
                return error_result("invalid_arguments", f"unknown tool {tool_name!r}")
            if tool.impl.kind == "fastapi":
                return self._call_app(tool, arguments)
            self._will_write()
            return self._call_python(tool, arguments)
        writes = sql_tool.writes
        if writes and self.recorder is None:
            self._will_write()
        result = sql_tool(self.slot.db, arguments)
        if writes and self.slot.held:
            if self.slot.lost_transaction():
                self._replay()
            elif result.ok:
                self._writes.append((sql_tool, arguments))
        return result

    def _will_write(self) -> None:
        if self.recorder is None:
            self.recorder = ChangeRecorder(self.slot.db)

    def _replay(self) -> None:
        """Put back the episode's writes after SQLite dropped the held transaction.

        SQLite rolls back the whole transaction when a write is interrupted (the deadline),
        which takes the slot back to the template state. Re-running the episode's
        successful writes restores it (tool SQL is deterministic: no random() or clock
        reads in generated worlds). Replaying is cheaper than saving a changeset before
        every write (about 90 us each), and this path is rare.
        """
        self.slot.hold()
        for tool, arguments in self._writes:
            if not tool(self.slot.db, arguments).ok:  # cannot happen for deterministic SQL
                self.broken = "the episode's state could not be restored after an interrupted write"

    def _call_python(self, tool, arguments: Any) -> ToolResult:
        args, err = self.world.python_validators[tool.name](arguments)
        if err:
            return error_result("invalid_arguments", f"{tool.name}: {err}")
        res = self.slot.sandbox().run_tool(tool.impl.source, tool.impl.entry, self.slot.image(), args)
        if res.outcome == "ok":
            problem = self._apply_image(res.image)
            if problem:
                return error_result("tool_error", f"{tool.name}: rejected by the database: {problem}")
            return ToolResult("ok", res.value)
        if res.outcome == "error":
            return error_result("tool_error", f"{tool.name}: {res.message}")
        return error_result("env_error", f"{tool.name}: {res.message}")

    def _call_app(self, tool, arguments: Any) -> ToolResult:
        """Call a route of the world's app in the sandbox; rows it changed are applied to the slot."""
        args, err = self.world.python_validators[tool.name](arguments)
        if err:
            return error_result("invalid_arguments", f"{tool.name}: {err}")
        impl, sandbox, state = tool.impl, self.slot.sandbox(), self.slot.state()
        res = sandbox.run_route(self.world.world.app.source, impl.method, impl.path, impl.params, args, state)
        if res.changes is not None:
            self._will_write()
            problem = self._apply_rows(res.changes)
            if problem:
                return error_result("tool_error", f"{tool.name}: rejected by the database: {problem}")
            sandbox.note_state(state.key, self.slot.state().token)
        if res.outcome == "ok":
            return ToolResult("ok", (res.value or {}).get("body"))
        if res.outcome == "error":
            return error_result("tool_error", f"{tool.name}: {res.message}")
        return error_result("env_error", f"{tool.name}: {res.message}")

    def _apply_image(self, image: bytes) -> str | None:
        """Make the slot's rows equal those of `image` by row-level writes, so the session records them.

        Rows are matched by primary key: only deleted, inserted and changed rows are
        written. Returns an error message (and changes nothing) if the result breaks a constraint.
        """
        import apsw

        other = apsw.Connection(":memory:")
        other.deserialize("main", image)
        db = self.slot.db
        try:
            with db.trusted():
                diff = {}
                for table in sorted(db.tables):
                    pk = db.primary_key(table)
                    select = f"SELECT {', '.join(map(quote_ident, pk))}, * FROM {quote_ident(table)}"
                    change = table_changes(len(pk), db.conn.execute(select, can_cache=False), other.execute(select, can_cache=False))
                    if change is not None:
                        diff[table] = [pk, *change]
        finally:
            other.close()
        return self._apply_rows(diff)

    def _apply_rows(self, diff: dict[str, list]) -> str | None:
        """Write row changes {table: [pk columns, deleted keys, inserted rows, updated (row, key)s]} to the slot.

        One savepoint with deferred foreign keys; returns an error message (and changes
        nothing) if the writes break a constraint.
        """
        import apsw

        db, q = self.slot.db, quote_ident
        with db.trusted():
            db.conn.execute("SAVEPOINT apply_rows", can_cache=False)
            try:
                db.conn.execute("PRAGMA defer_foreign_keys = ON", can_cache=False)
                for table, (pk, deleted, inserted, updated) in diff.items():
                    if table not in db.tables:
                        raise apsw.SQLError(f"no such table: {table}")
                    cols = self.world.columns[table]
                    where = " AND ".join(f"{q(c)} = ?" for c in pk)
                    for key in deleted:
                        db.conn.execute(f"DELETE FROM {q(table)} WHERE {where}", key, can_cache=False)
                    names, marks = ", ".join(map(q, cols)), ", ".join("?" * len(cols))
                    for row in inserted:
                        db.conn.execute(f"INSERT INTO {q(table)} ({names}) VALUES ({marks})", row, can_cache=False)
                    sets = ", ".join(f"{q(c)} = ?" for c in cols)
                    for row, key in updated:
                        db.conn.execute(f"UPDATE {q(table)} SET {sets} WHERE {where}", [*row, *key], can_cache=False)
                db.conn.execute("RELEASE apply_rows", can_cache=False)
            except (apsw.Error, ValueError, TypeError) as e:
                db.conn.execute("ROLLBACK TO apply_rows", can_cache=False)
                db.conn.execute("RELEASE apply_rows", can_cache=False)
                return str(e)
        return None

    def changes(self) -> list[dict[str, Any]]:
        """Rows inserted, deleted and updated so far, with old and new values (JSON-ready)."""
        if self.recorder is None:  # no tool that writes has run
            return []
        return self.recorder.changes(self.world.columns.__getitem__)

    def verdict(self, final_answer: str | None = None, changes: list[dict[str, Any]] | None = None) -> Verdict:
        """The code verdict of the episode's task on the current state (`changes`: self.changes(), if at hand)."""
        if self.task is None:
            raise ValueError("this episode has no task to judge")
        check = self.task.check
        if check.kind == "sql":
            changes = self.changes() if changes is None else changes
            return judge_sql_check(self.slot.db, check, changes, final_answer, self.world.seed_states[self.task.id])
        if check.kind == "llm":
            return Verdict("incomplete", {"judge": "llm-only", "note": "this task has no code verifier; only the LLM judge can judge it"})
        if check.kind == "awm":
            return self._awm_verdict(check, final_answer)
        res = self.slot.sandbox().run_verifier(check.source, self.world.image, self.slot.image(), final_answer)
        if res.outcome != "ok":
            return Verdict("incomplete", {"verifier_error": res.message, "outcome": res.outcome})
        value = res.value if isinstance(res.value, dict) else {"result": res.value}
        result = value.get("result")
        if result not in ("complete", "partial", "incomplete"):
            return Verdict("incomplete", {"verifier_error": f"verify returned result {result!r}", "raw": value})
        return Verdict(result, {"verifier": value.get("evidence", value)})

    def _awm_verdict(self, check, final_answer: str | None) -> Verdict:
        """AWM's verifiers: the pure-code one gives the result, the code-augmented one evidence for the LLM judge."""
        sandbox, template = self.slot.sandbox(), (self.world.id, self.world.image)
        evidence: dict[str, Any] = {}
        result = "incomplete"
        if check.evidence is not None:
            ev = check.evidence
            res = sandbox.run_awm_verifier(ev["source"], ev["entry"], self.slot.state(), template, final_answer)
            evidence["verifier_evidence"] = res.value if res.outcome == "ok" else {"verifier_error": res.message, "outcome": res.outcome}
            evidence["success_criteria"], evidence["failure_criteria"] = ev.get("success_criteria", ""), ev.get("failure_criteria", "")
        if check.source is None:
            evidence["judge"] = "code-augmented-only: no pure-code verifier; the LLM judge reads this evidence"
            return Verdict(result, evidence)
        res = sandbox.run_awm_verifier(check.source, check.entry, self.slot.state(), template, final_answer)
        if res.outcome != "ok":
            return Verdict("incomplete", evidence | {"verifier_error": res.message, "outcome": res.outcome})
        raw = res.value.get("result") if isinstance(res.value, dict) else res.value
        label = str(raw).lower().replace(" ", "_")
        result = "complete" if label in ("complete", "completed") else "partial" if label.startswith("partial") else "incomplete"
        return Verdict(result, evidence | {"verifier": res.value})

    def close(self) -> None:
        """Stop recording changes (the slot stays usable)."""
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None
