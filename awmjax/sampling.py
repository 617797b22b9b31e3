"""Sampling settings and the jittable token-choice function (temperature, top-k, top-p)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """How to pick each next token, and when a generation stops."""

    temperature: float = 1.0  # 0 means greedy
    top_k: int = 0  # 0 means no top-k cut
    top_p: float = 1.0  # 1 means no nucleus cut
    max_new_tokens: int = 256
    stop_token_ids: tuple[int, ...] = ()
    # Stop strings are matched on decoded text after generation (the Sampler needs decode_fn);
    # the tokens after the match are dropped and the cache rolled back to the match.
    stop_strings: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"SamplingConfig.temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"SamplingConfig.top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"SamplingConfig.top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 0:
            raise ValueError(
                f"SamplingConfig.max_new_tokens must be >= 0, got {self.max_new_tokens}")
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
        object.__setattr__(self, "stop_strings", tuple(self.stop_strings))

    @property
    def greedy(self) -> bool:
        """True when the argmax token is always chosen."""
        return self.temperature == 0.0

    def mode(self, vocab_size: int) -> tuple[bool, int]:
        """Static part of the sampling function: (greedy, number of candidates kept; 0 = all)."""
        k = self.top_k if self.top_k else (vocab_size if self.top_p < 1.0 else 0)
        return self.greedy, min(k, vocab_size)


def choose_tokens(logits_BV: jax.Array, keys_B: jax.Array, temperature: jax.Array,
                  top_p: jax.Array, *, greedy: bool, top_k: int
                  ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(tokens_B, model_logprob_B at temperature 1, sampling_logprob_B) for one step.

    Without a top-k/top-p cut, nothing vocabulary-sized is kept beyond one exp pass: the
    greedy token is the first maximum, a sampled token is found by inverse CDF (one uniform
    number per row, _inverse_cdf), and log-probabilities come from log-sum-exp. A decode
    step of SmolLM2 (batch 16, 49,152 tokens) chose its tokens in about 1 ms this way, where
    a full log_softmax with argmax took 2.5 ms and Gumbel noise on every logit (a random
    number per vocabulary entry) 10 ms (experiments/bench_choice.py)."""
    logits_BV = logits_BV.astype(jnp.float32)
    if greedy:
        max_B1 = jnp.max(logits_BV, axis=-1, keepdims=True)
        # the first maximum, as argmax takes (the last index for a row of NaNs)
        tokens_B = _first_index(logits_BV == max_B1, logits_BV.shape[-1] - 1)
        model_logp_B = max_B1[:, 0] - _logsumexp(logits_BV)
        return tokens_B, model_logp_B, jnp.zeros(tokens_B.shape, jnp.float32)
    elif top_k:
        vals_BK, idx_BK = jax.lax.top_k(logits_BV / temperature, top_k)
        probs_BK = jax.nn.softmax(vals_BK, axis=-1)
        # keep a candidate if the mass before it is below top_p (the first is always kept)
        keep_BK = (jnp.cumsum(probs_BK, axis=-1) - probs_BK) < top_p
        vals_BK = jnp.where(keep_BK, vals_BK, -jnp.inf)
        pick_B = _gumbel_argmax(vals_BK, keys_B)
        tokens_B = jnp.take_along_axis(idx_BK, pick_B[:, None], axis=1)[:, 0]
        sampling_logp_B = jnp.take_along_axis(jax.nn.log_softmax(vals_BK, axis=-1),
                                              pick_B[:, None], axis=1)[:, 0]
    else:
        scaled_BV = logits_BV / temperature
        max_B1 = jnp.max(scaled_BV, axis=-1, keepdims=True)
        weights_BV = jnp.exp(scaled_BV - max_B1)
        uniform_B = jax.vmap(lambda k: jax.random.uniform(k, (), jnp.float32))(keys_B)
        tokens_B, total_B = _inverse_cdf(weights_BV, uniform_B)
        sampling_logp_B = (_pick(scaled_BV, tokens_B) - max_B1[:, 0]) - jnp.log(total_B)
    return tokens_B.astype(jnp.int32), model_logprobs(logits_BV, tokens_B), sampling_logp_B


def model_logprobs(logits_BV: jax.Array, tokens_B: jax.Array) -> jax.Array:
    """log p(token) under the logits themselves (temperature 1, no cuts or masks)."""
    logits_BV = logits_BV.astype(jnp.float32)
    return _pick(logits_BV, tokens_B) - _logsumexp(logits_BV)


def _pick(values_BV: jax.Array, tokens_B: jax.Array) -> jax.Array:
    return jnp.take_along_axis(values_BV, tokens_B[:, None], axis=1)[:, 0]


def _logsumexp(x_BV: jax.Array) -> jax.Array:
    """Row-wise log-sum-exp. Not jax.nn.logsumexp: its handling of infinite maxima kept the
    sampled step's passes from fusing (0.8-0.9 against 0.5-0.65 ms, experiments/bench_choice.py)."""
    max_B1 = jnp.max(x_BV, axis=-1, keepdims=True)
    return max_B1[:, 0] + jnp.log(jnp.sum(jnp.exp(x_BV - max_B1), axis=-1))


def _first_index(hit_BV: jax.Array, default) -> jax.Array:
    """Index of each row's first True, or `default` (per row or one value) where none is."""
    V = hit_BV.shape[-1]
    index_B = jnp.min(jnp.where(hit_BV, jnp.arange(V, dtype=jnp.int32), V), axis=-1)
    return jnp.where(index_B < V, index_B, default)


def _inverse_cdf(weights_BV: jax.Array, uniform_B: jax.Array, block: int = 128
                 ) -> tuple[jax.Array, jax.Array]:
    """(tokens_B, total weight_B): row b's token is the first whose running weight exceeds
    uniform_B[b] times the row's total, so each token is drawn with probability weight /
    total. Two levels (blocks of `block` tokens, then one block's tokens) keep the running
    sums short: a 49,152-long cumsum is slow on XLA:CPU and loses precision in float32."""
    B, V = weights_BV.shape
    C = -(-V // block)
    padded_BV = jnp.pad(weights_BV, ((0, 0), (0, C * block - V)))
    weights_BCW = padded_BV.reshape(B, C, block)
    blocks_BC = jnp.sum(weights_BCW, axis=-1)
    ends_BC = jnp.cumsum(blocks_BC, axis=-1)
    total_B = ends_BC[:, -1]
    target_B = uniform_B * total_B
    # the first block whose end passes the target (a block of zero weight never is); where
    # u * total rounds up to the total, none does and the last block of nonzero weight is taken
    last_block_B = C - 1 - _first_index(blocks_BC[:, ::-1] > 0, 0)
    in_B = _first_index((ends_BC > target_B[:, None]) & (blocks_BC > 0), last_block_B)
    within_BW = jnp.take_along_axis(weights_BCW, in_B[:, None, None], axis=1)[:, 0]
    start_B = jnp.take_along_axis(ends_BC - blocks_BC, in_B[:, None], axis=1)[:, 0]
    ends_BW = start_B[:, None] + jnp.cumsum(within_BW, axis=-1)
    # rounding can leave the block's last running sum a hair below the target: the block's
    # last token of nonzero weight is then the draw, never a token of zero weight
    last_B = block - 1 - _first_index(within_BW[:, ::-1] > 0, 0)
    tokens_B = in_B * block + jnp.minimum(_first_index(ends_BW > target_B[:, None], last_B), last_B)
    return tokens_B, total_B


def _gumbel_argmax(scores_BC: jax.Array, keys_B: jax.Array) -> jax.Array:
    """One categorical draw per row, each from its own key (so rows do not depend on batch size)."""
    gumbel_BC = jax.vmap(lambda k: jax.random.gumbel(k, scores_BC.shape[1:]))(keys_B)
    return jnp.argmax(scores_BC + gumbel_BC, axis=-1)
