"""The teacher-forced gold check: turn spans, name tokens, scoring against known predictions,
and packed rows that give each sample the predictions it gets alone."""

import json

import numpy as np
import pytest

import awmjax.goldcheck as gc
from awmjax.policy import load_policy
from awmjax.rl.batch import merge_prefix_samples, samples_from_episode
from awmjax.rollout import RolloutConfig
from awmjax.tokenizer import Tokenizer
from envgen.pool import Pool
from tests.envgen.worlds import shop_world

ROLLOUT = RolloutConfig(max_turns=6, history_window=2)


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.embedded()


@pytest.fixture(scope="module")
def tiny():
    """The tiny-random policy and the history-limited gold samples of the shop world."""
    from awmjax.sft import gold_episodes

    model, cfg, tok = load_policy("tiny-random")
    with Pool(n_slots=4, workers=1) as pool:
        pool.register([shop_world()])
        eps, _ = gold_episodes(tok, pool, [shop_world()], ROLLOUT, seed=0, batch=4, progress=False)
    samples = [s for e in eps for s in merge_prefix_samples(samples_from_episode(e, 1.0, ROLLOUT.history_window))]
    return model, cfg, tok, samples


def _oracle(perturb=None):
    """An _argmax_at_turns stand-in that predicts every gold next token (perturb(sample, t, id)
    may change the prediction for position t)."""

    def run(model, tokenizer, samples, row_tokens, progress, *shared):
        out = []
        for s in samples:
            pred = np.full(len(s.ids), -1, np.int64)
            for t in range(1, len(s.ids)):
                if s.mask[t]:
                    pred[t - 1] = s.ids[t] if perturb is None else perturb(tokenizer, s, t)
            out.append(pred)
        return out

    return run


def test_spans_are_the_runs_of_trainable_positions():
    assert gc._spans([0, 0, 1, 1, 0, 1, 0, 0, 1]) == [(2, 4), (5, 6), (8, 9)]
    assert gc._spans([1, 0, 0]) == []  # position 0 has no context: never a turn
    assert gc._spans([]) == []


def test_name_tokens_cover_exactly_the_tool_name(tokenizer):
    text = '<tool_call>\n{"name": "find_products", "arguments": {"q": "lamp"}}\n</tool_call>'
    ids = tokenizer.encode(text, allow_special=False)
    ends = gc._char_ends(tokenizer, ids)
    lo, hi = gc._name_tokens(text, ends)
    covered = tokenizer.decode(ids[lo:hi])
    assert "find_products" in covered and "arguments" not in covered and "name" not in covered
    # the tokens that hold "<tool_call>" end at or after its last character, and not before
    k = gc._token_at(ends, len(gc.CALL_OPEN) - 1)
    assert tokenizer.decode(ids[: k + 1]).startswith(gc.CALL_OPEN)
    assert not tokenizer.decode(ids[:k]).startswith(gc.CALL_OPEN)


def test_a_perfect_policy_scores_every_turn_and_counts_match_the_gold(tokenizer, monkeypatch):
    world = shop_world()
    monkeypatch.setattr(gc, "_argmax_at_turns", _oracle())
    report = gc.gold_check(None, tokenizer, [world], ROLLOUT, policy_name="oracle")
    tasks = [t for t in world.tasks if t.gold]
    assert report.tasks == len(tasks)
    calls = [t for t in report.turns if t.kind == "call"]
    answers = [t for t in report.turns if t.kind == "answer"]
    assert len(calls) == sum(len(t.gold) for t in tasks) and len(answers) == len(tasks)
    for task in tasks:  # the steps of a task are 0..n in order, its calls first, the answer last
        mine = [t for t in report.turns if t.task == task.id]
        assert [t.step for t in mine] == list(range(len(task.gold) + 1))
        assert [t.kind for t in mine] == ["call"] * len(task.gold) + ["answer"]
    r = report.rates()
    assert r["decide"]["rate"] == r["tool"]["rate"] == r["exact"]["rate"] == 1.0
    assert "100.0" in report.table() and json.loads(json.dumps(report.to_json()))["groups"]["all turns"]["calls"] == len(calls)


def test_a_wrong_tool_name_fails_tool_and_call_but_not_the_decision(tokenizer, monkeypatch):
    def wrong_names(model, tok, samples, row_tokens, progress, *shared):
        out = _oracle()(model, tok, samples, row_tokens, progress)
        for s, pred in zip(samples, out):
            for start, end in gc._spans(s.mask):
                text = tok.decode(s.ids[start:end])
                if text.startswith(gc.CALL_OPEN):  # the name's first token predicted as another
                    lo, _ = gc._name_tokens(text, gc._char_ends(tok, s.ids[start:end]))
                    pred[start + lo - 1] = s.ids[start + lo] + 1
        return out

    monkeypatch.setattr(gc, "_argmax_at_turns", wrong_names)
    report = gc.gold_check(None, tokenizer, [shop_world()], ROLLOUT)
    r = report.rates()
    assert r["calls"] > 0 and r["tool"]["rate"] == 0.0 and r["exact"]["rate"] == 0.0
    assert r["decide"]["rate"] == 1.0


def test_answering_with_a_call_fails_the_answer_decision(tokenizer, monkeypatch):
    state = {}

    def call_everywhere(tok, s, t):
        opener = state.setdefault("open", tok.encode(gc.CALL_OPEN, allow_special=False)[0])
        return opener if s.mask[t] and not s.mask[t - 1] else s.ids[t]

    monkeypatch.setattr(gc, "_argmax_at_turns", _oracle(call_everywhere))
    report = gc.gold_check(None, tokenizer, [shop_world()], ROLLOUT)
    rows = {name: report.rates(sel) for name, sel in report.groups().items()}
    assert rows["answers"]["decide"]["rate"] == 0.0
    assert rows["first calls"]["decide"]["rate"] == 1.0


def test_packed_rows_give_each_sample_its_own_predictions(tiny):
    model, cfg, tok, samples = tiny
    assert len(samples) >= 2  # packed together into one row
    packed = gc._argmax_at_turns(model, tok, samples, 2048, False)
    for s, p in zip(samples, packed):
        alone = gc._argmax_at_turns(model, tok, [s], 2048, False)[0]
        read = [t - 1 for t in range(1, len(s.ids)) if s.mask[t]]
        assert (p[read] >= 0).all() and (p[read] < cfg.vocab_size).all()
        np.testing.assert_array_equal(p, alone)
        assert (np.delete(p, read) == -1).all()  # nothing read where no turn is scored


def test_eval_cli_gold_check_writes_its_report(tmp_path, capsys):
    from awmjax.cli import main
    from envgen.build import generate_catalog

    generate_catalog(4, 0, str(tmp_path / "cat"), profile="compact", progress=False, workers=1)
    out = tmp_path / "report"
    argv = ["eval", "--gold-check", "--policy", "tiny-random", "--worlds", str(tmp_path / "cat"), "--split", "train", "--limit", "3",
            "--tool-schema", "brief", "--max-context", "2048", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "gold check (teacher-forced)" in printed, printed
    doc = json.loads((out / "gold_check.json").read_text())
    assert doc["tasks"] == 4 and doc["groups"]["answers"]["turns"] == 4, (doc["dropped"], printed)  # 2 worlds of 2
    assert doc["groups"]["all turns"]["turns"] == len(doc["turns"]) > 3


def test_eval_cli_refuses_a_gold_check_on_an_endpoint(tmp_path, capsys):
    from awmjax.cli import main

    argv = ["eval", "--worlds", str(tmp_path), "--base-url", "http://127.0.0.1:9/v1", "--gold-check"]
    assert main(argv) == 2
    assert "drop --gold-check with --base-url" in capsys.readouterr().err


def test_sft_scaling_experiment_runs_end_to_end(tmp_path, capsys):
    from envgen.build import generate_catalog
    from experiments import sft_scaling

    generate_catalog(40, 0, str(tmp_path / "cat"), held_out=0.5, profile="compact", progress=False, workers=1)
    argv = ["--tasks", "2", "--check-tasks", "2", "--policy", "tiny-random", "--catalog", str(tmp_path / "cat"),
            "--out", str(tmp_path / "out")]
    assert sft_scaling.main(argv) == 0
    doc = json.loads((tmp_path / "out" / "scaling.json").read_text())
    assert [r["sft_tasks"] for r in doc["rows"]] == [0, 2]
    assert doc["rows"][0]["train_tokens"] == 0 < doc["rows"][1]["train_tokens"]
    assert all(r["checked_tasks"] >= 2 and r["gold_calls"] >= 2 for r in doc["rows"])
    assert (tmp_path / "out" / "scaling.png").stat().st_size > 0
    assert "SFT tasks 0 = the untrained policy" in capsys.readouterr().out


def test_shared_lower_layers_are_reused_only_for_an_equal_policy(tiny):
    model, cfg, tok, samples = tiny
    whole = gc._argmax_at_turns(model, tok, samples, 2048, False)
    shared: dict = {}
    first = gc._argmax_at_turns(model, tok, samples, 2048, False, 1, shared)
    kept = shared["rows"]
    again = gc._argmax_at_turns(model, tok, samples, 2048, False, 1, shared)
    assert shared["rows"] is kept  # the same lower layers: their output was reused
    for a, b, c in zip(whole, first, again):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    # another policy (other weights): its own lower layers run, and its predictions are its own
    other, _, _ = load_policy("tiny-random", seed=1)
    mine = gc._argmax_at_turns(other, tok, samples, 2048, False, 1, shared)
    assert shared["rows"] is not kept
    for a, b in zip(gc._argmax_at_turns(other, tok, samples, 2048, False), mine):
        np.testing.assert_array_equal(a, b)
