"""The sharded train step equals the one-device step: on 8 fake devices, and across two processes."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.awmjax.rl.sharded_case import compare, run

REPO = Path(__file__).resolve().parents[3]
CASE = "tests.awmjax.rl.sharded_case"


def _env() -> dict[str, str]:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    env.pop("XLA_FLAGS", None)  # the case sets its own device count before importing jax
    return env


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_train_step_on_8_fake_devices_matches_one_device():
    result = subprocess.run([sys.executable, "-m", CASE, "mesh8"], capture_output=True, text=True,
                            env=_env(), cwd=REPO, timeout=300)
    assert "SHARDED_STEP_OK" in result.stdout, result.stderr[-3000:]


def test_two_processes_feeding_their_own_rows_match_one_process(tmp_path):
    port = _free_port()
    outs = [tmp_path / f"process{i}.npz" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-m", CASE, "worker", str(i), str(port), str(outs[i])],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=REPO)
             for i in range(2)]
    logs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=120)  # a hung collective fails the test, not CI
            logs.append(out + err[-3000:])
    except subprocess.TimeoutExpired:
        pytest.fail("two-process train step did not finish in 120 s")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log
    expected = run()  # one process, one device, the full batch
    for path in outs:
        with np.load(path) as f:
            compare(expected, dict(f))
