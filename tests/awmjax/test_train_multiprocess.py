"""Training split over two processes (CPU collectives, 2 x 2 devices) equals the one-process run."""

import json
import subprocess
import sys

import numpy as np
import pytest

from envgen.catalog import write_catalog
from tests.awmjax.rl.multiprocess import REPO, free_port, run_workers, subprocess_env
from tests.envgen.worlds import shop_world

CASE = "tests.awmjax.train_case"
# the timings differ between runs; everything else must agree
TIMING = ("seconds", "tokens_per_s", "judge_wait", "judge_seconds")


def _rows(out):
    return [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]


def test_two_process_training_equals_one_process(tmp_path):
    catalog = str(write_catalog(tmp_path / "cat" / "shop", [shop_world()], held_out=0.0))
    single = tmp_path / "single"
    result = subprocess.run([sys.executable, "-m", CASE, "single", catalog, str(single)], capture_output=True,
                            text=True, env=subprocess_env(), cwd=REPO, timeout=300)
    assert "SINGLE_OK" in result.stdout, result.stderr[-3000:]

    multi = tmp_path / "multi"
    port = free_port()
    run_workers(CASE, [["worker", str(i), str(port), catalog, str(multi)] for i in range(2)], timeout=300)

    expected, got = _rows(single), _rows(multi)
    assert [r["step"] for r in got] == [1, 2]  # process 0 alone wrote the metrics
    assert min(r["zero_variance_groups"] for r in expected) < 1 and max(r["grad_norm"] for r in expected) > 1e-3
    for want, have in zip(expected, got):
        assert sorted(want) == sorted(have)
        for key in want:
            if not any(t in key for t in TIMING):
                assert have[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6), key
    with np.load(single / "params.npz") as a, np.load(multi / "params.npz") as b:
        assert len(a.files) == len(b.files) > 0
        for name in a.files:
            np.testing.assert_allclose(b[name], a[name], rtol=0, atol=1e-4, err_msg=name)
