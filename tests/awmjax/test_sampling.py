"""choose_tokens on its own: draws follow softmax(logits / temperature), log-probs are exact."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from awmjax.sampling import _inverse_cdf, choose_tokens


def _logits(vocab: int, seed: int) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(0.0, 1.5, vocab).astype(np.float32)
    logits[[3, 129, vocab - 1]] = -np.inf  # tokens that must never be drawn (one per block)
    return logits


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_sampled_tokens_follow_the_softmax(temperature):
    """20,000 draws over a 300-token vocabulary (three blocks, the last one padded): every
    token's frequency within 5 standard errors of its probability, never a -inf token."""
    vocab, draws = 300, 20_000
    logits = _logits(vocab, seed=1)
    keys = jax.random.split(jax.random.key(0), draws)
    logits_BV = jnp.broadcast_to(jnp.asarray(logits), (draws, vocab))
    tokens, model_logp, sampling_logp = jax.jit(
        lambda x, k: choose_tokens(x, k, jnp.float32(temperature), jnp.float32(1.0),
                                   greedy=False, top_k=0))(logits_BV, keys)
    tokens = np.asarray(tokens)
    probs = np.exp(logits / temperature - np.logaddexp.reduce(logits / temperature))
    counts = np.bincount(tokens, minlength=vocab)
    assert counts[[3, 129, vocab - 1]].sum() == 0
    stderr = np.sqrt(probs * (1 - probs) / draws)
    assert np.all(np.abs(counts / draws - probs) <= 5 * stderr + 1e-4)
    np.testing.assert_allclose(np.asarray(sampling_logp), np.log(probs[tokens]), atol=1e-5)
    log_softmax = logits - np.logaddexp.reduce(logits)
    np.testing.assert_allclose(np.asarray(model_logp), log_softmax[tokens], atol=1e-5)


def test_greedy_takes_the_first_maximum_with_its_log_prob():
    logits = _logits(300, seed=2)
    logits[[17, 250]] = logits.max() + 1.0  # a tie: the lower index wins, as argmax does
    keys = jax.random.split(jax.random.key(0), 1)
    tokens, model_logp, sampling_logp = choose_tokens(
        jnp.asarray(logits)[None], keys, jnp.float32(1.0), jnp.float32(1.0),
        greedy=True, top_k=0)
    assert int(tokens[0]) == 17
    assert float(model_logp[0]) == pytest.approx(logits[17] - np.logaddexp.reduce(logits),
                                                 abs=1e-5)
    assert float(sampling_logp[0]) == 0.0


def test_inverse_cdf_at_the_ends_of_the_unit_interval():
    """u = 0 draws the first token of nonzero weight; u = 1 (where u * total rounds up to the
    total, no running sum passes it) the last one, never a token of zero weight or padding."""
    weights = np.zeros((3, 300), np.float32)
    weights[:, [5, 140, 200]] = [1e-3, 2.0, 1e-3]
    uniform = jnp.asarray([0.0, 1.0, 0.5])
    tokens, total = _inverse_cdf(jnp.asarray(weights), uniform)
    assert np.asarray(tokens).tolist() == [5, 200, 140]
    np.testing.assert_allclose(np.asarray(total), weights.sum(axis=1), rtol=1e-6)
