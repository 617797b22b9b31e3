"""Benchmark: the envgen state pool against AWM-style runtimes, measured in the same run.

Every side runs the same kind of episodes over the same procedural worlds: reset, 8 tool
calls (the task's gold calls, cycled to 8), and a code verdict; the table prints each
side's verdicts and refused calls so the answers can be compared.

(a) Lean baseline (`--baseline lean`): one stdlib ThreadingHTTPServer per world in its own
    process on loopback; reset rebuilds the episode's SQLite database FILE from the DDL and
    the seed INSERTs; each tool call is a plain HTTP/JSON request whose handler validates
    the arguments and runs the same SQL steps on a raw `sqlite3` file connection, one
    transaction per request. A lower bound for AWM: none of AWM's framework layers. Run on
    a subset (slow side), with 128 client threads by default: it mostly waits on file
    syncs, so its rate grows with concurrency until both cores are busy (measured on 2
    cores: 63 eps/s at 32 threads, 105 at 64, 140 at 128 and 256); its servers listen with
    uvicorn's backlog (2048), as the stdlib's (5) resets connections under that load.
    (a') the same, with a server process started per episode, as AWM's RL runs 1,024
    instances each with its own server (start-up included in the rate).
(c) AWM-stack baseline (`--baseline awm`, experiments/awm_stack.py): AWM's own stack built
    from each world: a FastAPI app per world (one route per tool, a pydantic model of its
    arguments from the JSON Schema, an `async def` handler opening a SQLAlchemy Session on
    an engine bound to the episode's database file and running the same SQL steps as bound
    statements, then commit / close), served by uvicorn in its own process on loopback;
    each tool call is an MCP tools/call over streamable HTTP (the `mcp` SDK's client, one
    initialize handshake per episode), forwarded by the server to the tool's route. Reset
    rebuilds the database FILE as in (a). Episodes run as asyncio tasks in this process
    (the MCP client's work counts, as the pool's parent does); 32 at once gave its best rate
    on 2 cores (measured over 128 episodes: 14 eps/s at 16, 20 at 32, 16 at 64, 13 at 128;
    8 or 32 servers made no difference). (c') a server started per episode.
(b) The pool: N slots over W worker processes, batched reset / step / finish, tool calls
    sent as model text (`<tool_call>...</tool_call>`), parsed and validated in the workers.
    Each round draws slots/group tasks at random from the catalog (like a GRPO step).

`--baseline both` (the default) runs (a) and (c); ratios are printed against each.
Tool calls/s are reported twice: within whole episodes (episodes/s x 8, so the same ratio
as episodes/s) and for the calls alone (the pool's step batches timed apart from reset and
finish; a baseline's calls timed in waves of its concurrency, after untimed resets).

    python -m experiments.bench_pool                 # full size: 1,024 slots
    python -m experiments.bench_pool --slots 128 --rounds 2 --baseline-episodes 32 --awm-episodes 32   # quick
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CALLS_PER_EPISODE = 8
AWM_CONCURRENCY = 32  # the AWM-stack baseline's concurrent episodes: its best rate on 2 cores (see the docstring)


# --------------------------------------------------------------------------- workload


def load_worlds(n: int, seed: int):
    """Procedural worlds that have tasks with gold sequences."""
    from envgen.procgen import generate_worlds

    return [w for w in generate_worlds(n, seed) if any(t.gold for t in w.tasks)]


def episode_plan(worlds, n_episodes: int, group: int, rng):
    """(world, task, calls) per episode: GRPO groups of `group` episodes of one task, tasks drawn at random."""
    pairs = [(w, t) for w in worlds for t in w.tasks if t.gold]
    plan = []
    for _ in range(-(-n_episodes // group)):
        w, t = rng.choice(pairs)
        calls = [t.gold[i % len(t.gold)] for i in range(CALLS_PER_EPISODE)]
        plan += [(w, t, calls)] * group
    return plan[:n_episodes]


# --------------------------------------------------------------------------- (a) AWM-style baseline


def run_steps(execute, steps, bind: dict, columns) -> tuple[bool, dict]:
    """A SQL tool's steps as the pool runs them (`envgen.sqltool`), on any DB-API-style `execute(sql, bind)`.

    Returns (ok, payload), the payload as the pool gives it: read outputs, saved ids,
    changed-row counts, or `{"error": ...}` with the guard's message filled in (not ok: the
    caller rolls back).
    """
    from envgen.sqltool import _fill

    out: dict = {}
    for step in steps:
        cur = execute(step.sql, bind)
        if step.op == "guard":
            row = cur.fetchone()
            ok = (row is not None) if step.expect == "exists" else (row is None if step.expect == "absent" else bool(row and row[0]))
            if not ok:
                return False, {"error": _fill(step.error or "request refused", bind)}
        elif step.op == "read":
            names = columns(cur)
            rows = cur.fetchall()
            out[step.output] = {"count": lambda: len(rows), "value": lambda: rows[0][0] if rows else None,
                                "row": lambda: dict(zip(names, rows[0])) if rows else None,
                                "rows": lambda: [dict(zip(names, r)) for r in rows]}[step.shape]()
        else:
            returned = cur.fetchall() if getattr(cur, "returns_rows", True) else []  # SQLAlchemy: DML has no rows to fetch
            if step.save:
                bind[step.save] = out[step.save] = returned[0][0] if returned else cur.lastrowid
            if step.output:
                out[step.output] = cur.rowcount
    return True, out or {"status": "ok"}


def bindable(args: dict) -> dict:
    """Arguments as SQLite binds them (lists and objects as JSON text, booleans as 0 / 1), as the pool does."""
    from envgen.sqltool import _bindable

    return {k: _bindable(v) for k, v in args.items()}


def _run_tool_sqlite(conn, tool, validate, arguments):
    args, err = validate(arguments)
    if err:
        return {"error": err}
    conn.execute("BEGIN")
    try:
        ok, out = run_steps(conn.execute, tool.impl.steps, bindable(args), lambda cur: [d[0] for d in cur.description or ()])
        conn.execute("COMMIT" if ok else "ROLLBACK")
    except sqlite3.Error as e:
        conn.execute("ROLLBACK")
        return {"error": str(e)}
    return out


def rebuild_db_file(world, path: str, foreign_keys: bool = True) -> sqlite3.Connection:
    """AWM's reset: a fresh database FILE at `path` from the world's DDL and seed INSERTs (one transaction)."""
    if os.path.exists(path):
        os.remove(path)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    if foreign_keys:
        conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("BEGIN")
    conn.execute("PRAGMA defer_foreign_keys = ON")
    for ddl in world.schema:
        conn.execute(ddl)
    for table, spec in world.seed.items():
        cols = spec["columns"]
        conn.executemany(f'INSERT INTO "{table}" ({", ".join(cols)}) VALUES ({", ".join("?" * len(cols))})', spec["rows"])
    conn.execute("COMMIT")
    return conn


def code_verdict(conn: sqlite3.Connection, world, task_id: str) -> dict:
    """The task's code verdict on the episode's database: its SQL assertions over the final state."""
    from envgen.checks import compare

    held = [compare(conn.execute(a.sql).fetchone()[0], a.op, a.value) for a in world.task(task_id).check.assertions]
    return {"result": "complete" if all(held) else "incomplete", "assertions": held}


def serve_world(world_path: str, db_dir: str) -> None:
    """The per-world server process of the baseline (AWM: one FastAPI server per environment)."""
    from envgen.args import compile_validator
    from envgen.world import load

    world = load(world_path)
    tools = {t.name: (t, compile_validator(t.parameters)) for t in world.tools}
    conns: dict[str, sqlite3.Connection] = {}

    def reset(ep: str):
        if ep in conns:
            conns.pop(ep).close()
        conns[ep] = rebuild_db_file(world, os.path.join(db_dir, f"{world.id}-{ep}.db"))
        return {"status": "ok"}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path == "/reset":
                out = reset(body["episode"])
            elif self.path == "/call":
                tool = tools.get(body["name"])
                out = {"error": "unknown tool"} if tool is None else _run_tool_sqlite(conns[body["episode"]], *tool, body["arguments"])
            else:
                out = code_verdict(conns[body["episode"]], world, body["task"])
            data = json.dumps(out, default=str).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    class Server(ThreadingHTTPServer):
        request_queue_size = 2048  # uvicorn's default backlog (the stdlib's 5 resets connections under load)

    server = Server(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


def _start_server(path: str, tmp: str) -> tuple[subprocess.Popen, int]:
    p = subprocess.Popen([sys.executable, "-m", "experiments.bench_pool", "--serve", path, tmp], stdout=subprocess.PIPE, text=True)
    return p, int(p.stdout.readline())


def run_baseline(worlds, plan, concurrency: int, progress, per_episode_server: bool = False):
    """Run the plan's episodes over HTTP: one server per world, or (AWM's RL setup) one per episode."""
    from envgen.world import dumps

    tmp = tempfile.mkdtemp(prefix="bench-awm-")
    servers, ports, paths = [], {}, {}
    t0 = time.perf_counter()
    for w in {w.id: w for w, _, _ in plan}.values():
        paths[w.id] = path = os.path.join(tmp, f"{w.id}.json")
        with open(path, "w") as f:
            f.write(dumps(w))
        if not per_episode_server:
            p, ports[w.id] = _start_server(path, tmp)
            servers.append(p)
    startup_s = (time.perf_counter() - t0) / max(1, len(servers))

    def post(conn, path, doc):
        body = json.dumps(doc)
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        return json.loads(conn.getresponse().read())

    resets_us, refused = [], []

    def episode(i):
        w, t, calls = plan[i]
        server = None
        if per_episode_server:
            server, port = _start_server(paths[w.id], tmp)
        conn = http.client.HTTPConnection("127.0.0.1", port if server else ports[w.id])
        t1 = time.perf_counter()
        post(conn, "/reset", {"episode": str(i)})
        resets_us.append((time.perf_counter() - t1) * 1e6)
        for c in calls:
            if "error" in post(conn, "/call", {"episode": str(i), "name": c.tool, "arguments": c.arguments}):
                refused.append(c.tool)
        v = post(conn, "/verdict", {"episode": str(i), "task": t.id})
        conn.close()
        if server is not None:
            server.kill()
            server.wait()
        progress.update(1)
        return v["result"]

    try:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as ex:
            results = list(ex.map(episode, range(len(plan))))
        wall = time.perf_counter() - t0
        calls_wall = None
        if not per_episode_server:
            # Tool calls alone: waves of `concurrency` episodes are reset (untimed), then all their
            # calls are made at once and timed, like the pool's step batches.
            conns: dict[int, http.client.HTTPConnection] = {}

            def reset_only(i):
                conns[i] = http.client.HTTPConnection("127.0.0.1", ports[plan[i][0].id])
                post(conns[i], "/reset", {"episode": str(i)})

            def calls_only(i):
                for c in plan[i][2]:
                    post(conns[i], "/call", {"episode": str(i), "name": c.tool, "arguments": c.arguments})

            calls_wall = 0.0
            with ThreadPoolExecutor(concurrency) as ex:
                for lo in range(0, len(plan), concurrency):
                    wave = range(lo, min(lo + concurrency, len(plan)))
                    list(ex.map(reset_only, wave))
                    t0 = time.perf_counter()
                    list(ex.map(calls_only, wave))
                    calls_wall += time.perf_counter() - t0
                    for i in wave:
                        conns.pop(i).close()
    finally:  # a failed run must not leave its servers behind
        for p in servers:
            p.kill()
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"episodes": len(plan), "wall": wall, "reset_us": statistics.median(resets_us), "startup_s": startup_s,
            "complete": results.count("complete"), "calls_wall": calls_wall, "refused": len(refused)}


# --------------------------------------------------------------------------- (b) the pool


def run_pool(worlds, n_slots: int, workers: int | None, rounds: int, group: int, rng, progress, prepare: bool = True):
    """Run `rounds` rounds of `n_slots` episodes over the pool, each round a fresh random draw of tasks."""
    from envgen.pool import Pool

    def text(c):
        return f'<tool_call>{{"name": "{c.tool}", "arguments": {json.dumps(c.arguments)}}}</tool_call>'

    plans = [episode_plan(worlds, n_slots, group, rng) for _ in range(rounds)]
    texts = [[[text(c) for c in calls] for _, _, calls in plan] for plan in plans]
    with Pool(n_slots, workers) as pool:
        base = pool.stats()
        t0 = time.perf_counter()
        pool.register(worlds, preload=True)
        compile_s = time.perf_counter() - t0
        cpu0, parent_cpu0 = pool.stats(), time.process_time()  # the catalog is compiled: slots' memory counts from here
        resets = {"rollback": [], "deserialize": []}
        outcomes: dict[str, int] = {}
        complete = episodes = 0
        step_wall = 0.0
        t0 = time.perf_counter()
        for plan, plan_texts in zip(plans, texts):
            if prepare:  # a trainer calls this before its update; here it runs inside the timed loop
                pool.prepare([(s, w.id) for s, (w, _, _) in enumerate(plan)])
            for res in pool.reset([(s, w.id, t.id) for s, (w, t, _) in enumerate(plan)]):
                if res.outcome == "ok":
                    resets[res.method].append(res.micros)
            for k in range(CALLS_PER_EPISODE):
                batch = [(s, tx[k]) for s, tx in enumerate(plan_texts)]
                t1 = time.perf_counter()
                observations = pool.step(batch)
                step_wall += time.perf_counter() - t1
                for obs in observations:
                    outcomes[obs.outcome] = outcomes.get(obs.outcome, 0) + 1
            fin = pool.finish(list(range(n_slots)), [t.answer for _, t, _ in plan])
            complete += sum(1 for f in fin if f.verdict and f.verdict["result"] == "complete")
            episodes += n_slots
            progress.update(n_slots)
        wall = time.perf_counter() - t0
        parent_cpu = time.process_time() - parent_cpu0
        after = pool.stats()
        # one more draw, untimed and without prepare, to measure resets that must deserialize
        plan = episode_plan(worlds, n_slots, group, rng)
        cold = {"rollback": [], "deserialize": []}
        for res in pool.reset([(s, w.id, t.id) for s, (w, t, _) in enumerate(plan)]):
            if res.outcome == "ok":
                cold[res.method].append(res.micros)
        pool.finish(list(range(n_slots)))
    worker_cpu = sum(a["cpu_s"] - c["cpu_s"] for a, c in zip(after, cpu0))
    rss = sum(a["rss"] - b["rss"] for a, b in zip(after, cpu0)) / n_slots
    catalog = sum(c["rss"] - b["rss"] for c, b in zip(cpu0, base)) / len(worlds)
    sqlite_mem = sum(a["sqlite_memory"] for a in after) / n_slots
    return {"episodes": episodes, "wall": wall, "resets": resets, "outcomes": outcomes, "complete": complete,
            "rss_per_slot": rss, "catalog_per_world": catalog, "sqlite_per_slot": sqlite_mem, "workers": len(after), "compile_s": compile_s,
            "cpu_s": worker_cpu + parent_cpu, "worker_cpu_s": worker_cpu, "cold": cold, "step_wall": step_wall}


# --------------------------------------------------------------------------- main


def _baseline_rows(b, b1, p_eps: float, p_alone: float) -> dict:
    """The table rows of one baseline (run `b`, server-per-episode run `b1`) against the pool."""
    b_eps = b["episodes"] / b["wall"]
    b_alone = b["episodes"] * CALLS_PER_EPISODE / b["calls_wall"]
    rows = {
        "episodes run": (f"{b['episodes']}", ""),
        "episodes/s": (f"{b_eps:,.1f}", f"{p_eps / b_eps:,.0f}x"),
        "tool calls/s in whole episodes": (f"{b_eps * CALLS_PER_EPISODE:,.0f}", f"{p_eps / b_eps:,.0f}x"),
        "tool calls/s, calls alone": (f"{b_alone:,.0f}", f"{p_alone / b_alone:,.0f}x"),
        "median reset (us)": (f"{b['reset_us']:,.0f}", ""),
        "start-up per world (s)": (f"{b['startup_s']:.3f}", ""),
        "verdicts complete": (f"{b['complete']}/{b['episodes']}", ""),
        "gold calls refused": (f"{b['refused']} ({b['refused'] / b['episodes']:.2f}/ep)", ""),
    }
    if b1:
        b1_eps = b1["episodes"] / b1["wall"]
        rows["episodes/s, a server per episode"] = (f"{b1_eps:,.2f} ({b1['episodes']} eps)", f"{p_eps / b1_eps:,.0f}x")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worlds", type=int, default=1000, help="procedural worlds in the catalog (default 1000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--slots", type=int, default=1024, help="concurrent pool slots (default 1024)")
    ap.add_argument("--workers", type=int, default=None, help="pool worker processes (default: one per core)")
    ap.add_argument("--rounds", type=int, default=4, help="pool rounds of `slots` episodes (default 4)")
    ap.add_argument("--group", type=int, default=16, help="GRPO group size (default 16)")
    ap.add_argument("--baseline", choices=("lean", "awm", "both"), default="both",
                    help="lean: stdlib HTTP + sqlite3 servers; awm: AWM's stack (FastAPI + SQLAlchemy + uvicorn, MCP calls); both (default)")
    ap.add_argument("--baseline-episodes", type=int, default=512, help="lean baseline episodes (default 512)")
    ap.add_argument("--baseline-worlds", type=int, default=8, help="worlds (servers) each baseline uses (default 8)")
    ap.add_argument("--baseline-concurrency", type=int, default=128,
                    help="lean baseline client threads (default 128: the baseline waits on file syncs, and its rate "
                         "grows with concurrency up to about 128 on 2 cores, where it is CPU-bound)")
    ap.add_argument("--baseline-instance-episodes", type=int, default=64,
                    help="lean episodes of the AWM RL variant that starts a server per episode (default 64; 0 skips)")
    ap.add_argument("--awm-episodes", type=int, default=256, help="AWM-stack baseline episodes (default 256)")
    ap.add_argument("--awm-concurrency", type=int, default=AWM_CONCURRENCY,
                    help=f"AWM-stack concurrent episodes, asyncio tasks (default {AWM_CONCURRENCY}: its best rate on 2 cores)")
    ap.add_argument("--awm-instance-episodes", type=int, default=16,
                    help="AWM-stack episodes with a server started per episode (default 16; 0 skips)")
    ap.add_argument("--awm-instance-concurrency", type=int, default=8,
                    help="AWM-stack episodes at once when each starts its server (default 8)")
    ap.add_argument("--no-prepare", action="store_true", help="reset without pool.prepare (resets mostly deserialize)")
    ap.add_argument("--serve", nargs=2, metavar=("WORLD_JSON", "DB_DIR"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.serve:
        serve_world(*a.serve)
        return 0
    from tqdm import tqdm

    from experiments.awm_stack import run_awm_baseline

    worlds = load_worlds(a.worlds, a.seed)
    print(f"{len(worlds)} procedural worlds (seed {a.seed}); episodes: reset + {CALLS_PER_EPISODE} tool calls + verdict; {os.cpu_count()} CPUs")
    rng = random.Random(a.seed)
    base_worlds = worlds[: a.baseline_worlds]
    sides = {}  # baseline name -> (run, server-per-episode run)
    if a.baseline in ("lean", "both"):
        plan = episode_plan(base_worlds, a.baseline_episodes, a.group, rng)
        with tqdm(total=len(plan), desc="(a) lean baseline", unit="ep") as bar:
            b = run_baseline(worlds, plan, a.baseline_concurrency, bar)
        b1 = None
        if a.baseline_instance_episodes:
            plan = episode_plan(base_worlds, a.baseline_instance_episodes, a.group, rng)
            with tqdm(total=len(plan), desc="(a) lean, a server per episode", unit="ep") as bar:
                b1 = run_baseline(worlds, plan, a.baseline_concurrency, bar, per_episode_server=True)
        sides["lean"] = (b, b1)
    if a.baseline in ("awm", "both"):
        plan = episode_plan(base_worlds, a.awm_episodes, a.group, rng)
        with tqdm(total=2 * len(plan), desc="(c) AWM-stack baseline (whole episodes, then calls alone)", unit="ep") as bar:
            b = run_awm_baseline(plan, a.awm_concurrency, bar)
        b1 = None
        if a.awm_instance_episodes:
            plan = episode_plan(base_worlds, a.awm_instance_episodes, a.group, rng)
            with tqdm(total=len(plan), desc="(c) AWM stack, a server per episode", unit="ep") as bar:
                b1 = run_awm_baseline(plan, a.awm_instance_concurrency, bar, per_episode_server=True)
        sides["awm"] = (b, b1)
    with tqdm(total=a.slots * a.rounds, desc="(b) envgen pool", unit="ep") as bar:
        p = run_pool(worlds, a.slots, a.workers, a.rounds, a.group, rng, bar, prepare=not a.no_prepare)

    p_eps = p["episodes"] / p["wall"]
    p_alone = p["episodes"] * CALLS_PER_EPISODE / p["step_wall"]
    roll, deser = p["resets"]["rollback"], p["resets"]["deserialize"]
    cold_r, cold_d = p["cold"]["rollback"], p["cold"]["deserialize"]
    med = lambda xs: statistics.median(xs) if xs else float("nan")  # noqa: E731
    pool = {
        "concurrent episodes": f"{a.slots} slots / {p['workers']} workers",
        "episodes run": f"{p['episodes']}",
        "episodes/s": f"{p_eps:,.1f}",
        "tool calls/s in whole episodes": f"{p_eps * CALLS_PER_EPISODE:,.0f}",
        "tool calls/s, calls alone": f"{p_alone:,.0f}",
        "episodes/s, a server per episode": f"{p_eps:,.1f}",
        "median reset (us)": f"{med(roll + deser):,.1f}",
        "start-up per world (s)": f"{p['compile_s'] / len(worlds):.3f} (compile)",
        "verdicts complete": f"{p['complete']}/{p['episodes']}",
        "gold calls refused": f"{p['outcomes'].get('tool_error', 0)} ({p['outcomes'].get('tool_error', 0) / p['episodes']:.2f}/ep)",
    }
    notes = {
        "episodes/s": "target: pool >= 100x the AWM-style runtime",
        "tool calls/s in whole episodes": f"episodes/s x {CALLS_PER_EPISODE}; pool target >= 20,000",
        "tool calls/s, calls alone": "target >= 20x; only the calls timed (pool.step batches; baselines: waves after untimed resets)",
        "episodes/s, a server per episode": "AWM's RL runtime starts a server per instance (start-up in the rate)",
        "median reset (us)": "baselines rebuild the file over HTTP; pool target < 50 us"
                             + ("" if a.no_prepare else " (worlds loaded by pool.prepare, timed in the rates)"),
        "start-up per world (s)": "in no side's rates",
        "verdicts complete": f"gold calls cycled to {CALLS_PER_EPISODE}",
        "gold calls refused": "cycled gold calls repeat writes that a guard then refuses (tasks drawn at random per side)",
    }
    base = {name: _baseline_rows(b, b1, p_eps, p_alone) for name, (b, b1) in sides.items()}
    if "lean" in sides:
        base["lean"]["concurrent episodes"] = (f"{a.baseline_concurrency} threads, {len(base_worlds)} servers", "")
    if "awm" in sides:
        base["awm"]["concurrent episodes"] = (f"{a.awm_concurrency} tasks, {len(base_worlds)} servers", "")
    heads = {"lean": "(a) lean", "awm": "(c) AWM stack"}
    table = [["", *(heads[n] for n in base), "(b) pool", *(f"pool / {heads[n][4:]}" for n in base), "note"]]
    for key, pval in pool.items():
        cells = [base[n].get(key, ("", "")) for n in base]
        if all(not c[0] for c in cells) and key not in ("concurrent episodes",):
            continue
        table.append([key, *(c[0] for c in cells), pval, *(c[1] for c in cells), notes.get(key, "")])
    table += [
        ["  rollback / deserialize (us)", *("" for _ in base), f"{med(roll):,.1f} (n={len(roll)}) / {med(deser):,.1f} (n={len(deser)})", *("" for _ in base), ""],
        ["  next draw without prepare", *("" for _ in base), f"{med(cold_r):,.1f} (n={len(cold_r)}) / {med(cold_d):,.1f} (n={len(cold_d)})",
         *("" for _ in base), "rollback where a connection held the world"],
        ["tool calls per CPU-second", *("" for _ in base), f"{p['episodes'] * CALLS_PER_EPISODE / p['cpu_s']:,.0f}", *("" for _ in base),
         f"workers + parent; {p['cpu_s'] / p['wall']:.2f} of {os.cpu_count()} cores were ours (load avg {os.getloadavg()[0]:.1f})"],
        ["memory per live slot", *("" for _ in base), f"{p['rss_per_slot'] / 1024:,.0f} KiB RSS, {p['sqlite_per_slot'] / 1024:,.0f} KiB SQLite",
         *("" for _ in base), "target < 1 MiB; RSS growth from the compiled catalog to the end of the run"],
        ["memory per compiled world", *("" for _ in base), f"{p['catalog_per_world'] / 1024:,.0f} KiB RSS, all {p['workers']} workers",
         *("" for _ in base), "template image + schema facts + JSON, once per world and worker"],
        ["pool step outcomes", *("" for _ in base), ", ".join(f"{k} {v}" for k, v in sorted(p["outcomes"].items())), *("" for _ in base), ""],
    ]
    print()
    if "lean" in base:
        print("(a) lean baseline: a stdlib ThreadingHTTPServer per world, handler on a raw sqlite3 connection, plain HTTP/JSON calls")
    if "awm" in base:
        print("(c) AWM-stack baseline: a FastAPI + pydantic + SQLAlchemy app per world under uvicorn, tool calls as MCP tools/call "
              "over streamable HTTP (mcp SDK client, one initialize per episode)")
    print("(b) envgen pool: in-memory APSW slots over worker processes, calls as model text\n")
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
    for r in table:
        print("  ".join(f"{c:{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(r, widths))) + "  " + r[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
