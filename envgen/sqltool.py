"""Running declarative SQL tools on a sandboxed database.

A tool call has one of four outcomes, named the same everywhere:
- "ok": the tool ran; `payload` is its JSON result.
- "tool_error": the world refused the request with a clear message (a guard failed,
  or a constraint such as UNIQUE or a foreign key was violated); nothing changed.
- "invalid_arguments": the arguments do not match the tool's schema (the rollout
  layer counts this as a format error of the agent).
- "env_error": the environment failed (deadline, sandbox refusal, SQLite error);
  nothing changed, the slot stays usable, and the agent is not to blame.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import apsw

from envgen.args import compile_validator
from envgen.db import SandboxedDB
from envgen.world import SqlStep, Tool

OUTCOMES = ("ok", "tool_error", "invalid_arguments", "env_error")
_TEMPLATE_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class ToolResult:
    """What a tool call produced: an outcome name and the JSON payload the agent sees."""

    outcome: str
    payload: Any

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    def text(self) -> str:
        """The payload as compact JSON text."""
        return json.dumps(self.payload, ensure_ascii=False, separators=(",", ":"), default=str)


def error_result(outcome: str, message: str) -> ToolResult:
    """A non-ok result with `{"error": message}` as payload."""
    return ToolResult(outcome, {"error": message})


@dataclass
class CompiledSqlTool:
    """A SQL tool ready to run: validator, steps, and whether it needs a savepoint."""

    tool: Tool
    validate: Any = field(repr=False)
    steps: tuple[SqlStep, ...]
    atomic: bool  # wrap the call in a savepoint (several writes, or a guard after a write)
    # Column names of each read step's result, by step index, once known: the SQL and the
    # world's schema fix them, and asking the cursor costs a few us per call.
    names: dict[int, list[str]] = field(default_factory=dict, repr=False)

    @cached_property
    def writes(self) -> bool:
        """Whether any step writes rows."""
        return any(s.op == "write" for s in self.steps)

    @classmethod
    def compile(cls, tool: Tool) -> "CompiledSqlTool":
        """Compile one tool (its kind must be "sql")."""
        if tool.impl.kind != "sql":
            raise ValueError(f"tool {tool.name} is {tool.impl.kind}, not sql")
        steps = tool.impl.steps
        writes = [i for i, s in enumerate(steps) if s.op == "write"]
        guard_after_write = bool(writes) and any(s.op == "guard" for s in steps[writes[0] + 1 :])
        return cls(tool, compile_validator(tool.parameters), steps, len(writes) > 1 or guard_after_write)

    def __call__(self, db: SandboxedDB, arguments: Any) -> ToolResult:
        """Validate the arguments and run the steps under the call deadline."""
        args, err = self.validate(arguments)
        if err:
            return error_result("invalid_arguments", f"{self.tool.name}: {err}")
        bind = args  # a fresh dict from the validator: converting values in place is safe
        for k, v in args.items():
            if isinstance(v, _CONVERT):
                bind[k] = _bindable(v)
        if not self.atomic:
            return self._run(db, bind)
        db.run_trusted("SAVEPOINT tool_call")
        result = self._run(db, bind)
        # A write interrupted by the deadline makes SQLite roll back the whole transaction,
        # savepoint included; then there is nothing left to undo or release.
        if not db.conn.getautocommit():
            if not result.ok:
                db.run_trusted("ROLLBACK TO tool_call")
            db.run_trusted("RELEASE tool_call")
        return result

    def _run(self, db: SandboxedDB, bind: dict[str, Any]) -> ToolResult:
        out: dict[str, Any] = {}
        # db.deadline_of() inlined: this is the hottest path of the pool
        db.deadline = time.monotonic() + db.limits.call_seconds
        db.denied.clear()
        try:
            for i, step in enumerate(self.steps):
                cur = db.conn.execute(step.sql, bind)
                if step.op == "guard":
                    row = cur.fetchone()
                    ok = (row is not None) if step.expect == "exists" else (
                        row is None if step.expect == "absent" else bool(row and row[0])
                    )
                    if not ok:
                        return error_result("tool_error", _fill(step.error or "request refused", bind))
                elif step.op == "read":
                    out[step.output] = self._shape(i, cur, step.shape)
                else:
                    returned = cur.fetchall()  # runs the statement to completion (RETURNING too)
                    row = returned[0] if returned else None
                    if step.save:
                        value = row[0] if row else db.conn.last_insert_rowid()
                        bind[step.save] = value
                        out[step.save] = value
                    if step.output:
                        out[step.output] = db.conn.changes()
        except apsw.ConstraintError as e:
            return error_result("tool_error", f"{self.tool.name}: rejected by the database: {_sqlite_msg(e)}")
        except apsw.InterruptError:
            return error_result("env_error", f"{self.tool.name}: deadline of {db.limits.call_seconds}s exceeded")
        except apsw.AuthError:
            return error_result("env_error", f"{self.tool.name}: refused by the sandbox ({'; '.join(db.denied) or 'not authorized'})")
        except apsw.TooBigError as e:
            return error_result("env_error", f"{self.tool.name}: a value exceeded the sandbox size limit ({_sqlite_msg(e)})")
        except apsw.Error as e:
            return error_result("env_error", f"{self.tool.name}: database error: {_sqlite_msg(e)}")
        except (OverflowError, TypeError, ValueError) as e:  # a value SQLite cannot bind
            return error_result("invalid_arguments", f"{self.tool.name}: an argument cannot be stored: {e}")
        except KeyError as e:  # a :name in the SQL that is neither a parameter nor a saved value
            return error_result("env_error", f"{self.tool.name}: SQL names unbound parameter :{e.args[0]}")
        finally:
            db.deadline = float("inf")
        return ToolResult("ok", out or {"status": "ok"})

    def _shape(self, i: int, cur: apsw.Cursor, shape: str) -> Any:
        if shape in ("count", "value"):
            rows = cur.fetchall()
            return len(rows) if shape == "count" else (rows[0][0] if rows else None)
        names = self.names.get(i)
        if names is None:
            try:  # asked before fetching: a cursor that has run to completion no longer says
                names = self.names[i] = [d[0] for d in cur.getdescription()]
            except apsw.ExecutionCompleteError:  # the query produced no rows
                names = []
        rows = cur.fetchall()
        if shape == "row":
            return dict(zip(names, rows[0])) if rows else None
        return [dict(zip(names, r)) for r in rows]


_CONVERT = (list, dict, bool)


def _bindable(v: Any) -> Any:
    if isinstance(v, (list, dict)):
        return json.dumps(v, separators=(",", ":"))
    if isinstance(v, bool):
        return int(v)
    return v


def _fill(template: str, bind: dict[str, Any]) -> str:
    return _TEMPLATE_RE.sub(lambda m: str(bind.get(m.group(1), m.group(0))), template)


def _sqlite_msg(e: apsw.Error) -> str:
    return str(e).split(": ", 1)[-1]
