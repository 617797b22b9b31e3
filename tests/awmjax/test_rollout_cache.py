"""Episodes continue from the sampler's cache: the same tokens as prefilling the whole prompt."""

import numpy as np

from awmjax.policy import load_policy
from awmjax.rollout import _EpisodeCache
from awmjax.sampler import Sampler
from awmjax.sampling import SamplingConfig


def test_continuing_from_the_cache_equals_a_fresh_prefill():
    model, cfg, tok = load_policy("tiny-random", seed=1)
    sampler = Sampler(model, cfg, max_cache_len=256, pad_id=tok.pad_id)
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=6)
    rng = np.random.default_rng(0)
    prompts = [rng.integers(5, 1000, n).tolist() for n in (9, 14, 5)]
    cache = _EpisodeCache(sampler, 3)
    first = cache.generate([0, 1, 2], prompts, [6, 6, 6], greedy, None)
    # rows 0 and 2 go on (their conversations grew by the generation and a tool response); row 1 ended
    grown = {i: prompts[i] + first[k].token_ids + rng.integers(5, 1000, 7).tolist() for k, i in enumerate([0, 1, 2])}
    continued = cache.generate([0, 2], [grown[0], grown[2]], [6, 6], greedy, None)
    fresh = sampler.generate([grown[0], grown[2]], greedy, budgets=[6, 6])
    assert [g.token_ids for g in continued] == [g.token_ids for g in fresh]
    np.testing.assert_allclose([g.logprobs for g in continued], [g.logprobs for g in fresh], atol=1e-4)
    # a prompt that does not extend the cache (the history window cut it) starts the batch over
    cut = grown[0][:3] + grown[0][-5:]
    (again,) = cache.generate([0], [cut], [6], greedy, None)
    (expect,) = sampler.generate([cut], greedy, budgets=[6])
    assert again.token_ids == expect.token_ids


def test_rows_with_work_run_as_a_smaller_batch_with_the_same_tokens():
    """With 1 of 8 rows live, the sampler runs a 1-row batch: same greedy tokens and log-probs
    as the whole batch, and the idle rows' caches are left exactly as they were."""
    model, cfg, tok = load_policy("tiny-random", seed=2)
    sampler = Sampler(model, cfg, max_cache_len=128, pad_id=tok.pad_id)
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=5)
    rng = np.random.default_rng(1)
    prompts = [rng.integers(5, 1000, int(n)).tolist() for n in rng.integers(4, 12, 8)]
    busy = [True, False, False, False, False, False, False, False]
    assert Sampler._rows_to_run(busy, 8) == [0]
    assert Sampler._rows_to_run([True, False, True] + [False] * 5, 8) == [0, 2]
    assert Sampler._rows_to_run([True, False, True, True] + [False] * 4, 8) == [0, 2, 3]  # 3 rows
    assert Sampler._rows_to_run([True] * 5 + [False] * 3, 8) == [0, 1, 2, 3, 4, 5]  # 6 rows
    assert Sampler._rows_to_run([True] * 7 + [False], 8) is None  # no smaller bucket
    gens, state = sampler.continue_(sampler.start(prompts), None, greedy)
    before_k = np.asarray(state.cache.k_BKSH[0]).copy()
    before_len = np.asarray(state.cache.lengths_B).copy()
    extra = rng.integers(5, 1000, 6).tolist()
    budgets = [0] * 8
    budgets[3] = 5
    appended = [[] for _ in range(8)]
    appended[3] = extra
    (*_, g3, _, _, _, _), state = sampler.continue_(state, appended, greedy, budgets=budgets)
    whole = prompts[3] + gens[3].token_ids + extra
    (expect,) = sampler.generate([whole], greedy)
    assert g3.token_ids == expect.token_ids
    np.testing.assert_allclose(g3.logprobs, expect.logprobs, atol=1e-4)
    after_k, after_len = np.asarray(state.cache.k_BKSH[0]), np.asarray(state.cache.lengths_B)
    for b in range(8):
        if b != 3:
            assert after_len[b] == before_len[b]
            np.testing.assert_array_equal(after_k[b, :, :before_len[b]], before_k[b, :, :before_len[b]])
    assert after_len[3] == len(whole) + len(g3.token_ids) - 1
    assert state.pending[0] == (gens[0].token_ids[-1],)  # idle rows still wait on their last token
    # and they go on exactly as if they had never been skipped
    more = rng.integers(5, 1000, 4).tolist()
    appended = [more if b == 0 else [] for b in range(8)]
    budgets = [5 if b == 0 else 0 for b in range(8)]
    (g0, *_), state = sampler.continue_(state, appended, greedy, budgets=budgets)
    (expect0,) = sampler.generate([prompts[0] + gens[0].token_ids + more], greedy)
    assert g0.token_ids == expect0.token_ids


def test_a_long_feed_runs_its_later_chunks_alone_with_the_same_result():
    """One row's 300-token feed among 4-token ones: the chunks past the short feeds run on that
    row alone (prefill_chunk 64), and every row generates what it would on its own."""
    model, cfg, tok = load_policy("tiny-random", seed=3)
    sampler = Sampler(model, cfg, max_cache_len=512, pad_id=tok.pad_id, prefill_chunk=64)
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=4)
    rng = np.random.default_rng(2)
    prompts = [rng.integers(5, 1000, 300 if b == 1 else 4).tolist() for b in range(6)]
    calls = []
    real = Sampler._rows_to_run
    Sampler._rows_to_run = staticmethod(lambda busy, batch: calls.append(sum(busy)) or real(busy, batch))
    try:
        gens = sampler.generate(prompts, greedy)
    finally:
        Sampler._rows_to_run = staticmethod(real)
    # continue_ asks once for the whole turn, then the prefill per chunk: chunk 0 has every
    # row, chunks 1-4 only the long one
    assert calls == [6, 6, 1, 1, 1, 1]
    for b in (0, 1, 5):
        (alone,) = sampler.generate([prompts[b]], greedy)
        assert gens[b].token_ids == alone.token_ids
        np.testing.assert_allclose(gens[b].logprobs, alone.logprobs, atol=1e-4)
