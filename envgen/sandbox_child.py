"""The sandboxed child process of `envgen.sandbox`: reads JSON requests on stdin, answers on stdout.

Started only by `PythonSandbox`. Before it reads the first piece of untrusted code it
imports what tools need and installs an audit hook that cannot be removed.
"""

from __future__ import annotations

import base64
import json
import sys


_REFUSALS: list[str] = []  # what the guard refused during the current request


def _install_guard(readable_roots: tuple[str, ...]) -> None:
    import os

    denied_prefixes = ("socket.", "subprocess.", "os.exec", "os.fork", "os.spawn", "os.posix_spawn", "ctypes.", "pty.", "os.kill", "os.system", "os.putenv", "os.unsetenv", "os.chdir", "os.remove", "os.rename", "os.rmdir", "os.mkdir", "shutil.", "sys.addaudithook", "os.chmod", "os.chown", "os.truncate", "os.link", "os.symlink", "resource.setrlimit", "signal.")
    roots = tuple(os.path.realpath(r) for r in readable_roots)

    def refuse(message: str):
        _REFUSALS.append(message)
        raise PermissionError(message)

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode = args[0], args[1]
            if isinstance(path, int):
                return  # an already-open descriptor (stdin/stdout)
            if mode and any(c in str(mode) for c in "wax+"):
                refuse(f"sandbox: writing files is not allowed ({path})")
            if isinstance(path, (str, bytes)):
                real = os.path.realpath(os.fsdecode(path))
                if real == ":memory:" or real.startswith(roots):
                    return
            refuse(f"sandbox: reading {path} is not allowed")
        if event.startswith(denied_prefixes) and event not in ("socket.gethostname",):
            refuse(f"sandbox: {event} is not allowed")
        if event == "sqlite3.enable_load_extension":
            refuse("sandbox: sqlite extensions are not allowed")

    sys.addaudithook(hook)


def _connect(image_b64: str, *, readonly: bool):
    import sqlite3

    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.deserialize(base64.b64decode(image_b64))
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    if readonly:
        conn.execute("PRAGMA query_only = ON")
    return conn


_CODE_CACHE: dict[str, dict] = {}


def _namespace(source: str) -> dict:
    ns = _CODE_CACHE.get(source)
    if ns is None:
        ns = {"__name__": "untrusted"}
        exec(compile(source, "<untrusted>", "exec"), ns)  # the reason this process exists
        if len(_CODE_CACHE) > 256:
            _CODE_CACHE.clear()
        _CODE_CACHE[source] = ns
    return ns


def _jsonable(value):
    json.dumps(value)  # raises TypeError for values the agent could not see as JSON
    return value


def _handle_app(req: dict) -> dict:
    from envgen import app_child

    _REFUSALS.clear()
    try:
        if req["op"] == "load_app":
            return app_child.load_app(req)
        if req["op"] == "route":
            return app_child.call_route(req, _REFUSALS)
        return app_child.run_awm_verifier(req)
    except app_child.Stale as e:
        return {"outcome": "stale", "message": str(e)}
    except MemoryError:
        return {"outcome": "env_error", "message": "the code exceeded the sandbox memory limit"}
    except BaseException as e:  # noqa: BLE001 - untrusted code may raise anything
        if _REFUSALS:
            return {"outcome": "env_error", "message": f"stopped by the sandbox: {_REFUSALS[0]}"}
        return {"outcome": "error", "message": f"{type(e).__name__}: {e}"}


def _handle(req: dict) -> dict:
    op = req["op"]
    if op in ("load_app", "route", "awm_verify"):
        return _handle_app(req)
    try:
        ns = _namespace(req["source"])
    except BaseException as e:  # noqa: BLE001 - untrusted code may raise anything
        return {"outcome": "error", "message": f"the code does not load: {type(e).__name__}: {e}"}
    try:
        if op == "tool":
            fn = ns.get(req["entry"])
            if not callable(fn):
                return {"outcome": "error", "message": f"no function named {req['entry']!r} in the tool source"}
            db = _connect(req["image"], readonly=False)
            value = _jsonable(fn(db, **req["arguments"]))
            image = base64.b64encode(db.serialize()).decode()
            return {"outcome": "ok", "value": value, "image": image}
        if op == "verify":
            fn = ns.get("verify")
            if not callable(fn):
                return {"outcome": "error", "message": "the verifier source defines no verify(initial_db, final_db, final_answer)"}
            initial = _connect(req["initial"], readonly=True)
            final = _connect(req["final"], readonly=True)
            return {"outcome": "ok", "value": _jsonable(fn(initial, final, req.get("final_answer")))}
        return {"outcome": "env_error", "message": f"unknown request {op!r}"}
    except MemoryError:
        return {"outcome": "env_error", "message": "the code exceeded the sandbox memory limit"}
    except RecursionError:
        return {"outcome": "error", "message": "the code recursed too deeply"}
    except BaseException as e:  # noqa: BLE001
        return {"outcome": "error", "message": f"{type(e).__name__}: {e}"}


def main() -> None:
    out = sys.stdout.buffer
    first = json.loads(sys.stdin.readline())
    sys.path[:0] = [p for p in first.get("paths", []) if p not in sys.path]
    # what tools and verifiers may use, imported before the guard goes up
    import datetime, decimal, hashlib, math, re, sqlite3, statistics, uuid  # noqa: F401,E401
    from envgen import app_child  # apps' runtime; envgen may live outside the readable roots

    app_child.prepare()
    _install_guard(tuple(p for p in sys.path if p) + (sys.prefix, sys.base_prefix))
    out.write(b'{"outcome": "ok"}\n')
    out.flush()
    for line in sys.stdin:
        reply = _handle(json.loads(line))
        try:
            data = json.dumps(reply)
        except (TypeError, ValueError) as e:
            data = json.dumps({"outcome": "error", "message": f"result is not JSON: {e}"})
        out.write(data.encode() + b"\n")
        out.flush()


if __name__ == "__main__":
    main()
