"""Micro-benchmark: one sampler decode step (SmolLM2-135M shape, batch 16) under XLA:CPU flag
settings and the Sampler's two decode layouts.

XLA_FLAGS is read once, when jax starts its CPU backend, so every setting runs in its own
fresh process (this script re-runs itself with --child). Each child builds SmolLM2-135M's
shape with random float32 weights (speed does not depend on the values), prefills a batch
of 16 random 128-token prompts (the Sampler's jitted prefill, timed) and decodes --steps
tokens greedily from a copy of that cache through the Sampler's jitted `lax.while_loop`
(timed; a step is that time over --steps). Best of --repeats. `tokens` fingerprints the
generated ids: a setting that changes the numerics shows a different fingerprint.

    flock /tmp/awmjax-cpu.lock python experiments/bench_xla_flags.py
    python experiments/bench_xla_flags.py --settings model_layout,out_in_layout --repeats 5

Every row but `model_layout` decodes with the (out, in) weight layout (Sampler
decode_layout="out_in", awmjax/model/out_in.py); `model_layout` reads the model's own (in, out)
matrices, as the sampler did before. Neither changes XLA_FLAGS.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time

# name -> XLA_FLAGS; the decode layout is "out_in" except where LAYOUTS says otherwise
SETTINGS = {
    "model_layout": "",
    "out_in_layout": "",
    "vector_width_512": "--xla_cpu_prefer_vector_width=512",
    "eigen_dots": "--xla_cpu_experimental_ynn_fusion_type=",
    "eigen_dots_vw512": "--xla_cpu_experimental_ynn_fusion_type= --xla_cpu_prefer_vector_width=512",
    "eigen_single_thread": "--xla_cpu_experimental_ynn_fusion_type= --xla_cpu_multi_thread_eigen=false",
    "ynn_dot_eltwise": "--xla_cpu_experimental_ynn_fusion_type=+dot,+eltwise",
    "ynn_dot_eltwise_reduce": "--xla_cpu_experimental_ynn_fusion_type=+dot,+eltwise,+reduce",
    "xnn_dot": "--xla_cpu_experimental_ynn_fusion_type= --xla_cpu_experimental_xnn_fusion_type=dot",
    "onednn": "--xla_cpu_experimental_ynn_fusion_type= --xla_cpu_use_onednn=true "
              "--xla_cpu_experimental_onednn_custom_call=true",
    "fast_math": "--xla_cpu_enable_fast_math=true",
}
LAYOUTS = {"model_layout": "model"}


def child(args) -> None:
    """Measure in this process (XLA_FLAGS already set by the parent) and print one JSON line."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from awmjax.model.config import ModelConfig
    from awmjax.model.decoder import Decoder
    from awmjax.sampler import Sampler, SamplingConfig

    config = ModelConfig.smollm2_135m(dtype="float32", param_dtype="float32")
    model = Decoder(config, rngs=nnx.Rngs(0))
    sampler = Sampler(model, config, max_cache_len=args.prompt_len + args.steps, pad_id=2,
                      decode_layout=args.decode_layout)
    prompts = np.random.default_rng(0).integers(3, config.vocab_size,
                                                (args.batch, args.prompt_len)).tolist()
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=args.steps)
    budget_B = np.full(args.batch, args.steps, np.int32)

    def prefill():
        start = time.perf_counter()
        cache, h_BD = sampler._prefill(sampler.start(prompts).cache, prompts)
        jax.block_until_ready(h_BD)
        return time.perf_counter() - start, cache, h_BD

    def decode(cache, h_BD):  # the cache is donated: decode a copy
        cache = jax.block_until_ready(jax.tree.map(jnp.copy, cache))
        start = time.perf_counter()
        _, out = sampler._decode(cache, h_BD, budget_B, sampling, 0, np.arange(args.batch))
        tokens_BN = np.asarray(out[0])
        return time.perf_counter() - start, tokens_BN

    first = prefill()[0]
    prefill_s, cache, h_BD = min((prefill() for _ in range(args.repeats)), key=lambda r: r[0])
    first += decode(cache, h_BD)[0]  # compiles the decode loop
    decode_s, tokens_BN = min((decode(cache, h_BD) for _ in range(args.repeats)),
                              key=lambda r: r[0])
    print(json.dumps({"first_call_s": first, "prefill_s": prefill_s,
                      "step_ms": 1e3 * decode_s / args.steps,
                      "tokens": hashlib.sha256(tokens_BN.tobytes()).hexdigest()[:10]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settings", default=",".join(SETTINGS),
                    help=f"comma-separated names from: {', '.join(SETTINGS)}")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=32, help="decode steps per timed run")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs; best is kept")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--decode-layout", default="out_in", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    names = args.settings.split(",")
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        ap.error(f"unknown --settings {unknown}; choose from {', '.join(SETTINGS)}")
    print(f"decode step, SmolLM2-135M shape (random weights) float32, batch {args.batch}, "
          f"prompt {args.prompt_len}, {os.cpu_count()} CPU threads")
    print(f"{'setting':>24} | {'step ms':>7} | {'prefill s':>9} | {'1st call s':>10} | "
          f"{'tokens':>10} | XLA_FLAGS")
    for done, name in enumerate(names):
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "HF_HUB_OFFLINE": "1"}
        env["XLA_FLAGS"] = SETTINGS[name]
        cmd = [sys.executable, __file__, "--child", "--batch", str(args.batch),
               "--prompt-len", str(args.prompt_len), "--repeats", str(args.repeats),
               "--steps", str(args.steps),
               "--decode-layout", LAYOUTS.get(name, "out_in")]
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{name:>24} | failed: {proc.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        flags = SETTINGS[name]
        print(f"{name:>24} | {r['step_ms']:>7.1f} | {r['prefill_s']:>9.2f} | {r['first_call_s']:>10.1f} | "
              f"{r['tokens']:>10} | {flags}   [{done + 1}/{len(names)}, "
              f"{time.perf_counter() - start:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
