"""The endpoint policy: an OpenAI-compatible server plays episodes through the same harness."""

import pytest

from awmjax.endpoint import EndpointError, EndpointPolicy, chatml_to_messages
from awmjax.eval import evaluate
from awmjax.rollout import RolloutConfig
from awmjax.sampling import SamplingConfig
from awmjax.tokenizer import Tokenizer
from envgen.pool import Pool
from tests.envgen.worlds import shop_world
from tests.fakes.replay_server import Reply, ReplayServer


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.embedded()


def test_a_served_model_completes_a_task_with_tool_calls(tokenizer):
    world = shop_world()
    script = [Reply(tool_calls=[{"name": "find_product", "arguments": {"query": "Lamp"}}]),
              Reply(tool_calls=[{"name": "place_order", "arguments": {"product_id": 1, "quantity": 2}}]),
              Reply(content="I ordered two lamps.")]
    with ReplayServer(script) as srv, Pool(n_slots=2, workers=1) as pool:
        pool.register([world])
        policy = EndpointPolicy(tokenizer, srv.base_url, "replay")
        rep = evaluate(policy, tokenizer, [world], RolloutConfig(max_turns=5), SamplingConfig(temperature=0.0),
                       policy_name="replay", limit=1, pool=pool, batch=1, progress=False)
    (episode,) = rep.episodes
    assert (episode.task_id, episode.outcome, episode.tool_calls) == ("buy-lamps", "complete", 2)
    first, last = srv.requests[0], srv.requests[-1]
    assert [t["function"]["name"] for t in first["tools"]] == ["find_product", "place_order"]
    assert [m["role"] for m in first["messages"]] == ["system", "user"]
    assert first["messages"][1]["content"] == "Buy two lamps."
    roles = [m["role"] for m in last["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "tool"]
    calls = [m for m in last["messages"] if m["role"] == "assistant"]
    tool_msgs = [m for m in last["messages"] if m["role"] == "tool"]
    assert calls[1]["tool_calls"][0]["function"]["name"] == "place_order"
    assert tool_msgs[1]["tool_call_id"] == calls[1]["tool_calls"][0]["id"]
    assert "new" in tool_msgs[1]["content"] or "order" in tool_msgs[1]["content"]


def test_bad_arguments_from_the_server_are_a_format_error_not_a_crash(tokenizer):
    world = shop_world()
    with ReplayServer([Reply(tool_calls=[{"name": "find_product", "arguments": "{not json"}])]) as srv, \
            Pool(n_slots=2, workers=1) as pool:
        pool.register([world])
        rep = evaluate(EndpointPolicy(tokenizer, srv.base_url, "replay"), tokenizer, [world], RolloutConfig(max_turns=3),
                       SamplingConfig(temperature=0.0), policy_name="replay", limit=1, pool=pool, batch=1, progress=False)
    assert rep.episodes[0].outcome == "format_error"


def test_endpoint_failures_name_the_url_and_the_fix(tokenizer):
    with ReplayServer([Reply(status=500)] * 3 + [Reply(status=404)]) as srv:
        policy = EndpointPolicy(tokenizer, srv.base_url, "replay", retries=2)
        prompt = tokenizer.encode("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
        with pytest.raises(EndpointError, match="failed 3 times") as e:
            policy.generate([prompt], SamplingConfig(temperature=0.0, max_new_tokens=8))
        assert srv.base_url in str(e.value)
        with pytest.raises(EndpointError, match="refused"):
            policy.generate([prompt], SamplingConfig(temperature=0.0, max_new_tokens=8))


def test_chatml_round_trip_keeps_roles_tools_and_call_ids():
    text = ('<|im_start|>system\nBe useful.\n\n# Tools\n\nstuff\n<tools>\n{"type": "function", "function": {"name": "f"}}\n'
            '</tools>\n\nmore<|im_end|>\n<|im_start|>user\nDo it.<|im_end|>\n<|im_start|>assistant\nok\n<tool_call>\n'
            '{"name": "f", "arguments": {"a": 1}}\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n{"r": 2}\n'
            '</tool_response><|im_end|>\n<|im_start|>assistant\n')
    messages, tools = chatml_to_messages(text)
    assert tools == [{"type": "function", "function": {"name": "f"}}]
    assert messages[0] == {"role": "system", "content": "Be useful."}
    assert messages[2]["content"] == "ok" and messages[2]["tool_calls"][0]["function"]["arguments"] == '{"a": 1}'
    assert messages[3] == {"role": "tool", "tool_call_id": messages[2]["tool_calls"][0]["id"], "content": '{"r": 2}'}
    assert len(messages) == 4
