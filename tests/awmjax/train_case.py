"""A short GRPO run of the tiny random policy, as one process or as one of two; run as a script.

tests/awmjax/test_train_multiprocess.py starts it in subprocesses, because the device count
(XLA_FLAGS) and jax.distributed must be set before jax starts:

    python -m tests.awmjax.train_case single CATALOG OUT_DIR
    python -m tests.awmjax.train_case worker PROCESS_ID PORT CATALOG OUT_DIR

Each run writes OUT_DIR/run (metrics.jsonl, checkpoints) and, from process 0, OUT_DIR/params.npz
(the final parameters, restored from the last checkpoint the way a resumed run restores them).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np


async def parity_judge(episode):
    """Complete when the sum of the policy's token ids is even: a verdict fixed by the episode's
    content alone, so a random policy's groups get unequal rewards and the update has a gradient."""
    from awmjax.judges import Judgement

    conv = episode.conversation
    written = sum(i for i, m in zip(conv.ids, conv.mask) if m)
    return Judgement("complete" if written % 2 == 0 else "incomplete", "parity")


def config(catalog: str, out: str, *, distributed: bool):
    """Two steps of two tasks x two episodes, four rows per micro-batch (one per device of the 2 x 2 run)."""
    from awmjax.config import RunConfig
    from awmjax.judges import JUDGES

    JUDGES["parity"] = lambda **_: parity_judge

    return RunConfig.from_dict({
        "train": {"catalog": catalog, "out": out, "policy": "tiny-random", "steps": 2, "tasks_per_step": 2,
                  "group_size": 2, "micro_batch": 4, "checkpoint_every": 1, "max_cache_len": 1024},
        "rollout": {"max_turns": 2, "max_new_tokens": 8, "max_context": 1024},
        "optim": {"learning_rate": 1e-2, "weight_decay": 0.5},
        "judge": {"name": "parity"},
        "mesh": {"data": -1},
        "distributed": {"enabled": distributed},
    })


def final_params(cfg) -> list[np.ndarray]:
    """The last checkpoint's parameters as host arrays (every process takes part; all get them)."""
    import jax

    from awmjax.model.sharding import make_mesh
    from awmjax.policy import load_policy
    from awmjax.rl.sharding import local_copy, shard_state
    from awmjax.rl.train_step import init_state
    from awmjax.train import _checkpointer, restore_checkpoint

    t = cfg.train
    model, _, _ = load_policy(t.policy, dtype=t.dtype, seed=t.seed + 1)  # other values, the same shapes
    _, state = init_state(model, cfg.optim, with_reference=cfg.grpo.kl_coef > 0)
    mngr = _checkpointer(Path(t.out))
    step, state = restore_checkpoint(mngr, shard_state(state, make_mesh(*cfg.mesh.sizes(jax.device_count()))))
    mngr.close()
    assert step == t.steps, step
    return [np.asarray(p) for p in jax.tree.leaves(local_copy(state.params))]


def _run(catalog: str, out_dir: Path, *, distributed: bool) -> None:
    import jax

    from awmjax.train import train

    cfg = config(catalog, str(out_dir / "run"), distributed=distributed)
    train(cfg, progress=False)
    params = final_params(cfg)
    if jax.process_index() == 0:
        tmp = out_dir / "params.tmp.npz"
        np.savez(tmp, *params)
        os.replace(tmp, out_dir / "params.npz")


def _main(argv: list[str]) -> None:
    os.environ["JAX_PLATFORMS"] = "cpu"
    mode = argv[0]
    if mode == "single":
        _run(argv[1], Path(argv[2]), distributed=False)
        print("SINGLE_OK")
    elif mode == "worker":
        process_id, port = argv[1], argv[2]
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
        os.environ.update(AWMJAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", AWMJAX_NUM_PROCESSES="2",
                          AWMJAX_PROCESS_ID=process_id)
        _run(argv[3], Path(argv[4]), distributed=True)
        import jax

        assert jax.process_count() == 2 and jax.device_count() == 4
        jax.distributed.shutdown()
        print("WORKER_OK", process_id)
    else:
        raise SystemExit(f"unknown mode {mode!r}; use single or worker")


if __name__ == "__main__":
    _main(sys.argv[1:])
