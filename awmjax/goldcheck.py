"""Teacher-forced gold check: at every turn of a task's gold trajectory, does the policy's
greedy choice continue the gold turn?

Episode completion needs every turn of an episode right. On a weak policy it sits near zero
and moves one task at a time, so two policies of 24 evaluated tasks that differ by one task
are within noise of each other. This check scores the same skill decision by decision: the
gold trajectories of the split are replayed in the pool (real tool responses), cut to the
history limit the policy works under, and one forward pass per sample gives the policy's
argmax at every position of every assistant turn. Nothing is sampled and no episode runs,
so it is cheap and has no variance beyond the choice of tasks.

Per assistant turn it records:
- decide: the turn's first token says the right thing, a call (`<tool_call>`) when the gold
  turn is a call and anything else when it is an answer;
- tool (calls): given the gold text up to the tool's name, every token of the name is the
  argmax: which of the listed tools the policy would call;
- exact (calls): every token of the call is the argmax, name and arguments.
Answers are scored by `decide` only: the gold answers are scripted phrasings, so their
wording is no standard.

    report = gold_check(model, tokenizer, worlds, rollout)
    print(report.table())

    gold = gold_samples(tokenizer, worlds, rollout)   # played once, for several policies
    reports = [gold_check(m, tokenizer, gold) for m in models]
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from awmjax.eval import DIFFICULTY_CLASSES, difficulty_class, wilson
from awmjax.rl.batch import merge_prefix_samples, samples_from_episode
from awmjax.rollout import RolloutConfig

CALL_OPEN = "<tool_call>"
_NAME_KEY = '"name": "'


@dataclass(frozen=True)
class GoldTurn:
    """The check of one assistant turn of a gold trajectory."""

    world: str
    task: str
    step: int  # the turn's place in the episode, 0 = the first assistant turn
    kind: str  # "call" | "answer"
    difficulty: str  # the task's difficulty class (calls in its gold sequence)
    decide: bool
    tool: bool | None  # calls only
    exact: bool | None  # calls only


@dataclass
class GoldCheckReport:
    """What `gold_check` returns: every turn's check and rates over groups of turns."""

    policy: str
    split: str
    tasks: int
    history_window: int | None
    seconds: float
    turns: list[GoldTurn] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)  # tasks left out: no gold sequence, gold run incomplete

    def rates(self, turns: Sequence[GoldTurn] | None = None) -> dict[str, Any]:
        """n and rate, with a 95% Wilson interval, of decide / tool / exact over `turns`."""
        turns = self.turns if turns is None else turns
        calls = [t for t in turns if t.kind == "call"]
        out: dict[str, Any] = {"turns": len(turns), "calls": len(calls)}
        for name, pool, hits in (("decide", turns, sum(t.decide for t in turns)),
                                 ("tool", calls, sum(bool(t.tool) for t in calls)),
                                 ("exact", calls, sum(bool(t.exact) for t in calls))):
            out[name] = {"rate": hits / len(pool) if pool else 0.0, "interval": wilson(hits, len(pool))}
        return out

    def groups(self) -> dict[str, list[GoldTurn]]:
        """The table's rows: all turns, first calls, later calls, answers, then by difficulty."""
        rows = {"all turns": self.turns,
                "first calls": [t for t in self.turns if t.kind == "call" and t.step == 0],
                "later calls": [t for t in self.turns if t.kind == "call" and t.step > 0],
                "answers": [t for t in self.turns if t.kind == "answer"]}
        for k in DIFFICULTY_CLASSES:
            sel = [t for t in self.turns if t.difficulty == k]
            if sel:
                rows[f"  {k}"] = sel
        return rows

    @property
    def tool_rate(self) -> float:
        """The share of gold calls whose tool the policy picks (the headline figure)."""
        return self.rates()["tool"]["rate"]

    def table(self) -> str:
        head = (f"gold check (teacher-forced)  policy {self.policy}  split {self.split}  {self.tasks} tasks  "
                f"history window {self.history_window if self.history_window is not None else 'full'}  "
                f"({self.seconds:.1f}s)")
        left = {k: v for k, v in self.dropped.items() if v}
        if left:
            head += "\ntasks left out: " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in left.items())
        lines = [head, f"{'':<16}{'turns':>6}{'calls':>6}{'call vs answer':>22}{'tool':>22}{'whole call':>22}"]
        for name, sel in self.groups().items():
            r = self.rates(sel)
            cells = "".join(_cell(r[k], r["calls"] if k != "decide" else r["turns"]) for k in ("decide", "tool", "exact"))
            lines.append(f"{name:<16}{r['turns']:>6}{r['calls']:>6}{cells}")
        lines.append("% of gold turns where the policy's argmax continues the gold turn [95% Wilson interval]: "
                     "call vs answer = the turn opens as the gold one does (<tool_call> or not), tool = the call's "
                     "name given the gold text before it, whole call = every token")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"policy": self.policy, "split": self.split, "tasks": self.tasks,
                "history_window": self.history_window, "seconds": self.seconds, "dropped": self.dropped,
                "groups": {name.strip(): self.rates(sel) for name, sel in self.groups().items()},
                "turns": [asdict(t) for t in self.turns]}


def _cell(r: dict[str, Any], n: int) -> str:
    if not n:
        return f"{'-':>22}"
    lo, hi = r["interval"]
    return f"{100 * r['rate']:5.1f} [{100 * lo:4.1f},{100 * hi:5.1f}]".rjust(22)


@dataclass(frozen=True)
class GoldSamples:
    """The gold trajectories of a set of tasks, as history-limited samples: built once
    (`gold_samples`), then any number of policies are checked on them (`gold_check`)."""

    split: str
    history_window: int | None
    row_tokens: int
    samples: list  # (EpisodeResult, Sample): every assistant turn's context and the turn
    difficulty: dict  # (world id, task id) -> difficulty class
    tasks: int  # tasks whose gold run completed
    dropped: dict[str, int]  # tasks left out: no gold sequence, gold run incomplete
    seconds: float
    # the residual stream entering layer `share_layer`, kept from the first policy checked for
    # every later one whose embedding and layers below it are identical (see gold_samples)
    share_layer: int | None = None
    shared: dict = field(default_factory=dict, repr=False)


def frozen_layers(num_layers: int, train_top_layers: int) -> int | None:
    """The `share_layer` for policies trained with [optim] train_top_layers from one start:
    the layers below it never change (None when every layer trains)."""
    return num_layers - train_top_layers if 0 < train_top_layers < num_layers else None


def gold_samples(tokenizer, worlds: Sequence[Any], rollout: RolloutConfig, *, split: str = "held-out",
                 limit: int | None = None, row_tokens: int = 2048, seed: int = 0, share_layer: int | None = None,
                 progress: bool = False) -> GoldSamples:
    """The gold trajectories of the tasks of `worlds` (whole worlds, in order, until at least
    `limit` tasks; all when None), played in the pool under the rollout's surface and tool
    listing and cut to its history limit. Tasks whose gold run does not complete are left out
    (counted in `dropped`); a sample longer than `row_tokens` is an error naming the fix.

    share_layer: policies trained with [optim] train_top_layers = k from one starting point
    share its embedding and its layers below N - k. With share_layer = N - k, the first policy
    checked leaves the residual stream entering that layer, and a later policy whose
    embedding and lower layers are equal to it leaf for leaf (compared, not assumed) runs
    only its top k layers; any other policy runs whole, so the result never depends on it."""
    from envgen.pool import Pool

    from awmjax.sft import gold_episodes

    t0 = time.perf_counter()
    chosen, n = [], 0  # whole worlds, in order, until `limit` tasks are covered
    for w in worlds:
        if limit is not None and n >= limit:
            break
        chosen.append(w)
        n += len(w.tasks)
    if not chosen:
        raise ValueError("gold_check: no tasks to check; pass worlds that have tasks")
    difficulty = {(w.id, t.id): difficulty_class(len(t.gold)) for w in chosen for t in w.tasks}
    with Pool(n_slots=32, observation_chars=rollout.observation_chars) as pool:
        pool.register(chosen)
        episodes, dropped = gold_episodes(tokenizer, pool, chosen, rollout, seed=seed, batch=32, progress=progress)
    samples = []
    for e in episodes:
        for s in merge_prefix_samples(samples_from_episode(e, 1.0, rollout.history_window)):
            if len(s.ids) > row_tokens:
                raise ValueError(f"gold_check: a sample of {len(s.ids)} tokens in {e.world_id}/{e.task_id} does not "
                                 f"fit rows of {row_tokens}; pass a larger row_tokens (--max-context)")
            samples.append((e, s))
    return GoldSamples(split, rollout.history_window, row_tokens, samples, difficulty, len(episodes), dropped,
                       time.perf_counter() - t0, share_layer)


def gold_check(model, tokenizer, worlds: Sequence[Any] | GoldSamples, rollout: RolloutConfig | None = None, *,
               policy_name: str = "policy", split: str = "held-out", limit: int | None = None,
               row_tokens: int = 2048, seed: int = 0, progress: bool = False) -> GoldCheckReport:
    """Check `model` on the gold trajectories of `worlds` (built by `gold_samples` with the
    other arguments), or on a `GoldSamples` built before (then `rollout`, `split`, `limit`,
    `row_tokens` and `seed` are its own)."""
    t0 = time.perf_counter()
    if not isinstance(worlds, GoldSamples) and rollout is None:
        raise ValueError("gold_check: pass the RolloutConfig with the worlds (or a GoldSamples from gold_samples)")
    gold = worlds if isinstance(worlds, GoldSamples) else gold_samples(
        tokenizer, worlds, rollout, split=split, limit=limit, row_tokens=row_tokens, seed=seed, progress=progress)
    samples, difficulty = gold.samples, gold.difficulty
    preds = _argmax_at_turns(model, tokenizer, [s for _, s in samples], gold.row_tokens, progress,
                             gold.share_layer, gold.shared)

    spans = [(e, s, pred, start, end, tokenizer.decode(s.ids[start:end]).startswith(CALL_OPEN))
             for (e, s), pred in zip(samples, preds) for start, end in _spans(s.mask)]
    # the token a call turn opens with: an answer turn whose argmax starts there is scored as a call
    call_first = {s.ids[start] for _, s, _, start, _, is_call in spans if is_call}
    turns: list[GoldTurn] = []
    seen: dict[tuple[str, str], int] = {}
    for e, s, pred, start, end, is_call in spans:
        key = (e.world_id, e.task_id)
        step = seen.get(key, 0)
        turn_ids = s.ids[start:end]
        right = [int(pred[q - 1]) == s.ids[q] for q in range(start, end)]
        tool = exact = None
        if is_call:
            ends = _char_ends(tokenizer, turn_ids)
            decide = all(right[: _token_at(ends, len(CALL_OPEN) - 1) + 1])  # the whole "<tool_call>"
            exact = all(right)
            lo, hi = _name_tokens(tokenizer.decode(turn_ids), ends)
            tool = all(right[lo:hi])
        else:
            decide = int(pred[start - 1]) not in call_first
        turns.append(GoldTurn(e.world_id, e.task_id, step, "call" if is_call else "answer",
                              difficulty[key], bool(decide), tool, exact))
        seen[key] = step + 1
    seconds = time.perf_counter() - t0
    return GoldCheckReport(policy_name, gold.split, gold.tasks, gold.history_window, seconds, turns, gold.dropped)


def _spans(mask: Sequence[int]) -> list[tuple[int, int]]:
    """[start, end) of each run of trainable positions (one assistant turn each), start >= 1."""
    out, t = [], 1
    while t < len(mask):
        if mask[t]:
            start = t
            while t < len(mask) and mask[t]:
                t += 1
            out.append((start, t))
        else:
            t += 1
    return out


def _char_ends(tokenizer, ids: Sequence[int]) -> list[int]:
    """For each token of `ids`, the length of the text decoded through it (characters are
    mapped to tokens this way, so a token that merges two pieces counts for both)."""
    return [len(tokenizer.decode(list(ids[: k + 1]))) for k in range(len(ids))]


def _token_at(ends: Sequence[int], char: int) -> int:
    """The token that holds character `char` (the last token when past the end)."""
    return next((k for k, e in enumerate(ends) if e > char), len(ends) - 1)


def _name_tokens(text: str, ends: Sequence[int]) -> tuple[int, int]:
    """[lo, hi): the tokens of a gold call turn that carry its (first) tool's name."""
    at = text.find(_NAME_KEY)
    if at < 0:
        return (0, len(ends))
    first = at + len(_NAME_KEY)
    last = text.find('"', first)
    return (_token_at(ends, first), _token_at(ends, max(first, last - 1)) + 1)


def _argmax_at_turns(model, tokenizer, samples, row_tokens: int, progress: bool, share_layer: int | None = None,
                     shared: dict | None = None) -> list[np.ndarray]:
    """For every sample, the model's argmax next token at each position before a trainable one
    (-1 elsewhere). Samples are packed into rows of `row_tokens` (each its own
    attention segment, positions from 0); the vocabulary projection runs only at the positions
    read (row_tokens / 4 of them, one compiled shape for every row and every policy of one
    architecture). With `share_layer`, `shared` keeps the residual stream entering that layer
    per row for the next policy with the same embedding and lower layers (GoldSamples)."""
    from tqdm import tqdm

    graphdef, params = nnx.split(model)
    below = _leaves_below(params, share_layer) if share_layer and shared is not None else None
    reuse = below is not None and "below" in shared and all(
        a.shape == b.shape and np.array_equal(a, np.asarray(b)) for a, b in zip(shared["below"], below))
    if below is not None and not reuse:
        shared.clear()
        shared.update(below=[np.array(x) for x in below], rows=[])
    rows: list[list[int]] = []  # sample numbers per row, first-fit decreasing (fewer rows to run)
    used: list[int] = []
    for i in sorted(range(len(samples)), key=lambda i: -len(samples[i].ids)):
        n = len(samples[i].ids)
        r = next((r for r, u in enumerate(used) if u + n <= row_tokens), None)
        if r is None:
            rows.append([])
            used.append(0)
            r = len(rows) - 1
        rows[r].append(i)
        used[r] += n
    out: list[np.ndarray] = [np.full(len(s.ids), -1, np.int64) for s in samples]
    bar = tqdm(rows, desc="gold check", unit="row", disable=not progress, dynamic_ncols=True)
    for r, row in enumerate(bar):
        tokens = np.full(row_tokens, tokenizer.pad_id, np.int32)
        positions = np.zeros(row_tokens, np.int32)
        segments = np.zeros(row_tokens, np.int32)
        where, at = [], 0
        for seg, i in enumerate(row, start=1):
            ids, mask = samples[i].ids, samples[i].mask
            tokens[at : at + len(ids)] = ids
            positions[at : at + len(ids)] = np.arange(len(ids))
            segments[at : at + len(ids)] = seg
            where += [(i, t - 1, at + t - 1) for t in range(1, len(ids)) if mask[t]]
            at += len(ids)
        index = np.zeros(max(row_tokens // 4, len(where)), np.int32)
        index[: len(where)] = [w[2] for w in where]
        if reuse:
            pred = _top(graphdef, params, shared["rows"][r], positions, segments, index, share_layer)
        elif below is not None:
            shared["rows"].append(_bottom(graphdef, params, tokens, positions, segments, share_layer))
            pred = _top(graphdef, params, shared["rows"][-1], positions, segments, index, share_layer)
        else:
            pred = _forward(graphdef, params, tokens, positions, segments, index)
        pred = np.asarray(pred)
        for j, (i, t, _) in enumerate(where):
            out[i][t] = int(pred[j])
    return out


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, params, tokens_T, positions_T, segments_T, index_K):
    """The argmax next token at positions index_K of one packed row."""
    model = nnx.merge(graphdef, params)
    h_BTD, _ = model.hidden(tokens_T[None], positions_T[None], segment_ids_BT=segments_T[None], query_chunk=128)
    return jnp.argmax(model.logits(h_BTD[0][index_K]), axis=-1)


@functools.partial(jax.jit, static_argnums=(0, 5))
def _bottom(graphdef, params, tokens_T, positions_T, segments_T, stop: int):
    """The residual stream entering layer `stop` of one packed row."""
    model = nnx.merge(graphdef, params)
    x, _ = model.run_layers(model.embed_tokens(tokens_T[None]), positions_T[None], 0, stop,
                            segment_ids_BT=segments_T[None], query_chunk=128)
    return x


@functools.partial(jax.jit, static_argnums=(0, 6))
def _top(graphdef, params, x_BTD, positions_T, segments_T, index_K, start: int):
    """The argmax next token at positions index_K from the stream entering layer `start`."""
    model = nnx.merge(graphdef, params)
    x, _ = model.run_layers(x_BTD, positions_T[None], start, len(model.layers), segment_ids_BT=segments_T[None],
                            query_chunk=128)
    return jnp.argmax(model.logits(model.final_norm(x)[0][index_K]), axis=-1)


def _leaves_below(params, layer: int) -> list:
    """The parameters the residual stream entering `layer` depends on: the embedding and
    every leaf of the layers below it, in tree order."""
    out = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        keys = [getattr(k, "key", getattr(k, "idx", None)) for k in path]
        if keys[0] == "embed" or ("layers" in keys and keys[keys.index("layers") + 1] < layer):
            out.append(leaf)
    return out
