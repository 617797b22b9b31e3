"""`awmjax serve` through the openai client: completions, batching, streaming, logprobs, tool calls, errors."""

import json
import threading

import httpx
import openai
import pytest

from awmjax.chat import render_text
from awmjax.sampler import SamplingConfig
from tests.awmjax.serving import serve

ASK = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
WEATHER = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city.",
                                             "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                            "required": ["city"]}}}]


@pytest.fixture(scope="module")
def tiny():
    with serve("tiny-random", batch_wait_ms=300, max_tokens=12) as srv:
        yield srv, openai.OpenAI(base_url=srv.base_url, api_key="none", max_retries=0)


def _greedy_text(srv, messages, n_tokens, tools=()):
    """What the policy writes greedily for these messages, straight from the Sampler (no HTTP)."""
    eng = srv.engine
    ids = eng.tokenizer.encode(render_text(messages, tools, add_generation_prompt=True))
    (gen,) = eng.sampler.generate([ids], SamplingConfig(temperature=0, max_new_tokens=n_tokens,
                                                       stop_token_ids=eng.stop_ids))
    return eng.tokenizer.decode([t for t in gen.token_ids if t not in eng.stop_ids], skip_special_tokens=True), len(ids)


def test_models_and_a_plain_completion(tiny):
    srv, client = tiny
    assert [m.id for m in client.models.list()] == ["tiny-random"]
    r = client.chat.completions.create(model="tiny-random", messages=ASK, temperature=0, max_tokens=8)
    expected, prompt_len = _greedy_text(srv, ASK, 8)
    assert r.choices[0].message.content == expected and r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason in ("stop", "length") and r.choices[0].message.tool_calls is None
    assert r.usage.prompt_tokens == prompt_len and 1 <= r.usage.completion_tokens <= 8
    sampled = client.chat.completions.create(model="tiny-random", messages=ASK, temperature=1.0, top_p=0.9,
                                             max_tokens=6, seed=7, n=2)
    again = client.chat.completions.create(model="tiny-random", messages=ASK, temperature=1.0, top_p=0.9,
                                           max_tokens=6, seed=7, n=2)
    assert [c.message.content for c in sampled.choices] == [c.message.content for c in again.choices]
    assert len(sampled.choices) == 2 and [c.index for c in sampled.choices] == [0, 1]


def test_concurrent_requests_share_one_sampler_call(tiny):
    srv, client = tiny
    questions = [[{"role": "user", "content": f"Question number {i}?"}] for i in range(4)]
    before = srv.engine.stats.sampler_calls
    answers = [None] * 4

    def ask(i):
        answers[i] = client.chat.completions.create(model="tiny-random", messages=questions[i], temperature=0,
                                                    max_tokens=6 + i).choices[0].message.content

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert srv.engine.stats.sampler_calls - before < 4 and srv.engine.stats.largest_call >= 2
    assert answers == [_greedy_text(srv, q, 6 + i)[0] for i, q in enumerate(questions)]  # batched = alone


def test_streamed_completion_matches_the_plain_one(tiny):
    srv, client = tiny
    plain = client.chat.completions.create(model="tiny-random", messages=ASK, temperature=0, max_tokens=10)
    chunks = list(client.chat.completions.create(model="tiny-random", messages=ASK, temperature=0, max_tokens=10,
                                                 stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content and len([c for c in chunks if c.choices]) >= 3
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [plain.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_logprobs_and_top_logprobs(tiny):
    srv, client = tiny
    r = client.chat.completions.create(model="tiny-random", messages=ASK, temperature=0, max_tokens=6,
                                       logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) >= 1 and "".join(t.token for t in content) == r.choices[0].message.content
    for t in content:
        tops = [x.logprob for x in t.top_logprobs]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True) and all(x <= 0 for x in tops)
        assert t.top_logprobs[0].token == t.token and t.logprob == pytest.approx(tops[0], abs=1e-4)  # greedy = argmax
    plain = client.chat.completions.create(model="tiny-random", messages=ASK, temperature=0, max_tokens=6, logprobs=True)
    assert [t.logprob for t in plain.choices[0].logprobs.content] == pytest.approx([t.logprob for t in content], abs=2e-3)
    assert all(t.top_logprobs == [] for t in plain.choices[0].logprobs.content)


def test_stop_strings_end_the_text_before_them(tiny):
    srv, client = tiny
    full = client.chat.completions.create(model="tiny-random", messages=ASK, temperature=0, max_tokens=12)
    text = full.choices[0].message.content
    stop = text[4:7]
    r = client.chat.completions.create(model="tiny-random", messages=ASK, temperature=0, max_tokens=12, stop=[stop])
    assert r.choices[0].message.content == text[: text.find(stop)] and r.choices[0].finish_reason == "stop"


def test_bad_requests_name_the_field(tiny):
    srv, client = tiny
    cases = [
        (dict(temperature=5), "temperature"), (dict(messages=[]), "messages"),
        (dict(messages=[{"role": "robot", "content": "x"}]), "messages[0].role"),
        (dict(messages=[{"role": "user"}]), "messages[0].content"),
        (dict(tools=[{"type": "function", "function": {"description": "no name"}}]), "tools"),
        (dict(model="gpt-9"), "model"), (dict(top_logprobs=2), "top_logprobs"),
        (dict(stream=True, n=2), "n"), (dict(max_tokens=0), "max_tokens"), (dict(tool_choice="required"), "tool_choice"),
        (dict(messages=[{"role": "user", "content": "<|im_start|>system"}]), "messages[0].content"),
    ]
    for change, param in cases:
        request = {"model": "tiny-random", "messages": ASK, **change}
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(**request)
        assert e.value.body["param"] == param and param.split("[")[0] in e.value.body["message"], (change, e.value.body)
    raw = httpx.post(f"{srv.base_url}/chat/completions", content=b"{not json", timeout=10)
    assert raw.status_code == 400 and "not valid JSON" in raw.json()["error"]["message"]


def test_tool_calls_round_trip():
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    replies = [f"Let me check.\n{call}", "It is sunny in Oslo.", call, '<tool_call>\n{"name": "get_weather", "arguments": '
               '{"city": Oslo}}\n</tool_call>']
    with serve("tiny-random", replies=replies) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="none", max_retries=0)
        ask = [{"role": "user", "content": "Weather in Oslo?"}]
        r = client.chat.completions.create(model="tiny-random", messages=ask, tools=WEATHER)
        msg = r.choices[0].message
        assert r.choices[0].finish_reason == "tool_calls" and msg.content == "Let me check."
        assert msg.tool_calls[0].function.name == "get_weather"
        assert json.loads(msg.tool_calls[0].function.arguments) == {"city": "Oslo"}
        follow = ask + [msg.model_dump(exclude_none=True),
                        {"role": "tool", "tool_call_id": msg.tool_calls[0].id, "content": '{"sky": "sunny"}'}]
        r2 = client.chat.completions.create(model="tiny-random", messages=follow, tools=WEATHER)
        assert r2.choices[0].message.content == "It is sunny in Oslo." and r2.choices[0].finish_reason == "stop"
        seen = srv.engine.tokenizer.decode(srv.engine.sampler.prompts[-1])
        assert seen == render_text(follow[:1] + [{"role": "assistant", "content": "Let me check.", "tool_calls":
                                                  [{"name": "get_weather", "arguments": {"city": "Oslo"}}]},
                                                 {"role": "tool", "content": '{"sky": "sunny"}'}], WEATHER,
                                   add_generation_prompt=True)
        assert '{"type": "function", "function": {"name": "get_weather"' in seen and "<tool_response>\n{\"sky\": \"sunny\"}" in seen
        chunks = list(client.chat.completions.create(model="tiny-random", messages=ask, tools=WEATHER, stream=True))
        deltas = [c.choices[0].delta for c in chunks]
        assert not any("<tool_call>" in (d.content or "") for d in deltas)
        (streamed,) = [tc for d in deltas for tc in (d.tool_calls or [])]
        assert streamed.function.name == "get_weather" and chunks[-1].choices[0].finish_reason == "tool_calls"
        broken = client.chat.completions.create(model="tiny-random", messages=ask, tools=WEATHER)
        assert broken.choices[0].message.tool_calls is None and '{"city": Oslo}' in broken.choices[0].message.content
