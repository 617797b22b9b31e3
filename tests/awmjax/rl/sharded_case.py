"""A fixed two-step GRPO update of the tiny model, run on one device, on a mesh, or as one of two processes.

Run as a script by tests/awmjax/rl/test_sharded_train_step.py in subprocesses, because the
device count (XLA_FLAGS) and jax.distributed must be set before jax starts:

    python -m tests.awmjax.rl.sharded_case mesh8
    python -m tests.awmjax.rl.sharded_case worker PROCESS_ID PORT OUT.npz
"""

from __future__ import annotations

import os
import sys

import numpy as np

ROWS = 8  # the global batch
MICRO_BATCH = 4
STEPS = 2


def case_batch():
    """The full fixed batch (8 rows, two micro-batches of 4)."""
    from awmjax.rl.batch import Sample, pack

    rng = np.random.default_rng(0)
    samples = []
    for k in range(ROWS):
        n = 20 + 3 * k
        ids = rng.integers(1, 255, n).tolist()
        mask = [0] * 10 + [1] * (n - 10)
        samples.append(Sample(ids, mask, rng.uniform(-6, -4, n).tolist(), float(rng.normal())))
    (batch,) = pack(samples, micro_batch=MICRO_BATCH, pad_id=0)
    return batch


def run(mesh=None, rows: slice = slice(None)) -> dict[str, np.ndarray]:
    """Two steps from the same initial model; losses, grad norms and the final params as host arrays."""
    import jax
    from flax import nnx

    from awmjax.model.config import ModelConfig
    from awmjax.model.decoder import Decoder
    from awmjax.rl.batch import TrainBatch
    from awmjax.rl.config import GRPOConfig
    from awmjax.rl.sharding import place_batch, shard_state
    from awmjax.rl.train_step import OptimConfig, init_state, make_train_step

    optim = OptimConfig(learning_rate=1e-3)
    graphdef, state = init_state(Decoder(ModelConfig.tiny(), rngs=nnx.Rngs(0)), optim, with_reference=True)
    step = make_train_step(graphdef, optim, GRPOConfig(kl_coef=0.05), MICRO_BATCH, mesh=mesh)
    full = case_batch()
    batch = TrainBatch(*(a[rows] for a in (full.tokens_BT, full.targets_BT, full.mask_BT,
                                           full.old_logp_BT, full.adv_B, full.positions_BT,
                                           full.loss_index_BK)))
    if mesh is not None:
        state = shard_state(state, mesh)
        batch = place_batch(batch, mesh)
    out: dict[str, list] = {"loss": [], "grad_norm": []}
    for _ in range(STEPS):
        state, metrics = step(state, batch)
        out["loss"].append(float(metrics["loss"]))
        out["grad_norm"].append(float(metrics["grad_norm"]))
    result = {k: np.asarray(v) for k, v in out.items()}
    params = jax.tree.leaves(state.params)
    if mesh is not None and jax.process_count() > 1:
        from jax.experimental import multihost_utils

        params = multihost_utils.process_allgather(params, tiled=True)
    for i, p in enumerate(params):
        result[f"param{i}"] = np.asarray(p)
    result["step"] = np.asarray(int(state.step))
    return result


def compare(a: dict, b: dict, tol: float = 1e-5, param_tol: float = 3e-5) -> None:
    """Assert two runs agree: losses and grad norms to tol (relative), params to param_tol (absolute).

    Adam divides by the gradient's scale, so a reduction-order difference in a near-zero
    gradient moves a parameter by a fraction of one step (lr = 1e-3); 3e-5 is 3% of a step,
    while a wrongly placed row or shard moves whole steps.
    """
    assert sorted(a) == sorted(b), (sorted(a), sorted(b))
    for key in a:
        if key in ("loss", "grad_norm"):
            np.testing.assert_allclose(a[key], b[key], rtol=tol, atol=tol, err_msg=key)
        else:
            np.testing.assert_allclose(a[key], b[key], rtol=0, atol=param_tol, err_msg=key)


def _main(argv: list[str]) -> None:
    mode = argv[0]
    os.environ["JAX_PLATFORMS"] = "cpu"
    if mode == "mesh8":
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
        import jax

        from awmjax.model.sharding import make_mesh

        assert len(jax.devices()) == 8
        mesh = make_mesh(data=2, fsdp=2, tensor=2)
        single, sharded = run(None), run(mesh)
        compare(single, sharded)
        print("SHARDED_STEP_OK", single["loss"].tolist(), sharded["loss"].tolist())
    elif mode == "worker":
        process_id, port, out_path = int(argv[1]), int(argv[2]), argv[3]
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
        import jax

        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                                   process_id=process_id, initialization_timeout=60,
                                   heartbeat_timeout_seconds=30, shutdown_timeout_seconds=30)
        from awmjax.model.sharding import make_mesh

        assert jax.process_count() == 2 and len(jax.devices()) == 4 and len(jax.local_devices()) == 2
        # fsdp spans the two processes (rows and parameter shards cross hosts), tensor stays inside each
        mesh = make_mesh(data=1, fsdp=2, tensor=2)
        half = ROWS // 2
        result = run(mesh, slice(process_id * half, (process_id + 1) * half))
        tmp = out_path + ".tmp.npz"
        np.savez(tmp, **result)
        os.replace(tmp, out_path)
        jax.distributed.shutdown()
        print("WORKER_OK", process_id)
    else:
        raise SystemExit(f"unknown mode {mode!r}; use mesh8 or worker")


if __name__ == "__main__":
    _main(sys.argv[1:])
