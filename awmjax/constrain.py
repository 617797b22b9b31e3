"""Schema-constrained tool calls: decode a turn so that every `<tool_call>` is one the tools accept.

A turn stays free text (an answer) until the model writes `<tool_call>`. From there the block
must read

    \\n{"name": "<a listed tool>", "arguments": <an object that tool's JSON schema accepts>}\\n</tool_call>

in the layout the chat format renders (json.dumps separators), after which the turn ends or
opens another block. This is what serving engines call guided decoding or strict function
calling: the sampler masks, at each step, every token that would leave the grammar, so a small
policy cannot call a tool that does not exist, invent an argument, give a string where an integer
goes, or miss a required argument. Values are still the model's: ids, names, dates.

How: a byte-level pushdown automaton (`advance`) whose states are hashable tuples, and per state
the mask of tokens whose bytes it accepts, computed once and cached (`CallGrammar.mask`). Tokens
that cannot change a state (plain text in an answer, plain characters inside a string) are taken
from precomputed tables; only the others are run through the automaton.

The schema subset: type (one or a list), enum / const, properties + required (objects with
properties accept only those keys, as strict mode does), items. anyOf / oneOf / allOf and
objects without properties accept any JSON value of the right outer type. Value limits
(minimum, maxLength, pattern, ...) are not enforced here: the environment still checks them.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from awmjax.tokenizer import _byte_alphabet as byte_alphabet

__all__ = ["CallConstraint", "CallGrammar", "TokenTable", "advance", "call_grammar"]

OPEN = b"<tool_call>"
NEXT_CALL = b"\n<tool_call>"
CALL_HEAD = b'\n{"name": "'
ARGS_HEAD = b', "arguments": '
CALL_TAIL = b"}\n</tool_call>"
_DIGITS = frozenset(b"0123456789")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_ESCAPES = frozenset(b'"\\/bfnrt')
_MAX_CACHED_MASKS = 8192
_INT_DIGITS = 18  # an integer argument stays within int64, as the environment requires


@dataclass(frozen=True)
class _Schema:
    """One JSON schema node, normalised: the automaton reads these by index."""

    kinds: frozenset  # allowed JSON types; empty = any
    enum: tuple | None  # allowed values as JSON bytes
    props: tuple | None  # ((key, schema index), ...) of an object with properties
    required: frozenset
    items: int  # schema index of array items (0 = any)


_ANY = _Schema(frozenset(), None, None, frozenset(), 0)


# ---- the automaton -------------------------------------------------------------------------------
#
# A state is a tuple of frames, the last one on top; each frame is a tuple whose first item names
# it. `advance(grammar, state, byte)` returns the next state, or None when the byte leaves the
# grammar. A frame that can end without consuming the byte (a number) is popped and the byte is
# fed to the frame below.
#
#   ("free", k)              answer text; k bytes of "<tool_call>" matched at its end
#   ("after", i)             a call block just closed; i bytes of "\n<tool_call>" matched
#   ("lit", data, i)         the fixed bytes data[i:] come next
#   ("choice", alts, tags, pos, kind)   one of the byte strings alts (pos bytes matched)
#   ("obj", schema, used, phase)        an object: keys used so far, where in it we are
#   ("arr", items, phase)    an array of items
#   ("value", schema)        a value of that schema starts here
#   ("str", esc)             inside a string (esc: 0; after a backslash: 1; in a \uXXXX escape: 2-5)
#   ("num", phase, integer, digits)  a number (an integer counts its digits)


def advance(grammar: "CallGrammar", state: tuple, byte: int) -> tuple | None:
    """The state after one more byte, or None when the byte is not allowed."""
    stack = list(state)
    while stack:
        top = stack.pop()
        done = _STEP[top[0]](grammar, stack, top, byte)
        if done is None:
            return None
        if done:
            return tuple(stack)
    return None


def _free(g, stack, top, b):
    k = top[1]
    if b == OPEN[k]:
        if k + 1 == len(OPEN):
            _open_call(g, stack)
        else:
            stack.append(("free", k + 1))
    else:
        stack.append(("free", 1 if b == OPEN[0] else 0))
    return True


def _after(g, stack, top, b):
    i = top[1]
    if b != NEXT_CALL[i]:
        return None
    if i + 1 == len(NEXT_CALL):
        _open_call(g, stack)
    else:
        stack.append(("after", i + 1))
    return True


def _open_call(g, stack):
    stack += [("after", 0), ("lit", CALL_TAIL, 0), ("choice", g.name_alts, g.name_tags, 0, "name"),
              ("lit", CALL_HEAD, 0)]


def _lit(g, stack, top, b):
    _, data, i = top
    if b != data[i]:
        return None
    if i + 1 < len(data):
        stack.append(("lit", data, i + 1))
    return True


def _choice(g, stack, top, b):
    _, alts, tags, pos, kind = top
    keep = [j for j, alt in enumerate(alts) if len(alt) > pos and alt[pos] == b]
    if not keep:
        return None
    # alternatives end in a closing quote or are whole JSON literals: the first one that is
    # complete is the choice (a quote-terminated string is never a prefix of another)
    for j in keep:
        if len(alts[j]) == pos + 1:
            _chosen(g, stack, kind, tags[j])
            return True
    stack.append(("choice", tuple(alts[j] for j in keep), tuple(tags[j] for j in keep), pos + 1, kind))
    return True


def _chosen(g, stack, kind, tag):
    if kind == "name":  # the tool's arguments follow
        stack += [("obj", tag, frozenset(), "open"), ("lit", ARGS_HEAD, 0)]
    elif kind == "key":  # ": " and the key's value follow; the object records the key
        key, value_schema = tag
        _, schema, used, _ = stack.pop()
        stack += [("obj", schema, used | {key}, "next"), ("value", value_schema), ("lit", b": ", 0)]


def _obj(g, stack, top, b):
    _, schema, used, phase = top
    node = g.schemas[schema]
    if phase == "open":
        if b != ord("{"):
            return None
        stack.append(("obj", schema, used, "first"))
        return True
    if phase in ("first", "next") and b == ord("}"):
        return True if node.required <= used else None
    if phase == "next":
        if b != ord(",") or (node.props is not None and len(used) == len(node.props)):
            return None
        stack.append(("obj", schema, used, "sep"))
        return True
    if phase == "sep":
        if b != ord(" "):
            return None
        stack.append(("obj", schema, used, "quote"))
        return True
    if b != ord('"'):  # "first" or "quote": a key starts
        return None
    if node.props is None:  # any key: a string, ": ", any value
        stack += [("obj", schema, used, "next"), ("value", 0), ("lit", b": ", 0), ("str", 0)]
        return True
    left = [(k, s) for k, s in node.props if k not in used]
    if not left:
        return None
    stack += [("obj", schema, used, "key"),
              ("choice", tuple(json.dumps(k, ensure_ascii=False).encode()[1:] for k, _ in left),
               tuple(left), 0, "key")]
    return True


def _arr(g, stack, top, b):
    _, items, phase = top
    if phase in ("first", "next") and b == ord("]"):
        return True
    if phase == "first":  # a first item starts with this byte
        stack += [("arr", items, "next"), ("value", items)]
        return False
    if phase == "next":
        if b != ord(","):
            return None
        stack.append(("arr", items, "sep"))
        return True
    if b != ord(" "):
        return None
    stack += [("arr", items, "next"), ("value", items)]
    return True


def _value(g, stack, top, b):
    node = g.schemas[top[1]]
    allowed = node.kinds or frozenset({"string", "integer", "number", "boolean", "null", "array", "object"})
    if node.enum is not None:
        stack.append(("choice", node.enum, (None,) * len(node.enum), 0, "value"))
        return False
    if b == ord('"') and "string" in allowed:
        stack.append(("str", 0))
        return True
    if (b in _DIGITS or b == ord("-")) and allowed & {"integer", "number"}:
        stack.append(("num", "start", "number" not in allowed, 0))
        return False
    literals = [lit for kind, lit in (("boolean", b"true"), ("boolean", b"false"), ("null", b"null"))
                if kind in allowed and lit[0] == b]
    if literals:
        stack.append(("choice", tuple(literals), (None,) * len(literals), 0, "value"))
        return False
    if b == ord("[") and "array" in allowed:
        stack.append(("arr", node.items, "first"))
        return True
    if b == ord("{") and "object" in allowed:
        stack.append(("obj", top[1] if node.props is not None else 0, frozenset(), "first"))
        return True
    return None


def _str(g, stack, top, b):
    esc = top[1]
    if esc == 0:
        if b == ord('"'):
            return True
        if b < 0x20:
            return None
        stack.append(("str", 1) if b == ord("\\") else top)
        return True
    if esc == 1:
        if b == ord("u"):
            stack.append(("str", 2))
        elif b in _ESCAPES:
            stack.append(("str", 0))
        else:
            return None
        return True
    if b not in _HEX:
        return None
    stack.append(("str", 0 if esc == 5 else esc + 1))
    return True


# number phases: byte class -> next phase; a phase listed in _NUM_ENDS may also end the number
_NUM = {
    "start": {"-": "minus", "0": "zero", "1": "int"},
    "minus": {"0": "zero", "1": "int"},
    "zero": {".": "dot", "e": "e"},
    "int": {"0": "int", "1": "int", ".": "dot", "e": "e"},
    "dot": {"0": "frac", "1": "frac"},
    "frac": {"0": "frac", "1": "frac", "e": "e"},
    "e": {"+": "esign", "-": "esign", "0": "exp", "1": "exp"},
    "esign": {"0": "exp", "1": "exp"},
    "exp": {"0": "exp", "1": "exp"},
}
_NUM_ENDS = frozenset({"zero", "int", "frac", "exp"})


def _num(g, stack, top, b):
    _, phase, integer, digits = top
    c = chr(b)
    cls = "0" if c == "0" else "1" if c in "123456789" else "e" if c in "eE" else c
    nxt = _NUM[phase].get(cls)
    if integer and (nxt in ("dot", "e") or (nxt is not None and digits + (cls in "01") > _INT_DIGITS)):
        nxt = None
    if nxt is not None:
        stack.append(("num", nxt, integer, digits + (integer and cls in "01")))
        return True
    return False if phase in _NUM_ENDS else None  # the number ended: the byte is the parent's


_STEP = {"free": _free, "after": _after, "lit": _lit, "choice": _choice, "obj": _obj, "arr": _arr,
         "value": _value, "str": _str, "num": _num}


# ---- tokens --------------------------------------------------------------------------------------


class TokenTable:
    """Each token id's bytes, and the per-token facts the masks are built from."""

    def __init__(self, tokenizer, vocab_size: int):
        backend = tokenizer.backend
        if vocab_size < tokenizer.vocab_size:
            raise ValueError(f"the model's vocab_size {vocab_size} is below the tokenizer's "
                             f"{tokenizer.vocab_size}; constrained calls need a mask for every token")
        self.vocab_size = vocab_size
        self.stop_ids = tuple(tokenizer.stop_token_ids)
        added = backend.get_added_tokens_decoder()
        byte_of = {ch: b for b, ch in byte_alphabet().items()}
        self.bytes: list[bytes | None] = [None] * vocab_size
        for i in range(tokenizer.vocab_size):
            if i in added:  # special tokens are never written inside a turn; others are text
                self.bytes[i] = None if added[i].special else added[i].content.encode()
                continue
            piece = backend.id_to_token(i)
            if piece is not None and all(ch in byte_of for ch in piece):
                self.bytes[i] = bytes(byte_of[ch] for ch in piece)
            else:  # not a byte-level vocabulary: the token's decoded text
                self.bytes[i] = backend.decode([i]).encode()
        text = [b if b else None for b in self.bytes]
        self.first = np.array([t[0] if t else -1 for t in text], np.int16)
        self.has_lt = np.array([bool(t) and b"<" in t for t in text])
        # tokens that leave a string's content as it was (no quote, backslash or control byte)
        self.plain_str = np.array([bool(t) and not any(c in (0x22, 0x5C) or c < 0x20 for c in t)
                                   for t in text])
        self.text = np.array([t is not None for t in text])
        # byte tries of all tokens, of those with "<", of those a string's content cannot take
        # whole: a mask walks the trie beside the automaton, so a rejected byte prunes every
        # token that starts with it
        self.trie = _trie((i, t) for i, t in enumerate(text) if t)
        self.trie_lt = _trie((i, t) for i, t in enumerate(text) if t and self.has_lt[i])
        self.trie_str = _trie((i, t) for i, t in enumerate(text) if t and not self.plain_str[i])


def _trie(tokens) -> list:
    """A byte trie: node = [children {byte: node}, ids of the tokens that end here]."""
    root: list = [{}, []]
    for i, data in tokens:
        node = root
        for b in data:
            node = node[0].setdefault(b, [{}, []])
        node[1].append(i)
    return root


def _walk(grammar, node, state: tuple, allowed: np.ndarray) -> None:
    """Mark the tokens under a trie node that the automaton accepts from `state`."""
    for b, child in node[0].items():
        s = advance(grammar, state, b)
        if s is None:
            continue
        if child[1]:
            allowed[child[1]] = True
        if child[0]:
            _walk(grammar, child, s, allowed)


# ---- grammar and per-row constraint -------------------------------------------------------------


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return {str: "string", type(None): "null", list: "array", dict: "object"}[type(value)]


class CallGrammar:
    """The calls a set of tools accepts, and the token masks that keep decoding inside them."""

    def __init__(self, tools: Sequence[Mapping[str, Any]], table: TokenTable):
        self.table = table
        self.schemas: list[_Schema] = [_ANY]
        specs = [t.get("function", t) for t in tools]
        if not specs:
            raise ValueError("CallGrammar needs at least one tool")
        self.name_alts = tuple(json.dumps(s["name"], ensure_ascii=False).encode()[1:] for s in specs)
        self.name_tags = tuple(self._add(s.get("parameters") or {"type": "object", "properties": {}},
                                         f"tool {s['name']}") for s in specs)
        self._masks: dict[tuple, np.ndarray] = {}
        self._next: dict[tuple, tuple | None] = {}

    def _add(self, schema: Any, where: str) -> int:
        """Register a schema node (and its children); returns its index."""
        if not isinstance(schema, Mapping):
            return 0
        kinds = schema.get("type", ())
        kinds = frozenset([kinds] if isinstance(kinds, str) else kinds)
        if any(k in schema for k in ("anyOf", "oneOf", "allOf")):
            kinds = frozenset()
        enum = None
        if "const" in schema or "enum" in schema:
            values = [schema["const"]] if "const" in schema else list(schema["enum"])
            enum = tuple(json.dumps(v, ensure_ascii=False).encode() for v in values)
            if not enum:
                raise ValueError(f"{where}: an empty enum accepts no value")
            if any(a != b and b.startswith(a) for a in enum for b in enum):
                # 1 and 12: a choice cannot tell where one ends; the values' types decide instead
                kinds = kinds or frozenset(_json_kind(v) for v in values)
                enum = None
        index = len(self.schemas)
        self.schemas.append(_ANY)  # reserve the slot; children come after
        props = None
        if isinstance(schema.get("properties"), Mapping) and not kinds - {"object"}:
            props = tuple((k, self._add(v, f"{where}.{k}")) for k, v in schema["properties"].items())
        items = self._add(schema.get("items"), f"{where}[]") if isinstance(schema.get("items"), Mapping) else 0
        required = frozenset(schema.get("required") or ()) if props is not None else frozenset()
        if props is not None and not required <= {k for k, _ in props}:
            missing = sorted(required - {k for k, _ in props})
            raise ValueError(f"{where}: required {missing} not among its properties")
        self.schemas[index] = _Schema(kinds, enum, props, required, items)
        return index

    def start(self) -> tuple:
        """The state at the start of an assistant turn."""
        return (("free", 0),)

    def step(self, state: tuple, token_id: int) -> tuple | None:
        """The state after a token (None: the token is not allowed there)."""
        key = (state, token_id)
        if key not in self._next:
            data = self.table.bytes[token_id]
            new = state if data else None
            for b in data or b"":
                new = advance(self, new, b)
                if new is None:
                    break
            if len(self._next) >= 16 * _MAX_CACHED_MASKS:
                self._next.clear()
            self._next[key] = new
        return self._next[key]

    def stop_allowed(self, state: tuple) -> bool:
        """True where the turn may end: in an answer, or right after a call block."""
        top = state[-1]
        return top[0] == "free" or top == ("after", 0)

    def mask(self, state: tuple) -> np.ndarray:
        """bool[vocab]: the tokens allowed next."""
        cached = self._masks.get(state)
        if cached is not None:
            return cached
        t = self.table
        allowed = np.zeros(t.vocab_size, bool)
        if self.stop_allowed(state):
            allowed[list(t.stop_ids)] = True
        top = state[-1]
        if top[0] == "free":
            # bytes without "<" keep an answer an answer (or restart the marker from nothing);
            # only tokens with "<", or that go on with a marker begun, can open a call
            nxt = OPEN[top[1]] if top[1] else -1
            allowed |= t.text & ~t.has_lt & (t.first != nxt)
            _walk(self, t.trie_lt, state, allowed)
            if nxt >= 0 and nxt in t.trie[0]:  # the tokens that start with the marker's next byte
                _walk(self, [{nxt: t.trie[0][nxt]}, []], state, allowed)
        elif top == ("str", 0):
            allowed |= t.plain_str  # plain characters leave a string a string
            _walk(self, t.trie_str, state, allowed)
        else:
            _walk(self, t.trie, state, allowed)
        if not allowed.any():  # a vocabulary that cannot spell the next byte: end the turn
            allowed[list(t.stop_ids)] = True
        if len(self._masks) >= _MAX_CACHED_MASKS:
            self._masks.clear()
        self._masks[state] = allowed
        return allowed


class CallConstraint:
    """One row's place in a CallGrammar across the tokens of one assistant turn."""

    def __init__(self, grammar: CallGrammar):
        self.grammar = grammar
        self.state: tuple | None = grammar.start()

    def mask(self) -> np.ndarray:
        """bool[vocab]: the tokens this row may take next."""
        if self.state is None:  # the turn ended; any token (the row is idle)
            return np.ones(self.grammar.table.vocab_size, bool)
        return self.grammar.mask(self.state)

    def advance(self, token_id: int) -> None:
        """Move past a sampled token (a stop token ends the turn)."""
        if self.state is None:
            return
        if int(token_id) in self.grammar.table.stop_ids:
            self.state = None
            return
        new = self.grammar.step(self.state, int(token_id))
        if new is None:
            raise ValueError(f"token {int(token_id)} was sampled outside the call grammar; the mask "
                             "and the sampler disagree")
        self.state = new


@functools.lru_cache(maxsize=4)
def token_table(tokenizer, vocab_size: int) -> TokenTable:
    """The TokenTable of a tokenizer (built once: about half a second for 49k tokens)."""
    return TokenTable(tokenizer, vocab_size)


@functools.lru_cache(maxsize=512)
def _grammar(tokenizer, vocab_size: int, tools_json: str) -> CallGrammar:
    return CallGrammar(json.loads(tools_json), token_table(tokenizer, vocab_size))


def call_grammar(tokenizer, tools: Sequence[Mapping[str, Any]], vocab_size: int) -> CallGrammar:
    """The CallGrammar of these tools, shared (with its cached masks) by every episode in a world
    with the same tools."""
    return _grammar(tokenizer, vocab_size, json.dumps(list(tools), sort_keys=True))
