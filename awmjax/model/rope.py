"""Rotary position embeddings (Hugging Face rotate-half layout) with linear and llama3 scaling."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from awmjax.model.config import ModelConfig


def inv_frequencies(config: ModelConfig) -> np.ndarray:
    """Per-pair inverse frequencies, shape (head_dim // 2,), after any rope scaling."""
    dim = config.head_dim
    # float32 throughout, as transformers computes it, so logits agree to ~1e-6
    exponent_P = np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)
    inv_freq_P = np.float32(1.0) / (np.float32(config.rope_theta) ** exponent_P)
    kind = config.rope_type
    if kind == "linear":
        inv_freq_P = inv_freq_P / float(config.rope_scaling["factor"])
    elif kind == "llama3":
        inv_freq_P = _llama3_scale(inv_freq_P, config.rope_scaling)
    return inv_freq_P.astype(np.float32)


def _llama3_scale(inv_freq_P: np.ndarray, scaling: dict) -> np.ndarray:
    """Llama 3.1's wavelength-dependent frequency scaling (as in transformers)."""
    factor = float(scaling["factor"])
    low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    old_len = float(scaling["original_max_position_embeddings"])
    low_wavelen, high_wavelen = old_len / low, old_len / high
    wavelen_P = 2 * math.pi / inv_freq_P
    scaled_P = np.where(wavelen_P > low_wavelen, inv_freq_P / factor, inv_freq_P)
    smooth_P = (old_len / wavelen_P - low) / (high - low)
    smoothed_P = (1 - smooth_P) * scaled_P / factor + smooth_P * scaled_P
    medium_P = (wavelen_P >= high_wavelen) & (wavelen_P <= low_wavelen)
    return np.where(medium_P, smoothed_P, scaled_P)


def rope_tables(positions_BT: jax.Array, inv_freq_P: np.ndarray) -> tuple[jax.Array, jax.Array]:
    """(cos, sin) of position * frequency, each (B, T, 1, P) float32: computed once per forward
    and shared by every layer's `rotate` (they depend on the positions only)."""
    angles_BTP = positions_BT[..., None].astype(jnp.float32) * jnp.asarray(inv_freq_P)
    return jnp.cos(angles_BTP)[:, :, None, :], jnp.sin(angles_BTP)[:, :, None, :]


def rotate(x_BTNH: jax.Array, cos_BT1P: jax.Array, sin_BT1P: jax.Array) -> jax.Array:
    """Rotate each head's (first half, second half) pairs by the angles of `rope_tables`."""
    x1, x2 = jnp.split(x_BTNH.astype(jnp.float32), 2, axis=-1)
    out_BTNH = jnp.concatenate([x1 * cos_BT1P - x2 * sin_BT1P, x2 * cos_BT1P + x1 * sin_BT1P],
                               axis=-1)
    return out_BTNH.astype(x_BTNH.dtype)

