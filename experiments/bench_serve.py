"""Benchmark: `awmjax serve` answering N concurrent chat requests, batched vs one sampler call per request.

The same policy, the same N greedy requests (distinct questions, same max_tokens), sent at
once from N client threads through the openai client to a server in this process:
- one at a time: `max_batch = 1`, so every request is its own sampler call;
- batched: `max_batch = N` and a `batch_wait_ms` window, so the queue gathers them.
Each mode gets one untimed warm-up round first (it compiles the shapes). Greedy outputs
are compared between the modes (batching must not change an answer). Prints wall time,
completion tokens per second, mean request latency and sampler calls per mode.

    python experiments/bench_serve.py [--policy embedded] [--requests 8] [--max-tokens 32] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import openai

from awmjax.policy import load_policy
from awmjax.serve import BackgroundServer, Engine


def one_round(client: openai.OpenAI, model: str, questions: list[str], max_tokens: int) -> tuple[float, list, list]:
    """Send every question at once; (wall seconds, latencies, responses)."""
    out, lat = [None] * len(questions), [0.0] * len(questions)

    def ask(i: int) -> None:
        t0 = time.perf_counter()
        out[i] = client.chat.completions.create(model=model, messages=[{"role": "user", "content": questions[i]}],
                                                temperature=0, max_tokens=max_tokens)
        lat[i] = time.perf_counter() - t0

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(questions))]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, lat, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", default="embedded")
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2, help="timed rounds per mode (the median is reported)")
    ap.add_argument("--batch-wait-ms", type=float, default=20.0)
    args = ap.parse_args()
    model, config, tok = load_policy(args.policy)
    questions = [f"In one sentence, what is {thing} used for?" for thing in
                 ("a hammer", "a kettle", "a ladder", "a compass", "a stapler", "a violin", "a telescope", "a sponge",
                  "a shovel", "a lantern", "a whistle", "a map", "a needle", "a bucket", "a magnet", "a clock")]
    questions = (questions * (args.requests // len(questions) + 1))[:args.requests]
    rows, texts = [], {}
    for mode, max_batch, wait in (("one at a time", 1, 0.0), ("batched", args.requests, args.batch_wait_ms)):
        engine = Engine(model, config, tok, model_id=args.policy, max_context=1024, max_batch=max_batch,
                        batch_wait_ms=wait)
        with BackgroundServer(engine) as srv:
            client = openai.OpenAI(base_url=srv.base_url, api_key="none", max_retries=0, timeout=3600)
            one_round(client, args.policy, questions, args.max_tokens)  # warm-up: compiles
            calls0 = engine.stats.sampler_calls
            results = [one_round(client, args.policy, questions, args.max_tokens) for _ in range(args.rounds)]
            calls = (engine.stats.sampler_calls - calls0) / args.rounds
        engine.close()
        wall = statistics.median(r[0] for r in results)
        tokens = sum(o.usage.completion_tokens for o in results[0][2])
        texts[mode] = [o.choices[0].message.content for o in results[0][2]]
        rows.append((mode, wall, tokens / wall, statistics.mean(results[0][1]), calls))
    print(f"{args.requests} concurrent greedy requests, max_tokens={args.max_tokens}, policy={args.policy}, "
          f"median of {args.rounds} rounds")
    print(f"{'mode':<14} {'wall s':>8} {'tok/s':>8} {'mean latency s':>15} {'sampler calls':>14}")
    for mode, wall, rate, latency, calls in rows:
        print(f"{mode:<14} {wall:8.2f} {rate:8.1f} {latency:15.2f} {calls:14.1f}")
    print(f"speed-up of batching: {rows[0][1] / rows[1][1]:.2f}x wall; "
          f"answers identical in both modes: {texts['one at a time'] == texts['batched']}")


if __name__ == "__main__":
    main()
