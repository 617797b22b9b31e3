"""Judges turn a finished episode into a verdict, asynchronously, so slow ones overlap training.

A judge is an async function `judge(episode) -> Judgement`, chosen by name from a
registry. `code` (the default) returns the task's code verdict that the pool already
computed. The LLM judges (`llm`, `code-augmented`, in awmjax/llm_judge.py) call a model
over an OpenAI-compatible endpoint named by the [judge] config. `JudgeRunner` runs judgements on a background asyncio loop with bounded
concurrency, a timeout and retries; on failure it falls back to the code verdict and
counts the fallback, so a broken endpoint never stalls or kills training.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from dataclasses import dataclass, field
from collections import Counter
from typing import Any, Awaitable, Callable, Sequence

from awmjax.rollout import EpisodeResult

# Rollout format and environment errors never reach a judge; an LLM judge may still find that
# the environment failed the agent (AWM's "Environment Error"), which is rewarded as env_error.
JUDGE_RESULTS = ("complete", "partial", "incomplete", "env_error")
LLM_JUDGES = ("llm", "code-augmented")


@dataclass(frozen=True)
class Judgement:
    """A verdict for one episode, where it came from, and how long it took."""

    result: str  # one of JUDGE_RESULTS
    source: str  # the judge's name, or "code-fallback"
    evidence: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


JudgeFn = Callable[[EpisodeResult], Awaitable[Judgement]]


def code_verdict(episode: EpisodeResult) -> Judgement:
    """The pool's code verdict of an episode (incomplete when it has none)."""
    v = episode.verdict or {}
    return Judgement(v.get("result", "incomplete"), "code", {"code": v.get("evidence", {})})


async def code_judge(episode: EpisodeResult) -> Judgement:
    """The default judge: the task's code check, already run by the pool."""
    return code_verdict(episode)


def delayed_code_judge(seconds: float) -> JudgeFn:
    """The code verdict after `seconds` of waiting: a stand-in for a slow remote judge (benchmarks, tests)."""

    async def judge(episode: EpisodeResult) -> Judgement:
        await asyncio.sleep(seconds)
        j = code_verdict(episode)
        return Judgement(j.result, f"delayed-code({seconds:g}s)", j.evidence)

    return judge


def _llm_judge(kind: str) -> Callable[..., JudgeFn]:
    def make(**options: Any) -> JudgeFn:
        from awmjax.llm_judge import make_llm_judge  # imports openai only when asked for

        return make_llm_judge(kind, **options)

    return make


JUDGES: dict[str, Callable[..., JudgeFn]] = {"code": lambda **_: code_judge, **{k: _llm_judge(k) for k in LLM_JUDGES}}


def make_judge(name: str, **options: Any) -> JudgeFn:
    """A judge by registry name."""
    if name.startswith("delayed-code:"):
        return delayed_code_judge(float(name.split(":", 1)[1]))
    try:
        return JUDGES[name](**options)
    except KeyError:
        raise ValueError(f"unknown judge {name!r}; available: {', '.join(sorted(JUDGES))}, delayed-code:SECONDS") from None


@dataclass(frozen=True)
class JudgeConfig:
    """Which judge, how many calls at once, how long each may take, how often to retry, which endpoint."""

    name: str = "code"
    concurrency: int = 64
    timeout_s: float = 120.0
    retries: int = 2
    max_lag: int = 0  # policy updates a batch may wait for its judgements (0 = synchronous)
    # the LLM judges' OpenAI-compatible endpoint; the key is read from the environment variable api_key_env
    base_url: str = ""
    model: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    max_tokens: int = 1024
    temperature: float = 0.0

    def __post_init__(self):
        if self.concurrency < 1 or self.timeout_s <= 0 or self.retries < 0 or self.max_lag < 0:
            raise ValueError("[judge] concurrency >= 1, timeout_s > 0, retries >= 0 and max_lag >= 0 are required")
        if self.max_tokens < 1 or self.temperature < 0:
            raise ValueError("[judge] max_tokens >= 1 and temperature >= 0 are required")
        if self.name in LLM_JUDGES and not (self.base_url and self.model):
            raise ValueError(f"[judge] name = {self.name!r} needs base_url and model: an OpenAI-compatible endpoint, "
                             "e.g. base_url = \"http://127.0.0.1:8000/v1\" and model = \"embedded\" for `awmjax serve`")

    def options(self) -> dict[str, Any]:
        """The keyword options make_judge passes to the judge's constructor."""
        return {"base_url": self.base_url, "model": self.model, "api_key_env": self.api_key_env,
                "max_tokens": self.max_tokens, "temperature": self.temperature, "timeout_s": self.timeout_s}


class JudgeRunner:
    """Runs judgements on a background event loop; `submit` returns a future of all verdicts of a batch."""

    def __init__(self, judge: JudgeFn, cfg: JudgeConfig):
        self.judge, self.cfg = judge, cfg
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="judge-loop", daemon=True)
        self.thread.start()
        self.semaphore: asyncio.Semaphore | None = None
        self.fallbacks = 0  # episodes given the code verdict because the judge failed every try
        self.retries = 0  # tries after a first failed one
        self.failures: Counter[str] = Counter()  # why tries failed: timeout, unusable, or the exception's type

    async def _one(self, episode: EpisodeResult) -> Judgement:
        if self.semaphore is None:
            self.semaphore = asyncio.Semaphore(self.cfg.concurrency)
        if episode.outcome in ("format_error", "env_error"):
            return Judgement(episode.outcome, "rollout")  # decided without a judge
        t0 = time.perf_counter()
        last = ""
        for attempt in range(self.cfg.retries + 1):
            self.retries += attempt > 0
            try:
                async with self.semaphore:
                    j = await asyncio.wait_for(self.judge(episode), self.cfg.timeout_s)
                if j.result in JUDGE_RESULTS:
                    return Judgement(j.result, j.source, j.evidence, time.perf_counter() - t0)
                last, kind = f"unusable result {j.result!r}", "unusable"
            except asyncio.TimeoutError:
                last, kind = f"timed out after {self.cfg.timeout_s:g}s", "timeout"
            except Exception as e:  # noqa: BLE001 - an endpoint may fail in any way; the code verdict stands in
                last, kind = f"{type(e).__name__}: {e}", type(e).__name__
            self.failures[kind] += 1
        self.fallbacks += 1
        j = code_verdict(episode)
        return Judgement(j.result, "code-fallback", {**j.evidence, "judge_error": last}, time.perf_counter() - t0)

    async def _batch(self, episodes: Sequence[EpisodeResult]) -> list[Judgement]:
        return list(await asyncio.gather(*(self._one(e) for e in episodes)))

    def submit(self, episodes: Sequence[EpisodeResult]) -> concurrent.futures.Future:
        """Start judging a batch now; the future resolves to one Judgement per episode."""
        return asyncio.run_coroutine_threadsafe(self._batch(list(episodes)), self.loop)

    def close(self) -> None:
        """Stop the background loop."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)

    def __enter__(self) -> "JudgeRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
