"""The GRPO training loop: rollouts over the pool, code-judged rewards, history-limited updates.

One step: draw `tasks_per_step` tasks (deterministically from the seed and the step,
so a resumed run draws the same ones), run `group_size` episodes of each, turn
verdicts into rewards and group advantages, build HL samples, and update the policy
once per packed bucket (a mini-batch). Judgements run on a background loop; with
[judge] max_lag = k, up to k further batches are sampled while a batch's judgements
are pending, so slow judges overlap rollouts and updates (a batch's policy lag, the
updates between its sampling and its use, is recorded; exact resume holds for
max_lag = 0, while with k > 0 the k batches in flight at a kill are sampled again
by the resumed policy). Metrics go to metrics.jsonl and TensorBoard;
checkpoints (orbax, asynchronous) hold the parameters, optimizer state and step, with
the run config beside them.

Scale: the update runs on the [mesh] (data, fsdp, tensor) over every device of every process,
the state placed by `shard_state`, each batch by `place_batch`; one CPU is a 1x1x1 mesh. With
[distributed] enabled, every process calls jax.distributed.initialize, takes its own contiguous
share of each step's tasks (whole groups, so group advantages stay on one process), samples them
with its own pool and a local copy of the weights, and feeds its own rows of each update;
per-episode counts are gathered so every process computes the global metrics, and process 0
alone writes them (orbax coordinates the checkpoint across processes). Episodes sample from
streams named by their global index, so a run split over processes samples, and updates, as the
same run in one process would.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from awmjax.config import RunConfig
from awmjax.judges import JudgeRunner, make_judge
from awmjax.model.sharding import make_mesh
from awmjax.rl.advantages import zero_variance_groups
from awmjax.rl.batch import episode_advantages, merge_prefix_samples, pack, samples_from_episode
from awmjax.rl.sharding import align_batches, gather_rows, local_copy, place_batch, shard_state
from awmjax.rl.train_step import TrainState, init_state, make_train_step
from awmjax.rollout import EPISODE_OUTCOMES, RolloutStats, timed_episodes
from awmjax.sampling import SamplingConfig


@dataclass
class TaskDeck:
    """Every (world, task) of a split, dealt in seeded per-epoch permutations."""

    items: list[tuple[Any, Any]]
    seed: int

    def draw(self, step: int, count: int) -> list[tuple[Any, Any]]:
        """The tasks of one step; a function of (seed, step) only."""
        n = len(self.items)
        out = []
        for k in range(step * count, (step + 1) * count):
            epoch, i = divmod(k, n)
            perm = np.random.default_rng([self.seed, epoch]).permutation(n)
            out.append(self.items[perm[i]])
        return out


class MetricsLog:
    """Appends one JSON line per step and mirrors scalars to TensorBoard event files."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "metrics.jsonl"
        try:
            from tensorboardX import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        except ImportError:  # the [serve] extra is optional; JSONL is the record
            self.tb = None

    def write(self, step: int, metrics: dict[str, float]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(k, v, step)
            self.tb.flush()


def _checkpointer(run_dir: Path):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=True)
    return ocp.CheckpointManager((run_dir / "checkpoints").absolute(), options=options, item_names=("state", "meta"))


def save_checkpoint(mngr, step: int, state: TrainState, meta: dict) -> None:
    """Save asynchronously (the next step's rollouts overlap the write)."""
    import orbax.checkpoint as ocp

    mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))


def restore_checkpoint(mngr, state: TrainState) -> tuple[int, TrainState] | None:
    """The latest checkpoint's (step, state) placed like `state`, or None."""
    import orbax.checkpoint as ocp

    step = mngr.latest_step()
    if step is None:
        return None
    abstract_state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    return step, restored["state"]


def train(cfg: RunConfig, *, progress: bool = True, stop_after: int | None = None) -> Path:
    """Run (or resume) training as configured; returns the run folder."""
    from flax import nnx
    from tqdm import tqdm

    from awmjax.policy import load_policy, save_policy
    from awmjax.sampler import Sampler
    from envgen.catalog import Catalog
    from envgen.pool import Pool

    t = cfg.train
    init_distributed(cfg)
    n_proc, me = jax.process_count(), jax.process_index()
    if t.tasks_per_step % n_proc or t.micro_batch % n_proc:
        raise ValueError(f"[train] tasks_per_step ({t.tasks_per_step}) and micro_batch ({t.micro_batch}) must be "
                         f"multiples of the number of processes ({n_proc}): each process takes an equal share")
    mesh = make_mesh(*cfg.mesh.sizes(jax.device_count()))
    run_dir = Path(t.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    if me == 0:
        tmp = run_dir / "config.json.tmp"
        tmp.write_text(json.dumps(cfg.to_dict(), indent=1))
        os.replace(tmp, run_dir / "config.json")

    catalog = Catalog.open(t.catalog)
    worlds = list(catalog.worlds(t.split))
    deck = TaskDeck([(w, task) for w in worlds for task in w.tasks], t.seed)
    model, model_cfg, tok = load_policy(t.policy, dtype=t.dtype, seed=t.seed)
    graphdef, state = init_state(model, cfg.optim, with_reference=cfg.grpo.kl_coef > 0)
    state = shard_state(state, mesh)
    mngr = _checkpointer(run_dir)
    start = 0
    resumed = restore_checkpoint(mngr, state)
    if resumed is not None:
        start, state = resumed
        model = nnx.merge(graphdef, local_copy(state.params))
    step_fn = make_train_step(graphdef, cfg.optim, cfg.grpo, t.micro_batch, mesh)
    sampler = Sampler(model, model_cfg, max_cache_len=t.max_cache_len, pad_id=tok.pad_id, decode_fn=tok.decode)
    log = MetricsLog(run_dir) if me == 0 else None
    window = cfg.rollout.history_window if t.history_training else None
    local_tasks = t.tasks_per_step // n_proc  # this process's share: whole groups
    n_slots = local_tasks * t.group_size
    last = t.steps if stop_after is None else min(t.steps, start + stop_after)
    s = cfg.sampling

    def rollout(batch_index: int, version: int):
        first = me * local_tasks
        tasks = deck.draw(batch_index, t.tasks_per_step)[first:first + local_tasks]
        items = [(w, task, first + g) for g, (w, task) in enumerate(tasks) for _ in range(t.group_size)]
        episode_ids = [first * t.group_size + i for i in range(len(items))]
        sampling = SamplingConfig(temperature=s.temperature, top_k=s.top_k, top_p=s.top_p,
                                  max_new_tokens=cfg.rollout.max_new_tokens, stop_token_ids=tuple(tok.stop_token_ids),
                                  seed=s.seed * 1_000_003 + batch_index)
        return timed_episodes(sampler, tok, pool, items, cfg.rollout, sampling, policy_version=version,
                              episode_ids=episode_ids)

    in_flight: deque = deque()  # (batch index, episodes, rollout stats, future of judgements)
    next_batch = start
    with Pool(n_slots=n_slots, observation_chars=cfg.rollout.observation_chars) as pool, JudgeRunner(make_judge(cfg.judge.name, **cfg.judge.options()), cfg.judge) as judges:
        pool.register(worlds)
        bar = tqdm(range(start, last), initial=start, total=t.steps, desc="train", unit="step", disable=not progress or me != 0)
        for step in bar:
            t_step = time.perf_counter()
            # keep up to max_lag + 1 batches sampled ahead: their judgements overlap this update
            while len(in_flight) <= cfg.judge.max_lag and next_batch < last:
                results, rstats = rollout(next_batch, step)
                in_flight.append((next_batch, results, rstats, judges.submit(results)))
                next_batch += 1
            _, results, rstats, future = in_flight.popleft()
            t_wait = time.perf_counter()
            judgements = future.result()
            judge_wait = time.perf_counter() - t_wait
            for e, j in zip(results, judgements):
                e.outcome = j.result
            adv, _ = episode_advantages(results, cfg.reward, cfg.grpo.advantage)  # local: groups are whole here
            rstats, astats = _global_stats(results, rstats, cfg.reward, t.group_size)
            samples = []
            for e, a in zip(results, adv):
                if a == 0.0 and cfg.grpo.kl_coef == 0.0:
                    continue  # no advantage and no KL: the sample's gradient is zero, skip its compute
                episode_samples = samples_from_episode(e, float(a), window, current_version=step)
                samples += merge_prefix_samples(episode_samples) if cfg.grpo.importance == "token" else episode_samples
            t_train = time.perf_counter()
            step_metrics: list[dict] = []
            local_rows = t.micro_batch // n_proc
            packed = pack(samples, micro_batch=local_rows, pad_id=tok.pad_id, max_len=t.max_cache_len)
            for batch in align_batches(packed, local_rows, tok.pad_id):
                state, m = step_fn(state, place_batch(batch, mesh))
                step_metrics.append({k: float(v) for k, v in m.items()})
            train_seconds = time.perf_counter() - t_train
            sampler.set_params(nnx.merge(graphdef, local_copy(state.params)))
            metrics = _step_metrics(rstats, astats, step_metrics, train_seconds)
            judged = [j.seconds for j in judgements if j.source != "rollout"]
            metrics.update(judge_wait_seconds=judge_wait, judge_fallbacks=float(judges.fallbacks), judge_retries=float(judges.retries),
                           judge_seconds_mean=float(np.mean(judged)) if judged else 0.0,
                           policy_lag=float(np.mean([step - e.policy_version for e in results])))
            metrics["step_seconds"] = time.perf_counter() - t_step
            if log is not None:
                log.write(step + 1, metrics)
            bar.set_postfix(reward=f"{metrics['reward_mean']:.3f}", complete=f"{metrics['outcome/complete']:.2f}")
            if (step + 1) % t.checkpoint_every == 0 or step + 1 == t.steps:
                save_checkpoint(mngr, step + 1, state, {"step": step + 1, "policy_version": step + 1})
        bar.close()
    mngr.wait_until_finished()
    mngr.close()
    if last == t.steps and me == 0:  # the finished policy as a Hugging Face directory (eval, serve, transformers)
        save_policy(nnx.merge(graphdef, local_copy(state.params)), model_cfg, tok, run_dir / "policy")
    return run_dir


def init_distributed(cfg: RunConfig) -> None:
    """Join the multi-process run when [distributed] is enabled (before JAX touches a device)."""
    d = cfg.distributed
    if not d.enabled or jax.distributed.is_initialized():
        return
    if d.cpu_collectives != "none":
        jax.config.update("jax_cpu_collectives_implementation", d.cpu_collectives)
    jax.distributed.initialize(**d.initialize_args(dict(os.environ)))


def _global_stats(results, local: RolloutStats, rewards, group_size: int) -> tuple[RolloutStats, dict]:
    """Rollout stats and reward stats over every process's episodes (process order = task order)."""
    table = gather_rows(np.asarray([[EPISODE_OUTCOMES.index(e.outcome), e.turns, e.tool_calls, sum(e.conversation.mask),
                                     rewards.reward(e.outcome)] for e in results], np.float64).reshape(-1, 5))
    seconds = float(gather_rows(np.asarray([local.seconds])).max())  # the slowest process's rollouts
    outcomes = {o: int((table[:, 0] == k).sum()) for k, o in enumerate(EPISODE_OUTCOMES)}
    n = max(len(table), 1)
    stats = RolloutStats(len(table), outcomes, float(table[:, 1].sum() / n), float(table[:, 2].sum() / n),
                         int(table[:, 3].sum()), seconds)
    r_NG = table[:, 4].reshape(-1, group_size)
    return stats, {"reward_mean": float(r_NG.mean()), "zero_variance_groups": float(np.mean(zero_variance_groups(r_NG)))}


def _step_metrics(r: RolloutStats, a: dict, updates: list[dict], train_seconds: float) -> dict[str, float]:
    n = max(r.episodes, 1)
    out = {f"outcome/{o}": r.outcomes[o] / n for o in EPISODE_OUTCOMES}
    out.update(reward_mean=a["reward_mean"], zero_variance_groups=a["zero_variance_groups"],
               mean_turns=r.mean_turns, mean_tool_calls=r.mean_tool_calls,
               rollout_seconds=r.seconds, rollout_tokens_per_s=r.policy_tokens / max(r.seconds, 1e-9),
               train_seconds=train_seconds, updates=len(updates))
    tokens = sum(u.get("tokens", 0.0) for u in updates)
    out["train_tokens_per_s"] = tokens / max(train_seconds, 1e-9)
    for key in ("loss", "pg_loss", "kl", "entropy", "clip_frac_low", "clip_frac_high", "ratio_mean", "logp_mismatch", "grad_norm", "param_norm"):
        vals = [u[key] for u in updates if key in u]
        if vals:
            out[key] = float(np.mean(vals))
    return out
