"""Property tests: no argument value, valid or not, makes a tool raise."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envgen.runtime import Episode, Slot, compile_world
from envgen.sqltool import OUTCOMES
from tests.envgen.worlds import shop_world

WORLD = shop_world()
COMPILED = compile_world(WORLD)
SLOT = Slot()

edge_values = st.sampled_from([2**63, -(2**63) - 1, 2**70, 0, -1, "", "\x00", "%", "'; DROP TABLE products; --", 1e308, -0.0, 2.5, True])
json_values = st.recursive(
    edge_values | st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tool=st.sampled_from([t.name for t in WORLD.tools]), args=st.dictionaries(st.sampled_from(["product_id", "quantity", "query", "other"]), json_values, max_size=4))
def test_random_arguments_never_raise(tool, args):
    ep = Episode(SLOT, COMPILED)
    try:
        res = ep.call(tool, args)
        assert res.outcome in OUTCOMES
        json.loads(res.text())  # the observation is always JSON
    finally:
        ep.close()


@settings(max_examples=200, deadline=None)
@given(product_id=st.integers(1, 3), quantity=st.integers(1, 10), query=st.text(min_size=1, max_size=20))
def test_valid_arguments_are_ok_or_a_clear_tool_error(product_id, quantity, query):
    ep = Episode(SLOT, COMPILED)
    try:
        assert ep.call("find_product", {"query": query}).outcome == "ok"
        res = ep.call("place_order", {"product_id": product_id, "quantity": quantity})
        assert res.outcome in ("ok", "tool_error")
        if res.outcome == "tool_error":
            assert "stock" in res.payload["error"]
    finally:
        ep.close()
    assert SLOT.db.integrity_problems() == []
