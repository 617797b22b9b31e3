"""One worker process of a state pool: its shard of slots, compiled worlds and live episodes.

The parent (`envgen.pool.Pool`) sends one message per batch, `(op, items, worlds)`, and
gets one reply: a list with one result per item, in order. Nothing an item does may
kill the worker: every item's failure becomes that item's "env_error" result.
"""

from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass, field
from typing import Any

from envgen import toolcalls
from envgen.db import Limits
from envgen.runtime import CompiledWorld, Episode, Slot, compile_world
from envgen.sandbox import PythonSandbox, SandboxLimits
from envgen.world import loads


@dataclass(frozen=True)
class ResetResult:
    """A slot's reset: "ok" or "env_error", the method used ("rollback"/"deserialize"), its time."""

    slot: int
    outcome: str
    method: str = ""
    micros: float = 0.0
    error: str = ""


@dataclass(frozen=True)
class Finished:
    """An ended episode: its changeset (decoded rows), code verdict, and counters."""

    slot: int
    outcome: str  # "ok", or "env_error" when the episode could not be judged (its worker died, ...)
    changes: list[dict[str, Any]] = field(default_factory=list)
    verdict: dict[str, Any] | None = None
    calls: int = 0
    error: str = ""


@dataclass
class _Live:
    episode: Episode
    protocol: toolcalls.Protocol


class Worker:
    """The state of one worker process; also usable in-process (tests, the CLI)."""

    def __init__(self, limits: Limits = Limits(), reset_method: str = "auto", observation_chars: int = toolcalls.MAX_OBSERVATION_CHARS, sandbox_limits: SandboxLimits = SandboxLimits()):
        self.limits, self.reset_method, self.observation_chars = limits, reset_method, observation_chars
        self.python = PythonSandbox(sandbox_limits)  # shared by this worker's slots; started on first use
        self.slots: dict[int, Slot] = {}
        self.live: dict[int, _Live] = {}
        self.idle: dict[str, set[int]] = {}  # world id -> slots without a live episode whose connection holds it
        self.worlds: dict[str, CompiledWorld] = {}
        self.texts: dict[str, str] = {}  # world id -> JSON text, as sent by the parent
        self.compiled = 0  # worlds compiled so far (serve() freezes them out of the garbage collector)

    def world(self, wid: str) -> CompiledWorld:
        """The compiled world `wid` (compiled on first use from the JSON text sent once)."""
        cw = self.worlds.get(wid)
        if cw is None:
            cw = self.worlds[wid] = compile_world(loads(self.texts[wid], source=f"world {wid}"))
            self.compiled += 1
        return cw

    def _slot(self, s: int) -> Slot:
        slot = self.slots.get(s)
        if slot is None:
            slot = self.slots[s] = Slot(self.limits, python=self.python, reset_method=self.reset_method)
        return slot

    def _take(self, s: int, wid: str) -> Slot:
        """The connection for a new episode of `wid` in slot `s`, preferring one that holds `wid`.

        A connection whose savepoint holds the world resets by rollback (about 5 us, its
        prepared statements still valid) where any other must deserialize (about 50 us,
        plus re-reading the schema and re-preparing every statement, about 50 us more for
        a 20-table world). So when `s`'s own connection holds another world, it swaps
        connections with an idle slot that holds `wid`: the pool's callers need not
        place GRPO groups on the slots that ran the same world before.
        """
        own = self.slots.get(s)
        if own is not None and own.world is not None:
            self.idle.get(own.world.id, set()).discard(s)
            if own.held and own.world.id == wid:
                return own
        donors = self.idle.get(wid)
        while donors:
            d = donors.pop()
            other = self.slots.get(d)
            if d in self.live or other is None or not other.held or other.world.id != wid:
                continue
            self.slots[s] = other
            if own is None:
                del self.slots[d]
            else:
                self.slots[d] = own
                if own.held:
                    self.idle.setdefault(own.world.id, set()).add(d)
            return other
        return self._slot(s)

    def _end(self, s: int) -> None:
        live = self.live.pop(s, None)
        if live is not None:
            live.episode.close()
            slot = live.episode.slot
            if slot.held:
                self.idle.setdefault(slot.world.id, set()).add(s)

    def reset(self, items: list[tuple], worlds: dict[str, str]) -> list[ResetResult]:
        """Start an episode per (slot, world_id, task_id, surface)."""
        self.texts.update(worlds or {})
        out = []
        for s, wid, task_id, surface in items:
            try:
                self._end(s)
                cw = self.world(wid)
                task = cw.world.task(task_id) if task_id is not None else None
                t0 = time.perf_counter_ns()
                ep = Episode(self._take(s, wid), cw, task)
                micros = (time.perf_counter_ns() - t0) / 1000
                self.live[s] = _Live(ep, toolcalls.Protocol(surface))
                out.append(ResetResult(s, "ok", ep.reset_method, micros))
            except Exception as e:  # noqa: BLE001 - one bad item must not end the batch
                out.append(ResetResult(s, "env_error", error=f"reset failed: {type(e).__name__}: {e}"))
        return out

    def preload(self, items: list[str], worlds: dict[str, str]) -> list[str]:
        """Compile worlds ahead of their first reset; per world id, "" or why it failed."""
        self.texts.update(worlds)
        out = []
        for wid in items:
            try:
                self.world(wid)
                out.append("")
            except Exception as e:  # noqa: BLE001
                out.append(f"{type(e).__name__}: {e}")
        return out

    def prepare(self, items: list[tuple], worlds: dict[str, str]) -> list[str]:
        """Load each (slot, world_id) into the slot's connection ahead of its reset; per item "" or why not.

        Deserializing and re-reading the schema happen here, off the critical path (while
        the trainer updates), so that the reset at the start of the episode is a rollback.
        """
        self.texts.update(worlds or {})
        out = []
        for s, wid in items:
            try:
                if s in self.live:
                    raise ValueError(f"slot {s} has a live episode")
                cw = self.world(wid)
                slot = self._take(s, wid)
                if not (slot.held and slot.world is cw):
                    slot.reset(cw)
                    slot.db.run_trusted("SELECT 1 FROM sqlite_schema LIMIT 1")  # parse the schema now, not in the first tool call
                out.append("")  # not offered to other slots (idle): it is this slot's next episode
            except Exception as e:  # noqa: BLE001
                out.append(f"{type(e).__name__}: {e}")
        return out

    def step(self, items: list[tuple], worlds=None) -> list[tuple[str, str, str | None]]:
        """Run one turn per (slot, model text or Call); per item an Observation's fields as a tuple
        (plain tuples pickle in a fraction of the time of dataclasses)."""
        out = []
        live, limit, turn_tuple = self.live, self.observation_chars, toolcalls.turn_tuple
        for s, turn in items:
            lv = live.get(s)
            if lv is None:
                out.append(toolcalls._failed("env_error", f"slot {s} has no live episode; reset it first"))
                continue
            out.append(turn_tuple(lv.episode, lv.protocol, turn, limit))
        return out

    def finish(self, items: list[tuple], worlds=None) -> list[Finished]:
        """End the episode of each (slot, final answer): its changes and code verdict."""
        out = []
        for s, answer in items:
            live = self.live.get(s)
            if live is None:
                out.append(Finished(s, "env_error", error=f"slot {s} has no live episode"))
                continue
            ep = live.episode
            try:
                changes = ep.changes()
                verdict = ep.verdict(answer, changes).to_dict() if ep.task is not None else None
                out.append(Finished(s, "ok", changes, verdict, ep.calls))
            except Exception as e:  # noqa: BLE001
                out.append(Finished(s, "env_error", calls=ep.calls, error=f"finish failed: {type(e).__name__}: {e}"))
            finally:
                self._end(s)
        return out

    def inspect(self, items: list[tuple], worlds=None) -> list[Any]:
        """Per (slot, what): "dump" (rows by primary key), "integrity" (problems), "pid", "stats", "gc_frozen"."""
        out = []
        for s, what in items:
            if what == "pid":
                out.append(os.getpid())
            elif what == "stats":
                out.append(self.stats())
            elif what == "gc_frozen":  # objects out of the garbage collector's reach (counting them walks them all)
                out.append(gc.get_freeze_count())
            else:
                db = self._slot(s).db
                out.append(db.dump() if what == "dump" else db.integrity_problems())
        return out

    def stats(self) -> dict[str, Any]:
        """Process memory (RSS), SQLite's memory in use, and counts."""
        import apsw

        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        return {"pid": os.getpid(), "rss": rss, "cpu_s": time.process_time(), "sqlite_memory": apsw.memory_used(), "slots": len(self.slots), "live": len(self.live), "worlds": len(self.worlds)}

    def close(self) -> None:
        """Close every slot and the sandbox process."""
        for s in list(self.live):
            self._end(s)
        for slot in self.slots.values():
            slot.close(close_sandbox=False)
        self.python.close()


def serve(conn, options: dict[str, Any]) -> None:
    """The worker process's loop: one message in, one reply out, until the pipe closes."""
    worker = Worker(**options)
    frozen = 0
    try:
        while True:
            try:
                op, items, worlds = conn.recv()
            except (EOFError, OSError):
                break
            if op == "close":
                break
            reply = getattr(worker, op)(items, worlds)
            if worker.compiled != frozen:  # before the reply: the caller's next batch must not pay for it
                # Compiled worlds are long-lived objects by the million (the 1,000-world
                # procedural catalog: 1.6 million in a worker), and every full collection
                # of the cyclic garbage collector walks them all: 645 ms measured, during
                # which the whole batch waits for this worker. Freezing moves them to the
                # permanent generation (reference counting still frees them); the young
                # generations are collected first so that no garbage is frozen with them.
                frozen = worker.compiled
                gc.collect(1 if op != "preload" else 2)
                gc.freeze()
            conn.send(reply)
    finally:
        worker.close()
