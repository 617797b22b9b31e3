"""Benchmark: tokens/s of the SFT warm start's update (`awmjax.sft.make_sft_step`) on the demo's data.

The rows are the demo's: a compact catalog generated as `make demo` does (or --catalog), the
train split's first [sft] max_tasks tasks, their gold trajectories played through the pool,
history-limited samples packed into rows of [sft] row_tokens (experiments/configs/demo.toml).
--synthetic packs random samples of the same length profile instead (no pool, no catalog).

Every configuration trains SmolLM2-135M (the embedded weights, float32, [optim]
train_top_layers of the demo) from the same initial weights on the same updates; the first
call (compile + one update) is reported apart, the steady state is the median of the timed
updates. tokens/s counts the real (non-padding) tokens of the rows. The nll columns are the
loss of the first update (the same weights, so it must agree across configurations) and of
the last timed update. Configurations (each adds one change to the one above it):

    before         the update as it was: gradients of the whole parameter tree with the frozen
                   leaves behind stop_gradient, Adam over every leaf, one (T, T) attention block
                   per layer, row_tokens // 4 loss slots per row
    trainable      gradients, clipping and Adam state for the trainable leaves only
    loss-slots     loss slots cut to the most a row uses (rounded up to 64)
    chunk256       attention in query chunks of 256 tokens (masked upper triangle skipped)
    chunk128       query chunks of 128 tokens (the [sft] default)
    chunk64        query chunks of 64 tokens
    cached         chunk128, the update starting from the frozen layers' output computed once per
                   row ([sft] feature_cache): what every epoch after the first costs; the one-time
                   cost of the frozen layers is printed per row

    python experiments/bench_sft.py                         # all configurations, 3 timed updates
    python experiments/bench_sft.py --configs before chunk128 --steps 2
    python experiments/bench_sft.py --synthetic --row-tokens 1024
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np

CONFIG = Path(__file__).parent / "configs" / "demo.toml"
CONFIGS = ("before", "trainable", "loss-slots", "chunk256", "chunk128", "chunk64", "cached")


def demo_samples(args, doc):
    """History-limited gold samples of the demo's SFT tasks (a compact catalog made here unless --catalog)."""
    from awmjax.config import RunConfig
    from awmjax.sft import _first_tasks, gold_episodes, sft_samples
    from awmjax.tokenizer import Tokenizer
    from envgen.build import generate_catalog
    from envgen.catalog import Catalog
    from envgen.pool import Pool

    catalog = args.catalog
    if catalog is None:
        catalog = str(Path(tempfile.mkdtemp(prefix="bench-sft-")) / "catalog")
        generate_catalog(args.worlds, 0, catalog, held_out=0.2, overwrite=True, profile="compact", progress=False)
    doc["train"].update(catalog=catalog, out=tempfile.mkdtemp(prefix="bench-sft-out-"), policy="embedded")
    cfg = RunConfig.from_dict(doc)
    worlds = list(Catalog.open(catalog).worlds(cfg.train.split))
    worlds = _first_tasks(worlds, args.max_tasks or cfg.sft.max_tasks or 10**9)
    tok = Tokenizer.embedded()
    with Pool(n_slots=32) as pool:
        pool.register(worlds)
        episodes, _ = gold_episodes(tok, pool, worlds, cfg.rollout, phrasings=cfg.sft.phrasings, seed=cfg.train.seed,
                                    batch=32, progress=False)
    return sft_samples(episodes, cfg.rollout.history_window if cfg.train.history_training else None), tok


def synthetic_samples(n: int, vocab: int, seed: int = 0):
    """Random samples with the demo's length profile: 600-2000 tokens, ~8% of them trainable
    (three assistant turns of ~30 tokens at the end of tool responses)."""
    from awmjax.rl.batch import Sample

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        length = int(rng.integers(600, 2000))
        mask = np.zeros(length, np.int64)
        for end in np.sort(rng.choice(np.arange(length // 3, length), 3, replace=False)):
            mask[max(0, end - 30):end] = 1
        ids = rng.integers(0, vocab, length).tolist()
        out.append(Sample(ids, mask.tolist(), [0.0] * length, 1.0))
    return out


def legacy_step(graphdef, optim):
    """The SFT update as it was before this benchmark (kept here as the baseline): the gradient
    of the whole parameter tree, frozen leaves behind stop_gradient, Adam over every leaf."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from awmjax.rl.train_step import TrainState

    tx = optim.make()

    def loss_fn(params, mb, total):
        model = nnx.merge(graphdef, optim.freeze(params))
        h_BTD, _ = model.hidden(mb["tokens"], mb["positions"], segment_ids_BT=mb["segments"])
        h_BKD = jnp.take_along_axis(h_BTD, mb["index"][..., None], axis=1)
        logp_BKV = jax.nn.log_softmax(model.logits(h_BKD), axis=-1)
        logp_BK = jnp.take_along_axis(logp_BKV, mb["target"][..., None], axis=-1)[..., 0]
        return -(logp_BK * mb["weight"]).sum() / jnp.maximum(total, 1.0)

    def step(state, arrays):
        total = arrays["weight"].sum()
        loss, grads = jax.value_and_grad(loss_fn)(state.params, arrays, total)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"nll": loss, "tokens": total, "grad_norm": optax.tree.norm(grads)}
        return TrainState(params, opt_state, state.step + 1, state.ref_params), metrics

    return jax.jit(step, donate_argnums=0)


def run_config(name, model_params, graphdef, optim, rows_full, rows_trim, batch, steps):
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from awmjax.rl.train_step import init_state
    from awmjax.sft import frozen_features, make_sft_step, sft_plan, sft_state, update_arrays

    model = nnx.merge(graphdef, jax.tree.map(jnp.copy, model_params))
    rows = rows_full if name in ("before", "trainable") else rows_trim
    chunk = {"chunk256": 256, "chunk128": 128, "chunk64": 64, "cached": 128}.get(name)
    picks = sft_plan(rows.rows, batch, 1, 0)[: steps + 1]
    if len(picks) < steps + 1:
        raise SystemExit(f"only {len(picks)} updates of {batch} rows; lower --steps or --batch")
    features, from_layer, feature_s = None, None, None
    if name == "before":
        gd, state = init_state(model, optim, with_reference=False)
        step = legacy_step(gd, optim)
    else:
        gd, state = sft_state(model, optim)
        if name == "cached":
            if not 0 < optim.train_top_layers < len(model.layers):
                raise SystemExit("the cached configuration needs [optim] train_top_layers below the layer count")
            from_layer = len(model.layers) - optim.train_top_layers
            used = sorted({int(r) for p in picks for r in p if r >= 0})
            sub = dataclasses.replace(rows, **{f.name: getattr(rows, f.name)[used] for f in dataclasses.fields(rows)})
            t = time.perf_counter()
            features = np.zeros(rows.tokens_RT.shape + (model.config.hidden_size,), np.float32)
            features[used] = frozen_features(gd, state.params, sub, from_layer, chunk)
            feature_s = (time.perf_counter() - t) / len(used)  # per row, first call (compile) included
        step = make_sft_step(gd, optim, query_chunk=chunk, from_layer=from_layer)
    plan = [update_arrays(rows, p, features) for p in picks]
    times, nll = [], []
    for arrays in plan:
        t = time.perf_counter()
        state, m = step(state, arrays)
        nll.append(float(jax.device_get(m["nll"])))
        times.append(time.perf_counter() - t)
    tokens = [int((a["segments"] > 0).sum()) for a in plan[1:]]
    median = statistics.median(times[1:])
    return {"config": name, "first_s": times[0], "step_s": median, "tok_s": statistics.median(tokens) / median,
            "loss_slots": rows.loss_index_RK.shape[1], "nll_first": nll[0], "nll_last": nll[-1], "feature_s": feature_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    ap.add_argument("--steps", type=int, default=3, help="timed updates per configuration (after the first call)")
    ap.add_argument("--config", default=str(CONFIG), help="run config (default experiments/configs/demo.toml)")
    ap.add_argument("--row-tokens", type=int, default=None, help="default: [sft] row_tokens")
    ap.add_argument("--batch", type=int, default=None, help="rows per update (default: [sft] batch)")
    ap.add_argument("--catalog", default=None, help="an existing catalog (default: generate a compact one)")
    ap.add_argument("--worlds", type=int, default=60, help="compact worlds to generate (default 60)")
    ap.add_argument("--max-tasks", type=int, default=None, help="default: [sft] max_tasks")
    ap.add_argument("--synthetic", action="store_true", help="random samples of the demo's length profile")
    args = ap.parse_args()

    import jax
    from flax import nnx

    from awmjax.policy import load_policy
    from awmjax.rl.train_step import OptimConfig
    from awmjax.sft import pack_rows

    doc = tomllib.loads(Path(args.config).read_text(encoding="utf-8"))
    sft, opt = doc.get("sft", {}), doc.get("optim", {})
    row_tokens = args.row_tokens or sft.get("row_tokens", 2048)
    batch = args.batch or sft.get("batch", 1)
    t = time.perf_counter()
    model, cfg, tok = load_policy("embedded")
    if args.synthetic:
        samples = synthetic_samples(48, cfg.vocab_size)
    else:
        samples, tok = demo_samples(args, doc)
    kept = [x for x in samples if len(x.ids) <= row_tokens]
    lengths = np.array([len(x.ids) for x in kept])
    rows_full = pack_rows(kept, row_tokens, tok.pad_id, loss_slots=row_tokens // 4)
    rows_trim = pack_rows(kept, row_tokens, tok.pad_id)
    print(f"data: {len(samples)} samples ({len(samples) - len(kept)} longer than {row_tokens} dropped), "
          f"{lengths.min()}-{lengths.max()} tokens (median {int(np.median(lengths))}), {rows_full.rows} rows of "
          f"{row_tokens}, {100 * (rows_full.segments_RT > 0).mean():.0f}% filled; {time.perf_counter() - t:.0f}s")
    optim = OptimConfig(learning_rate=sft.get("learning_rate", 1e-4), warmup_steps=sft.get("warmup_steps", 0),
                        train_top_layers=opt.get("train_top_layers", 0))
    graphdef, params = nnx.split(model)
    print(f"SmolLM2-135M float32, train_top_layers={optim.train_top_layers}, {batch} row(s) of {row_tokens} per "
          f"update, {jax.device_count()} {jax.default_backend()} device(s)")
    results = []
    for name in args.configs:
        r = run_config(name, params, graphdef, optim, rows_full, rows_trim, batch, args.steps)
        results.append(r)
        print(f"  {name}: {r['step_s']:.2f} s/step", flush=True)
    base = results[0]["step_s"]
    print(f"\n{'config':<12}{'loss slots':>11}{'first call s':>14}{'s/step':>9}{'tokens/s':>10}{'speedup':>9}"
          f"{'nll first':>11}{'nll last':>10}")
    for r in results:
        print(f"{r['config']:<12}{r['loss_slots']:>11}{r['first_s']:>14.1f}{r['step_s']:>9.2f}{r['tok_s']:>10.0f}"
              f"{base / r['step_s']:>8.2f}x{r['nll_first']:>11.4f}{r['nll_last']:>10.4f}")
    print(f"median of {args.steps} timed updates after the first call; speedup against {results[0]['config']}")
    for r in results:
        if r["feature_s"] is not None:
            print(f"{r['config']}: the frozen layers' output, once per row per run: {r['feature_s']:.2f} s/row "
                  f"(compile included); an epoch of R rows costs R x that once, then R x {r['step_s']:.2f} s per epoch")


if __name__ == "__main__":
    main()
