"""The world format: JSON round trip, content-addressed ids, and clear errors for malformed files."""

import json

import pytest

from envgen import world as W
from tests.envgen.worlds import shop_doc, shop_world, variant


def test_round_trip_is_lossless_and_canonical():
    w = shop_world()
    text = W.dumps(w)
    again = W.loads(text)
    assert again == w
    assert W.dumps(again) == text
    assert json.loads(text)["format"] == W.FORMAT


def test_id_is_slug_plus_content_hash():
    w = shop_world()
    assert w.id.startswith("tiny-shop-") and len(w.id.rsplit("-", 1)[1]) == 12
    changed = W.from_dict(variant(lambda d: d["tasks"][0].update(instruction="Buy 2 lamps please.")))
    assert changed.id != w.id
    same = W.from_dict(json.loads(json.dumps(shop_doc())))
    assert same.id == w.id


def test_edited_file_with_stale_id_is_refused():
    doc = json.loads(W.dumps(shop_world()))
    doc["scenario"]["description"] = "edited by hand"
    with pytest.raises(W.WorldFormatError, match="id does not match the content"):
        W.from_dict(doc, source="shop.json")


def test_openai_spec_derives_from_the_one_declaration():
    tool = shop_world().tool("place_order")
    spec = tool.openai_spec()
    assert spec["function"]["parameters"] is tool.parameters
    assert spec["function"]["name"] == "place_order"


@pytest.mark.parametrize(
    "mutate, field, problem",
    [
        (lambda d: d.pop("schema"), "schema", "missing"),
        (lambda d: d.update(format="other/9"), "format", "unsupported format"),
        (lambda d: d["tools"][0].update(name="bad name!"), "tools[0].name", "not a valid name"),
        (lambda d: d["tools"][1]["impl"]["steps"][0].update(op="drop"), "tools[1].impl.steps[0].op", "not one of"),
        (lambda d: d["tools"][1]["impl"]["steps"][0].pop("error"), "tools[1].impl.steps[0].error", "missing"),
        (lambda d: d["tools"][0]["parameters"].update(type="array"), "tools[0].parameters", "type"),
        (lambda d: d["seed"]["customers"]["rows"].append([3, "Cy"]), "seed.customers.rows[2]", "3 values"),
        (lambda d: d["tasks"][0]["check"]["assertions"][0].update(op="~"), "tasks[0].check.assertions[0].op", "not one of"),
        (lambda d: d["tasks"].append(dict(d["tasks"][0])), "tasks[2].id", "duplicate task id"),
        (lambda d: d["tools"].append(dict(d["tools"][0])), "tools[2].name", "duplicate tool name"),
        (lambda d: d["tasks"][1].update(check={"kind": "sql"}), "tasks[1].check", "at least one assertion"),
        (lambda d: d["scenario"].update(name=5), "scenario.name", "expected str"),
    ],
)
def test_malformed_world_names_file_world_and_field(mutate, field, problem):
    doc = variant(mutate)
    doc["id"] = "tiny-shop-000000000000"
    with pytest.raises(W.WorldFormatError) as e:
        W.from_dict(doc, source="worlds/shop.json")
    msg = str(e.value)
    assert "file worlds/shop.json" in msg and "world tiny-shop-000000000000" in msg
    assert e.value.field == field, msg
    assert problem in msg


def test_invalid_json_text_is_a_format_error(tmp_path):
    p = tmp_path / "w.json"
    p.write_text('{"format": "awmjax.world/1",')
    with pytest.raises(W.WorldFormatError, match=r"file .*w.json: not valid JSON"):
        W.load(str(p))
