"""Running a test case as several JAX processes on this machine (CPU collectives over loopback)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def subprocess_env() -> dict[str, str]:
    """This environment for a case subprocess: CPU JAX, the repo importable, no inherited device count."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    env.pop("XLA_FLAGS", None)  # the case sets its own device count before importing jax
    return env


def free_port() -> int:
    """A loopback port free right now (for the jax.distributed coordinator)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_workers(module: str, argvs: list[list[str]], timeout: float) -> list[str]:
    """Run `python -m module *argv` once per argv, all at once; fail the test unless all exit 0."""
    procs = [subprocess.Popen([sys.executable, "-m", module, *argv], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=subprocess_env(), cwd=REPO)
             for argv in argvs]
    logs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)  # a hung collective fails the test, not CI
            logs.append(out + err[-3000:])
    except subprocess.TimeoutExpired:
        pytest.fail(f"{module}: {len(argvs)} processes did not finish in {timeout} s")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log
    return logs
