"""Benchmark: choosing one decode step's tokens, awmjax's choose_tokens vs the textbook form.

The textbook form (kept here as the reference) takes a full log_softmax over the vocabulary,
then argmax for greedy decoding, or argmax of logits plus Gumbel noise (one random number per
vocabulary entry) for sampling. awmjax's choose_tokens (awmjax/sampling.py) finds the first
maximum, or draws by inverse CDF from one uniform number per row, and gets the log-probs from a
log-sum-exp. Both run on the same logits in one process; the table gives the median of
--repeats timed calls after a warm-up, and checks that the greedy tokens and log-probs agree.

    JAX_PLATFORMS=cpu python experiments/bench_choice.py
    python experiments/bench_choice.py --batch 64 --vocab 151936   # a Qwen3 vocabulary
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from awmjax.sampling import choose_tokens


def reference(logits_BV, keys_B, temperature, *, greedy: bool):
    """(tokens, model log-prob, sampling log-prob): full log_softmax, argmax / Gumbel-max."""
    logits_BV = logits_BV.astype(jnp.float32)
    model_logp_BV = jax.nn.log_softmax(logits_BV, axis=-1)
    if greedy:
        tokens_B = jnp.argmax(logits_BV, axis=-1)
        sampling_logp_B = jnp.zeros(tokens_B.shape, jnp.float32)
    else:
        scaled_BV = logits_BV / temperature
        gumbel_BV = jax.vmap(lambda k: jax.random.gumbel(k, scaled_BV.shape[1:]))(keys_B)
        tokens_B = jnp.argmax(scaled_BV + gumbel_BV, axis=-1)
        sampling_logp_B = jnp.take_along_axis(jax.nn.log_softmax(scaled_BV, axis=-1),
                                              tokens_B[:, None], axis=1)[:, 0]
    model_logp_B = jnp.take_along_axis(model_logp_BV, tokens_B[:, None], axis=1)[:, 0]
    return tokens_B.astype(jnp.int32), model_logp_B, sampling_logp_B


def _median_ms(fn, args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--vocab", type=int, default=49152, help="SmolLM2's by default")
    ap.add_argument("--temperature", type=float, default=1.0, help="of the sampled rows")
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args()

    logits = jnp.asarray(np.random.default_rng(0).normal(0, 3, (args.batch, args.vocab)),
                         jnp.float32)
    keys = jax.random.split(jax.random.key(0), args.batch)
    temperature = jnp.float32(args.temperature)
    print(f"one decode step's token choice: batch {args.batch}, vocabulary {args.vocab}, "
          f"{jax.devices()[0].device_kind}, median of {args.repeats} calls")
    print(f"{'mode':<8} | {'reference ms':>12} | {'awmjax ms':>9} | {'speedup':>7}")
    for greedy in (True, False):
        ours = jax.jit(lambda x, k: choose_tokens(x, k, temperature, jnp.float32(1.0),
                                                  greedy=greedy, top_k=0))
        ref = jax.jit(lambda x, k: reference(x, k, temperature, greedy=greedy))
        if greedy:
            (t1, l1, _), (t2, l2, _) = ours(logits, keys), ref(logits, keys)
            assert np.array_equal(np.asarray(t1), np.asarray(t2)), "greedy tokens differ"
            np.testing.assert_allclose(np.asarray(l1), np.asarray(l2), atol=1e-4)
        ref_ms = _median_ms(ref, (logits, keys), args.repeats)
        our_ms = _median_ms(ours, (logits, keys), args.repeats)
        print(f"{'greedy' if greedy else 'sampled':<8} | {ref_ms:>12.3f} | {our_ms:>9.3f} | "
              f"{ref_ms / our_ms:>6.1f}x")


if __name__ == "__main__":
    main()
