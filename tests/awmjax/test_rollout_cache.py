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
