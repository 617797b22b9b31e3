"""Serving a world as an MCP server (the `mcp` SDK): any MCP client can act in it.

Every world, native or imported, is served the same way: `list_tools` lists the world's
tools (name, description, JSON-Schema parameters), `call_tool` runs one in the world's
runtime (`envgen.runtime.Episode`: sandboxed SQL, Python or the world's app), and each
MCP session gets its own fresh copy of the seeded state, reset when the session starts
and dropped when it ends. Transports: stdio, or streamable HTTP.

Sessions are those of the initialize handshake (the protocol that AWM's harness and
most clients speak). The stateless 2026-07-28 protocol has no session: there a request
names its state with `_meta["awmjax/session"]` (any string; a fresh seeded state the
first time a name is seen), and requests that name none share one state.

Tool calls run in a worker thread, one at a time per server (the SQLite slots and the
sandbox child are not shared between threads), so a slow tool never blocks the event loop.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from envgen.runtime import Episode, Slot, compile_world
from envgen.sandbox import PythonSandbox
from envgen.toolcalls import observe
from envgen.world import World


class WorldSessions:
    """Per-session episodes of one world: a fresh seeded state for each MCP session."""

    def __init__(self, world: World):
        self.world = world
        self.compiled = compile_world(world)
        self.python = PythonSandbox()  # shared by the sessions' slots (calls are serialized)
        self.lock = threading.Lock()
        self._episodes: "weakref.WeakKeyDictionary[Any, Episode]" = weakref.WeakKeyDictionary()
        self._named: dict[str, Episode] = {}  # stateless-protocol states, by the name requests give
        self.sessions_started = 0

    def episode(self, session: Any) -> Episode:
        """The episode of `session` (a handshake session, or a state's name), started at the seeded state on first use."""
        named = isinstance(session, str)
        ep = (self._named if named else self._episodes).get(session)
        if ep is None:
            ep = Episode(Slot(python=self.python), self.compiled)
            if named:
                self._named[session] = ep
            else:
                self._episodes[session] = ep
                weakref.finalize(session, _close_episode, ep)
            self.sessions_started += 1
        return ep

    def call(self, session: Any, name: str, arguments: dict[str, Any] | None) -> tuple[bool, str, Any]:
        """Run one tool call in the session's state: (ok, text the client sees, JSON payload)."""
        with self.lock:
            ep = self.episode(session)
            result = ep.call(name, arguments or {})
        return result.ok, observe(result.payload), result.payload

    def close(self) -> None:
        """Drop the stateless states and stop the sandbox child."""
        for ep in self._named.values():
            _close_episode(ep)
        self._named.clear()
        self.python.close()


def session_of(ctx) -> Any:
    """What names a request's state: its handshake session, or (stateless protocol) `_meta["awmjax/session"]`."""
    from mcp_types.version import MODERN_PROTOCOL_VERSIONS

    if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
        # ctx.session is made per request; the connection behind it lives as long as the
        # client's session (mcp 2.3 has no public accessor for it)
        return getattr(ctx.session, "_connection", ctx.session)
    return str((ctx.meta or {}).get(STATE_META_KEY) or "")


STATE_META_KEY = "awmjax/session"


def _close_episode(ep: Episode) -> None:
    ep.close()
    ep.slot.close(close_sandbox=False)


def build_server(world: World):
    """An `mcp` low-level Server for `world` (with its WorldSessions as `.world_sessions`)."""
    import anyio
    import mcp_types as types
    from mcp.server.lowlevel import Server

    sessions = WorldSessions(world)
    tools = [types.Tool(name=t.name, description=t.description, input_schema=t.parameters) for t in world.tools]

    async def list_tools(ctx, params) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tools)

    async def call_tool(ctx, params) -> types.CallToolResult:
        ok, text, payload = await anyio.to_thread.run_sync(sessions.call, session_of(ctx), params.name, params.arguments)
        structured = payload if isinstance(payload, dict) else {"result": payload}
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)], structured_content=structured, is_error=not ok)

    server = Server(
        f"awmjax-{world.id}",
        instructions=f"{world.scenario.name}: {world.scenario.description}",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )
    server.world_sessions = sessions
    return server


def serve_stdio(world: World) -> None:
    """Serve `world` over stdin / stdout until the client closes."""
    import anyio
    from mcp.server.stdio import stdio_server

    server = build_server(world)

    async def run():
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())

    try:
        anyio.run(run)
    finally:
        server.world_sessions.close()


def serve_http(world: World, port: int, host: str = "127.0.0.1") -> None:
    """Serve `world` over streamable HTTP at http://HOST:PORT/mcp until interrupted."""
    import uvicorn

    server = build_server(world)
    app = server.streamable_http_app(host=host)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        server.world_sessions.close()
