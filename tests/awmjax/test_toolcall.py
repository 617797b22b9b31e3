"""Tool-call parsing: well-formed turns, many malformed ones, the mcp surface, and never raising."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from awmjax.toolcall import (
    ERROR_KINDS,
    ParsedTurn,
    ToolCall,
    format_mcp_call,
    format_tool_call,
    parse_tool_calls,
)


def kinds(result: ParsedTurn) -> list[str]:
    return [e.kind for e in result.errors]


def test_one_call_with_text_before_it():
    r = parse_tool_calls('Let me check.\n<tool_call>\n{"name": "get_user", "arguments": {"id": 3}}\n</tool_call>')
    assert r.ok and r.calls == (ToolCall("get_user", {"id": 3}),)
    assert r.text == "Let me check." and not r.is_final_answer


def test_final_answer_without_calls():
    r = parse_tool_calls("  The order was shipped.  \n")
    assert r.ok and r.is_final_answer and r.text == "The order was shipped."


def test_extra_whitespace_and_several_blocks():
    text = (
        '<tool_call>   {"name":"a","arguments":{}}   </tool_call>\n\n'
        '<tool_call>\n\n\t{"name": "b", "arguments": {"x": [1, 2]}}\n\n</tool_call> trailing words'
    )
    r = parse_tool_calls(text)
    assert r.ok and [c.name for c in r.calls] == ["a", "b"] and r.calls[1].arguments == {"x": [1, 2]}
    assert r.text == "trailing words"


def test_code_fence_inside_the_block():
    r = parse_tool_calls('<tool_call>\n```json\n{"name": "f", "arguments": {"q": "x"}}\n```\n</tool_call>')
    assert r.ok and r.calls == (ToolCall("f", {"q": "x"}),)


def test_closing_tag_inside_a_string_argument_does_not_split_the_block():
    args = {"note": "write </tool_call> and <tool_call> literally"}
    r = parse_tool_calls(format_tool_call("save", args) + " done")
    assert r.ok and r.calls == (ToolCall("save", args),) and r.text == "done"


def test_missing_or_null_arguments_mean_no_arguments():
    r = parse_tool_calls('<tool_call>{"name": "ping"}</tool_call><tool_call>{"name": "p2", "arguments": null}</tool_call>')
    assert r.ok and [c.arguments for c in r.calls] == [{}, {}]


def test_format_tool_call_round_trips_unicode_arguments():
    args = {"city": "Zürich", "tags": ["日本", "🙂"], "n": 3, "ok": True, "none": None}
    r = parse_tool_calls(format_tool_call("search", args))
    assert r.calls == (ToolCall("search", args),)


@pytest.mark.parametrize(
    "body, kind, words",
    [
        ("{'name': 'f', 'arguments': {}}", "invalid_json", "single quotes"),
        ('{"name": "f", "arguments": {"a": 1,}}', "invalid_json", "trailing comma"),
        ('{"name": "f", "arguments": {"a": True}}', "invalid_json", "true/false/null"),
        ('{"name": "f", "arguments": {"a": NaN}}', "invalid_json", "NaN"),
        ('{"name": "f", "arguments": {"a": 1, "a": 2}}', "invalid_json", "duplicate key"),
        ('{"name": "f"} {"name": "g"}', "invalid_json", "more than one JSON value"),
        ('{"name": "f", "arguments": {"a": 1}', "invalid_json", "not valid JSON"),
        ("call f with a=1", "invalid_json", "not valid JSON"),
        ("[" * 100000, "invalid_json", "not valid JSON"),
        ('[{"name": "f", "arguments": {}}]', "not_an_object", "one"),
        ('"f"', "not_an_object", "str"),
        ("   ", "empty_call", "empty"),
        ('{"arguments": {}}', "missing_name", "name"),
        ('{"name": "", "arguments": {}}', "missing_name", "name"),
        ('{"name": 7, "arguments": {}}', "name_not_string", "not a string"),
        ('{"name": "f", "arguments": "{\\"a\\": 1}"}', "arguments_not_object", "not a string holding it"),
        ('{"name": "f", "arguments": [1]}', "arguments_not_object", "not a JSON object"),
        ('{"name": "f", "arguments": {}, "id": "c1"}', "unexpected_keys", "id"),
    ],
)
def test_malformed_blocks_are_named_errors(body, kind, words):
    r = parse_tool_calls(f"Calling.\n<tool_call>\n{body}\n</tool_call>")
    assert kinds(r) == [kind] and not r.calls and r.text == "Calling."
    assert words in r.errors[0].message
    assert len(r.errors[0].snippet) <= 203


def test_truncated_final_block():
    r = parse_tool_calls('<tool_call>{"name": "a", "arguments": {}}</tool_call>\n<tool_call>\n{"name": "b", "argu')
    assert r.truncated and kinds(r) == ["truncated"] and [c.name for c in r.calls] == ["a"]


def test_truncated_inside_the_opening_tag():
    r = parse_tool_calls("Let me look that up.\n<tool_ca")
    assert r.truncated and r.text == "Let me look that up." and not r.calls


def test_complete_json_without_closing_tag_is_truncated():
    r = parse_tool_calls('<tool_call>\n{"name": "a", "arguments": {}}\n')
    assert kinds(r) == ["truncated"] and not r.calls


def test_unclosed_tag_before_another_call():
    r = parse_tool_calls('<tool_call>{"name": "a", "arguments": {}\n<tool_call>{"name": "b", "arguments": {}}</tool_call>')
    assert kinds(r) == ["unclosed_tag"] and [c.name for c in r.calls] == ["b"]


def test_stray_closing_tag_is_reported_and_removed_from_text():
    r = parse_tool_calls("All done.</tool_call>")
    assert kinds(r) == ["stray_close_tag"] and r.text == "All done."


def test_good_and_bad_blocks_are_both_reported():
    r = parse_tool_calls('<tool_call>{"name": "a", "arguments": {}}</tool_call><tool_call>{bad}</tool_call>')
    assert [c.name for c in r.calls] == ["a"] and kinds(r) == ["invalid_json"] and not r.ok


def test_unknown_tool_when_names_are_given():
    r = parse_tool_calls(format_tool_call("drop_db", {}), tool_names=["get_user", "list_orders"])
    assert kinds(r) == ["unknown_tool"] and "get_user" in r.errors[0].message


def test_mcp_surface_unwraps_call_tool_with_string_or_object_arguments():
    text = (
        format_tool_call("list_tools", {})
        + format_mcp_call("get_user", {"id": 3})
        + format_tool_call("call_tool", {"tool_name": "mcp_tool_list_orders", "arguments": {"status": "open"}})
        + '<tool_call>{"name": "list_tools", "arguments": null}</tool_call>'
        + format_tool_call("call_tool", {"tool_name": "ping", "arguments": ""})
    )
    r = parse_tool_calls(text, surface="mcp", tool_names=["get_user", "list_orders", "ping"])
    assert r.ok
    assert r.calls == (
        ToolCall("list_tools", {}, kind="list_tools"),
        ToolCall("get_user", {"id": 3}),
        ToolCall("list_orders", {"status": "open"}),
        ToolCall("list_tools", {}, kind="list_tools"),
        ToolCall("ping", {}),
    )


def test_mcp_surface_accepts_awm_prefixed_direct_names():
    r = parse_tool_calls(format_tool_call("mcp_tool_get_user", {"id": 1}), surface="mcp")
    assert r.calls == (ToolCall("get_user", {"id": 1}),)


@pytest.mark.parametrize(
    "call, kind",
    [
        (format_tool_call("get_user", {"id": 3}), "unknown_tool"),
        (format_tool_call("call_tool", {"arguments": "{}"}), "missing_tool_name"),
        (format_tool_call("call_tool", {"tool_name": 5, "arguments": "{}"}), "missing_tool_name"),
        (format_tool_call("call_tool", {"tool_name": "f", "arguments": "{'a': 1}"}), "invalid_inner_arguments"),
        (format_tool_call("call_tool", {"tool_name": "f", "arguments": "[1, 2]"}), "invalid_inner_arguments"),
        (format_tool_call("call_tool", {"tool_name": "f", "arguments": 3}), "invalid_inner_arguments"),
        (format_tool_call("call_tool", {"tool_name": "f", "arguments": "{}", "x": 1}), "unexpected_keys"),
    ],
)
def test_mcp_surface_errors(call, kind):
    r = parse_tool_calls(call, surface="mcp")
    assert kinds(r) == [kind] and not r.calls


def test_bad_surface_is_a_value_error():
    with pytest.raises(ValueError, match="surface"):
        parse_tool_calls("hi", surface="openai")


def test_every_error_kind_is_listed():
    assert len(set(ERROR_KINDS)) == len(ERROR_KINDS)


pieces = st.sampled_from(
    ["<tool_call>", "</tool_call>", "<tool_ca", "{", "}", "[", "]", '"', "'", ",", ":", "```", "```json\n",
     '"name"', '"arguments"', '"call_tool"', '"tool_name"', '"list_tools"', "null", "1", "\n", " ", "\\"]
)
texts = st.one_of(st.text(), st.lists(st.one_of(pieces, st.text(max_size=5)), max_size=40).map("".join))


@settings(max_examples=400, deadline=None)
@given(texts, st.sampled_from(["direct", "mcp"]))
def test_parser_never_raises(text, surface):
    r = parse_tool_calls(text, surface=surface)
    assert all(e.kind in ERROR_KINDS for e in r.errors)
    assert all(isinstance(c.arguments, dict) and isinstance(c.name, str) for c in r.calls)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=20), st.dictionaries(st.text(max_size=8), json_values, max_size=4))
def test_formatted_calls_parse_back(name, arguments):
    r = parse_tool_calls(format_tool_call(name, arguments))
    assert r.ok and r.calls == (ToolCall(name, json.loads(json.dumps(arguments))),)
