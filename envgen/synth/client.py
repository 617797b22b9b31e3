"""The model side of synthesis: a stage-level client with a cache, backoff, a concurrency limit and accounting.

Stages talk to `LLM`, never to HTTP: `await llm.chat(stage, messages)` and
`await llm.embed(stage, texts)`. `LLM` puts in front of any `Backend`:
- a content-addressed response cache on disk (key: SHA-256 of model, messages and
  sampling parameters), so a rerun after a crash replays finished calls for free;
- a semaphore bounding concurrent requests;
- retries with exponential backoff (and jitter) on rate limits, server errors,
  timeouts and dropped connections; other endpoint errors fail at once, clearly;
- a ledger per stage: calls, cache hits, prompt / completion tokens, transport
  retries, gate repairs, failures and cost from a per-model price table.
`OpenAIBackend` is the real backend (any OpenAI-compatible server through the
`openai` client); tests plug in their own.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

from envgen.world import canonical_json


@dataclass(frozen=True)
class Completion:
    """One chat completion: its text, token usage and why it stopped."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None


class TransientError(Exception):
    """A failure worth retrying after a pause: rate limit, server error, timeout, dropped connection."""


class EndpointError(Exception):
    """A failure retrying cannot fix (bad model name, bad key, bad request); the message names the fix."""


class EmbeddingsUnavailable(Exception):
    """The endpoint does not serve embeddings (callers fall back to lexical similarity)."""


class Backend(Protocol):
    """What `LLM` needs from an endpoint."""

    model: str

    async def chat(self, messages: list[dict[str, str]], params: dict[str, Any]) -> Completion: ...

    async def embed(self, texts: list[str]) -> tuple[list[list[float]], int]: ...


class OpenAIBackend:
    """Any OpenAI-compatible server, through the `openai` client (its own retries off: `LLM` retries)."""

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, timeout: float = 120.0,
                 embedding_model: str | None = None):
        from openai import AsyncOpenAI

        self.model, self.base_url, self.embedding_model = model, base_url, embedding_model or model
        # Local servers need no key, but the client insists on one.
        key = api_key or os.environ.get("OPENAI_API_KEY") or "no-key"
        self._client = AsyncOpenAI(base_url=base_url, api_key=key, timeout=timeout, max_retries=0)

    async def chat(self, messages, params) -> Completion:
        import openai

        try:
            r = await self._client.chat.completions.create(model=self.model, messages=messages, **params)
        except Exception as e:  # noqa: BLE001 - classified below
            raise self._classify(e, openai) from e
        if not r.choices:
            raise TransientError(f"{self.base_url} returned no choices")
        choice = r.choices[0]
        usage = r.usage
        return Completion(
            choice.message.content or "",
            getattr(usage, "prompt_tokens", 0) or 0,
            getattr(usage, "completion_tokens", 0) or 0,
            choice.finish_reason,
        )

    async def embed(self, texts):
        import openai

        try:
            r = await self._client.embeddings.create(model=self.embedding_model, input=texts)
        except (openai.NotFoundError, openai.BadRequestError, openai.UnprocessableEntityError) as e:
            raise EmbeddingsUnavailable(f"{self.base_url} serves no embeddings for {self.embedding_model}: {e}") from e
        except Exception as e:  # noqa: BLE001
            err = self._classify(e, openai)
            if isinstance(err, EndpointError):
                raise EmbeddingsUnavailable(str(err)) from e
            raise err from e
        if len(r.data) != len(texts):
            raise EmbeddingsUnavailable(f"{self.base_url} returned {len(r.data)} embeddings for {len(texts)} texts")
        return [d.embedding for d in r.data], getattr(r.usage, "prompt_tokens", 0) or 0

    def _classify(self, e: Exception, openai) -> Exception:
        if isinstance(e, (openai.RateLimitError, openai.InternalServerError, openai.APITimeoutError, openai.APIConnectionError)):
            return TransientError(f"{type(e).__name__} from {self.base_url}: {e}")
        if isinstance(e, openai.AuthenticationError):
            return EndpointError(f"{self.base_url} refused the key (set OPENAI_API_KEY): {e}")
        if isinstance(e, openai.NotFoundError):
            return EndpointError(f"{self.base_url} has no model {self.model!r} or no chat endpoint (check --base-url and --model): {e}")
        if isinstance(e, openai.APIStatusError) and e.status_code >= 500:
            return TransientError(f"HTTP {e.status_code} from {self.base_url}: {e}")
        return EndpointError(f"{self.base_url} rejected the request: {e}")


class ResponseCache:
    """Completions on disk, one JSON file per request key, written atomically (temp file, rename)."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(model: str, messages: Any, params: dict[str, Any], kind: str = "chat") -> str:
        """SHA-256 of the request: what was asked of which model, with which sampling parameters."""
        return hashlib.sha256(canonical_json({"kind": kind, "model": model, "messages": messages, "params": params}).encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored record, or None (a missing or unreadable file is a miss)."""
        try:
            return json.loads(self._path(key).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None

    def put(self, key: str, record: dict[str, Any]) -> None:
        """Store a record; readers never see a partial file."""
        path = self._path(key)
        path.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(record, f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


@dataclass
class StageStats:
    """Accounting for one stage."""

    calls: int = 0  # requests sent to the endpoint (each retry is a request)
    cached: int = 0  # answered from the cache, not paid again
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0  # transport retries (429, 5xx, timeouts)
    repairs: int = 0  # the gate refused an output and the errors went back to the model
    failures: int = 0  # the stage gave up (the world is rejected)
    passed: int = 0  # outputs that passed the stage's validation
    cost: float = 0.0


@dataclass(frozen=True)
class Price:
    """Dollars per million prompt and completion tokens."""

    prompt: float
    completion: float


def load_prices(path: str | os.PathLike | None) -> dict[str, Price]:
    """A price table from JSON `{"<model>": {"prompt": $/Mtok, "completion": $/Mtok}}` (None: empty)."""
    if path is None:
        return {}
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        return {m: Price(float(p["prompt"]), float(p["completion"])) for m, p in doc.items()}
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(
            f"price file {path} is unusable ({type(e).__name__}: {e}); "
            'write {"<model>": {"prompt": <$ per 1M tokens>, "completion": <$ per 1M tokens>}}'
        ) from None


@dataclass
class LLM:
    """The client stages use: cache, concurrency limit, backoff retries and per-stage accounting."""

    backend: Backend
    cache: ResponseCache | None = None
    params: dict[str, Any] = field(default_factory=dict)  # sampling parameters sent with every chat call
    concurrency: int = 4
    max_attempts: int = 6  # transport attempts per call (first try included)
    backoff: float = 1.0  # seconds before the first transport retry; doubles each time
    max_backoff: float = 60.0
    prices: dict[str, Price] = field(default_factory=dict)
    deadline: float | None = None  # time.monotonic() after which no new request is sent
    stats: dict[str, StageStats] = field(default_factory=dict)

    def __post_init__(self):
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        self._sem = asyncio.Semaphore(self.concurrency)

    @property
    def model(self) -> str:
        return self.backend.model

    def stage(self, name: str) -> StageStats:
        """The ledger entry of a stage (created on first use, in first-use order)."""
        return self.stats.setdefault(name, StageStats())

    async def chat(self, stage: str, messages: list[dict[str, str]], *, attempt: int = 0) -> Completion:
        """One completion for `messages`, from the cache when this exact request was answered before.

        `attempt` (the stage's repair round) is part of the cache key, so a repair whose
        conversation repeats an earlier one samples again instead of replaying the same answer.
        """
        key = ResponseCache.key(self.model, messages, self.params | ({"attempt": attempt} if attempt else {}))
        st = self.stage(stage)
        if self.cache and (rec := self.cache.get(key)) is not None:
            st.cached += 1
            return Completion(rec["text"], rec["prompt_tokens"], rec["completion_tokens"], rec.get("finish_reason"))
        c = await self._with_retries(st, lambda: self.backend.chat(messages, dict(self.params)))
        self._account(st, c.prompt_tokens, c.completion_tokens)
        if self.cache:
            self.cache.put(key, {"text": c.text, "prompt_tokens": c.prompt_tokens,
                                 "completion_tokens": c.completion_tokens, "finish_reason": c.finish_reason})
        return c

    async def embed(self, stage: str, texts: Sequence[str]) -> list[list[float]]:
        """Embedding vectors for `texts` (cached like chat); EmbeddingsUnavailable if not served."""
        texts = list(texts)
        key = ResponseCache.key(getattr(self.backend, "embedding_model", self.model), texts, {}, kind="embed")
        st = self.stage(stage)
        if self.cache and (rec := self.cache.get(key)) is not None:
            st.cached += 1
            if "unavailable" in rec:  # remembered, so a rerun dedups the same way without asking again
                raise EmbeddingsUnavailable(rec["unavailable"])
            return rec["vectors"]
        try:
            vectors, tokens = await self._with_retries(st, lambda: self.backend.embed(texts))
        except EmbeddingsUnavailable as e:
            if self.cache:
                self.cache.put(key, {"unavailable": str(e)})
            raise
        self._account(st, tokens, 0)
        if self.cache:
            self.cache.put(key, {"vectors": vectors, "prompt_tokens": tokens})
        return vectors

    async def _with_retries(self, st: StageStats, request):
        for attempt in range(self.max_attempts):
            if self.deadline is not None and time.monotonic() > self.deadline:
                raise EndpointError("the run's time limit was reached before this call (raise --time-limit to go further)")
            async with self._sem:
                st.calls += 1
                try:
                    return await request()
                except TransientError:
                    if attempt + 1 == self.max_attempts:
                        raise
            st.retries += 1
            pause = min(self.max_backoff, self.backoff * 2**attempt)
            await asyncio.sleep(pause * (0.5 + random.random() / 2))  # jitter spreads a burst of 429s
        raise AssertionError("unreachable")

    def _account(self, st: StageStats, prompt_tokens: int, completion_tokens: int) -> None:
        st.prompt_tokens += prompt_tokens
        st.completion_tokens += completion_tokens
        price = self.prices.get(self.model)
        if price:
            st.cost += (prompt_tokens * price.prompt + completion_tokens * price.completion) / 1e6

    def table(self) -> str:
        """The per-stage accounting as a fixed-width text table, with a total row."""
        fields = ("calls", "cached", "prompt_tokens", "completion_tokens", "retries", "repairs", "passed", "failures")
        cols = ("calls", "cached", "prompt_tok", "completion_tok", "retries", "repairs", "passed", "failures", "cost_usd")
        rows = [(name, st) for name, st in self.stats.items()]
        total = StageStats()
        for _, st in rows:
            for f in total.__dataclass_fields__:
                setattr(total, f, getattr(total, f) + getattr(st, f))
        width = max([len("stage"), len("total")] + [len(n) for n, _ in rows])
        head = f"{'stage':<{width}}  " + "  ".join(f"{c:>{len(c) + 1}}" for c in cols)
        lines = [head, "-" * len(head)]
        for name, st in rows + [("total", total)]:
            vals = [getattr(st, f) for f in fields] + [f"{st.cost:.4f}"]
            lines.append(f"{name:<{width}}  " + "  ".join(f"{v:>{len(c) + 1}}" for v, c in zip(vals, cols)))
        if self.model not in self.prices:
            lines.append(f"(no price for model {self.model!r}: pass --prices FILE to count cost)")
        return "\n".join(lines)
