"""The validation gate: a clean world passes; each rule rejects a world broken on purpose."""

import pytest

from envgen import world as W
from envgen.gate import validate_world
from tests.envgen.worlds import shop_world, variant


def _steps(d, tool):
    return next(t for t in d["tools"] if t["name"] == tool)["impl"]["steps"]


def test_clean_world_passes():
    assert validate_world(shop_world()) == []


BROKEN = {
    "bad DDL": (lambda d: d["schema"].__setitem__(0, "CREATE TABLE customers (id INTEGER PRIMARY KEY name TEXT NOT NULL UNIQUE, email TEXT NOT NULL)"), "sql", "does not parse"),
    "DDL that is not CREATE": (lambda d: d["schema"].append("DROP TABLE orders"), "sql", "only CREATE"),
    "unknown column in a tool": (lambda d: _steps(d, "find_product")[0].update(sql="SELECT id, name FROM products WHERE title LIKE :query"), "sql", "unknown column name"),
    "unknown table in a tool": (lambda d: _steps(d, "find_product")[0].update(sql="SELECT id FROM items WHERE title = :query"), "sql", "unknown table items"),
    "unknown column in an insert": (lambda d: _steps(d, "place_order")[2].update(sql="INSERT INTO orders (customer_id, product, quantity) VALUES (1, :product_id, :quantity)"), "sql", "unknown column orders.product"),
    "unbound parameter": (lambda d: _steps(d, "place_order")[3].update(sql="UPDATE products SET stock = stock - :qty WHERE id = :product_id"), "sql", "parameter :qty"),
    "positional parameter": (lambda d: _steps(d, "find_product")[0].update(sql="SELECT id FROM products WHERE title = ?"), "sql", "positional"),
    "write in a read step": (lambda d: _steps(d, "find_product")[0].update(sql="DELETE FROM products WHERE title = :query"), "sql", "must be a SELECT"),
    "forbidden statement in a tool": (lambda d: _steps(d, "place_order")[3].update(sql="PRAGMA writable_schema = 1"), "sql", "must be an INSERT"),
    "unknown column in a check": (lambda d: d["tasks"][0]["check"]["assertions"][0].update(sql="SELECT COUNT(*) FROM orders WHERE buyer = 1"), "sql", "unknown column buyer"),
    "seed breaks a foreign key": (lambda d: d["seed"]["orders"]["rows"].append([2, 99, 1, 1, "placed"]), "seed", "does not load"),
    "seed breaks a CHECK": (lambda d: d["seed"]["products"]["rows"].append([4, "Rug", -1.0, 1]), "seed", "does not load"),
    "tool fails on valid arguments": (lambda d: _steps(d, "find_product")[0].update(sql="SELECT id FROM products WHERE title LIKE :query AND abs(-9223372036854775808) > 0"), "tools", "env_error"),
    "gold sequence fails its check": (lambda d: d["tasks"][0]["gold"][1]["arguments"].update(quantity=1), "tasks", "gives incomplete"),
    "gold call errors": (lambda d: d["tasks"][0]["gold"][1]["arguments"].update(product_id=3), "tasks", "tool_error"),
    "check passes untouched": (lambda d: d["tasks"][0]["check"]["assertions"].__setitem__(slice(None), [{"sql": "SELECT COUNT(*) FROM products", "op": ">=", "value": 1}]), "tasks", "untouched seed already passes"),
    "answer task whose gold answer is wrong": (lambda d: d["tasks"][1].update(answer="It costs 99."), "tasks", "answer does not match"),
    "read-only gold for a task that needs a change": (lambda d: (d["tasks"][0]["check"].update(assertions=[{"sql": "SELECT COUNT(*) FROM orders", "op": ">=", "value": 2}], answer={"contains": ["lamp"]}), d["tasks"][0].update(gold=[{"tool": "find_product", "arguments": {"query": "Lamp"}}], answer="lamp")), "tasks", "changes nothing"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_each_rule_rejects_its_broken_world(case):
    mutate, rule, text = BROKEN[case]
    world = W.from_dict(variant(mutate))
    failures = validate_world(world)
    assert failures, f"{case}: the gate accepted a broken world"
    hits = [f for f in failures if f.rule == rule and text in f.message]
    assert hits, f"{case}: expected a [{rule}] failure mentioning {text!r}, got {[str(f) for f in failures]}"


def test_tool_that_does_not_validate_arguments_is_rejected():
    # a parameter without the schema bound that the SQL relies on: quantity 0 passes the schema, so fine;
    # but dropping the schema's type lets a string through to arithmetic -> must still not raise
    def mutate(d):
        d["tools"][1]["parameters"]["properties"]["quantity"] = {"description": "how many"}
    failures = validate_world(W.from_dict(variant(mutate)))
    # no exception escaped, and the gate still judged the world
    assert all(f.rule in ("sql", "seed", "tools", "tasks") for f in failures)


PY_TOOL = '''
def restock(db, product_id, amount):
    row = db.execute("SELECT stock FROM products WHERE id = ?", (product_id,)).fetchone()
    if row is None:
        raise ValueError(f"no product with id {product_id}")
    db.execute("UPDATE products SET stock = stock + ? WHERE id = ?", (amount, product_id))
    return {"product_id": product_id, "stock": row[0] + amount}
'''

PY_CHECK = '''
def verify(initial_db, final_db, final_answer):
    before = initial_db.execute("SELECT stock FROM products WHERE id = 3").fetchone()[0]
    after = final_db.execute("SELECT stock FROM products WHERE id = 3").fetchone()[0]
    if after == before + 4:
        return {"result": "complete", "evidence": {"stock": after}}
    return {"result": "partial" if after > before else "incomplete", "evidence": {"stock": after}}
'''


def _python_world(check_source=PY_CHECK):
    def mutate(d):
        d["tools"].append({
            "name": "restock",
            "description": "Add units to a product's stock.",
            "parameters": {"type": "object", "properties": {"product_id": {"type": "integer", "minimum": 1}, "amount": {"type": "integer", "minimum": 1, "maximum": 100}}, "required": ["product_id", "amount"], "additionalProperties": False},
            "impl": {"kind": "python", "source": PY_TOOL, "entry": "restock"},
        })
        d["tasks"].append({"id": "restock-chairs", "instruction": "Add 4 chairs to stock.", "check": {"kind": "python", "source": check_source},
                           "gold": [{"tool": "restock", "arguments": {"product_id": 3, "amount": 4}}]})
    return W.from_dict(variant(mutate))


def test_world_with_python_tool_and_check_passes_through_the_sandbox():
    assert validate_world(_python_world()) == []


def test_python_check_that_passes_untouched_is_rejected():
    lenient = PY_CHECK.replace("after == before + 4", "after >= before")
    failures = validate_world(_python_world(lenient))
    assert any(f.rule == "tasks" and "untouched seed" in f.message for f in failures), failures


def test_python_tool_changes_are_recorded_in_the_changeset():
    from envgen.runtime import Episode, Slot, compile_world

    world = _python_world()
    slot = Slot()
    try:
        ep = Episode(slot, compile_world(world), world.task("restock-chairs"))
        assert ep.call("restock", {"product_id": 3, "amount": 2}).payload == {"product_id": 3, "stock": 2}
        assert ep.verdict(None).result == "partial"
        assert ep.call("restock", {"product_id": 3, "amount": 2}).ok
        assert ep.changes() == [{"table": "products", "op": "update", "pk": {"id": 3}, "old": {"stock": 0}, "new": {"stock": 4}}]
        assert ep.verdict(None).result == "complete"
        assert ep.call("restock", {"product_id": 99, "amount": 1}).outcome == "tool_error"
    finally:
        slot.close()


@pytest.mark.parametrize("want, answer, matched", [
    ("5", "Its average stars is 5.", True),
    ("5", "It costs 5.00 dollars", True),
    ("5", "return round(x ** 2.5) /", False),  # an untrained model's code once passed as "5"
    ("15", "There are 150 of them.", False),
    ("1200", "The total is 1,200 USD.", True),
    ("2.5", "It is rated 2.5.", True),
    ("lamp", "The Desk Lamp is in stock.", True),
    ("2025-03-14", "Moved to 2025-03-14.", True),
])
def test_an_expected_number_matches_whole_numbers_only(want, answer, matched):
    from envgen.checks import answer_matches

    assert answer_matches({"contains": [want]}, answer) is matched
