"""Structured output from real model text: one JSON value out of fences, prose and truncation.

Models wrap JSON in code fences, add a sentence before or after it, think aloud in
`<think>` blocks, leave trailing commas, or stop mid-document at the token limit.
`extract_json` takes the first JSON value that survives all of that; a truncated
document is cut back to its last complete value and closed, so what comes back is
always a prefix of what the model meant, never an invention. Shared by the synthesis
stages (`envgen.synth`) and the LLM judges; no jax, no third-party imports.
"""

from __future__ import annotations

import json
import re
from typing import Any

_THINK_RE = re.compile(r"<think>.*?(?:</think>|\Z)", re.DOTALL)
_FENCE_RE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)
_CLOSERS = {"{": "}", "[": "]"}


class JsonExtractError(ValueError):
    """No usable JSON value in a model's output; the message says what was found instead."""


def extract_json(text: str, *, want: type | tuple[type, ...] | None = None) -> Any:
    """The first JSON value in `text` (of type `want` if given), repairing what can be repaired.

    Raises JsonExtractError with a short description of the text when nothing usable is there.
    """
    if not isinstance(text, str):
        raise JsonExtractError(f"expected model text, got {type(text).__name__}")
    body = _THINK_RE.sub("", text)
    candidates = [m.group(1) for m in _FENCE_RE.finditer(body)] + [body]
    first_error = None
    for cand in candidates:
        try:
            value = _first_value(cand, want)
        except JsonExtractError as e:
            first_error = first_error or e
            continue
        return value
    raise first_error or JsonExtractError("the output is empty")


def _first_value(text: str, want) -> Any:
    opens = "{[" if want is None else "".join(c for c, t in (("{", dict), ("[", list)) if _wants(want, t))
    if not opens:
        raise ValueError(f"want must be dict or list, got {want}")
    starts = [i for i, c in enumerate(text) if c in opens]
    if not starts:
        kind = " or ".join({"{": "object", "[": "array"}[c] for c in opens)
        raise JsonExtractError(f"no JSON {kind} in the output (it begins: {_preview(text)})")
    decoder = json.JSONDecoder()
    error = None
    for start in starts[:20]:  # a stray bracket in prose before the document is common; try a few starts
        chunk = _drop_trailing_commas(text[start:])
        try:
            value, _ = decoder.raw_decode(chunk)
        except json.JSONDecodeError as e:
            repaired = close_truncated(chunk)
            if repaired is not None:
                try:
                    value = json.loads(repaired)
                except json.JSONDecodeError:
                    error = error or e
                    continue
            else:
                error = error or e
                continue
        if want is None or isinstance(value, want):
            return value
    if error is not None:
        raise JsonExtractError(f"the JSON in the output is malformed ({error.msg} at char {error.pos}) and cannot be repaired")
    raise JsonExtractError(f"no JSON value of the expected kind in the output (it begins: {_preview(text)})")


def _wants(want, t) -> bool:
    return issubclass(t, want) if isinstance(want, type) else any(issubclass(t, w) for w in want)


def _preview(text: str) -> str:
    s = " ".join(text.split())
    return repr(s[:80] + ("..." if len(s) > 80 else "")) if s else "(empty)"


def _chars(text: str):
    """(index, char, where) for each character; where: "code", or "open", "in", "close" for a string's parts."""
    in_str, esc = False, False
    for i, c in enumerate(text):
        if not in_str:
            in_str = c == '"'
            yield i, c, "open" if in_str else "code"
        elif esc:
            esc = False
            yield i, c, "in"
        elif c == "\\":
            esc = True
            yield i, c, "in"
        elif c == '"':
            in_str = False
            yield i, c, "close"
        else:
            yield i, c, "in"


def _drop_trailing_commas(text: str) -> str:
    """Remove commas directly before a closing bracket (outside strings): `[1, 2,]` -> `[1, 2]`."""
    out: list[str] = []
    pending = None  # index in `out` of a comma that may be trailing
    for _, c, where in _chars(text):
        if where == "code" or where == "open":
            if c in "}]" and pending is not None:
                del out[pending]
            if not c.isspace():
                pending = None
        out.append(c)
        if c == "," and where == "code":
            pending = len(out) - 1
    return "".join(out)


def close_truncated(text: str) -> str | None:
    """`text` (starting at `{` or `[`) cut to its last complete value and closed; None if hopeless.

    Incomplete objects inside arrays are dropped; maps and arrays around the cut are closed.

    Returns the complete document unchanged when it is already closed.
    """
    # Each frame: [opening char, expecting a key (objects only)].
    stack: list[list] = []
    str_is_key = False
    safe: tuple[int, tuple[str, ...]] | None = None  # (cut position, open brackets there)
    token_start = None  # start of a bare scalar (number, true, false, null)

    def mark(pos: int):
        nonlocal safe
        frames = tuple(f[0] for f in stack)
        # An object cut short inside an array (a record of a list) is dropped whole: half a
        # record is worse than none. Objects inside objects (maps of lists) are kept open.
        if not (len(frames) >= 2 and frames[-1] == "{" and frames[-2] == "["):
            safe = (pos, frames)

    for i, c, where in _chars(text):
        if where == "in":
            continue
        if where == "close":
            if not str_is_key:
                mark(i + 1)
            continue
        if token_start is not None and not (c.isalnum() or c in "+-."):
            mark(i)
            token_start = None
        if where == "open":
            str_is_key = bool(stack) and stack[-1][0] == "{" and stack[-1][1]
        elif c in "{[":
            stack.append([c, c == "{"])
            if len(stack) == 1:
                mark(i + 1)  # the outermost container, even if nothing in it survives
            # an inner container left open at the cut is dropped whole, not kept half-empty
        elif c in "}]":
            if not stack or _CLOSERS[stack[-1][0]] != c:
                return None
            stack.pop()
            if not stack:
                return text[: i + 1]
            mark(i + 1)
        elif c == ",":
            if stack and stack[-1][0] == "{":
                stack[-1][1] = True
        elif c == ":":
            if stack and stack[-1][0] == "{":
                stack[-1][1] = False
        elif not c.isspace() and token_start is None:
            token_start = i
    if safe is None:
        return None
    pos, frames = safe
    head = text[:pos].rstrip()
    if head.endswith(","):
        head = head[:-1]
    if head.endswith(":"):  # cannot happen after a complete value, but never emit a dangling key
        return None
    return head + "".join(_CLOSERS[f] for f in reversed(frames))
