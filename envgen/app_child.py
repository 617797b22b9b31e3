"""Inside the sandbox child: AWM's FastAPI apps called in-process, and AWM's verifiers.

Runs only in the process started by `envgen.sandbox.PythonSandbox` (after its audit hook
is up). An app's source is executed once per child; its SQLAlchemy engines and
sessionmakers are rebound to one engine whose only connection is a proxy, pointed before
each call at the in-memory database of the calling slot. A route is called as ASGI
(one `http` request, no server, no socket), so a call costs what FastAPI and SQLAlchemy
cost and nothing more.

Databases held here, by state key (one per slot), each with the token the parent gave
it: the parent sends an image only when the child does not hold the slot's current
state, and the world's template image once per child. A call that changes rows returns
the new image; the parent applies it to the slot row by row (so its changeset sees it).
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import inspect
import json
import sqlite3
import sys
import types
from collections import OrderedDict
from typing import Any
from urllib.parse import quote, urlencode

MAX_HELD = 64  # slot databases kept; an evicted one is sent again ("stale")
MAX_APPS = 8  # apps kept loaded (each holds its modules' models: tens of MB)

_HELD: "OrderedDict[str, tuple[str, sqlite3.Connection]]" = OrderedDict()
_TEMPLATES: dict[str, bytes] = {}
_APPS: dict[str, "_LoadedApp"] = {}
_LOOP: asyncio.AbstractEventLoop | None = None


class Stale(Exception):
    """The child does not hold the state the parent referred to; the parent resends it."""


class _ConnProxy:
    """The engine's one DBAPI connection: forwards to the current slot's sqlite3 connection; close is a no-op."""

    def __init__(self):
        object.__setattr__(self, "target", None)

    def __getattr__(self, name):
        return getattr(self.target, name)

    def __setattr__(self, name, value):
        setattr(self.target, name, value)

    def point(self, conn: sqlite3.Connection) -> None:
        """Make `conn` the connection every session of the app uses from now on."""
        object.__setattr__(self, "target", conn)

    def close(self):
        pass


class _LoadedApp:
    """One world's FastAPI app, its database rebound to the proxy connection."""

    def __init__(self, key: str, source: str):
        from sqlalchemy import create_engine
        from sqlalchemy.engine import Engine
        from sqlalchemy.orm import scoped_session, sessionmaker
        from sqlalchemy.pool import StaticPool

        # The module reads its database URL from DATABASE_PATH at import (the child's
        # environment says "sqlite://": a throwaway in-memory database, no file).
        # a registered module: pydantic resolves the models' annotations through sys.modules
        module = types.ModuleType(f"world_app_{key}")
        sys.modules[module.__name__] = module
        ns = module.__dict__
        exec(compile(source, "<world app>", "exec"), ns)
        self.app = next((v for v in ns.values() if type(v).__name__ == "FastAPI"), None)
        if self.app is None:
            raise ValueError("the app source defines no FastAPI application")
        self.proxy = _ConnProxy()
        self.engine = create_engine("sqlite://", creator=lambda: self.proxy, poolclass=StaticPool)
        for name, value in list(ns.items()):
            if isinstance(value, Engine):
                ns[name] = self.engine
            elif isinstance(value, sessionmaker):
                value.configure(bind=self.engine)
            elif isinstance(value, scoped_session):
                value.remove()
                value.session_factory.configure(bind=self.engine)
        self.routes = {}
        for r in getattr(self.app, "routes", []):
            for m in getattr(r, "methods", None) or ():
                self.routes[(m, getattr(r, "path", None))] = r

    def body(self, method: str, path: str, body_args: dict[str, Any]) -> Any:
        """The JSON body the route expects for these body arguments (FastAPI embeds or not)."""
        route = self.routes.get((method, path))
        params = list(getattr(getattr(route, "dependant", None), "body_params", []) or [])
        if len({p.name for p in params}) != 1 or getattr(params[0].field_info, "embed", False):
            return body_args  # several body parameters: FastAPI embeds each under its name
        p = params[0]
        annotation = p.field_info.annotation
        if _is_model(annotation):  # the spec lists the model's fields as the body parameters
            wrapped = len(body_args) == 1 and isinstance(body_args.get(p.name), dict)
            return body_args[p.name] if wrapped else body_args
        if p.name in body_args:
            return body_args[p.name]
        return next(iter(body_args.values())) if len(body_args) == 1 else body_args


def _is_model(annotation: Any) -> bool:
    from pydantic import BaseModel

    candidates = [annotation, *getattr(annotation, "__args__", ())]
    return any(isinstance(a, type) and issubclass(a, BaseModel) for a in candidates)


def _conn(image: bytes) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    conn.deserialize(image)
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def hold_state(state: dict[str, Any]) -> sqlite3.Connection:
    """The connection of state key `state["key"]` at the parent's token (raises Stale if not held)."""
    key, token = state["key"], state["token"]
    image = None
    if "image" in state:
        image = base64.b64decode(state["image"])
    elif "template" in state:
        if "template_image" in state:
            _TEMPLATES[state["template"]] = base64.b64decode(state["template_image"])
        image = _TEMPLATES.get(state["template"])
        if image is None:
            raise Stale(f"no template {state['template']}")
    held = _HELD.get(key)
    if image is None and held is not None and "rename" in state and held[0] == state["rename"]:
        held = _HELD[key] = (token, held[1])
    if image is None:
        if held is None or held[0] != token:
            raise Stale(f"state {key} is not held at {token}")
        _HELD.move_to_end(key)
        return held[1]
    if held is not None:
        held[1].close()
    conn = _conn(image)
    _HELD[key] = (token, conn)
    _HELD.move_to_end(key)
    while len(_HELD) > MAX_HELD:
        _HELD.popitem(last=False)[1][1].close()
    return conn


def _loaded(req: dict[str, Any]) -> _LoadedApp:
    app = _APPS.get(req["app"])
    if app is None:
        raise Stale(f"app {req['app']} is not loaded")
    return app


def load_app(req: dict[str, Any]) -> dict[str, Any]:
    """Execute an app's source once (op "load_app")."""
    if req["app"] not in _APPS:
        while len(_APPS) >= MAX_APPS:  # the oldest app goes (the parent reloads it if asked again)
            old = next(iter(_APPS))
            del _APPS[old]
            sys.modules.pop(f"world_app_{old}", None)
        _APPS[req["app"]] = _LoadedApp(req["app"], req["source"])
    return {"outcome": "ok", "value": {"routes": len(_APPS[req["app"]].routes)}}


def split_arguments(path: str, where: dict[str, str], arguments: dict[str, Any]) -> tuple[str, list[tuple[str, str]], dict[str, Any]]:
    """A tool call as HTTP parts: the path with its parameters filled in, query pairs, body arguments."""
    url, query, body = path, [], {}
    for name, value in arguments.items():
        if value is None:
            continue
        loc = where.get(name, "query")
        if loc == "path":
            url = url.replace("{" + name + "}", quote(str(value), safe=""))
        elif loc == "query":
            for v in value if isinstance(value, list) else [value]:
                query.append((name, json.dumps(v) if isinstance(v, (dict, bool)) else str(v)))
        else:
            body[name] = value
    return url, query, body


def _request(app: _LoadedApp, method: str, path: str, where: dict[str, str], arguments: dict[str, Any]):
    url, query, body = split_arguments(path, where, arguments)
    route = app.routes.get((method, path))
    payload = None
    if body or getattr(getattr(route, "dependant", None), "body_params", None):
        payload = json.dumps(app.body(method, path, body)).encode()
    return url, urlencode(query).encode(), payload


async def _asgi(app, method: str, url: str, query: bytes, payload: bytes | None) -> tuple[int, bytes]:
    headers = [(b"host", b"world"), (b"accept", b"application/json")]
    if payload is not None:
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": url, "raw_path": url.encode(), "query_string": query, "root_path": "", "headers": headers,
        "client": ("127.0.0.1", 0), "server": ("world", 80), "state": {},
    }
    sent = False
    status, chunks = 500, []

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": payload or b"", "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


def table_changes(n_pk: int, old_rows, new_rows) -> tuple[list, list, list] | None:
    """(deleted keys, inserted rows, updated (row, key) pairs) between two `SELECT pk..., *` results, or None if equal."""
    old = {r[:n_pk]: r[n_pk:] for r in old_rows}
    new = {r[:n_pk]: r[n_pk:] for r in new_rows}
    if old == new:
        return None
    deleted = [list(k) for k in old.keys() - new.keys()]
    inserted = [list(r) for k, r in new.items() if k not in old]
    updated = [(list(r), list(k)) for k, r in new.items() if k in old and old[k] != r]
    return deleted, inserted, updated


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _diff(before_image: bytes, conn: sqlite3.Connection) -> dict[str, list]:
    """The rows a call changed: {table: [pk columns, deleted keys, inserted rows, updated (row, key)s]}."""
    old = sqlite3.connect(":memory:")
    old.deserialize(before_image)
    out = {}
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        for table in tables:
            info = conn.execute(f"PRAGMA table_info({_quote(table)})").fetchall()
            pk = [r[1] for r in sorted(info, key=lambda r: r[5]) if r[5] > 0] or ["rowid"]
            select = f"SELECT {', '.join(map(_quote, pk))}, * FROM {_quote(table)}"
            change = table_changes(len(pk), old.execute(select), conn.execute(select))
            if change is not None:
                if any(isinstance(v, bytes) for rows in (change[1], [r for r, _ in change[2]]) for row in rows for v in row):
                    raise ValueError(f"table {table} holds a BLOB value, which a tool result cannot carry")
                out[table] = [pk, *change]
    finally:
        old.close()
    return out


def prepare() -> None:
    """Make the event loop before the sandbox's guard is up (a loop opens a socket pair to wake itself)."""
    global _LOOP
    _LOOP = asyncio.new_event_loop()


def call_route(req: dict[str, Any], refusals: list[str]) -> dict[str, Any]:
    """Call one route of a loaded app against the slot's database (op "route")."""
    app = _loaded(req)
    conn = hold_state(req["state"])
    if conn.in_transaction:
        conn.rollback()
    app.proxy.point(conn)
    before, before_image = conn.total_changes, conn.serialize()
    url, query, payload = _request(app, req["method"], req["path"], req["params"], req["arguments"])
    try:
        status, raw = _LOOP.run_until_complete(_asgi(app.app, req["method"], url, query, payload))
        error = None
    except Exception as e:  # noqa: BLE001 - the app's own bug, reported as the tool's error
        status, raw, error = 500, b"", f"{type(e).__name__}: {e}"
    finally:
        if conn.in_transaction:  # an endpoint that never committed leaves nothing behind
            conn.rollback()
    if refusals:
        return {"outcome": "env_error", "message": f"the tool was stopped by the sandbox: {refusals[0]}"}
    try:
        body = json.loads(raw) if raw else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = raw.decode("utf-8", "replace")[:2000]
    reply: dict[str, Any] = {"value": {"status": status, "body": body}}
    if conn.total_changes != before:
        try:
            reply["changes"] = _diff(before_image, conn)
        except (sqlite3.Error, ValueError) as e:  # the child's state can no longer be mirrored: start afresh
            return {"outcome": "env_error", "message": f"the tool's changes cannot be read back: {e}"}
    if status >= 400:
        detail = body.get("detail", body) if isinstance(body, dict) else body
        reply |= {"outcome": "error", "message": error or f"HTTP {status}: {json.dumps(detail, default=str)[:2000]}"}
    else:
        reply["outcome"] = "ok"
    return reply


# --------------------------------------------------------------------------- AWM verifiers

_PATHS = {"initial": "/awm/initial.db", "final": "/awm/final.db"}


def _sqlite_shim(images: dict[str, bytes]) -> types.ModuleType:
    """A `sqlite3` module whose connect() opens the given images (read-only) by their fake paths."""
    shim = types.ModuleType("sqlite3")
    shim.__dict__.update({k: v for k, v in sqlite3.__dict__.items() if not k.startswith("__")})

    def connect(database, *args, **kwargs):
        name = str(database)
        if name.startswith("file:"):
            name = name[5:].split("?", 1)[0]
        image = images.get(name)
        if image is None:
            raise sqlite3.OperationalError(f"unable to open database file {database!r}")
        conn = sqlite3.connect(":memory:", check_same_thread=False)
        conn.deserialize(image)
        conn.execute("PRAGMA query_only = ON")
        return conn

    shim.connect = connect
    return shim


def run_awm_verifier(req: dict[str, Any]) -> dict[str, Any]:
    """Call an AWM verifier `entry(initial_db_path, final_db_path[, final_answer])` (op "awm_verify")."""
    if "template_image" in req:
        _TEMPLATES[req["template"]] = base64.b64decode(req["template_image"])
    initial = _TEMPLATES.get(req["template"])
    if initial is None:
        raise Stale(f"no template {req['template']}")
    final = hold_state(req["state"]).serialize()
    shim = _sqlite_shim({_PATHS["initial"]: initial, _PATHS["final"]: final})
    real_import = builtins.__import__

    def imp(name, globals=None, locals=None, fromlist=(), level=0):
        if name == "sqlite3":
            return shim
        return real_import(name, globals, locals, fromlist, level)

    ns: dict[str, Any] = {"__name__": "awm_verifier", "__builtins__": {**builtins.__dict__, "__import__": imp}}
    exec(compile(req["source"], "<awm verifier>", "exec"), ns)
    fn = ns.get(req["entry"])
    if not callable(fn):
        return {"outcome": "error", "message": f"the verifier defines no function {req['entry']!r}"}
    args = [_PATHS["initial"], _PATHS["final"]]
    try:
        if len(inspect.signature(fn).parameters) >= 3:
            args.append(req.get("final_answer"))
    except (TypeError, ValueError):
        pass
    value = fn(*args)
    json.dumps(value, default=str)
    return {"outcome": "ok", "value": json.loads(json.dumps(value, default=str))}
