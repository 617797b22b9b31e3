"""From model text to tool call to observation: the agent's side of an episode.

A turn holds Qwen3 / Hermes blocks `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`.
Two tool surfaces: "direct" (every world tool by name) and "mcp" (AWM's meta-tools
`list_tools` and `call_tool(tool_name, arguments)`, the inner arguments an object or a
JSON string holding one; `list_tools` exactly once, and first).

Outcome of a turn, the names used everywhere in the pool:
- "answer": no tool call; the text is the agent's final answer (the episode ends);
- "ok" / "tool_error": the tool ran, or the world refused the request clearly;
- "format_error": the agent's fault: invalid JSON, unknown tool, arguments that do
  not match the schema, several calls where one is allowed, `list_tools` misuse;
- "env_error": the environment's fault: deadline, SQLite failure, sandbox refusal,
  a dead worker. Task failure is neither; the verdict judges it.

The standard library only: envgen does not import awmjax (which has its own parser).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

OUTCOMES = ("answer", "ok", "tool_error", "format_error", "env_error")
SURFACES = ("direct", "mcp")
MAX_OBSERVATION_CHARS = 16_000
_OPEN, _CLOSE = "<tool_call>", "</tool_call>"
_FENCE_RE = re.compile(r"\A```[A-Za-z]*\s*|\s*```\Z")


@dataclass(frozen=True)
class Call:
    """One parsed call: a tool name and its arguments (not yet validated)."""

    name: str
    arguments: Any


@dataclass(frozen=True)
class Parsed:
    """A turn read: a call, or a format error, or neither (a final answer in `text`)."""

    call: Call | None
    error: str | None
    text: str


@dataclass(frozen=True)
class Observation:
    """What one turn produced: an outcome name, the text the model sees, the tool called."""

    outcome: str
    text: str
    tool: str | None = None


@dataclass
class Protocol:
    """Per-episode state of the tool surface (mcp: has `list_tools` been called?)."""

    surface: str = "direct"
    max_calls: int = 1
    listed: bool = False
    turns: int = 0

    def __post_init__(self):
        if self.surface not in SURFACES:
            raise ValueError(f"Protocol.surface={self.surface!r}; allowed: {', '.join(SURFACES)}")


def _split(text: str) -> tuple[list[str], str, bool]:
    """The bodies of the <tool_call> blocks, the text outside them, and whether the tags balance."""
    j = text.find(_OPEN)
    if j < 0:  # no call: the answer (balanced unless a stray close tag)
        return [], text, _CLOSE not in text
    k = text.find(_CLOSE, j)
    if k >= 0 and text.find(_OPEN, k + len(_CLOSE)) < 0:  # one block (the usual turn): the loop below, unrolled
        body, rest = text[j + len(_OPEN):k], text[:j] + text[k + len(_CLOSE):]
        return [body], rest, _OPEN not in rest and _CLOSE not in rest and _OPEN not in body
    blocks, outside, i = [], [], 0
    while (j := text.find(_OPEN, i)) >= 0:
        k = text.find(_CLOSE, j)
        if k < 0:
            return blocks, "".join(outside) + text[i:], False
        outside.append(text[i:j])
        blocks.append(text[j + len(_OPEN):k])
        i = k + len(_CLOSE)
    rest = "".join(outside) + text[i:]
    return blocks, rest, _OPEN not in rest and _CLOSE not in rest and not any(_OPEN in b for b in blocks)


def parse(text: str, *, max_calls: int = 1) -> Parsed:
    """Read one turn's text; never raises."""
    name, arguments, error, outside = _read(text, max_calls)
    return Parsed(None if name is None else Call(name, arguments), error, outside)


def _read(text: Any, max_calls: int) -> tuple[str | None, Any, str | None, str]:
    """`parse` without the objects: (tool name or None, arguments, format error or None, text outside the calls)."""
    if not isinstance(text, str):
        return None, None, f"a turn must be text, got {type(text).__name__}", ""
    blocks, outside, balanced = _split(text)
    outside = outside.strip()
    if not balanced:
        return None, None, "unbalanced <tool_call> tags (a call must be closed by </tool_call>)", outside
    if not blocks:
        return None, None, None, outside
    if len(blocks) > max_calls:
        return None, None, f"{len(blocks)} tool calls in one turn; at most {max_calls} allowed", outside
    body = blocks[0].strip()
    if body.startswith("```"):
        body = _FENCE_RE.sub("", body)
    try:
        doc = _loads(body)
    except (json.JSONDecodeError, RecursionError) as e:
        return None, None, f"the tool call is not valid JSON ({getattr(e, 'msg', e)})", outside
    name, arguments, err = _call_parts(doc)
    return name, arguments, err, outside


def call_from_json(doc: Any) -> tuple[Call | None, str | None]:
    """A Call from a decoded `{"name", "arguments"}` object, or a format error message."""
    name, arguments, err = _call_parts(doc)
    return (None, err) if err else (Call(name, arguments), None)


def _call_parts(doc: Any) -> tuple[str | None, Any, str | None]:
    if not isinstance(doc, dict):
        return None, None, f"a tool call must be a JSON object, got {type(doc).__name__}"
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        return None, None, 'a tool call needs a non-empty string "name"'
    if len(doc) > 2 or (len(doc) == 2 and "arguments" not in doc):
        extra = set(doc) - {"name", "arguments"}
        return None, None, f"unexpected keys in the tool call: {', '.join(sorted(extra))}"
    args = doc.get("arguments", {})
    return name, {} if args is None else args, None


def as_call(x: Any) -> Call | str:
    """Normalize a step input: model text stays text; dicts and objects with name/arguments become a Call."""
    if isinstance(x, (str, Call)):
        return x
    if isinstance(x, dict):
        return Call(x.get("name", ""), x.get("arguments", {}))
    if isinstance(x, (tuple, list)) and len(x) == 2:
        return Call(str(x[0]), x[1])
    return Call(getattr(x, "name", ""), getattr(x, "arguments", {}))


def tool_listing(world) -> list[dict[str, Any]]:
    """The world's tools as MCP's list_tools shows them."""
    return [{"name": t.name, "description": t.description, "input_schema": t.parameters} for t in world.tools]


# Built once: json.dumps with options builds a new encoder on every call.
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode
_loads = json.JSONDecoder().decode


def observe(payload: Any, *, limit: int = MAX_OBSERVATION_CHARS) -> str:
    """JSON text of a result, cut at `limit` characters with a marker saying so."""
    text = _encode(payload)
    if len(text) <= limit:
        return text
    return text[:limit] + f" ...[truncated: the result has {len(text)} characters; the first {limit} are shown]"


def _fail(outcome: str, message: str, tool: str | None = None) -> Observation:
    return Observation(*_failed(outcome, message, tool))


def step(episode, protocol: Protocol, turn: Any, *, limit: int = MAX_OBSERVATION_CHARS) -> Observation:
    """Run one turn (model text or a call) in `episode` and return what the model sees; never raises."""
    return Observation(*turn_tuple(episode, protocol, turn, limit))


def _failed(outcome: str, message: str, tool: str | None = None) -> tuple[str, str, str | None]:
    return outcome, observe({"error": message}), tool


def turn_tuple(episode, protocol: Protocol, turn: Any, limit: int = MAX_OBSERVATION_CHARS) -> tuple[str, str, str | None]:
    """`step` as a plain (outcome, text, tool) tuple: the pool's hot path, where it crosses a pipe."""
    protocol.turns += 1
    if isinstance(turn, str):
        name, args, error, outside = _read(turn, protocol.max_calls)
        if error:
            return _failed("format_error", error)
        if name is None:
            return "answer", outside, None
    else:
        turn = as_call(turn)
        name, args = turn.name, turn.arguments
    world = episode.world
    if protocol.surface == "mcp":
        if name == "list_tools":
            if protocol.listed or episode.calls:
                return _failed("format_error", "list_tools may be called once, as the first call", name)
            if args not in ({}, None):
                return _failed("format_error", "list_tools takes no arguments", name)
            protocol.listed = True
            return "ok", observe({"tools": tool_listing(world.world)}, limit=max(limit, 1 << 20)), name
        if name != "call_tool":
            return _failed("format_error", f"unknown tool {name!r}; the tools are list_tools and call_tool", name)
        if not protocol.listed:
            return _failed("format_error", "call list_tools first", name)
        if not isinstance(args, dict) or not isinstance(args.get("tool_name"), str) or set(args) - {"tool_name", "arguments"}:
            return _failed("format_error", 'call_tool takes {"tool_name": <string>, "arguments": <object or JSON string>}', name)
        name, args = args["tool_name"], args.get("arguments", {})
        if name.startswith("mcp_tool_") and world.tool(name) is None:
            name = name[len("mcp_tool_"):]
        if isinstance(args, str):
            try:
                args = _loads(args) if args.strip() else {}
            except (json.JSONDecodeError, RecursionError) as e:
                return _failed("format_error", f"call_tool arguments are not valid JSON ({getattr(e, 'msg', e)})", name)
    if world.tool(name) is None:
        known = ", ".join(t.name for t in world.world.tools)
        return _failed("format_error", f"unknown tool {name!r}; the tools are: {known}", name)
    try:
        result = episode.call(name, {} if args is None else args)
    except Exception as e:  # noqa: BLE001 - the environment must never kill a rollout
        return _failed("env_error", f"{name}: internal error: {type(e).__name__}: {e}", name)
    outcome = "format_error" if result.outcome == "invalid_arguments" else result.outcome
    return outcome, observe(result.payload, limit=limit), name
