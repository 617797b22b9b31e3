"""Tool-argument validation against a tool's JSON Schema, compiled once per tool.

The common subset (object of typed properties with enum, bounds, lengths, pattern,
required, additionalProperties=false, arrays of those) compiles to plain Python
checks, fast enough for tens of thousands of calls a second. Any other keyword falls
back to the `jsonschema` library for that schema, so no schema is checked loosely.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import jsonschema

_FAST_KEYS = {
    "type", "enum", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength",
    "maxLength", "pattern", "items", "minItems", "maxItems", "description", "default", "title",
    "format", "examples",
}
_OBJECT_KEYS = {"type", "properties", "required", "additionalProperties", "description", "title"}
_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

# validate(arguments) -> (clean arguments with defaults filled, or None; error message or None)
Validator = Callable[[Any], "tuple[dict | None, str | None]"]


def compile_validator(schema: dict[str, Any]) -> Validator:
    """Compile a tool's parameter schema into a fast validator."""
    props = schema.get("properties", {}) or {}
    fast = set(schema) <= _OBJECT_KEYS and all(_fast_ok(p) for p in props.values())
    if not fast:
        return _jsonschema_validator(schema)
    required = tuple(schema.get("required", ()))
    closed = schema.get("additionalProperties", True) is False
    checks = {name: _compile_value(name, p) for name, p in props.items()}
    defaults = {name: p.get("default") for name, p in props.items()}

    def validate(args: Any):
        if not isinstance(args, dict):
            return None, f"arguments must be a JSON object, got {_jtype(args)}"
        for name in required:
            if name not in args or args[name] is None:
                return None, f"missing required argument '{name}'"
        if closed:
            extra = [k for k in args if k not in checks]
            if extra:
                return None, f"unknown argument '{extra[0]}' (allowed: {', '.join(checks) or 'none'})"
        clean = dict(defaults)
        for name, value in args.items():
            check = checks.get(name)
            if check is not None and value is not None:
                err = check(value)
                if err:
                    return None, err
                if isinstance(value, float) and value.is_integer() and _is_int_schema(props[name]):
                    value = int(value)
            clean[name] = value
        return clean, None

    return validate


def _is_int_schema(p: dict) -> bool:
    t = p.get("type")
    return t == "integer" or (isinstance(t, list) and "integer" in t)


def _fast_ok(p: Any) -> bool:
    if not isinstance(p, dict) or not set(p) <= _FAST_KEYS:
        return False
    items = p.get("items")
    return items is None or _fast_ok(items)


def _compile_value(name: str, p: dict) -> Callable[[Any], str | None]:
    types = p.get("type")
    types = [types] if isinstance(types, str) else list(types or [])
    type_fns = [_TYPES[t] for t in types if t in _TYPES]
    enum = p.get("enum")
    lo, hi = p.get("minimum"), p.get("maximum")
    xlo, xhi = p.get("exclusiveMinimum"), p.get("exclusiveMaximum")
    min_len, max_len = p.get("minLength"), p.get("maxLength")
    pattern = re.compile(p["pattern"]) if "pattern" in p else None
    item_check = _compile_value(f"{name}[]", p["items"]) if isinstance(p.get("items"), dict) else None
    min_items, max_items = p.get("minItems"), p.get("maxItems")

    def check(v: Any) -> str | None:
        if type_fns and not any(f(v) for f in type_fns):
            return f"argument '{name}' must be {' or '.join(types)}, got {_jtype(v)} {_short(v)}"
        if enum is not None and v not in enum:
            return f"argument '{name}' must be one of {', '.join(map(repr, enum))}, got {_short(v)}"
        if isinstance(v, int) and not isinstance(v, bool) and not _INT64_MIN <= v <= _INT64_MAX:
            return f"argument '{name}' is outside the 64-bit integer range"
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if lo is not None and v < lo:
                return f"argument '{name}' must be >= {lo}, got {v}"
            if hi is not None and v > hi:
                return f"argument '{name}' must be <= {hi}, got {v}"
            if xlo is not None and v <= xlo:
                return f"argument '{name}' must be > {xlo}, got {v}"
            if xhi is not None and v >= xhi:
                return f"argument '{name}' must be < {xhi}, got {v}"
        if isinstance(v, str):
            if min_len is not None and len(v) < min_len:
                return f"argument '{name}' must have at least {min_len} characters"
            if max_len is not None and len(v) > max_len:
                return f"argument '{name}' must have at most {max_len} characters"
            if pattern is not None and not pattern.search(v):
                return f"argument '{name}' must match pattern {pattern.pattern!r}"
        if isinstance(v, list):
            if min_items is not None and len(v) < min_items:
                return f"argument '{name}' must have at least {min_items} items"
            if max_items is not None and len(v) > max_items:
                return f"argument '{name}' must have at most {max_items} items"
            if item_check is not None:
                for item in v:
                    err = item_check(item)
                    if err:
                        return err
        return None

    return check


def _jsonschema_validator(schema: dict) -> Validator:
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as e:
        raise ValueError(f"invalid parameter schema: {e.message}") from None
    validator = cls(schema)

    def validate(args: Any):
        if not isinstance(args, dict):
            return None, f"arguments must be a JSON object, got {_jtype(args)}"
        err = next(iter(validator.iter_errors(args)), None)
        if err is not None:
            where = "/".join(map(str, err.absolute_path))
            return None, f"argument '{where}': {err.message}" if where else err.message
        for k, v in args.items():
            if isinstance(v, int) and not isinstance(v, bool) and not _INT64_MIN <= v <= _INT64_MAX:
                return None, f"argument '{k}' is outside the 64-bit integer range"
        clean = {k: p.get("default") for k, p in (schema.get("properties") or {}).items() if isinstance(p, dict)}
        clean.update(args)
        return clean, None

    return validate


def _jtype(v: Any) -> str:
    for name in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _TYPES[name](v) and not (name == "integer" and isinstance(v, float)):
            return name
    return type(v).__name__


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."
