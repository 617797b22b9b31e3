"""From model text to observation: every malformed call gets its named outcome, never an exception."""

from __future__ import annotations

import json

import pytest

from envgen import toolcalls as tc
from envgen.runtime import Episode, Slot, compile_world
from tests.envgen.worlds import shop_world


@pytest.fixture(scope="module")
def world():
    return compile_world(shop_world())


@pytest.fixture()
def episode(world):
    slot = Slot()
    ep = Episode(slot, world, world.world.task("buy-lamps"))
    yield ep
    ep.close()
    slot.close()


def call(name, arguments) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


def test_direct_call_ok_and_tool_error(episode):
    obs = tc.step(episode, tc.Protocol(), "Let me look.\n" + call("find_product", {"query": "Lamp"}))
    assert obs.outcome == "ok" and obs.tool == "find_product"
    assert json.loads(obs.text)["products"][0]["title"] == "Lamp"
    obs = tc.step(episode, tc.Protocol(), call("place_order", {"product_id": 3, "quantity": 1}))
    assert obs.outcome == "tool_error" and "not enough stock" in json.loads(obs.text)["error"]


def test_parsed_calls_are_accepted(episode):
    for turn in ({"name": "find_product", "arguments": {"query": "Desk"}}, tc.Call("find_product", {"query": "Desk"}), ("find_product", {"query": "Desk"})):
        assert tc.step(episode, tc.Protocol(), turn).outcome == "ok"


def test_no_call_is_the_answer(episode):
    obs = tc.step(episode, tc.Protocol(), "  The desk costs 150.  ")
    assert obs == tc.Observation("answer", "The desk costs 150.")


MALFORMED = {
    "invalid json": "<tool_call>{name: find_product}</tool_call>",
    "truncated json": '<tool_call>{"name": "find_product", "arguments": {"query": </tool_call>',
    "not an object": "<tool_call>[1, 2]</tool_call>",
    "empty": "<tool_call></tool_call>",
    "missing name": '<tool_call>{"arguments": {}}</tool_call>',
    "name not string": '<tool_call>{"name": 7, "arguments": {}}</tool_call>',
    "unexpected keys": '<tool_call>{"name": "find_product", "arguments": {"query": "x"}, "id": 1}</tool_call>',
    "unclosed": '<tool_call>{"name": "find_product", "arguments": {"query": "x"}}',
    "stray close": 'done </tool_call>',
    "nested open": '<tool_call><tool_call>{"name": "find_product"}</tool_call>',
    "several calls": call("find_product", {"query": "a"}) + call("find_product", {"query": "b"}),
    "unknown tool": call("drop_everything", {}),
    "missing argument": call("place_order", {"product_id": 1}),
    "wrong type": call("place_order", {"product_id": "one", "quantity": 1}),
    "out of range": call("place_order", {"product_id": 1, "quantity": 99}),
    "extra argument": call("find_product", {"query": "x", "limit": 3}),
    "arguments not object": '<tool_call>{"name": "find_product", "arguments": "query=x"}</tool_call>',
    "deep json": "<tool_call>" + "[" * 100_000 + "</tool_call>",
    "not text": 12345,
    "none": None,
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_calls_are_format_errors(episode, name):
    before = episode.slot.db.dump()
    obs = tc.step(episode, tc.Protocol(), MALFORMED[name])
    assert obs.outcome == "format_error", obs
    assert json.loads(obs.text)["error"]
    assert episode.slot.db.dump() == before


def test_mcp_surface(episode):
    p = tc.Protocol("mcp")
    inner = {"tool_name": "find_product", "arguments": json.dumps({"query": "Lamp"})}
    assert tc.step(episode, p, call("call_tool", inner)).outcome == "format_error"  # list_tools must come first
    listing = tc.step(episode, p, call("list_tools", {}))
    assert listing.outcome == "ok"
    assert {t["name"] for t in json.loads(listing.text)["tools"]} == {"find_product", "place_order"}
    assert tc.step(episode, p, call("list_tools", {})).outcome == "format_error"  # only once
    assert tc.step(episode, p, call("call_tool", inner)).outcome == "ok"
    as_object = {"tool_name": "place_order", "arguments": {"product_id": 1, "quantity": 2}}
    assert tc.step(episode, p, call("call_tool", as_object)).outcome == "ok"
    for bad in (
        {"tool_name": "find_product", "arguments": "{not json"},
        {"tool_name": "nope", "arguments": {}},
        {"arguments": {}},
        {"tool_name": "find_product", "arguments": {"query": 3}},
        {"tool_name": "find_product", "arguments": {"query": "x"}, "extra": 1},
    ):
        assert tc.step(episode, p, call("call_tool", bad)).outcome == "format_error", bad
    assert tc.step(episode, p, call("find_product", {"query": "x"})).outcome == "format_error"  # direct name in mcp mode


def test_list_tools_after_a_call_is_misuse(episode):
    p = tc.Protocol("mcp")
    episode.call("find_product", {"query": "x"})
    assert tc.step(episode, p, call("list_tools", {})).outcome == "format_error"


def test_large_results_are_truncated_with_a_marker(episode):
    obs = tc.step(episode, tc.Protocol(), call("find_product", {"query": "a"}), limit=20)
    assert obs.outcome == "ok"
    assert obs.text.startswith('{"products":[{"id":')
    assert "[truncated: the result has" in obs.text and "the first 20 are shown" in obs.text


def test_env_errors_are_named(world):
    slot = Slot()
    ep = Episode(slot, world, None)
    slot.db.close()  # the database is gone: the call must report, not raise
    obs = tc.step(ep, tc.Protocol(), call("find_product", {"query": "x"}))
    assert obs.outcome == "env_error"


def test_protocol_rejects_unknown_surface():
    with pytest.raises(ValueError, match="surface"):
        tc.Protocol("openapi")
