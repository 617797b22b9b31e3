"""target_logprobs equals the plain log-softmax formulation, in value and in gradient."""

import jax
import jax.numpy as jnp
import numpy as np

from awmjax.rl.logprobs import target_logprobs


def _plain(logits_BTV, targets_BT):
    logz_BT = jax.nn.logsumexp(logits_BTV, axis=-1)
    logp_BT = jnp.take_along_axis(logits_BTV, targets_BT[..., None], axis=-1)[..., 0] - logz_BT
    probs_BTV = jax.nn.softmax(logits_BTV, axis=-1)
    return logp_BT, logz_BT - jnp.sum(probs_BTV * logits_BTV, axis=-1)


def test_values_and_gradient_match_the_plain_formulation():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(0, 4, (2, 5, 300)), jnp.float32)
    logits = logits.at[0, 0, 7].set(60.0)  # a peaked row: the max shift must keep it finite
    targets = jnp.asarray(rng.integers(0, 300, (2, 5)), jnp.int32)
    weights = jnp.asarray(rng.normal(size=(2, 5)), jnp.float32)
    for got, want in zip(target_logprobs(logits, targets), _plain(logits, targets)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

    def loss(fn, x):
        logp, entropy = fn(x, targets)
        return (weights * logp).sum(), entropy

    g_got, _ = jax.grad(lambda x: loss(target_logprobs, x), has_aux=True)(logits)
    g_want, _ = jax.grad(lambda x: loss(_plain, x), has_aux=True)(logits)
    np.testing.assert_allclose(g_got, g_want, rtol=1e-5, atol=1e-6)
    assert np.abs(np.asarray(g_got)).max() > 0.1
