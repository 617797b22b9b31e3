"""The GRPO train step on a tiny model: it learns, zero advantage is no gradient, micro-batching is exact."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from awmjax.model.config import ModelConfig
from awmjax.model.decoder import Decoder
from awmjax.rl.batch import Sample, bucket_length, pack
from awmjax.rl.config import GRPOConfig
from awmjax.rl.train_step import OptimConfig, init_state, make_train_step, token_logprobs


def _model():
    return Decoder(ModelConfig.tiny(), rngs=nnx.Rngs(0))


def _samples(adv):
    rng = np.random.default_rng(0)
    out = []
    for k in range(4):
        n = 20 + 3 * k
        ids = rng.integers(1, 255, n).tolist()
        mask = [0] * 10 + [1] * (n - 10)  # the last tokens are "policy-written"
        out.append(Sample(ids, mask, [-5.5] * n, adv))
    return out


def _batch(adv, micro_batch):
    (batch,) = pack(_samples(adv), micro_batch=micro_batch, pad_id=0)
    return batch


def _masked_logp(graphdef, state, batch):
    logp, _ = token_logprobs(graphdef, state.params, batch.tokens_BT, batch.positions_BT, batch.targets_BT)
    return float((logp * batch.mask_BT).sum() / batch.mask_BT.sum())


def test_packing_shifts_targets_and_masks():
    (b,) = pack(_samples(1.0), micro_batch=4, pad_id=0)
    assert b.shape == (4, bucket_length(29)) == (4, 64)
    s = _samples(1.0)[0]
    assert b.targets_BT[0, :19].tolist() == s.ids[1:]
    assert b.mask_BT[0, :9].sum() == 0 and b.mask_BT[0, 9:19].sum() == 10 and b.mask_BT[0, 19:].sum() == 0


def test_positive_advantage_raises_the_log_probs_of_its_tokens():
    graphdef, state = init_state(_model(), OptimConfig(learning_rate=3e-3), with_reference=False)
    step = make_train_step(graphdef, OptimConfig(learning_rate=3e-3), GRPOConfig(kl_coef=0.0, importance="token"), micro_batch=2)
    batch = _batch(1.0, 2)
    before = _masked_logp(graphdef, state, batch)
    for _ in range(5):
        state, metrics = step(state, batch)
    assert int(state.step) == 5
    assert _masked_logp(graphdef, state, batch) > before + 0.1
    assert np.isfinite(float(metrics["loss"])) and float(metrics["grad_norm"]) > 0


def test_zero_advantage_gives_zero_gradient_without_kl():
    graphdef, state = init_state(_model(), OptimConfig(), with_reference=False)
    step = make_train_step(graphdef, OptimConfig(), GRPOConfig(kl_coef=0.0), micro_batch=4)
    _, metrics = step(state, _batch(0.0, 4))
    assert float(metrics["grad_norm"]) == 0.0


def test_micro_batching_gives_the_same_update():
    results = []
    for mb in (1, 4):
        graphdef, state = init_state(_model(), OptimConfig(learning_rate=1e-3), with_reference=True)
        step = make_train_step(graphdef, OptimConfig(learning_rate=1e-3), GRPOConfig(importance="sequence"), micro_batch=mb)
        state, metrics = step(state, _batch(0.7, mb))
        results.append((jax.tree.leaves(state.params), float(metrics["loss"]), float(metrics["grad_norm"])))
    (p1, l1, g1), (p4, l4, g4) = results
    assert l1 == pytest.approx(l4, rel=1e-5) and g1 == pytest.approx(g4, rel=1e-4)
    for a, b in zip(p1, p4):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
