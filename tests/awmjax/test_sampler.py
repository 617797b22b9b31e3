"""The KV-cache sampler: greedy SmolLM2, cache vs recompute, seeds, multi-turn, stops, streaming."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from awmjax.model.config import ModelConfig
from awmjax.model.decoder import Decoder
from awmjax.model.gguf_loader import embedded_gguf_path, load_smollm2
from awmjax.sampler import Sampler, SamplingConfig

PROMPTS = [[5, 9, 13], [7, 7, 2, 200, 31, 8, 100], [42]]


@pytest.fixture(scope="module")
def tiny():
    config = ModelConfig.tiny(qk_norm=True)
    model = Decoder(config, rngs=nnx.Rngs(0))
    return model, config, Sampler(model, config, max_cache_len=64, pad_id=0)


def _full_logprobs(model, tokens: list[int]) -> np.ndarray:
    logits_1TV, _ = model(jnp.asarray([tokens]), jnp.arange(len(tokens))[None])
    return np.asarray(jax.nn.log_softmax(logits_1TV[0], axis=-1))


def test_cached_decoding_equals_full_recompute(tiny):
    model, _, sampler = tiny
    gens = sampler.generate(PROMPTS, SamplingConfig(temperature=0.0, max_new_tokens=12))
    for prompt, gen in zip(PROMPTS, gens):
        assert len(gen.token_ids) == 12 and gen.finish_reason == "length"
        logp_TV = _full_logprobs(model, prompt + gen.token_ids)
        for i, token in enumerate(gen.token_ids):
            row_V = logp_TV[len(prompt) - 1 + i]
            assert token == int(row_V.argmax())
            assert abs(gen.logprobs[i] - row_V[token]) < 1e-5
        assert gen.sampling_logprobs == [0.0] * 12


def test_decode_segments_across_kv_buckets_equal_full_recompute(monkeypatch):
    """A decode that outgrows its cache-slot bucket continues in the next one (160, 192, 224
    slots...) and picks exactly the tokens a cache-free forward pass picks."""
    config = ModelConfig.tiny()
    model = Decoder(config, rngs=nnx.Rngs(1))
    sampler = Sampler(model, config, max_cache_len=320, pad_id=0)
    buckets = []
    real = sampler._kv_len
    monkeypatch.setattr(sampler, "_kv_len", lambda n: buckets.append(real(n)) or buckets[-1])
    prompts = [[5 + (7 * i) % 250 for i in range(121)], [7, 8, 9]]
    gens = sampler.generate(prompts, SamplingConfig(temperature=0.0, max_new_tokens=80))
    # the prefill chunk asks first; the decode then writes slots 121 .. 200
    assert buckets[-4:] == [128, 160, 192, 224]
    for prompt, gen in zip(prompts, gens):
        assert len(gen.token_ids) == 80
        logp_TV = _full_logprobs(model, prompt + gen.token_ids)
        picked = logp_TV[len(prompt) - 1:-1].argmax(-1)
        assert gen.token_ids == picked.tolist()
        np.testing.assert_allclose(gen.logprobs, logp_TV[np.arange(len(prompt) - 1, len(prompt) + 79),
                                                          gen.token_ids], atol=1e-5)
    # streaming steps one token at a time through the same sizes
    assert list(sampler.stream(prompts[0], SamplingConfig(temperature=0.0, max_new_tokens=80))) \
        == gens[0].token_ids


def test_sampling_is_reproducible_and_independent_of_batch(tiny):
    _, _, sampler = tiny
    sampling = SamplingConfig(temperature=1.0, top_k=50, top_p=0.9, max_new_tokens=10, seed=7)
    first = sampler.generate(PROMPTS, sampling)
    assert sampler.generate(PROMPTS, sampling) == first
    # a row's draws depend on (seed, row index, turn, step), not on the batch's padded size
    alone = sampler.generate(PROMPTS[:1], sampling)[0]
    assert alone.token_ids == first[0].token_ids
    np.testing.assert_allclose(alone.logprobs, first[0].logprobs, atol=1e-5)
    other = sampler.generate(PROMPTS, SamplingConfig(**{**sampling.__dict__, "seed": 8}))
    assert [g.token_ids for g in other] != [g.token_ids for g in first]


def test_row_ids_name_each_rows_random_stream(tiny):
    _, _, sampler = tiny
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=10, seed=7)
    first = sampler.generate(PROMPTS, sampling)
    assert sampler.generate(PROMPTS, sampling, row_ids=[0, 1, 2]) == first  # the default ids
    # the last row sampled alone, under its id in the full batch: the same tokens
    (alone,) = sampler.generate(PROMPTS[2:], sampling, row_ids=[2])
    assert alone.token_ids == first[2].token_ids
    (moved,) = sampler.generate(PROMPTS[2:], sampling, row_ids=[0])
    assert moved.token_ids != first[2].token_ids
    with pytest.raises(ValueError, match="row_ids"):
        sampler.generate(PROMPTS, sampling, row_ids=[0])


def test_top_k_top_p_and_log_probs(tiny):
    model, config, sampler = tiny
    top1 = sampler.generate(PROMPTS, SamplingConfig(temperature=0.7, top_k=1, max_new_tokens=6))
    greedy = sampler.generate(PROMPTS, SamplingConfig(temperature=0.0, max_new_tokens=6))
    assert [g.token_ids for g in top1] == [g.token_ids for g in greedy]
    assert all(abs(lp) < 1e-6 for g in top1 for lp in g.sampling_logprobs)
    gen = sampler.generate(PROMPTS[:1], SamplingConfig(temperature=0.5, top_k=5,
                                                       max_new_tokens=8, seed=3))[0]
    logp_TV = _full_logprobs(model, PROMPTS[0] + gen.token_ids)
    for i, token in enumerate(gen.token_ids):
        row_V = logp_TV[len(PROMPTS[0]) - 1 + i]
        assert token in np.argsort(-row_V)[:5]
        top5 = np.sort(row_V)[-5:] / 0.5
        expected = row_V[token] / 0.5 - np.log(np.exp(top5 - top5.max()).sum()) - top5.max()
        assert abs(gen.sampling_logprobs[i] - expected) < 1e-4
        assert abs(gen.logprobs[i] - row_V[token]) < 1e-5


def test_multi_turn_continue_equals_one_long_prompt(tiny):
    _, _, sampler = tiny
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=5)
    state = sampler.start(PROMPTS[:2])
    turn1, state = sampler.continue_(state, None, greedy)
    tool_responses = [[11, 12, 13, 14], [99]]
    turn2, state = sampler.continue_(state, tool_responses, greedy)
    for b in range(2):
        whole = PROMPTS[b] + turn1[b].token_ids + tool_responses[b]
        again = sampler.generate([whole], greedy)[0]
        assert turn2[b].token_ids == again.token_ids
        np.testing.assert_allclose(turn2[b].logprobs, again.logprobs, atol=1e-5)
        assert state.lengths()[b] == len(whole) + 5
    # a conversation skipped for a turn (budget 0) resumes where it was
    skipped, state = sampler.continue_(state, [[3], []], greedy, budgets=[5, 0])
    assert skipped[1].token_ids == [] and skipped[1].finish_reason == "budget"
    resumed, state = sampler.continue_(state, [[], []], greedy, budgets=[0, 5])
    whole = PROMPTS[1] + turn1[1].token_ids + tool_responses[1] + turn2[1].token_ids
    assert resumed[1].token_ids == sampler.generate([whole], greedy)[0].token_ids


def test_stop_ids_budgets_and_stop_strings():
    config = ModelConfig.tiny()
    model = Decoder(config, rngs=nnx.Rngs(0))
    free = Sampler(model, config, max_cache_len=64, pad_id=0)
    base = free.generate(PROMPTS, SamplingConfig(temperature=0.0, max_new_tokens=10))
    stop_id = base[0].token_ids[3]
    stopped = free.generate(PROMPTS, SamplingConfig(temperature=0.0, max_new_tokens=10,
                                                    stop_token_ids=(stop_id,)), budgets=[10, 4, 0])
    first = base[0].token_ids.index(stop_id) + 1
    assert stopped[0].token_ids == base[0].token_ids[:first] and stopped[0].finish_reason == "stop"
    assert stopped[1].finish_reason in ("budget", "stop") and len(stopped[1].token_ids) <= 4
    assert stopped[2].token_ids == [] and stopped[2].finish_reason == "budget"
    decode = lambda ids: " ".join(f"t{i}" for i in ids)
    texty = Sampler(model, config, max_cache_len=64, pad_id=0, decode_fn=decode)
    marker = f"t{base[1].token_ids[2]}"
    cut = texty.generate(PROMPTS, SamplingConfig(temperature=0.0, max_new_tokens=10,
                                                 stop_strings=(marker,)))
    assert cut[1].token_ids == base[1].token_ids[:base[1].token_ids.index(
        base[1].token_ids[2]) + 1]
    assert cut[1].finish_reason == "stop"
    with pytest.raises(ValueError, match="max_cache_len"):
        free.generate([list(range(70))], SamplingConfig(max_new_tokens=1))


def test_stream_yields_the_same_tokens_as_generate(tiny):
    _, _, sampler = tiny
    sampling = SamplingConfig(temperature=0.9, top_p=0.8, max_new_tokens=9, seed=5)
    assert list(sampler.stream(PROMPTS[1], sampling)) == \
        sampler.generate(PROMPTS[1:2], sampling)[0].token_ids


@pytest.mark.parametrize("changes", [dict(qk_norm=True), dict(attention_bias=True, tie_embeddings=False)])
def test_out_in_decode_layout_equals_the_model_layout(changes):
    config = ModelConfig.tiny(**changes)
    model = Decoder(config, rngs=nnx.Rngs(1))
    if config.attention_bias:  # zero-initialized biases would not show a misplaced q/k/v split
        for block in model.layers:
            for name in ("q_bias", "k_bias", "v_bias"):
                param = getattr(block.attn, name)
                w = param.get_value()
                param.set_value(w + jnp.linspace(-0.5, 0.5, w.size).reshape(w.shape))
    out_in = Sampler(model, config, max_cache_len=64, pad_id=0, decode_layout="out_in")
    plain = Sampler(model, config, max_cache_len=64, pad_id=0, decode_layout="model")
    assert out_in.out_in is not None and plain.out_in is None
    D, H = config.hidden_size, config.head_dim
    assert out_in.out_in.qkv_FD[0].shape == ((config.num_heads + 2 * config.num_kv_heads) * H, D)
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=10)
    a, b = out_in.generate(PROMPTS, sampling), plain.generate(PROMPTS, sampling)
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.logprobs, y.logprobs, atol=1e-5)
    assert list(out_in.stream(PROMPTS[1], sampling)) == b[1].token_ids
    with pytest.raises(ValueError, match="decode_layout"):
        Sampler(model, config, max_cache_len=64, pad_id=0, decode_layout="transposed")


def test_greedy_smollm2_knows_the_capital_of_france():
    from transformers import AutoTokenizer

    path = embedded_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True, tokenize=True)
    prompt = list(prompt["input_ids"] if hasattr(prompt, "keys") else prompt)
    model, config = load_smollm2()
    sampler = Sampler(model, config, max_cache_len=128, pad_id=tokenizer.pad_token_id or 2,
                      decode_fn=tokenizer.decode)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    gen = sampler.generate([prompt], SamplingConfig(temperature=0.0, max_new_tokens=24,
                                                    stop_token_ids=(im_end,)))[0]
    text = tokenizer.decode(gen.token_ids)
    assert "Paris" in text, text
    assert gen.finish_reason == "stop" and gen.token_ids[-1] == im_end
