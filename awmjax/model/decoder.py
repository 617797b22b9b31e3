"""The policy: a decoder-only transformer (GQA, RoPE, RMSNorm, SwiGLU) in flax.nnx."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from awmjax.model.config import ModelConfig
from awmjax.model.kv_cache import KVCache
from awmjax.model.out_in import OutInWeights, linear_out_in
from awmjax.model.rope import inv_frequencies, rope_tables, rotate
from awmjax.model.sharding import constrain

_NEG_INF = -1e30


def _param(rngs: nnx.Rngs, shape, axes, dtype, scale: float | None = None) -> nnx.Param:
    """A normal(0, scale)-initialized parameter tagged with logical axis names."""
    scale = 0.02 if scale is None else scale
    value = scale * jax.random.normal(rngs.params(), shape, jnp.float32)
    return nnx.Param(value.astype(dtype), logical_axes=axes)


class RMSNorm(nnx.Module):
    """Root-mean-square layer norm with a learned scale."""

    def __init__(self, dim: int, eps: float, axis_name: str, param_dtype):
        self.eps = eps
        self.weight = nnx.Param(jnp.ones((dim,), param_dtype), logical_axes=(axis_name,))

    def __call__(self, x_BxD: jax.Array) -> jax.Array:
        x32 = x_BxD.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return self.weight.get_value().astype(x_BxD.dtype) * normed.astype(x_BxD.dtype)


class Attention(nnx.Module):
    """Grouped-query self-attention writing into and reading from an optional KV cache."""

    def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
        c, pdt = config, jnp.dtype(config.param_dtype)
        D, N, K, H = c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim
        self.config = c
        self.q_proj = _param(rngs, (D, N, H), ("embed", "heads", "head_dim"), pdt)
        self.k_proj = _param(rngs, (D, K, H), ("embed", "kv_heads", "head_dim"), pdt)
        self.v_proj = _param(rngs, (D, K, H), ("embed", "kv_heads", "head_dim"), pdt)
        self.o_proj = _param(rngs, (N, H, D), ("heads", "head_dim", "embed"), pdt)
        if c.attention_bias:
            self.q_bias = _param(rngs, (N, H), ("heads", "head_dim"), pdt)
            self.k_bias = _param(rngs, (K, H), ("kv_heads", "head_dim"), pdt)
            self.v_bias = _param(rngs, (K, H), ("kv_heads", "head_dim"), pdt)
        if c.qk_norm:
            self.q_norm = RMSNorm(H, c.rms_norm_eps, "head_dim", pdt)
            self.k_norm = RMSNorm(H, c.rms_norm_eps, "head_dim", pdt)

    def _project(self, x_BTD, name: str):
        dtype = x_BTD.dtype
        w_DNH = getattr(self, f"{name}_proj").get_value().astype(dtype)
        # a plain 2-D matmul on the (free) reshaped weight: with 3-D einsums XLA may pick a
        # layout that transposes the weight on every call
        D, n, H = w_DNH.shape
        y = (x_BTD @ w_DNH.reshape(D, n * H)).reshape(*x_BTD.shape[:2], n, H)
        return self._bias(y, name)

    def _bias(self, y_BTnH, name: str):
        if not self.config.attention_bias:
            return y_BTnH
        return y_BTnH + getattr(self, f"{name}_bias").get_value().astype(y_BTnH.dtype)

    def _project_out_in(self, x_BTD, qkv_FD):
        """q, k, v from the decode layout's concatenated (out, in) matrix (model/out_in.py)."""
        c = self.config
        B, T, _ = x_BTD.shape
        qkv_BTF = linear_out_in(x_BTD, qkv_FD)
        q, k, v = jnp.split(qkv_BTF, [c.num_heads * c.head_dim,
                                      (c.num_heads + c.num_kv_heads) * c.head_dim], axis=-1)
        return tuple(self._bias(y.reshape(B, T, -1, c.head_dim), name)
                     for y, name in ((q, "q"), (k, "k"), (v, "v")))

    def __call__(self, x_BTD, rope_BT: tuple[jax.Array, jax.Array], layer: int, cache: KVCache | None,
                 segment_ids_BT: jax.Array | None, kv_len: int | None = None,
                 query_chunk: int | None = None, out_in: OutInWeights | None = None):
        """rope_BT: the (cos, sin) tables of the tokens' positions (rope.rope_tables), computed
        once per forward by Decoder.hidden rather than in every layer. out_in: the decode
        layout's weights (with a cache only), used in place of q/k/v/o_proj."""
        c = self.config
        B, T, _ = x_BTD.shape
        K, G = c.num_kv_heads, c.num_heads // c.num_kv_heads
        if out_in is None:
            q_BTNH, k_BTKH, v_BTKH = (self._project(x_BTD, n) for n in ("q", "k", "v"))
        else:
            q_BTNH, k_BTKH, v_BTKH = self._project_out_in(x_BTD, out_in.qkv_FD[layer])
        if c.qk_norm:
            q_BTNH, k_BTKH = self.q_norm(q_BTNH), self.k_norm(k_BTKH)
        q_BTNH = rotate(q_BTNH, *rope_BT)
        k_BTKH = rotate(k_BTKH, *rope_BT)
        q_BTNH = constrain(q_BTNH, ("batch", "length", "heads", "head_dim"))

        fused = fused_attention(c, x_BTD.dtype) if cache is None else None
        if fused is not None:
            return self._fused(q_BTNH, k_BTKH, v_BTKH, segment_ids_BT, fused), cache
        if cache is None and query_chunk and T > query_chunk:
            return self._chunked(q_BTNH, k_BTKH, v_BTKH, segment_ids_BT, query_chunk), cache
        if cache is None:
            keys_BKSH, values_BKSH = k_BTKH.swapaxes(1, 2), v_BTKH.swapaxes(1, 2)
            q_index_BT = jnp.broadcast_to(jnp.arange(T), (B, T))
            kv_index_BS = q_index_BT
        else:
            # Row b's new tokens go to slots lengths_B[b] + t; slots past the end are dropped.
            slots_BT = cache.lengths_B[:, None] + jnp.arange(T)[None, :]
            rows_BT = jnp.broadcast_to(jnp.arange(B)[:, None], (B, T))
            k_cache_BKSH = cache.k_BKSH[layer].at[rows_BT, :, slots_BT].set(
                k_BTKH.astype(cache.k_BKSH[layer].dtype), mode="drop")
            v_cache_BKSH = cache.v_BKSH[layer].at[rows_BT, :, slots_BT].set(
                v_BTKH.astype(cache.v_BKSH[layer].dtype), mode="drop")
            cache = cache.replace(k_BKSH=_replace_at(cache.k_BKSH, layer, k_cache_BKSH),
                                  v_BKSH=_replace_at(cache.v_BKSH, layer, v_cache_BKSH))
            # kv_len (static) bounds the slots attended to: every row's filled part fits in it,
            # so attention reads that prefix of the cache, not all max_len slots
            S = cache.max_len if kv_len is None else min(kv_len, cache.max_len)
            keys_BKSH = k_cache_BKSH[:, :, :S].astype(x_BTD.dtype)
            values_BKSH = v_cache_BKSH[:, :, :S].astype(x_BTD.dtype)
            q_index_BT = slots_BT
            kv_index_BS = jnp.broadcast_to(jnp.arange(S), (B, S))

        mask_BTS = kv_index_BS[:, None, :] <= q_index_BT[:, :, None]
        if segment_ids_BT is not None and cache is None:
            mask_BTS &= segment_ids_BT[:, :, None] == segment_ids_BT[:, None, :]
        q_BTKGH = q_BTNH.reshape(B, T, K, G, c.head_dim) * (c.head_dim ** -0.5)
        if cache is not None and T > 1:
            # prefill: left to itself XLA computes these scores transposed, (s, g*t) per kv
            # head, and then spends longer on the strided copy back than on the dot; with the
            # query laid out (b, k, g, t, h) and the barriers, the scores come out row-major
            # as written (a 24 x 256-token chunk over 1024 slots: ~1.3x faster attention)
            q_BKGTH = jax.lax.optimization_barrier(q_BTKGH.transpose(0, 2, 3, 1, 4))
            scores_BKGTS = jax.lax.optimization_barrier(
                jnp.einsum("bkgth,bksh->bkgts", q_BKGTH, keys_BKSH,
                           preferred_element_type=jnp.float32))
        else:
            scores_BKGTS = jnp.einsum("btkgh,bksh->bkgts", q_BTKGH, keys_BKSH,
                                      preferred_element_type=jnp.float32)
        scores_BKGTS = jnp.where(mask_BTS[:, None, None], scores_BKGTS, _NEG_INF)
        probs_BKGTS = jax.nn.softmax(scores_BKGTS, axis=-1).astype(x_BTD.dtype)
        if T == 1:
            # one query per row: a fused multiply-reduce reads the values once, where the
            # einsum became G-wide batched GEMMs that XLA runs several times slower
            out_BKGH = jnp.sum(probs_BKGTS[:, :, :, 0, :, None] * values_BKSH[:, :, None],
                               axis=3)
            out_BTKGH = out_BKGH[:, None]
        elif cache is not None:
            # prefill: computed straight into "btkgh", XLA's simplifier folds the transpose into
            # the dot and swaps its operands into a form XLA:CPU runs outside YNNPACK, several
            # times slower; the barrier keeps the batched matmul as written
            out_BKGTH = jax.lax.optimization_barrier(
                jnp.einsum("bkgts,bksh->bkgth", probs_BKGTS, values_BKSH))
            out_BTKGH = out_BKGTH.transpose(0, 3, 1, 2, 4)
        else:
            out_BTKGH = jnp.einsum("bkgts,bksh->btkgh", probs_BKGTS, values_BKSH)
        out_BTF = out_BTKGH.reshape(B, T, c.num_heads * c.head_dim)
        if out_in is not None:
            return linear_out_in(out_BTF, out_in.o_DF[layer]), cache
        o_FD = self.o_proj.get_value().astype(x_BTD.dtype).reshape(-1, c.hidden_size)
        out_BTD = out_BTF @ o_FD
        return out_BTD, cache

    def _chunked(self, q_BTNH, k_BTKH, v_BTKH, segment_ids_BT, chunk: int):
        """Cache-free causal attention in query chunks: chunk [lo, hi) scores only keys [0, hi),
        so the masked upper triangle is not computed, and each chunk's scores are small enough
        to stay in cache (on 2 CPU cores, chunks of 128 run a 2048-token layer about 5x faster
        forward and 3x forward + backward than one (T, T) block; compiling takes longer)."""
        c = self.config
        B, T = q_BTNH.shape[:2]
        K, G, H = c.num_kv_heads, c.num_heads // c.num_kv_heads, c.head_dim
        q_BKGTH = (q_BTNH.reshape(B, T, K, G, H) * (H ** -0.5)).transpose(0, 2, 3, 1, 4)
        k_BKSH, v_BKSH = k_BTKH.transpose(0, 2, 1, 3), v_BTKH.transpose(0, 2, 1, 3)
        outs = []
        for lo in range(0, T, chunk):
            hi = min(lo + chunk, T)
            mask_BTS = (jnp.arange(hi)[None, :] <= jnp.arange(lo, hi)[:, None])[None]
            if segment_ids_BT is not None:
                mask_BTS = mask_BTS & (segment_ids_BT[:, lo:hi, None] == segment_ids_BT[:, None, :hi])
            scores_BKGTS = jnp.einsum("bkgth,bksh->bkgts", q_BKGTH[:, :, :, lo:hi], k_BKSH[:, :, :hi],
                                      preferred_element_type=jnp.float32)
            scores_BKGTS = jnp.where(mask_BTS[:, None, None], scores_BKGTS, _NEG_INF)
            probs_BKGTS = jax.nn.softmax(scores_BKGTS, axis=-1).astype(q_BTNH.dtype)
            outs.append(jnp.einsum("bkgts,bksh->bkgth", probs_BKGTS, v_BKSH[:, :, :hi]))
        out_BTF = jnp.concatenate(outs, axis=3).transpose(0, 3, 1, 2, 4).reshape(B, T, -1)
        o_FD = self.o_proj.get_value().astype(q_BTNH.dtype).reshape(-1, c.hidden_size)
        return out_BTF @ o_FD

    def _fused(self, q_BTNH, k_BTKH, v_BTKH, segment_ids_BT, implementation: str):
        """Causal attention through jax.nn.dot_product_attention (cuDNN flash attention on a GPU:
        the (T, T) scores are never materialized and the masked half is skipped)."""
        B, T = q_BTNH.shape[:2]
        mask_B1TT = None
        if segment_ids_BT is not None:  # packed rows: a token attends only within its segment
            mask_B1TT = (segment_ids_BT[:, :, None] == segment_ids_BT[:, None, :])[:, None]
        out_BTNH = jax.nn.dot_product_attention(q_BTNH, k_BTKH, v_BTKH, mask=mask_B1TT,
                                                is_causal=True, implementation=implementation)
        o_FD = self.o_proj.get_value().astype(q_BTNH.dtype).reshape(-1, self.config.hidden_size)
        return out_BTNH.reshape(B, T, -1) @ o_FD


def fused_attention(config: ModelConfig, dtype) -> str | None:
    """The jax.nn.dot_product_attention implementation for cache-free attention, or None for
    awmjax's einsum path. "auto" picks cuDNN on a GPU in 16-bit floats with a head_dim cuDNN
    takes, and the einsums elsewhere (on a CPU they are faster than the generic XLA path)."""
    if config.attention == "einsum":
        return None
    if config.attention in ("xla", "cudnn"):
        return config.attention
    half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
    ok_dim = config.head_dim % 8 == 0 and config.head_dim <= 128
    return "cudnn" if jax.default_backend() == "gpu" and half and ok_dim else None


def _replace_at(items: tuple, index: int, value) -> tuple:
    """The tuple with items[index] replaced."""
    return items[:index] + (value,) + items[index + 1:]


class MLP(nnx.Module):
    """SwiGLU feed-forward block."""

    def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
        D, F, pdt = config.hidden_size, config.intermediate_size, jnp.dtype(config.param_dtype)
        self.gate_proj = _param(rngs, (D, F), ("embed", "mlp"), pdt)
        self.up_proj = _param(rngs, (D, F), ("embed", "mlp"), pdt)
        self.down_proj = _param(rngs, (F, D), ("mlp", "embed"), pdt)

    def __call__(self, x_BTD: jax.Array, out_in: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
        """out_in: the decode layout's (gate_up_ID, down_DI) of this layer, used in place of
        the projections (model/out_in.py)."""
        dtype = x_BTD.dtype
        if out_in is not None:
            gate_BTF, up_BTF = jnp.split(linear_out_in(x_BTD, out_in[0]), 2, axis=-1)
            return linear_out_in(jax.nn.silu(gate_BTF) * up_BTF, out_in[1])
        gate_BTF = x_BTD @ self.gate_proj.get_value().astype(dtype)
        up_BTF = x_BTD @ self.up_proj.get_value().astype(dtype)
        h_BTF = constrain(jax.nn.silu(gate_BTF) * up_BTF, ("batch", "length", "mlp"))
        return h_BTF @ self.down_proj.get_value().astype(dtype)


class Block(nnx.Module):
    """One pre-norm transformer layer."""

    def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
        pdt = jnp.dtype(config.param_dtype)
        self.input_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, "norm", pdt)
        self.attn = Attention(config, rngs)
        self.post_attn_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, "norm", pdt)
        self.mlp = MLP(config, rngs)

    def __call__(self, x_BTD, rope_BT, layer, cache, segment_ids_BT, kv_len=None, query_chunk=None,
                 out_in: OutInWeights | None = None):
        attn_BTD, cache = self.attn(self.input_norm(x_BTD), rope_BT, layer, cache,
                                    segment_ids_BT, kv_len, query_chunk, out_in)
        x_BTD = x_BTD + attn_BTD
        mlp_out_in = None if out_in is None else (out_in.gate_up_ID[layer], out_in.down_DI[layer])
        x_BTD = x_BTD + self.mlp(self.post_attn_norm(x_BTD), mlp_out_in)
        return constrain(x_BTD, ("batch", "length", "embed")), cache


class Decoder(nnx.Module):
    """Token ids in, next-token logits out; optionally extends a KV cache."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        pdt = jnp.dtype(config.param_dtype)
        self.config = config
        self.embed = _param(rngs, (config.vocab_size, config.hidden_size), ("vocab", "embed"),
                            pdt)
        self.layers = nnx.List([Block(config, rngs) for _ in range(config.num_layers)])
        self.final_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, "norm", pdt)
        if not config.tie_embeddings:
            self.lm_head = _param(rngs, (config.vocab_size, config.hidden_size),
                                  ("vocab", "embed"), pdt)

    def hidden(self, tokens_BT: jax.Array, positions_BT: jax.Array, *,
               cache: KVCache | None = None, segment_ids_BT: jax.Array | None = None,
               num_new_B: jax.Array | None = None, kv_len: int | None = None,
               query_chunk: int | None = None,
               out_in: OutInWeights | None = None) -> tuple[jax.Array, KVCache | None]:
        """Final-normed hidden states (B, T, D) and the cache advanced by num_new_B (default T).

        With a cache, kv_len (a static bound on every row's length after this call) limits
        attention to the cache's first kv_len slots, and out_in (the decode layout of
        model/out_in.py, a few rows per call) replaces the layers' projection matrices.
        Without a cache and a fused attention, query_chunk > 0 computes attention in query
        chunks of that many tokens (Attention._chunked)."""
        x_BTD, cache = self.run_layers(self.embed_tokens(tokens_BT), positions_BT, 0, len(self.layers), cache=cache,
                                       segment_ids_BT=segment_ids_BT, kv_len=kv_len, query_chunk=query_chunk,
                                       out_in=out_in)
        if cache is not None:
            T = tokens_BT.shape[1]
            added_B = jnp.full_like(cache.lengths_B, T) if num_new_B is None else num_new_B
            cache = cache.replace(lengths_B=cache.lengths_B + added_B.astype(jnp.int32))
        return self.final_norm(x_BTD), cache

    def embed_tokens(self, tokens_BT: jax.Array) -> jax.Array:
        """The residual stream entering layer 0: the tokens' embeddings in the compute dtype."""
        x_BTD = jnp.take(self.embed.get_value(), tokens_BT, axis=0).astype(jnp.dtype(self.config.dtype))
        return constrain(x_BTD, ("batch", "length", "embed"))

    def run_layers(self, x_BTD: jax.Array, positions_BT: jax.Array, start: int, stop: int, *,
                   cache: KVCache | None = None, segment_ids_BT: jax.Array | None = None,
                   kv_len: int | None = None, query_chunk: int | None = None,
                   out_in: OutInWeights | None = None) -> tuple[jax.Array, KVCache | None]:
        """(residual stream after layers [start, stop), cache) from the stream entering layer
        `start`; no final norm, and the cache's lengths are left for the caller to advance.
        Training with the bottom layers frozen computes their output once (start=0) and runs
        only the top ones per update (awmjax.sft's feature cache)."""
        rope_BT = rope_tables(positions_BT, inv_frequencies(self.config))  # once, for every layer
        for layer in range(start, stop):
            x_BTD, cache = self.layers[layer](x_BTD, rope_BT, layer, cache, segment_ids_BT, kv_len, query_chunk,
                                              out_in)
        return x_BTD, cache

    def logits(self, h_BxD: jax.Array, few_rows: bool = False) -> jax.Array:
        """Vocabulary logits (float32) from final hidden states. few_rows (the decode step):
        the head, already (out, in), is multiplied weight-first (model/out_in.py)."""
        head_VD = (self.embed if self.config.tie_embeddings else self.lm_head).get_value()
        if few_rows:
            return linear_out_in(h_BxD, head_VD.astype(h_BxD.dtype), jnp.float32)
        return jnp.einsum("...d,vd->...v", h_BxD, head_VD.astype(h_BxD.dtype),
                          preferred_element_type=jnp.float32)

    def __call__(self, tokens_BT: jax.Array, positions_BT: jax.Array, *,
                 cache: KVCache | None = None, segment_ids_BT: jax.Array | None = None,
                 num_new_B: jax.Array | None = None) -> tuple[jax.Array, KVCache | None]:
        """(logits_BTV, new_cache): with a cache, row b's tokens are written after its length."""
        h_BTD, cache = self.hidden(tokens_BT, positions_BT, cache=cache,
                                   segment_ids_BT=segment_ids_BT, num_new_B=num_new_B)
        return self.logits(h_BTD), cache
