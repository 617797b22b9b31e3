"""`awmjax serve`: any awmjax policy behind an OpenAI-compatible HTTP API.

    GET  /v1/models
    POST /v1/chat/completions   tools / tool_calls, stream (SSE), logprobs + top_logprobs,
                                temperature, top_p, top_k, max_tokens, stop, seed, n

One worker thread owns the jitted KV-cache Sampler. Requests wait in a queue; the worker
takes the oldest, gathers whatever else arrives within `batch_wait_ms` (up to `max_batch`
rows), and runs every group of requests with compatible sampling settings as one sampler
call (greedy requests always batch; seeded sampled requests run alone so that a seed
reproduces its answer). Streamed requests run one at a time, token by token. Prompts are
rendered in the ChatML tool format the policy trains on (awmjax/chat.py) and tool calls
are read back with the rollouts' parser (awmjax/toolcall.py), via awmjax/openai_protocol.py.
Logprobs are the model's own (temperature 1); top_logprobs come from one scoring pass over
the prompt and the completion.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import queue
import secrets
import socket
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from flax import nnx

from awmjax.openai_protocol import (MAX_TOP_LOGPROBS, ChatRequest, RequestError, assistant_message, completion_id,
                                    error_body, parse_chat_request, response_head, usage)
from awmjax.sampler import Generation, Sampler, SamplingConfig, _bucket
from awmjax.tokenizer import Tokenizer
from awmjax.toolcall import OPEN_TAG


@dataclass
class _Job:
    """One request in the worker's queue: a future (complete responses) or a push function (streams)."""

    request: ChatRequest
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    push: Callable[[tuple], None] | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass
class EngineStats:
    """Counters of what the worker did (tests check batching with them; /v1/models does not show them)."""

    requests: int = 0
    sampler_calls: int = 0
    rows: int = 0
    largest_call: int = 0


class Engine:
    """A policy, its tokenizer and a Sampler, fed by a request queue on one worker thread."""

    def __init__(self, model, config, tokenizer: Tokenizer, *, model_id: str, max_context: int | None = None,
                 max_tokens: int = 512, batch_wait_ms: float = 5.0, max_batch: int = 16, sampler: Sampler | None = None):
        max_context = max_context or min(4096, config.max_position_embeddings)
        if not 0 < max_context <= config.max_position_embeddings:
            raise ValueError(f"max_context={max_context}; it must be in 1..{config.max_position_embeddings} for this model")
        if max_batch < 1 or max_tokens < 1 or batch_wait_ms < 0:
            raise ValueError("max_batch >= 1, max_tokens >= 1 and batch_wait_ms >= 0 are required")
        self.tokenizer, self.model_id = tokenizer, model_id
        self.max_context, self.max_tokens = max_context, max_tokens
        self.batch_wait, self.max_batch = batch_wait_ms / 1000.0, max_batch
        # `sampler` replaces the jitted Sampler (tests script the model's replies with one)
        self.sampler = sampler or Sampler(model, config, max_cache_len=max_context, pad_id=tokenizer.pad_id,
                                          decode_fn=tokenizer.decode)
        self.stop_ids = tuple(tokenizer.stop_token_ids)
        self.stats = EngineStats()
        self.jobs: queue.Queue[_Job | None] = queue.Queue()
        self.thread = threading.Thread(target=self._work, name="serve-engine", daemon=True)
        self.thread.start()

    # ---- requests ----------------------------------------------------------------------------

    def parse(self, body: Any) -> ChatRequest:
        """A validated request (RequestError names the bad field)."""
        return parse_chat_request(body, self.tokenizer, served_model=self.model_id, max_context=self.max_context,
                                  default_max_tokens=self.max_tokens)

    def submit(self, request: ChatRequest, push: Callable[[tuple], None] | None = None) -> _Job:
        """Queue a request; its job's future resolves to the response (or `push` gets stream events)."""
        job = _Job(request, push=push)
        self.jobs.put(job)
        return job

    def close(self) -> None:
        """Stop the worker after the queued requests."""
        self.jobs.put(None)
        self.thread.join(timeout=30)

    # ---- the worker --------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            batch, rows = [job], job.request.n
            deadline = time.monotonic() + self.batch_wait
            while rows < self.max_batch and (wait := deadline - time.monotonic()) > 0:
                try:
                    nxt = self.jobs.get(timeout=wait)
                except queue.Empty:
                    break
                if nxt is None:
                    self.jobs.put(None)
                    break
                batch.append(nxt)
                rows += nxt.request.n
            groups: dict[tuple, list[_Job]] = defaultdict(list)
            for j in batch:
                if not j.request.stream:
                    groups[j.request.batch_key].append(j)
            for group in groups.values():
                self._guarded(group, self._complete)
            for j in batch:
                if j.request.stream:
                    self._guarded([j], lambda js: self._stream(js[0]))

    def _guarded(self, jobs: list[_Job], run: Callable[[list[_Job]], None]) -> None:
        try:
            run(jobs)
        except Exception as e:  # noqa: BLE001 - one failed call must not stop the server
            message = f"generation failed: {type(e).__name__}: {e}"
            for j in jobs:
                if j.push is not None:
                    j.push(("error", message))
                elif not j.future.done():
                    j.future.set_exception(RuntimeError(message))

    def _sampling(self, r: ChatRequest, max_new: int) -> SamplingConfig:
        return SamplingConfig(temperature=r.temperature, top_k=r.top_k, top_p=r.top_p, max_new_tokens=max_new,
                              stop_token_ids=self.stop_ids, stop_strings=r.stop,
                              seed=r.seed if r.seed is not None else secrets.randbits(31))

    def _complete(self, jobs: list[_Job]) -> None:
        """Run compatible requests as one sampler call per max_batch rows."""
        rows = [(j, i) for j in jobs for i in range(j.request.n)]
        choices: dict[int, list[dict]] = defaultdict(list)
        for start in range(0, len(rows), self.max_batch):
            chunk = rows[start:start + self.max_batch]
            budgets = [j.request.max_tokens for j, _ in chunk]
            gens = self.sampler.generate([j.request.prompt_ids for j, _ in chunk],
                                         self._sampling(chunk[0][0].request, max(budgets)), budgets=budgets)
            self.stats.sampler_calls += 1
            self.stats.rows += len(chunk)
            self.stats.largest_call = max(self.stats.largest_call, len(chunk))
            for (j, i), gen in zip(chunk, gens):
                choices[id(j)].append(self._choice(j.request, i, gen))
        for j in jobs:
            self.stats.requests += 1
            mine = choices[id(j)]
            body = {**response_head(completion_id(), self.model_id, "chat.completion"), "choices": mine,
                    "usage": usage(len(j.request.prompt_ids), sum(c.pop("_tokens") for c in mine))}
            j.future.set_result(body)

    def _choice(self, r: ChatRequest, index: int, gen: Generation) -> dict[str, Any]:
        ids = list(gen.token_ids)
        finish = "stop" if gen.finish_reason == "stop" else "length"
        if ids and ids[-1] in self.stop_ids:
            ids = ids[:-1]
        text, cut = _cut_at_stop(self.tokenizer.decode(ids, skip_special_tokens=True), r.stop)
        finish = "stop" if cut else finish
        message, calls = assistant_message(text, r.tool_names)
        logprobs = None
        if r.logprobs:
            logprobs = {"content": self._logprobs(r, ids, gen.logprobs[:len(ids)])}
        return {"index": index, "message": message, "logprobs": logprobs,
                "finish_reason": "tool_calls" if calls else finish, "_tokens": len(gen.token_ids)}

    def _logprobs(self, r: ChatRequest, ids: list[int], chosen: list[float]) -> list[dict[str, Any]]:
        """OpenAI's per-token logprobs; top alternatives from a scoring pass when asked for."""
        top = None
        if r.top_logprobs and ids:
            chosen, top = _score(self.sampler, list(r.prompt_ids), ids)
        out = []
        for k, (tid, lp) in enumerate(zip(ids, chosen)):
            entry = self._token_entry(tid, lp)
            entry["top_logprobs"] = [self._token_entry(int(t), float(v)) for t, v in top[k][:r.top_logprobs]] if top else []
            out.append(entry)
        return out

    def _token_entry(self, token_id: int, logprob: float) -> dict[str, Any]:
        text = self.tokenizer.decode([token_id])
        return {"token": text, "logprob": float(logprob), "bytes": list(text.encode("utf-8"))}

    def _stream(self, job: _Job) -> None:
        """Generate one request token by token, pushing ("content", text) events, then its ending."""
        r, push = job.request, job.push
        step = self.tokenizer.stream_decoder(skip_special_tokens=True)
        text, ids, sent, finish = "", [], 0, "length"
        markers = r.stop + ((OPEN_TAG,) if r.tool_names is not None else ())
        self.stats.requests += 1
        self.stats.sampler_calls += 1
        for token in self.sampler.stream(list(r.prompt_ids), self._sampling(r, r.max_tokens)):
            if job.cancelled.is_set():
                return
            ids.append(token)
            if token in self.stop_ids:
                finish = "stop"
                break
            text += step(token)
            text, cut = _cut_at_stop(text, r.stop)
            if cut:
                finish = "stop"
                break
            safe = _safe_length(text, markers, r.tool_names is not None)
            if safe > sent:
                push(("content", text[sent:safe]))
                sent = safe
        message, calls = assistant_message(text, r.tool_names)
        if calls:
            push(("tool_calls", message["tool_calls"]))
        elif len(text) > sent:
            push(("content", text[sent:]))
        push(("done", "tool_calls" if calls else finish, usage(len(r.prompt_ids), len(ids))))


def _cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    """The text before the first stop string, and whether one was found (OpenAI leaves it out)."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[:min(hits)], True) if hits else (text, False)


def _safe_length(text: str, markers: tuple[str, ...], tools: bool) -> int:
    """How much of a stream's text can be sent: not a tool call, nor what may become a stop string or a call."""
    if tools and OPEN_TAG in text:
        return text.find(OPEN_TAG)
    hold = 0
    for m in markers:
        for n in range(min(len(m) - 1, len(text)), 0, -1):
            if text.endswith(m[:n]):
                hold = max(hold, n)
                break
    return len(text) - hold


def _score(sampler: Sampler, prompt: list[int], ids: list[int]) -> tuple[list[float], list[list[tuple[int, float]]]]:
    """Each completion token's logprob and the top alternatives at its position, from one forward pass."""
    total = _bucket(len(prompt) + len(ids), 16)
    tokens_1T = np.full((1, total), sampler.pad_id, np.int32)
    tokens_1T[0, :len(prompt) + len(ids)] = prompt + ids
    width = _bucket(len(ids), 16)
    start = min(len(prompt) - 1, total - width)  # the window [start, start + width) lies inside the row
    chosen_G, top_v_GK, top_i_GK = _score_jit(sampler.graphdef, sampler.params, jnp.asarray(tokens_1T),
                                              jnp.int32(start), width=width, pad_id=sampler.pad_id)
    off = len(prompt) - 1 - start
    chosen_G, top_v_GK, top_i_GK = (np.asarray(x)[off:off + len(ids)] for x in (chosen_G, top_v_GK, top_i_GK))
    return chosen_G.tolist(), [list(zip(i.tolist(), v.tolist())) for i, v in zip(top_i_GK, top_v_GK)]


@functools.partial(jax.jit, static_argnums=0, static_argnames=("width", "pad_id"))
def _score_jit(graphdef, params, tokens_1T, start, *, width, pad_id):
    """Log-probs of the next tokens at positions [start, start + width), and the top MAX_TOP_LOGPROBS there."""
    model = nnx.merge(graphdef, params)
    positions_1T = jnp.arange(tokens_1T.shape[1])[None]
    h_1TD, _ = model.hidden(tokens_1T, positions_1T)
    h_GD = jax.lax.dynamic_slice_in_dim(h_1TD[0], start, width)
    logp_GV = jax.nn.log_softmax(model.logits(h_GD), axis=-1)
    next_T = jnp.concatenate([tokens_1T[0, 1:], jnp.full((1,), pad_id, tokens_1T.dtype)])
    targets_G = jax.lax.dynamic_slice_in_dim(next_T, start, width)
    chosen_G = jnp.take_along_axis(logp_GV, targets_G[:, None], axis=1)[:, 0]
    top_v_GK, top_i_GK = jax.lax.top_k(logp_GV, MAX_TOP_LOGPROBS)
    return chosen_G, top_v_GK, top_i_GK


# ---- HTTP ----------------------------------------------------------------------------------------


def make_app(engine: Engine):
    """The FastAPI app serving an Engine."""
    app = FastAPI(title="awmjax serve")

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": engine.model_id, "object": "model", "created": 0, "owned_by": "awmjax"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return JSONResponse(error_body("the request body is not valid JSON"), status_code=400)
        try:
            req = engine.parse(body)
        except RequestError as e:
            return JSONResponse(e.body(), status_code=e.status)
        if req.stream:
            return StreamingResponse(_sse(engine, req), media_type="text/event-stream")
        try:
            result = await asyncio.wrap_future(engine.submit(req).future)
        except RuntimeError as e:
            return JSONResponse(error_body(str(e), status=500), status_code=500)
        return JSONResponse(result)

    return app


async def _sse(engine: Engine, req: ChatRequest):
    """Server-sent events of one streamed completion, ending in `data: [DONE]`."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    job = engine.submit(req, push=lambda ev: loop.call_soon_threadsafe(events.put_nowait, ev))
    head = response_head(completion_id(), engine.model_id, "chat.completion.chunk")

    def chunk(delta: dict, finish: str | None = None, **extra) -> str:
        body = {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    try:
        yield chunk({"role": "assistant", "content": ""})
        while True:
            kind, *rest = await events.get()
            if kind == "content":
                yield chunk({"content": rest[0]})
            elif kind == "tool_calls":
                yield chunk({"tool_calls": [{"index": i, **c} for i, c in enumerate(rest[0])]})
            elif kind == "error":
                yield f"data: {json.dumps(error_body(rest[0], status=500))}\n\n"
                break
            else:
                finish, counts = rest
                yield chunk({}, finish)
                if req.include_usage:
                    yield f"data: {json.dumps({**head, 'choices': [], 'usage': counts})}\n\n"
                break
        yield "data: [DONE]\n\n"
    finally:
        job.cancelled.set()


class BackgroundServer:
    """`awmjax serve` in a thread of this process on a free loopback port (tests, notebooks)."""

    def __init__(self, engine: Engine, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        self.engine = engine
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.server = uvicorn.Server(uvicorn.Config(make_app(engine), log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, name="serve-http",
                                       daemon=True)

    @property
    def base_url(self) -> str:
        """The `base_url` for an OpenAI client."""
        host, port = self.sock.getsockname()[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> "BackgroundServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the awmjax server thread did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def load_engine(policy: str, *, model_id: str | None = None, dtype: str = "float32", **options: Any) -> Engine:
    """An Engine for a policy source (see awmjax.policy.load_policy)."""
    from pathlib import Path

    from awmjax.policy import load_policy

    model, config, tokenizer = load_policy(policy, dtype=dtype)
    name = model_id or (policy if policy in ("embedded", "tiny-random") else Path(policy).resolve().name)
    return Engine(model, config, tokenizer, model_id=name, **options)
