"""The replay server speaks enough of the OpenAI API for the openai client, in order, with errors and delays."""

import openai
import pytest

from tests.fakes.replay_server import Reply, ReplayServer


def test_scripted_replies_reach_the_openai_client_in_order():
    script = ["first", Reply(tool_calls=[{"name": "lookup", "arguments": {"id": 3}}]),
              lambda req: f"echo {req['messages'][-1]['content']}", Reply(body="not json at all")]
    with ReplayServer(script, model="m1", embed=lambda texts: [[float(len(t)), 1.0] for t in texts]) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="none", max_retries=0)
        assert [m.id for m in client.models.list()] == ["m1"]
        ask = lambda text: client.chat.completions.create(model="m1", messages=[{"role": "user", "content": text}])
        first = ask("hi there")
        assert first.choices[0].message.content == "first" and first.usage.prompt_tokens == 2
        call = ask("x").choices[0]
        assert call.finish_reason == "tool_calls" and call.message.tool_calls[0].function.arguments == '{"id": 3}'
        assert ask("ping").choices[0].message.content == "echo ping"
        with pytest.raises(Exception):  # a body that is not JSON
            ask("garbage")
        with pytest.raises(openai.InternalServerError, match="script exhausted"):
            ask("one too many")
        emb = client.embeddings.create(model="m1", input=["ab", "abcd"])
        assert [d.embedding for d in emb.data] == [[2.0, 1.0], [4.0, 1.0]]
        assert [r["messages"][0]["content"] for r in srv.requests if "messages" in r][:3] == ["hi there", "x", "ping"]


def test_status_delay_stream_and_missing_embeddings():
    with ReplayServer([Reply(status=429), Reply("late", delay=1.0), "streamed text here"]) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="none", max_retries=0)
        msg = [{"role": "user", "content": "q"}]
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="r", messages=msg)
        with pytest.raises(openai.APITimeoutError):
            client.with_options(timeout=0.2).chat.completions.create(model="r", messages=msg)
        chunks = list(client.chat.completions.create(model="r", messages=msg, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == "streamed text here"
        assert chunks[-1].choices[0].finish_reason == "stop"
        with pytest.raises(openai.NotFoundError):
            client.embeddings.create(model="r", input="x")
