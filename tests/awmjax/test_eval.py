"""The evaluation harness against a scripted policy whose outcomes are known: every outcome class."""

import copy
import json

import pytest

from awmjax.eval import DIFFICULTY_CLASSES, evaluate, mean_interval, wilson, write_report
from awmjax.rollout import RolloutConfig
from awmjax.sampling import SamplingConfig
from awmjax.sft import ScriptedPolicy
from awmjax.tokenizer import Tokenizer
from awmjax.toolcall import format_tool_call
from envgen import world as W
from envgen.pool import Pool
from tests.envgen.worlds import shop_doc

LAMPS = [format_tool_call("find_product", {"query": "Lamp"}), format_tool_call("place_order", {"product_id": 1, "quantity": 2}),
         "I ordered two lamps."]
SCRIPTS = {  # task id -> (scripted turns, expected outcome)
    "complete": (LAMPS, "complete"),
    "partial": ([format_tool_call("place_order", {"product_id": 1, "quantity": 1})] * 2 + ["Done."], "partial"),
    "gives-up": (["Sorry, I cannot do that."], "incomplete"),
    "bad-json": (['<tool_call>\n{"name": "find_product", "arguments": {"query": }\n</tool_call>'], "format_error"),
    "runaway-tool": ([format_tool_call("count_forever", {})], "env_error"),
}


def _world() -> W.World:
    doc = shop_doc()
    doc["tools"].append({
        "name": "count_forever", "description": "A tool whose query never ends (the per-call deadline stops it).",
        "parameters": {"type": "object", "properties": {}, "required": [], "additionalProperties": False},
        "impl": {"kind": "sql", "steps": [{"op": "read", "output": "n", "shape": "rows",
                 "sql": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c"}]},
    })
    base = doc["tasks"][0]
    doc["tasks"] = []
    for name in SCRIPTS:
        t = copy.deepcopy(base)
        t["id"], t["instruction"] = name, f"Buy two lamps. [{name}]"
        doc["tasks"].append(t)
    return W.from_dict(doc)


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.embedded()


@pytest.fixture(scope="module")
def report(tokenizer, tmp_path_factory):
    world = _world()
    rollout = RolloutConfig(max_turns=4)
    policy = ScriptedPolicy(tokenizer, [(ScriptedPolicy.prefix(tokenizer, world, t, "direct"), SCRIPTS[t.id][0])
                                        for t in world.tasks])
    with Pool(n_slots=8, workers=1) as pool:
        pool.register([world])
        rep = evaluate(policy, tokenizer, [world], rollout, SamplingConfig(temperature=0.0), policy_name="scripted",
                       split="test", pool=pool, batch=8, progress=False)
    return rep, write_report(rep, tmp_path_factory.mktemp("eval"))


def test_every_outcome_class_is_counted(report):
    rep, _ = report
    got = {e.task_id: e.outcome for e in rep.episodes}
    assert got == {name: expected for name, (_, expected) in SCRIPTS.items()}
    for outcome in ("complete", "partial", "incomplete", "format_error", "env_error"):
        assert rep.overall.rates[outcome] == pytest.approx(1 / 5), outcome
        lo, hi = rep.overall.intervals[outcome]
        assert lo < 0.2 < hi
    # every task here has a two-call gold sequence
    assert set(rep.by_difficulty) == {DIFFICULTY_CLASSES[1]}
    assert rep.overall.tool_calls[0] == pytest.approx((2 + 2 + 0 + 0 + 0) / 5)


def test_report_json_table_and_transcripts(report):
    rep, root = report
    doc = json.loads((root / "report.json").read_text())
    assert doc["overall"]["episodes"] == 5 and len(doc["episodes"]) == 5
    assert "completed" in (root / "table.txt").read_text()
    text = (root / "transcripts" / f"{rep.episodes[0].world_id}__complete.md").read_text()
    for part in ("## TASK", "## AGENT", "## TOOL RESPONSE", "## CHANGESET", "## VERDICT", '"place_order"'):
        assert part in text, part
    env = next(e for e in rep.episodes if e.task_id == "runaway-tool")
    assert env.messages, "an environment error carries its message"


def test_intervals():
    assert wilson(0, 10)[0] == 0.0 and 0.25 < wilson(0, 10)[1] < 0.35
    lo, hi = wilson(5, 10)
    assert lo < 0.5 < hi and hi - 0.5 == pytest.approx(0.5 - lo)
    assert wilson(0, 0) == (0.0, 0.0)
    m, lo, hi = mean_interval([1, 2, 3, 4])
    assert m == 2.5 and lo < 2.5 < hi
