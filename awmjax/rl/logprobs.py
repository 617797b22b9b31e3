"""Log-probabilities of chosen tokens (and the entropy) from vocabulary logits, in few passes.

Over a 49k vocabulary the (B, T, V) float32 logits are the largest tensor of the update, and
each elementwise pass over them costs as much as a layer's matmuls on a CPU. The plain
formulation (logsumexp, take_along_axis, softmax for the entropy) makes about eight passes
forward and backward: two exponentials forward, a third in logsumexp's backward, and a
zero-filled scatter for take_along_axis's backward. Here the forward makes one exponential
and keeps the probabilities, and the backward is one fused pass, g * (onehot - probs).
The entropy is a metric: no gradient flows through it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.custom_vjp
def target_logprobs(logits_BTV: jax.Array, targets_BT: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(log p(target), entropy) per position from float32 logits."""
    (logp_BT, entropy_BT), _ = _forward(logits_BTV, targets_BT)
    return logp_BT, entropy_BT


def _forward(logits_BTV, targets_BT):
    max_BT1 = jax.lax.stop_gradient(jnp.max(logits_BTV, axis=-1, keepdims=True))
    exp_BTV = jnp.exp(logits_BTV - max_BT1)
    sum_BT1 = jnp.sum(exp_BTV, axis=-1, keepdims=True)
    probs_BTV = exp_BTV / sum_BT1
    logz_BT = (max_BT1 + jnp.log(sum_BT1))[..., 0]
    target_BT = jnp.take_along_axis(logits_BTV, targets_BT[..., None], axis=-1)[..., 0]
    entropy_BT = logz_BT - jnp.sum(probs_BTV * logits_BTV, axis=-1)
    return (target_BT - logz_BT, entropy_BT), (probs_BTV, targets_BT)


def _backward(residuals, cotangents):
    probs_BTV, targets_BT = residuals
    g_logp_BT, _ = cotangents  # the entropy is a metric: its cotangent is ignored
    onehot_BTV = jnp.arange(probs_BTV.shape[-1], dtype=targets_BT.dtype) == targets_BT[..., None]
    d_logits_BTV = g_logp_BT[..., None] * (onehot_BTV.astype(probs_BTV.dtype) - probs_BTV)
    return d_logits_BTV, None


target_logprobs.defvjp(_forward, _backward)
