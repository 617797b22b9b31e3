"""The GRPO update computes logits only at the loss positions (TrainBatch.loss_index_BK): its
loss, metrics and gradients equal the full-logits computation, padding slots carry nothing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from awmjax.model.config import ModelConfig
from awmjax.model.decoder import Decoder
from awmjax.rl.batch import Sample, TrainBatch, loss_index, pack
from awmjax.rl.config import GRPOConfig
from awmjax.rl.loss import policy_loss
from awmjax.rl.sharding import align_batches
from awmjax.rl.train_step import OptimConfig, batch_arrays, init_state, make_micro_loss, make_train_step, token_logprobs


def _batch() -> TrainBatch:
    """Rows with 1, 4, 14 and 30 loss tokens; row 0's first target (position 0) carries loss,
    so a padding slot that read position 0 without its mask zeroed would count it twice."""
    rng = np.random.default_rng(3)
    samples = []
    for n, mask in ((20, [0, 1] + [0] * 18),
                    (25, [0] * 21 + [1] * 4),
                    (30, [0] * 8 + [1] * 10 + [0] * 8 + [1] * 4),
                    (40, [0] * 10 + [1] * 30)):
        ids = rng.integers(1, 255, n).tolist()
        samples.append(Sample(ids, mask, rng.uniform(-6, -4, n).tolist(), float(rng.normal())))
    (batch,) = pack(samples, micro_batch=4, pad_id=0)
    return batch


def test_loss_index_lists_loss_positions_then_padding():
    batch = _batch()
    T = batch.shape[1]
    assert batch.loss_index_BK.shape == (4, min(64, T)) and batch.loss_index_BK.dtype == np.int32
    for b in range(4):
        at = np.flatnonzero(batch.mask_BT[b])
        assert batch.loss_index_BK[b, : len(at)].tolist() == at.tolist()
        assert (batch.loss_index_BK[b, len(at):] == -1).all()
    assert batch.loss_index_BK[0, 0] == 0 and batch.mask_BT[0, 0] == 1
    assert loss_index(batch.mask_BT, slots=T).shape == (4, T)
    with pytest.raises(ValueError):
        loss_index(batch.mask_BT, slots=29)


def _with_slots(batch: TrainBatch, slots: int) -> TrainBatch:
    fields = ("tokens_BT", "targets_BT", "mask_BT", "old_logp_BT", "adv_B", "positions_BT")
    return TrainBatch(*(getattr(batch, f) for f in fields), loss_index(batch.mask_BT, slots=slots))


def _full_logits_loss(graphdef, grpo):
    """The reference: logits at every position, the loss over (B, T) arrays."""

    def loss_fn(params, ref_params, batch):
        logp, entropy = token_logprobs(graphdef, params, batch.tokens_BT, batch.positions_BT, batch.targets_BT)
        ref = None
        if ref_params is not None:
            ref, _ = token_logprobs(graphdef, ref_params, batch.tokens_BT, batch.positions_BT, batch.targets_BT)
        loss, metrics = policy_loss(logp, batch.old_logp_BT, batch.adv_B, batch.mask_BT, grpo, ref_logp_BT=ref)
        metrics["entropy"] = (entropy * batch.mask_BT).sum() / batch.mask_BT.sum()
        return loss, metrics

    return loss_fn


@pytest.mark.parametrize("grpo", [GRPOConfig(kl_coef=0.0, importance="token"),
                                  GRPOConfig(kl_coef=0.05, importance="sequence")])
@pytest.mark.parametrize("slots", [30, 32, None])
def test_loss_and_gradients_equal_the_full_logits_computation(grpo, slots):
    batch = _batch()
    if slots:  # K < T (30: the longest row fills its slots); None: pack's K, here T = 64
        batch = _with_slots(batch, slots)
    graphdef, params = nnx.split(Decoder(ModelConfig.tiny(), rngs=nnx.Rngs(0)))
    ref_params = None
    if grpo.kl_coef:
        noise = jax.random.normal(jax.random.key(1), (), jnp.float32)
        ref_params = jax.tree.map(lambda p: p * (1.0 + 0.05 * noise), params)

    want_grads, want = jax.grad(_full_logits_loss(graphdef, grpo), has_aux=True)(params, ref_params, batch)
    micro_loss = make_micro_loss(graphdef, OptimConfig(), grpo)
    total = float(batch.mask_BT.sum())
    got_grads, got = jax.grad(micro_loss, has_aux=True)(params, ref_params, batch_arrays(batch), total)

    assert sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_allclose(float(got[key]), float(want[key]), rtol=2e-5, atol=1e-6, err_msg=key)
    assert float(got["tokens"]) == total == 49
    for g, w in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-4, atol=1e-7)
    assert max(float(jnp.abs(w).max()) for w in jax.tree.leaves(want_grads)) > 1e-4  # not trivially zero


def test_train_step_metrics_do_not_depend_on_padding_slots():
    results = []
    for slots in (30, None):
        batch = _batch()
        if slots:
            batch = _with_slots(batch, slots)
        optim = OptimConfig(learning_rate=1e-3)
        graphdef, state = init_state(Decoder(ModelConfig.tiny(), rngs=nnx.Rngs(0)), optim, with_reference=True)
        step = make_train_step(graphdef, optim, GRPOConfig(kl_coef=0.05), micro_batch=2)
        _, metrics = step(state, batch)
        results.append({k: float(v) for k, v in metrics.items()})
    assert results[0]["tokens"] == 49
    for key in results[0]:
        assert results[0][key] == pytest.approx(results[1][key], rel=1e-5, abs=1e-7), key


def test_align_batches_pads_rows_and_slots():
    batch = _batch()
    (out,) = align_batches([batch], 8, 0)
    K = batch.loss_index_BK.shape[1]
    assert out.loss_index_BK.shape == (8, K)
    np.testing.assert_array_equal(out.loss_index_BK[:4], batch.loss_index_BK)
    assert (out.loss_index_BK[4:] == -1).all() and out.mask_BT[4:].sum() == 0
