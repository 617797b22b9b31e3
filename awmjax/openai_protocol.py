"""The OpenAI chat-completions wire format for `awmjax serve`: requests validated, responses built.

`parse_chat_request` turns a request body into a `ChatRequest` (prompt token ids in the
ChatML tool format of awmjax/chat.py, sampling settings, tools) or raises `RequestError`
naming the bad field, which the server answers as HTTP 400 in OpenAI's error shape.
`assistant_message` reads the model's text as OpenAI `tool_calls` with the same parser
the rollouts use (awmjax/toolcall.py). Plain Python: no jax, no web framework.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from awmjax.chat import render_text, validate_tools
from awmjax.tokenizer import IM_END, IM_START, Tokenizer
from awmjax.toolcall import OPEN_TAG, parse_tool_calls

MAX_N, MAX_STOP, MAX_TOP_LOGPROBS = 16, 4, 20


class RequestError(ValueError):
    """A bad request: `param` names the field, the message says what is wrong and what to send."""

    def __init__(self, param: str | None, message: str, status: int = 400):
        super().__init__(message)
        self.param, self.status = param, status

    def body(self) -> dict[str, Any]:
        """OpenAI's error body."""
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": str(self), "type": kind, "param": self.param, "code": None}}


@dataclass(frozen=True)
class ChatRequest:
    """A validated chat-completion request, with its prompt as token ids."""

    prompt_ids: tuple[int, ...]
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    n: int = 1
    stop: tuple[str, ...] = ()
    seed: int | None = None
    stream: bool = False
    include_usage: bool = False
    logprobs: bool = False
    top_logprobs: int = 0
    tool_names: tuple[str, ...] | None = None  # None: the request offers no tools (or tool_choice "none")

    @property
    def batch_key(self) -> tuple:
        """Requests with equal keys can share one sampler call (seeded sampling runs alone, to be reproducible)."""
        if self.temperature == 0:
            return ("greedy", self.stop)
        return ("sample", self.temperature, self.top_p, self.top_k, self.stop, self.seed,
                id(self) if self.seed is not None else None)


def _number(body: dict, name: str, default, lo: float, hi: float, *, integer: bool = False, lo_open: bool = False):
    value = body.get(name, default)
    if value is None:
        return default
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise RequestError(name, f"{name} must be {'an integer' if integer else 'a number'}, got {json.dumps(value)}")
    if value < lo or value > hi or (lo_open and value == lo):
        low = f"> {lo:g}" if lo_open else f">= {lo:g}"
        raise RequestError(name, f"{name} must be {low} and <= {hi:g}, got {value}")
    return value


def _text(content: Any, where: str) -> str:
    """A message's content as text: a string, or a list of {"type": "text"} parts."""
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        parts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise RequestError(f"{where}[{i}]", f"{where}[{i}] must be a {{\"type\": \"text\", \"text\": ...}} part; "
                                   "this server reads text only")
            parts.append(part["text"])
        text = "".join(parts)
    else:
        raise RequestError(where, f"{where} must be a string or a list of text parts, got {type(content).__name__}")
    if IM_START in text or IM_END in text:
        raise RequestError(where, f"{where} holds the chat-format token text {IM_START} or {IM_END}; remove it")
    return text


def _messages(raw: Any) -> list[dict[str, Any]]:
    """The request's messages in the shape render_text reads."""
    if not isinstance(raw, list) or not raw:
        raise RequestError("messages", "messages must be a non-empty list of {\"role\", \"content\"} objects")
    out = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise RequestError(where, f"{where} must be an object with \"role\" and \"content\"")
        role = {"developer": "system"}.get(m.get("role"), m.get("role"))
        if role not in ("system", "user", "assistant", "tool"):
            raise RequestError(f"{where}.role", f"{where}.role is {json.dumps(m.get('role'))}; "
                               "allowed: system, developer, user, assistant, tool")
        if role == "assistant":
            calls = m.get("tool_calls") or []
            if not isinstance(calls, list):
                raise RequestError(f"{where}.tool_calls", f"{where}.tool_calls must be a list")
            parsed = []
            for j, call in enumerate(calls):
                fn = call.get("function") if isinstance(call, dict) else None
                if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                    raise RequestError(f"{where}.tool_calls[{j}]", f"{where}.tool_calls[{j}] must be "
                                       "{\"type\": \"function\", \"function\": {\"name\": ..., \"arguments\": \"{...}\"}}")
                args = fn.get("arguments") or "{}"
                try:
                    args = json.loads(args) if isinstance(args, str) else args
                except json.JSONDecodeError as e:
                    raise RequestError(f"{where}.tool_calls[{j}].function.arguments",
                                       f"{where}.tool_calls[{j}].function.arguments is not JSON ({e.msg})") from None
                if not isinstance(args, dict):
                    raise RequestError(f"{where}.tool_calls[{j}].function.arguments",
                                       f"{where}.tool_calls[{j}].function.arguments must be a JSON object")
                parsed.append({"name": fn["name"], "arguments": args})
            content = m.get("content")
            if content is None and not parsed:
                raise RequestError(f"{where}.content", f"{where} has neither content nor tool_calls")
            out.append({"role": role, "content": "" if content is None else _text(content, f"{where}.content"),
                        "tool_calls": parsed})
        else:
            if "content" not in m or m["content"] is None:
                raise RequestError(f"{where}.content", f"{where}.content is missing")
            out.append({"role": role, "content": _text(m["content"], f"{where}.content")})
    return out


def parse_chat_request(body: Any, tokenizer: Tokenizer, *, served_model: str, max_context: int,
                       default_max_tokens: int) -> ChatRequest:
    """Validate a /v1/chat/completions body into a ChatRequest; RequestError names the first bad field."""
    if not isinstance(body, dict):
        raise RequestError(None, "the request body must be a JSON object")
    model = body.get("model")
    if model != served_model:
        raise RequestError("model", f"model {json.dumps(model)} is not served here; use \"{served_model}\" "
                           "(GET /v1/models lists it)")
    for name in ("frequency_penalty", "presence_penalty"):
        if body.get(name) not in (None, 0, 0.0):
            raise RequestError(name, f"{name} is not supported by this server; leave it out or send 0")
    if body.get("logit_bias"):
        raise RequestError("logit_bias", "logit_bias is not supported by this server; leave it out")
    fmt = body.get("response_format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object")):
        raise RequestError("response_format", "response_format must be {\"type\": \"text\"} or {\"type\": \"json_object\"} "
                           "(json_object is not enforced: ask for JSON in the prompt)")
    messages = _messages(body.get("messages"))
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise RequestError("tools", "tools must be a list of {\"type\": \"function\", \"function\": {...}} objects")
    try:
        tools = validate_tools(tools)
    except ValueError as e:
        raise RequestError("tools", str(e)) from None
    choice = body.get("tool_choice", "auto")
    if choice not in (None, "auto", "none"):
        raise RequestError("tool_choice", f"tool_choice {json.dumps(choice)} is not supported; send \"auto\" or \"none\"")
    prompt = tokenizer.encode(render_text(messages, tools, add_generation_prompt=True))
    if len(prompt) >= max_context:
        raise RequestError("messages", f"the prompt is {len(prompt)} tokens but this server's context is {max_context} "
                           "(awmjax serve --max-context); shorten the conversation")
    room = max_context - len(prompt)
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = min(_number({name: limit}, name, default_max_tokens, 1, 1 << 30, integer=True), room)
    stop = body.get("stop")
    stop = [stop] if isinstance(stop, str) else (stop or [])
    if not isinstance(stop, list) or len(stop) > MAX_STOP or not all(isinstance(s, str) and s for s in stop):
        raise RequestError("stop", f"stop must be a non-empty string or a list of at most {MAX_STOP} of them")
    logprobs = body.get("logprobs") or False
    if not isinstance(logprobs, bool):
        raise RequestError("logprobs", "logprobs must be true or false")
    top = _number(body, "top_logprobs", 0, 0, MAX_TOP_LOGPROBS, integer=True)
    if top and not logprobs:
        raise RequestError("top_logprobs", "top_logprobs needs \"logprobs\": true")
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise RequestError("stream", "stream must be true or false")
    n = _number(body, "n", 1, 1, MAX_N, integer=True)
    if stream and (n > 1 or logprobs):
        raise RequestError("n" if n > 1 else "logprobs", "stream: true serves one choice without logprobs; "
                           "send n = 1 and no logprobs, or ask without streaming")
    options = body.get("stream_options") or {}
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise RequestError("seed", f"seed must be an integer, got {json.dumps(seed)}")
    return ChatRequest(
        prompt_ids=tuple(prompt), max_tokens=max_tokens,
        temperature=float(_number(body, "temperature", 1.0, 0.0, 2.0)),
        top_p=float(_number(body, "top_p", 1.0, 0.0, 1.0, lo_open=True)),
        top_k=_number(body, "top_k", 0, 0, 1 << 20, integer=True),  # an extension (vLLM's spelling)
        n=n, stop=tuple(stop), seed=seed, stream=stream, include_usage=bool(options.get("include_usage")),
        logprobs=logprobs, top_logprobs=top,
        tool_names=tuple(t["function"]["name"] for t in tools) if tools and choice != "none" else None,
    )


def assistant_message(text: str, tool_names: tuple[str, ...] | None) -> tuple[dict[str, Any], bool]:
    """(the OpenAI assistant message for the model's text, whether it calls tools).

    Calls are read only when tools were offered and every <tool_call> block parses; otherwise the
    text is returned as it is, so a client sees what the model wrote.
    """
    if tool_names is not None and OPEN_TAG in text:
        parsed = parse_tool_calls(text, "direct", tool_names)
        if parsed.calls and parsed.ok:
            calls = [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                      "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)}}
                     for c in parsed.calls]
            return {"role": "assistant", "content": text[: text.find(OPEN_TAG)].strip() or None, "tool_calls": calls}, True
    return {"role": "assistant", "content": text}, False


def completion_id() -> str:
    """A fresh chat-completion id."""
    return f"chatcmpl-{uuid.uuid4().hex}"


def response_head(cid: str, model: str, obj: str) -> dict[str, Any]:
    """The fields every response and chunk starts with."""
    return {"id": cid, "object": obj, "created": int(time.time()), "model": model, "system_fingerprint": None}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """OpenAI's usage object."""
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def error_body(message: str, param: str | None = None, status: int = 400) -> dict[str, Any]:
    """An OpenAI error body for a message."""
    return RequestError(param, message, status).body()
