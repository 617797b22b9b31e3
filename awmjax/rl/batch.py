"""From episodes to a training batch: rewards, group advantages, history-limited samples, packing.

History-limited training (AWM's HL): a T-turn episode becomes T samples, each the
exact prompt its assistant turn was sampled from (system turn, task, on the mcp surface
the list_tools exchange, and the last w steps before it; `Conversation.context_turns`)
followed by that turn, with loss on that turn only. Full-history training gives one sample per episode with loss on every
policy turn. Samples are padded to a few bucket lengths (64 x 1, 1.5, 2, 3, 4, ...) and batches to
a multiple of the micro-batch, so XLA compiles a handful of programs, not one per batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from awmjax.rl.advantages import advantages as group_advantages
from awmjax.rl.advantages import zero_variance_groups
from awmjax.rl.config import RewardConfig
from awmjax.rollout import EpisodeResult


@dataclass(frozen=True)
class Sample:
    """One training sequence: ids, loss mask and sampler log-probs (aligned with ids), advantage."""

    ids: list[int]
    mask: list[int]
    logprobs: list[float]
    advantage: float
    policy_lag: int = 0


@dataclass(frozen=True)
class TrainBatch:
    """Packed arrays; targets are shifted: position t predicts token t + 1."""

    tokens_BT: np.ndarray  # int32
    targets_BT: np.ndarray  # int32
    mask_BT: np.ndarray  # float32, 1 where targets_BT is a policy-written token that carries loss
    old_logp_BT: np.ndarray  # float32, sampler log-probs of targets_BT
    adv_B: np.ndarray  # float32
    positions_BT: np.ndarray  # int32
    # int32 (B, K): per row the positions t with mask_BT 1, in order, then -1 (padding slots,
    # which carry no loss). The update computes vocabulary logits at these K slots only.
    loss_index_BK: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.tokens_BT.shape


def episode_advantages(results: Sequence[EpisodeResult], rewards: RewardConfig, estimator: str) -> tuple[np.ndarray, dict]:
    """Per-episode reward and group advantage; groups are (task, group index) with equal sizes."""
    r = np.array([rewards.reward(e.outcome) for e in results], dtype=np.float32)
    keys = [(e.world_id, e.task_id, e.group) for e in results]
    order: dict[tuple, list[int]] = {}
    for i, k in enumerate(keys):
        order.setdefault(k, []).append(i)
    sizes = {len(v) for v in order.values()}
    if len(sizes) != 1:
        raise ValueError(f"GRPO groups must have equal sizes, got sizes {sorted(sizes)}")
    idx_NG = np.array(list(order.values()))
    adv_NG = np.asarray(group_advantages(estimator, r[idx_NG]))
    adv = np.zeros_like(r)
    adv[idx_NG.reshape(-1)] = adv_NG.reshape(-1)
    zero = np.asarray(zero_variance_groups(r[idx_NG]))
    return adv, {"reward_mean": float(r.mean()), "zero_variance_groups": float(zero.mean()), "groups": len(order)}


def samples_from_episode(e: EpisodeResult, advantage: float, history_window: int | None, *, current_version: int = 0) -> list[Sample]:
    """HL samples (one per assistant turn) or one full-history sample of an episode."""
    conv = e.conversation
    lag = current_version - e.policy_version
    n_turns = sum(1 for t in conv.turns if t.role == "assistant")
    if n_turns == 0:
        return []
    if history_window is None:
        return [Sample(list(conv.ids), list(conv.mask), list(conv.logprobs), advantage, lag)]
    out = []
    for k in range(n_turns):
        ids, mask, logprobs = conv.history_sample(k, history_window)
        out.append(Sample(ids, mask, logprobs, advantage, lag))
    return out


def merge_prefix_samples(samples: Sequence[Sample]) -> list[Sample]:
    """Merge each sample into the next when its ids are a prefix of the next one's (same episode,
    same advantage): one sequence with both turns trainable. Under HL this happens while the
    history window has not cut anything yet; the token-level loss is unchanged (each trainable
    token sees the same context and keeps its sampler log-prob), computed on fewer tokens. Not
    for sequence-level importance ratios, which are per sample."""
    out: list[Sample] = []
    for s in samples:
        prev = out[-1] if out else None
        if (prev is not None and len(prev.ids) <= len(s.ids) and s.ids[: len(prev.ids)] == prev.ids
                and prev.advantage == s.advantage):
            out.pop()
            n = len(prev.ids)
            mask = [max(a, b) for a, b in zip(prev.mask, s.mask)] + list(s.mask[n:])
            logprobs = [p if m else q for p, q, m in zip(prev.logprobs, s.logprobs, prev.mask)] + list(s.logprobs[n:])
            s = Sample(list(s.ids), mask, logprobs, s.advantage, s.policy_lag)
        out.append(s)
    return out


def bucket_length(n: int, minimum: int = 64, maximum: int = 8192) -> int:
    """The smallest bucket >= n: minimum times 1, 1.5, 2, 3, 4, 6, 8, ... (padding under a third,
    a handful of shapes); error past maximum."""
    if n > maximum:
        raise ValueError(f"a training sample of {n} tokens exceeds the longest bucket ({maximum}); raise max_context or shorten episodes")
    b = minimum
    while b < n:
        b = b * 3 // 2 if b & (b - 1) == 0 else b * 4 // 3  # 2^k -> 1.5 * 2^k -> 2^(k+1)
    return b


def loss_index(mask_BT: np.ndarray, slots: int | None = None) -> np.ndarray:
    """The (B, K) loss positions of a mask: row b's positions with mask 1 in order, then -1.

    K is `slots`, or by default the largest count over rows rounded up to a bucket (as lengths,
    bucket_length; at least 1) and capped at T, so batches compile to a handful of shapes."""
    mask_BT = np.asarray(mask_BT)
    B, T = mask_BT.shape
    counts_B = (mask_BT != 0).sum(axis=1)
    most = int(counts_B.max()) if B else 0
    if slots is None:
        slots = min(bucket_length(max(most, 1), maximum=max(T, 1)), T) if T else 1
    if slots < most:
        raise ValueError(f"loss_index: {slots} slots but a row has {most} loss positions")
    index_BK = np.full((B, max(slots, 1)), -1, np.int32)
    for b in range(B):
        at = np.flatnonzero(mask_BT[b])
        index_BK[b, : len(at)] = at
    return index_BK


def pack(samples: Sequence[Sample], *, micro_batch: int, pad_id: int, max_len: int = 8192) -> list[TrainBatch]:
    """Group samples by bucket length into batches whose size is a multiple of micro_batch."""
    by_len: dict[int, list[Sample]] = {}
    for s in samples:
        by_len.setdefault(bucket_length(len(s.ids), maximum=max_len), []).append(s)
    batches = []
    for T, group in sorted(by_len.items()):
        B = -(-len(group) // micro_batch) * micro_batch
        tokens = np.full((B, T), pad_id, np.int32)
        targets = np.full((B, T), pad_id, np.int32)
        mask = np.zeros((B, T), np.float32)
        old = np.zeros((B, T), np.float32)
        adv = np.zeros((B,), np.float32)
        for b, s in enumerate(group):
            n = len(s.ids)
            tokens[b, :n] = s.ids
            targets[b, : n - 1] = s.ids[1:]
            mask[b, : n - 1] = s.mask[1:]
            old[b, : n - 1] = s.logprobs[1:]
            adv[b] = s.advantage
        positions = np.broadcast_to(np.arange(T, dtype=np.int32), (B, T)).copy()
        batches.append(TrainBatch(tokens, targets, mask, old, adv, positions, loss_index(mask)))
    return batches
