"""Group-relative advantage estimators, chosen by name from a small registry.

Each takes rewards_NG (N groups of G episodes of one task) and returns advantages_NG.
Groups whose rewards are all equal carry no signal: every estimator gives them zero
advantage, and `zero_variance_groups` counts them.
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp


def grpo(rewards_NG: jnp.ndarray, eps: float = 1e-6) -> jnp.ndarray:
    """(r - group mean) / (group std + eps), as in GRPO."""
    mean_N1 = rewards_NG.mean(axis=1, keepdims=True)
    std_N1 = rewards_NG.std(axis=1, keepdims=True)
    return (rewards_NG - mean_N1) / (std_N1 + eps)


def dr_grpo(rewards_NG: jnp.ndarray, eps: float = 1e-6) -> jnp.ndarray:
    """r - group mean, without the std normalization (Dr. GRPO)."""
    del eps
    return rewards_NG - rewards_NG.mean(axis=1, keepdims=True)


def rloo(rewards_NG: jnp.ndarray, eps: float = 1e-6) -> jnp.ndarray:
    """r - mean of the other G-1 rewards of the group (leave-one-out baseline)."""
    del eps
    G = rewards_NG.shape[1]
    if G < 2:
        raise ValueError(f"rloo needs groups of at least 2 episodes, got {G}")
    total_N1 = rewards_NG.sum(axis=1, keepdims=True)
    return rewards_NG - (total_N1 - rewards_NG) / (G - 1)


ADVANTAGES: dict[str, Callable[..., jnp.ndarray]] = {"grpo": grpo, "dr_grpo": dr_grpo, "rloo": rloo}


def zero_variance_groups(rewards_NG: jnp.ndarray) -> jnp.ndarray:
    """Boolean per group: all rewards equal (the group carries no gradient)."""
    return jnp.all(rewards_NG == rewards_NG[:, :1], axis=1)


def advantages(name: str, rewards_NG: jnp.ndarray, eps: float = 1e-6) -> jnp.ndarray:
    """Advantages by estimator name; exactly zero for zero-variance groups."""
    try:
        fn = ADVANTAGES[name]
    except KeyError:
        raise ValueError(f"unknown advantage estimator {name!r}; allowed: {', '.join(sorted(ADVANTAGES))}") from None
    adv_NG = fn(rewards_NG, eps)
    return jnp.where(zero_variance_groups(rewards_NG)[:, None], 0.0, adv_NG)
