"""A tiny OpenAI-compatible HTTP server that answers from a script, for endpoint tests.

    with ReplayServer(['{"label": "completed"}', Reply(delay=2.0), Reply(status=500)]) as srv:
        client = openai.AsyncOpenAI(base_url=srv.base_url, api_key="none")
        ...
        assert len(srv.requests) == 3

Each POST /v1/chat/completions takes the next script entry, in arrival order:
- a str: the assistant message's content;
- a `Reply`: content and/or tool_calls, an HTTP status (an error body in OpenAI's shape
  when it is not 200), a delay before answering (for client timeouts), a raw body (for
  garbage that is not JSON), usage counts, a finish reason;
- a callable(request_json) -> str | Reply: decide from the request (concurrent callers).
When the script runs out the server answers 500 naming the call count, so a test that
makes more calls than it scripted fails loudly. GET /v1/models lists `model`;
POST /v1/embeddings answers with `embed(texts) -> vectors` when given, else 404 (an
endpoint without embeddings). `stream: true` gets the content as SSE chunks.
Every parsed request body is kept in `requests` (and its path in `paths`).

Standard library only; it runs in a thread of the test process on a free loopback port.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Sequence, Union


@dataclass(frozen=True)
class Reply:
    """One scripted answer (see the module docstring)."""

    content: str | None = ""
    tool_calls: Sequence[dict[str, Any]] = ()  # [{"name": ..., "arguments": {...} or "json"}]
    status: int = 200
    delay: float = 0.0
    body: str | None = None  # sent as is instead of a completion (status still applies)
    usage: dict[str, int] | None = None
    finish_reason: str | None = None  # default: "tool_calls" with calls, else "stop"


Entry = Union[str, Reply, Callable[[dict], Union[str, Reply]]]


def _words(text: Any) -> int:
    return len(str(text or "").split())


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _send(self, status: int, body: str, content_type: str = "application/json") -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
            self.close_connection = True

    def _error(self, status: int, message: str) -> None:
        self._send(status, json.dumps({"error": {"message": message, "type": "replay_error", "param": None, "code": None}}))

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            model = {"id": self.server.replay.model, "object": "model", "created": 0, "owned_by": "replay"}
            self._send(200, json.dumps({"object": "list", "data": [model]}))
        else:
            self._error(404, f"no route GET {self.path}")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            request = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            self._error(400, "the request body is not JSON")
            return
        replay = self.server.replay
        with replay.lock:
            replay.requests.append(request)
            replay.paths.append(self.path)
        if self.path.rstrip("/").endswith("/embeddings"):
            self._embeddings(request)
        elif self.path.rstrip("/").endswith("/chat/completions"):
            self._chat(request)
        else:
            self._error(404, f"no route POST {self.path}")

    def _embeddings(self, request: dict) -> None:
        embed = self.server.replay.embed
        if embed is None:
            self._error(404, "this replay server serves no embeddings")
            return
        texts = request.get("input")
        texts = [texts] if isinstance(texts, str) else list(texts or [])
        data = [{"object": "embedding", "index": i, "embedding": list(map(float, v))} for i, v in enumerate(embed(texts))]
        tokens = sum(_words(t) for t in texts)
        self._send(200, json.dumps({"object": "list", "data": data, "model": request.get("model", ""),
                                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}))

    def _chat(self, request: dict) -> None:
        replay = self.server.replay
        with replay.lock:
            index = replay.served
            replay.served += 1
            entry = replay.script[index] if index < len(replay.script) else None
        if entry is None:
            self._error(500, f"replay script exhausted: call {index + 1} but only {len(replay.script)} scripted")
            return
        reply = entry(request) if callable(entry) else entry
        if isinstance(reply, str):
            reply = Reply(content=reply)
        if reply.delay:
            time.sleep(reply.delay)
        if reply.body is not None:
            self._send(reply.status, reply.body)
            return
        if reply.status != 200:
            self._error(reply.status, f"scripted HTTP {reply.status} (call {index + 1})")
            return
        calls = [
            {"id": f"call_{index}_{i}", "type": "function",
             "function": {"name": c["name"], "arguments": c["arguments"] if isinstance(c.get("arguments"), str)
                          else json.dumps(c.get("arguments") or {})}}
            for i, c in enumerate(reply.tool_calls)
        ]
        finish = reply.finish_reason or ("tool_calls" if calls else "stop")
        prompt_tokens = sum(_words(m.get("content")) for m in request.get("messages", []) if isinstance(m, dict))
        usage = reply.usage or {"prompt_tokens": prompt_tokens, "completion_tokens": _words(reply.content),
                                "total_tokens": prompt_tokens + _words(reply.content)}
        head = {"id": f"replay-{index}", "created": int(time.time()), "model": request.get("model", replay.model)}
        if request.get("stream"):
            self._stream(head, reply.content or "", calls, finish, usage)
            return
        message = {"role": "assistant", "content": reply.content}
        if calls:
            message["tool_calls"] = calls
        body = {**head, "object": "chat.completion", "usage": usage,
                "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}]}
        self._send(200, json.dumps(body))

    def _stream(self, head: dict, content: str, calls: list[dict], finish: str, usage: dict) -> None:
        deltas: list[dict] = [{"role": "assistant", "content": ""}]
        deltas += [{"content": content[i:i + 8]} for i in range(0, len(content), 8)]
        deltas += [{"tool_calls": [{"index": i, **c}]} for i, c in enumerate(calls)]
        chunks = [{**head, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": d, "finish_reason": None}]}
                  for d in deltas]
        chunks.append({**head, "object": "chat.completion.chunk", "usage": usage,
                       "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        self._send(200, "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n", "text/event-stream")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a handler sleeping through a scripted delay must not hold up shutdown
    replay: "ReplayServer"


class ReplayServer:
    """An OpenAI-compatible endpoint on 127.0.0.1 answering chat completions from `script`."""

    def __init__(self, script: Sequence[Entry] = (), *, model: str = "replay",
                 embed: Callable[[list[str]], Sequence[Sequence[float]]] | None = None):
        self.script: list[Entry] = list(script)
        self.model = model
        self.embed = embed
        self.requests: list[dict] = []
        self.paths: list[str] = []
        self.served = 0
        self.lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def add(self, *entries: Entry) -> None:
        """Append entries to the script (also while serving)."""
        with self.lock:
            self.script.extend(entries)

    @property
    def base_url(self) -> str:
        """The `base_url` for an OpenAI client, ending in /v1."""
        if self._server is None:
            raise RuntimeError("ReplayServer is not started; use it as a context manager or call start()")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> "ReplayServer":
        """Serve on a free loopback port in a daemon thread."""
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.replay = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="replay-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "ReplayServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
