"""Parse a model's turn into tool calls, format errors and free text (Hermes/Qwen3 `<tool_call>` blocks).

Standalone on purpose: standard library only, so envgen, MCP clients and evaluation harnesses can
use it without JAX. The parser never raises on any input text; every problem becomes a named error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

OPEN_TAG = "<tool_call>"
CLOSE_TAG = "</tool_call>"
SURFACES = ("direct", "mcp")
LIST_TOOLS = "list_tools"
CALL_TOOL = "call_tool"
MCP_NAME_PREFIX = "mcp_tool_"  # AWM's harness lists environment tools under this prefix

ERROR_KINDS = (
    "invalid_json",  # the block is not one valid JSON value
    "not_an_object",  # valid JSON, but not an object
    "empty_call",  # nothing between the tags
    "missing_name",  # no "name", or an empty one
    "name_not_string",  # "name" is not a string
    "arguments_not_object",  # "arguments" is neither an object nor null
    "unexpected_keys",  # keys other than "name" and "arguments"
    "truncated",  # the turn ends inside a call (generation stopped before </tool_call>)
    "unclosed_tag",  # a <tool_call> is followed by another <tool_call> before its </tool_call>
    "stray_close_tag",  # a </tool_call> with no <tool_call> before it
    "unknown_tool",  # a tool name not offered (when the offered names are known)
    "missing_tool_name",  # mcp: call_tool without a string "tool_name"
    "invalid_inner_arguments",  # mcp: call_tool's "arguments" is not a JSON object or a string holding one
)

_SNIPPET_CHARS = 200
_FENCE_OPEN = re.compile(r"\A```[A-Za-z0-9_+-]*[ \t]*\n?")
_FENCE_CLOSE = re.compile(r"\n?[ \t]*```\Z")


@dataclass(frozen=True)
class ToolCall:
    """One call: the tool's name and its arguments; kind is 'list_tools' for the mcp meta-call."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    kind: str = "tool"

    def __post_init__(self):
        if self.kind not in ("tool", LIST_TOOLS):
            raise ValueError(f"ToolCall.kind={self.kind!r}; allowed: 'tool', 'list_tools'")


@dataclass(frozen=True)
class FormatError:
    """A problem with the turn's format: a kind from ERROR_KINDS, a message, and the offending text."""

    kind: str
    message: str
    snippet: str = ""

    def __post_init__(self):
        if self.kind not in ERROR_KINDS:
            raise ValueError(f"FormatError.kind={self.kind!r}; allowed: {', '.join(ERROR_KINDS)}")


@dataclass(frozen=True)
class ParsedTurn:
    """What one assistant turn says: its calls, its format errors, and its text outside any call."""

    calls: tuple[ToolCall, ...]
    errors: tuple[FormatError, ...]
    text: str

    @property
    def ok(self) -> bool:
        """True when the turn has no format error."""
        return not self.errors

    @property
    def truncated(self) -> bool:
        """True when the turn stops inside a call."""
        return any(e.kind == "truncated" for e in self.errors)

    @property
    def is_final_answer(self) -> bool:
        """True when the turn is a well-formed answer without any call."""
        return not self.calls and not self.errors


def format_tool_call(name: str, arguments: dict[str, Any] | None = None) -> str:
    """The `<tool_call>` block for one call, exactly as the Qwen3 chat template writes it."""
    args = json.dumps(arguments if arguments is not None else {}, ensure_ascii=False)
    return f'{OPEN_TAG}\n{{"name": {json.dumps(name, ensure_ascii=False)}, "arguments": {args}}}\n{CLOSE_TAG}'


def format_mcp_call(tool_name: str, arguments: dict[str, Any] | None = None) -> str:
    """The `<tool_call>` block that calls an environment tool through AWM's `call_tool` meta-tool."""
    inner = json.dumps(arguments if arguments is not None else {}, ensure_ascii=False)
    return format_tool_call(CALL_TOOL, {"tool_name": tool_name, "arguments": inner})


def _snippet(text: str) -> str:
    return text if len(text) <= _SNIPPET_CHARS else text[:_SNIPPET_CHARS] + "..."


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON; write a number or null")


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key!r}; give each key once")
        obj[key] = value
    return obj


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_reject_duplicates)


def _json_hint(body: str) -> str:
    """A likely cause of a JSON error, in words, for the common non-JSON habits of models."""
    if re.search(r"(?:^|[{\[,:])\s*'", body):
        return "; it uses single quotes, but JSON strings and keys need double quotes"
    if re.search(r",\s*[}\]]", body):
        return "; it has a trailing comma before a closing bracket, which JSON does not allow"
    if re.search(r"[:\[,]\s*(?:True|False|None)\b", body):
        return "; it uses Python's True/False/None, but JSON spells them true/false/null"
    return ""


def _loads(body: str) -> tuple[Any, str | None]:
    """Parse strict JSON: (value, None), or (None, a message) on any failure."""
    try:
        value, end = _DECODER.raw_decode(body)
    except json.JSONDecodeError as e:
        return None, f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno}){_json_hint(body)}"
    except (ValueError, RecursionError) as e:  # NaN/Infinity, duplicate keys, huge ints, deep nesting
        return None, f"not valid JSON ({str(e) or type(e).__name__})"
    if body[end:].strip():
        return None, "holds more than one JSON value; put each call in its own <tool_call> block"
    return value, None


def _strip_fences(body: str) -> str:
    """The block's content without surrounding whitespace and an optional Markdown code fence."""
    body = body.strip()
    if body.startswith("```"):
        body = _FENCE_CLOSE.sub("", _FENCE_OPEN.sub("", body, count=1), count=1).strip()
    return body


def _json_block_end(text: str, start: int) -> int | None:
    """Index of the </tool_call> closing a block whose JSON starts after `start`, read JSON-aware.

    This keeps a block whole when a string argument itself contains "</tool_call>".
    """
    i = start
    while i < len(text) and text[i].isspace():
        i += 1
    if text.startswith("```", i):
        fence = _FENCE_OPEN.match(text, i)
        i = fence.end() if fence else i
        while i < len(text) and text[i].isspace():
            i += 1
    if i >= len(text) or text[i] != "{":
        return None
    try:
        _, end = _DECODER.raw_decode(text, i)
    except (ValueError, RecursionError):
        return None
    rest = text[end:]
    skipped = len(rest) - len(rest.lstrip())
    rest = rest.lstrip()
    if rest.startswith("```"):
        skipped += 3
        rest = rest[3:]
        skipped += len(rest) - len(rest.lstrip())
        rest = rest.lstrip()
    return end + skipped if rest.startswith(CLOSE_TAG) else None


def _partial_open_tag_at_end(text: str) -> bool:
    """True when text ends with the start of "<tool_call>" (at least "<t"): generation stopped mid-tag."""
    return any(text.endswith(OPEN_TAG[:n]) for n in range(2, len(OPEN_TAG)))


class _Parser:
    def __init__(self, surface: str, tool_names: Collection[str] | None):
        self.surface = surface
        self.tool_names = None if tool_names is None else frozenset(tool_names)
        self.calls: list[ToolCall] = []
        self.errors: list[FormatError] = []

    def error(self, kind: str, message: str, snippet: str) -> None:
        self.errors.append(FormatError(kind, message, _snippet(snippet)))

    def free_text(self, segment: str) -> str:
        """The segment with stray closing tags removed (each reported)."""
        if CLOSE_TAG in segment:
            for _ in range(segment.count(CLOSE_TAG)):
                self.error("stray_close_tag", f"{CLOSE_TAG} appears without an opening {OPEN_TAG}", segment)
            segment = segment.replace(CLOSE_TAG, "")
        return segment

    def block(self, raw: str) -> None:
        """Parse the text between one pair of tags into a call, or record why it is not one."""
        body = _strip_fences(raw)
        if not body:
            self.error("empty_call", f"an empty {OPEN_TAG} block; write {{\"name\": ..., \"arguments\": {{...}}}}", raw)
            return
        obj, problem = _loads(body)
        if problem is not None:
            self.error("invalid_json", f"the tool call is {problem}", raw)
            return
        if not isinstance(obj, dict):
            self.error(
                "not_an_object",
                f"the tool call is a JSON {type(obj).__name__}, not an object; write one "
                f"{{\"name\": ..., \"arguments\": {{...}}}} per {OPEN_TAG} block",
                raw,
            )
            return
        extra = sorted(set(obj) - {"name", "arguments"})
        if extra:
            allowed = 'only "name" and "arguments" are allowed'
            self.error("unexpected_keys", f"the tool call has keys {extra}; {allowed}", raw)
            return
        name = obj.get("name")
        if name is None or name == "":
            self.error("missing_name", "the tool call has no \"name\"; name the tool to call", raw)
            return
        if not isinstance(name, str):
            self.error("name_not_string", f"the tool call's \"name\" is {name!r}, not a string", raw)
            return
        arguments = obj.get("arguments")
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            hint = "; write the object itself, not a string holding it" if isinstance(arguments, str) else ""
            self.error("arguments_not_object", f"\"arguments\" of {name!r} is not a JSON object{hint}", raw)
            return
        if self.surface == "mcp":
            self.mcp_call(name, arguments, raw)
        else:
            self.tool_call(name, arguments, raw)

    def tool_call(self, name: str, arguments: dict[str, Any], raw: str) -> None:
        if self.tool_names is not None and name not in self.tool_names:
            offered = ", ".join(sorted(self.tool_names)[:20]) or "none"
            self.error("unknown_tool", f"no tool is named {name!r}; offered tools: {offered}", raw)
            return
        self.calls.append(ToolCall(name, arguments))

    def mcp_call(self, name: str, arguments: dict[str, Any], raw: str) -> None:
        """Unwrap AWM's meta-tools: list_tools, and call_tool(tool_name, arguments) into the inner call."""
        if name == LIST_TOOLS:
            self.calls.append(ToolCall(LIST_TOOLS, arguments, kind=LIST_TOOLS))
            return
        if name.startswith(MCP_NAME_PREFIX):  # AWM's harness also accepts a listed name called directly
            self.tool_call(name[len(MCP_NAME_PREFIX):], arguments, raw)
            return
        if name != CALL_TOOL:
            self.error(
                "unknown_tool",
                f"no tool is named {name!r}; this surface offers only {LIST_TOOLS} and {CALL_TOOL}: "
                f"call environment tools as {CALL_TOOL}(tool_name, arguments)",
                raw,
            )
            return
        extra = sorted(set(arguments) - {"tool_name", "arguments"})
        if extra:
            allowed = 'only "tool_name" and "arguments" are allowed'
            self.error("unexpected_keys", f"{CALL_TOOL} got keys {extra}; {allowed}", raw)
            return
        tool_name = arguments.get("tool_name")
        if not isinstance(tool_name, str) or not tool_name:
            self.error("missing_tool_name", f"{CALL_TOOL} needs \"tool_name\", a non-empty string naming the tool", raw)
            return
        inner = arguments.get("arguments")
        if inner is None or (isinstance(inner, str) and not inner.strip()):
            inner = {}
        elif isinstance(inner, str):
            inner, problem = _loads(_strip_fences(inner))
            if problem is not None:
                self.error("invalid_inner_arguments", f"{CALL_TOOL}'s \"arguments\" string is {problem}", raw)
                return
        if not isinstance(inner, dict):
            self.error(
                "invalid_inner_arguments",
                f"{CALL_TOOL}'s \"arguments\" must be a JSON object or a string holding one, "
                f"not {type(inner).__name__}",
                raw,
            )
            return
        if tool_name.startswith(MCP_NAME_PREFIX):
            tool_name = tool_name[len(MCP_NAME_PREFIX):]
        self.tool_call(tool_name, inner, raw)

    def parse(self, text: str) -> ParsedTurn:
        free: list[str] = []
        pos = 0
        while True:
            start = text.find(OPEN_TAG, pos)
            if start < 0:
                tail = text[pos:]
                if _partial_open_tag_at_end(tail):
                    self.error("truncated", f"the turn ends inside an opening {OPEN_TAG} tag", tail[-len(OPEN_TAG):])
                    tail = tail[: tail.rfind("<")]
                free.append(self.free_text(tail))
                break
            free.append(self.free_text(text[pos:start]))
            body_start = start + len(OPEN_TAG)
            close = _json_block_end(text, body_start)
            if close is None:
                close = text.find(CLOSE_TAG, body_start)
                reopen = text.find(OPEN_TAG, body_start)
                if reopen >= 0 and (close < 0 or reopen < close):
                    self.error(
                        "unclosed_tag", f"a {OPEN_TAG} is not closed before the next {OPEN_TAG}", text[start:reopen]
                    )
                    pos = reopen
                    continue
                if close < 0:
                    self.error(
                        "truncated",
                        f"the turn ends inside a tool call, before its {CLOSE_TAG}; the call is not run",
                        text[start:],
                    )
                    break
            self.block(text[body_start:close])
            pos = close + len(CLOSE_TAG)
        return ParsedTurn(tuple(self.calls), tuple(self.errors), "".join(free).strip())


def parse_tool_calls(text: str, surface: str = "direct", tool_names: Collection[str] | None = None) -> ParsedTurn:
    """Parse one assistant turn's text; `tool_names`, when given, are the only names a call may use."""
    if surface not in SURFACES:
        raise ValueError(f"surface={surface!r}; allowed: {', '.join(SURFACES)}")
    if not isinstance(text, str):
        raise TypeError(f"parse_tool_calls needs the turn's text as str, got {type(text).__name__}")
    return _Parser(surface, tool_names).parse(text)
