"""`awmjax serve` with the embedded SmolLM2-135M: the real protocol path, and an LLM judge calling it."""

import openai
import pytest

from awmjax.judges import JUDGE_RESULTS, JudgeConfig, JudgeRunner, make_judge
from tests.awmjax.serving import serve
from tests.awmjax.test_llm_judge import _episode
from tests.awmjax.test_serve import _greedy_text


@pytest.fixture(scope="module")
def embedded():
    with serve("embedded", max_context=2048, max_tokens=48, batch_wait_ms=50) as srv:
        yield srv


def test_embedded_policy_answers_through_the_openai_client(embedded):
    client = openai.OpenAI(base_url=embedded.base_url, api_key="none", max_retries=0)
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    r = client.chat.completions.create(model="embedded", messages=messages, temperature=0, max_tokens=12)
    assert r.choices[0].message.content == _greedy_text(embedded, messages, 12)[0]
    assert "paris" in r.choices[0].message.content.lower()  # the real pretrained model, in its chat format


def test_llm_judge_against_the_served_model_falls_back_cleanly(embedded):
    cfg = JudgeConfig(name="code-augmented", base_url=embedded.base_url, model="embedded", max_tokens=48,
                      retries=1, timeout_s=300, concurrency=4)
    episodes = [_episode(embedded.engine.tokenizer, f"Cancel order {i}.", code="partial") for i in (7, 8)]
    before = embedded.engine.stats.requests
    with JudgeRunner(make_judge(cfg.name, **cfg.options()), cfg) as runner:
        js = runner.submit(episodes).result(600)
    calls = embedded.engine.stats.requests - before
    assert all(j.result in JUDGE_RESULTS for j in js)
    for j in js:  # either the model produced a usable verdict, or the code verdict stands in, with the reason
        assert j.source == "code-augmented" or (j.source == "code-fallback" and j.result == "partial"
                                                and j.evidence["judge_error"])
    assert runner.fallbacks == sum(j.source == "code-fallback" for j in js)
    assert calls == len(js) + runner.retries and calls >= 2  # every try reached the server
