"""The decode layout: each layer's projection matrices stored (out, in), for few-row matmuls on a CPU.

A decode step multiplies a handful of rows (one token per sequence) by every weight matrix.
On XLA:CPU (YNNPACK dots, jaxlib 0.10.2) `x_BK @ w_KN` at 16 rows reached ~80-85 GFLOP/s on
two Zen 4 cores in isolation, and the same product computed weight-first, `(w_NK @ x_BK.T).T`
with w_NK row-major (the weight the left operand, read row by row), ~100-120 GFLOP/s. The model's parameters stay (in, out), as
training wants them; the sampler keeps one transposed copy of the layer matrices
(`OutInWeights.from_model`, q/k/v and gate/up concatenated) and passes it to the decode step.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


def linear_out_in(x_BxK: jax.Array, w_NK: jax.Array, preferred_element_type=None) -> jax.Array:
    """x @ w_NK.T, computed as (w_NK @ x.T).T so the weight is the left operand.

    The optimization barrier keeps XLA's simplifier from folding the final transpose into the
    dot, which would swap the operands back to the slower x @ w form."""
    lead, K = x_BxK.shape[:-1], x_BxK.shape[-1]
    y_NR = jax.lax.dot_general(w_NK, x_BxK.reshape(-1, K), (((1,), (1,)), ((), ())),
                               preferred_element_type=preferred_element_type)
    return jax.lax.optimization_barrier(y_NR).T.reshape(*lead, w_NK.shape[0])


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class OutInWeights:
    """Per layer, in the compute dtype: [q; k; v] (N*H + 2*K*H, D), o (D, N*H),
    [gate; up] (2*I, D) and down (D, I)."""

    qkv_FD: tuple[jax.Array, ...]
    o_DF: tuple[jax.Array, ...]
    gate_up_ID: tuple[jax.Array, ...]
    down_DI: tuple[jax.Array, ...]

    @classmethod
    def from_model(cls, model) -> "OutInWeights":
        """The transposed copy of a Decoder's layer matrices (call under jit: one pass)."""
        dtype = jnp.dtype(model.config.dtype)

        def rows(param) -> jax.Array:  # (in..., out...) -> (out, in), `in` the first axis
            w = param.get_value().astype(dtype)
            return w.reshape(w.shape[0], -1).T

        qkv, o, gate_up, down = [], [], [], []
        for block in model.layers:
            attn, mlp = block.attn, block.mlp
            qkv.append(jnp.concatenate([rows(attn.q_proj), rows(attn.k_proj), rows(attn.v_proj)]))
            o_NHD = attn.o_proj.get_value().astype(dtype)
            o.append(o_NHD.reshape(-1, o_NHD.shape[-1]).T)
            gate_up.append(jnp.concatenate([rows(mlp.gate_proj), rows(mlp.up_proj)]))
            down.append(rows(mlp.down_proj))
        return cls(tuple(qkv), tuple(o), tuple(gate_up), tuple(down))

    def layer(self, index: int) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """(qkv_FD, o_DF, gate_up_ID, down_DI) of one layer."""
        return self.qkv_FD[index], self.o_DF[index], self.gate_up_ID[index], self.down_DI[index]
