"""State pools: exact resets, batched episodes, verdicts and changesets, a killed worker replaced."""

from __future__ import annotations

import os
import random
import signal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envgen import toolcalls as tc
from envgen.db import SandboxedDB
from envgen.pool import Pool
from envgen.procgen import generate_worlds
from envgen.runtime import Episode, Slot, compile_world
from tests.envgen.worlds import shop_world

SHOP = shop_world()
PROC = next(generate_worlds(1, seed=3))


def seed_dump(world) -> dict:
    db = SandboxedDB()
    db.load_schema_and_seed(world.schema, world.seed)
    dump = db.dump()
    db.close()
    return dump


def random_calls(world, rng: random.Random, n: int) -> list[dict]:
    """Calls of the world's tools: gold calls of its tasks with some arguments nudged."""
    gold = [c for t in world.tasks for c in (t.gold or ())]
    calls = []
    for _ in range(n):
        c = rng.choice(gold)
        args = dict(c.arguments)
        for k, v in list(args.items()):
            if isinstance(v, int) and not isinstance(v, bool) and rng.random() < 0.5:
                args[k] = max(1, v + rng.randint(-2, 2))
        calls.append({"name": c.tool, "arguments": args})
    return calls


@pytest.fixture(scope="module")
def pool():
    with Pool(8, 2) as p:
        p.register([SHOP, PROC])
        yield p


def test_reset_restores_exact_state_after_arbitrary_writes(pool):
    rng = random.Random(0)
    expected = {SHOP.id: seed_dump(SHOP), PROC.id: seed_dump(PROC)}
    for round_ in range(6):
        # same world twice in a row (rollback), then switching worlds (deserialize)
        world = [SHOP, SHOP, PROC, PROC, SHOP, PROC][round_]
        slots = list(range(8))
        resets = pool.reset([(s, world.id, None) for s in slots])
        assert all(r.outcome == "ok" for r in resets)
        assert pool.inspect(slots, "dump") == [expected[world.id]] * 8
        if round_ in (1, 3):
            assert {r.method for r in resets} == {"rollback"}
        for _ in range(6):
            pool.step([(s, c) for s, c in zip(slots, random_calls(world, rng, 8))])
        assert any(d != expected[world.id] for d in pool.inspect(slots, "dump"))  # the calls did write
        assert pool.inspect(slots, "integrity") == [[]] * 8
        pool.finish(slots)


def test_connections_follow_their_world_and_prepare_makes_resets_rollbacks(pool):
    expected = seed_dump(SHOP)
    pool.reset([(s, SHOP.id, None) for s in range(4)])
    pool.step([(s, {"name": "place_order", "arguments": {"product_id": 1, "quantity": 1}}) for s in range(4)])
    pool.finish(list(range(4)))
    # other slot numbers, same world: they get the idle connections that hold it
    assert {r.method for r in pool.reset([(s, SHOP.id, None) for s in range(4, 8)])} == {"rollback"}
    assert pool.inspect(list(range(4, 8)), "dump") == [expected] * 4
    pool.finish(list(range(4, 8)))
    pool.prepare([(s, PROC.id) for s in range(8)])
    assert {r.method for r in pool.reset([(s, PROC.id, None) for s in range(8)])} == {"rollback"}
    assert pool.inspect(list(range(8)), "dump") == [seed_dump(PROC)] * 8
    pool.finish(list(range(8)))


def test_compiled_worlds_are_frozen_out_of_the_garbage_collector(pool):
    # a full collection would walk every compiled world's objects (645 ms for 1,000 worlds)
    pool.register([SHOP, PROC], preload=True)
    frozen = pool.inspect([0, 1], "gc_frozen")  # slots 0 and 1: one per worker
    assert all(f > 1000 for f in frozen), frozen
    pool.reset([(s, SHOP.id, None) for s in range(8)])  # nothing new to compile: nothing more frozen
    assert pool.inspect([0, 1], "gc_frozen") == frozen
    pool.finish(list(range(8)))


def test_gold_sequences_complete_with_verdicts_and_changesets(pool):
    for world in (SHOP, PROC):
        tasks = [t for t in world.tasks if t.gold][:8]
        slots = list(range(len(tasks)))
        pool.reset([(s, world.id, t.id) for s, t in zip(slots, tasks)])
        for k in range(max(len(t.gold) for t in tasks)):
            batch = [(s, tc.Call(t.gold[k].tool, t.gold[k].arguments)) for s, t in zip(slots, tasks) if k < len(t.gold)]
            assert all(o.outcome == "ok" for o in pool.step(batch))
        done = pool.finish(slots, [t.answer for t in tasks])
        assert [f.verdict["result"] for f in done] == ["complete"] * len(tasks), [f.verdict for f in done]
        assert all(f.calls == len(t.gold) for f, t in zip(done, tasks))


def test_same_call_sequence_gives_same_changeset(pool):
    calls = random_calls(PROC, random.Random(7), 8)
    texts = [f'<tool_call>{{"name": "{c["name"]}", "arguments": {__import__("json").dumps(c["arguments"])}}}</tool_call>' for c in calls]
    results = []
    for attempt in range(2):  # slots 0 and 1 sit in different workers; then again after a reset
        pool.reset([(0, PROC.id, None), (1, PROC.id, None)])
        for t in texts:
            pool.step([(0, t), (1, t)])
        results += [f.changes for f in pool.finish([0, 1])]
    assert results[0] and all(r == results[0] for r in results)


def test_batch_errors_are_named(pool):
    with pytest.raises(KeyError, match="not registered"):
        pool.reset([(0, "no-such-world", None)])
    with pytest.raises(ValueError, match="out of range"):
        pool.step([(99, "hi")])
    assert pool.reset([(0, SHOP.id, "no-such-task")])[0].outcome == "env_error"
    obs = pool.step([(0, '<tool_call>{"name": "find_product", "arguments": {"query": "x"}}</tool_call>')])
    assert obs[0].outcome == "env_error" and "no live episode" in obs[0].text
    pool.reset([(0, SHOP.id, "desk-price", "mcp")])
    obs = pool.step([(0, '<tool_call>{"name": "list_tools", "arguments": {}}</tool_call>')])
    assert obs[0].outcome == "ok" and "place_order" in obs[0].text
    obs = pool.step([(0, "The desk costs 150.")])
    assert obs[0].outcome == "answer"
    assert pool.finish([0], ["The desk costs 150."])[0].verdict["result"] == "complete"


def test_killed_worker_is_replaced_without_losing_other_episodes():
    with Pool(4, 2) as pool:
        pool.register([SHOP])
        pool.reset([(s, SHOP.id, "buy-lamps") for s in range(4)])
        find = {"name": "find_product", "arguments": {"query": "Lamp"}}
        assert all(o.outcome == "ok" for o in pool.step([(s, find) for s in range(4)]))
        victim = pool.worker_pids()[0]  # holds slots 0 and 2
        os.kill(victim, signal.SIGKILL)
        order = {"name": "place_order", "arguments": {"product_id": 1, "quantity": 2}}
        obs = pool.step([(s, order) for s in range(4)])
        assert [o.outcome for o in obs] == ["env_error", "ok", "env_error", "ok"]
        assert pool.replaced == 1 and victim not in pool.worker_pids()
        done = pool.finish(list(range(4)))
        assert [f.outcome for f in done] == ["env_error", "ok", "env_error", "ok"]
        assert done[1].verdict["result"] == done[3].verdict["result"] == "complete"
        # the replacement worker takes new episodes
        pool.reset([(s, SHOP.id, "buy-lamps") for s in range(4)])
        assert all(o.outcome == "ok" for o in pool.step([(s, order) for s in range(4)]))
        pool.finish(list(range(4)))
        # a worker that dies with a prepare in flight (its reply unread)
        pool.prepare([(s, SHOP.id) for s in range(4)])
        os.kill(pool.worker_pids()[1], signal.SIGKILL)
        resets = pool.reset([(s, SHOP.id, "buy-lamps") for s in range(4)])
        assert [r.outcome for r in resets] == ["ok", "env_error", "ok", "env_error"]
        assert pool.replaced == 2
        assert all(r.outcome == "ok" for r in pool.reset([(s, SHOP.id, "buy-lamps") for s in range(4)]))
        assert all(o.outcome == "ok" for o in pool.step([(s, order) for s in range(4)]))


# --------------------------------------------------------------------------- fuzz

_CW = {}


def _compiled(world):
    if world.id not in _CW:
        _CW[world.id] = compile_world(world)
    return _CW[world.id]


def _value():
    return st.one_of(st.integers(-3, 12), st.text(max_size=6), st.none(), st.booleans(), st.floats(allow_nan=False, width=16))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), which=st.sampled_from(["shop", "proc"]), method=st.sampled_from(["auto", "deserialize"]))
def test_fuzz_random_tool_calls_keep_the_database_sound(data, which, method):
    world = SHOP if which == "shop" else PROC
    cw = _compiled(world)
    slot = Slot(reset_method=method)
    for _episode in range(2):
        ep = Episode(slot, cw, None)
        for _ in range(data.draw(st.integers(1, 10))):
            tool = data.draw(st.sampled_from(world.tools))
            props = list(tool.parameters.get("properties", {}))
            args = data.draw(st.dictionaries(st.sampled_from(props + ["bogus"]) if props else st.just("bogus"), _value(), max_size=len(props) + 1))
            if data.draw(st.booleans()):  # often keep the gold-like shape valid
                args = {**{p: data.draw(st.integers(1, 6)) for p in props if tool.parameters["properties"][p].get("type") == "integer"}, **{k: v for k, v in args.items() if k in props}}
            obs = tc.step(ep, tc.Protocol(), {"name": tool.name, "arguments": args})
            assert obs.outcome in tc.OUTCOMES
        assert slot.db.integrity_problems() == []
        ep.changes()  # decodes
        ep.close()
    slot.close()
