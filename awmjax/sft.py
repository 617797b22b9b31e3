"""SFT warm start: supervised training on gold trajectories executed in the pool.

Each task's gold call sequence is played through the same rollout code as RL
(`run_episodes` with a `ScriptedPolicy` that writes the gold turns), so the tool
responses the model trains on are the pool's real observations, rendered by the same
chat format, on the same tool surface. Only episodes the code check judges complete
are kept. The final answers are phrased in varied ways (several forms of each), so the
model learns the calls and answers, not one template; every variant of a kind of turn
starts with the same token (see WRITE_FINALS). Samples follow the RL history limit: each assistant turn is trained in
the context the policy would have seen (`samples_from_episode`); where that context is
a prefix of the next turn's (the window did not cut anything), the two samples are
merged into one sequence with both turns trainable, which computes the same loss on
fewer tokens.

    awmjax sft --config FILE        # [train] catalog/policy/out, [rollout], [optim], [sft]
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from awmjax.chat import ChatConfig, Conversation
from awmjax.files import write_atomic
from awmjax.rl.batch import Sample, merge_prefix_samples, samples_from_episode
from awmjax.rollout import EpisodeResult, RolloutConfig, run_episodes
from awmjax.sampler import Generation
from awmjax.sampling import SamplingConfig
from awmjax.toolcall import LIST_TOOLS, format_mcp_call, format_tool_call

# Phrasings of the assistant's final turn; the gold calls and answers are never changed.
# Every variant of one kind of turn starts with the same token (a call with "<tool_call>", a
# write's answer with "Done", a read's answer with the answer itself), and the variety comes
# after it. Under greedy decoding the first token decides "call again or answer": variants
# that began differently would split the answer's probability between them, and a call
# could then win the argmax with less total probability than the answer (measured: SFT
# models with call prefaces kept calling tools after the answer was in hand).
WRITE_FINALS = ("Done.", "Done: the change is made.", "Done, I've taken care of that.", "Done. The task is complete.",
                "Done, that's taken care of for you.")
READ_FINALS = ("{answer}", "{answer} Let me know if you need anything else.", "{answer} That is what the records show.")


def gold_turns(task, surface: str, rng: random.Random) -> list[str]:
    """The assistant texts of one phrasing of a task's gold trajectory (calls, then the answer)."""
    turns = [format_tool_call(LIST_TOOLS, {})] if surface == "mcp" else []
    for call in task.gold or ():
        turns.append(format_mcp_call(call.tool, call.arguments) if surface == "mcp"
                     else format_tool_call(call.tool, call.arguments))
    finals = READ_FINALS if task.answer else WRITE_FINALS
    turns.append(rng.choice(finals).format(answer=task.answer or ""))
    return turns


class ScriptedPolicy:
    """A policy that writes fixed assistant turns: the j-th turn of episode k is scripts[k][j].

    Episodes are recognized by the start of their prompt (system turn and task), which every
    history-limited prompt keeps, so it plugs into `run_episodes` like the sampler. Used for
    gold trajectories (SFT) and for scripted outcomes in tests of the evaluation harness.
    """

    def __init__(self, tokenizer, scripts: Sequence[tuple[Sequence[int], Sequence[str]]]):
        self.tokenizer = tokenizer
        self._scripts: dict[tuple[int, ...], list[str]] = {}
        self._cursor: dict[tuple[int, ...], int] = {}
        for prefix, turns in scripts:
            key = tuple(prefix)
            if key in self._scripts:
                raise ValueError("ScriptedPolicy: two scripts share a prompt (same world, task and surface); "
                                 "run them in separate batches")
            self._scripts[key], self._cursor[key] = list(turns), 0
        self._lengths = sorted({len(k) for k in self._scripts})

    @staticmethod
    def prefix(tokenizer, world, task, surface: str, system_prompt: str | None = None,
               tool_schema: str = "full") -> list[int]:
        """The ids that start every prompt of an episode of `task` (what scripts are keyed by)."""
        tools = [t.openai_spec() for t in world.tools]
        chat = ChatConfig(surface, system_prompt, tool_schema)
        return list(Conversation.start(tokenizer, task.instruction, tools, chat).ids)

    def generate(self, prompts, sampling: SamplingConfig, *, budgets=None) -> list[Generation]:
        out = []
        for prompt in prompts:
            key = next((tuple(prompt[:n]) for n in self._lengths if tuple(prompt[:n]) in self._scripts), None)
            if key is None:
                raise ValueError("ScriptedPolicy got a prompt that starts no known script")
            turns, j = self._scripts[key], self._cursor[key]
            text = turns[j] if j < len(turns) else turns[-1]
            self._cursor[key] = j + 1
            ids = self.tokenizer.encode(text, allow_special=False) + [self.tokenizer.im_end_id]
            zeros = [0.0] * len(ids)
            out.append(Generation(ids, zeros, zeros, "stop"))
        return out


def gold_episodes(tokenizer, pool, worlds: Sequence[Any], rollout: RolloutConfig, *, phrasings: int = 1,
                  seed: int = 0, batch: int = 32, progress: bool = True,
                  shuffle_tools: bool = False) -> tuple[list[EpisodeResult], dict[str, int]]:
    """Play every task's gold sequence (`phrasings` times, phrased differently) through the pool.

    shuffle_tools lists each episode's tools in a random order of its own (the world and its
    tools are unchanged; only the system turn's listing order differs), so the model cannot
    learn "call the tool listed first": a world's tools are generated lookups first, and in
    the compact catalog 40% of first gold calls are the first tool listed.

    Returns the episodes the code check judged complete and counts of what was dropped
    (tasks without a gold sequence, gold runs that did not complete). The pool needs at
    least `batch` slots and the worlds registered.
    """
    from tqdm import tqdm

    rng = random.Random(seed)
    jobs = [(w, t) for _ in range(phrasings) for w in worlds for t in w.tasks if t.gold]
    if shuffle_tools:
        jobs = [(replace(w, tools=tuple(rng.sample(w.tools, len(w.tools)))), t) for w, t in jobs]
    longest = max((len(t.gold) for _, t in jobs), default=0) + 2  # the calls, list_tools on mcp, the answer
    rollout = replace(rollout, max_turns=max(rollout.max_turns, longest))
    dropped = {"no_gold": sum(1 for w in worlds for t in w.tasks if not t.gold), "not_complete": 0}
    kept: list[EpisodeResult] = []
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=rollout.max_new_tokens)
    bar = tqdm(total=len(jobs), desc="gold episodes", unit="ep", disable=not progress, dynamic_ncols=True)
    queue = jobs
    while queue:  # one phrasing of a task per batch (scripts are keyed by prompt); the rest waits
        chunk, rest, seen = [], [], set()
        for w, t in queue:
            if len(chunk) < batch and (w.id, t.id) not in seen:
                seen.add((w.id, t.id))
                chunk.append((w, t))
            else:
                rest.append((w, t))
        queue = rest
        scripts = [(ScriptedPolicy.prefix(tokenizer, w, t, rollout.surface, rollout.system_prompt,
                                          rollout.tool_schema),
                    gold_turns(t, rollout.surface, rng)) for w, t in chunk]
        policy = ScriptedPolicy(tokenizer, scripts)
        # the gold turns are scripted, not decoded: nothing to constrain
        results = run_episodes(policy, tokenizer, pool, [(w, t, i) for i, (w, t) in enumerate(chunk)],
                               replace(rollout, constrain_calls=False), sampling)
        for r in results:
            if r.outcome == "complete":
                kept.append(r)
            else:
                dropped["not_complete"] += 1
        bar.update(len(chunk))
    bar.close()
    return kept, dropped


def sft_samples(episodes: Sequence[EpisodeResult], history_window: int | None) -> list[Sample]:
    """History-limited samples of gold episodes (loss on the assistant turns), prefix-merged."""
    out = []
    for e in episodes:
        out += merge_prefix_samples(samples_from_episode(e, 1.0, history_window))
    return out


@dataclass(frozen=True)
class SFTSection:
    """[sft]: the warm start's own schedule (the model, catalog, surface and history come from
    [train] / [rollout]; gradient clipping and frozen layers from [optim])."""

    epochs: int = 2
    batch: int = 2  # packed rows per update
    row_tokens: int = 2048  # samples are packed into rows of this many tokens (one compiled shape)
    learning_rate: float = 1e-4
    warmup_steps: int = 4
    phrasings: int = 1  # gold runs per task, each phrased differently
    # list each gold episode's tools in its own random order (see gold_episodes)
    shuffle_tools: bool = False
    max_tasks: int = 0  # 0: every task of the split
    # attention in query chunks of this many tokens (the masked upper triangle is skipped and the
    # scores stay in cache: ~2.5x faster updates on a CPU); 0: one (T, T) block per row
    query_chunk: int = 128
    # with [optim] train_top_layers, the frozen layers' output is computed once per row and every
    # epoch runs only the top layers from it (rows x row_tokens x hidden, compute dtype, held in memory;
    # over feature_cache_gib the update runs the whole model instead)
    feature_cache: bool = True
    feature_cache_gib: float = 4.0

    def __post_init__(self):
        if self.epochs < 1 or self.batch < 1 or self.phrasings < 1 or self.max_tasks < 0 or self.row_tokens < 64:
            raise ValueError("[sft] epochs, batch and phrasings must be >= 1, max_tasks >= 0, row_tokens >= 64")
        if self.query_chunk < 0:
            raise ValueError("[sft] query_chunk must be >= 0 (0: no chunks)")
        if self.learning_rate <= 0 or self.warmup_steps < 0:
            raise ValueError("[sft] learning_rate must be > 0 and warmup_steps >= 0")
        if self.feature_cache_gib < 0:
            raise ValueError("[sft] feature_cache_gib must be >= 0")


@dataclass(frozen=True)
class PackedRows:
    """Samples packed into fixed-length rows: each sample its own segment (attention stays inside
    it, positions restart at 0), and the loss read only at the positions that predict a trainable
    token (so the vocabulary projection runs on those positions, not on every token)."""

    tokens_RT: np.ndarray  # int32
    positions_RT: np.ndarray  # int32
    segments_RT: np.ndarray  # int32, 0 = padding
    loss_index_RK: np.ndarray  # int32, positions whose next token carries loss
    loss_target_RK: np.ndarray  # int32, that next token
    loss_weight_RK: np.ndarray  # float32, 1 for real loss slots, 0 for padding

    @property
    def rows(self) -> int:
        return self.tokens_RT.shape[0]


def pack_rows(samples: Sequence[Sample], row_tokens: int, pad_id: int, loss_slots: int | None = None) -> PackedRows:
    """First-fit-decreasing packing of samples into rows of `row_tokens` (samples longer than a row
    are an error: filter them first). `loss_slots` is K, the loss positions a row can hold
    (default row_tokens // 4); a sample that would overflow it starts a new row. Without
    `loss_slots`, K is then cut to the most any row uses, rounded up to a multiple of 64: the
    vocabulary projection and its backward run on K positions per row, so unused slots cost."""
    K = loss_slots or row_tokens // 4
    rows: list[list[Sample]] = []
    fill: list[tuple[int, int]] = []  # (tokens, loss slots) used per row
    for smp in sorted(samples, key=lambda x: -len(x.ids)):
        n, k = len(smp.ids), sum(smp.mask[1:])
        if n > row_tokens or k > K:
            raise ValueError(f"a sample of {n} tokens and {k} loss tokens does not fit a row of {row_tokens} "
                             f"tokens and {K} loss slots; raise [sft] row_tokens")
        for r, (used, slots) in enumerate(fill):
            if used + n <= row_tokens and slots + k <= K:
                rows[r].append(smp)
                fill[r] = (used + n, slots + k)
                break
        else:
            rows.append([smp])
            fill.append((n, k))
    R = len(rows)
    if not loss_slots:
        K = min(K, -(-max((k for _, k in fill), default=1) // 64) * 64)
    out = PackedRows(np.full((R, row_tokens), pad_id, np.int32), np.zeros((R, row_tokens), np.int32),
                     np.zeros((R, row_tokens), np.int32), np.zeros((R, K), np.int32), np.full((R, K), pad_id, np.int32),
                     np.zeros((R, K), np.float32))
    for r, group in enumerate(rows):
        at, slot = 0, 0
        for seg, smp in enumerate(group, start=1):
            n = len(smp.ids)
            out.tokens_RT[r, at : at + n] = smp.ids
            out.positions_RT[r, at : at + n] = np.arange(n)
            out.segments_RT[r, at : at + n] = seg
            for t in range(n - 1):
                if smp.mask[t + 1]:
                    out.loss_index_RK[r, slot] = at + t
                    out.loss_target_RK[r, slot] = smp.ids[t + 1]
                    out.loss_weight_RK[r, slot] = 1.0
                    slot += 1
            at += n
    return out


def _trainable_split(params, optim):
    """(trainable leaves, join): the leaves of `params` that `optim` trains, as a list, and a
    function that puts such a list back into the full tree (the frozen leaves from `params`)."""
    import jax

    leaves, treedef = jax.tree.flatten(params)
    mask = jax.tree.leaves(optim.trainable(params))

    def join(train):
        it = iter(train)
        return jax.tree.unflatten(treedef, [next(it) if t else p for p, t in zip(leaves, mask)])

    return [p for p, t in zip(leaves, mask) if t], join


def sft_state(model, optim) -> tuple[Any, Any]:
    """(graphdef, TrainState) for `make_sft_step`: the full parameters, and optimizer state for the
    trainable leaves only (with [optim] train_top_layers = 8 of 30 that is a fifth of the model:
    no Adam moments, clipping or update for frozen weights, whose gradients would be zero)."""
    import jax.numpy as jnp
    from flax import nnx

    from awmjax.rl.train_step import TrainState

    graphdef, params = nnx.split(model)
    train, _ = _trainable_split(params, optim)
    return graphdef, TrainState(params, optim.make().init(train), jnp.zeros((), jnp.int32), None)


def make_sft_step(graphdef, optim, micro_rows: int = 1, query_chunk: int | None = None,
                  from_layer: int | None = None):
    """The jitted SFT update: token-mean negative log-likelihood over a batch of packed rows,
    gradients accumulated over micro-batches of `micro_rows` rows (bounded activation memory).
    Returns step(state, arrays) -> (state, metrics); state comes from `sft_state`.

    With `from_layer`, the rows carry "features" (the residual stream entering that layer, from
    `frozen_features`) instead of running the frozen layers below it on every update.

    Gradients are taken with respect to the trainable leaves only (the frozen ones are constants
    of the loss, so no backward pass runs below the lowest trainable layer and no zero gradients
    are accumulated, clipped or fed to Adam); `query_chunk` is passed to Decoder.hidden (attention
    in query chunks; None: one (T, T) block)."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from awmjax.rl.logprobs import target_logprobs
    from awmjax.rl.train_step import TrainState

    # the transformation sees only the trainable leaves (a list): its weight-decay mask,
    # optim.trainable, finds no layer numbers there and keeps every one of them, as it should
    tx = optim.make()

    def step(state, arrays):
        train, join = _trainable_split(state.params, optim)

        def micro_loss(train, mb, total):
            model = nnx.merge(graphdef, join(train))
            if from_layer is None:
                h_BTD, _ = model.hidden(mb["tokens"], mb["positions"], segment_ids_BT=mb["segments"],
                                        query_chunk=query_chunk)
            else:
                x_BTD, _ = model.run_layers(mb["features"], mb["positions"], from_layer, len(model.layers),
                                            segment_ids_BT=mb["segments"], query_chunk=query_chunk)
                h_BTD = model.final_norm(x_BTD)
            h_BKD = jnp.take_along_axis(h_BTD, mb["index"][..., None], axis=1)
            logp_BK, _ = target_logprobs(model.logits(h_BKD), mb["target"])
            return -(logp_BK * mb["weight"]).sum() / jnp.maximum(total, 1.0)

        R = arrays["tokens"].shape[0]
        mbs = jax.tree.map(lambda a: a.reshape((R // micro_rows, micro_rows) + a.shape[1:]), arrays)
        total = arrays["weight"].sum()
        grad_fn = jax.value_and_grad(micro_loss)

        def body(acc, mb):
            loss, grads = grad_fn(train, mb, total)
            return jax.tree.map(jnp.add, acc, (loss, grads)), None

        zero = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, train))
        (loss, grads), _ = jax.lax.scan(body, zero, mbs)
        updates, opt_state = tx.update(grads, state.opt_state, train)
        params = join(optax.apply_updates(train, updates))
        metrics = {"nll": loss, "tokens": total, "grad_norm": optax.tree.norm(grads)}
        return TrainState(params, opt_state, state.step + 1, state.ref_params), metrics

    return jax.jit(step, donate_argnums=0)


def sft_plan(n_rows: int, batch: int, epochs: int, seed: int) -> list[np.ndarray]:
    """The updates of a run as row numbers: per epoch the rows shuffled, `batch` rows per update
    (the last one filled with -1, empty rows, so every update has one shape)."""
    out = []
    for epoch in range(epochs):
        order = np.random.default_rng([seed, epoch]).permutation(n_rows)
        for start in range(0, len(order), batch):
            take = order[start : start + batch]
            out.append(np.concatenate([take, np.full(batch - len(take), -1)]).astype(np.int64))
    return out


def update_arrays(rows: PackedRows, pick: np.ndarray, features_RTD: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The arrays of one update: rows `pick` (-1: an empty row, all padding, no loss)."""
    real = pick >= 0
    idx = np.where(real, pick, 0)

    def rows_of(a, fill=0):
        x = a[idx].copy()
        x[~real] = fill
        return x

    out = {"tokens": rows_of(rows.tokens_RT), "positions": rows_of(rows.positions_RT),
           "segments": rows_of(rows.segments_RT), "index": rows_of(rows.loss_index_RK),
           "target": rows_of(rows.loss_target_RK), "weight": rows_of(rows.loss_weight_RK, 0.0)}
    if features_RTD is not None:
        out["features"] = rows_of(features_RTD, 0.0)
    return out


def sft_updates(rows: PackedRows, batch: int, epochs: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Every update's arrays of a run (`sft_plan`, materialized)."""
    return [update_arrays(rows, pick) for pick in sft_plan(rows.rows, batch, epochs, seed)]


def frozen_features(graphdef, params, rows: PackedRows, stop: int, query_chunk: int | None = None,
                    progress: bool = False) -> np.ndarray:
    """The residual stream entering layer `stop` for every packed row, (R, T, D) in the compute dtype: what
    the frozen layers below the trainable ones compute, once for the whole run (their weights do
    not change, so every epoch would compute exactly this again)."""
    import jax
    from flax import nnx
    from tqdm import tqdm

    @jax.jit
    def run(params, tokens_T, positions_T, segments_T):
        model = nnx.merge(graphdef, params)
        x, _ = model.run_layers(model.embed_tokens(tokens_T[None]), positions_T[None], 0, stop,
                                segment_ids_BT=segments_T[None], query_chunk=query_chunk)
        return x[0]

    config = nnx.merge(graphdef, params).config
    out = np.zeros(rows.tokens_RT.shape + (config.hidden_size,), jax.numpy.dtype(config.dtype))
    for r in tqdm(range(rows.rows), desc="frozen layers", unit="row", disable=not progress, dynamic_ncols=True):
        out[r] = np.asarray(run(params, rows.tokens_RT[r], rows.positions_RT[r], rows.segments_RT[r]))
    return out


def run_sft(cfg, *, progress: bool = True, out: str | os.PathLike | None = None) -> Path:
    """Run the SFT warm start of a RunConfig; writes <out>/metrics.jsonl and <out>/policy (HF dir)."""
    import jax
    from flax import nnx
    from tqdm import tqdm

    from awmjax.policy import load_policy, save_policy
    from awmjax.rl.train_step import OptimConfig
    from envgen.catalog import Catalog
    from envgen.pool import Pool

    t, s = cfg.train, cfg.sft
    run_dir = Path(out or Path(t.out) / "sft")
    run_dir.mkdir(parents=True, exist_ok=True)
    catalog = Catalog.open(t.catalog)
    worlds = list(catalog.worlds(t.split))
    if s.max_tasks:
        worlds = _first_tasks(worlds, s.max_tasks)
    model, model_cfg, tok = load_policy(t.policy, dtype=t.dtype, seed=t.seed)

    t0 = time.perf_counter()
    with Pool(n_slots=32, observation_chars=cfg.rollout.observation_chars) as pool:
        pool.register(worlds)
        episodes, dropped = gold_episodes(tok, pool, worlds, cfg.rollout, phrasings=s.phrasings, seed=t.seed,
                                          batch=32, progress=progress, shuffle_tools=s.shuffle_tools)
    samples = sft_samples(episodes, cfg.rollout.history_window if t.history_training else None)
    data_seconds = time.perf_counter() - t0
    if not samples:
        raise ValueError(f"no gold trajectory of split {t.split!r} in {t.catalog} completed; nothing to train on")

    too_long = [x for x in samples if len(x.ids) > s.row_tokens]
    dropped["samples_too_long"] = len(too_long)
    rows = pack_rows([x for x in samples if len(x.ids) <= s.row_tokens], s.row_tokens, tok.pad_id)
    plan = sft_plan(rows.rows, s.batch, s.epochs, t.seed)
    optim = OptimConfig(learning_rate=s.learning_rate, warmup_steps=s.warmup_steps, max_grad_norm=cfg.optim.max_grad_norm,
                        weight_decay=cfg.optim.weight_decay, train_top_layers=cfg.optim.train_top_layers)
    graphdef, state = sft_state(model, optim)
    from_layer, features, t_features = _feature_cache_layer(model_cfg, cfg.optim, s, rows), None, 0.0
    if from_layer is not None:
        t0 = time.perf_counter()
        features = frozen_features(graphdef, state.params, rows, from_layer, s.query_chunk or None, progress)
        t_features = time.perf_counter() - t0
    step_fn = make_sft_step(graphdef, optim, query_chunk=s.query_chunk or None, from_layer=from_layer)
    metrics_path = run_dir / "metrics.jsonl"
    metrics_path.unlink(missing_ok=True)
    tokens_total, t_train = 0, time.perf_counter()
    bar = tqdm(plan, desc="sft", unit="step", disable=not progress, dynamic_ncols=True)
    for i, pick in enumerate(bar):
        arrays = update_arrays(rows, pick, features)
        t_step = time.perf_counter()
        state, m = step_fn(state, arrays)
        m = {k: float(v) for k, v in jax.device_get(m).items()}
        tokens_total += int((arrays["segments"] > 0).sum())
        m.update(step_seconds=time.perf_counter() - t_step, tokens_per_s=tokens_total / (time.perf_counter() - t_train))
        with open(metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": i + 1, **m}) + "\n")
        bar.set_postfix(nll=f"{m['nll']:.3f}", tok_s=f"{m['tokens_per_s']:.0f}")
    bar.close()
    save_policy(nnx.merge(graphdef, state.params), model_cfg, tok, run_dir / "policy")
    summary = {"gold_episodes": len(episodes), "dropped": dropped, "samples": len(samples), "rows": rows.rows,
               "updates": len(plan),
               "train_tokens": tokens_total, "data_seconds": data_seconds, "feature_cache_from_layer": from_layer,
               "feature_seconds": t_features, "train_seconds": time.perf_counter() - t_train}
    write_atomic(run_dir / "summary.json", json.dumps(summary, indent=1))
    return run_dir


def _feature_cache_layer(model_cfg, optim, sft: SFTSection, rows: PackedRows) -> int | None:
    """The lowest trainable layer when the frozen layers' output is worth caching and fits the
    [sft] memory bound, else None (the update then runs the whole model every time)."""
    top = optim.train_top_layers
    if not (sft.feature_cache and 0 < top < model_cfg.num_layers):
        return None
    import jax.numpy as jnp

    nbytes = rows.tokens_RT.size * model_cfg.hidden_size * jnp.dtype(model_cfg.dtype).itemsize
    return model_cfg.num_layers - top if nbytes <= sft.feature_cache_gib * 2**30 else None


def _first_tasks(worlds: Sequence[Any], n: int) -> list[Any]:
    """Whole worlds, in order, until at least `n` tasks are covered."""
    out, count = [], 0
    for w in worlds:
        if count >= n:
            break
        out.append(w)
        count += len(w.tasks)
    return out
