"""State pools: many sandboxed APSW slots, sharded over worker processes, driven in batches.

    pool = Pool(n_slots=1024)                     # workers default to os.cpu_count()
    pool.register(worlds)                          # World objects or their JSON text
    pool.prepare([(slot, world_id), ...])          # optional, returns at once: load worlds ahead
    pool.reset([(slot, world_id, task_id), ...])   # -> [ResetResult]
    pool.step([(slot, model_text_or_call), ...])   # -> [Observation], one turn per slot
    pool.finish(slots, final_answers)              # -> [Finished]: changes + verdict

Slot s lives in worker s % W. Each batch is one message per worker (items grouped),
sent to every worker before any reply is read, so workers run in parallel and the
IPC cost is paid per batch, not per slot. A world's JSON crosses to a worker once,
with the first reset that needs it; the worker compiles it and caches it by id.

Reset (see `envgen.runtime.Slot`): two ways, both to the exact seeded state, measured
(bench_pool, 20-table procedural worlds, 96 KiB images, a busy 2-core machine):
- rollback to the savepoint held at the template state: about 8-12 us, and the
  connection's prepared statements stay valid;
- deserialize the template image: about 50-75 us, plus about 50 us to re-read the
  schema and a re-prepare of every statement on first use (together 2x the CPU of a
  warm episode).
So a slot rolls back whenever its connection holds the world, and deserializes only
when it must. `prepare()` moves the deserialize off the critical path.

Workers keep the connections of ended episodes at their world's template savepoint
and hand them to new episodes of the same world, whatever slot number those get (see
`envgen.pool_worker.Worker._take`), so most resets of a GRPO batch are rollbacks.

A worker that dies (killed, crashed) is replaced at once: the items it held in the
batch come back as "env_error", its other live episodes are lost (their next step or
finish reports "env_error"), and every other worker's episodes go on.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from multiprocessing.connection import wait
from typing import Any, Callable, Iterable, Sequence

from envgen import toolcalls
from envgen.db import Limits
from envgen.pool_worker import Finished, ResetResult, serve
from envgen.sandbox import SandboxLimits
from envgen.toolcalls import Observation
from envgen.world import World, dumps, loads

__all__ = ["Pool", "ResetResult", "Finished", "Observation", "WorkerDied"]


class WorkerDied(Exception):
    """A worker process ended or stopped answering."""


class _Proc:
    def __init__(self, ctx, options: dict[str, Any]):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=serve, args=(child, options), daemon=True, name="envgen-pool-worker")
        self.proc.start()
        child.close()
        self.known: set[str] = set()  # world ids this worker has compiled
        self.pending = 0  # replies not yet read

    def send(self, msg) -> None:
        try:
            self.conn.send(msg)
        except (BrokenPipeError, OSError) as e:
            raise WorkerDied(f"could not reach worker {self.proc.pid}: {e}") from None

    def recv(self, timeout: float | None):
        while self.pending:  # replies to messages sent without waiting (prepare)
            self._recv(timeout)
            self.pending -= 1
        return self._recv(timeout)

    def _recv(self, timeout: float | None):
        ready = wait([self.conn, self.proc.sentinel], timeout)
        if self.conn not in ready:
            raise WorkerDied(f"worker {self.proc.pid} " + ("died" if ready else f"did not answer within {timeout}s"))
        try:
            return self.conn.recv()
        except (EOFError, OSError) as e:
            raise WorkerDied(f"worker {self.proc.pid} died: {e}") from None

    def stop(self, kill: bool = False) -> None:
        if not kill:
            try:
                self.conn.send(("close", None, None))
            except (BrokenPipeError, OSError):
                pass
            self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join()
        self.conn.close()


class Pool:
    """N slots over W worker processes, with batched reset / step / finish."""

    def __init__(
        self,
        n_slots: int,
        workers: int | None = None,
        *,
        limits: Limits = Limits(),
        reset_method: str = "auto",
        surface: str = "direct",
        observation_chars: int = toolcalls.MAX_OBSERVATION_CHARS,
        sandbox_limits: SandboxLimits = SandboxLimits(),
        batch_timeout: float = 300.0,
        start_method: str = "spawn",
    ):
        if n_slots < 1:
            raise ValueError(f"Pool n_slots must be >= 1, got {n_slots}")
        if surface not in toolcalls.SURFACES:
            raise ValueError(f"Pool surface={surface!r}; allowed: {', '.join(toolcalls.SURFACES)}")
        self.n_slots = n_slots
        self.n_workers = max(1, min(workers or os.cpu_count() or 1, n_slots))
        self.surface, self.batch_timeout = surface, batch_timeout
        # spawn, not fork: the parent may hold JAX threads that a fork would copy broken
        self._ctx = mp.get_context(start_method)
        self._options = {"limits": limits, "reset_method": reset_method, "observation_chars": observation_chars, "sandbox_limits": sandbox_limits}
        self._worlds: dict[str, str] = {}
        self._live: set[int] = set()
        self._lost: dict[int, str] = {}  # slot -> why its episode was lost
        self.replaced = 0
        self._procs = [_Proc(self._ctx, self._options) for _ in range(self.n_workers)]

    # ------------------------------------------------------------------ worlds

    def register(self, worlds: Iterable[World | str], *, preload: bool = False) -> list[str]:
        """Make worlds known to the pool; returns their ids.

        A world is sent to a worker with the first reset there that needs it, and
        compiled then; `preload=True` sends and compiles every world in every worker now.
        """
        ids = []
        for w in worlds:
            text = dumps(w) if isinstance(w, World) else w
            wid = w.id if isinstance(w, World) else loads(text).id
            self._worlds[wid] = text
            ids.append(wid)
        if preload:
            for w, p in enumerate(self._procs):
                p.send(("preload", ids, {i: self._worlds[i] for i in ids if i not in p.known}))
            for w, p in enumerate(self._procs):
                errors = [f"{i}: {e}" for i, e in zip(ids, p.recv(self.batch_timeout)) if e]
                if errors:
                    raise ValueError(f"worlds that do not compile: {'; '.join(errors[:3])}")
                p.known |= set(ids)
        return ids

    # ------------------------------------------------------------------ batches

    def worker_of(self, slot: int) -> int:
        """Index of the worker that holds `slot`."""
        return slot % self.n_workers

    def _check_slot(self, slot: int) -> None:
        if not 0 <= slot < self.n_slots:
            raise ValueError(f"slot {slot} is out of range (the pool has {self.n_slots} slots)")

    def _run(self, op: str, items: Sequence[tuple], fail: Callable[[tuple, str], Any], worlds_for=None) -> list[Any]:
        n_workers, n_slots = self.n_workers, self.n_slots
        by_worker: list[list[int]] = [[] for _ in range(n_workers)]
        for i, item in enumerate(items):  # worker_of() and _check_slot() inlined: once per item of every batch
            s = item[0]
            if not 0 <= s < n_slots:
                self._check_slot(s)
            by_worker[s % n_workers].append(i)
        groups = {w: idx for w, idx in enumerate(by_worker) if idx}
        out: list[Any] = [None] * len(items)
        sent: dict[int, list[tuple]] = {}
        dead: dict[int, str] = {}
        for w, idx in groups.items():
            batch = [items[i] for i in idx]
            worlds = worlds_for(w, batch) if worlds_for else None
            try:
                self._procs[w].send((op, batch, worlds))
                sent[w] = batch
            except WorkerDied as e:
                dead[w] = str(e)
        for w in sent:
            try:
                for i, r in zip(groups[w], self._procs[w].recv(self.batch_timeout)):
                    out[i] = r
            except WorkerDied as e:
                dead[w] = str(e)
        for w, why in dead.items():
            self._replace(w, why)
            for i in groups[w]:
                out[i] = fail(items[i], f"environment error: {why}; the worker was replaced")
        return out

    def _replace(self, w: int, why: str) -> None:
        self._procs[w].stop(kill=True)
        self._procs[w] = _Proc(self._ctx, self._options)
        self.replaced += 1
        for s in [s for s in self._live if self.worker_of(s) == w]:
            self._live.discard(s)
            self._lost[s] = f"environment error: the episode was lost ({why})"

    def _worlds_for(self, w: int, batch: list[tuple]) -> dict[str, str]:
        proc, new = self._procs[w], {}
        for _, wid, *_ in batch:
            if wid not in proc.known:
                new[wid] = self._worlds[wid]
        proc.known |= set(new)
        return new

    def reset(self, items: Iterable[tuple]) -> list[ResetResult]:
        """Start an episode per (slot, world_id, task_id[, surface]) at the world's exact seeded state."""
        batch = []
        for item in items:
            s, wid, task_id, *rest = item
            if wid not in self._worlds:
                raise KeyError(f"world {wid!r} is not registered with this pool; call pool.register first")
            batch.append((s, wid, task_id, rest[0] if rest else self.surface))
        out = self._run("reset", batch, lambda it, m: ResetResult(it[0], "env_error", error=m), self._worlds_for)
        for r in out:
            self._lost.pop(r.slot, None)
            (self._live.add if r.outcome == "ok" else self._live.discard)(r.slot)
        return out

    def prepare(self, items: Iterable[tuple]) -> None:
        """Load each (slot, world_id) ahead of its next reset, without waiting (AWM prepares the
        next batch's worlds during the update the same way). The reset then rolls back."""
        groups: dict[int, list[tuple]] = {}
        for s, wid in items:
            self._check_slot(s)
            if wid not in self._worlds:
                raise KeyError(f"world {wid!r} is not registered with this pool; call pool.register first")
            groups.setdefault(self.worker_of(s), []).append((s, wid))
        for w, batch in groups.items():
            try:
                self._procs[w].send(("prepare", batch, self._worlds_for(w, [(s, wid) for s, wid in batch])))
                self._procs[w].pending += 1
            except WorkerDied as e:
                self._replace(w, str(e))

    def step(self, items: Iterable[tuple]) -> list[Observation]:
        """One turn per (slot, model text or call); a call may be a toolcalls.Call, a dict or any object with name/arguments."""
        items = [(s, t if isinstance(t, str) else toolcalls.as_call(t)) for s, t in items]
        if len({s for s, _ in items}) != len(items):
            raise ValueError("step: each slot may appear once per batch")
        lost = {i: self._lost[s] for i, (s, _) in enumerate(items) if s in self._lost} if self._lost else {}
        todo = [it for i, it in enumerate(items) if i not in lost] if lost else items
        done = (r if isinstance(r, Observation) else Observation(*r) for r in self._run("step", todo, lambda it, m: toolcalls._fail("env_error", m)))
        out = [toolcalls._fail("env_error", lost[i]) if i in lost else next(done) for i in range(len(items))] if lost else list(done)
        live = self._live
        for (s, _), obs in zip(items, out):
            if obs.outcome == "env_error" and s not in live:
                self._lost.setdefault(s, "environment error: the episode was lost")
        return out

    def finish(self, slots: Sequence[int], final_answers: Sequence[str | None] | None = None) -> list[Finished]:
        """End episodes: each one's changeset (decoded rows) and code verdict."""
        answers = list(final_answers) if final_answers is not None else [None] * len(slots)
        if len(answers) != len(slots):
            raise ValueError(f"finish: {len(slots)} slots but {len(answers)} final answers")
        items = list(zip(slots, answers))
        lost = {i: self._lost.pop(s) for i, (s, _) in enumerate(items) if s in self._lost}
        todo = [it for i, it in enumerate(items) if i not in lost]
        done = iter(self._run("finish", todo, lambda it, m: Finished(it[0], "env_error", error=m)))
        out = [Finished(items[i][0], "env_error", error=lost[i]) if i in lost else next(done) for i in range(len(items))]
        for s in slots:
            self._live.discard(s)
        return out

    # ------------------------------------------------------------------ inspection

    def inspect(self, slots: Sequence[int], what: str) -> list[Any]:
        """Per slot: "dump" (rows ordered by primary key), "integrity" (problems, [] when clean)."""
        return self._run("inspect", [(s, what) for s in slots], lambda it, m: WorkerDied(m))

    def worker_pids(self) -> list[int]:
        """Process ids of the workers, in worker order."""
        return [p.proc.pid for p in self._procs]

    def stats(self) -> list[dict[str, Any]]:
        """Per worker: RSS bytes, SQLite memory in use, slots made, live episodes, worlds compiled."""
        return self._run("inspect", [(w, "stats") for w in range(self.n_workers)], lambda it, m: {"error": m})

    def close(self) -> None:
        """Stop every worker."""
        for p in self._procs:
            p.stop()
        self._procs = []

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
