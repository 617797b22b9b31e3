"""The ChatML tool-use format (Qwen3/Hermes), rendered straight to token ids, append-only.

A `Conversation` holds the token ids of one episode, a per-token trainable mask (1 only on tokens
the policy sampled, its closing <|im_end|> included), the sampler's logprobs of those tokens, and
the turn boundaries. Sampled ids are appended as they are and never re-tokenized, so what the
trainer scores is exactly what the sampler produced. `render_text` and `CHAT_TEMPLATE` spell the
same format as text, for debugging and for serving a saved policy with transformers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from awmjax.tokenizer import IM_END, IM_START, Tokenizer
from awmjax.toolcall import CALL_TOOL, LIST_TOOLS, SURFACES, format_tool_call

ROLES = ("system", "user", "assistant", "tool")
GENERATION_PROMPT = f"{IM_START}assistant\n"

_TOOLS_HEADER = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
_TOOLS_FOOTER = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n'
    "</tool_call>"
)

DEFAULT_SYSTEM_PROMPTS = {
    "direct": (
        "You are an agent acting inside a software environment backed by a database. Use the tools to "
        "complete the user's task. When the task is done, reply with a short summary and no tool call."
    ),
    "mcp": (
        "You are an agent acting inside an MCP environment backed by a database. Call list_tools once to "
        "see the environment's tools, then run them with call_tool, one call per turn. When the task is "
        "done, reply with a short summary and no tool call."
    ),
}

MCP_META_TOOLS = (
    {
        "type": "function",
        "function": {
            "name": LIST_TOOLS,
            "description": "List this environment's tools with their descriptions and parameters.",
            "parameters": {"type": "object", "properties": {}, "required": []},
        },
    },
    {
        "type": "function",
        "function": {
            "name": CALL_TOOL,
            "description": "Call one of this environment's tools by name and return its result.",
            "parameters": {
                "type": "object",
                "properties": {
                    "tool_name": {"type": "string", "description": "The tool's name, as list_tools shows it."},
                    "arguments": {
                        "type": "string",
                        "description": (
                            "The tool's arguments: a JSON object written as a string; \"{}\" if it takes none."
                        ),
                    },
                },
                "required": ["tool_name", "arguments"],
            },
        },
    },
)


def validate_tools(tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Check tools are OpenAI function specs with distinct names; return them as plain dicts."""
    seen: set[str] = set()
    out = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(tool, Mapping) or tool.get("type") != "function" or not isinstance(fn, Mapping):
            raise ValueError(
                f"tools[{i}] is not in the OpenAI function shape; write "
                '{"type": "function", "function": {"name": ..., "description": ..., "parameters": {...}}}'
            )
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"tools[{i}].function.name is missing or not a string; give every tool a name")
        if name in seen:
            raise ValueError(f"tools[{i}]: the tool name {name!r} appears twice; tool names must be distinct")
        if not isinstance(fn.get("parameters", {}), Mapping):
            raise ValueError(f"tools[{i}] ({name}): parameters must be a JSON-schema object")
        seen.add(name)
        out.append(json.loads(json.dumps(tool)))
    return out


# JSON-Schema keywords that only constrain values: the pool still validates arguments with
# them, but a "lean" listing leaves them out of the prompt (types, enums, required remain)
_VALUE_CONSTRAINTS = frozenset({
    "additionalProperties", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "minLength", "maxLength", "pattern", "format", "minItems", "maxItems", "uniqueItems"})


def lean_schema(schema: Any) -> Any:
    """A JSON Schema without its value constraints (property names are left alone)."""
    if not isinstance(schema, Mapping):
        return schema
    out = {}
    for key, value in schema.items():
        if key in _VALUE_CONSTRAINTS:
            continue
        if key == "properties" and isinstance(value, Mapping):
            out[key] = {name: lean_schema(sub) for name, sub in value.items()}
        elif key == "items":
            out[key] = lean_schema(value)
        elif key in ("anyOf", "oneOf", "allOf") and isinstance(value, list):
            out[key] = [lean_schema(sub) for sub in value]
        else:
            out[key] = value
    return out


def lean_tools(tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI-shaped tools with lean parameter schemas (shorter prompts, same calls)."""
    return [{"type": "function", "function": {**t["function"], "parameters": lean_schema(t["function"].get("parameters", {}))}}
            for t in validate_tools(tools)]


def brief_type(schema: Any) -> Any:
    """One parameter of a "brief" listing: its enum values, or its type ("array of integer")."""
    if not isinstance(schema, Mapping):
        return "any"
    if "enum" in schema:
        return list(schema["enum"])
    kind = schema.get("type", "any")
    if isinstance(kind, list):
        kind = " or ".join(str(k) for k in kind)
    if kind == "array" and isinstance(schema.get("items"), Mapping):
        inner = brief_type(schema["items"])
        return f"array of {inner}" if isinstance(inner, str) else f"array of one of {inner}"
    return kind


def brief_tools(tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The "brief" listing: per tool its name, description, each parameter's type (or enum values)
    and the required names; no OpenAI wrapper and no parameter descriptions (about half the
    tokens of the lean listing; the calls are checked against the full schema all the same)."""
    out = []
    for t in validate_tools(tools):
        f = t["function"]
        params = f.get("parameters") or {}
        out.append({"name": f["name"], "description": f.get("description", ""),
                    "parameters": {k: brief_type(v) for k, v in (params.get("properties") or {}).items()},
                    "required": list(params.get("required") or [])})
    return out


# the direct surface's tool listings besides "full" (the OpenAI specs as they are)
_LISTINGS = {"lean": lean_tools, "brief": brief_tools}
TOOL_SCHEMAS = ("full", *_LISTINGS)


def surface_tools(tools: Sequence[Mapping[str, Any]], surface: str) -> list[dict[str, Any]]:
    """The tools the policy sees: all of them (direct) or AWM's two meta-tools (mcp)."""
    if surface not in SURFACES:
        raise ValueError(f"surface={surface!r}; allowed: {', '.join(SURFACES)}")
    env_tools = validate_tools(tools)
    return env_tools if surface == "direct" else [json.loads(json.dumps(t)) for t in MCP_META_TOOLS]


def tool_names(tools: Sequence[Mapping[str, Any]]) -> list[str]:
    """The names of OpenAI-shaped tools, in order."""
    return [t["function"]["name"] for t in validate_tools(tools)]


def list_tools_response(tools: Sequence[Mapping[str, Any]]) -> str:
    """The text an mcp-surface environment returns for list_tools: one function spec per line."""
    return "\n".join(json.dumps(t["function"], ensure_ascii=False) for t in validate_tools(tools))


def system_content(system_prompt: str, tools: Sequence[Mapping[str, Any]]) -> str:
    """The system turn's text: the prompt, then the tools inside <tools></tools> (Qwen3's layout)."""
    if not tools:
        return system_prompt
    head = f"{system_prompt}\n\n" if system_prompt else ""
    specs = "".join("\n" + json.dumps(t, ensure_ascii=False) for t in tools)
    return head + _TOOLS_HEADER + specs + _TOOLS_FOOTER


def assistant_content(content: str = "", tool_calls: Sequence[Mapping[str, Any]] = ()) -> str:
    """An assistant turn's text: free text, then one <tool_call> block per call, newline-separated."""
    parts = [content] if content else []
    for call in tool_calls:
        call = call.get("function", call)
        arguments = call.get("arguments") or {}
        if isinstance(arguments, str):
            arguments = json.loads(arguments)
        parts.append(format_tool_call(call["name"], arguments))
    return "\n".join(parts)


def tool_responses_content(results: Sequence[str]) -> str:
    """A tool-results user turn's text: one <tool_response> block per result (without the role)."""
    return "".join(f"\n<tool_response>\n{r}\n</tool_response>" for r in results)


def render_text(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] = (),
    *,
    add_generation_prompt: bool = False,
) -> str:
    """The whole conversation as text; messages use roles system/user/assistant(+tool_calls)/tool."""
    messages = list(messages)
    system = ""
    if messages and messages[0]["role"] == "system":
        system, messages = messages[0]["content"], messages[1:]
    out = []
    if tools or system:
        out.append(f"{IM_START}system\n{system_content(system, tools)}{IM_END}\n")
    pending: list[str] = []
    for i, msg in enumerate(messages):
        role = msg["role"]
        if role not in ROLES:
            raise ValueError(f"messages[{i}].role={role!r}; allowed: {', '.join(ROLES)}")
        if role == "tool":
            pending.append(msg["content"])
            if i + 1 == len(messages) or messages[i + 1]["role"] != "tool":
                out.append(f"{IM_START}user{tool_responses_content(pending)}{IM_END}\n")
                pending = []
        elif role == "assistant":
            text = assistant_content(msg.get("content") or "", msg.get("tool_calls") or ())
            out.append(f"{GENERATION_PROMPT}{text}{IM_END}\n")
        else:
            out.append(f"{IM_START}{role}\n{msg['content']}{IM_END}\n")
    if add_generation_prompt:
        out.append(GENERATION_PROMPT)
    return "".join(out)


# The same format as a Jinja chat template (transformers' apply_chat_template), written into saved
# policy directories so that a served checkpoint sees exactly the text it was trained on.
CHAT_TEMPLATE = (
    "{%- if messages and messages[0].role == 'system' %}{%- set system = messages[0].content %}"
    "{%- set rest = messages[1:] %}{%- else %}{%- set system = '' %}{%- set rest = messages %}{%- endif %}"
    "{%- if tools %}{{- '<|im_start|>system\\n' }}{%- if system %}{{- system + '\\n\\n' }}{%- endif %}"
    "{{- " + json.dumps(_TOOLS_HEADER) + " }}"
    "{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}"
    "{{- " + json.dumps(_TOOLS_FOOTER) + " }}{{- '<|im_end|>\\n' }}"
    "{%- elif system %}{{- '<|im_start|>system\\n' + system + '<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in rest %}"
    "{%- if message.role == 'assistant' %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if message.content %}{{- message.content }}{%- endif %}"
    "{%- for call in message.tool_calls or [] %}"
    "{%- if call.function is defined %}{%- set call = call.function %}{%- endif %}"
    "{%- if not loop.first or message.content %}{{- '\\n' }}{%- endif %}"
    "{{- '<tool_call>\\n{\"name\": ' }}{{- call.name | tojson }}{{- ', \"arguments\": ' }}"
    "{%- if call.arguments is string %}{{- call.arguments }}"
    "{%- else %}{{- (call.arguments or {}) | tojson }}{%- endif %}"
    "{{- '}\\n</tool_call>' }}{%- endfor %}{{- '<|im_end|>\\n' }}"
    "{%- elif message.role == 'tool' %}"
    "{%- if loop.first or rest[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}"
    "{%- if loop.last or rest[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- else %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


@dataclass(frozen=True)
class ChatConfig:
    """How episodes are rendered: the tool surface and the system prompt (None: the surface's default)."""

    surface: str = "direct"
    system_prompt: str | None = None
    # how the direct surface lists tools: "full" (OpenAI specs), "lean" (without value
    # constraints, see lean_schema) or "brief" (name, description, parameter types; brief_tools)
    tool_schema: str = "full"

    def __post_init__(self):
        if self.surface not in SURFACES:
            raise ValueError(f"ChatConfig.surface={self.surface!r}; allowed: {', '.join(SURFACES)}")
        if self.tool_schema not in TOOL_SCHEMAS:
            raise ValueError(f"ChatConfig.tool_schema={self.tool_schema!r}; allowed: {', '.join(TOOL_SCHEMAS)}")
        if self.system_prompt is not None and not isinstance(self.system_prompt, str):
            raise ValueError("ChatConfig.system_prompt must be a string or None (None uses the surface's default)")

    @property
    def resolved_system_prompt(self) -> str:
        """The system prompt in effect."""
        return DEFAULT_SYSTEM_PROMPTS[self.surface] if self.system_prompt is None else self.system_prompt


@dataclass(frozen=True)
class Turn:
    """One turn's span [start, end) in the conversation's ids; finished: the policy closed it itself."""

    role: str
    start: int
    end: int
    finished: bool = True

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"Turn.role={self.role!r}; allowed: {', '.join(ROLES)}")
        if not 0 <= self.start <= self.end:
            raise ValueError(f"Turn span [{self.start}, {self.end}) is not a valid range")


class Conversation:
    """One episode's token ids, trainable mask, logprobs and turn boundaries; it only grows."""

    def __init__(self, tokenizer: Tokenizer, config: ChatConfig, tools: Sequence[Mapping[str, Any]] = ()):
        self.tokenizer = tokenizer
        self.config = config
        self.tools = validate_tools(tools)
        self.visible_tools = surface_tools(self.tools, config.surface)
        if config.surface == "direct" and config.tool_schema in _LISTINGS:
            self.visible_tools = _LISTINGS[config.tool_schema](self.visible_tools)
        self._ids: list[int] = []
        self._mask: list[int] = []
        self._logprobs: list[float] = []
        self.turns: list[Turn] = []
        self._im_start = tokenizer.im_start_id
        self._im_end = tokenizer.im_end_id
        self._newline = tokenizer.encode("\n", allow_special=False)
        self._generation_prompt = [self._im_start, *tokenizer.encode("assistant\n", allow_special=False)]

    @classmethod
    def start(
        cls,
        tokenizer: Tokenizer,
        task: str,
        tools: Sequence[Mapping[str, Any]] = (),
        config: ChatConfig = ChatConfig(),
    ) -> Conversation:
        """A conversation holding the system turn (prompt and tools) and the user's task."""
        conv = cls(tokenizer, config, tools)
        conv._append_turn("system", system_content(config.resolved_system_prompt, conv.visible_tools))
        conv._append_turn("user", task)
        return conv

    # ---- reading ------------------------------------------------------------------------------

    @property
    def ids(self) -> tuple[int, ...]:
        """All token ids so far."""
        return tuple(self._ids)

    @property
    def mask(self) -> tuple[int, ...]:
        """Per-token 1 where the policy wrote the token (trainable), else 0."""
        return tuple(self._mask)

    @property
    def logprobs(self) -> tuple[float, ...]:
        """Per-token sampler logprob where the policy wrote the token, else 0.0."""
        return tuple(self._logprobs)

    def __len__(self) -> int:
        return len(self._ids)

    def prompt_ids(self) -> list[int]:
        """The ids to sample the next assistant turn from: everything so far plus `<|im_start|>assistant\\n`."""
        return self._ids + self._generation_prompt

    def turn_ids(self, turn: Turn) -> list[int]:
        """The ids of one turn."""
        return self._ids[turn.start : turn.end]

    def assistant_text(self, turn: Turn) -> str:
        """What the policy wrote in an assistant turn, without the header and closing token."""
        if turn.role != "assistant":
            raise ValueError(f"assistant_text needs an assistant turn, got a {turn.role} turn")
        body = [i for i, m in zip(self._ids[turn.start : turn.end], self._mask[turn.start : turn.end]) if m]
        if body and body[-1] == self._im_end:
            body = body[:-1]
        return self.tokenizer.decode(body)

    def render_text(self) -> str:
        """The conversation's ids decoded, special tokens included (for reading, never for training)."""
        return self.tokenizer.decode(self._ids)

    # ---- appending ----------------------------------------------------------------------------

    def append_assistant(self, token_ids: Sequence[int], logprobs: Sequence[float] | None = None) -> Turn:
        """Append a sampled turn as is; if it does not end in <|im_end|>, close it (untrainably)."""
        token_ids = [int(t) for t in token_ids]
        if logprobs is not None and len(logprobs) != len(token_ids):
            raise ValueError(f"append_assistant got {len(token_ids)} token ids but {len(logprobs)} logprobs")
        if self._im_end in token_ids[:-1]:
            raise ValueError(
                f"sampled ids hold <|im_end|> before their last position ({token_ids.index(self._im_end)}); "
                "stop sampling at <|im_end|> (pass tokenizer.stop_token_ids to the sampler)"
            )
        start = len(self._ids)
        self._extend(self._generation_prompt, trainable=False)
        self._extend(token_ids, trainable=True, logprobs=logprobs)
        finished = bool(token_ids) and token_ids[-1] in self.tokenizer.stop_token_ids
        if not token_ids or token_ids[-1] != self._im_end:
            self._extend([self._im_end], trainable=False)
        self._extend(self._newline, trainable=False)
        return self._record(Turn("assistant", start, len(self._ids), finished))

    def append_tool_responses(self, results: Sequence[str]) -> Turn:
        """Append one user turn holding a <tool_response> block per result, in call order."""
        if isinstance(results, str) or not results:
            raise ValueError("append_tool_responses needs a non-empty list of result strings, one per call")
        start = len(self._ids)
        self._extend([self._im_start], trainable=False)
        body = self.tokenizer.encode("user" + tool_responses_content(results), allow_special=False)
        self._extend(body, trainable=False)
        self._extend([self._im_end, *self._newline], trainable=False)
        return self._record(Turn("tool", start, len(self._ids)))

    def append_user(self, text: str) -> Turn:
        """Append a plain user turn (a follow-up message or a nudge)."""
        return self._append_turn("user", text)

    def messages(self) -> list[dict[str, str]]:
        """The turns as {"role", "content"} text, for logs and LLM judges."""
        out = []
        for turn in self.turns:
            if turn.role == "assistant":
                out.append({"role": "assistant", "content": self.assistant_text(turn)})
                continue
            # between <|im_start|> and <|im_end|>: "role\ncontent", or "user" + <tool_response> blocks
            inner = self.tokenizer.decode(self._ids[turn.start + 1 : turn.end - 1 - len(self._newline)])
            if turn.role == "tool":
                out.append({"role": "tool", "content": inner[len("user") :].lstrip("\n")})
            else:
                out.append({"role": turn.role, "content": inner.partition("\n")[2]})
        return out

    def pinned_turns(self) -> list[int]:
        """Turns every history-limited context keeps: system, task and, on the mcp surface, the first
        step (the policy's list_tools call and the listing; the pool makes any other first call a
        format error that ends the episode)."""
        keep = [0, 1]
        steps = [i for i, t in enumerate(self.turns) if t.role == "assistant"]
        if self.config.surface == "mcp" and steps:
            keep += range(steps[0], steps[1] if len(steps) > 1 else len(self.turns))
        return keep

    def context_turns(self, before: int, window: int | None) -> list[int]:
        """The turns the policy sees when writing turn `before` under history limit `window` (AWM's HL):
        the pinned turns and the last `window` steps (assistant turn + tool response); None keeps all.
        Inference (`history_prompt`) and training (`history_sample`) both read this one rule."""
        if window is not None and window < 1:
            raise ValueError(f"window={window}; it must be at least 1 (or None for the full history)")
        steps = [i for i in range(before) if self.turns[i].role == "assistant"]
        if window is None or len(steps) <= window:
            return list(range(before))
        recent = set(range(steps[-window], before))
        return sorted(recent.union(i for i in self.pinned_turns() if i < before))

    def history_prompt_ids(self, window: int | None) -> list[int]:
        """The prompt for the next assistant turn under history limit `window` (None: everything)."""
        ids = []
        for i in self.context_turns(len(self.turns), window):
            ids += self._ids[self.turns[i].start : self.turns[i].end]
        return ids + self._generation_prompt

    def history_sample(self, assistant_index: int, window: int) -> tuple[list[int], list[int], list[float]]:
        """Ids, mask and logprobs of a history-limited sample: the context the policy saw when it wrote
        the given assistant turn (`context_turns`), then that turn, the only trainable one."""
        positions = [i for i, t in enumerate(self.turns) if t.role == "assistant"]
        if not -len(positions) <= assistant_index < len(positions):
            raise ValueError(
                f"assistant_index={assistant_index}, but the conversation has {len(positions)} assistant turns"
            )
        target = positions[assistant_index]
        ids, mask, logprobs = [], [], []
        for i in [*self.context_turns(target, window), target]:
            turn = self.turns[i]
            ids += self._ids[turn.start : turn.end]
            keep = i == target
            mask += self._mask[turn.start : turn.end] if keep else [0] * (turn.end - turn.start)
            logprobs += self._logprobs[turn.start : turn.end] if keep else [0.0] * (turn.end - turn.start)
        return ids, mask, logprobs

    def _append_turn(self, role: str, content: str) -> Turn:
        # The role and content are encoded as one piece so ids equal tokenizing the full text; special
        # token text inside content (a tool result, a task) stays plain text and cannot forge a turn.
        start = len(self._ids)
        self._extend([self._im_start], trainable=False)
        self._extend(self.tokenizer.encode(f"{role}\n{content}", allow_special=False), trainable=False)
        self._extend([self._im_end, *self._newline], trainable=False)
        return self._record(Turn(role, start, len(self._ids)))

    def _extend(self, ids: Sequence[int], *, trainable: bool, logprobs: Sequence[float] | None = None) -> None:
        self._ids.extend(ids)
        self._mask.extend([int(trainable)] * len(ids))
        self._logprobs.extend([float(x) for x in logprobs] if logprobs is not None else [0.0] * len(ids))

    def _record(self, turn: Turn) -> Turn:
        self.turns.append(turn)
        return turn
