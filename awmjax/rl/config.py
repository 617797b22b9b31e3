"""Configs of the RL pieces: reward values and the GRPO objective (AWM's values as defaults)."""

from __future__ import annotations

from dataclasses import dataclass

from awmjax.rl.advantages import ADVANTAGES

IMPORTANCE_LEVELS = ("token", "sequence")


@dataclass(frozen=True)
class RewardConfig:
    """Reward per episode outcome. AWM: completed 1.0, partial 0.1, else 0; format error -1."""

    complete: float = 1.0
    partial: float = 0.1
    incomplete: float = 0.0
    format_error: float = -1.0
    env_error: float = 0.0

    def __post_init__(self):
        if not self.complete > self.partial >= self.incomplete:
            raise ValueError(
                f"RewardConfig: need complete > partial >= incomplete, got {self.complete}, {self.partial}, {self.incomplete}"
            )
        if self.format_error > self.incomplete:
            raise ValueError(f"RewardConfig.format_error ({self.format_error}) must not exceed incomplete ({self.incomplete})")

    def reward(self, outcome: str) -> float:
        """The reward of an episode outcome: complete, partial, incomplete, format_error or env_error."""
        try:
            return getattr(self, outcome)
        except AttributeError:
            raise ValueError(
                f"unknown episode outcome {outcome!r}; expected complete, partial, incomplete, format_error or env_error"
            ) from None


@dataclass(frozen=True)
class GRPOConfig:
    """The policy objective: advantage estimator, asymmetric clipping, importance level, KL."""

    advantage: str = "grpo"
    clip_low: float = 0.2
    clip_high: float = 0.28  # AWM's upper clip
    importance: str = "sequence"  # AWM corrects sampler/trainer mismatch at sequence level
    kl_coef: float = 0.001
    eps: float = 1e-6

    def __post_init__(self):
        if self.advantage not in ADVANTAGES:
            raise ValueError(f"GRPOConfig.advantage={self.advantage!r}; allowed: {', '.join(sorted(ADVANTAGES))}")
        if self.importance not in IMPORTANCE_LEVELS:
            raise ValueError(f"GRPOConfig.importance={self.importance!r}; allowed: {', '.join(IMPORTANCE_LEVELS)}")
        if not (0 <= self.clip_low < 1 and self.clip_high >= 0):
            raise ValueError(f"GRPOConfig: clip_low must be in [0, 1) and clip_high >= 0, got {self.clip_low}, {self.clip_high}")
        if self.kl_coef < 0:
            raise ValueError(f"GRPOConfig.kl_coef must be >= 0, got {self.kl_coef}")
