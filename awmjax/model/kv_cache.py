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

    # slots sit after the kv-head axis so attention reads each head's keys contiguously
    k_LBKSH: jax.Array
    v_LBKSH: jax.Array
    lengths_B: jax.Array

    @classmethod
    def init(cls, config: ModelConfig, batch: int, max_len: int, dtype=None) -> "KVCache":
        """An empty cache of batch rows and max_len slots."""
        shape = (config.num_layers, batch, config.num_kv_heads, max_len, config.head_dim)
        dtype = dtype or jnp.dtype(config.dtype)
        return cls(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype),
                   jnp.zeros((batch,), jnp.int32))

    @property
    def max_len(self) -> int:
        """Number of slots per row."""
        return self.k_LBKSH.shape[3]

    def replace(self, **changes) -> "KVCache":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)
