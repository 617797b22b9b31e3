"""Serving worlds over MCP: an MCP client session lists the tools and acts in its own fresh state."""

import os
import socket
import subprocess
import sys
import time

import anyio
import pytest

mcp = pytest.importorskip("mcp")

from envgen.awm_import import import_awm  # noqa: E402
from envgen.mcp_server import STATE_META_KEY, build_server  # noqa: E402
from envgen.procgen import generate_world  # noqa: E402
from envgen.world import dumps  # noqa: E402
from tests.envgen.awm_sample import AWM_DIR, needs_awm  # noqa: E402


@needs_awm
def test_client_sessions_list_and_call_tools_each_in_a_fresh_state():
    report = import_awm(AWM_DIR)
    world = next(w for w in report.worlds if report.sources[w.id] == "content_platform_1")
    server = build_server(world)

    async def session_one():
        async with mcp.Client(server, mode="legacy") as client:  # the initialize handshake: a session
            tools = (await client.list_tools()).tools
            sub = await client.call_tool("subscribe_to_channel", {"channel_id": 1})
            listed = await client.call_tool("list_user_subscriptions", {})
            bad = await client.call_tool("get_channel_by_id", {"channel_id": "one"})
            return tools, sub, listed, bad

    async def session_two():
        async with mcp.Client(server, mode="legacy") as client:
            return await client.call_tool("list_user_subscriptions", {})

    async def stateless():  # no session in the 2026-07-28 protocol: a request names its state
        async with mcp.Client(server) as client:
            await client.call_tool("subscribe_to_channel", {"channel_id": 3}, meta={STATE_META_KEY: "run-7"})
            named = await client.call_tool("list_user_subscriptions", {}, meta={STATE_META_KEY: "run-7"})
            other = await client.call_tool("list_user_subscriptions", {}, meta={STATE_META_KEY: "run-8"})
            return named, other

    try:
        tools, sub, listed, bad = anyio.run(session_one)
        fresh = anyio.run(session_two)
        named, other = anyio.run(stateless)
    finally:
        server.world_sessions.close()
    assert [t.name for t in tools] == [t.name for t in world.tools]
    assert tools[0].input_schema == world.tools[0].parameters
    assert not sub.is_error and sub.structured_content["subscription"]["channel_id"] == 1
    assert 1 in [s["channel_id"] for s in listed.structured_content["subscriptions"]]
    assert bad.is_error and "channel_id" in bad.content[0].text
    assert 1 not in [s["channel_id"] for s in fresh.structured_content["subscriptions"]]  # its own seeded state
    assert 3 in [s["channel_id"] for s in named.structured_content["subscriptions"]]
    assert 3 not in [s["channel_id"] for s in other.structured_content["subscriptions"]]
    assert server.world_sessions.sessions_started == 4


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_serves_a_native_world_over_streamable_http(tmp_path):
    world = next(w for w in (generate_world(0, i) for i in range(10)) if any(t.gold for t in w.tasks))
    path = tmp_path / "world.json"
    path.write_text(dumps(world))
    task = next(t for t in world.tasks if t.gold)
    call = task.gold[0]
    port = _port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "awmjax.cli", "worlds", "serve-mcp", str(path), "--http", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    async def client():
        async with mcp.Client(f"http://127.0.0.1:{port}/mcp") as c:
            names = [t.name for t in (await c.list_tools()).tools]
            return names, await c.call_tool(call.tool, call.arguments)

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"serve-mcp did not start: {proc.stderr.read().decode()[-2000:]}")
                time.sleep(0.05)
        names, result = anyio.run(client)
    finally:
        proc.terminate()
        proc.wait(10)
    assert names == [t.name for t in world.tools]
    assert not result.is_error, result.content
