"""Benchmark: decoding with schema-constrained tool calls against plain decoding, same prompts.

Plain decoding runs the fused jitted loop (one while_loop for all steps). Constrained decoding
(rollout.constrain_calls, awmjax/constrain.py) steps from the host: before each step every row's
mask comes from its CallConstraint, after it the row's automaton reads the token. Both decode
the same number of tokens per row (no stop tokens) from real task prompts of compact procedural
worlds, greedy, one process, alternating; the table gives tokens/s, ms per step, and the host's
share (building masks and advancing the automata) with the mask cache cold and warm.

    JAX_PLATFORMS=cpu python experiments/bench_constrain.py
    python experiments/bench_constrain.py --policy runs/demo/sft/policy --batch 16 --tokens 64
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class _Timed:
    """A CallConstraint whose mask and advance time is added to a shared clock."""

    def __init__(self, inner, clock: list):
        self.inner, self.clock = inner, clock

    def mask(self):
        start = time.perf_counter()
        out = self.inner.mask()
        self.clock[0] += time.perf_counter() - start
        return out

    def advance(self, token_id):
        start = time.perf_counter()
        self.inner.advance(token_id)
        self.clock[0] += time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", default="embedded", help="policy source (default embedded SmolLM2-135M)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=64, help="new tokens per row (default 64, the demo's turn)")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    from awmjax.chat import ChatConfig, Conversation, surface_tools
    from awmjax.constrain import CallConstraint, call_grammar
    from awmjax.policy import load_policy
    from awmjax.sampler import Sampler
    from awmjax.sampling import SamplingConfig
    from envgen.build import generate_catalog
    from envgen.catalog import Catalog

    model, config, tok = load_policy(args.policy)
    with tempfile.TemporaryDirectory() as tmp:
        generate_catalog(max(4, args.batch // 2), 0, tmp, held_out=0.0, overwrite=True, profile="compact",
                         progress=False)
        worlds = list(Catalog.open(tmp).worlds("train"))
    chat = ChatConfig(surface="direct", tool_schema="brief")
    rows = [(w, t) for w in worlds for t in w.tasks][: args.batch]
    specs = [[t.openai_spec() for t in w.tools] for w, _ in rows]
    prompts = [Conversation.start(tok, task.instruction, s, chat).prompt_ids() for (_, task), s in zip(rows, specs)]
    grammars = [call_grammar(tok, surface_tools(s, "direct"), config.vocab_size) for s in specs]
    longest = max(len(p) for p in prompts)
    sampler = Sampler(model, config, max_cache_len=longest + args.tokens + 8, pad_id=tok.pad_id)
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=args.tokens)  # no stop: every row runs to the end

    def plain():
        return sampler.generate(prompts, sampling), 0.0

    def constrained():
        clock = [0.0]
        cons = [_Timed(CallConstraint(g), clock) for g in grammars]
        return sampler.generate(prompts, sampling, constraints=cons), clock[0]

    def timed(fn):
        start = time.perf_counter()
        gens, host = fn()
        return time.perf_counter() - start, host, gens

    one = SamplingConfig(temperature=0.0, max_new_tokens=1)
    timed(lambda: (sampler.generate(prompts, one), 0.0))  # compiles the prefill
    prefill = timed(lambda: (sampler.generate(prompts, one), 0.0))[0]
    rows_out = []
    for label, fn in (("plain, first call", plain), ("constrained, first call (cold masks)", constrained)):
        seconds, host, _ = timed(fn)
        rows_out.append((label, seconds, host))
    results = {"plain": [], "constrained": []}
    calls_made = 0
    for _ in range(args.repeats):
        for name, fn in (("plain", plain), ("constrained", constrained)):
            seconds, host, gens = timed(fn)
            results[name].append((seconds, host))
            if name == "constrained":
                calls_made = sum("</tool_call>" in tok.decode(g.token_ids) for g in gens)
    n_tokens = args.batch * args.tokens
    print(f"policy {args.policy}, batch {args.batch}, {args.tokens} new tokens per row, prompts "
          f"{min(len(p) for p in prompts)}-{longest} tokens; prefill + 1 token: {prefill:.2f} s "
          "(decode ms/step is the rest over the steps)")
    print(f"{'run':<40}{'s':>8}{'tok/s':>9}{'decode ms/step':>16}{'host ms/step':>14}")
    for label, seconds, host in rows_out:
        print(f"{label:<40}{seconds:8.2f}{n_tokens / seconds:9.1f}{1e3 * (seconds - prefill) / args.tokens:16.1f}"
              f"{1e3 * host / args.tokens:14.1f}")
    for name, runs in results.items():
        for k, (seconds, host) in enumerate(runs):
            label = f"{name}, run {k + 1}" + (" (warm masks)" if name == "constrained" else "")
            print(f"{label:<40}{seconds:8.2f}{n_tokens / seconds:9.1f}"
                  f"{1e3 * (seconds - prefill) / args.tokens:16.1f}{1e3 * host / args.tokens:14.1f}")
    print(f"constrained rows that wrote a whole call block: {calls_made} of {args.batch}")


if __name__ == "__main__":
    main()
