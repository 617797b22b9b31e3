"""End to end: a short GRPO run on a tiny random policy writes metrics, checkpoints and plots, and resumes exactly."""

import json

import pytest

from awmjax.cli import main
from awmjax.config import RunConfig
from awmjax.train import train
from envgen.catalog import write_catalog
from tests.envgen.worlds import shop_world


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    return str(write_catalog(tmp_path_factory.mktemp("cat") / "shop", [shop_world()], held_out=0.0))


def _cfg(catalog, out, **train):
    return RunConfig.from_dict({
        "train": {"catalog": catalog, "out": str(out), "policy": "tiny-random", "steps": 2, "tasks_per_step": 2,
                  "group_size": 2, "micro_batch": 2, "checkpoint_every": 1, "max_cache_len": 1024, **train},
        "rollout": {"max_turns": 2, "max_new_tokens": 8, "max_context": 1024},
        # weight decay moves the parameters even when every group has equal rewards (as a random
        # policy's do), so the resume check below sees real parameter and optimizer-state changes
        "optim": {"learning_rate": 1e-2, "weight_decay": 0.5},
    })


def _metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_short_run_writes_metrics_checkpoints_and_resumes_exactly(catalog, tmp_path):
    full = train(_cfg(catalog, tmp_path / "full"), progress=False)
    rows = _metrics(full)
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("reward_mean", "outcome/complete", "outcome/format_error", "zero_variance_groups", "loss", "rollout_tokens_per_s"):
        assert key in rows[0], key
    assert sum(rows[0][f"outcome/{o}"] for o in ("complete", "partial", "incomplete", "format_error", "env_error")) == pytest.approx(1.0)
    assert (full / "checkpoints").is_dir() and (full / "config.json").is_file()

    # killed after one step, then resumed: the same metrics as the uninterrupted run
    part = tmp_path / "part"
    train(_cfg(catalog, part), progress=False, stop_after=1)
    assert len(_metrics(part)) == 1
    train(_cfg(catalog, part), progress=False)
    resumed = _metrics(part)
    assert [r["step"] for r in resumed] == [1, 2]
    assert rows[1]["param_norm"] < rows[0]["param_norm"]  # the run really changed the parameters
    for key in ("reward_mean", "loss", "outcome/format_error", "mean_turns", "param_norm", "entropy"):
        assert resumed[1][key] == pytest.approx(rows[1][key], rel=1e-6, abs=1e-7), key

    assert main(["plot", str(full)]) == 0 and (full / "curves.png").is_file()


def test_judge_lag_overlaps_batches_and_records_policy_lag(catalog, tmp_path):
    cfg = _cfg(catalog, tmp_path / "lag", steps=3)
    cfg = RunConfig.from_dict({**cfg.to_dict(), "judge": {"name": "delayed-code:0.3", "max_lag": 1}})
    rows = _metrics(train(cfg, progress=False))
    assert [r["policy_lag"] for r in rows] == [0.0, 1.0, 1.0]
    assert all(r["judge_seconds_mean"] >= 0.3 for r in rows)
    # the second and third batches' judgements ran while the next batch was sampled
    assert rows[1]["judge_wait_seconds"] < 0.3


def test_config_errors_name_section_and_key(tmp_path):
    with pytest.raises(ValueError, match=r"unknown key 'stepz' in \[train\]"):
        RunConfig.from_dict({"train": {"stepz": 3}})
    with pytest.raises(ValueError, match=r"\[train\] group_size must be >= 2"):
        RunConfig.from_dict({"train": {"group_size": 1}})
    bad = tmp_path / "run.toml"
    bad.write_text("[train]\nsteps = 0\n")
    assert main(["train", "--config", str(bad)]) == 2


def test_mesh_and_distributed_sections():
    from awmjax.config import DistributedSection, MeshSection

    assert MeshSection().sizes(8) == (8, 1, 1)  # data takes every device by default
    assert MeshSection(data=2, fsdp=-1, tensor=2).sizes(8) == (2, 2, 2)
    assert MeshSection(data=1, fsdp=1, tensor=1).sizes(1) == (1, 1, 1)
    with pytest.raises(ValueError, match=r"\[mesh\].*does not fit 8 devices"):
        MeshSection(data=3, fsdp=-1).sizes(8)
    with pytest.raises(ValueError, match=r"\[mesh\].*does not fit 8 devices"):
        MeshSection(data=2, fsdp=2, tensor=1).sizes(8)
    with pytest.raises(ValueError, match=r"\[mesh\]: \[mesh\] data, fsdp, tensor must be >= 1"):
        RunConfig.from_dict({"mesh": {"data": -1, "fsdp": -1}})
    env = {"AWMJAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "AWMJAX_NUM_PROCESSES": "4", "AWMJAX_PROCESS_ID": "3"}
    assert DistributedSection(enabled=True).initialize_args(env) == {
        "coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3}
    assert DistributedSection(enabled=True, process_id=0).initialize_args(env)["process_id"] == 0  # config first
    assert DistributedSection(enabled=True).initialize_args({}) == {}  # JAX's cluster auto-detection
    with pytest.raises(ValueError, match="AWMJAX_PROCESS_ID='x' is not an integer"):
        DistributedSection(enabled=True).initialize_args({"AWMJAX_PROCESS_ID": "x"})
