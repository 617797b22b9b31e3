"""The SFT data builder (gold episodes, masks, history limit, packing) and its update."""

import jax
import numpy as np
import pytest
from flax import nnx

from awmjax.policy import load_policy
from awmjax.rl.batch import merge_prefix_samples, samples_from_episode
from awmjax.rl.train_step import OptimConfig, init_state
from awmjax.rollout import RolloutConfig
from awmjax.sft import READ_FINALS, WRITE_FINALS, gold_episodes, make_sft_step, pack_rows, sft_samples, sft_updates
from awmjax.tokenizer import Tokenizer
from envgen.pool import Pool
from tests.envgen.worlds import shop_world


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.embedded()


@pytest.fixture(scope="module")
def episodes(tokenizer):
    world = shop_world()
    with Pool(n_slots=4, workers=1) as pool:
        pool.register([world])
        eps, dropped = gold_episodes(tokenizer, pool, [world], RolloutConfig(max_turns=6), phrasings=2, seed=3, batch=4, progress=False)
    return world, eps, dropped


def test_gold_episodes_run_in_the_pool_and_complete(episodes):
    world, eps, dropped = episodes
    assert dropped == {"no_gold": 0, "not_complete": 0}
    assert sorted(e.task_id for e in eps) == ["buy-lamps", "buy-lamps", "desk-price", "desk-price"]
    for e in eps:
        task = world.task(e.task_id)
        assert e.outcome == "complete" and e.tool_calls == len(task.gold)
        texts = [m["content"] for m in e.conversation.messages() if m["role"] == "assistant"]
        for call, text in zip(task.gold, texts):
            assert f'"name": "{call.tool}"' in text
        finals = READ_FINALS if task.answer else WRITE_FINALS
        assert any(texts[-1] == f.format(answer=task.answer or "") for f in finals)
        tool_turns = [m for m in e.conversation.messages() if m["role"] == "tool"]
        assert len(tool_turns) == len(task.gold) and all(m["content"] for m in tool_turns)


def test_only_assistant_turns_are_trainable_and_the_history_limit_holds(episodes, tokenizer):
    _, eps, _ = episodes
    e = next(x for x in eps if x.task_id == "buy-lamps")  # two calls and an answer: three assistant turns
    conv = e.conversation
    trainable = [i for i, m in zip(conv.ids, conv.mask) if m]
    expected = []
    for turn in conv.turns:
        if turn.role == "assistant":
            expected += [i for i, m in zip(conv.ids[turn.start:turn.end], conv.mask[turn.start:turn.end]) if m]
    assert trainable == expected and len(trainable) > 0
    full = sft_samples([e], 3)  # the window never cuts: one merged sample, all three turns trainable
    assert len(full) == 1 and full[0].ids == list(conv.ids) and sum(full[0].mask) == len(trainable)
    hl1 = sft_samples([e], 1)  # window 1: the third turn's context drops the first step
    assert len(hl1) == 2
    assert sum(sum(s.mask) for s in hl1) == len(trainable)
    assert len(hl1[1].ids) < len(conv.ids)
    raw = samples_from_episode(e, 1.0, 1)
    assert len(raw) == 3 and len(merge_prefix_samples(raw)) == 2


def test_packing_keeps_samples_apart_and_reads_loss_at_trainable_tokens(episodes, tokenizer):
    _, eps, _ = episodes
    samples = sft_samples(eps, 3)
    rows = pack_rows(samples, 1024, tokenizer.pad_id)
    assert rows.rows < len(samples)  # several samples share a row
    for r in range(rows.rows):
        segs = rows.segments_RT[r]
        for seg in set(segs.tolist()) - {0}:
            at = np.flatnonzero(segs == seg)
            assert (rows.positions_RT[r, at] == np.arange(len(at))).all()  # positions restart per sample
        w = rows.loss_weight_RK[r] > 0
        idx, tgt = rows.loss_index_RK[r, w], rows.loss_target_RK[r, w]
        assert (rows.tokens_RT[r, idx + 1] == tgt).all()
        assert (segs[idx] == segs[idx + 1]).all() and (segs[idx] > 0).all()
    assert int(rows.loss_weight_RK.sum()) == sum(sum(s.mask[1:]) for s in samples)
    with pytest.raises(ValueError, match="row_tokens"):
        pack_rows(samples, 64, tokenizer.pad_id)


def test_sft_update_lowers_the_loss_and_leaves_frozen_layers_alone(episodes, tokenizer):
    _, eps, _ = episodes
    rows = pack_rows(sft_samples(eps, 3), 1024, tokenizer.pad_id)
    (arrays,) = sft_updates(rows, rows.rows, 1, 0)
    model, _, _ = load_policy("tiny-random", seed=0)
    optim = OptimConfig(learning_rate=3e-3, train_top_layers=1)
    graphdef, state = init_state(model, optim, with_reference=False)
    before = jax.tree.map(np.asarray, state.params)
    step = make_sft_step(graphdef, optim)
    losses = []
    for _ in range(4):
        state, m = step(state, arrays)
        losses.append(float(m["nll"]))
    assert losses[-1] < losses[0]
    after = jax.tree.map(np.asarray, state.params)
    assert np.array_equal(before["embed"][...], after["embed"][...])
    assert np.array_equal(before["layers"][0]["mlp"]["up_proj"][...], after["layers"][0]["mlp"]["up_proj"][...])
    assert not np.array_equal(before["layers"][1]["mlp"]["up_proj"][...], after["layers"][1]["mlp"]["up_proj"][...])
    assert not np.array_equal(before["final_norm"]["weight"][...], after["final_norm"]["weight"][...])
