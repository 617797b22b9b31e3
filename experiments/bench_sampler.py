"""Benchmark: awmjax Sampler vs transformers `generate` (PyTorch CPU), same SmolLM2-135M weights.

Both sides decode greedily (or at the same temperature) from the same random 128-token prompts
for exactly --new-tokens tokens (no stop tokens), measured in one run, and print one table:
generated tokens/s per batch size, the first call (compile included), and single-sequence
per-token latency.

    HF_HUB_OFFLINE=1 JAX_PLATFORMS=cpu python experiments/bench_sampler.py
    python experiments/bench_sampler.py --batches 64,256 --skip-torch   # on a GPU
    python experiments/bench_sampler.py --batches 64,256 --random-weights   # no GGUF needed

--random-weights builds SmolLM2-135M's shape with random parameters instead of reading the
embedded GGUF (speed does not depend on the values: every row decodes exactly --new-tokens);
it implies --skip-torch.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from awmjax.sampler import Sampler, SamplingConfig


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def bench_awmjax(model, config, prompts, new_tokens, temperature, repeats):
    """(first-call seconds, best steady seconds, sampler, generations) for one batch."""
    sampler = Sampler(model, config, max_cache_len=len(prompts[0]) + new_tokens, pad_id=2)
    sampling = SamplingConfig(temperature=temperature, max_new_tokens=new_tokens, seed=0)
    first, _ = _timed(lambda: sampler.generate(prompts, sampling))
    runs = [_timed(lambda: sampler.generate(prompts, sampling)) for _ in range(repeats)]
    steady, gens = min(runs, key=lambda r: r[0])
    assert all(len(g.token_ids) == new_tokens for g in gens)
    return first, steady, sampler, gens


def bench_torch(ref, prompts, new_tokens, temperature, repeats):
    """(best seconds, generated ids) for transformers generate on one batch, after a warm-up."""
    import torch

    input_ids = torch.tensor(prompts)
    kwargs = dict(attention_mask=torch.ones_like(input_ids), pad_token_id=2, eos_token_id=None,
                  do_sample=temperature > 0, min_new_tokens=new_tokens,
                  **({"temperature": temperature, "top_k": 0} if temperature > 0 else {}))
    with torch.inference_mode():
        ref.generate(input_ids, max_new_tokens=4, **{**kwargs, "min_new_tokens": 4})
        runs = [_timed(lambda: ref.generate(input_ids, max_new_tokens=new_tokens, **kwargs))
                for _ in range(repeats)]
    seconds, out = min(runs, key=lambda r: r[0])
    assert out.shape[1] == input_ids.shape[1] + new_tokens
    return seconds, out[:, input_ids.shape[1]:].tolist()


def stream_latency(sampler, prompt, new_tokens):
    """Mean seconds per token of Sampler.stream after its first token."""
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=new_tokens)
    list(sampler.stream(prompt, sampling))  # compile
    stamps = [time.perf_counter()]
    for _ in sampler.stream(prompt, sampling):
        stamps.append(time.perf_counter())
    return float(np.mean(np.diff(stamps[1:])))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="16", help="comma-separated batch sizes")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.0, help="0 = greedy on both sides")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per side; best is kept")
    ap.add_argument("--skip-torch", action="store_true", help="only the awmjax side (e.g. on GPU)")
    ap.add_argument("--random-weights", action="store_true",
                    help="SmolLM2-135M's shape with random weights (no GGUF, no torch side)")
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]

    if args.random_weights:
        from flax import nnx

        from awmjax.model.config import ModelConfig
        from awmjax.model.decoder import Decoder

        config = ModelConfig.smollm2_135m(dtype=args.dtype, param_dtype=args.dtype)
        model = Decoder(config, rngs=nnx.Rngs(0))
    else:
        from awmjax.model.gguf_loader import load_smollm2

        model, config = load_smollm2(dtype=args.dtype)
    ref = None
    if not (args.skip_torch or args.random_weights):
        from awmjax.model.hf_io import save_hf

        import torch
        import transformers

        torch.set_num_threads(os.cpu_count() or 1)
        with tempfile.TemporaryDirectory() as tmp:
            save_hf(model, config, f"{tmp}/smollm2")
            ref = transformers.LlamaForCausalLM.from_pretrained(f"{tmp}/smollm2").eval()

    rng = np.random.default_rng(0)
    rows = []
    sampler = None
    for batch in [1] + batches:
        prompts = rng.integers(3, config.vocab_size, (batch, args.prompt_len)).tolist()
        first, steady, sampler, gens = bench_awmjax(model, config, prompts, args.new_tokens,
                                                    args.temperature, args.repeats)
        torch_s, agree = float("nan"), float("nan")
        if ref is not None:
            torch_s, torch_ids = bench_torch(ref, prompts, args.new_tokens, args.temperature,
                                             args.repeats)
            # greedy sides should pick the same tokens, up to near-ties flipped by fp32 rounding
            if args.temperature == 0:
                agree = float(np.mean([g.token_ids == t for g, t in zip(gens, torch_ids)]))
        rows.append((batch, first, steady, torch_s, agree))
    tokens = args.new_tokens
    import jax

    print(f"\nSmolLM2-135M {args.dtype}{' (random weights)' if args.random_weights else ''} on "
          f"{jax.devices()[0].device_kind}, prompt {args.prompt_len}, {tokens} new tokens, "
          f"temperature {args.temperature}, {os.cpu_count()} CPU threads "
          f"(times include prefill)")
    print(f"{'batch':>5} | {'awmjax tok/s':>12} | {'torch tok/s':>11} | {'speedup':>7} | "
          f"{'awmjax 1st call s':>17} | {'awmjax s':>8} | {'torch s':>7} | same tokens")
    for batch, first, steady, torch_s, agree in rows:
        ours, theirs = batch * tokens / steady, batch * tokens / torch_s
        print(f"{batch:>5} | {ours:>12.1f} | {theirs:>11.1f} | {ours / theirs:>6.2f}x | "
              f"{first:>17.2f} | {steady:>8.2f} | {torch_s:>7.2f} | "
              f"{'-' if np.isnan(agree) else format(agree, '.0%'):>10}")
    batch1 = rows[0]
    print(f"\nsingle sequence, per token: awmjax generate {1e3 * batch1[2] / tokens:.1f} ms, "
          f"awmjax stream {1e3 * stream_latency(sampler, prompts[0], 32):.1f} ms, "
          f"transformers {1e3 * batch1[3] / tokens:.1f} ms")


if __name__ == "__main__":
    main()
