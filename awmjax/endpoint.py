"""A policy served by any OpenAI-compatible endpoint (vLLM, `awmjax serve`, a hosted GPT-class model).

`EndpointPolicy` plugs into the rollout like the local sampler: it receives the same
token-id prompts, turns them back into chat messages (the system prompt and the tools
as the `tools` parameter, assistant tool calls as `tool_calls`, tool responses as
`tool` messages), asks the endpoint for the next assistant message, and writes the
answer back in awmjax's chat format (free text, then `<tool_call>` blocks) as token ids.
So the evaluation harness measures a served model on exactly the worlds, surfaces and
history limits it measures a local one on. Log-probabilities are not requested (they
are not needed for evaluation); they are recorded as 0.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import time
from typing import Any, Sequence

from awmjax.chat import assistant_content
from awmjax.sampler import Generation
from awmjax.sampling import SamplingConfig
from awmjax.toolcall import parse_tool_calls

_TURN = re.compile(r"<\|im_start\|>(\w+)\n(.*?)(?:<\|im_end\|>\n?|$)", re.S)
_TOOLS = re.compile(r"<tools>\n(.*?)\n</tools>", re.S)
_RESPONSE = re.compile(r"<tool_response>\n(.*?)\n</tool_response>", re.S)


class EndpointError(RuntimeError):
    """The endpoint could not be reached or kept failing; the message names the URL and the fix."""


def chatml_to_messages(text: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(messages, tools) of a ChatML prompt rendered by awmjax.chat (the trailing open
    assistant header, if any, is dropped)."""
    messages: list[dict[str, Any]] = []
    tools: list[dict[str, Any]] = []
    pending_ids: list[str] = []
    n_calls = 0
    for role, body in _TURN.findall(text):
        if role == "system":
            m = _TOOLS.search(body)
            if m:
                tools = [json.loads(line) for line in m.group(1).splitlines() if line.strip()]
                body = body[: body.find("# Tools")].rstrip() if "# Tools" in body else body[: m.start()].rstrip()
            messages.append({"role": "system", "content": body})
        elif role == "assistant":
            if not body and not text.rstrip().endswith("<|im_end|>"):
                continue  # the open generation prompt at the end
            parsed = parse_tool_calls(body)
            calls = list(parsed.calls)
            content = parsed.text.strip()
            msg: dict[str, Any] = {"role": "assistant", "content": content or None}
            if calls:
                pending_ids = []
                msg["tool_calls"] = []
                for c in calls:
                    n_calls += 1
                    pending_ids.append(f"call_{n_calls}")
                    msg["tool_calls"].append({"id": pending_ids[-1], "type": "function",
                                              "function": {"name": c.name, "arguments": json.dumps(c.arguments)}})
            messages.append(msg)
        elif role == "user" and body.lstrip().startswith("<tool_response>"):
            for i, result in enumerate(_RESPONSE.findall(body)):
                call_id = pending_ids[i] if i < len(pending_ids) else f"call_{n_calls}_{i}"
                messages.append({"role": "tool", "tool_call_id": call_id, "content": result})
        else:
            messages.append({"role": role, "content": body})
    return messages, tools


class EndpointPolicy:
    """The rollout's Policy over an OpenAI-compatible chat-completions endpoint."""

    def __init__(self, tokenizer, base_url: str, model: str, *, api_key: str | None = None, timeout: float = 120.0,
                 retries: int = 3, concurrency: int = 8):
        from openai import OpenAI

        self.tokenizer = tokenizer
        self.base_url, self.model = base_url, model
        self.retries, self.concurrency = retries, concurrency
        self.client = OpenAI(base_url=base_url, api_key=api_key or os.environ.get("OPENAI_API_KEY") or "none",
                             timeout=timeout, max_retries=0)

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig, *,
                 budgets: Sequence[int] | None = None) -> list[Generation]:
        budgets = budgets or [sampling.max_new_tokens] * len(prompts)
        with concurrent.futures.ThreadPoolExecutor(max_workers=self.concurrency) as ex:
            texts = list(ex.map(lambda pb: self._complete(pb[0], sampling, pb[1]), zip(prompts, budgets)))
        out = []
        for text in texts:
            ids = self.tokenizer.encode(text, allow_special=False) + [self.tokenizer.im_end_id]
            zeros = [0.0] * len(ids)
            out.append(Generation(ids, zeros, zeros, "stop"))
        return out

    def _complete(self, prompt: Sequence[int], sampling: SamplingConfig, budget: int) -> str:
        import openai

        messages, tools = chatml_to_messages(self.tokenizer.decode(list(prompt)))
        request: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": int(budget),
                                   "temperature": sampling.temperature, "seed": sampling.seed}
        if sampling.top_p < 1.0:
            request["top_p"] = sampling.top_p
        if tools:
            request["tools"] = tools
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                msg = self.client.chat.completions.create(**request).choices[0].message
                return _assistant_text(msg.content or "", [(c.function.name, c.function.arguments or "{}")
                                                           for c in (msg.tool_calls or [])])
            except (openai.APIConnectionError, openai.APITimeoutError, openai.RateLimitError,
                    openai.InternalServerError) as e:
                last = e
                time.sleep(min(2.0**attempt * 0.5, 8.0))
            except openai.APIStatusError as e:  # a request the server refuses will not improve by retrying
                raise EndpointError(f"endpoint {self.base_url} refused the request for model {self.model!r}: "
                                    f"{e.status_code} {e.message}; check --model and the server's logs") from None
        raise EndpointError(f"endpoint {self.base_url} failed {self.retries + 1} times ({type(last).__name__}: {last}); "
                            "check that the server is up and --base-url points at its /v1")


def _assistant_text(content: str, calls: list[tuple[str, str]]) -> str:
    """The endpoint's message in awmjax's chat format. Arguments that are not a JSON object are
    written as sent, so the pool reports them as the format error they are."""
    parts = [content] if content else []
    for name, arguments in calls:
        try:
            parsed = json.loads(arguments)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            parts.append(assistant_content("", [{"name": name, "arguments": parsed}]))
        else:
            parts.append(f'<tool_call>\n{{"name": {json.dumps(name)}, "arguments": {arguments}}}\n</tool_call>')
    return "\n".join(parts)
