"""The benchmark's AWM-stack baseline answers tool calls as the pool does (same world, same calls)."""

import json

import anyio
import httpx
import pytest

mcp = pytest.importorskip("mcp")
pytest.importorskip("fastapi")
pytest.importorskip("sqlalchemy")

from envgen.pool import Pool  # noqa: E402
from envgen.procgen import generate_worlds  # noqa: E402
from envgen.world import dumps  # noqa: E402
from experiments.awm_stack import EPISODE_META_KEY, start_servers  # noqa: E402


def test_awm_stack_server_answers_calls_as_the_pool_does(tmp_path):
    # a world whose gold sequence writes (a saved id or a changed-row count in the payload) and reads
    world, task = next((w, t) for w in generate_worlds(40, seed=0) for t in w.tasks
                       if t.gold and len(t.gold) >= 2 and any(s.op == "write" for c in t.gold for s in w.tool(c.tool).impl.steps))
    # and a call of an id that does not exist: a guard refuses, with its message filled in
    guarded = next(t for t in world.tools if t.impl.steps[0].op == "guard" and t.impl.steps[0].expect == "exists"
                   and t.parameters["required"] and all(t.parameters["properties"][k]["type"] == "integer" for k in t.parameters["required"]))
    calls = [{"name": c.tool, "arguments": c.arguments} for c in task.gold]
    calls.append({"name": guarded.name, "arguments": {k: 987654 for k in guarded.parameters["required"]}})
    path = tmp_path / "world.json"
    path.write_text(dumps(world))

    with Pool(1, 1, observation_chars=10**7) as pool:  # whole results, no truncation
        pool.register([world])
        pool.reset([(0, world.id, task.id)])
        expected = [(o.outcome == "ok", json.loads(o.text)) for o in (pool.step([(0, c)])[0] for c in calls)]
        expected_verdict = pool.finish([0], [task.answer])[0].verdict["result"]

    [(proc, url)] = start_servers([str(path)], str(tmp_path))

    async def awm_side():
        async with httpx.AsyncClient() as http:
            (await http.post(url + "/reset", json={"episode": "e1"})).raise_for_status()
            async with mcp.Client(url + "/mcp", mode="legacy") as client:
                results = [await client.call_tool(c["name"], c["arguments"], meta={EPISODE_META_KEY: "e1"}) for c in calls]
            verdict = (await http.post(url + "/verdict", json={"episode": "e1", "task": task.id})).json()
        return [(not r.is_error, json.loads(r.content[0].text)) for r in results], verdict["result"]

    try:
        got, verdict = anyio.run(awm_side)
    finally:
        proc.kill()
        proc.wait()
    assert all(ok for ok, _ in expected[:-1]) and not expected[-1][0] and "987654" in expected[-1][1]["error"]
    assert got == expected
    assert verdict == expected_verdict == "complete"
