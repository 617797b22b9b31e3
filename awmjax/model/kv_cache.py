"""The key/value cache: a fixed-shape pytree so prefill and decode run inside jit."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from awmjax.model.config import ModelConfig


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
    """Per-layer keys and values for S cache slots; row b holds lengths_B[b] valid tokens."""

    # One buffer per layer, not one (L, B, K, S, H) array: XLA then updates each layer's
    # buffer in place and attention reads it directly, where slicing a layer out of a stacked
    # array copied it every decode step. Slots sit after the kv-head axis so attention reads
    # each head's keys contiguously.
    k_BKSH: tuple[jax.Array, ...]
    v_BKSH: tuple[jax.Array, ...]
    lengths_B: jax.Array

    @classmethod
    def init(cls, config: ModelConfig, batch: int, max_len: int, dtype=None) -> "KVCache":
        """An empty cache of batch rows and max_len slots."""
        shape = (batch, config.num_kv_heads, max_len, config.head_dim)
        dtype = dtype or jnp.dtype(config.dtype)
        layers = range(config.num_layers)
        return cls(tuple(jnp.zeros(shape, dtype) for _ in layers),
                   tuple(jnp.zeros(shape, dtype) for _ in layers),
                   jnp.zeros((batch,), jnp.int32))

    @property
    def max_len(self) -> int:
        """Number of slots per row."""
        return self.k_BKSH[0].shape[2]

    def replace(self, **changes) -> "KVCache":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)
