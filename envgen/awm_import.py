"""Importing the published AgentWorldModel-1K worlds (AWM's JSONL files) as awmjax worlds.

AWM ships one JSONL file per synthesis stage, each row naming its scenario:

    gen_scenario.jsonl          {"name", "description"}
    gen_tasks.jsonl             {"scenario", "tasks": [instruction, ...]}
    gen_db.jsonl                {"scenario", "db_schema": {"tables": [{"name", "ddl", "indexes"}]}}
    gen_sample.jsonl            {"scenario", "sample_data": {"tables": [{"table_name", "insert_statements"}]}}
    gen_spec.jsonl              {"scenario", "api_spec": {"api_groups": [{"endpoints": [...]}]}}
    gen_envs.jsonl              {"scenario", "full_code": <FastAPI + SQLAlchemy server>}
    gen_verifier.jsonl          {"scenario", "task_idx", "verification": {"code", "function_name", ...}}
    gen_verifier.pure_code.jsonl {"scenario", "task_idx", "verification": {"code"}}

`import_awm` joins them by scenario. A scenario with tasks, schema and sample data
becomes a world: schema from the DDL, seed from running the INSERTs (sandboxed, in
memory) and reading the rows back, tools from the spec (JSON-Schema parameters; the
implementation is the spec's route of the server code, kind "fastapi"), and per task
an "awm" check holding its verifiers, or an "llm" check where there is none. Without
server code (or spec) a scenario imports as a database plus its verifiers. Anything
missing or broken is reported with its reason; the other scenarios still import.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import apsw

from envgen.db import SandboxedDB
from envgen.world import App, Check, Scenario, Task, Tool, ToolImpl, World

FILES = {
    "scenario": "gen_scenario.jsonl",
    "tasks": "gen_tasks.jsonl",
    "db": "gen_db.jsonl",
    "sample": "gen_sample.jsonl",
    "spec": "gen_spec.jsonl",
    "envs": "gen_envs.jsonl",
    "verifier": "gen_verifier.jsonl",
    "pure_code": "gen_verifier.pure_code.jsonl",
}
REQUIRED = ("tasks", "db", "sample")
_JSON_TYPES = {"string", "integer", "number", "boolean", "array", "object"}
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class AwmImportError(ValueError):
    """The AWM directory cannot be read at all (missing, or no AWM file in it)."""


@dataclass(frozen=True)
class Problem:
    """Something not imported: the scenario, the part (file, task, tool), and why."""

    scenario: str
    part: str
    message: str
    fatal: bool  # True: the scenario was not imported

    def __str__(self) -> str:
        return f"{self.scenario} [{self.part}]: {self.message}" + (" (not imported)" if self.fatal else "")


@dataclass
class ImportReport:
    """The worlds made from an AWM directory and every problem met on the way."""

    worlds: list[World] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # world id -> AWM scenario name
    problems: list[Problem] = field(default_factory=list)
    scenarios: int = 0

    def rejected(self) -> list[dict[str, Any]]:
        """Scenarios not imported, with their reasons (the catalog's rejected.jsonl records)."""
        out: dict[str, list[str]] = {}
        for p in self.problems:
            if p.fatal:
                out.setdefault(p.scenario, []).append(f"[{p.part}] {p.message}")
        return [{"awm_scenario": s, "failures": reasons} for s, reasons in sorted(out.items())]


# --------------------------------------------------------------------------- reading


def _value(v: Any) -> Any:
    """A field that may be stored as JSON text or as a Python literal's text."""
    if not isinstance(v, str):
        return v
    s = v.strip()
    if not s or s[0] not in "[{":
        return v
    try:
        return json.loads(s)
    except json.JSONDecodeError:
        try:
            return ast.literal_eval(s)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return v


def read_awm(directory: str | Path) -> tuple[dict[str, dict[str, Any]], list[Problem]]:
    """AWM's rows by scenario: {scenario: {part: row, "verifier"/"pure_code": {task_idx: row}}}."""
    root = Path(directory)
    if not root.is_dir():
        raise AwmImportError(f"{root} is not a directory; give the folder holding AWM's gen_*.jsonl files")
    present = {part: root / name for part, name in FILES.items() if (root / name).is_file()}
    if not present:
        raise AwmImportError(f"{root} holds none of AWM's files ({', '.join(FILES.values())})")
    by_scenario: dict[str, dict[str, Any]] = {}
    problems: list[Problem] = []
    for part, path in present.items():
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    problems.append(Problem("?", f"{path.name}:{n}", f"not valid JSON ({e.msg}); row skipped", False))
                    continue
                name = row.get("name" if part == "scenario" else "scenario") if isinstance(row, dict) else None
                if not isinstance(name, str) or not name:
                    problems.append(Problem("?", f"{path.name}:{n}", "row names no scenario; skipped", False))
                    continue
                parts = by_scenario.setdefault(name, {})
                if part in ("verifier", "pure_code"):
                    parts.setdefault(part, {})[row.get("task_idx")] = row
                else:
                    parts[part] = row
    return by_scenario, problems


# --------------------------------------------------------------------------- converting


def _category(scenario: str) -> str:
    return re.sub(r"_\d+$", "", scenario) or scenario


def _schema(name: str, row: dict, problems: list[Problem]) -> list[str]:
    tables = (_value(row.get("db_schema")) or {}).get("tables", [])
    schema = []
    for t in tables:
        if isinstance(t, dict) and isinstance(t.get("ddl"), str):
            schema.append(t["ddl"].strip())
            schema += [ix.strip() for ix in t.get("indexes") or [] if isinstance(ix, str) and ix.strip()]
        else:
            problems.append(Problem(name, "gen_db", f"table entry without DDL skipped: {str(t)[:80]}", False))
    return schema


def build_seed(name: str, schema: list[str], sample_row: dict, problems: list[Problem]) -> tuple[list[str], dict[str, dict]]:
    """Run the DDL and AWM's INSERTs in a sandboxed in-memory database; the loaded DDL and rows read back.

    DDL that SQLite refuses is dropped (and reported); each INSERT runs under the sandbox's
    authorizer and deadline, as AWM ran them (in order, foreign keys on), and one that
    fails is reported and skipped. Values computed by SQL (`datetime('now', ...)`) are
    fixed at import time: the world's seed is a snapshot, so every reset is identical (and
    the world's content id depends on when it was imported).
    """
    db = SandboxedDB()
    try:
        loaded = []
        for ddl in schema:
            try:
                with db.trusted():
                    db.conn.execute(ddl, can_cache=False)
                loaded.append(ddl)
            except apsw.Error as e:
                problems.append(Problem(name, "gen_db", f"DDL refused by SQLite ({e}); dropped: {ddl[:80]!r}", False))
        db.refresh_tables()
        failed = total = 0
        for t in (_value(sample_row.get("sample_data")) or {}).get("tables", []):
            for stmt in (t.get("insert_statements") or []) if isinstance(t, dict) else []:
                total += 1
                try:
                    with db.deadline_of():
                        db.conn.execute(stmt, can_cache=False)
                except (apsw.Error, ValueError) as e:
                    failed += 1
                    if failed <= 3:
                        problems.append(Problem(name, "gen_sample", f"INSERT failed ({e}); skipped: {stmt[:100]!r}", False))
        if failed > 3:
            problems.append(Problem(name, "gen_sample", f"{failed} of {total} INSERTs failed in all (first 3 shown)", False))
        seed = {}
        for table, rows in db.dump().items():
            for row in rows:
                if any(isinstance(v, bytes) for v in row):
                    raise ValueError(f"table {table} holds a BLOB value, which a world seed cannot store")
            seed[table] = {"columns": tuple(db.columns(table)), "rows": tuple(rows)}
        return loaded, seed
    finally:
        db.close()


def _json_schema(spec_type: Any, description: str) -> dict[str, Any]:
    t = spec_type.lower() if isinstance(spec_type, str) else None
    out: dict[str, Any] = {}
    if t in _JSON_TYPES:
        out["type"] = t
    elif t in ("float", "double", "decimal"):
        out["type"] = "number"
    elif t in ("int",):
        out["type"] = "integer"
    elif t in ("bool",):
        out["type"] = "boolean"
    elif t in ("str", "datetime", "date"):
        out["type"] = "string"
    if description:
        out["description"] = description
    return out


def tool_from_endpoint(ep: dict[str, Any]) -> Tool:
    """One spec endpoint as a tool: its operation id, summary and description, JSON-Schema parameters, route."""
    name = ep.get("operation_id")
    method = str(ep.get("method", "")).upper()
    path = ep.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"endpoint {name or '?'} has no valid path ({path!r})")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"endpoint {method} {path} has no valid operation_id ({name!r})")
    props, required, where = {}, [], {}
    for pname, p in (ep.get("request_params") or {}).items():
        p = p if isinstance(p, dict) else {}
        loc = p.get("param_type", "query")
        if loc not in ("path", "query", "body"):
            raise ValueError(f"parameter {pname} of {name} is in {loc!r}; only path, query and body are supported")
        props[pname] = _json_schema(p.get("type"), str(p.get("description") or ""))
        where[pname] = loc
        if p.get("required") or loc == "path":
            required.append(pname)
    params = {"type": "object", "properties": props, "required": required}
    description = " ".join(x for x in (ep.get("summary"), ep.get("description")) if isinstance(x, str) and x)
    return Tool(name, description or name, params, ToolImpl("fastapi", method=method, path=path, params=where))


def verifier_problem(source: Any, entry: str | None) -> tuple[str | None, str | None]:
    """(function name, None) for verifier source that compiles and defines its entry, else (None, why)."""
    if not isinstance(source, str) or not source.strip():
        return None, "no code"
    try:
        tree = ast.parse(source)
        compile(tree, "<awm verifier>", "exec")  # compiling runs nothing
    except (SyntaxError, ValueError) as e:
        return None, f"does not compile: {type(e).__name__}: {e}"
    defs = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    if entry:
        return (entry, None) if entry in defs else (None, f"defines no function {entry!r}")
    verify = [d for d in defs if d.startswith("verify")]
    return (verify[0], None) if verify else (None, "defines no verify_* function")


def _verifier(name: str, idx: int, parts: dict[str, Any], part: str, problems: list[Problem]) -> tuple[dict, str] | None:
    """(AWM's verification record, its entry function) for task `idx` from file `part`, if it compiles."""
    row = (parts.get(part) or {}).get(idx)
    if row is None:
        return None
    v = _value(row.get("verification")) or {}
    entry, why = verifier_problem(v.get("code"), v.get("function_name"))
    if why:
        problems.append(Problem(name, f"task {idx} {FILES[part].removesuffix('.jsonl')}", f"verifier {why}; dropped", False))
        return None
    return v, entry


def _check(name: str, idx: int, parts: dict[str, Any], problems: list[Problem]) -> Check:
    pure = _verifier(name, idx, parts, "pure_code", problems)
    aug = _verifier(name, idx, parts, "verifier", problems)
    if pure is None and aug is None:
        return Check("llm")
    evidence = None
    if aug is not None:
        v, fn = aug
        evidence = {"source": v["code"], "entry": fn, "success_criteria": str(v.get("success_criteria") or ""),
                    "failure_criteria": str(v.get("failure_criteria") or "")}
    return Check("awm", source=pure[0]["code"] if pure else None, entry=pure[1] if pure else None, evidence=evidence)


def convert_scenario(name: str, parts: dict[str, Any]) -> tuple[World | None, list[Problem]]:
    """One AWM scenario as a world, or None; with every problem found."""
    problems: list[Problem] = []
    missing = [FILES[p] for p in REQUIRED if p not in parts]
    if missing:
        return None, [Problem(name, "files", f"incomplete: no row in {', '.join(missing)}", True)]
    instructions = _value(parts["tasks"].get("tasks"))
    if not isinstance(instructions, list) or not all(isinstance(t, str) for t in instructions) or not instructions:
        return None, [Problem(name, "gen_tasks", "tasks is not a non-empty list of instructions", True)]
    schema = _schema(name, parts["db"], problems)
    if not schema:
        return None, problems + [Problem(name, "gen_db", "no table DDL", True)]
    try:
        schema, seed = build_seed(name, schema, parts["sample"], problems)
    except ValueError as e:
        return None, problems + [Problem(name, "gen_sample", str(e), True)]
    if not seed:
        return None, problems + [Problem(name, "gen_db", "no table could be created", True)]

    tools, app = [], None
    if "spec" in parts and "envs" in parts and isinstance(parts["envs"].get("full_code"), str):
        seen = set()
        for g in (_value(parts["spec"].get("api_spec")) or {}).get("api_groups", []):
            for ep in g.get("endpoints", []) if isinstance(g, dict) else []:
                try:
                    tool = tool_from_endpoint(ep)
                except ValueError as e:
                    problems.append(Problem(name, "gen_spec", f"{e}; tool skipped", False))
                    continue
                if tool.name in seen:
                    problems.append(Problem(name, "gen_spec", f"duplicate operation_id {tool.name}; the second is skipped", False))
                    continue
                seen.add(tool.name)
                tools.append(tool)
        app = App("fastapi", parts["envs"]["full_code"]) if tools else None
    else:
        lacking = " and ".join(FILES[p] for p in ("spec", "envs") if p not in parts)
        problems.append(Problem(name, "tools", f"no tools: no row in {lacking}; imported as a database plus its verifiers", False))

    tasks = tuple(Task(f"task-{i}", text, _check(name, i, parts, problems)) for i, text in enumerate(instructions))
    if not tools and all(t.check.kind == "llm" for t in tasks):
        return None, problems + [Problem(name, "files", "nothing to run: no server code and no verifiers", True)]
    scen = _value(parts.get("scenario", {}).get("description")) if "scenario" in parts else None
    description = scen if isinstance(scen, str) and scen else f"AgentWorldModel-1K scenario {name}"
    world = World(Scenario(name, description, _category(name)), tuple(schema), seed, tuple(tools), tasks, app=app)
    return world, problems


def import_awm(directory: str | Path, *, on_scenario: Callable[[str], None] | None = None) -> ImportReport:
    """Convert every scenario of an AWM directory; problems are reported, never raised."""
    by_scenario, problems = read_awm(directory)
    report = ImportReport(problems=problems, scenarios=len(by_scenario))
    for name in sorted(by_scenario):
        world, found = convert_scenario(name, by_scenario[name])
        report.problems += found
        if world is not None:
            report.worlds.append(world)
            report.sources[world.id] = name
        if on_scenario:
            on_scenario(name)
    return report

