"""The LLM judges: a model over an OpenAI-compatible endpoint grades an episode as strict JSON.

`llm` reads the task and the trajectory; `code-augmented` also reads the episode's
changeset and the code check's verdict and evidence, and is told the check may be
imperfect (AWM's judge). The model answers {"reasoning", "evidence", "label"} with a
label among completed / partially_completed / agent_error / environment_error, mapped
to the episode outcomes complete / partial / incomplete / env_error (rewards then come
from RewardConfig). One call per episode; output that holds no usable label raises
JudgeOutputError, which `JudgeRunner` retries and finally replaces by the code verdict
(counted as a fallback). Prompts live in awmjax/prompts/judge_*.md.
"""

from __future__ import annotations

import json
import os
import string
from pathlib import Path
from typing import Any

from awmjax.judges import LLM_JUDGES, Judgement, JudgeFn
from awmjax.rollout import EpisodeResult
from envgen.jsonrepair import JsonExtractError, extract_json

PROMPTS = Path(__file__).parent / "prompts"
# label -> episode outcome; spellings are normalized (case, spaces, hyphens) before lookup
LABELS = {
    "completed": "complete",
    "partially_completed": "partial",
    "agent_error": "incomplete",
    "environment_error": "env_error",
}
_ALIASES = {"complete": "completed", "partial": "partially_completed", "partially_complete": "partially_completed",
            "incomplete": "agent_error", "failed": "agent_error", "env_error": "environment_error"}
# Characters of the trajectory shown to the judge: each message is cut to MESSAGE_CHARS, and
# a trajectory over TRAJECTORY_CHARS keeps its head and tail (the task and the ending matter most).
MESSAGE_CHARS, TRAJECTORY_CHARS, CHANGESET_CHARS = 2_000, 24_000, 8_000


class JudgeOutputError(ValueError):
    """The judge model's reply holds no usable verdict; the message quotes what was wrong."""


def load_prompt(kind: str) -> tuple[str, string.Template]:
    """(system prompt, user-message template) of an LLM judge from awmjax/prompts/."""
    if kind not in LLM_JUDGES:
        raise ValueError(f"unknown LLM judge {kind!r}; available: {', '.join(LLM_JUDGES)}")
    text = (PROMPTS / f"judge_{kind.replace('-', '_')}.md").read_text(encoding="utf-8")
    system, sep, user = text.partition("=== USER ===\n")
    if not sep:
        raise ValueError(f"prompt file for judge {kind!r} lacks its '=== USER ===' line")
    return system.strip(), string.Template(user)


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters left out ...]\n{text[-half:]}"


def episode_sections(episode: EpisodeResult) -> dict[str, str]:
    """The texts a judge prompt is filled with: task, trajectory, ending, changeset, code check."""
    messages = episode.conversation.messages()
    task = next((m["content"] for m in messages if m["role"] == "user"), "")
    steps = messages[[m["role"] for m in messages].index("user") + 1:] if task else messages
    trajectory = "\n\n".join(f"[{m['role']}]\n{_cut(m['content'], MESSAGE_CHARS)}" for m in steps)
    ending = {"answer": "the agent gave a final answer (a turn without a tool call)",
              "max_turns": "the agent ran out of turns", "context": "the context window filled up"}
    verdict = episode.verdict or {}
    return {
        "task": task,
        "trajectory": _cut(trajectory, TRAJECTORY_CHARS) or "(the agent wrote nothing)",
        "ending": ending.get(episode.end_reason, episode.end_reason or "unknown"),
        "changeset": _cut(json.dumps(episode.changes, ensure_ascii=False, default=str), CHANGESET_CHARS)
        if episode.changes else "(no changes)",
        "check_result": str(verdict.get("result", "none")),
        "check_evidence": _cut(json.dumps(verdict.get("evidence", {}), ensure_ascii=False, default=str), CHANGESET_CHARS),
    }


def judge_messages(kind: str, episode: EpisodeResult) -> list[dict[str, str]]:
    """The chat messages sent to the judge model for one episode."""
    system, user = load_prompt(kind)
    return [{"role": "system", "content": system}, {"role": "user", "content": user.safe_substitute(episode_sections(episode))}]


def parse_verdict(text: str | None) -> tuple[str, dict[str, Any]]:
    """(episode outcome, evidence) from the judge model's reply; JudgeOutputError when unusable."""
    try:
        doc = extract_json(text or "", want=dict)
    except JsonExtractError as e:
        raise JudgeOutputError(f"the judge's reply holds no JSON object: {e}") from None
    raw = doc.get("label", doc.get("verdict", doc.get("result")))
    if not isinstance(raw, str):
        raise JudgeOutputError(f"the judge's JSON has no string \"label\" (keys: {sorted(doc)[:8]})")
    label = "_".join(raw.strip().lower().replace("-", " ").split())
    label = _ALIASES.get(label, label)
    if label not in LABELS:
        raise JudgeOutputError(f"the judge's label {raw!r} is not one of {', '.join(LABELS)}")
    evidence = doc.get("evidence", [])
    return LABELS[label], {"label": label, "reasoning": str(doc.get("reasoning", "")),
                           "evidence": evidence if isinstance(evidence, list) else [evidence]}


def make_llm_judge(kind: str, *, base_url: str = "", model: str = "", api_key_env: str = "OPENAI_API_KEY",
                   max_tokens: int = 1024, temperature: float = 0.0, timeout_s: float = 120.0, **_: Any) -> JudgeFn:
    """An async judge of `kind` (llm | code-augmented) calling `model` at `base_url`."""
    load_prompt(kind)  # a missing prompt file fails now, not in the first episode
    if not base_url or not model:
        raise ValueError(f"judge {kind!r} needs [judge] base_url and model (an OpenAI-compatible endpoint, "
                         "e.g. base_url = \"http://127.0.0.1:8000/v1\" from `awmjax serve`)")
    state: dict[str, Any] = {}

    async def judge(episode: EpisodeResult) -> Judgement:
        if "client" not in state:  # made on the judge loop, where it is used
            import openai

            # retries belong to JudgeRunner (bounded, counted), so the client makes none of its own
            state["client"] = openai.AsyncOpenAI(base_url=base_url, api_key=os.environ.get(api_key_env) or "none",
                                                 timeout=timeout_s, max_retries=0)
        reply = await state["client"].chat.completions.create(
            model=model, messages=judge_messages(kind, episode), temperature=temperature, max_tokens=max_tokens)
        text = reply.choices[0].message.content if reply.choices else None
        result, evidence = parse_verdict(text)
        code = (episode.verdict or {}).get("result")
        return Judgement(result, kind, {**evidence, "code_result": code, "model": model})

    return judge
