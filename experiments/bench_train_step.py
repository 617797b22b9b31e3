"""Benchmark: training tokens/s of the awmjax GRPO update against the same update in PyTorch.

Both sides train SmolLM2-135M (the embedded weights, float32) on the same batch with the
same loss: the clipped-ratio GRPO token-mean loss (token-level ratio, clips 0.2 / 0.28,
no KL), global-norm gradient clipping at 1.0 and AdamW. awmjax runs `make_train_step`;
PyTorch runs transformers' LlamaForCausalLM loaded from the same weights (save_hf to a
temporary directory, then from_pretrained), with torch.optim.AdamW. Both sides are
measured in the same run, one after the other; the table reports the median step.

    python experiments/bench_train_step.py --batch 4 --seq 512 --micro-batch 4 2
    python experiments/bench_train_step.py --batch 4 --seq 512 --micro-batch 4 2 --isolate   # a process per side
    python experiments/bench_train_step.py --gpu-mfu   # Qwen3-0.6B-shaped, random weights

--gpu-mfu reports the model FLOPs utilization of the awmjax update on a GPU:
6 * N * tokens / step time / peak, N the parameter count (the tied head counted once).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from awmjax.rl.batch import TrainBatch, loss_index
from awmjax.rl.config import GRPOConfig
from awmjax.rl.train_step import OptimConfig, init_state, make_train_step, token_logprobs

GRPO = GRPOConfig(kl_coef=0.0, importance="token")
OPTIM = OptimConfig(learning_rate=1e-6, max_grad_norm=1.0, weight_decay=0.0)


@dataclass
class Timing:
    """One side's result: the median step and the first call (compile + one step)."""

    side: str
    micro_batch: int
    step_s: float
    first_call_s: float | None
    loss: float


def make_batch(B: int, T: int, vocab: int, seed: int = 0) -> TrainBatch:
    """Random ids; loss on the second half of each row (the "policy-written" turn)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocab, (B, T), dtype=np.int32)
    targets = np.concatenate([tokens[:, 1:], np.zeros((B, 1), np.int32)], axis=1)
    mask = np.zeros((B, T), np.float32)
    mask[:, T // 2: T - 1] = 1.0
    positions = np.broadcast_to(np.arange(T, dtype=np.int32), (B, T)).copy()
    adv = rng.standard_normal(B).astype(np.float32)
    old = np.zeros((B, T), np.float32)  # filled from the model before timing
    return TrainBatch(tokens, targets, mask, old, adv, positions, loss_index(mask))


def with_sampler_logprobs(graphdef, params, batch: TrainBatch, seed: int = 1) -> TrainBatch:
    """The batch with old_logp = the model's own log-probs plus noise, so ratios sit near 1."""
    fn = jax.jit(token_logprobs, static_argnums=0)
    logp_BT, _ = fn(graphdef, params, batch.tokens_BT, batch.positions_BT, batch.targets_BT)
    noise = 0.1 * np.random.default_rng(seed).standard_normal(batch.tokens_BT.shape)
    old = (np.asarray(logp_BT) + noise).astype(np.float32) * batch.mask_BT
    return dataclasses.replace(batch, old_logp_BT=old)


def time_awmjax(model, batch: TrainBatch, micro_batch: int, steps: int, warmup: int,
                query_chunk: int | None = None) -> Timing:
    """Median step time of make_train_step (state donated, blocked on the metrics)."""
    graphdef, state = init_state(model, OPTIM, with_reference=False)
    step = make_train_step(graphdef, OPTIM, GRPO, micro_batch, query_chunk=query_chunk)
    dev_batch = jax.device_put(batch)
    t0 = time.perf_counter()
    state, metrics = step(state, dev_batch)
    jax.block_until_ready(metrics)
    first = time.perf_counter() - t0
    for _ in range(warmup - 1):
        state, metrics = jax.block_until_ready(step(state, dev_batch))
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, metrics = step(state, dev_batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
    side = "awmjax" if query_chunk is None else f"awmjax chunk {query_chunk or 'off'}"
    return Timing(side, micro_batch, statistics.median(times), first, float(metrics["loss"]))


def time_torch(hf_dir: str, batch: TrainBatch, micro_batch: int, steps: int, warmup: int) -> Timing:
    """Median step time of the same update in PyTorch + transformers (eager, sdpa attention)."""
    import torch
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=OPTIM.learning_rate, betas=(OPTIM.b1, OPTIM.b2),
                            eps=1e-8, weight_decay=OPTIM.weight_decay)
    arrays = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in (
        ("tokens", batch.tokens_BT), ("targets", batch.targets_BT), ("mask", batch.mask_BT),
        ("old", batch.old_logp_BT), ("adv", batch.adv_B), ("positions", batch.positions_BT))}
    arrays = {k: v.long() if k in ("tokens", "targets", "positions") else v for k, v in arrays.items()}
    total_tokens = arrays["mask"].sum().clamp(min=1.0)

    def one_step() -> float:
        opt.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for s in range(0, batch.tokens_BT.shape[0], micro_batch):
            mb = {k: v[s: s + micro_batch] for k, v in arrays.items()}
            logits_BTV = model(input_ids=mb["tokens"], position_ids=mb["positions"]).logits
            logz_BT = torch.logsumexp(logits_BTV, dim=-1)
            logp_BT = logits_BTV.gather(-1, mb["targets"][..., None])[..., 0] - logz_BT
            with torch.no_grad():  # the entropy metric awmjax also reports
                probs_BTV = torch.softmax(logits_BTV, dim=-1)
                _entropy_BT = logz_BT - (probs_BTV * logits_BTV).sum(-1)
            mask_BT = mb["mask"]
            ratio_BT = torch.exp((logp_BT - mb["old"]) * mask_BT)
            adv_BT = mb["adv"][:, None]
            clipped_BT = ratio_BT.clamp(1.0 - GRPO.clip_low, 1.0 + GRPO.clip_high)
            per_token_BT = -torch.minimum(ratio_BT * adv_BT, clipped_BT * adv_BT)
            loss = (per_token_BT * mask_BT).sum() / total_tokens
            loss.backward()
            loss_sum += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(model.parameters(), OPTIM.max_grad_norm)
        opt.step()
        return loss_sum

    t0 = time.perf_counter()
    loss = one_step()
    first = time.perf_counter() - t0
    for _ in range(warmup - 1):
        one_step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = one_step()
        times.append(time.perf_counter() - t0)
    return Timing("torch", micro_batch, statistics.median(times), first, loss)


def isolated_comparison(args) -> None:
    """Each (side, micro-batch) measured in a fresh process of this script, the sides
    alternating, then one table: neither side runs in a process the other has used (its
    thread pools, allocator and page cache state), which otherwise moved the torch step by up
    to 30% between runs."""
    import subprocess
    import sys

    rows: list[Timing] = []
    loss_tokens = 0
    for mb in args.micro_batch:
        for side in ("awmjax", "torch"):
            cmd = [sys.executable, __file__, "--batch", str(args.batch), "--seq", str(args.seq), "--micro-batch", str(mb),
                   "--steps", str(args.steps), "--warmup", str(args.warmup), "--side", side, "--emit-json",
                   "--query-chunk", *map(str, args.query_chunk)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            for line in out.splitlines():
                if line.startswith("{"):
                    doc = json.loads(line)
                    loss_tokens = doc.pop("loss_tokens")
                    rows.append(Timing(**doc))
                    print(f"  {rows[-1].side} mb={mb}: {rows[-1].step_s:.2f} s/step (own process)", flush=True)
    import torch

    print_table(args, rows, loss_tokens, f"torch {torch.__version__} with {torch.get_num_threads()} threads; "
                                         "each side in its own process")


def cpu_comparison(args) -> None:
    import torch
    from flax import nnx

    from awmjax.model.gguf_loader import load_smollm2
    from awmjax.model.hf_io import save_hf

    model, config = load_smollm2(dtype="float32")
    B, T = args.batch, args.seq
    for mb in args.micro_batch:
        if B % mb:
            raise SystemExit(f"--micro-batch {mb} must divide --batch {B}")
    graphdef, params = nnx.split(model)
    batch = with_sampler_logprobs(graphdef, params, make_batch(B, T, config.vocab_size))
    loss_tokens = int(batch.mask_BT.sum())
    rows: list[Timing] = []
    with tempfile.TemporaryDirectory() as root:
        hf_dir = save_hf(model, config, f"{root}/smollm2")
        for mb in args.micro_batch:
            if args.side in ("both", "awmjax"):
                for chunk in args.query_chunk:
                    # a fresh copy each time: the train step donates (and so deletes) its state
                    fresh = nnx.merge(graphdef, jax.tree.map(jnp.copy, params))
                    rows.append(time_awmjax(fresh, batch, mb, args.steps, args.warmup, chunk))
                    print(f"  {rows[-1].side} mb={mb}: {rows[-1].step_s:.2f} s/step", flush=True)
            if args.side in ("both", "torch"):
                rows.append(time_torch(str(hf_dir), batch, mb, args.steps, args.warmup))
                print(f"  torch  mb={mb}: {rows[-1].step_s:.2f} s/step", flush=True)

    if args.emit_json:
        for r in rows:
            print(json.dumps({**dataclasses.asdict(r), "loss_tokens": loss_tokens}))
        return
    print_table(args, rows, loss_tokens, f"torch {torch.__version__} with {torch.get_num_threads()} threads")


def print_table(args, rows: list[Timing], loss_tokens: int, torch_note: str) -> None:
    """The comparison table: per micro-batch, each awmjax row against the torch row."""
    B, T = args.batch, args.seq
    print(f"\nSmolLM2-135M float32, GRPO update on CPU ({jax.device_count()} x "
          f"{jax.devices()[0].platform}; jax {jax.__version__}, {torch_note}); median of {args.steps} steps after "
          f"{args.warmup} warm-up\n")
    head = (f"{'batch (BxT)':>12}{'micro':>7}{'chunk':>7}{'loss tok':>10}{'awmjax tok/s':>14}{'torch tok/s':>13}"
            f"{'ratio':>8}{'jax step s':>12}{'torch step s':>14}{'jax compile s':>15}")
    print(head)
    for mb in args.micro_batch:
        pt = next((r for r in rows if r.side == "torch" and r.micro_batch == mb), None)
        tps = lambda r: B * T / r.step_s if r else float("nan")  # noqa: E731
        for jx in [r for r in rows if r.side.startswith("awmjax") and r.micro_batch == mb] or [None]:
            compile_s = jx.first_call_s - jx.step_s if jx else float("nan")
            ratio = tps(jx) / tps(pt) if jx and pt else float("nan")
            chunk = jx.side.replace("awmjax chunk ", "") if jx else "-"
            print(f"{f'{B}x{T}':>12}{mb:>7}{chunk:>7}{loss_tokens:>10}{tps(jx):>14.0f}{tps(pt):>13.0f}"
                  f"{ratio:>7.2f}x{jx.step_s if jx else float('nan'):>12.2f}"
                  f"{pt.step_s if pt else float('nan'):>14.2f}{compile_s:>15.1f}")
    for r in rows:
        print(f"  {r.side} mb={r.micro_batch}: loss after the last step {r.loss:+.6f}")
    print("\nchunk: awmjax's attention in query chunks of that many tokens (off: one (T, T) block). "
          "tokens/s counts every position of the batch (B*T); the loss covers "
          f"{loss_tokens} of them. jax compile s = first call - median step.")


# bf16 dense tensor-core peaks (FLOP/s) by device-kind substring; float32 uses the fp32 column
_PEAKS = {"H200": (989e12, 67e12), "H100": (989e12, 67e12), "A100": (312e12, 19.5e12)}


def gpu_mfu(args) -> None:
    if jax.devices()[0].platform != "gpu":
        print(f"--gpu-mfu needs a GPU; this machine has {jax.devices()[0].platform} devices only.")
        return
    from flax import nnx

    from awmjax.model.config import ModelConfig
    from awmjax.model.decoder import Decoder, fused_attention

    dtype = args.dtype
    config = ModelConfig.qwen3_0_6b(dtype=dtype, param_dtype="float32", attention=args.attention)
    n_params = sum(x.size for x in jax.tree.leaves(nnx.state(Decoder(config, rngs=nnx.Rngs(0)), nnx.Param)))
    B, T = args.batch, args.seq
    # attention's matmuls per token (forward + backward = 3x forward), causal half only:
    # QK^T and PV each 2 * T * heads * head_dim FLOPs forward at full T, halved by the mask
    attn_per_token = 3 * 2 * 2 * config.num_layers * config.num_heads * config.head_dim * T / 2
    batch = make_batch(B, T, config.vocab_size)
    # loss at every position (a full-history sample): the update then projects every position
    # onto the vocabulary, so 6 * N * tokens counts the FLOPs it really does
    mask = np.zeros((B, T), np.float32)
    mask[:, : T - 1] = 1.0
    batch = dataclasses.replace(batch, mask_BT=mask, old_logp_BT=-2.0 * mask, loss_index_BK=loss_index(mask))
    kind = jax.devices()[0].device_kind
    peak = next((p for k, p in _PEAKS.items() if k in kind), None)
    impl = fused_attention(config, jnp.dtype(dtype)) or "einsum"
    print(f"Qwen3-0.6B-shaped, random weights, {n_params / 1e6:.0f}M params, compute {dtype}, "
          f"attention {impl}, on {kind} (jax {jax.__version__})", flush=True)
    print(f"\n{'batch (BxT)':>12}{'micro':>7}{'step s':>9}{'tok/s':>10}{'TFLOP/s':>9}{'MFU':>7}"
          f"{'MFU+attn':>10}{'compile s':>11}", flush=True)
    peak_flops = (peak[0] if dtype == "bfloat16" else peak[1]) if peak else float("nan")
    for mb in args.micro_batch:
        try:
            # a fresh model each time: the train step donates (and so deletes) its state
            r = time_awmjax(Decoder(config, rngs=nnx.Rngs(0)), batch, mb, args.steps, args.warmup)
        except Exception as exc:  # one failing size (memory, say) must not hide the others
            print(f"{f'{B}x{T}':>12}{mb:>7}  failed: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
            continue
        flops = 6 * n_params * B * T / r.step_s
        with_attn = (6 * n_params + attn_per_token) * B * T / r.step_s
        print(f"{f'{B}x{T}':>12}{mb:>7}{r.step_s:>9.3f}{B * T / r.step_s:>10.0f}"
              f"{flops / 1e12:>9.1f}{100 * flops / peak_flops:>6.1f}%{100 * with_attn / peak_flops:>9.1f}%"
              f"{r.first_call_s - r.step_s:>11.1f}", flush=True)
    print("\nMFU = 6 * N * B * T / step time / peak (" +
          ("bf16 dense" if dtype == "bfloat16" else "fp32") + f" peak of the device, "
          f"{peak_flops / 1e12:.0f} TFLOP/s); N counts the tied embedding once, as the output "
          "head's matmul. MFU+attn adds the causal attention matmuls (6 * layers * heads * "
          "head_dim * T per token).")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=None, help="sequences per batch (CPU 4, GPU 16)")
    ap.add_argument("--seq", type=int, default=None, help="tokens per sequence (CPU 512, GPU 2048)")
    ap.add_argument("--micro-batch", type=int, nargs="+", default=None,
                    help="micro-batch sizes to try (default: the whole batch)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per side (median reported)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first (>= 1)")
    ap.add_argument("--side", choices=("both", "awmjax", "torch"), default="both")
    ap.add_argument("--query-chunk", type=int, nargs="+", default=[0, 128],
                    help="awmjax attention query chunks to time on the CPU (0: one block)")
    ap.add_argument("--isolate", action="store_true",
                    help="measure each side and micro-batch in its own fresh process (sides alternating)")
    ap.add_argument("--emit-json", action="store_true", help=argparse.SUPPRESS)  # a child of --isolate
    ap.add_argument("--gpu-mfu", action="store_true", help="MFU of a Qwen3-0.6B-shaped update on a GPU")
    ap.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16",
                    help="compute dtype for --gpu-mfu (the CPU comparison is always float32)")
    ap.add_argument("--attention", choices=("auto", "einsum", "xla", "cudnn"), default="auto",
                    help="attention path for --gpu-mfu (auto: cuDNN flash attention in bf16)")
    args = ap.parse_args()
    args.warmup = max(args.warmup, 1)
    args.batch = args.batch or (16 if args.gpu_mfu else 4)
    args.seq = args.seq or (2048 if args.gpu_mfu else 512)
    args.micro_batch = args.micro_batch or [args.batch]
    if args.gpu_mfu:
        gpu_mfu(args)
    elif args.isolate:
        isolated_comparison(args)
    else:
        cpu_comparison(args)


if __name__ == "__main__":
    main()
