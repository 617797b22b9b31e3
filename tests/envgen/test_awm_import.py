"""Importing AWM's published worlds, running their FastAPI tools and verifiers in the sandbox."""

import json

import pytest

from envgen.awm_import import import_awm
from envgen.gate import valid_arguments, validate_world
from envgen.runtime import Episode, Slot, compile_world
from envgen.sandbox import PythonSandbox, SandboxLimits
from envgen.world import App, Check, Scenario, Task, Tool, ToolImpl, World, dumps, loads
from tests.envgen.awm_sample import AWM_DIR, needs_awm, source_row

pytestmark = needs_awm


@pytest.fixture(scope="module")
def report():
    return import_awm(AWM_DIR)


def world_of(report, scenario):
    return next(w for w in report.worlds if report.sources[w.id] == scenario)


@pytest.fixture(scope="module")
def slot():
    s = Slot(python=PythonSandbox(SandboxLimits(call_seconds=5.0)))
    yield s
    s.close()


@pytest.mark.parametrize("scenario", ["content_platform_1", "e_commerce_33"])
def test_tables_rows_and_tasks_match_the_source(report, scenario):
    world = world_of(report, scenario)
    db = source_row("gen_db.jsonl", scenario)["db_schema"]["tables"]
    assert set(world.seed) == {t["name"] for t in db}
    sample = source_row("gen_sample.jsonl", scenario)["sample_data"]["tables"]
    for t in sample:
        assert len(world.seed[t["table_name"]]["rows"]) == len(t["insert_statements"]), t["table_name"]
    assert world.seed_row_count() == source_row("gen_sample.jsonl", scenario)["inserts_count"]
    assert [t.instruction for t in world.tasks] == source_row("gen_tasks.jsonl", scenario)["tasks"]
    assert loads(dumps(world)).id == world.id  # the JSON round trip keeps the content


def test_tools_match_the_spec(report):
    world = world_of(report, "content_platform_1")
    endpoints = [e for g in source_row("gen_spec.jsonl", "content_platform_1")["api_spec"]["api_groups"] for e in g["endpoints"]]
    assert [t.name for t in world.tools] == [e["operation_id"] for e in endpoints]
    for tool, ep in zip(world.tools, endpoints):
        assert set(tool.parameters["properties"]) == set(ep["request_params"])
        assert (tool.impl.kind, tool.impl.method, tool.impl.path) == ("fastapi", ep["method"], ep["path"])
    assert world.app.source == source_row("gen_envs.jsonl", "content_platform_1")["full_code"]
    assert all(t.check.kind == "llm" for t in world.tasks)  # no verifiers for it in the sample


def test_incomplete_scenarios_and_broken_verifier_are_reported_not_fatal(report):
    assert sorted(report.sources.values()) == ["content_platform_1", "e_commerce_33"]
    fatal = {p.scenario: p.message for p in report.problems if p.fatal}
    assert set(fatal) == {"code_hosting_2", "communication_messaging_1", "marketplace_1", "booking_marketplace_1", "booking_and_appointments_1"}
    assert "gen_sample.jsonl" in fatal["code_hosting_2"]
    broken = [p for p in report.problems if p.scenario == "e_commerce_33" and "does not compile" in p.message]
    assert len(broken) == 1 and broken[0].part == "task 2 gen_verifier" and not broken[0].fatal
    shop = world_of(report, "e_commerce_33")
    assert shop.tools == () and shop.app is None  # no server code: a database plus its verifiers
    kinds = [(t.check.kind, t.check.source is not None, t.check.evidence is not None) for t in shop.tasks]
    assert kinds[:3] == [("awm", True, True), ("awm", True, True), ("awm", True, False)]
    assert all(k[0] == "llm" for k in kinds[3:])


def test_imported_worlds_pass_the_gate(report, slot):
    for world in report.worlds:
        assert validate_world(world, slot) == [], world.id


def test_every_tool_is_callable_with_arguments_from_its_schema(report, slot):
    cw = compile_world(world_of(report, "content_platform_1"))
    ep = Episode(slot, cw)
    outcomes = {}
    for tool in cw.world.tools:
        outcomes[tool.name] = ep.call(tool.name, valid_arguments(tool)).outcome
    ep.close()
    assert set(outcomes.values()) <= {"ok", "tool_error"}, outcomes
    assert sum(o == "ok" for o in outcomes.values()) >= 25  # most answer; the rest refuse bad ids clearly


def test_writes_reach_the_slot_and_reset_restores_the_seed(report, slot):
    cw = compile_world(world_of(report, "content_platform_1"))
    ep = Episode(slot, cw)
    assert ep.call("subscribe_to_channel", {"channel_id": 1}).ok
    listed = ep.call("list_user_subscriptions", {}).payload["subscriptions"]
    assert 1 in [s["channel_id"] for s in listed]
    changes = ep.changes()
    assert [(c["table"], c["op"], c["pk"]) for c in changes] == [("user_subscriptions", "insert", {"user_id": 1, "channel_id": 1})]
    ep.close()
    ep = Episode(slot, cw)  # a fresh episode sees the seed again, in the slot and in the sandbox
    assert 1 not in [s["channel_id"] for s in ep.call("list_user_subscriptions", {}).payload["subscriptions"]]
    assert ep.call("get_channel_by_id", {"channel_id": "one"}).outcome == "invalid_arguments"
    ep.close()


def test_ecommerce_verifiers_run_on_the_untouched_database(report, slot):
    shop = world_of(report, "e_commerce_33")
    cw = compile_world(shop)
    verdicts = []
    for task in shop.tasks[:4]:
        ep = Episode(slot, cw, task)
        verdicts.append(ep.verdict(None))
        ep.close()
    for v in verdicts[:3]:
        assert v.result == "incomplete" and v.evidence["verifier"] == {"result": "others"}, v.evidence
    # the code-augmented verifiers read both databases and return what they found
    assert verdicts[1].evidence["verifier_evidence"]["latest_paper_towel_order"]["order_number"] == "A1004"
    assert "verifier_evidence" not in verdicts[2].evidence  # task 2's did not compile
    assert verdicts[3].evidence["judge"] == "llm-only"


def test_a_verifier_sees_the_final_state(report, slot):
    """The pure-code verifier of task 1 says complete once the order is placed again (rows written by SQL here)."""
    shop = world_of(report, "e_commerce_33")
    cw = compile_world(shop)
    ep = Episode(slot, cw, shop.tasks[1])
    before = ep.verdict(None)
    db = slot.db
    with db.trusted():
        item = db.conn.execute("SELECT product_id, product_offer_id, product_title, unit_price, quantity FROM order_items "
                               "WHERE order_id = 4 AND product_title LIKE '%Paper Towel%'").fetchone()
        db.conn.execute("INSERT INTO orders (id, user_id, order_number, status, placed_at, total_amount) VALUES (99, 1, 'A9999', 'placed', datetime('now'), ?)", (item[3] * item[4],))
        db.conn.execute("INSERT INTO order_items (order_id, product_id, product_offer_id, product_title, unit_price, quantity) VALUES (99, ?, ?, ?, ?, ?)", item)
    after = ep.verdict(None)
    ep.close()
    assert before.result == "incomplete" and after.result == "complete", after.evidence


APP = '''
from fastapi import FastAPI
from sqlalchemy import create_engine, text
from sqlalchemy.orm import sessionmaker
import os
engine = create_engine(os.getenv("DATABASE_PATH", "sqlite:///x.db"))
SessionLocal = sessionmaker(bind=engine)
app = FastAPI()

@app.get("/count")
async def count():
    s = SessionLocal()
    n = s.execute(text("SELECT COUNT(*) FROM t")).scalar()
    s.close()
    return {"n": n}

@app.get("/spin")
async def spin():
    while True:
        pass

@app.get("/read")
async def read():
    return {"text": open("/etc/hostname").read()}

@app.get("/swallow")
async def swallow():
    try:
        open("/tmp/awmjax-app-escape", "w").write("x")
    except Exception:
        pass
    return {"ok": True}
'''


def _app_world():
    tools = tuple(Tool(n, n, {"type": "object", "properties": {}}, ToolImpl("fastapi", method="GET", path=f"/{n}", params={}))
                  for n in ("count", "spin", "read", "swallow"))
    return World(Scenario("app sandbox", "tools that misbehave", "test"), ("CREATE TABLE t (id INTEGER PRIMARY KEY)",),
                 {"t": {"columns": ("id",), "rows": ((1,), (2,))}}, tools, (Task("t0", "count", Check("llm")),), app=App("fastapi", APP))


def test_runaway_and_file_touching_tools_are_stopped_and_reported():
    cw = compile_world(_app_world())
    slot = Slot(python=PythonSandbox(SandboxLimits(call_seconds=1.0)))
    try:
        ep = Episode(slot, cw)
        assert ep.call("count", {}).payload == {"n": 2}
        spin = ep.call("spin", {})
        assert spin.outcome == "env_error" and "deadline" in spin.payload["error"]
        for name, word in (("read", "reading"), ("swallow", "writing")):  # caught or not, a refusal is reported
            res = ep.call(name, {})
            assert res.outcome == "env_error" and "sandbox" in res.payload["error"] and word in res.payload["error"], res.payload
        assert ep.call("count", {}).payload == {"n": 2}  # a fresh sandbox child took over
        ep.close()
    finally:
        slot.close()


def test_world_json_rejects_fastapi_tools_without_an_app():
    doc = json.loads(dumps(_app_world()))
    del doc["app"], doc["id"]
    with pytest.raises(ValueError, match="no app"):
        loads(json.dumps(doc))


def test_pool_runs_an_imported_world_on_both_tool_surfaces(report):
    from envgen.pool import Pool

    world = world_of(report, "content_platform_1")
    with Pool(n_slots=2, workers=1) as pool:
        pool.register([world])
        assert [r.outcome for r in pool.reset([(0, world.id, "task-0", "direct"), (1, world.id, "task-0", "mcp")])] == ["ok", "ok"]
        direct, listed = pool.step([
            (0, '<tool_call>{"name": "subscribe_to_channel", "arguments": {"channel_id": 1}}</tool_call>'),
            (1, '<tool_call>{"name": "list_tools", "arguments": {}}</tool_call>'),
        ])
        (via_mcp,) = pool.step([(1, '<tool_call>{"name": "call_tool", "arguments": {"tool_name": "subscribe_to_channel", "arguments": "{\\"channel_id\\": 1}"}}</tool_call>')])
        done = pool.finish([0, 1], ["subscribed", "subscribed"])
    assert direct.outcome == "ok" and via_mcp.outcome == "ok", (direct, via_mcp)
    assert len(json.loads(listed.text)["tools"]) == len(world.tools)
    for f in done:
        assert f.outcome == "ok" and [c["table"] for c in f.changes] == ["user_subscriptions"]
        assert f.verdict["evidence"]["judge"] == "llm-only"


def test_cli_import_awm_writes_a_catalog_with_the_rejections(tmp_path, capsys):
    from awmjax.cli import main
    from envgen.catalog import Catalog

    out = tmp_path / "awm"
    assert main(["worlds", "import-awm", str(AWM_DIR), "--out", str(out)]) == 0
    cat = Catalog.open(out)
    assert sorted(cat.index["provenance"]["scenarios"].values()) == ["content_platform_1", "e_commerce_33"]
    world = cat.get(next(w for w, s in cat.index["provenance"]["scenarios"].items() if s == "content_platform_1"))
    assert world.app is not None and len(world.tools) == 34
    assert {r["awm_scenario"] for r in cat.rejected()} == {"code_hosting_2", "communication_messaging_1", "marketplace_1",
                                                          "booking_marketplace_1", "booking_and_appointments_1"}
    printed = capsys.readouterr().out
    assert "does not compile" in printed and "2 of 7 scenarios imported" in printed
    assert main(["worlds", "import-awm", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
