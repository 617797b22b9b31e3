"""The AWM synthesis stages, each a function from the previous stage's output to the next.

    scenario -> tasks -> schema -> seed -> tool spec -> tool implementations -> checks (a World)

A stage renders its prompt (`prompts/<stage>.md`), asks the model, extracts JSON
(`envgen.jsonrepair`), and puts the result through the validation gate
(`envgen.gate`). On failure the problems are summarized back to the model, which
answers again (at most `max_retries` times, as in AWM); a stage that still fails
raises `StageFailed` with the last problems, and its world goes to the rejects.
The partial world travels between stages as a `Draft`.
"""

from __future__ import annotations

import dataclasses
import json
import string
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from envgen import gate, sqlcheck
from envgen.args import compile_validator
from envgen.jsonrepair import JsonExtractError, extract_json
from envgen.runtime import Slot
from envgen.synth.client import LLM, EndpointError, TransientError
from envgen.world import _NAME_RE, FORMAT, Scenario, World, WorldFormatError, from_dict

PROMPTS = Path(__file__).with_name("prompts")
STAGES = ("scenarios", "tasks", "schema", "seed", "toolspec", "tools", "checks")
MAX_ERRORS_SHOWN = 12


class StageFailed(Exception):
    """A stage's output still failed validation after every retry."""

    def __init__(self, stage: str, attempts: int, errors: list[str], *, endpoint: bool = False):
        # attempts: answers received; endpoint: the endpoint failed (asking again will not help)
        self.stage, self.attempts, self.errors, self.endpoint = stage, attempts, errors, endpoint
        super().__init__(f"stage {stage} failed after {attempts} attempts: {'; '.join(errors[:3])}")


@dataclass
class Context:
    """What every stage needs: the client, a gate slot, and the bounds."""

    llm: LLM
    max_retries: int = 5
    tasks_per_world: int = 10
    slot: Slot = field(default_factory=Slot)
    dedup_method: str | None = None  # "embeddings" or "lexical", once known
    notes: list[str] = field(default_factory=list)  # things the run summary should mention

    def __post_init__(self):
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.tasks_per_world < 1:
            raise ValueError(f"tasks_per_world must be >= 1, got {self.tasks_per_world}")


@dataclass(frozen=True)
class Draft:
    """A world under construction; each stage fills the next field."""

    scenario: Scenario
    tasks: tuple[str, ...] = ()  # instructions, ids t01, t02, ... by position
    schema: tuple[str, ...] = ()
    seed: dict[str, dict[str, Any]] = field(default_factory=dict)
    tool_specs: tuple[dict[str, Any], ...] = ()  # name, description, parameters, reads, writes
    tools: tuple[dict[str, Any], ...] = ()  # world-format tool documents

    def task_ids(self) -> list[str]:
        return [f"t{i + 1:02d}" for i in range(len(self.tasks))]

    def doc(self, tasks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The world JSON document so far (tasks empty until checks exist)."""
        return {
            "format": FORMAT,
            "scenario": dataclasses.asdict(self.scenario),
            "schema": list(self.schema),
            "seed": {t: {"columns": list(s["columns"]), "rows": [list(r) for r in s["rows"]]} for t, s in self.seed.items()},
            "tools": [dict(t) for t in self.tools],
            "tasks": tasks or [],
        }


# --------------------------------------------------------------------------- prompting


@lru_cache(maxsize=None)
def prompt_parts(stage: str) -> tuple[string.Template, string.Template]:
    """A stage's (system, user) templates from its prompt file."""
    text = (PROMPTS / f"{stage}.md").read_text(encoding="utf-8")
    system, sep, user = text.partition("\n=== user ===\n")
    return string.Template(system.strip()), string.Template(user.strip() if sep else "")


def messages_for(stage: str, **values: Any) -> list[dict[str, str]]:
    """The opening messages of a stage, with its template values filled in."""
    system, user = prompt_parts(stage)
    return [{"role": "system", "content": system.substitute(values)}, {"role": "user", "content": user.substitute(values)}]


def summarize_errors(errors: list[str]) -> str:
    """The problems as a short bullet list for the model (duplicates merged, long lists cut)."""
    seen: list[str] = []
    for e in errors:
        e = " ".join(str(e).split())[:300]
        if e not in seen:
            seen.append(e)
    lines = [f"- {e}" for e in seen[:MAX_ERRORS_SHOWN]]
    if len(seen) > MAX_ERRORS_SHOWN:
        lines.append(f"- ... and {len(seen) - MAX_ERRORS_SHOWN} more problems of the same kinds")
    return "\n".join(lines)


def repair_message(errors: list[str]) -> dict[str, str]:
    """The user turn that sends a refused answer's problems back to the model."""
    text = (PROMPTS / "repair.md").read_text(encoding="utf-8")
    return {"role": "user", "content": string.Template(text.strip()).substitute(errors=summarize_errors(errors))}


Accept = Callable[[Any], "tuple[Any, list[str]]"]


# The key under which a stage's answer holds its list; a bare JSON list is read as that list.
LIST_KEYS = {"scenarios": "scenarios", "tasks": "tasks", "schema": "schema", "toolspec": "tools", "tools": "tools", "checks": "tasks"}


async def run_stage(ctx: Context, stage: str, messages: list[dict[str, str]], accept: Accept) -> Any:
    """Ask, extract JSON, validate with `accept`; on problems send them back and ask again (bounded)."""
    st = ctx.llm.stage(stage)
    base, convo, errors = messages, messages, []
    for attempt in range(ctx.max_retries + 1):
        try:
            c = await ctx.llm.chat(stage, convo, attempt=attempt)
        except (EndpointError, TransientError) as e:  # retries already spent, or not worth spending
            st.failures += 1
            raise StageFailed(stage, attempt, [f"endpoint: {e}"], endpoint=True) from e
        try:
            doc = extract_json(c.text, want=(dict, list) if stage in LIST_KEYS else dict)
            value, errors = accept({LIST_KEYS[stage]: doc} if isinstance(doc, list) else doc)
        except JsonExtractError as e:
            errors = [str(e)]
        except Exception as e:  # noqa: BLE001 - model output may break a validator in any way; that is a refusal
            errors = [f"the answer could not be checked ({type(e).__name__}: {e})"]
        if not errors:
            st.passed += 1
            return value
        if c.finish_reason == "length":
            errors.append("the answer was cut off at the length limit; write a shorter answer")
        if attempt < ctx.max_retries:
            st.repairs += 1
            # Only the latest refused answer is kept, so the conversation stays bounded.
            convo = base + [{"role": "assistant", "content": c.text}, repair_message(errors)]
    st.failures += 1
    raise StageFailed(stage, ctx.max_retries + 1, errors)


def _json(x: Any) -> str:
    return json.dumps(x, ensure_ascii=False, indent=1)


def _numbered(draft: Draft) -> str:
    return "\n".join(f"{tid}: {text}" for tid, text in zip(draft.task_ids(), draft.tasks))


def _gate(check: Callable[[], list]) -> list[str]:
    """Gate failures as strings; a validator crash on model output is reported, not raised."""
    try:
        return [str(f) for f in check()]
    except Exception as e:  # noqa: BLE001
        return [f"the world could not be loaded for validation ({type(e).__name__}: {e})"]


def _scenario_vars(draft: Draft) -> dict[str, str]:
    s = draft.scenario
    return {"name": s.name, "category": s.category, "description": s.description}


def _items(value: dict, key: str) -> tuple[list, list[str]]:
    items = value.get(key)
    if not isinstance(items, list) or not items:
        return [], [f'the answer needs a non-empty list under "{key}"']
    return items, []


# --------------------------------------------------------------------------- stage 2: tasks


async def tasks_stage(ctx: Context, draft: Draft) -> Draft:
    """About `tasks_per_world` specific, tool-solvable task instructions for the scenario."""
    n = ctx.tasks_per_world

    def accept(value):
        items, errors = _items(value, "tasks")
        out: list[str] = []
        for i, t in enumerate(items):
            text = t.get("instruction") if isinstance(t, dict) else t
            if not isinstance(text, str) or len(text.split()) < 3:
                errors.append(f"tasks[{i}] must be a task sentence (a string of at least three words)")
            elif text.strip().lower() not in {o.lower() for o in out}:
                out.append(text.strip())
        if not errors and len(out) < n:
            errors.append(f"gave {len(out)} distinct tasks; exactly {n} are needed")
        return out[:n], errors

    tasks = await run_stage(ctx, "tasks", messages_for("tasks", n=n, **_scenario_vars(draft)), accept)
    return dataclasses.replace(draft, tasks=tuple(tasks))


# --------------------------------------------------------------------------- stage 3: schema


async def schema_stage(ctx: Context, draft: Draft) -> Draft:
    """SQLite DDL implied by the tasks; it must parse and execute."""

    def accept(value):
        items, errors = _items(value, "schema")
        if errors:
            return None, errors
        if not all(isinstance(s, str) and s.strip() for s in items):
            return None, ['every entry of "schema" must be one SQL statement as a string']
        schema, _ = sqlcheck.parse_schema(items)
        if not schema.tables:
            return None, ["the schema has no CREATE TABLE statement"]
        d = dataclasses.replace(draft, schema=tuple(items))
        world = World(d.scenario, d.schema, {}, (), ())
        return d, _gate(lambda: gate.check_sql(world) + gate.check_seed(world, ctx.slot)[0])

    vars = _scenario_vars(draft) | {"tasks": _numbered(draft)}
    return await run_stage(ctx, "schema", messages_for("schema", **vars), accept)


# --------------------------------------------------------------------------- stage 4: seed


def _seed_from_rows(rows_by_table: dict, table_order: list[str]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """World-format seed from {table: [{column: value}]}, tables in schema order (parents first)."""
    errors, seed = [], {}
    ordered = sorted(rows_by_table, key=lambda t: table_order.index(t) if t in table_order else len(table_order))
    for table in ordered:
        rows = rows_by_table[table]
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            errors.append(f"rows of {table} must be a list of objects (column -> value)")
            continue
        if not rows:
            continue
        columns = list(rows[0])
        problem = None
        for j, r in enumerate(rows):
            bad = [k for k, v in r.items() if isinstance(v, (dict, list))]
            if set(r) != set(columns):
                problem = f"{table} row {j} has keys {sorted(r)}, but row 0 has {sorted(columns)}; give every row the same keys"
            elif bad:
                problem = f"{table} row {j}: column {bad[0]} holds a list or object; values must be scalars"
            if problem:
                break
        if problem:
            errors.append(problem)
            continue
        seed[table] = {"columns": tuple(columns), "rows": tuple(tuple(r[c] for c in columns) for r in rows)}
    return seed, errors


async def seed_stage(ctx: Context, draft: Draft) -> Draft:
    """Seed rows satisfying the tasks' preconditions; they must load with foreign keys on."""
    table_order = list(sqlcheck.parse_schema(draft.schema)[0].tables)

    def accept(value):
        rows = value.get("rows")
        if not isinstance(rows, dict) or not rows:
            return None, ['the answer needs an object of tables under "rows"']
        seed, errors = _seed_from_rows(rows, table_order)
        if errors:
            return None, errors
        if not seed:
            return None, ["every table is empty; the tasks need data"]
        d = dataclasses.replace(draft, seed=seed)
        world = World(d.scenario, d.schema, d.seed, (), ())
        return d, _gate(lambda: gate.check_sql(world) + gate.check_seed(world, ctx.slot)[0])

    vars = _scenario_vars(draft) | {"schema": "\n".join(draft.schema), "tasks": _numbered(draft)}
    return await run_stage(ctx, "seed", messages_for("seed", **vars), accept)


# --------------------------------------------------------------------------- stage 5: tools


async def toolspec_stage(ctx: Context, draft: Draft) -> Draft:
    """The tool specification: names, parameter schemas, and the tables each reads and writes."""
    tables = set(sqlcheck.parse_schema(draft.schema)[0].tables)

    def accept(value):
        items, errors = _items(value, "tools")
        specs, names = [], set()
        for i, t in enumerate(items):
            if not isinstance(t, dict):
                errors.append(f"tools[{i}] must be an object")
                continue
            name, params = t.get("name"), t.get("parameters")
            where = f"tool {name!r}" if isinstance(name, str) else f"tools[{i}]"
            if not isinstance(name, str) or not _NAME_RE.match(name):
                errors.append(f"{where}: the name must be a snake_case identifier")
            elif name in names:
                errors.append(f"{where}: defined twice")
            names.add(name)
            if not isinstance(t.get("description"), str) or not t["description"].strip():
                errors.append(f"{where}: needs a description")
            if not isinstance(params, dict) or params.get("type") != "object" or not isinstance(params.get("properties", {}), dict):
                errors.append(f'{where}: parameters must be a JSON Schema object ("type": "object", "properties": {{...}})')
                continue
            missing = set(params.get("required", [])) - set(params.get("properties", {}))
            if missing:
                errors.append(f"{where}: required parameters {sorted(missing)} are not in properties")
            try:
                compile_validator(params)
            except Exception as e:  # noqa: BLE001 - a schema the validator cannot use
                errors.append(f"{where}: the parameter schema is not usable ({e})")
            for key in ("reads", "writes"):
                named = t.get(key, [])
                if not isinstance(named, list):
                    errors.append(f"{where}: {key} must be a list of table names")
                    continue
                unknown = [x for x in named if x not in tables]
                if unknown:
                    errors.append(f"{where}: {key} names unknown tables {unknown}; the tables are {sorted(tables)}")
            specs.append({k: t.get(k, [] if k in ("reads", "writes") else None) for k in ("name", "description", "parameters", "reads", "writes")})
        return dataclasses.replace(draft, tool_specs=tuple(specs)), errors

    vars = _scenario_vars(draft) | {"schema": "\n".join(draft.schema), "tasks": _numbered(draft)}
    return await run_stage(ctx, "toolspec", messages_for("toolspec", **vars), accept)


async def tools_stage(ctx: Context, draft: Draft) -> Draft:
    """Implementations of the specified tools as declarative SQL steps (Python only where needed)."""
    specs = {s["name"]: s for s in draft.tool_specs}

    def accept(value):
        items, errors = _items(value, "tools")
        impls: dict[str, Any] = {}
        for i, t in enumerate(items):
            if not isinstance(t, dict) or not isinstance(t.get("name"), str) or not isinstance(t.get("impl"), dict):
                errors.append(f'tools[{i}] must be {{"name": ..., "impl": {{...}}}}')
            elif t["name"] not in specs:
                errors.append(f"tool {t['name']!r} is not in the specification; implement only {sorted(specs)}")
            else:
                impls[t["name"]] = t["impl"]
        missing = [n for n in specs if n not in impls]
        if missing:
            errors.append(f"no implementation for {missing}")
        if errors:
            return None, errors
        tools = tuple(
            {"name": n, "description": s["description"], "parameters": s["parameters"], "impl": impls[n]} for n, s in specs.items()
        )
        d = dataclasses.replace(draft, tools=tools)
        try:
            world = from_dict(d.doc(), verify_id=False)
        except WorldFormatError as e:
            return None, [str(e)]
        return d, _gate(lambda: gate.check_sql(world) + gate.check_seed(world, ctx.slot)[0] + _check_tools(world, ctx.slot))

    vars = _scenario_vars(draft) | {"schema": "\n".join(draft.schema), "spec": _json(list(draft.tool_specs))}
    return await run_stage(ctx, "tools", messages_for("tools", **vars), accept)


def _check_tools(world: World, slot: Slot) -> list[gate.Failure]:
    from envgen.runtime import CompiledWorld

    return gate.check_tools(world, CompiledWorld.compile(world), slot)


# --------------------------------------------------------------------------- stage 6: checks


async def checks_stage(ctx: Context, draft: Draft) -> World:
    """A check per task (and a gold sequence where the model can write one); the whole world must pass the gate."""
    ids = draft.task_ids()
    instructions = dict(zip(ids, draft.tasks))

    def accept(value):
        items, errors = _items(value, "tasks")
        by_id: dict[str, dict] = {}
        for i, t in enumerate(items):
            if not isinstance(t, dict) or t.get("id") not in instructions:
                errors.append(f"tasks[{i}] needs an \"id\" among {ids}")
            elif not isinstance(t.get("check"), dict):
                errors.append(f"task {t['id']}: needs a check object")
            else:
                by_id[t["id"]] = t
        missing = [i for i in ids if i not in by_id]
        if missing:
            errors.append(f"no check for tasks {missing}")
        if errors:
            return None, errors
        tasks = []
        for tid in ids:
            t = by_id[tid]
            task = {"id": tid, "instruction": instructions[tid], "check": t["check"], "gold": t.get("gold")}
            if isinstance(t.get("answer"), str) and t["answer"].strip():
                task["answer"] = t["answer"]
            tasks.append(task)
        try:
            world = from_dict(draft.doc(tasks), verify_id=False)
        except WorldFormatError as e:
            return None, [str(e)]
        return world, _gate(lambda: gate.validate_world(world, ctx.slot))

    vars = _scenario_vars(draft) | {
        "schema": "\n".join(draft.schema),
        "seed": _json({t: [dict(zip(s["columns"], r)) for r in s["rows"]] for t, s in draft.seed.items()}),
        "tools": _json([{"name": t["name"], "description": t["description"], "parameters": t["parameters"]} for t in draft.tools]),
        "tasks": _numbered(draft),
    }
    return await run_stage(ctx, "checks", messages_for("checks", **vars), accept)


WORLD_STAGES = (tasks_stage, schema_stage, seed_stage, toolspec_stage, tools_stage, checks_stage)
