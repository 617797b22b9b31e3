"""The SFT data builder (gold episodes, masks, history limit, packing) and its update."""

import jax
import numpy as np
import pytest
from flax import nnx

from awmjax.policy import load_policy
from awmjax.rl.batch import merge_prefix_samples, samples_from_episode
from awmjax.rl.train_step import OptimConfig, init_state
from awmjax.rollout import RolloutConfig
from awmjax.sft import (READ_FINALS, WRITE_FINALS, frozen_features, gold_episodes, make_sft_step, pack_rows, sft_plan,
                        sft_samples, sft_state, sft_updates, update_arrays)
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


def test_shuffled_tool_listings_vary_the_order_and_keep_the_tools(tokenizer):
    world = shop_world()
    names = [t.name for t in world.tools]
    with Pool(n_slots=4, workers=1) as pool:
        pool.register([world])
        eps, dropped = gold_episodes(tokenizer, pool, [world], RolloutConfig(max_turns=6), phrasings=4, seed=0, batch=4,
                                     progress=False, shuffle_tools=True)
    assert dropped["not_complete"] == 0 and len(eps) == 8
    orders = set()
    for e in eps:
        system = e.conversation.messages()[0]["content"]
        at = {n: system.index(f'"name": "{n}"') for n in names}  # every tool is listed ...
        orders.add(tuple(sorted(names, key=at.get)))
    assert len(orders) > 1  # ... in orders that differ between episodes


def test_variants_of_a_turn_share_their_first_token(episodes, tokenizer):
    # Greedy decoding picks "call again or answer" at the turn's first token: phrasings of one kind
    # of turn that started differently would split its probability and let the other kind win.
    assert len({tokenizer.encode(f, allow_special=False)[0] for f in WRITE_FINALS}) == 1
    assert all(f.startswith("{answer}") for f in READ_FINALS) and len(set(WRITE_FINALS)) > 1 < len(set(READ_FINALS))
    _, eps, _ = episodes
    for e in eps:
        texts = [m["content"] for m in e.conversation.messages() if m["role"] == "assistant"]
        assert all(t.startswith("<tool_call>") for t in texts[:-1]) and not texts[-1].startswith("<")


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
    graphdef, state = sft_state(model, optim)
    before = jax.tree.map(np.asarray, state.params)
    step = make_sft_step(graphdef, optim, query_chunk=128)
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


def test_loss_slots_are_cut_to_what_the_rows_use(episodes, tokenizer):
    _, eps, _ = episodes
    samples = sft_samples(eps, 3)
    rows = pack_rows(samples, 1024, tokenizer.pad_id)
    used = int(rows.loss_weight_RK.sum(axis=1).max())
    K = rows.loss_index_RK.shape[1]
    assert K % 64 == 0 and used <= K < used + 64 and K < 1024 // 4
    fixed = pack_rows(samples, 1024, tokenizer.pad_id, loss_slots=256)  # an explicit K is kept
    assert fixed.loss_index_RK.shape[1] == 256
    assert np.array_equal(fixed.loss_index_RK[:, :K], rows.loss_index_RK)
    assert np.array_equal(fixed.loss_target_RK[:, :K], rows.loss_target_RK)
    assert fixed.loss_weight_RK[:, K:].sum() == 0


def _tiny(tokenizer, layers=2, seed=0):
    from awmjax.model.config import ModelConfig
    from awmjax.model.decoder import Decoder

    return Decoder(ModelConfig.tiny(vocab_size=tokenizer.vocab_size, num_layers=layers), rngs=nnx.Rngs(seed))


@pytest.mark.parametrize("chunk", [64, 96])
def test_chunked_attention_matches_one_block_on_packed_rows(chunk, tokenizer):
    # T = 300 is not a multiple of either chunk; three segments and padding, cut at arbitrary places
    model = _tiny(tokenizer)
    rng = np.random.default_rng(0)
    T, lengths = 300, [70, 131, 60]
    segments = np.zeros((2, T), np.int32)
    positions = np.zeros((2, T), np.int32)
    at = 0
    for s, n in enumerate(lengths, start=1):
        segments[0, at:at + n], positions[0, at:at + n] = s, np.arange(n)
        at += n
    segments[1], positions[1] = 1, np.arange(T)  # one segment over the whole row
    tokens = rng.integers(0, 1000, (2, T)).astype(np.int32)
    ref, _ = model.hidden(tokens, positions, segment_ids_BT=segments)
    out, _ = model.hidden(tokens, positions, segment_ids_BT=segments, query_chunk=chunk)
    real = segments > 0
    np.testing.assert_allclose(np.asarray(out)[real], np.asarray(ref)[real], atol=2e-5, rtol=2e-5)
    plain, _ = model.hidden(tokens, positions, query_chunk=chunk)  # no segments: causal only
    np.testing.assert_allclose(np.asarray(plain), np.asarray(model.hidden(tokens, positions)[0]), atol=2e-5, rtol=2e-5)
    # a segment must not see the one before it: changing segment 1's tokens leaves segment 2 alone
    other = tokens.copy()
    other[0, :70] = rng.integers(0, 1000, 70)
    moved, _ = model.hidden(other, positions, segment_ids_BT=segments, query_chunk=chunk)
    np.testing.assert_allclose(np.asarray(moved)[0, 70:261], np.asarray(out)[0, 70:261], atol=1e-6)
    assert not np.allclose(np.asarray(moved)[0, :70], np.asarray(out)[0, :70])


def _full_tree_step(graphdef, optim):
    """The update computed the plain way: the gradient of every leaf (frozen ones behind
    stop_gradient), Adam over the whole tree, no query chunks."""
    import jax.numpy as jnp
    import optax

    tx = optim.make()

    def loss_fn(params, a):
        model = nnx.merge(graphdef, optim.freeze(params))
        h, _ = model.hidden(a["tokens"], a["positions"], segment_ids_BT=a["segments"])
        logp = jax.nn.log_softmax(model.logits(jnp.take_along_axis(h, a["index"][..., None], axis=1)), axis=-1)
        logp = jnp.take_along_axis(logp, a["target"][..., None], axis=-1)[..., 0]
        return -(logp * a["weight"]).sum() / a["weight"].sum()

    @jax.jit
    def step(params, opt_state, a):
        loss, grads = jax.value_and_grad(loss_fn)(params, a)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step, tx


@pytest.mark.parametrize("chunk", [None, 128])
def test_sft_update_equals_the_full_tree_update(chunk, episodes, tokenizer):
    """Gradients and Adam over the trainable leaves only (and attention in query chunks) train
    the same weights as the gradient of the whole tree with the frozen leaves stopped."""
    _, eps, _ = episodes
    rows = pack_rows(sft_samples(eps, 3), 1024, tokenizer.pad_id)
    updates = sft_updates(rows, 1, 1, 0)[:3]
    optim = OptimConfig(learning_rate=3e-3, train_top_layers=1, weight_decay=0.1)
    graphdef, state = sft_state(_tiny(tokenizer), optim)
    ref_step, tx = _full_tree_step(graphdef, optim)
    params = jax.tree.map(np.array, state.params)
    opt_state = tx.init(params)
    n_train = sum(jax.tree.leaves(optim.trainable(state.params)))
    assert len(jax.tree.leaves(state.opt_state)) < len(jax.tree.leaves(opt_state))  # moments of trainable leaves only
    assert len(state.opt_state[1][0].mu) == n_train
    step = make_sft_step(graphdef, optim, query_chunk=chunk)
    for a in updates:
        params, opt_state, ref_loss = ref_step(params, opt_state, a)
        state, m = step(state, a)
        np.testing.assert_allclose(float(m["nll"]), float(ref_loss), rtol=1e-5)
    for got, want in zip(jax.tree.leaves(state.params), jax.tree.leaves(params)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


def _count(jaxpr, name="dot_general") -> int:
    """Equations of primitive `name` in a jaxpr, sub-jaxprs (jit, scan, custom_jvp...) included."""
    from jax.extend import core

    n = 0
    for eqn in jaxpr.eqns:
        n += eqn.primitive.name == name
        for v in eqn.params.values():
            for sub in v if isinstance(v, (tuple, list)) else (v,):
                if isinstance(sub, core.ClosedJaxpr):
                    n += _count(sub.jaxpr, name)
                elif isinstance(sub, core.Jaxpr):
                    n += _count(sub, name)
    return n


def test_no_backward_pass_below_the_lowest_trainable_layer(episodes, tokenizer):
    """A frozen layer added under the trainable one adds its forward matmuls to the update and
    nothing else; with every layer trainable it adds its backward ones too (the check can fail)."""
    _, eps, _ = episodes
    (a,) = sft_updates(pack_rows(sft_samples(eps, 3), 1024, tokenizer.pad_id), 1, 1, 0)[:1]

    def dots(layers, top, fwd=False):
        optim = OptimConfig(learning_rate=1e-3, train_top_layers=top)
        graphdef, state = sft_state(_tiny(tokenizer, layers), optim)
        if fwd:
            f = lambda p: nnx.merge(graphdef, p).hidden(a["tokens"], a["positions"], segment_ids_BT=a["segments"])[0]
            return _count(jax.make_jaxpr(f)(state.params).jaxpr)
        return _count(jax.make_jaxpr(make_sft_step(graphdef, optim))(state, a).jaxpr)

    forward_layer = dots(3, 1, fwd=True) - dots(2, 1, fwd=True)
    assert forward_layer >= 9  # q, k, v, o, scores, values, gate, up, down
    assert dots(3, 1) - dots(2, 1) == forward_layer
    assert dots(3, 0) - dots(2, 0) > 2 * forward_layer


def test_feature_cache_trains_the_same_weights(episodes, tokenizer):
    """Updates that start from the frozen layers' cached output (`frozen_features`, computed once)
    give the same losses and weights as updates that run the whole model every time; the cache
    holds what the frozen layers compute, and changes when the frozen weights do (it can fail)."""
    _, eps, _ = episodes
    rows = pack_rows(sft_samples(eps, 3), 1024, tokenizer.pad_id)
    optim = OptimConfig(learning_rate=3e-3, train_top_layers=1, weight_decay=0.1)
    graphdef, state = sft_state(_tiny(tokenizer, 3), optim)
    _, cached = sft_state(_tiny(tokenizer, 3), optim)  # the same weights, its own buffers (updates donate)
    features = frozen_features(graphdef, state.params, rows, 2, query_chunk=128)
    assert features.shape == rows.tokens_RT.shape + (nnx.merge(graphdef, state.params).config.hidden_size,)
    full, from_cache = make_sft_step(graphdef, optim, query_chunk=128), make_sft_step(graphdef, optim, query_chunk=128,
                                                                                          from_layer=2)
    for pick in sft_plan(rows.rows, 1, 2, 0)[:4]:
        state, m = full(state, update_arrays(rows, pick))
        cached, mc = from_cache(cached, update_arrays(rows, pick, features))
        np.testing.assert_allclose(float(mc["nll"]), float(m["nll"]), rtol=1e-5)
    for got, want in zip(jax.tree.leaves(cached.params), jax.tree.leaves(state.params)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
    other = jax.tree.map(lambda p: p * 1.5, state.params)  # frozen weights changed: the cache differs
    assert not np.allclose(frozen_features(graphdef, other, rows, 2, query_chunk=128), features, atol=1e-3)
