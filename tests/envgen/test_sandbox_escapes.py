"""Every escape the sandbox forbids, tried through a tool's own SQL: refused as env_error, slot still usable."""

from __future__ import annotations

import json

import pytest

from envgen import toolcalls as tc
from envgen import world as W
from envgen.db import Limits
from envgen.pool import Pool
from envgen.runtime import Episode, Slot, compile_world
from envgen.sandbox import SandboxLimits
from tests.envgen.worlds import variant

FOREVER = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
ESCAPES = {
    "attach": ("write", "ATTACH DATABASE ':memory:' AS other"),
    "detach": ("write", "DETACH DATABASE main"),
    "writable_schema": ("write", "PRAGMA writable_schema = ON"),
    "foreign_keys_off": ("write", "PRAGMA foreign_keys = OFF"),
    "drop_table": ("write", "DROP TABLE orders"),
    "create_table": ("write", "CREATE TABLE evil (x)"),
    "create_trigger": ("write", "CREATE TRIGGER t AFTER INSERT ON orders BEGIN DELETE FROM customers; END"),
    "alter_table": ("write", "ALTER TABLE orders ADD COLUMN evil TEXT"),
    "commit": ("write", "COMMIT"),
    "rollback": ("write", "ROLLBACK"),
    "begin": ("write", "BEGIN"),
    "savepoint": ("write", "SAVEPOINT mine"),
    "release": ("write", "RELEASE episode_base"),
    "rollback_to": ("write", "ROLLBACK TO episode_base"),
    "vacuum": ("write", "VACUUM"),
    "read_sqlite_master": ("read", "SELECT name, sql FROM sqlite_master"),
    "read_sqlite_schema": ("read", "SELECT count(*) FROM sqlite_schema"),
    "read_dbpage": ("read", "SELECT data FROM sqlite_dbpage"),
    "count_dbpage": ("read", "SELECT count(*) FROM sqlite_dbpage"),
    "count_master_join": ("read", "SELECT count(*) FROM orders, sqlite_master"),
    "pragma_table_list": ("read", "SELECT * FROM pragma_table_list"),
    "pragma_function": ("read", "SELECT count(*) FROM pragma_table_info('orders')"),
    "pragma_database_list": ("read", "SELECT * FROM pragma_database_list()"),
    "load_extension": ("read", "SELECT load_extension('/tmp/evil.so')"),
    "forever_read": ("read", FOREVER + "SELECT count(*) FROM c"),
    "forever_write": ("write", FOREVER + "UPDATE products SET stock = (SELECT count(*) FROM c) WHERE id = 2"),
    "randomblob": ("write", "UPDATE products SET title = randomblob(5000000) WHERE id = 2"),
    "zeroblob": ("read", "SELECT zeroblob(5000000)"),
    "huge_string": ("read", "SELECT printf('%.*c', 5000000, 'x')"),
}


def escape_world() -> W.World:
    def add(doc):
        for name, (op, sql) in ESCAPES.items():
            step = {"op": op, "sql": sql} | ({"output": "rows", "shape": "rows"} if op == "read" else {})
            doc["tools"].append({"name": f"escape_{name}", "description": name, "parameters": {"type": "object", "properties": {}}, "impl": {"kind": "sql", "steps": [step]}})
        doc["tools"].append({
            "name": "spin", "description": "a runaway Python tool", "parameters": {"type": "object", "properties": {}},
            "impl": {"kind": "python", "source": "def spin(db):\n    while True:\n        pass\n", "entry": "spin"},
        })
        doc["tools"].append({
            "name": "rename", "description": "a well-behaved Python tool", "parameters": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
            "impl": {"kind": "python", "source": "def rename(db, name):\n    db.execute('UPDATE customers SET name = ? WHERE id = 1', (name,))\n    return {'renamed': name}\n", "entry": "rename"},
        })
    return W.from_dict(variant(add))


@pytest.fixture(scope="module")
def compiled():
    return compile_world(escape_world())


def _sql_only(compiled):
    """The same world without its Python tools, so that the slot holds its savepoint."""
    w = compiled.world
    return compile_world(W.World(w.scenario, w.schema, w.seed, tuple(t for t in w.tools if t.impl.kind == "sql"), w.tasks))


@pytest.mark.parametrize("reset_method", ["auto", "deserialize"])
def test_every_escape_is_refused_and_the_slot_stays_usable(compiled, reset_method):
    cw = _sql_only(compiled)
    slot = Slot(Limits(call_seconds=0.2), reset_method=reset_method)
    ep = Episode(slot, cw, cw.world.task("buy-lamps"))
    seed = slot.db.dump()
    assert tc.step(ep, tc.Protocol(), {"name": "place_order", "arguments": {"product_id": 1, "quantity": 2}}).outcome == "ok"
    after_order = slot.db.dump()
    for name in ESCAPES:
        obs = tc.step(ep, tc.Protocol(), {"name": f"escape_{name}", "arguments": {}})
        assert obs.outcome == "env_error", (name, obs)
        assert json.loads(obs.text)["error"]
        assert slot.db.dump() == after_order, name  # nothing changed, earlier writes kept
        assert slot.db.integrity_problems() == [], name
        assert tc.step(ep, tc.Protocol(), {"name": "find_product", "arguments": {"query": "Lamp"}}).outcome == "ok", name
    assert ep.verdict().result == "complete"
    assert len(ep.changes()) == 2
    ep.close()
    assert Episode(slot, cw, None).slot.db.dump() == seed  # reset still restores the seed
    slot.close()


def test_runaway_python_tool_is_killed_and_reported(compiled):
    with Pool(2, 1, sandbox_limits=SandboxLimits(call_seconds=1.0)) as pool:
        pool.register([compiled.world])
        assert pool.reset([(0, compiled.id, "buy-lamps"), (1, compiled.id, None)])[0].outcome == "ok"
        obs = pool.step([(0, {"name": "spin", "arguments": {}}), (1, {"name": "find_product", "arguments": {"query": "Lamp"}})])
        assert obs[0].outcome == "env_error" and "deadline" in json.loads(obs[0].text)["error"]
        assert obs[1].outcome == "ok"
        # the sandbox process was replaced: Python tools and SQL tools still work in the same episode
        obs = pool.step([(0, {"name": "rename", "arguments": {"name": "Ada L."}})])
        assert obs[0].outcome == "ok", obs
        obs = pool.step([(0, {"name": "place_order", "arguments": {"product_id": 1, "quantity": 2}})])
        assert obs[0].outcome == "ok"
        fin = pool.finish([0, 1])
        assert fin[0].verdict["result"] == "partial"  # the rename touched customers, which the task may not change
        assert any("customers" in v for v in fin[0].verdict["evidence"]["violations"])
        assert {(c["table"], c["op"]) for c in fin[0].changes} == {("customers", "update"), ("orders", "insert"), ("products", "update")}
