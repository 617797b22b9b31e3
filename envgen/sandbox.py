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
the new image).
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
from dataclasses import dataclass
from typing import Any

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


class PythonSandbox:
    """A long-lived sandboxed child process that runs untrusted tool and verifier code."""

    def __init__(self, limits: SandboxLimits = SandboxLimits()):
        self.limits = limits
        self.proc: subprocess.Popen | None = None
        self.restarts = 0

    def _ensure(self) -> subprocess.Popen:
        if self.proc is None or self.proc.poll() is not None:
            env = {"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
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
        return SandboxResult(reply["outcome"], reply.get("value"), image, reply.get("message", ""))

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

    def kill(self) -> None:
        """Kill the child; the next call starts a fresh one."""
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
