"""The synthesis pipeline against a scripted model: repair loop, bounded retries, dedup, cache, crash resume."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from envgen.catalog import Catalog
from envgen.gate import validate_world
from envgen.jsonrepair import extract_json
from envgen.synth.client import LLM, EndpointError, ResponseCache
from envgen.synth.pipeline import synthesize
from envgen.synth.scenarios import Deduper, lexical_vector, load_scenarios, scenarios_stage
from envgen.synth.stages import Context
from envgen.world import Scenario
from tests.envgen.synth_fake import PRODUCTS, ScriptedBackend, answer, product_of, replay_entry
from tests.fakes.replay_server import Reply, ReplayServer

REPO = Path(__file__).resolve().parents[2]
RETRIES = 2  # repair rounds in these tests (the default, 5, only makes the hopeless world slower)


def _run(backend, out: Path, cache: Path | None, *, n: int = 5, max_retries: int = RETRIES, deadline: float | None = None):
    llm = LLM(backend, ResponseCache(cache) if cache else None, backoff=0.0, deadline=deadline)
    ctx = Context(llm, max_retries=max_retries, tasks_per_world=2)
    report = asyncio.run(synthesize(ctx, n=n, out=str(out), seeds=["Bookshop", "Clinic"], progress=False))
    return llm, report


def _requests(backend: ScriptedBackend, stage: str, product: str) -> list[list[dict]]:
    return [m for m, s in zip(backend.requests, backend.stages_asked()) if s == stage and product_of(m) == product]


@pytest.fixture(scope="module")
def run5(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("synth")
    backend = ScriptedBackend()
    llm, report = _run(backend, tmp / "cat", tmp / "cache")
    return backend, llm, report, tmp


def test_accepted_worlds_pass_the_gate_and_the_catalog_holds_only_them(run5):
    _, _, report, tmp = run5
    cat = Catalog.open(tmp / "cat")
    names = sorted(w.scenario.name for w in cat.worlds())
    assert names == sorted(p[0] for p in PRODUCTS[:5] if "Hopeless" not in p[0])
    for world in cat.worlds():
        assert validate_world(world) == []
        assert [t.instruction for t in world.tasks] and all(t.gold for t in world.tasks)
    assert cat.index["provenance"]["generator"] == "envgen.synth"


def test_gate_failure_is_summarized_back_and_repaired(run5):
    backend, llm, _, _ = run5
    asked = _requests(backend, "schema", "Harbor Desk Broken")
    assert len(asked) == 2, "one refused schema, one repaired"
    retry = asked[1]
    assert retry[-2]["role"] == "assistant" and ",," in retry[-2]["content"], "the refused answer is shown back"
    assert retry[-1]["content"].startswith("# awmjax synthesis: repair")
    assert "does not load" in retry[-1]["content"] and "syntax error" in retry[-1]["content"], "the gate's error reaches the model"
    assert llm.stats["schema"].repairs == 1 and llm.stats["schema"].failures == 0


def test_fenced_and_truncated_output_needs_no_repair(run5):
    backend, llm, _, _ = run5
    for stage in ("tasks", "schema", "seed", "toolspec", "tools", "checks"):
        assert len(_requests(backend, stage, "Lamp Outlet Fenced")) == 1, stage
    assert len(_requests(backend, "seed", "Quilt Corner Truncated")) == 1
    assert llm.stats["seed"].repairs == 0


def test_bounded_retries_end_in_a_recorded_rejection(run5):
    backend, llm, report, tmp = run5
    assert len(_requests(backend, "tools", "Bolt Hardware Hopeless")) == RETRIES + 1
    (rej,) = Catalog.open(tmp / "cat").rejected()
    assert rej["scenario"] == "Bolt Hardware Hopeless" and rej["stage"] == "tools" and rej["attempts"] == RETRIES + 1
    assert any("unknown column colour" in f for f in rej["failures"])
    assert llm.stats["tools"].failures == 1
    assert not _requests(backend, "checks", "Bolt Hardware Hopeless"), "a failed stage ends the world"


def test_rerun_from_the_cache_pays_nothing_and_gives_the_same_catalog(run5, tmp_path):
    _, _, report, tmp = run5
    again = ScriptedBackend()
    llm, report2 = _run(again, tmp_path / "cat", tmp / "cache")
    assert again.requests == [] and again.embed_requests == []
    assert sum(s.calls for s in llm.stats.values()) == 0
    assert sum(s.prompt_tokens for s in llm.stats.values()) == 0
    assert sorted(w.id for w in report2.accepted) == sorted(w.id for w in report.accepted)
    assert "cached" in llm.table()


def test_a_bare_list_answer_is_read_as_the_stage_list(tmp_path):
    class Bare(ScriptedBackend):
        async def chat(self, messages, params):
            c = await super().chat(messages, params)
            if "# awmjax synthesis: tasks" in messages[0]["content"]:
                return dataclasses.replace(c, text="Tasks:\n" + json.dumps(extract_json(c.text)["tasks"]))
            return c

    backend = Bare()
    llm, report = _run(backend, tmp_path / "cat", None, n=1)
    assert len(report.accepted) == 1 and llm.stats["tasks"].repairs == 0


def test_transient_errors_back_off_and_retry(tmp_path):
    backend = ScriptedBackend(fail_first=2)
    llm, report = _run(backend, tmp_path / "cat", None, n=1)
    assert llm.stats["scenarios"].retries == 2
    assert backend.stages_asked().count("scenarios") == 3 and len(backend.embed_requests) == 1
    assert llm.stats["scenarios"].calls == 3 + 1, "two refused requests, the answered one, the embeddings probe"
    assert len(report.accepted) == 1


def test_endpoint_error_rejects_the_world_with_the_reason(tmp_path):
    class Refusing(ScriptedBackend):
        async def chat(self, messages, params):
            if "# awmjax synthesis: tasks" in messages[0]["content"]:
                raise EndpointError("model 'x' does not exist (check --model)")
            return await super().chat(messages, params)

    llm, report = _run(Refusing(), tmp_path / "cat", None, n=2)
    assert report.accepted == [] and len(report.rejected) == 2
    assert all(r["stage"] == "tasks" and "check --model" in r["failures"][0] for r in report.rejected)
    assert Catalog.open(tmp_path / "cat").rejected() == report.rejected


def test_time_limit_stops_new_calls_and_says_why(tmp_path):
    backend = ScriptedBackend()
    llm, report = _run(backend, tmp_path / "cat", None, n=2, deadline=time.monotonic() - 1)
    assert backend.requests == [] and report.accepted == []
    rounds = [n for n in report.notes if n.startswith("scenario round")]
    assert len(rounds) == 1 and "time limit" in rounds[0], "an endpoint failure ends the rounds at once"
    assert Catalog.open(tmp_path / "cat").index["n_worlds"] == 0


@pytest.mark.parametrize("embeddings", [False, True])
def test_scenario_dedup_refuses_near_copies(embeddings):
    backend = ScriptedBackend(embeddings=embeddings)
    ctx = Context(LLM(backend, None, backoff=0.0), max_retries=0, tasks_per_world=2)
    kept, dedup = asyncio.run(scenarios_stage(ctx, ["Bookshop"], 6, max_rounds=2))
    names = [s.name for s in kept]
    assert "Lamp Outlet Fenced Again" not in names and len(names) == 5
    assert any(n == "Lamp Outlet Fenced Again" and "near-duplicate" in why for n, why in dedup.refused)
    assert ctx.dedup_method == ("embeddings" if embeddings else "lexical")
    ctx.slot.close()


AWM1K = REPO.parent / "shared" / "awm1k" / "gen_scenario.jsonl"


@pytest.mark.skipif(not AWM1K.exists(), reason="needs ../shared/awm1k")
def test_given_scenarios_skip_stage_one(tmp_path):
    given = load_scenarios(AWM1K)
    assert [s.category for s in given] == ["marketplace", "booking_marketplace", "booking_and_appointments"]
    assert given[0].name == "marketplace_1" and "VolunteerMatch" in given[0].description
    backend = ScriptedBackend()
    llm = LLM(backend, None, backoff=0.0)
    ctx = Context(llm, max_retries=RETRIES, tasks_per_world=2)
    report = asyncio.run(synthesize(ctx, n=2, out=str(tmp_path / "cat"), seeds=[], scenarios=given, progress=False))
    assert "scenarios" not in backend.stages_asked() and backend.embed_requests == []
    assert sorted(w.scenario.name for w in report.accepted) == ["booking_marketplace_1", "marketplace_1"]


def test_bad_scenarios_file_names_the_line_and_the_fix(tmp_path):
    f = tmp_path / "s.jsonl"
    f.write_text('{"name": "a_1", "description": "fine"}\n{"name": "b"}\n')
    with pytest.raises(ValueError, match=r"s.jsonl:2: not a scenario .*each line must be"):
        load_scenarios(f)


def test_category_cap_refuses_similar_scenarios_once_full():
    d = Deduper(cap=1, reject=0.95, near=0.5)
    a = Scenario("Lamp Outlet", "Sells lamps to students.", "retail")
    b = Scenario("Lamp Outlet Plus", "Sells lamps and bulbs to students.", "retail")
    c = Scenario("Lamp Outlet Plus", "Sells lamps and bulbs to students.", "lighting")
    vec = lambda s: lexical_vector(f"{s.name}. {s.description}")  # noqa: E731
    assert d.offer(a, vec(a)) and not d.offer(b, vec(b)) and d.offer(c, vec(c))
    assert "category retail is full" in d.refused[0][1]


def _cli(base_url: str, out: Path, cache: Path, n: int) -> list[str]:
    return [sys.executable, "-m", "awmjax.cli", "worlds", "synthesize", "--base-url", base_url, "--model", "scripted",
            "--n", str(n), "--out", str(out), "--cache", str(cache), "--concurrency", "1",
            "--max-retries", str(RETRIES), "--tasks-per-world", "2", "--seeds", str(out.parent / "seeds.txt")]


def test_killed_run_resumes_from_the_cache_without_repeating_calls(tmp_path):
    n = 5
    (tmp_path / "seeds.txt").write_text("Bookshop\nClinic\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "JAX_PLATFORMS": "cpu", "OPENAI_API_KEY": ""}
    out, cache = tmp_path / "cat", tmp_path / "cache"

    # What a clean run asks, request by request (the scripted model is deterministic).
    clean = ScriptedBackend()
    _run(clean, tmp_path / "clean", None, n=n)
    clean_asked = Counter(json.dumps(m, sort_keys=True) for m in clean.requests)

    # Run 1: the 2nd request gets a 429 (retried after a backoff); the process is killed while
    # its 12th request hangs.
    first: list[str] = []
    with ReplayServer([replay_entry(first), Reply(status=429)] + [replay_entry(first)] * 9 + [Reply(delay=60)]) as srv:
        proc = subprocess.Popen(_cli(srv.base_url, out, cache, n), cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 60
            while srv.served < 12 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert srv.served == 12, proc.communicate(timeout=5)[0] if proc.poll() is not None else "no 12th request"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
    assert len(first) == 10
    assert not out.exists() and not list(tmp_path.glob(".cat.tmp-*")), "a killed run leaves no catalog behind"

    # Run 2 resumes: finished calls come from the cache, only the rest reach the server.
    second: list[str] = []
    with ReplayServer([replay_entry(second)] * 200) as srv:
        done = subprocess.run(_cli(srv.base_url, out, cache, n), cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert Counter(first) + Counter(second) == clean_asked, "every call made exactly once across the two runs"
    total = next(line for line in done.stdout.splitlines() if line.startswith("total"))
    # the rerun's cache hits: the first run's answers, plus its remembered "no embeddings here"
    assert int(total.split()[2]) == len(first) + 1

    cat = Catalog.open(out)
    assert len(cat) == n - 1 and [r["stage"] for r in cat.rejected()] == ["tools"]
    for world in cat.worlds():
        assert validate_world(world) == []
    assert "rejected at stage: tools 1" in done.stdout


def test_scripted_model_is_deterministic():
    msgs = [{"role": "system", "content": "# awmjax synthesis: tasks\n..."}, {"role": "user", "content": "Product: X\nWrite 2 tasks."}]
    assert answer(msgs) == answer(msgs)
