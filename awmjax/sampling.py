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
    """(tokens_B, model_logprob_B at temperature 1, sampling_logprob_B) for one step."""
    logits_BV = logits_BV.astype(jnp.float32)
    model_logp_BV = jax.nn.log_softmax(logits_BV, axis=-1)
    if greedy:
        tokens_B = jnp.argmax(logits_BV, axis=-1)
        sampling_logp_B = jnp.zeros(tokens_B.shape, jnp.float32)
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
        tokens_B = _gumbel_argmax(scaled_BV, keys_B)
        sampling_logp_B = jnp.take_along_axis(jax.nn.log_softmax(scaled_BV, axis=-1),
                                              tokens_B[:, None], axis=1)[:, 0]
    model_logp_B = jnp.take_along_axis(model_logp_BV, tokens_B[:, None], axis=1)[:, 0]
    return tokens_B.astype(jnp.int32), model_logp_B, sampling_logp_B


def _gumbel_argmax(scores_BC: jax.Array, keys_B: jax.Array) -> jax.Array:
    """One categorical draw per row, each from its own key (so rows do not depend on batch size)."""
    gumbel_BC = jax.vmap(lambda k: jax.random.gumbel(k, scores_BC.shape[1:]))(keys_B)
    return jnp.argmax(scores_BC + gumbel_BC, axis=-1)
