"""Batched KV-cache generation: bucketed jitted prefill, a jitted decode loop, multi-turn state."""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from awmjax.model.config import ModelConfig
from awmjax.model.decoder import Decoder
from awmjax.model.kv_cache import KVCache
from awmjax.model.out_in import OutInWeights
from awmjax.model.sharding import logical_to_spec
from awmjax.sampling import SamplingConfig, choose_tokens, model_logprobs

__all__ = ["DecodeState", "Generation", "Sampler", "SamplingConfig"]

FINISH_REASONS = ("stop", "length", "budget")
_STOP, _LENGTH, _BUDGET = range(3)
_MIN_CHUNK, _MIN_STEPS, _MIN_STOP_IDS = 16, 16, 8


@dataclasses.dataclass(frozen=True)
class Generation:
    """One sequence's new tokens and their log-probabilities."""

    token_ids: list[int]
    logprobs: list[float]  # log p(token) under the model itself (temperature 1, no cuts)
    sampling_logprobs: list[float]  # log p(token) under the distribution it was drawn from
    finish_reason: str  # 'stop' | 'length' | 'budget'


@dataclasses.dataclass(frozen=True)
class DecodeState:
    """Conversations in flight: the KV cache and, per row, tokens not yet written to it."""

    cache: KVCache
    pending: tuple[tuple[int, ...], ...]
    turn: int = 0

    @property
    def num_rows(self) -> int:
        """Real (unpadded) conversations."""
        return len(self.pending)

    def lengths(self) -> list[int]:
        """Tokens per conversation so far (cached and pending)."""
        cached = np.asarray(self.cache.lengths_B)
        return [int(cached[b]) + len(p) for b, p in enumerate(self.pending)]


def _rows_bucket(n: int) -> int:
    """Batch rows for n conversations: the smallest of 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, ...
    (powers of two and 1.5x them) >= n, so a batch of 24 is not padded to 32."""
    p = _bucket(n, 1)
    return 3 * p // 4 if p >= 4 and 3 * p // 4 >= n else p


def _bucket(n: int, minimum: int) -> int:
    """The smallest power of two >= max(n, minimum)."""
    return max(minimum, 1 << max(0, int(n) - 1).bit_length())


class Sampler:
    """Generates from a Decoder for a batch of token-id prompts, reusing the cache across turns."""

    def __init__(self, model: Decoder, config: ModelConfig, *, max_cache_len: int, pad_id: int,
                 decode_fn: Callable[[Sequence[int]], str] | None = None,
                 mesh: Mesh | None = None, prefill_chunk: int = 128, decode_layout: str = "auto"):
        if max_cache_len <= 0:
            raise ValueError(f"Sampler max_cache_len must be > 0, got {max_cache_len}")
        if prefill_chunk < _MIN_CHUNK:
            raise ValueError(f"Sampler prefill_chunk must be >= {_MIN_CHUNK}, got {prefill_chunk}")
        if decode_layout not in ("auto", "out_in", "model"):
            raise ValueError(f"Sampler decode_layout must be 'auto', 'out_in' or 'model', got "
                             f"{decode_layout!r}")
        # "out_in": decode steps read a transposed copy of the layer matrices (model/out_in.py),
        # ~1.1x faster per step on a CPU at the cost of that copy's memory; "auto" uses it on a
        # CPU without a mesh (GPU matmul libraries do not need it)
        self.out_in_layout = decode_layout == "out_in" or (
            decode_layout == "auto" and mesh is None and jax.default_backend() == "cpu")
        self.config = config
        self.max_cache_len = max_cache_len
        self.pad_id = int(pad_id)
        self.decode_fn = decode_fn
        self.mesh = mesh
        # chunks of 128 rather than 256: a chunk's (rows, heads, chunk, slots) scores stay
        # smaller and a long feed in one row pads the others' chunk less (24 x 1100-token
        # prompts, SmolLM2-135M fp32, 2 cores: 40 s against 43 s; 16 x 128 tokens: the same)
        self.prefill_chunk = _bucket(prefill_chunk, _MIN_CHUNK)
        self.set_params(model)

    def set_params(self, model: Decoder) -> None:
        """Sample from new weights of the same architecture (no recompilation)."""
        self.graphdef, self.params = nnx.split(model)
        self.out_in = (_out_in_weights(self.graphdef, self.params) if self.out_in_layout
                       else None)

    def start(self, prompts: Sequence[Sequence[int]]) -> DecodeState:
        """An empty cache for these conversations; the prompts are prefilled by continue_."""
        if not prompts:
            raise ValueError("Sampler.start needs at least one prompt")
        # on a mesh, powers of two keep the batch axis divisible by the data axes
        batch = _bucket(len(prompts), 1) if self.mesh is not None else _rows_bucket(len(prompts))
        cache = KVCache.init(self.config, batch, self.max_cache_len)
        if self.mesh is not None:
            spec = logical_to_spec(("batch", "kv_heads", "cache_length", "head_dim"),
                                   cache.k_BKSH[0].shape, self.mesh)
            kv = NamedSharding(self.mesh, spec)
            cache = KVCache(tuple(jax.device_put(k, kv) for k in cache.k_BKSH),
                            tuple(jax.device_put(v, kv) for v in cache.v_BKSH),
                            jax.device_put(cache.lengths_B,
                                           NamedSharding(self.mesh, PartitionSpec(spec[0]))))
        return DecodeState(cache, tuple(tuple(int(t) for t in p) for p in prompts))

    def reset_rows(self, state: DecodeState, rows: Sequence[int]) -> DecodeState:
        """`state` with these conversations emptied: their next feed is written from slot 0."""
        drop = set(int(b) for b in rows)
        lengths_B = np.asarray(state.cache.lengths_B).copy()
        lengths_B[list(drop)] = 0
        cache = state.cache.replace(lengths_B=jax.device_put(jnp.asarray(lengths_B),
                                                             state.cache.lengths_B.sharding))
        pending = tuple(() if b in drop else p for b, p in enumerate(state.pending))
        return DecodeState(cache, pending, state.turn)

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig, *,
                 budgets: Sequence[int] | None = None,
                 row_ids: Sequence[int] | None = None,
                 constraints: Sequence | None = None) -> list[Generation]:
        """One completion per prompt."""
        generations, _ = self.continue_(self.start(prompts), None, sampling, budgets=budgets,
                                        row_ids=row_ids, constraints=constraints)
        return generations

    def continue_(self, state: DecodeState, appended: Sequence[Sequence[int]] | None,
                  sampling: SamplingConfig, *, budgets: Sequence[int] | None = None,
                  row_ids: Sequence[int] | None = None,
                  constraints: Sequence | None = None) -> tuple[list[Generation], DecodeState]:
        """Prefill appended tokens (e.g. tool responses) after each row's cache, then generate.

        `state` is consumed (its cache buffers are reused). budgets[b] caps row b's new tokens;
        give 0 to leave a finished conversation untouched. row_ids[b] (default b) names row b's
        random stream, so a row samples the same tokens whatever else shares the batch (a
        multi-process run splits a batch and still samples what one process would).
        constraints[b] (a constrain.CallConstraint, or None) keeps row b's tool calls inside its
        tools' schemas; with any given, decoding steps from the host, one masked step at a time.
        """
        rows = state.num_rows
        appended = appended if appended is not None else [()] * rows
        budgets = budgets if budgets is not None else [sampling.max_new_tokens] * rows
        if len(appended) != rows or len(budgets) != rows:
            raise ValueError(f"continue_: got {len(appended)} appended lists and {len(budgets)} "
                             f"budgets for {rows} conversations")
        feeds = [list(p) + [int(t) for t in a] for p, a in zip(state.pending, appended)]
        start_lengths = np.asarray(state.cache.lengths_B)
        for b, feed in enumerate(feeds):
            if start_lengths[b] + len(feed) > self.max_cache_len:
                raise ValueError(f"conversation {b} needs {start_lengths[b] + len(feed)} cache "
                                 f"slots but max_cache_len is {self.max_cache_len}")
            if not feed and budgets[b] > 0:
                raise ValueError(f"conversation {b} has no tokens to continue from; append some "
                                 "or give it budget 0")
        if constraints is not None and len(constraints) != rows:
            raise ValueError(f"continue_: got {len(constraints)} constraints for {rows} conversations")
        cons_B = list(constraints or ()) + [None] * (len(start_lengths) - len(constraints or ()))
        if not any(c is not None for c in cons_B):
            cons_B = None
        ids_B = np.arange(state.cache.lengths_B.shape[0])
        if row_ids is not None:
            if len(row_ids) != rows:
                raise ValueError(f"continue_: got {len(row_ids)} row_ids for {rows} conversations")
            ids_B[:rows] = row_ids
        # Rows with no budget and nothing appended have nothing to do (their pending token
        # would be written and taken back). When the others fit a smaller row bucket, run them
        # as a smaller batch and put their cache rows back, so the work follows the live rows,
        # not the batch's size. (On a mesh the batch axis is sharded: rows stay put.)
        busy = [bool(budgets[b] > 0 or appended[b]) for b in range(rows)]
        work = None if self.mesh is not None else self._rows_to_run(busy, len(start_lengths))
        if work is None:
            cache, lengths_B, out = self._run(state.cache, feeds, budgets, sampling, state.turn, ids_B,
                                              cons_B)
        else:
            idx = jnp.asarray(work)
            sub_feeds = [feeds[b] if b < rows and busy[b] else [] for b in work]
            sub_budgets = [budgets[b] if b < rows else 0 for b in work]
            sub_cache, sub_lengths, sub_out = self._run(
                _take_rows(state.cache, idx), sub_feeds, sub_budgets, sampling, state.turn,
                ids_B[work], None if cons_B is None else [cons_B[b] for b in work])
            cache = _put_rows(state.cache, sub_cache, idx)
            # idle rows count as fed, so _finish takes their pending token back out as usual
            lengths_B = start_lengths + np.asarray([len(f) for f in feeds] +
                                                   [0] * (len(start_lengths) - rows), np.int32)
            for k, b in enumerate(work):
                if b < rows and busy[b]:
                    lengths_B[b] = sub_lengths[k]
            out = _scatter_rows(sub_out, work, len(start_lengths), self.pad_id,
                                _LENGTH if sampling.max_new_tokens <= 0 else _BUDGET)
        return self._finish(cache, out, feeds, state, lengths_B, sampling)

    @staticmethod
    def _rows_to_run(busy_rows: list, batch: int) -> list[int] | None:
        """The rows to run as a smaller batch (the busy ones, padded with idle rows to a row
        bucket), or None when no smaller bucket holds them."""
        busy = [b for b, f in enumerate(busy_rows) if f]
        size = _rows_bucket(len(busy))
        if not busy or size >= batch:
            return None
        taken = set(busy)
        return busy + [b for b in range(batch) if b not in taken][: size - len(busy)]

    def _run(self, cache, feeds, budgets, sampling, turn, ids_B, cons_B=None):
        """Prefill and decode one batch: (cache, lengths after prefill, decode outputs)."""
        cache, h_BD = self._prefill(cache, feeds)
        lengths_B = np.asarray(cache.lengths_B)
        budget_B = np.zeros(lengths_B.shape[0], np.int32)
        for b in range(len(budgets)):
            room = self.max_cache_len - int(lengths_B[b])
            budget_B[b] = max(0, min(int(budgets[b]), sampling.max_new_tokens, room))
        cache, out = self._decode(cache, h_BD, budget_B, sampling, turn, ids_B, cons_B)
        return cache, lengths_B, out

    def _prefill(self, cache: KVCache, feeds: list[list[int]]) -> tuple[KVCache, jax.Array]:
        """Write every row's feed into the cache in chunks; h_BD is each row's last hidden state.

        A chunk that only some rows reach (one long tool response among short ones) runs on
        those rows alone when they fit a smaller row bucket (their cache rows are taken out
        and put back), so the long feed does not make every row pay for its chunks."""
        batch = cache.lengths_B.shape[0]
        h_BD = jnp.zeros((batch, self.config.hidden_size), jnp.dtype(self.config.dtype))
        longest = max((len(f) for f in feeds), default=0)
        start_B = np.asarray(cache.lengths_B) if longest else np.zeros(batch, np.int32)
        for offset in range(0, longest, self.prefill_chunk):
            count_B = np.zeros(batch, np.int32)
            for b, feed in enumerate(feeds):
                count_B[b] = min(max(len(feed) - offset, 0), self.prefill_chunk)
            width = _bucket(int(count_B.max()), _MIN_CHUNK)
            tokens_BT = np.full((batch, width), self.pad_id, np.int32)
            for b, feed in enumerate(feeds):
                tokens_BT[b, :count_B[b]] = feed[offset:offset + count_B[b]]
            rows = None if self.mesh is not None else self._rows_to_run(list(count_B > 0), batch)
            if rows is None:
                cache, h_BD = _prefill_chunk(self.graphdef, self.params, cache,
                                             jnp.asarray(tokens_BT), jnp.asarray(count_B), h_BD,
                                             kv_len=self._kv_len(int(start_B.max()) + offset + width))
                continue
            idx = jnp.asarray(rows)
            sub_cache, sub_h = _prefill_chunk(
                self.graphdef, self.params, _take_rows(cache, idx), jnp.asarray(tokens_BT[rows]),
                jnp.asarray(count_B[rows]), h_BD[idx],
                kv_len=self._kv_len(int(start_B[rows].max()) + offset + width))
            cache = _put_rows(cache, sub_cache, idx)
            h_BD = h_BD.at[idx].set(sub_h)
        return cache, h_BD

    def _decode(self, cache, h_BD, budget_B, sampling: SamplingConfig, turn: int, ids_B, cons_B=None):
        greedy, top_k = sampling.mode(self.config.vocab_size)
        stop_ids = list(sampling.stop_token_ids)
        stop_S = np.full(_bucket(len(stop_ids), _MIN_STOP_IDS), -1, np.int32)
        stop_S[:len(stop_ids)] = stop_ids
        key = jax.random.fold_in(jax.random.key(sampling.seed), turn)
        keys_B = _row_keys(key, ids_B)
        num_steps = _bucket(sampling.max_new_tokens, _MIN_STEPS)
        consts = (jnp.asarray(budget_B), jnp.asarray(stop_S),
                  jnp.float32(max(sampling.temperature, 1e-6)), jnp.float32(sampling.top_p),
                  jnp.int32(sampling.max_new_tokens), keys_B)
        if cons_B is not None:
            return self._decode_masked(cache, h_BD, budget_B, consts, cons_B, num_steps,
                                       greedy=greedy, top_k=top_k, max_new=sampling.max_new_tokens)
        # The loop runs in segments: each reads only the cache slots its rows can reach
        # (kv_len, the _kv_len size of the longest live row) and stops when a row would
        # outgrow them; the next segment continues from its carry with the next size.
        # Attention then reads ~the slots in use, not the turn's final length, every step.
        B = h_BD.shape[0]
        carry = (jnp.int32(0), jnp.asarray(np.asarray(budget_B) > 0), jnp.zeros(B, jnp.int32),
                 jnp.full(B, _LENGTH if sampling.max_new_tokens <= 0 else _BUDGET, jnp.int32),
                 jnp.full((B, num_steps), self.pad_id, jnp.int32),
                 jnp.zeros((B, num_steps), jnp.float32), jnp.zeros((B, num_steps), jnp.float32))
        active, lengths = np.asarray(budget_B) > 0, np.asarray(cache.lengths_B)
        while active.any():
            kv_len = self._kv_len(int(lengths[active].max()) + 1)
            start = int(carry[0])
            cache, h_BD, carry = _decode_loop(self.graphdef, self.params, self.out_in, cache, h_BD,
                                              carry, *consts, greedy=greedy, top_k=top_k,
                                              pad_id=self.pad_id, num_steps=num_steps,
                                              kv_len=kv_len)
            if int(carry[0]) >= num_steps:
                break
            if int(carry[0]) == start:  # cannot happen while every live row fits the cache
                raise RuntimeError(f"decode made no progress at step {start} (kv_len {kv_len})")
            active, lengths = np.asarray(carry[1]), np.asarray(cache.lengths_B)
        _, _, count_B, reason_B, tokens_BN, logp_BN, slogp_BN = carry
        return cache, (tokens_BN, logp_BN, slogp_BN, count_B, reason_B)

    def _decode_masked(self, cache, h_BD, budget_B, consts, cons_B, num_steps, *, greedy, top_k,
                       max_new):
        """The decode loop stepped from the host: before each step every constrained row's
        mask comes from its CallConstraint, which then reads the token the row took. Returns
        what _decode_loop returns."""
        B, V = h_BD.shape[0], self.config.vocab_size
        free_V = np.ones(V, bool)
        active = np.asarray(budget_B) > 0
        active_B, count_B = jnp.asarray(active), jnp.zeros(B, jnp.int32)
        reason = np.full(B, _LENGTH if max_new <= 0 else _BUDGET, np.int32)
        tokens = np.full((B, num_steps), self.pad_id, np.int32)
        logp, slogp = np.zeros((B, num_steps), np.float32), np.zeros((B, num_steps), np.float32)
        lengths = np.asarray(cache.lengths_B).copy()
        for step in range(num_steps):
            if not active.any():
                break
            kv_len = self._kv_len(int(lengths[active].max()) + 1)
            mask_BV = np.stack([c.mask() if c is not None and active[b] else free_V
                                for b, c in enumerate(cons_B)])
            cache, h_BD, active_B, count_B, token_B, logp_B, slogp_B, reason_B = _single_step(
                self.graphdef, self.params, self.out_in, cache, h_BD, active_B, count_B,
                jnp.int32(step), consts, jnp.asarray(mask_BV), greedy=greedy, top_k=top_k,
                pad_id=self.pad_id, kv_len=kv_len)
            token = np.asarray(token_B)
            tokens[:, step], logp[:, step], slogp[:, step] = token, np.asarray(logp_B), np.asarray(slogp_B)
            for b, c in enumerate(cons_B):
                if c is not None and active[b]:
                    c.advance(token[b])
            new_reason = np.asarray(reason_B)
            reason = np.where(new_reason >= 0, new_reason, reason)
            lengths += active
            active = np.asarray(active_B)
        return cache, (tokens, logp, slogp, np.asarray(count_B), reason)

    def _kv_len(self, needed: int) -> int:
        """The static number of cache slots attention reads (a compiled program per value):
        the smallest of 5/8, 6/8, 7/8 and 8/8 of the power of two >= `needed` (e.g. 160, 192,
        224, 256) that covers it, at least 128 and at most max_cache_len. A decode segment
        or prefill chunk then reads at most ~1/8 of a power of two more slots than its
        longest row needs; with powers of two alone a row at 1100 tokens read 2048 slots
        every step (24 rows x 1100-token prompts, 128 new tokens, SmolLM2-135M fp32 on 2
        cores: 112 s before, 82 s with these sizes and decode segments)."""
        p = _bucket(needed, 128)
        size = next(k * p // 8 for k in (5, 6, 7, 8) if k * p // 8 >= needed or k == 8)
        return min(max(size, 128), self.max_cache_len)

    def _finish(self, cache, out, feeds, state, lengths_B, sampling):
        """Generations from the loop's buffers, cut at stop strings, with the cache rolled back."""
        tokens_BN, logp_BN, slogp_BN, count_B, reason_B = (np.asarray(x) for x in out)
        generations, pending = [], []
        new_lengths_B = np.asarray(cache.lengths_B).copy()
        for b in range(state.num_rows):
            n, reason = int(count_B[b]), FINISH_REASONS[int(reason_B[b])]
            cut = self._stop_string_cut(tokens_BN[b, :n].tolist(), sampling.stop_strings)
            if cut is not None:
                n, reason = cut, "stop"
            generations.append(Generation(tokens_BN[b, :n].tolist(), logp_BN[b, :n].tolist(),
                                          slogp_BN[b, :n].tolist(), reason))
            # The newest token (generated, else fed) leaves the cache and waits in `pending`,
            # so the next turn's prefill yields the logits that follow it.
            if n:
                pending.append((int(tokens_BN[b, n - 1]),))
                new_lengths_B[b] = lengths_B[b] + n - 1
            elif feeds[b]:
                pending.append((feeds[b][-1],))
                new_lengths_B[b] = lengths_B[b] - 1
            else:
                pending.append(())
        cache = cache.replace(lengths_B=jax.device_put(jnp.asarray(new_lengths_B),
                                                       cache.lengths_B.sharding))
        return generations, DecodeState(cache, tuple(pending), state.turn + 1)

    def _stop_string_cut(self, token_ids: list[int], stop_strings: tuple[str, ...]) -> int | None:
        """Length of the shortest prefix whose text contains a stop string, if any does."""
        if not stop_strings or not token_ids:
            return None
        if self.decode_fn is None:
            raise ValueError("SamplingConfig.stop_strings needs Sampler(decode_fn=...)")

        def hit(n: int) -> bool:
            text = self.decode_fn(token_ids[:n])
            return any(s in text for s in stop_strings)

        if not hit(len(token_ids)):
            return None
        lo, hi = 1, len(token_ids)  # containing a stop string is monotone in the prefix
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if hit(mid) else (mid + 1, hi)
        return lo

    def stream(self, prompt: Sequence[int], sampling: SamplingConfig) -> Iterator[int]:
        """Yield one sequence's tokens as generated (stop ids end it; stop strings are the caller's)."""
        state = self.start([prompt])
        if not state.pending[0]:
            raise ValueError("Sampler.stream needs a non-empty prompt")
        cache, h_BD = self._prefill(state.cache, [list(state.pending[0])])
        length = int(np.asarray(cache.lengths_B)[0])
        room = self.max_cache_len - length
        budget_B = jnp.asarray([max(0, min(sampling.max_new_tokens, room))], jnp.int32)
        greedy, top_k = sampling.mode(self.config.vocab_size)
        stop_S = jnp.asarray(list(sampling.stop_token_ids) or [-1], jnp.int32)
        keys_B = _row_keys(jax.random.fold_in(jax.random.key(sampling.seed), 0), np.zeros(1, np.int32))
        consts = (budget_B, stop_S, jnp.float32(max(sampling.temperature, 1e-6)),
                  jnp.float32(sampling.top_p), jnp.int32(sampling.max_new_tokens), keys_B)
        active_B, count_B = budget_B > 0, jnp.zeros(1, jnp.int32)
        step = 0
        while bool(active_B[0]):
            cache, h_BD, active_B, count_B, token_B, _, _, _ = _single_step(
                self.graphdef, self.params, self.out_in, cache, h_BD, active_B, count_B,
                jnp.int32(step), consts, greedy=greedy, top_k=top_k, pad_id=self.pad_id,
                kv_len=self._kv_len(length + step + 1))  # the slots in use, not the whole cache
            step += 1
            yield int(token_B[0])


@jax.jit
def _take_rows(cache: KVCache, idx_R) -> KVCache:
    """A cache of the rows idx_R (copies)."""
    return KVCache(tuple(k[idx_R] for k in cache.k_BKSH), tuple(v[idx_R] for v in cache.v_BKSH),
                   cache.lengths_B[idx_R])


@functools.partial(jax.jit, donate_argnums=0)
def _put_rows(cache: KVCache, rows: KVCache, idx_R) -> KVCache:
    """`cache` with rows idx_R replaced by `rows` (in place: the big cache is donated)."""
    return KVCache(tuple(k.at[idx_R].set(r) for k, r in zip(cache.k_BKSH, rows.k_BKSH)),
                   tuple(v.at[idx_R].set(r) for v, r in zip(cache.v_BKSH, rows.v_BKSH)),
                   cache.lengths_B.at[idx_R].set(rows.lengths_B))


def _scatter_rows(out, rows: list[int], batch: int, pad_id: int, idle_reason: int):
    """Decode outputs of a sub-batch laid out over the full batch (idle rows: nothing new)."""
    tokens_RN, logp_RN, slogp_RN, count_R, reason_R = (np.asarray(x) for x in out)
    N = tokens_RN.shape[1]
    tokens = np.full((batch, N), pad_id, np.int32)
    logp, slogp = np.zeros((batch, N), np.float32), np.zeros((batch, N), np.float32)
    count, reason = np.zeros(batch, np.int32), np.full(batch, idle_reason, np.int32)
    tokens[rows], logp[rows], slogp[rows] = tokens_RN, logp_RN, slogp_RN
    count[rows], reason[rows] = count_R, reason_R
    return tokens, logp, slogp, count, reason


@functools.partial(jax.jit, static_argnums=0, static_argnames=("kv_len",), donate_argnums=2)
def _prefill_chunk(graphdef, params, cache: KVCache, tokens_BT, count_B, h_BD, *, kv_len=None):
    """Write a padded chunk of tokens after each row's cache; keep each row's last hidden state."""
    model = nnx.merge(graphdef, params)
    positions_BT = cache.lengths_B[:, None] + jnp.arange(tokens_BT.shape[1])[None, :]
    hidden_BTD, cache = model.hidden(tokens_BT, positions_BT, cache=cache, num_new_B=count_B,
                                     kv_len=kv_len)
    last_B11 = jnp.maximum(count_B - 1, 0)[:, None, None]
    last_BD = jnp.take_along_axis(hidden_BTD, last_B11, axis=1)[:, 0]
    return cache, jnp.where((count_B > 0)[:, None], last_BD.astype(h_BD.dtype), h_BD)


@functools.partial(jax.jit, static_argnums=0)
def _out_in_weights(graphdef, params) -> OutInWeights:
    """The decode layout's transposed copy of the model's layer matrices."""
    return OutInWeights.from_model(nnx.merge(graphdef, params))


def _step(model: Decoder, out_in, cache, h_BD, active_B, count_B, step, consts, *, greedy, top_k,
          pad_id, kv_len=None, mask_BV=None):
    """Choose each active row's next token from h_BD, then feed it through the model.
    mask_BV (constrained calls): only its True tokens may be chosen; the returned model
    log-probability is still the unmasked model's, as the trainer recomputes it."""
    budget_B, stop_S, temperature, top_p, max_new, row_keys_B = consts
    keys_B = jax.vmap(lambda k: jax.random.fold_in(k, step))(row_keys_B)
    logits_BV = model.logits(h_BD, few_rows=out_in is not None)
    if mask_BV is None:
        token_B, logp_B, slogp_B = choose_tokens(logits_BV, keys_B, temperature, top_p,
                                                 greedy=greedy, top_k=top_k)
    else:
        token_B, _, slogp_B = choose_tokens(jnp.where(mask_BV, logits_BV, -jnp.inf), keys_B,
                                            temperature, top_p, greedy=greedy, top_k=top_k)
        logp_B = model_logprobs(logits_BV, token_B)
    token_B = jnp.where(active_B, token_B, pad_id)
    count_B = count_B + active_B
    stop_B = active_B & jnp.isin(token_B, stop_S)
    length_B = active_B & (count_B >= max_new)
    budget_hit_B = active_B & (count_B >= budget_B)
    reason_B = jnp.where(stop_B, _STOP, jnp.where(length_B, _LENGTH,
                                                  jnp.where(budget_hit_B, _BUDGET, -1)))
    # every chosen token is written (finished rows write nothing past their length)
    h_B1D, cache = model.hidden(token_B[:, None], cache.lengths_B[:, None], cache=cache,
                                num_new_B=active_B.astype(jnp.int32), kv_len=kv_len,
                                out_in=out_in)
    active_B = active_B & ~(stop_B | length_B | budget_hit_B)
    return cache, h_B1D[:, 0], active_B, count_B, token_B, logp_B, slogp_B, reason_B


@functools.partial(jax.jit, static_argnums=0,
                   static_argnames=("greedy", "top_k", "pad_id", "kv_len"), donate_argnums=3)
def _single_step(graphdef, params, out_in, cache, h_BD, active_B, count_B, step, consts,
                 mask_BV=None, *, greedy, top_k, pad_id, kv_len=None):
    """One decode step, for streaming and for constrained calls (mask_BV)."""
    return _step(nnx.merge(graphdef, params), out_in, cache, h_BD, active_B, count_B, step,
                 consts, greedy=greedy, top_k=top_k, pad_id=pad_id, kv_len=kv_len, mask_BV=mask_BV)


def _row_keys(key, ids_B) -> jax.Array:
    """One random key per batch row: the turn's key folded with the row's id."""
    return jax.vmap(lambda r: jax.random.fold_in(key, r))(jnp.asarray(ids_B, jnp.int32))


@functools.partial(jax.jit, static_argnums=0,
                   static_argnames=("greedy", "top_k", "pad_id", "num_steps", "kv_len"),
                   donate_argnums=(3, 5))
def _decode_loop(graphdef, params, out_in, cache, h_BD, carry, budget_B, stop_S, temperature,
                 top_p, max_new, keys_B, *, greedy, top_k, pad_id, num_steps, kv_len):
    """Decode from `carry` (step, active_B, count_B, reason_B and the (B, num_steps) token,
    log-prob and sampling log-prob buffers) in one while_loop, until num_steps, until every
    row is done, or until a live row's next token would not fit the kv_len slots attention
    reads. Returns (cache, h_BD, carry). out_in: the decode layout's weights
    (model/out_in.py), or None for the model's own."""
    model = nnx.merge(graphdef, params)
    consts = (budget_B, stop_S, temperature, top_p, max_new, keys_B)

    def cond(state):
        step, cache, _, (active_B, *_) = state
        fits = jnp.max(jnp.where(active_B, cache.lengths_B, 0)) < kv_len
        return (step < num_steps) & jnp.any(active_B) & fits

    def body(state):
        step, cache, h_BD, (active_B, count_B, reason_B, tokens_BN, logp_BN, slogp_BN) = state
        cache, h_BD, active_B, count_B, token_B, logp_B, slogp_B, new_reason_B = _step(
            model, out_in, cache, h_BD, active_B, count_B, step, consts, greedy=greedy, top_k=top_k,
            pad_id=pad_id, kv_len=kv_len)
        reason_B = jnp.where(new_reason_B >= 0, new_reason_B, reason_B)
        tokens_BN = jax.lax.dynamic_update_slice(tokens_BN, token_B[:, None], (0, step))
        logp_BN = jax.lax.dynamic_update_slice(logp_BN, logp_B[:, None], (0, step))
        slogp_BN = jax.lax.dynamic_update_slice(slogp_BN, slogp_B[:, None], (0, step))
        return step + 1, cache, h_BD, (active_B, count_B, reason_B, tokens_BN, logp_BN, slogp_BN)

    step, cache, h_BD, rest = jax.lax.while_loop(cond, body, (carry[0], cache, h_BD, carry[1:]))
    return cache, h_BD, (step, *rest)
