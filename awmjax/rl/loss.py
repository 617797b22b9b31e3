"""The GRPO policy loss: clipped importance ratio with separate clips, optional KL, token mean.

Inputs are per-token log-probabilities of the sampled tokens under the current policy
(logp_BT), the sampling policy (old_logp_BT) and optionally a frozen reference
(ref_logp_BT), one advantage per sample (adv_B), and mask_BT, 1 on the policy-written
tokens that carry loss. The loss is the mean over all masked tokens of the batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from awmjax.rl.config import GRPOConfig


def _masked_mean(x_BT: jnp.ndarray, mask_BT: jnp.ndarray) -> jnp.ndarray:
    return (x_BT * mask_BT).sum() / jnp.maximum(mask_BT.sum(), 1.0)


def importance_log_ratio(logp_BT, old_logp_BT, mask_BT, level: str) -> jnp.ndarray:
    """Log importance ratio per token: per token, or the sample's mean broadcast (sequence level)."""
    log_ratio_BT = (logp_BT - old_logp_BT) * mask_BT
    if level == "token":
        return log_ratio_BT
    per_seq_B = log_ratio_BT.sum(axis=1) / jnp.maximum(mask_BT.sum(axis=1), 1.0)
    # sequence level: value of the sequence ratio, gradient through each token (GSPO-style)
    seq_BT = per_seq_B[:, None] + logp_BT - jax.lax.stop_gradient(logp_BT)
    return seq_BT * mask_BT


def k3_kl(logp_BT: jnp.ndarray, ref_logp_BT: jnp.ndarray) -> jnp.ndarray:
    """The k3 estimator of KL(policy || reference) per token: exp(d) - d - 1 with d = ref - logp."""
    d_BT = ref_logp_BT - logp_BT
    return jnp.exp(d_BT) - d_BT - 1.0


def policy_loss(
    logp_BT: jnp.ndarray,
    old_logp_BT: jnp.ndarray,
    adv_B: jnp.ndarray,
    mask_BT: jnp.ndarray,
    cfg: GRPOConfig,
    ref_logp_BT: jnp.ndarray | None = None,
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """Scalar loss and metrics (clip fractions, ratio stats, KL, log-prob mismatch)."""
    mask_BT = mask_BT.astype(logp_BT.dtype)
    log_ratio_BT = importance_log_ratio(logp_BT, old_logp_BT, mask_BT, cfg.importance)
    ratio_BT = jnp.exp(log_ratio_BT)
    adv_BT = adv_B[:, None]
    clipped_BT = jnp.clip(ratio_BT, 1.0 - cfg.clip_low, 1.0 + cfg.clip_high)
    per_token_BT = -jnp.minimum(ratio_BT * adv_BT, clipped_BT * adv_BT)
    loss = _masked_mean(per_token_BT, mask_BT)
    metrics = {
        "pg_loss": loss,
        "clip_frac_low": _masked_mean(((ratio_BT < 1.0 - cfg.clip_low) & (adv_BT < 0)).astype(mask_BT.dtype), mask_BT),
        "clip_frac_high": _masked_mean(((ratio_BT > 1.0 + cfg.clip_high) & (adv_BT > 0)).astype(mask_BT.dtype), mask_BT),
        "ratio_mean": _masked_mean(ratio_BT, mask_BT),
        "ratio_max": jnp.max(jnp.where(mask_BT > 0, ratio_BT, 0.0)),
        "logp_mismatch": _masked_mean(jnp.abs(logp_BT - old_logp_BT), mask_BT),
        "tokens": mask_BT.sum(),
    }
    if ref_logp_BT is not None and cfg.kl_coef > 0:
        kl = _masked_mean(k3_kl(logp_BT, ref_logp_BT), mask_BT)
        loss = loss + cfg.kl_coef * kl
        metrics["kl"] = kl
    metrics["loss"] = loss
    return loss, metrics
