"""Running untrusted Python (model-written or imported tools and verifiers) in a sandboxed process.

The parent never executes the source. A child process (`python -I -m envgen.sandbox_child`)
does, under these limits:
- resource limits set before it starts: address space, CPU seconds, no core files,
  no file writes (RLIMIT_FSIZE 0), few open files;
- a private network namespace where the OS allows it (no interfaces but loopback);
- an audit hook installed before any untrusted code runs that refuses sockets,
  subprocesses, exec/fork, ctypes, and opening files except reading Python's own
  library (so lazy imports still work);
- a wall-clock deadline per call, enforced by the parent: a call that runs past it
  gets the child killed and replaced, and the call reports an environment error.

Databases cross the boundary as SQLite images (bytes); the child opens them with the
standard `sqlite3` module, calls the code, and returns the JSON result (and, for tools,
the new image). Worlds with an app (AWM's FastAPI servers, see `envgen.app_child`) keep
their app loaded in the child and each slot's database held there by a token, so an
image crosses only when the child does not already hold that state.
"""

from __future__ import annotations

import base64
import json
import os
import resource
import select
import subprocess
import sys
import time
import functools
import hashlib
from dataclasses import dataclass
from typing import Any, Callable

CLONE_NEWNET = 0x40000000


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one sandbox child process."""

    call_seconds: float = 5.0
    memory_bytes: int = 1 << 30
    cpu_seconds: int = 600  # over the child's whole life; it is replaced when spent
    max_open_files: int = 64

    def __post_init__(self):
        if self.call_seconds <= 0 or self.memory_bytes < (64 << 20):
            raise ValueError("SandboxLimits: call_seconds must be > 0 and memory_bytes at least 64 MiB")


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one sandboxed call: "ok", "error" (the code raised) or "env_error"."""

    outcome: str
    value: Any = None
    image: bytes | None = None
    message: str = ""
    changes: dict[str, list] | None = None  # rows an app's route changed (see envgen.app_child)


def _limit_child(limits: SandboxLimits):
    def apply():
        os.setsid()
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.max_open_files, limits.max_open_files))
        try:  # a fresh network namespace has no route anywhere; needs root or user namespaces
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.unshare(CLONE_NEWNET)
        except Exception:
            pass  # the audit hook still refuses sockets

    return apply


@dataclass(frozen=True)
class DbState:
    """A slot's database as the sandbox sees it: a key (one per slot), a token that changes
    with its contents, how to get its image, and the world's template when it is unchanged."""

    key: str
    token: str
    image: Callable[[], bytes]
    template: tuple[str, bytes] | None = None  # (world id, template image)


APP_LOAD_SECONDS = 60.0  # importing FastAPI + SQLAlchemy and building an app's models


@functools.lru_cache(maxsize=256)
def app_key(source: str) -> str:
    """The name an app's source is loaded under in the child."""
    return hashlib.sha256(source.encode()).hexdigest()[:20]


class PythonSandbox:
    """A long-lived sandboxed child process that runs untrusted tool and verifier code."""

    def __init__(self, limits: SandboxLimits = SandboxLimits()):
        self.limits = limits
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self.apps: set[str] = set()  # app keys the child has loaded
        self.templates: set[str] = set()  # world ids whose template image the child has
        # state key -> (the child's name for the database it holds, the parent's token for that
        # state, or None until the caller has applied the call's changes)
        self.held: dict[str, tuple[str, str | None]] = {}

    def _ensure(self) -> subprocess.Popen:
        if self.proc is None or self.proc.poll() is not None:
            self._forget()  # a new child holds nothing
            # DATABASE_PATH: AWM's apps read their database URL from it at import; an
            # in-memory one means importing an app opens no file (envgen.app_child rebinds it)
            env = {"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "DATABASE_PATH": "sqlite://"}
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-m", "envgen.sandbox_child"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=env,
                cwd="/",
                preexec_fn=_limit_child(self.limits),
                bufsize=0,
            )
            # -I drops the user's paths; tell the child where envgen and site-packages live
            paths = [p for p in sys.path if p]
            self._send({"op": "init", "paths": paths})
            reply = self._recv(timeout=30.0)
            if reply is None or reply.get("outcome") != "ok":
                self.kill()
                raise RuntimeError(f"the Python sandbox failed to start: {reply}")
        return self.proc

    def _send(self, msg: dict) -> None:
        data = (json.dumps(msg) + "\n").encode()
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def _recv(self, timeout: float) -> dict | None:
        end = time.monotonic() + timeout
        buf = b""
        fd = self.proc.stdout
        while not buf.endswith(b"\n"):
            left = end - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd.fileno(), 1 << 20)
            if not chunk:
                return {"outcome": "env_error", "message": "the sandbox process died (memory or CPU limit, or a crash)"}
            buf += chunk
        return json.loads(buf)

    def _call(self, msg: dict, timeout: float | None) -> SandboxResult:
        try:
            self._ensure()
            self._send(msg)
        except (BrokenPipeError, OSError) as e:
            self.kill()
            return SandboxResult("env_error", message=f"the sandbox process could not be reached: {e}")
        timeout = self.limits.call_seconds if timeout is None else timeout
        reply = self._recv(timeout)
        if reply is None:
            self.kill()
            return SandboxResult("env_error", message=f"killed after exceeding the {timeout:g}s deadline")
        if reply.get("outcome") == "env_error":
            self.kill()
        image = base64.b64decode(reply["image"]) if reply.get("image") else None
        return SandboxResult(reply["outcome"], reply.get("value"), image, reply.get("message", ""), reply.get("changes"))

    def run_tool(self, source: str, entry: str, image: bytes, arguments: dict, *, timeout: float | None = None) -> SandboxResult:
        """Call `entry(db, **arguments)` from `source` on a copy of `image`; returns the new image."""
        return self._call(
            {"op": "tool", "source": source, "entry": entry, "image": base64.b64encode(image).decode(), "arguments": arguments},
            timeout,
        )

    def run_verifier(self, source: str, initial: bytes, final: bytes, final_answer: str | None, *, timeout: float | None = None) -> SandboxResult:
        """Call `verify(initial_db, final_db, final_answer)` from `source` on read-only copies."""
        return self._call(
            {
                "op": "verify",
                "source": source,
                "initial": base64.b64encode(initial).decode(),
                "final": base64.b64encode(final).decode(),
                "final_answer": final_answer,
            },
            timeout,
        )

    def _state_msg(self, state: DbState, *, full: bool = False) -> dict[str, Any]:
        msg: dict[str, Any] = {"key": state.key, "token": state.token}
        held = self.held.get(state.key)
        if not full and held is not None and held[1] == state.token:
            if held[0] != state.token:  # the child holds it under the token it had before the call changed it
                msg["rename"] = held[0]
            return msg
        if state.template is not None:
            wid, image = state.template
            msg["template"] = wid
            if full or wid not in self.templates:
                msg["template_image"] = base64.b64encode(image).decode()
                self.templates.add(wid)
        else:
            msg["image"] = base64.b64encode(state.image()).decode()
        return msg

    def _app_call(self, msg: dict[str, Any], source: str | None, state: DbState, timeout: float | None, template: tuple[str, bytes] | None = None) -> SandboxResult:
        key = msg.get("app")
        if source is not None and key not in self.apps:
            res = self._call({"op": "load_app", "app": key, "source": source}, max(APP_LOAD_SECONDS, self.limits.call_seconds))
            if res.outcome != "ok":
                return SandboxResult("env_error", message=f"the world's app does not load: {res.message}")
            self.apps.add(key)
        res = self._call(msg | self._templ_msg(template) | {"state": self._state_msg(state)}, timeout)
        if res.outcome == "stale":  # the child lost what we thought it held (or evicted the app): send it all
            self.held.pop(state.key, None)
            if source is not None and res.message.startswith("app "):
                self._call({"op": "load_app", "app": key, "source": source}, max(APP_LOAD_SECONDS, self.limits.call_seconds))
            res = self._call(msg | self._templ_msg(template, full=True) | {"state": self._state_msg(state, full=True)}, timeout)
        if res.outcome == "stale":
            return SandboxResult("env_error", message=f"the sandbox lost the database state: {res.message}")
        if res.outcome == "env_error":
            self.held.pop(state.key, None)
        else:  # the child holds the call's result under this state's token (its changes, if any, pending)
            self.held[state.key] = (state.token, state.token if res.changes is None else None)
        return res

    def _templ_msg(self, template: tuple[str, bytes] | None, *, full: bool = False) -> dict[str, Any]:
        if template is None or (template[0] in self.templates and not full):
            return {}
        self.templates.add(template[0])
        return {"template_image": base64.b64encode(template[1]).decode()}

    def note_state(self, key: str, token: str) -> None:
        """The caller applied the changes of the last call on `key`; the state is now `token`."""
        held = self.held.get(key)
        if held is not None and held[1] is None:
            self.held[key] = (held[0], token)

    def run_route(self, source: str, method: str, path: str, params: dict[str, str], arguments: dict, state: DbState, *, timeout: float | None = None) -> SandboxResult:
        """Call route `method path` of the FastAPI app in `source` against `state`; the value is {"status", "body"}."""
        msg = {"op": "route", "app": app_key(source), "method": method, "path": path, "params": params, "arguments": arguments}
        return self._app_call(msg, source, state, timeout)

    def run_awm_verifier(self, source: str, entry: str, state: DbState, template: tuple[str, bytes], final_answer: str | None, *, timeout: float | None = None) -> SandboxResult:
        """Call AWM verifier `entry(initial_db_path, final_db_path[, final_answer])` on the template and `state`."""
        msg = {"op": "awm_verify", "source": source, "entry": entry, "template": template[0], "final_answer": final_answer}
        return self._app_call(msg, None, state, timeout, template)

    def _forget(self) -> None:
        self.apps.clear()
        self.templates.clear()
        self.held.clear()

    def kill(self) -> None:
        """Kill the child; the next call starts a fresh one."""
        self._forget()
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, 9)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait()
            for f in (self.proc.stdin, self.proc.stdout):
                f.close()
            self.proc = None
            self.restarts += 1

    def close(self) -> None:
        """Stop the child process."""
        self.kill()

    def __enter__(self) -> "PythonSandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
