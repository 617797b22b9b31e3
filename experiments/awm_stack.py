"""AWM's runtime stack for the procedural worlds: the `--baseline awm` side of experiments/bench_pool.py.

AWM generates, per world, one FastAPI + SQLAlchemy + pydantic file, runs it with uvicorn on
the episode's SQLite file (DATABASE_PATH), and its harness reaches every endpoint as an MCP
tool over streamable HTTP. This module builds the same stack from a procedural world:

- a FastAPI app with one POST route per tool; the request body is a pydantic model built
  from the tool's JSON Schema (types, required, bounds, lengths, patterns, enums, no extra
  keys);
- each handler is `async def` and, like AWM's generated handlers, opens a SQLAlchemy
  `SessionLocal()` on an engine bound to the episode's database FILE, runs the tool's SQL
  steps as bound `text()` statements on the event loop (the same steps and payloads as the
  pool: `bench_pool.run_steps`), commits (rolls back on a refusal) and closes;
- MCP over streamable HTTP at /mcp (the `mcp` SDK's server, handshake sessions): tools/call
  forwards to the tool's route in-process over ASGI, each endpoint an MCP tool;
- uvicorn on loopback, one process per world.

Reset (POST /reset) rebuilds the episode's database FILE from the DDL and the seed INSERTs
(`bench_pool.rebuild_db_file`; SQLite's default foreign_keys=OFF, as AWM's engines run) and
binds a fresh engine to it; POST /verdict runs the task's code check on that file. Several
episodes share a world's server, each with its own file, named by the `_meta` of its MCP
requests (AWM starts a server per episode instead: `per_episode_server`). Sharing did not
slow it: 8 and 32 servers gave the same rate on 2 cores, where CPU is the limit.

The client, per episode: reset over plain HTTP (httpx, keep-alive), one MCP client session
(`mcp.Client` over `streamable_http_client`, mode "legacy": the initialize handshake), the
calls as tools/call, the verdict over HTTP. Episodes run as asyncio tasks in the
benchmark's process.

Where this is kinder to AWM than AWM's own servers, so the pool's ratio is if anything low:
handlers run `text()` statements rather than ORM queries and return plain dicts rather than
response models; uvicorn's access log is off and its keep-alive 120 s; reset and verdict
run off the event loop; the MCP sessions share one HTTP client (connection reuse, no
per-session client build).
"""

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Literal, Optional, Union

EPISODE_META_KEY = "awm-bench/episode"  # names the episode (its database file) in an MCP request's _meta
_TYPES = {"integer": int, "number": Union[int, float], "string": str, "boolean": bool, "array": list, "object": dict}
# JSON-Schema keyword -> pydantic Field argument
_BOUNDS = {"minimum": "ge", "maximum": "le", "exclusiveMinimum": "gt", "exclusiveMaximum": "lt", "minLength": "min_length",
           "maxLength": "max_length", "minItems": "min_length", "maxItems": "max_length", "pattern": "pattern"}


def arguments_model(tool):
    """A pydantic model of a tool's arguments, built from its JSON Schema (as AWM's generated request bodies)."""
    from pydantic import BaseModel, ConfigDict, Field, create_model

    schema = tool.parameters
    required = set(schema.get("required") or ())
    fields: dict[str, Any] = {}
    for name, p in (schema.get("properties") or {}).items():
        kind = p.get("type")
        if "enum" in p:
            typ: Any = Literal[tuple(p["enum"])]
        elif isinstance(kind, list):
            typ = Union[tuple(_TYPES[k] for k in kind if k in _TYPES)] if any(k in _TYPES for k in kind) else Any
        else:
            typ = _TYPES.get(kind, Any)
        extra = {f: p[k] for k, f in _BOUNDS.items() if k in p}
        key = name if not (hasattr(BaseModel, name) or name.startswith("model_")) else f"{name}_"
        if name in required:
            fields[key] = (typ, Field(..., alias=name, description=p.get("description"), **extra))
        else:
            fields[key] = (Optional[typ], Field(p.get("default"), alias=name, description=p.get("description"), **extra))
    config = ConfigDict(extra="forbid" if schema.get("additionalProperties") is False else "ignore",
                        populate_by_name=True, regex_engine="python-re")
    return create_model(f"{tool.name}_arguments", __config__=config, **fields)


def build_app(world, db_dir: str):
    """The world's server: FastAPI routes (reset, tools, verdict) with MCP over streamable HTTP at /mcp."""
    import httpx
    import mcp_types as types
    from fastapi import FastAPI, Header
    from fastapi.responses import JSONResponse
    from mcp.server.lowlevel import Server
    from pydantic import BaseModel
    from sqlalchemy import create_engine, exc, text
    from sqlalchemy.orm import sessionmaker
    from starlette.routing import Mount

    from experiments.bench_pool import bindable, code_verdict, rebuild_db_file, run_steps

    app = FastAPI(title=world.scenario.name)
    engines: dict[str, Any] = {}
    sessions: dict[str, Any] = {}
    texts = {s.sql: text(s.sql) for t in world.tools if t.impl.kind == "sql" for s in t.impl.steps}

    def path_of(episode: str) -> str:
        return os.path.join(db_dir, f"{world.id}-{episode}.db")

    class EpisodeBody(BaseModel):
        episode: str
        task: str = ""

    # Reset and verdict are the harness's work, not the world's code: plain `def` routes run in
    # FastAPI's thread pool, so a file rebuild never blocks the event loop the tools run on.
    @app.post("/reset")
    def reset(body: EpisodeBody):
        old = engines.pop(body.episode, None)
        if old is not None:
            old.dispose()
        rebuild_db_file(world, path_of(body.episode), foreign_keys=False).close()
        engine = engines[body.episode] = create_engine(f"sqlite:///{path_of(body.episode)}", connect_args={"check_same_thread": False})
        sessions[body.episode] = sessionmaker(bind=engine, autoflush=False, autocommit=False)
        return {"status": "ok"}

    @app.post("/verdict")
    def verdict(body: EpisodeBody):
        import sqlite3

        conn = sqlite3.connect(path_of(body.episode))
        try:
            return code_verdict(conn, world, body.task)
        finally:
            conn.close()

    def add_tool(tool):
        model, steps = arguments_model(tool), tool.impl.steps

        async def call(body: model, x_episode: str = Header()):  # type: ignore[valid-type]
            session_local = sessions.get(x_episode)
            if session_local is None:
                return JSONResponse({"error": f"no episode {x_episode!r}: POST /reset first"}, status_code=404)
            session = session_local()
            try:
                ok, out = run_steps(lambda sql, bind: session.execute(texts[sql], bind), steps,
                                    bindable(body.model_dump(by_alias=True)), lambda result: list(result.keys()))
                session.commit() if ok else session.rollback()
            except exc.IntegrityError as e:
                session.rollback()
                ok, out = False, {"error": f"{tool.name}: rejected by the database: {e.orig}"}
            finally:
                session.close()
            return out if ok else JSONResponse(out, status_code=400)

        app.post(f"/tools/{tool.name}", operation_id=tool.name, summary=tool.description)(call)

    for tool in world.tools:
        if tool.impl.kind == "sql":
            add_tool(tool)

    # MCP: every endpoint is a tool; tools/call forwards to its route in-process (ASGI).
    listing = [types.Tool(name=t.name, description=t.description, input_schema=t.parameters) for t in world.tools]
    asgi = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://world")

    async def list_tools(ctx, params) -> types.ListToolsResult:
        return types.ListToolsResult(tools=listing)

    async def call_tool(ctx, params) -> types.CallToolResult:
        episode = str((ctx.meta or {}).get(EPISODE_META_KEY) or "")
        r = await asgi.post(f"/tools/{params.name}", json=params.arguments or {}, headers={"x-episode": episode})
        return types.CallToolResult(content=[types.TextContent(type="text", text=r.text)], is_error=r.is_error)

    server = Server(f"awm-{world.id}", on_list_tools=list_tools, on_call_tool=call_tool)
    return server.streamable_http_app(host="127.0.0.1", custom_starlette_routes=[Mount("/", app=app)])


def serve(world_path: str, db_dir: str) -> None:
    """The world's server process: print the port it listens on, then serve until killed."""
    import uvicorn

    from envgen.world import load

    app = build_app(load(world_path), db_dir)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)  # uvicorn's backlog; connections made before uvicorn runs wait in it
    print(sock.getsockname()[1], flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_keep_alive=120)).run(sockets=[sock])


def start_servers(paths: list[str], db_dir: str) -> list[tuple[subprocess.Popen, str]]:
    """Start one server process per world file (all at once), each answering at the URL returned."""
    procs = [subprocess.Popen([sys.executable, "-m", "experiments.awm_stack", p, db_dir], stdout=subprocess.PIPE, text=True)
             for p in paths]
    out = []
    for p, path in zip(procs, paths):
        line = p.stdout.readline()
        if not line.strip():
            for q in procs:
                q.kill()
            raise SystemExit(f"the AWM-stack server for {path} exited at start-up (run `python -m experiments.awm_stack {path} {db_dir}` to see why)")
        out.append((p, f"http://127.0.0.1:{int(line)}"))
    return out


def run_awm_baseline(plan, concurrency: int, progress, per_episode_server: bool = False, db_dir: str | None = None) -> dict:
    """Run the plan's episodes on AWM's stack: a server per world (or per episode), MCP tool calls."""
    import anyio
    import httpx
    import mcp
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import MCP_DEFAULT_SSE_READ_TIMEOUT, MCP_DEFAULT_TIMEOUT

    from envgen.world import dumps

    tmp = tempfile.mkdtemp(prefix="bench-awm-stack-", dir=db_dir)
    paths: dict[str, str] = {}
    for w in {w.id: w for w, _, _ in plan}.values():
        paths[w.id] = os.path.join(tmp, f"{w.id}.json")
        with open(paths[w.id], "w") as f:
            f.write(dumps(w))
    servers: list[subprocess.Popen] = []
    urls: dict[str, str] = {}
    startup_s = 0.0
    if not per_episode_server:
        t0 = time.perf_counter()
        for wid, (p, url) in zip(paths, start_servers(list(paths.values()), tmp)):
            servers.append(p)
            urls[wid] = url
        startup_s = time.perf_counter() - t0  # all started at once: the wall to have them all up
    resets_us: list[float] = []
    refused: list[str] = []  # calls the world refused (cycled gold calls repeat writes that a guard then refuses)

    async def episode(http, i: int, ready=None, go=None, done=None, release=None):
        w, t, calls = plan[i]
        server = None
        if per_episode_server:
            [(server, url)] = await anyio.to_thread.run_sync(start_servers, [paths[w.id]], tmp)
        else:
            url = urls[w.id]
        try:
            t1 = time.perf_counter()
            (await http.post(url + "/reset", json={"episode": str(i)})).raise_for_status()
            if ready is None:
                resets_us.append((time.perf_counter() - t1) * 1e6)
            async with mcp.Client(streamable_http_client(url + "/mcp", http_client=mcp_http), mode="legacy") as client:
                if ready is not None:  # calls-alone timing: wait until the wave is reset and connected
                    ready()
                    await go.wait()
                for c in calls:
                    r = await client.call_tool(c.tool, c.arguments, meta={EPISODE_META_KEY: str(i)})
                    if r.is_error and ready is None:
                        refused.append(c.tool)
                if done is not None:
                    done()
                    await release.wait()
            v = await http.post(url + "/verdict", json={"episode": str(i), "task": t.id})
            v.raise_for_status()
        finally:
            if server is not None:
                server.kill()
                await anyio.to_thread.run_sync(server.wait)
        progress.update(1)
        return v.json()["result"]

    # One HTTP client (keep-alive) for the harness's requests and one for MCP's, shared by the
    # episodes: the SDK would otherwise build a client (and its TLS context) per MCP session.
    # MCP's has the SDK's timeouts and no connection cap (each session holds a GET stream open).
    mcp_http = None

    def create_mcp_http_client():
        import httpx2

        return httpx2.AsyncClient(timeout=httpx2.Timeout(MCP_DEFAULT_TIMEOUT, read=MCP_DEFAULT_SSE_READ_TIMEOUT),
                                  limits=httpx2.Limits(max_connections=None, max_keepalive_connections=None))

    async def whole_episodes() -> tuple[list[str], float]:
        nonlocal mcp_http
        results: list[str] = [""] * len(plan)
        limit = anyio.Semaphore(concurrency)
        mcp_http = create_mcp_http_client()
        async with mcp_http, httpx.AsyncClient(limits=httpx.Limits(max_connections=None), timeout=120) as http:

            async def one(i):
                async with limit:
                    results[i] = await episode(http, i)

            if not per_episode_server:  # untimed: each server's first requests, and the client's first session
                for url in urls.values():
                    (await http.post(url + "/reset", json={"episode": "warm-up"})).raise_for_status()
                    async with mcp.Client(streamable_http_client(url + "/mcp", http_client=mcp_http), mode="legacy") as client:
                        await client.list_tools()
            t0 = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for i in range(len(plan)):
                    tg.start_soon(one, i)
            return results, time.perf_counter() - t0

    async def calls_alone() -> float:
        """Waves of `concurrency` episodes: reset and MCP-initialized untimed, then all their calls timed at once."""
        nonlocal mcp_http
        total = 0.0
        mcp_http = create_mcp_http_client()
        async with mcp_http, httpx.AsyncClient(limits=httpx.Limits(max_connections=None), timeout=120) as http:
            for lo in range(0, len(plan), concurrency):
                wave = range(lo, min(lo + concurrency, len(plan)))
                go, release, all_ready, all_done = anyio.Event(), anyio.Event(), anyio.Event(), anyio.Event()
                count = {"ready": 0, "done": 0}

                def mark(key, event, n=len(wave)):
                    count[key] += 1
                    if count[key] == n:
                        event.set()

                async with anyio.create_task_group() as tg:
                    for i in wave:
                        tg.start_soon(lambda i=i: episode(http, i, lambda: mark("ready", all_ready), go,
                                                          lambda: mark("done", all_done), release))
                    await all_ready.wait()
                    t0 = time.perf_counter()
                    go.set()
                    await all_done.wait()
                    total += time.perf_counter() - t0
                    release.set()
        return total

    try:
        results, wall = anyio.run(whole_episodes)
        calls_wall = None
        if not per_episode_server:
            calls_wall = anyio.run(calls_alone)
    finally:  # a failed run must not leave its servers behind
        for p in servers:
            p.kill()
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"episodes": len(plan), "wall": wall, "reset_us": statistics.median(resets_us), "startup_s": startup_s / max(1, len(servers)),
            "complete": results.count("complete"), "calls_wall": calls_wall, "refused": len(refused)}


if __name__ == "__main__":
    serve(*sys.argv[1:3])
