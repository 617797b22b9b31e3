"""Smoke run of the demo pipeline on a tiny configuration: every phase runs and leaves its outputs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_demo_pipeline_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-m", "experiments.demo", "--quick", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    assert "held-out completion: before" in text and "-> after" in text
    assert "tasks by kind" in text and "phase wall times:" in text
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"before", "after_sft", "after_grpo", "gold_check", "phases"}
    assert "held-out gold check (teacher-forced" in text and "tool picked" in text
    assert set(summary["phases"]) >= {"SFT warm start", "GRPO", "evaluate untrained", "evaluate after GRPO"}
    for phase in ("before", "after_sft", "after_grpo"):
        assert summary[phase]["overall"]["episodes"] >= 4
        assert any((out / "eval" / phase / "transcripts").iterdir())
        check = summary["gold_check"][phase]  # every policy checked on the same gold calls
        assert check["groups"]["all turns"]["calls"] == summary["gold_check"]["before"]["groups"]["all turns"]["calls"] > 0
        assert (out / "eval" / phase / "gold_check.json").is_file()
    for policy in (out / "sft" / "policy", out / "grpo" / "policy"):
        assert (policy / "config.json").is_file() and (policy / "tokenizer.json").is_file()
    assert (out / "completion.png").stat().st_size > 0 and (out / "grpo" / "metrics.jsonl").is_file()
    assert (out / "config.json").is_file() and any((out / "grpo" / "checkpoints").iterdir())


def test_a_training_run_folder_loads_from_its_latest_checkpoint(tmp_path):
    """`--policy RUN` works mid-training too: no exported policy/ yet, the latest orbax checkpoint is read."""
    import shutil

    import jax
    import numpy as np

    from awmjax.config import RunConfig
    from awmjax.policy import load_policy
    from awmjax.rl.train_step import init_state
    from awmjax.train import _checkpointer, save_checkpoint, train
    from flax import nnx
    from envgen.build import generate_catalog

    generate_catalog(6, 0, str(tmp_path / "cat"), profile="compact", progress=False, workers=1)
    cfg = RunConfig.from_dict({"train": {"catalog": str(tmp_path / "cat"), "out": str(tmp_path / "run"), "policy": "tiny-random",
                                         "steps": 1, "tasks_per_step": 1, "group_size": 2, "micro_batch": 2},
                               "rollout": {"max_turns": 1, "max_new_tokens": 8}})
    run = train(cfg, progress=False)
    exported, _, _ = load_policy(str(run))
    shutil.rmtree(run / "policy")  # as if the run were still going
    # a later checkpoint with recognizable parameters: the loader must read that one
    graphdef, state = init_state(exported, cfg.optim, with_reference=cfg.grpo.kl_coef > 0)
    state = state.__class__(jax.tree.map(lambda x: x * 2, state.params), state.opt_state, state.step, state.ref_params)
    mngr = _checkpointer(run)
    save_checkpoint(mngr, 7, state, {"step": 7})
    mngr.wait_until_finished()
    mngr.close()
    restored, _, _ = load_policy(str(run))
    for a, b in zip(jax.tree.leaves(nnx.state(exported)), jax.tree.leaves(nnx.state(restored))):
        np.testing.assert_array_equal(2 * np.asarray(a), np.asarray(b))


def test_a_new_demo_run_sets_the_last_one_aside(tmp_path):
    """The trainer resumes from checkpoints in its folder: a second demo into the same --out
    must not find the first run's, and the first run is kept, not deleted."""
    from experiments.demo import _set_aside

    out = tmp_path / "demo"
    assert _set_aside(out) is None  # nothing there yet
    (out / "grpo" / "checkpoints" / "2").mkdir(parents=True)
    (out / "summary.json").write_text("{}")
    previous = _set_aside(out)
    assert previous == tmp_path / "demo.previous" and not out.exists()
    assert (previous / "grpo" / "checkpoints" / "2").is_dir()
    out.mkdir()
    (out / "summary.json").write_text('{"run": 2}')
    assert _set_aside(out) == previous  # the older one is replaced
    assert (previous / "summary.json").read_text() == '{"run": 2}' and not (previous / "grpo").exists()
    out.write_text("not a folder")
    with pytest.raises(SystemExit, match="not a folder"):
        _set_aside(out)
