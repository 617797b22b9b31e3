"""Batched multi-turn episodes: the policy writes a turn, the pool runs its tool call, repeat.

An episode ends when the policy answers without a tool call (then the code verdict
judges it), makes a format error, meets an environment error, or hits the turn or
context limit. Token ids are produced once: the policy's sampled ids go into the
conversation unchanged, and tool responses are appended as tokens, so the training
batch reads exactly what the sampler wrote.

History limit w (AWM's HL): the prompt the policy sees holds the system turn, the
task, on the mcp surface the tool-listing exchange, and only the last w steps
(assistant turn + tool response). The same rule builds the training samples
(`Conversation.context_turns`, read by `history_prompt` here and by
`Conversation.history_sample` in training, so a training sample holds exactly the
prompt its turn was sampled from).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from awmjax.chat import TOOL_SCHEMAS, ChatConfig, Conversation, surface_tools
from awmjax.constrain import CallConstraint, call_grammar
from awmjax.sampling import SamplingConfig
from awmjax.tokenizer import Tokenizer

EPISODE_OUTCOMES = ("complete", "partial", "incomplete", "format_error", "env_error")


class Policy(Protocol):
    """Anything that completes token-id prompts: the jitted Sampler, an endpoint, a script."""

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig, *, budgets: Sequence[int] | None = None) -> list:
        ...


@dataclass(frozen=True)
class RolloutConfig:
    """Limits and the tool surface of episodes."""

    max_turns: int = 20
    max_context: int = 4096  # prompt + new tokens of one turn
    max_new_tokens: int = 256  # per turn
    history_window: int | None = 3  # None: full history
    surface: str = "direct"
    system_prompt: str | None = None
    tool_schema: str = "full"  # "lean": no value constraints; "brief": names, types, descriptions (chat.ChatConfig)
    observation_chars: int = 16_000  # a tool result longer than this is cut, with a marker saying so
    # decode tool calls under the tools' JSON schemas (constrain.py): a call names a listed tool
    # with arguments its schema accepts; free-text answers are untouched. awmjax sampler only.
    constrain_calls: bool = False

    def __post_init__(self):
        if self.max_turns < 1:
            raise ValueError(f"RolloutConfig.max_turns must be >= 1, got {self.max_turns}")
        if self.history_window is not None and self.history_window < 1:
            raise ValueError(f"RolloutConfig.history_window must be >= 1 or None, got {self.history_window}")
        if self.surface not in ("direct", "mcp"):
            raise ValueError(f"RolloutConfig.surface={self.surface!r}; allowed: direct, mcp")
        if self.observation_chars < 100:
            raise ValueError(f"RolloutConfig.observation_chars must be >= 100, got {self.observation_chars}")
        if self.tool_schema not in TOOL_SCHEMAS:
            raise ValueError(f"RolloutConfig.tool_schema={self.tool_schema!r}; allowed: {', '.join(TOOL_SCHEMAS)}")
        if self.max_new_tokens >= self.max_context:
            raise ValueError(f"RolloutConfig.max_new_tokens ({self.max_new_tokens}) must be below max_context ({self.max_context})")


@dataclass
class EpisodeResult:
    """One finished episode: what was said, what happened, and how it was judged."""

    world_id: str
    task_id: str
    group: int
    conversation: Conversation
    outcome: str = "incomplete"  # one of EPISODE_OUTCOMES
    end_reason: str = ""  # answer | format_error | env_error | max_turns | context
    final_answer: str | None = None
    verdict: dict[str, Any] | None = None
    changes: list[dict[str, Any]] = field(default_factory=list)
    turns: int = 0
    tool_calls: int = 0
    messages: list[str] = field(default_factory=list)  # format / environment error texts
    policy_version: int = 0  # which update of the policy sampled this episode

    @property
    def assistant_turns(self) -> int:
        return sum(1 for t in self.conversation.turns if t.role == "assistant")


def history_prompt(conv: Conversation, window: int | None) -> list[int]:
    """The prompt for the next turn under history limit `window` (None: the whole conversation)."""
    return conv.history_prompt_ids(window)


def run_episodes(
    policy: Policy,
    tokenizer: Tokenizer,
    pool,
    items: Sequence[tuple[Any, Any, int]],
    cfg: RolloutConfig,
    sampling: SamplingConfig,
    *,
    policy_version: int = 0,
    episode_ids: Sequence[int] | None = None,
) -> list[EpisodeResult]:
    """Run one episode per item (world, task, group index) in slots 0..len(items)-1 of `pool`.

    With episode_ids, each turn of episode i samples from the random stream (episode_ids[i], turn)
    (the policy's `row_ids`), so an episode's tokens do not depend on which episodes share its
    batch: a batch split over processes samples what one process would.
    """
    if not items:
        return []
    chat_cfg = ChatConfig(surface=cfg.surface, system_prompt=cfg.system_prompt, tool_schema=cfg.tool_schema)
    results = []
    for world, task, group in items:
        tools = [t.openai_spec() for t in world.tools]
        conv = Conversation.start(tokenizer, task.instruction, tools, chat_cfg)
        results.append(EpisodeResult(world.id, task.id, group, conv, policy_version=policy_version))
    for r in pool.reset([(slot, res.world_id, res.task_id, cfg.surface) for slot, res in enumerate(results)]):
        if r.outcome != "ok":
            res = results[r.slot]
            res.outcome, res.end_reason = "env_error", "env_error"
            res.messages.append(f"reset failed: {r.error}")
    active = [i for i, r in enumerate(results) if not r.end_reason]
    # a policy with a KV cache (the Sampler) continues each episode from its cache while the
    # history window has not cut anything, instead of prefilling the whole prompt every turn
    cache = _EpisodeCache(policy, len(results)) if all(hasattr(policy, m) for m in ("start", "continue_", "reset_rows")) else None
    grammars = _call_grammars(policy, tokenizer, items, cfg) if cfg.constrain_calls else None
    if cfg.constrain_calls and (grammars is None or cache is None):
        raise ValueError("rollout.constrain_calls = true needs the awmjax sampler as the policy (an endpoint or "
                         "scripted policy decodes elsewhere); set constrain_calls = false for this policy")
    while active:
        prompts, budgets, live = [], [], []
        for i in active:
            res = results[i]
            if res.turns >= cfg.max_turns:
                res.end_reason = "max_turns"
                continue
            prompt = history_prompt(res.conversation, cfg.history_window)
            budget = min(cfg.max_new_tokens, cfg.max_context - len(prompt))
            if budget <= 0:
                res.end_reason = "context"
                continue
            prompts.append(prompt)
            budgets.append(budget)
            live.append(i)
        if not live:
            break
        row_ids = None if episode_ids is None else [episode_ids[i] * cfg.max_turns + results[i].turns for i in live]
        if cache is not None:
            cons = None if grammars is None else [CallConstraint(grammars[i]) for i in live]
            gens = cache.generate(live, prompts, budgets, sampling, row_ids, cons)
        elif row_ids is None:
            gens = policy.generate(prompts, sampling, budgets=budgets)
        else:
            gens = policy.generate(prompts, sampling, budgets=budgets, row_ids=row_ids)
        texts = []
        for i, gen in zip(live, gens):
            res = results[i]
            res.turns += 1
            res.conversation.append_assistant(gen.token_ids, gen.logprobs)
            texts.append(tokenizer.decode(gen.token_ids, skip_special_tokens=True))
        observations = pool.step([(i, text) for i, text in zip(live, texts)])
        active = []
        for i, text, obs in zip(live, texts, observations):
            res = results[i]
            if obs.outcome == "answer":
                res.end_reason, res.final_answer = "answer", text.strip()
            elif obs.outcome in ("format_error", "env_error"):
                res.end_reason = res.outcome = obs.outcome
                res.messages.append(obs.text)
            else:  # ok or tool_error: the agent reads the response and goes on
                res.tool_calls += 1
                res.conversation.append_tool_responses([obs.text])
                active.append(i)
    judged = [i for i, r in enumerate(results) if r.outcome not in ("format_error", "env_error")]
    finished = pool.finish(judged, [results[i].final_answer for i in judged]) if judged else []
    for i, fin in zip(judged, finished):
        res = results[i]
        if fin.outcome != "ok" or fin.verdict is None:
            res.outcome = "env_error"
            res.messages.append(fin.error or "the episode could not be judged")
            continue
        res.verdict, res.changes = fin.verdict, fin.changes
        res.outcome = fin.verdict["result"]
    return results


class _EpisodeCache:
    """One sampler cache over all episodes of a run_episodes call (row i = episode i).

    A turn whose prompt extends what the row's cache holds (the conversation only grew) feeds
    just the new tokens; a row whose prompt does not (the history window started to cut) is
    emptied and fed its whole prompt. Finished episodes keep their rows with a zero budget
    and nothing to feed, and the sampler runs only the rows that have work. Greedy decoding
    gives the same tokens either way; only the work differs.
    """

    def __init__(self, sampler, rows: int):
        self.sampler, self.rows = sampler, rows
        self.state = None
        self.held: list[list[int]] = [[] for _ in range(rows)]  # tokens row i's cache stands for

    def generate(self, live: list[int], prompts: list[list[int]], budgets: list[int], sampling: SamplingConfig,
                 row_ids: list[int] | None, constraints: list | None = None) -> list:
        prompt_of = dict(zip(live, prompts))
        budget_all = [0] * self.rows
        for i, b in zip(live, budgets):
            budget_all[i] = b
        ids_all = None
        if row_ids is not None:
            ids_all = list(range(self.rows))
            for i, r in zip(live, row_ids):
                ids_all[i] = r
        if self.state is None:  # every prompt is fed below; rows without one stay empty
            state = self.sampler.start([[] for _ in range(self.rows)])
        else:
            cut = [i for i, p in prompt_of.items()
                   if not (len(self.held[i]) < len(p) and p[: len(self.held[i])] == self.held[i])]
            state = self.sampler.reset_rows(self.state, cut) if cut else self.state
            for i in cut:
                self.held[i] = []
        appended = [prompt_of[i][len(self.held[i]):] if i in prompt_of else [] for i in range(self.rows)]
        cons_all = None
        if constraints is not None:
            cons_all = [None] * self.rows
            for i, c in zip(live, constraints):
                cons_all[i] = c
        gens, self.state = self.sampler.continue_(state, appended, sampling, budgets=budget_all, row_ids=ids_all,
                                                  constraints=cons_all)
        out = []
        for i in live:
            self.held[i] = list(prompt_of[i]) + list(gens[i].token_ids)
            out.append(gens[i])
        return out


def _call_grammars(policy, tokenizer: Tokenizer, items, cfg: RolloutConfig) -> list | None:
    """Per episode, the CallGrammar of the tools its policy sees (None: the policy has no model
    vocabulary to mask, and run_episodes says so)."""
    model_cfg = getattr(policy, "config", None)
    if model_cfg is None or not hasattr(model_cfg, "vocab_size"):
        return None
    return [call_grammar(tokenizer, surface_tools([t.openai_spec() for t in world.tools], cfg.surface),
                         model_cfg.vocab_size) for world, _, _ in items]


@dataclass
class RolloutStats:
    """Counts and rates over a batch of episodes."""

    episodes: int
    outcomes: dict[str, int]
    mean_turns: float
    mean_tool_calls: float
    policy_tokens: int
    seconds: float

    @classmethod
    def of(cls, results: Sequence[EpisodeResult], seconds: float) -> "RolloutStats":
        outcomes = {o: 0 for o in EPISODE_OUTCOMES}
        for r in results:
            outcomes[r.outcome] += 1
        n = max(len(results), 1)
        return cls(
            episodes=len(results),
            outcomes=outcomes,
            mean_turns=sum(r.turns for r in results) / n,
            mean_tool_calls=sum(r.tool_calls for r in results) / n,
            policy_tokens=sum(sum(r.conversation.mask) for r in results),
            seconds=seconds,
        )


def timed_episodes(*args, **kwargs) -> tuple[list[EpisodeResult], RolloutStats]:
    """run_episodes plus its stats (wall time, outcome counts, policy tokens)."""
    t0 = time.perf_counter()
    results = run_episodes(*args, **kwargs)
    return results, RolloutStats.of(results, time.perf_counter() - t0)
