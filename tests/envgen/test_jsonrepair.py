"""extract_json on the ways real models wrap, decorate and cut off JSON."""

from __future__ import annotations

import json

import pytest

from envgen.jsonrepair import JsonExtractError, close_truncated, extract_json


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"a": 1}', {"a": 1}),
        ('Sure! Here it is:\n```json\n{"a": [1, 2]}\n```\nAnything else? {"b": 2}', {"a": [1, 2]}),
        ('```\n{"a": 1}\n```', {"a": 1}),
        ('<think>maybe {"x": 0} first</think>\n{"a": "b"}', {"a": "b"}),
        ('The object {see below}: {"a": 1} -- done.', {"a": 1}),
        ('{"a": [1, 2,], "b": {"c": 3,},}', {"a": [1, 2], "b": {"c": 3}}),
        ('{"s": "a, ] } \\" ,]"}', {"s": 'a, ] } " ,]'}),
    ],
)
def test_decorated_json(text, expected):
    assert extract_json(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"tasks": ["a", "b", "c', {"tasks": ["a", "b"]}),
        ('{"tasks": [{"instruction": "x"}, {"instruction": "y', {"tasks": [{"instruction": "x"}]}),
        ('{"rows": {"a": [{"id": 1}], "b": [{"id": 1}, {"id": 2, "n": ', {"rows": {"a": [{"id": 1}], "b": [{"id": 1}]}}),
        ('```json\n{"a": 1, "b": tru', {"a": 1}),
        ('{"a": 12', {}),
        ('[[1, 2], [3', [[1, 2]]),  # 3 may be the start of 30
        ('[[1, 2], [3, 4', [[1, 2], [3]]),
    ],
)
def test_truncated_json_keeps_only_complete_values(text, expected):
    assert extract_json(text) == expected


def test_want_picks_the_first_value_of_that_kind():
    assert extract_json('[1] then {"a": 1}', want=dict) == {"a": 1}
    assert extract_json('{"a": 1} then [1]', want=list) == [1]


@pytest.mark.parametrize("text", ["", "no json at all", "I cannot help with that.", '{"a": 1]'])
def test_nothing_usable_raises_a_clear_error(text):
    with pytest.raises(JsonExtractError) as e:
        extract_json(text)
    assert "JSON" in str(e.value) or "empty" in str(e.value)


def test_closed_documents_come_back_unchanged():
    doc = '{"a": [1, {"b": "c"}], "d": null}'
    assert close_truncated(doc) == doc
    assert json.loads(close_truncated(doc + " trailing")) == json.loads(doc)
