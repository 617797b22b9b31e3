"""Benchmark: an imported AgentWorldModel-1K world run by awmjax versus AWM's own way, same run.

World: content_platform_1 from AWM's published files (its FastAPI + SQLAlchemy server as
generated, 34 tools, 14 tables, 154 seed INSERTs). An episode is a reset and the same 8
tool calls (4 reads, 4 writes); both sides check that every call answers HTTP 200.

(a) AWM's way, as its RL runs every instance: reset rebuilds the episode's SQLite
    database FILE (on /dev/shm by default: no disk syncs) from the DDL and the sample
    INSERTs, starts the world's server (`python server.py`, uvicorn on loopback,
    DATABASE_PATH pointing at the file), waits
    until it answers, makes the 8 calls over HTTP (httpx, keep-alive; plain REST rather
    than MCP-over-HTTP, which would only add to AWM's side), and stops the server.
(a') the same with one server kept running: reset rebuilds the database in place (drop
    the tables, DDL, INSERTs); a lower bound for AWM, which does not reuse servers.
(b) awmjax: the world imported once (`envgen.awm_import`); reset deserializes the
    template image into an in-memory slot; each call runs the app's route in-process
    (ASGI, no socket) inside the sandbox child, against the slot's state, rows changed
    are applied to the slot and recorded in its changeset.

    python -m experiments.bench_awm_runtime                       # defaults
    python -m experiments.bench_awm_runtime --episodes 300 --awm-episodes 8 --warm-episodes 60
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCENARIO = "content_platform_1"
CALLS = [  # (tool, arguments): the episode's 8 calls
    ("search_channels", {"query": "Kurzgesagt"}),
    ("subscribe_to_channel", {"channel_id": 1}),
    ("search_videos", {"query": "Spanish"}),
    ("get_playlist_by_name", {"name": "Tech Reviews"}),
    ("get_channel_most_recent_video", {"channel_id": 2}),
    ("like_video", {"video_id": "KURZ3"}),
    ("add_video_to_playlist", {"playlist_id": 1, "video_id": "KURZ3"}),
    ("create_video_comment", {"video_id": "KURZ3", "text": "Great explanation, thanks!"}),
]
DEFAULT_AWM = Path(__file__).resolve().parents[2] / "shared" / "awm1k"


def _rows(path: Path, key: str = "scenario"):
    with open(path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row.get(key) == SCENARIO:
                return row
    raise SystemExit(f"{path} has no row for {SCENARIO}; point --awm at AWM's files")


def awm_sources(awm: Path) -> tuple[list[str], list[str], str]:
    """AWM's own materials for the world: DDL statements, INSERT statements, server code."""
    from envgen.awm_import import _value

    db = _value(_rows(awm / "gen_db.jsonl")["db_schema"])
    ddl = [s for t in db["tables"] for s in [t["ddl"], *(t.get("indexes") or [])]]
    sample = _value(_rows(awm / "gen_sample.jsonl")["sample_data"])
    inserts = [s for t in sample["tables"] for s in t.get("insert_statements") or []]
    return ddl, inserts, _rows(awm / "gen_envs.jsonl")["full_code"]


# --------------------------------------------------------------------------- (a) AWM's way


def _load(conn: sqlite3.Connection, ddl: list[str], inserts: list[str]) -> None:
    conn.execute("PRAGMA foreign_keys = ON")
    for s in ddl:
        conn.execute(s)
    for s in inserts:
        try:
            conn.execute(s)
        except sqlite3.Error:
            pass  # as AWM: a failing sample row is skipped
    conn.commit()
    conn.close()


def rebuild_db_file(path: Path, ddl: list[str], inserts: list[str]) -> None:
    """AWM's reset: a fresh database file from the DDL and the sample INSERTs (one commit)."""
    for p in (path, Path(str(path) + "-journal")):
        p.unlink(missing_ok=True)
    _load(sqlite3.connect(path), ddl, inserts)


def rebuild_in_place(path: Path, ddl: list[str], inserts: list[str]) -> None:
    """(a') reset for a running server: drop every table, then DDL and INSERTs into the same file."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA foreign_keys = OFF")
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'").fetchall():
        conn.execute(f'DROP TABLE "{name}"')
    _load(conn, ddl, inserts)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(server_py: Path, db: Path):
    """The world's server as AWM starts it; returns (process, base URL) once it answers."""
    import httpx

    port = free_port()
    env = {**os.environ, "DATABASE_PATH": f"sqlite:///{db}", "HOST": "127.0.0.1", "PORT": str(port)}
    proc = subprocess.Popen([sys.executable, str(server_py)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=server_py.parent)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/__ready", timeout=0.5)
            return proc, url
        except httpx.TransportError:
            if proc.poll() is not None:
                raise SystemExit("the world's server exited at start-up")
            time.sleep(0.01)
    proc.kill()
    raise SystemExit("the world's server did not answer within 60 s")


def http_calls(client, url: str, tools) -> list[int]:
    """The episode's calls as HTTP requests (path, query and JSON body from the spec's parameter places)."""
    from envgen.app_child import split_arguments

    statuses = []
    for name, args in CALLS:
        impl = tools[name].impl
        path, query, body = split_arguments(impl.path, impl.params, args)
        r = client.request(impl.method, url + path, params=query, json=body if body else None)
        statuses.append(r.status_code)
    return statuses


def run_awm(episodes: int, ddl, inserts, source: str, tools, workdir: Path) -> tuple[float, list[int]]:
    import httpx

    server_py, db = workdir / "server.py", workdir / "episode.db"
    server_py.write_text(source, encoding="utf-8")
    start, statuses = time.perf_counter(), []
    for _ in range(episodes):
        rebuild_db_file(db, ddl, inserts)
        proc, url = start_server(server_py, db)
        try:
            with httpx.Client() as client:
                statuses = http_calls(client, url, tools)
        finally:
            proc.terminate()
            proc.wait()
    return time.perf_counter() - start, statuses


def run_awm_warm(episodes: int, ddl, inserts, source: str, tools, workdir: Path) -> tuple[float, list[int]]:
    import httpx

    server_py, db = workdir / "server.py", workdir / "warm.db"
    server_py.write_text(source, encoding="utf-8")
    rebuild_db_file(db, ddl, inserts)
    proc, url = start_server(server_py, db)
    try:
        with httpx.Client() as client:
            http_calls(client, url, tools)  # warm-up
            start, statuses = time.perf_counter(), []
            for _ in range(episodes):
                rebuild_in_place(db, ddl, inserts)
                statuses = http_calls(client, url, tools)
            return time.perf_counter() - start, statuses
    finally:
        proc.terminate()
        proc.wait()


# --------------------------------------------------------------------------- (b) awmjax


def run_awmjax(episodes: int, world) -> tuple[float, float, list[int], dict]:
    from envgen.runtime import Episode, Slot, compile_world

    cw = compile_world(world)
    slot = Slot()
    try:
        t0 = time.perf_counter()
        ep = Episode(slot, cw)
        first = [ep.call(name, args) for name, args in CALLS]  # loads the app in the sandbox child
        ep.close()
        load = time.perf_counter() - t0
        bad = [(n, r.payload) for (n, _), r in zip(CALLS, first) if not r.ok]
        if bad:
            raise SystemExit(f"awmjax: calls failed on the imported world: {bad[:2]}")
        start = time.perf_counter()
        for _ in range(episodes):
            ep = Episode(slot, cw)
            results = [ep.call(name, args) for name, args in CALLS]
            changes = ep.changes()
            ep.close()
        seconds = time.perf_counter() - start
        return seconds, load, [200 if r.ok else 0 for r in results], {"changes_per_episode": len(changes), "reset": ep.reset_method}
    finally:
        slot.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--awm", type=Path, default=DEFAULT_AWM, help=f"folder of AWM's gen_*.jsonl files (default {DEFAULT_AWM})")
    ap.add_argument("--episodes", type=int, default=200, help="awmjax episodes (default 200)")
    ap.add_argument("--awm-episodes", type=int, default=5, help="AWM episodes, a server started per episode (default 5)")
    ap.add_argument("--warm-episodes", type=int, default=40, help="AWM episodes on one running server (default 40)")
    ap.add_argument("--db-dir", default="/dev/shm" if Path("/dev/shm").is_dir() else None,
                    help="where AWM's side writes its database files (default /dev/shm, a RAM disk, where present)")
    args = ap.parse_args()
    if not (args.awm / "gen_envs.jsonl").is_file():
        raise SystemExit(f"{args.awm} holds no gen_envs.jsonl; pass --awm DIR with AWM's files")
    from envgen.awm_import import import_awm

    report = import_awm(args.awm)
    world = next((w for w in report.worlds if report.sources[w.id] == SCENARIO), None)
    if world is None or not world.tools:
        raise SystemExit(f"{SCENARIO} did not import with tools: {[str(p) for p in report.problems if p.scenario == SCENARIO]}")
    tools = {t.name: t for t in world.tools}
    ddl, inserts, source = awm_sources(args.awm)

    rows = []
    secs, load, codes, info = run_awmjax(args.episodes, world)
    rows.append(("awmjax in-process (sandboxed ASGI)", args.episodes, secs, codes))
    # AWM's database files go on tmpfs when there is one: no fsync cost, the kindest setting for AWM's side
    with tempfile.TemporaryDirectory(prefix="bench-awm-", dir=args.db_dir) as tmp:
        s, c = run_awm_warm(args.warm_episodes, ddl, inserts, source, tools, Path(tmp))
        rows.append(("AWM, one running server (lower bound)", args.warm_episodes, s, c))
        s, c = run_awm(args.awm_episodes, ddl, inserts, source, tools, Path(tmp))
        rows.append(("AWM's way: server per episode", args.awm_episodes, s, c))

    ours = args.episodes / secs
    print(f"\nworld {SCENARIO} ({world.id}): {len(world.tools)} tools, {world.seed_row_count()} seed rows; "
          f"episode = reset + {len(CALLS)} calls; awmjax app load (once per sandbox worker) {load:.2f}s, "
          f"{info['changes_per_episode']} changed rows per episode, reset by {info['reset']}")
    print(f"{'side':<40} {'episodes':>8} {'seconds':>8} {'episodes/s':>11} {'ms/episode':>11} {'awmjax speedup':>15}  statuses")
    for name, n, s, c in rows:
        rate = n / s
        print(f"{name:<40} {n:>8} {s:>8.2f} {rate:>11.2f} {1000 / rate:>11.2f} {ours / rate:>14.1f}x  {sorted(set(c))}")


if __name__ == "__main__":
    main()
