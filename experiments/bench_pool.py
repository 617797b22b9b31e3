"""Benchmark: the envgen state pool against an AWM-style runtime, measured in the same run.

Both sides run the same episodes over the same procedural worlds: reset, 8 tool calls
(the task's gold calls, cycled to 8), and a code verdict.

(a) AWM-style baseline, built here as AWM runs it: one HTTP server per world
    (stdlib ThreadingHTTPServer in its own process, on loopback); reset rebuilds the
    episode's SQLite database FILE from the DDL and the seed INSERTs; each tool call is an
    HTTP request whose handler validates the arguments and runs the same SQL steps on a
    `sqlite3` file connection, one transaction per request. Run on a subset (slow side),
    with 128 client threads by default: the baseline mostly waits on file syncs, so its
    rate grows with concurrency until both cores are busy (measured on 2 cores: 63 eps/s
    at 32 threads, 105 at 64, 140 at 128 and 256); its servers listen with uvicorn's
    backlog (2048), as the stdlib's (5) resets connections under that load.
    (a') the same, with a server process started per episode, as AWM's RL runs 1,024
    instances each with its own server (start-up included in the rate).
(b) The pool: N slots over W worker processes, batched reset / step / finish, tool calls
    sent as model text (`<tool_call>...</tool_call>`), parsed and validated in the workers.
    Each round draws slots/group tasks at random from the catalog (like a GRPO step).

Tool calls/s are reported twice: within whole episodes (episodes/s x 8, so the same ratio
as episodes/s) and for the calls alone (the pool's step batches timed apart from reset and
finish; the baseline's calls timed in waves of its concurrency, after untimed resets).

    python -m experiments.bench_pool                 # full size: 1,024 slots
    python -m experiments.bench_pool --slots 128 --rounds 2 --baseline-episodes 32   # quick
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


def _run_tool_sqlite(conn, tool, validate, arguments):
    args, err = validate(arguments)
    if err:
        return {"error": err}
    bind = {k: (json.dumps(v) if isinstance(v, (list, dict)) else int(v) if isinstance(v, bool) else v) for k, v in args.items()}
    out = {}
    conn.execute("BEGIN")
    try:
        for step in tool.impl.steps:
            cur = conn.execute(step.sql, bind)
            if step.op == "guard":
                row = cur.fetchone()
                ok = (row is not None) if step.expect == "exists" else (row is None if step.expect == "absent" else bool(row and row[0]))
                if not ok:
                    conn.execute("ROLLBACK")
                    return {"error": step.error}
            elif step.op == "read":
                names = [d[0] for d in cur.description or ()]
                rows = cur.fetchall()
                out[step.output] = {"count": lambda: len(rows), "value": lambda: rows[0][0] if rows else None,
                                    "row": lambda: dict(zip(names, rows[0])) if rows else None,
                                    "rows": lambda: [dict(zip(names, r)) for r in rows]}[step.shape]()
            else:
                returned = cur.fetchall()
                if step.save:
                    bind[step.save] = out[step.save] = returned[0][0] if returned else cur.lastrowid
        conn.execute("COMMIT")
    except sqlite3.Error as e:
        conn.execute("ROLLBACK")
        return {"error": str(e)}
    return out or {"status": "ok"}


def serve_world(world_path: str, db_dir: str) -> None:
    """The per-world server process of the baseline (AWM: one FastAPI server per environment)."""
    from envgen.args import compile_validator
    from envgen.checks import compare
    from envgen.world import load

    world = load(world_path)
    tools = {t.name: (t, compile_validator(t.parameters)) for t in world.tools}
    conns: dict[str, sqlite3.Connection] = {}

    def reset(ep: str):
        path = os.path.join(db_dir, f"{world.id}-{ep}.db")
        if ep in conns:
            conns.pop(ep).close()
        if os.path.exists(path):
            os.remove(path)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("BEGIN")
        conn.execute("PRAGMA defer_foreign_keys = ON")
        for ddl in world.schema:
            conn.execute(ddl)
        for table, spec in world.seed.items():
            cols = spec["columns"]
            conn.executemany(f'INSERT INTO "{table}" ({", ".join(cols)}) VALUES ({", ".join("?" * len(cols))})', spec["rows"])
        conn.execute("COMMIT")
        conns[ep] = conn
        return {"status": "ok"}

    def verdict(ep: str, task_id: str):
        conn, check = conns[ep], world.task(task_id).check
        held = [compare(conn.execute(a.sql).fetchone()[0], a.op, a.value) for a in check.assertions]
        return {"result": "complete" if all(held) else "incomplete", "assertions": held}

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
                out = verdict(body["episode"], body["task"])
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

    resets_us = []

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
            post(conn, "/call", {"episode": str(i), "name": c.tool, "arguments": c.arguments})
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
            "complete": results.count("complete"), "calls_wall": calls_wall}


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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worlds", type=int, default=1000, help="procedural worlds in the catalog (default 1000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--slots", type=int, default=1024, help="concurrent pool slots (default 1024)")
    ap.add_argument("--workers", type=int, default=None, help="pool worker processes (default: one per core)")
    ap.add_argument("--rounds", type=int, default=4, help="pool rounds of `slots` episodes (default 4)")
    ap.add_argument("--group", type=int, default=16, help="GRPO group size (default 16)")
    ap.add_argument("--baseline-episodes", type=int, default=512, help="baseline episodes (default 512)")
    ap.add_argument("--baseline-worlds", type=int, default=8, help="worlds (servers) the baseline uses (default 8)")
    ap.add_argument("--baseline-concurrency", type=int, default=128,
                    help="baseline client threads (default 128: the baseline waits on file syncs, and its rate "
                         "grows with concurrency up to about 128 on 2 cores, where it is CPU-bound)")
    ap.add_argument("--baseline-instance-episodes", type=int, default=64,
                    help="episodes of the AWM RL variant that starts a server per episode (default 64; 0 skips)")
    ap.add_argument("--no-prepare", action="store_true", help="reset without pool.prepare (resets mostly deserialize)")
    ap.add_argument("--serve", nargs=2, metavar=("WORLD_JSON", "DB_DIR"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.serve:
        serve_world(*a.serve)
        return 0
    from tqdm import tqdm

    worlds = load_worlds(a.worlds, a.seed)
    print(f"{len(worlds)} procedural worlds (seed {a.seed}); episodes: reset + {CALLS_PER_EPISODE} tool calls + verdict; {os.cpu_count()} CPUs")
    rng = random.Random(a.seed)
    base_plan = episode_plan(worlds[: a.baseline_worlds], a.baseline_episodes, a.group, rng)
    with tqdm(total=len(base_plan), desc="(a) AWM-style baseline", unit="ep") as bar:
        b = run_baseline(worlds, base_plan, a.baseline_concurrency, bar)
    b1 = None
    if a.baseline_instance_episodes:
        inst_plan = episode_plan(worlds[: a.baseline_worlds], a.baseline_instance_episodes, a.group, rng)
        with tqdm(total=len(inst_plan), desc="(a') AWM-style, a server per episode", unit="ep") as bar:
            b1 = run_baseline(worlds, inst_plan, a.baseline_concurrency, bar, per_episode_server=True)
    with tqdm(total=a.slots * a.rounds, desc="(b) envgen pool", unit="ep") as bar:
        p = run_pool(worlds, a.slots, a.workers, a.rounds, a.group, rng, bar, prepare=not a.no_prepare)

    b_eps, p_eps = b["episodes"] / b["wall"], p["episodes"] / p["wall"]
    b_cps, p_cps = b_eps * CALLS_PER_EPISODE, p_eps * CALLS_PER_EPISODE
    b_alone, p_alone = b["episodes"] * CALLS_PER_EPISODE / b["calls_wall"], p["episodes"] * CALLS_PER_EPISODE / p["step_wall"]
    roll, deser = p["resets"]["rollback"], p["resets"]["deserialize"]
    all_resets = roll + deser
    cold_r, cold_d = p["cold"]["rollback"], p["cold"]["deserialize"]
    med = lambda xs: statistics.median(xs) if xs else float("nan")  # noqa: E731
    rows = [
        ("concurrent episodes", f"{a.baseline_concurrency} over {len({w.id for w, _, _ in base_plan})} servers", f"{a.slots} slots / {p['workers']} workers", ""),
        ("episodes run", f"{b['episodes']}", f"{p['episodes']}", ""),
        ("episodes/s", f"{b_eps:,.1f}", f"{p_eps:,.1f}", f"{p_eps / b_eps:,.0f}x (target >= 100x)"),
        ("tool calls/s in whole episodes", f"{b_cps:,.0f}", f"{p_cps:,.0f}", f"{p_cps / b_cps:,.0f}x (episodes/s x {CALLS_PER_EPISODE}; pool target >= 20,000)"),
        ("tool calls/s, calls alone", f"{b_alone:,.0f}", f"{p_alone:,.0f}",
         f"{p_alone / b_alone:,.0f}x (target >= 20x): only the calls timed (pool.step batches; baseline waves of {a.baseline_concurrency} after untimed resets)"),
        *([("episodes/s, a server per episode", f"{b1['episodes'] / b1['wall']:,.1f}", f"{p_eps:,.1f}",
            f"{p_eps / (b1['episodes'] / b1['wall']):,.0f}x: AWM's RL runtime starts a server per instance")] if b1 else []),
        ("tool calls per CPU-second", "", f"{p['episodes'] * CALLS_PER_EPISODE / p['cpu_s']:,.0f}",
         f"workers + parent; {p['cpu_s'] / p['wall']:.2f} of {os.cpu_count()} cores were ours (load avg {os.getloadavg()[0]:.1f})"),
        ("median reset (us)", f"{b['reset_us']:,.0f} (rebuild file, HTTP)", f"{med(all_resets):,.1f}", "target < 50 us" + ("" if a.no_prepare else "; worlds loaded by pool.prepare first (timed in the rates)")),
        ("  rollback / deserialize (us)", "", f"{med(roll):,.1f} (n={len(roll)}) / {med(deser):,.1f} (n={len(deser)})", ""),
        ("  next draw without prepare", "", f"{med(cold_r):,.1f} (n={len(cold_r)}) / {med(cold_d):,.1f} (n={len(cold_d)})",
         "rollback where a connection held the world"),
        ("start-up per world (s)", f"{b['startup_s']:.3f} (server process)", f"{p['compile_s'] / len(worlds):.3f} (compile, all workers)", "in neither side's rates"),
        ("memory per live slot", "-", f"{p['rss_per_slot'] / 1024:,.0f} KiB RSS, {p['sqlite_per_slot'] / 1024:,.0f} KiB SQLite",
         "target < 1 MiB; RSS growth from the compiled catalog to the end of the run"),
        ("memory per compiled world", "-", f"{p['catalog_per_world'] / 1024:,.0f} KiB RSS, all {p['workers']} workers",
         "template image + schema facts + JSON, once per world and worker"),
        ("verdicts complete", f"{b['complete']}/{b['episodes']}", f"{p['complete']}/{p['episodes']}", "gold calls cycled to 8"),
        ("pool step outcomes", "", ", ".join(f"{k} {v}" for k, v in sorted(p["outcomes"].items())), ""),
    ]
    w0, w1, w2 = (max(len(r[i]) for r in rows) for i in range(3))
    print(f"\n{'':{w0}}  {'(a) AWM-style':>{w1}}  {'(b) envgen pool':>{w2}}  ratio / note")
    for r in rows:
        print(f"{r[0]:{w0}}  {r[1]:>{w1}}  {r[2]:>{w2}}  {r[3]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
