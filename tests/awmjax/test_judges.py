"""Judges: async batches with bounded concurrency, fallback to the code verdict, overlap in training."""

import asyncio
import time

import pytest

from awmjax.judges import JUDGES, JudgeConfig, JudgeRunner, Judgement, make_judge
from awmjax.rollout import EpisodeResult


class _Conv:  # judges never read the conversation in these tests
    turns, ids, mask, logprobs = (), (), (), ()


def _episode(result="complete", outcome=None):
    e = EpisodeResult("w", "t", 0, _Conv(), outcome=outcome or result, verdict={"result": result, "evidence": {"n": 1}})
    return e


def test_code_judge_and_pre_decided_outcomes():
    with JudgeRunner(make_judge("code"), JudgeConfig()) as runner:
        js = runner.submit([_episode("partial"), _episode(outcome="format_error"), _episode(outcome="env_error")]).result(5)
    assert [(j.result, j.source) for j in js] == [("partial", "code"), ("format_error", "rollout"), ("env_error", "rollout")]


def test_concurrency_is_bounded_and_batches_overlap():
    with JudgeRunner(make_judge("delayed-code:0.2"), JudgeConfig(concurrency=4)) as runner:
        t0 = time.perf_counter()
        js = runner.submit([_episode() for _ in range(8)]).result(10)
        elapsed = time.perf_counter() - t0
    assert all(j.result == "complete" and j.source.startswith("delayed-code") for j in js)
    assert 0.35 < elapsed < 1.5  # 8 calls, 4 at a time: two waves of 0.2 s, not 8 x 0.2 s


def test_failing_and_slow_judges_fall_back_to_the_code_verdict():
    calls = {"n": 0}

    async def flaky(episode):
        calls["n"] += 1
        raise ConnectionError("endpoint unreachable")

    async def slow(episode):
        await asyncio.sleep(5)

    async def nonsense(episode):
        return Judgement("maybe", "llm")

    for judge, why in ((flaky, "ConnectionError"), (slow, "timed out"), (nonsense, "unusable result")):
        with JudgeRunner(judge, JudgeConfig(timeout_s=0.1, retries=1)) as runner:
            (j,) = runner.submit([_episode("partial")]).result(10)
            assert (j.result, j.source) == ("partial", "code-fallback") and why in j.evidence["judge_error"]
            assert runner.fallbacks == 1
    assert calls["n"] == 2  # one try plus one retry


def test_unknown_judge_names_the_choices():
    with pytest.raises(ValueError, match="unknown judge 'gpt'; available: code"):
        make_judge("gpt")
    assert "code" in JUDGES
