"""The sharded train step equals the one-device step: on 8 fake devices, and across two processes."""

import subprocess
import sys

import numpy as np

from tests.awmjax.rl.multiprocess import REPO, free_port, run_workers, subprocess_env
from tests.awmjax.rl.sharded_case import compare, run

CASE = "tests.awmjax.rl.sharded_case"


def test_train_step_on_8_fake_devices_matches_one_device():
    result = subprocess.run([sys.executable, "-m", CASE, "mesh8"], capture_output=True, text=True,
                            env=subprocess_env(), cwd=REPO, timeout=300)
    assert "SHARDED_STEP_OK" in result.stdout, result.stderr[-3000:]


def test_two_processes_feeding_their_own_rows_match_one_process(tmp_path):
    port = free_port()
    outs = [tmp_path / f"process{i}.npz" for i in range(2)]
    run_workers(CASE, [["worker", str(i), str(port), str(outs[i])] for i in range(2)], timeout=120)
    expected = run()  # one process, one device, the full batch
    for path in outs:
        with np.load(path) as f:
            compare(expected, dict(f))
