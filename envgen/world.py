"""The world format: one JSON document per environment, content-addressed.

A world holds a scenario, SQLite DDL, seed rows, tools and tasks. Everything here is
plain data (frozen dataclasses) with a lossless JSON round trip; executing tools and
checks lives in `envgen.sqltool`, `envgen.checks` and `envgen.sandbox`.

Shape of the JSON document (format "awmjax.world/1"):

    {"format": "awmjax.world/1", "id": "<slug>-<hash12>",
     "scenario": {"name", "description", "category"},
     "schema": ["CREATE TABLE ...", ...],
     "seed": {"<table>": {"columns": [...], "rows": [[...], ...]}, ...},
     "tools": [{"name", "description", "parameters": <JSON Schema object>,
                "impl": {"kind": "sql", "steps": [<step>, ...]}
                      | {"kind": "python", "source": "...", "entry": "<function>"}
                      | {"kind": "fastapi", "method": "GET", "path": "/api/x/{id}",
                         "params": {"<name>": "path"|"query"|"body"}}}],
     "tasks": [{"id", "instruction", "check": <check>, "gold": [{"tool", "arguments"}] | null,
                "answer": <expected final answer> | null, "tags": [...]}],
     "app": {"kind": "fastapi", "source": "..."}}      (optional: the server of "fastapi" tools)

A SQL step is {"op": "guard"|"read"|"write", "sql": "...", ...}: values are bound by
name (`:param`), never interpolated. See `envgen.sqltool` for the step semantics.
A check is {"kind": "sql", "assertions": [...], "answer": {...}|null, "changes": {...}}
or {"kind": "python", "source": "def verify(initial_db, final_db, final_answer): ..."}
or {"kind": "awm", "source": ..., "entry": ..., "evidence": {...}} (an imported AWM verifier, see
`envgen.awm_import`) or {"kind": "llm"} (no code check: only the LLM judge can judge the task).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

FORMAT = "awmjax.world/1"
STEP_OPS = ("guard", "read", "write")
GUARD_EXPECT = ("exists", "absent", "true")
READ_SHAPES = ("rows", "row", "value", "count")
ASSERT_OPS = ("==", "!=", ">=", "<=", ">", "<")
CHANGE_OPS = ("insert", "update", "delete")
TOOL_KINDS = ("sql", "python", "fastapi")
CHECK_KINDS = ("sql", "python", "awm", "llm")
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
PARAM_LOCATIONS = ("path", "query", "body")
VERDICTS = ("complete", "partial", "incomplete")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class WorldFormatError(ValueError):
    """A world document is malformed; the message names the file, world, field and problem."""

    def __init__(self, problem: str, *, field: str = "", world: str = "", source: str = ""):
        self.problem, self.field, self.world, self.source = problem, field, world, source
        where = ", ".join(
            p for p in (source and f"file {source}", world and f"world {world}", field and f"field {field}") if p
        )
        super().__init__(f"{where}: {problem}" if where else problem)


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Scenario:
    """What the world is about: a name, a description and a category (domain archetype)."""

    name: str
    description: str
    category: str


@dataclass(frozen=True)
class SqlStep:
    """One parameterized SQL statement of a declarative tool.

    op="guard": runs `sql`; fails the call with `error` unless the result is as `expect`
      says ("exists": at least one row, "absent": no rows, "true": first value truthy).
    op="read":  runs `sql`; puts the result under `output` in the tool result, shaped as
      `shape` ("rows" list of objects, "row" one object or null, "value", "count").
    op="write": runs an INSERT / UPDATE / DELETE. `save` names the new row id (or the
      first RETURNING value) so later steps may bind it as `:name`.
    """

    op: str
    sql: str
    error: str | None = None
    expect: str | None = None
    output: str | None = None
    shape: str | None = None
    save: str | None = None


@dataclass(frozen=True)
class ToolImpl:
    """A tool's implementation: declarative SQL steps, untrusted Python source, or a route of the world's app.

    kind="fastapi": `method` and `path` name a route of the world's FastAPI app (`World.app`);
    `params` says where each argument goes ("path", "query" or "body").
    """

    kind: str  # "sql" | "python" | "fastapi"
    steps: tuple[SqlStep, ...] = ()
    source: str | None = None
    entry: str | None = None
    method: str | None = None
    path: str | None = None
    params: dict[str, str] | None = None


@dataclass(frozen=True)
class Tool:
    """A callable tool: name, description, JSON-Schema parameters, implementation."""

    name: str
    description: str
    parameters: dict[str, Any]
    impl: ToolImpl

    def openai_spec(self) -> dict[str, Any]:
        """The OpenAI function-calling shape, derived from this one declaration."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


@dataclass(frozen=True)
class Assertion:
    """An SQL query over the final state whose single value is compared with `value`."""

    sql: str
    op: str
    value: Any
    description: str = ""


@dataclass(frozen=True)
class Check:
    """How a task is judged by code.

    kind="sql": `assertions` over the final state; `answer` constraints on the final
      answer text ({"contains": [...]} case-insensitive); `changes` limits what the
      episode may change: {"tables": {"<table>": {"ops": [...], "pks": [...]|null,
      "columns": [...]|null}}}; tables not named may not change. `changes=None` means
      no limit.
    kind="python": `source` defines verify(initial_db, final_db, final_answer) returning
      {"result": "complete"|"partial"|"incomplete", "evidence": ...}; run sandboxed.
    kind="awm": an AWM verifier taking database paths: `source` defines `entry`(initial_db_path,
      final_db_path, final_answer) returning {"result": ...} (AWM's pure-code mode; may be
      absent), and `evidence` ({"source", "entry", "success_criteria", "failure_criteria"})
      holds AWM's code-augmented verifier, whose output is evidence for the LLM judge.
    kind="llm": no code check; the task is judged by the LLM judge only.
    """

    kind: str
    assertions: tuple[Assertion, ...] = ()
    answer: dict[str, Any] | None = None
    changes: dict[str, Any] | None = None
    source: str | None = None
    entry: str | None = None
    evidence: dict[str, Any] | None = None


@dataclass(frozen=True)
class Call:
    """One tool call of a gold sequence."""

    tool: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Task:
    """An instruction for the agent, its check, and where known a gold call sequence."""

    id: str
    instruction: str
    check: Check
    gold: tuple[Call, ...] | None = None
    answer: str | None = None
    tags: tuple[str, ...] = ()

    @property
    def difficulty(self) -> int:
        """Number of calls in the gold sequence (0 when unknown)."""
        return len(self.gold) if self.gold else 0


@dataclass(frozen=True)
class App:
    """The server program of a world's "fastapi" tools (AWM's generated FastAPI + SQLAlchemy file)."""

    kind: str  # "fastapi"
    source: str


@dataclass(frozen=True)
class World:
    """One environment. `id` is a readable slug plus a hash of the canonical content."""

    scenario: Scenario
    schema: tuple[str, ...]
    seed: dict[str, dict[str, Any]]
    tools: tuple[Tool, ...]
    tasks: tuple[Task, ...]
    id: str = ""
    app: App | None = None

    _tools_by_name: dict[str, Tool] = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        if not self.id:
            object.__setattr__(self, "id", compute_id(self))
        object.__setattr__(self, "_tools_by_name", {t.name: t for t in self.tools})

    def tool(self, name: str) -> Tool | None:
        """The tool called `name`, or None."""
        return self._tools_by_name.get(name)

    def task(self, task_id: str) -> Task:
        """The task with id `task_id` (KeyError names the world if absent)."""
        for t in self.tasks:
            if t.id == task_id:
                return t
        raise KeyError(f"world {self.id} has no task {task_id!r}")

    @property
    def tables(self) -> tuple[str, ...]:
        """Seeded table names in seed order."""
        return tuple(self.seed)

    def seed_row_count(self) -> int:
        """Total number of seed rows."""
        return sum(len(t["rows"]) for t in self.seed.values())


# --------------------------------------------------------------------------- to JSON


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None and v != ()}


def to_dict(world: World) -> dict[str, Any]:
    """The JSON document of a world (with its id)."""
    body = _content(world)
    return {"format": FORMAT, "id": world.id, **body}


def _content(world: World) -> dict[str, Any]:
    def step(s: SqlStep):
        return _drop_none(dataclasses.asdict(s))

    def impl(i: ToolImpl):
        if i.kind == "sql":
            return {"kind": "sql", "steps": [step(s) for s in i.steps]}
        if i.kind == "fastapi":
            return {"kind": "fastapi", "method": i.method, "path": i.path, "params": dict(i.params or {})}
        return _drop_none({"kind": i.kind, "source": i.source, "entry": i.entry})

    def check(c: Check):
        if c.kind == "python":
            return {"kind": "python", "source": c.source}
        if c.kind in ("awm", "llm"):
            return _drop_none({"kind": c.kind, "source": c.source, "entry": c.entry, "evidence": c.evidence})
        return _drop_none(
            {
                "kind": "sql",
                "assertions": [_drop_none(dataclasses.asdict(a)) | {"value": a.value} for a in c.assertions],
                "answer": c.answer,
                "changes": c.changes,
            }
        )

    def task(t: Task):
        d = {"id": t.id, "instruction": t.instruction, "check": check(t.check)}
        d["gold"] = None if t.gold is None else [{"tool": c.tool, "arguments": c.arguments} for c in t.gold]
        if t.answer is not None:
            d["answer"] = t.answer
        if t.tags:
            d["tags"] = list(t.tags)
        return d

    content = {
        "scenario": dataclasses.asdict(world.scenario),
        "schema": list(world.schema),
        "seed": {k: {"columns": list(v["columns"]), "rows": [list(r) for r in v["rows"]]} for k, v in world.seed.items()},
        "tools": [
            {"name": t.name, "description": t.description, "parameters": t.parameters, "impl": impl(t.impl)}
            for t in world.tools
        ],
        "tasks": [task(t) for t in world.tasks],
    }
    if world.app is not None:  # only when present, so worlds without one keep their ids
        content["app"] = dataclasses.asdict(world.app)
    return content


def canonical_json(obj: Any) -> str:
    """Canonical JSON text: sorted keys, no spaces, UTF-8 kept (the hash input)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def slugify(text: str) -> str:
    """A lowercase ASCII slug of at most 40 characters."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return (slug[:40].rstrip("-")) or "world"


def compute_id(world: World) -> str:
    """The content address: slug of the scenario name plus 12 hex digits of SHA-256."""
    digest = hashlib.sha256(canonical_json(_content(world)).encode()).hexdigest()[:12]
    return f"{slugify(world.scenario.name)}-{digest}"


def dumps(world: World, *, indent: int | None = None) -> str:
    """The world as JSON text (canonical when indent is None)."""
    if indent is None:
        return canonical_json(to_dict(world))
    return json.dumps(to_dict(world), indent=indent, ensure_ascii=False)


# --------------------------------------------------------------------------- from JSON


class _Reader:
    """Walks a JSON document, raising WorldFormatError with the field path on problems."""

    def __init__(self, world: str, source: str):
        self.world, self.source = world, source

    def fail(self, field: str, problem: str):
        raise WorldFormatError(problem, field=field, world=self.world, source=self.source)

    def get(self, d: dict, key: str, path: str, types, *, required=True, default=None):
        if not isinstance(d, dict):
            self.fail(path, f"expected an object, got {type(d).__name__}")
        if key not in d or d[key] is None:
            if required:
                self.fail(f"{path}.{key}" if path else key, "missing (required)")
            return default
        v = d[key]
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in _as_tuple(types)):
            want = " or ".join(t.__name__ for t in _as_tuple(types))
            self.fail(f"{path}.{key}" if path else key, f"expected {want}, got {type(v).__name__}")
        return v

    def name(self, v: str, path: str) -> str:
        if not _NAME_RE.match(v):
            self.fail(path, f"{v!r} is not a valid name (letters, digits, underscore; not starting with a digit)")
        return v

    def choice(self, v: Any, allowed: tuple, path: str):
        if v not in allowed:
            self.fail(path, f"{v!r} is not one of {', '.join(map(str, allowed))}")
        return v


def _as_tuple(t):
    return t if isinstance(t, tuple) else (t,)


def from_dict(doc: Any, *, source: str = "", verify_id: bool = True) -> World:
    """Build a World from its JSON document, with a clear error for any malformed field."""
    wid = doc.get("id", "") if isinstance(doc, dict) else ""
    r = _Reader(str(wid), source)
    if not isinstance(doc, dict):
        r.fail("", f"a world must be a JSON object, got {type(doc).__name__}")
    fmt = r.get(doc, "format", "", str)
    if fmt != FORMAT:
        r.fail("format", f"unsupported format {fmt!r}; this awmjax reads {FORMAT!r}")

    sc = r.get(doc, "scenario", "", dict)
    scenario = Scenario(
        name=r.get(sc, "name", "scenario", str),
        description=r.get(sc, "description", "scenario", str),
        category=r.get(sc, "category", "scenario", str),
    )
    schema = r.get(doc, "schema", "", list)
    for i, ddl in enumerate(schema):
        if not isinstance(ddl, str) or not ddl.strip():
            r.fail(f"schema[{i}]", "each schema entry must be a non-empty SQL string")

    seed_doc = r.get(doc, "seed", "", dict)
    seed: dict[str, dict[str, Any]] = {}
    for table, spec in seed_doc.items():
        path = f"seed.{table}"
        cols = r.get(spec, "columns", path, list)
        rows = r.get(spec, "rows", path, list)
        for j, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != len(cols):
                r.fail(f"{path}.rows[{j}]", f"expected a list of {len(cols)} values (one per column)")
        seed[table] = {"columns": tuple(cols), "rows": tuple(tuple(row) for row in rows)}

    tools = []
    seen: set[str] = set()
    for i, td in enumerate(r.get(doc, "tools", "", list)):
        path = f"tools[{i}]"
        name = r.name(r.get(td, "name", path, str), f"{path}.name")
        if name in seen:
            r.fail(f"{path}.name", f"duplicate tool name {name!r}")
        seen.add(name)
        params = r.get(td, "parameters", path, dict)
        if params.get("type") != "object":
            r.fail(f"{path}.parameters", 'must be a JSON Schema with "type": "object"')
        tools.append(
            Tool(name, r.get(td, "description", path, str), params, _read_impl(r, r.get(td, "impl", path, dict), f"{path}.impl"))
        )

    tasks = []
    seen_tasks: set[str] = set()
    for i, tk in enumerate(r.get(doc, "tasks", "", list)):
        path = f"tasks[{i}]"
        tid = r.get(tk, "id", path, str)
        if tid in seen_tasks:
            r.fail(f"{path}.id", f"duplicate task id {tid!r}")
        seen_tasks.add(tid)
        gold_doc = r.get(tk, "gold", path, list, required=False)
        gold = None
        if gold_doc is not None:
            gold = tuple(
                Call(r.get(c, "tool", f"{path}.gold[{j}]", str), r.get(c, "arguments", f"{path}.gold[{j}]", dict))
                for j, c in enumerate(gold_doc)
            )
        tags = r.get(tk, "tags", path, list, required=False, default=[])
        tasks.append(
            Task(
                id=tid,
                instruction=r.get(tk, "instruction", path, str),
                check=_read_check(r, r.get(tk, "check", path, dict), f"{path}.check"),
                gold=gold,
                answer=r.get(tk, "answer", path, str, required=False),
                tags=tuple(tags),
            )
        )

    app = None
    app_doc = r.get(doc, "app", "", dict, required=False)
    if app_doc is not None:
        app = App(r.choice(r.get(app_doc, "kind", "app", str), ("fastapi",), "app.kind"), r.get(app_doc, "source", "app", str))
    if app is None and any(t.impl.kind == "fastapi" for t in tools):
        r.fail("app", 'the world has "fastapi" tools but no app; add {"kind": "fastapi", "source": ...}')
    world = World(scenario, tuple(schema), seed, tuple(tools), tuple(tasks), app=app)
    if verify_id and wid and wid != world.id:
        r.fail("id", f"id does not match the content (expected {world.id}); the file was edited after it was written")
    return world


def _read_impl(r: _Reader, d: dict, path: str) -> ToolImpl:
    kind = r.choice(r.get(d, "kind", path, str), TOOL_KINDS, f"{path}.kind")
    if kind == "python":
        return ToolImpl("python", source=r.get(d, "source", path, str), entry=r.get(d, "entry", path, str))
    if kind == "fastapi":
        params = r.get(d, "params", path, dict)
        for name, where in params.items():
            r.choice(where, PARAM_LOCATIONS, f"{path}.params.{name}")
        route = r.get(d, "path", path, str)
        if not route.startswith("/"):
            r.fail(f"{path}.path", f"{route!r} must start with '/'")
        method = r.choice(r.get(d, "method", path, str), HTTP_METHODS, f"{path}.method")
        return ToolImpl("fastapi", method=method, path=route, params=params)
    steps = []
    raw = r.get(d, "steps", path, list)
    if not raw:
        r.fail(f"{path}.steps", "a SQL tool needs at least one step")
    for j, s in enumerate(raw):
        sp = f"{path}.steps[{j}]"
        op = r.choice(r.get(s, "op", sp, str), STEP_OPS, f"{sp}.op")
        step = SqlStep(
            op=op,
            sql=r.get(s, "sql", sp, str),
            error=r.get(s, "error", sp, str, required=op == "guard"),
            expect=r.get(s, "expect", sp, str, required=op == "guard"),
            output=r.get(s, "output", sp, str, required=False),
            shape=r.get(s, "shape", sp, str, required=op == "read"),
            save=r.get(s, "save", sp, str, required=False),
        )
        if op == "guard":
            r.choice(step.expect, GUARD_EXPECT, f"{sp}.expect")
        if op == "read":
            r.choice(step.shape, READ_SHAPES, f"{sp}.shape")
            if not step.output:
                r.fail(f"{sp}.output", "a read step must name its output key")
        if step.save:
            r.name(step.save, f"{sp}.save")
        steps.append(step)
    return ToolImpl("sql", steps=tuple(steps))


def _read_check(r: _Reader, d: dict, path: str) -> Check:
    kind = r.choice(r.get(d, "kind", path, str), CHECK_KINDS, f"{path}.kind")
    if kind == "python":
        return Check("python", source=r.get(d, "source", path, str))
    if kind == "llm":
        return Check("llm")
    if kind == "awm":
        source = r.get(d, "source", path, str, required=False)
        evidence = r.get(d, "evidence", path, dict, required=False)
        if evidence is not None:
            r.get(evidence, "source", f"{path}.evidence", str)
            r.get(evidence, "entry", f"{path}.evidence", str)
        if source is None and evidence is None:
            r.fail(path, 'an "awm" check needs a verifier source, an evidence verifier, or both (use {"kind": "llm"} for none)')
        return Check("awm", source=source, entry=r.get(d, "entry", path, str, required=source is not None), evidence=evidence)
    assertions = []
    for j, a in enumerate(r.get(d, "assertions", path, list, required=False, default=[])):
        ap = f"{path}.assertions[{j}]"
        if "value" not in a:
            r.fail(f"{ap}.value", "missing (required; use null to compare with NULL)")
        assertions.append(
            Assertion(
                sql=r.get(a, "sql", ap, str),
                op=r.choice(r.get(a, "op", ap, str), ASSERT_OPS, f"{ap}.op"),
                value=a["value"],
                description=r.get(a, "description", ap, str, required=False, default=""),
            )
        )
    answer = r.get(d, "answer", path, dict, required=False)
    if answer is not None:
        contains = r.get(answer, "contains", f"{path}.answer", list)
        if not all(isinstance(x, str) and x for x in contains):
            r.fail(f"{path}.answer.contains", "must be a list of non-empty strings")
    changes = r.get(d, "changes", path, dict, required=False)
    if changes is not None:
        tables = r.get(changes, "tables", f"{path}.changes", dict)
        for t, rule in tables.items():
            rp = f"{path}.changes.tables.{t}"
            for op in r.get(rule, "ops", rp, list):
                r.choice(op, CHANGE_OPS, f"{rp}.ops")
            r.get(rule, "pks", rp, list, required=False)
            r.get(rule, "columns", rp, list, required=False)
    if not assertions and answer is None:
        r.fail(path, "a SQL check needs at least one assertion or an answer constraint")
    return Check("sql", assertions=tuple(assertions), answer=answer, changes=changes)


def loads(text: str, *, source: str = "") -> World:
    """Parse one world from JSON text."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise WorldFormatError(f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})", source=source) from None
    return from_dict(doc, source=source)


def load(path: str) -> World:
    """Read one world from a JSON file."""
    with open(path, encoding="utf-8") as f:
        return loads(f.read(), source=str(path))
