"""Helpers to run `awmjax serve` inside a test: a server on a free loopback port, and a scripted sampler.

    with serve("tiny-random") as srv:           # a real policy behind the real HTTP server
        client = openai.OpenAI(base_url=srv.base_url, api_key="none")

    with serve("tiny-random", replies=[...]) as srv:   # the model's replies scripted (tool calls etc.)
        ...; srv.engine.sampler.prompts                # the token-id prompts the model was given
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from awmjax.policy import load_policy
from awmjax.sampler import Generation
from awmjax.serve import BackgroundServer, Engine


class ScriptedSampler:
    """Stands in for the Sampler: each row's completion is the next scripted text (or reply(prompt_text))."""

    def __init__(self, tokenizer, replies: Sequence[str] | Callable[[str], str]):
        self.tokenizer, self.replies, self.prompts = tokenizer, replies, []
        self.pad_id = tokenizer.pad_id

    def _ids(self, prompt: Sequence[int], budget: int) -> list[int]:
        self.prompts.append(list(prompt))
        text = self.tokenizer.decode(prompt)
        if callable(self.replies):
            reply = self.replies(text)
        else:
            reply = self.replies[(len(self.prompts) - 1) % len(self.replies)]
        return (self.tokenizer.encode(reply, allow_special=False) + [self.tokenizer.im_end_id])[:budget]

    def generate(self, prompts, sampling, *, budgets=None) -> list[Generation]:
        out = []
        for b, prompt in enumerate(prompts):
            budget = budgets[b] if budgets is not None else sampling.max_new_tokens
            ids = self._ids(prompt, budget)
            stopped = ids[-1] == self.tokenizer.im_end_id
            out.append(Generation(ids, [-0.25] * len(ids), [-0.25] * len(ids), "stop" if stopped else "length"))
        return out

    def stream(self, prompt, sampling) -> Iterator[int]:
        yield from self._ids(prompt, sampling.max_new_tokens)


@contextlib.contextmanager
def serve(policy: str = "tiny-random", *, replies=None, **options) -> Iterator[BackgroundServer]:
    """`awmjax serve` for `policy` in this process; `replies` scripts the model (see ScriptedSampler)."""
    model, config, tokenizer = load_policy(policy)
    sampler = ScriptedSampler(tokenizer, replies) if replies is not None else None
    engine = Engine(model, config, tokenizer, model_id=policy, sampler=sampler, **options)
    try:
        with BackgroundServer(engine) as server:
            yield server
    finally:
        engine.close()
