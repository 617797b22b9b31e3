"""Schema-constrained tool calls: the grammar accepts exactly the calls the tools accept, the trie
masks equal a token-by-token check, and a sampler under it writes only valid calls."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
from flax import nnx

from awmjax.constrain import CallConstraint, CallGrammar, advance, call_grammar, token_table
from awmjax.model.config import ModelConfig
from awmjax.model.decoder import Decoder
from awmjax.sampler import Sampler, SamplingConfig
from awmjax.tokenizer import Tokenizer
from awmjax.toolcall import format_tool_call, parse_tool_calls
from envgen.args import compile_validator


def _tool(name, properties=None, required=()):
    return {"type": "function", "function": {"name": name, "description": "", "parameters": {
        "type": "object", "properties": properties or {}, "required": list(required),
        "additionalProperties": False}}}


TOOLS = [
    _tool("list_orders", {"status": {"type": "string", "enum": ["open", "paid"]}}),
    _tool("pay_order", {"order_id": {"type": "integer"}, "amount": {"type": "number"},
                        "express": {"type": "boolean"}}, ["order_id"]),
    _tool("add_note", {"order_id": {"type": "integer"}, "text": {"type": "string"},
                       "tags": {"type": "array", "items": {"type": "integer"}},
                       "extra": {"type": "object"}}, ["order_id", "text"]),
    _tool("ping"),
]
VALID = [
    ("list_orders", {}),
    ("list_orders", {"status": "paid"}),
    ("pay_order", {"order_id": 12}),
    ("pay_order", {"amount": -0.5e3, "order_id": 0, "express": True}),
    ("add_note", {"order_id": 3, "text": 'say "hi"\\ \u00e9 \n', "tags": [1, 22, 333], "extra": {"a": [None, 1.5]}}),
    ("add_note", {"text": "", "order_id": 7, "tags": []}),
    ("ping", {}),
]
INVALID = [
    '<tool_call>\n{"name": "drop_table", "arguments": {}}\n</tool_call>',  # no such tool
    '<tool_call>\n{"name": "ping", "arguments": {"x": 1}}\n</tool_call>',  # ping takes nothing
    '<tool_call>\n{"name": "pay_order", "arguments": {}}\n</tool_call>',  # order_id is required
    '<tool_call>\n{"name": "pay_order", "arguments": {"order_id": "12"}}\n</tool_call>',  # not an integer
    '<tool_call>\n{"name": "pay_order", "arguments": {"order_id": 1.5}}\n</tool_call>',
    '<tool_call>\n{"name": "pay_order", "arguments": {"order_id": 012}}\n</tool_call>',  # leading zero
    '<tool_call>\n{"name": "pay_order", "arguments": {"order_id": 1, "order_id": 2}}\n</tool_call>',
    '<tool_call>\n{"name": "list_orders", "arguments": {"status": "closed"}}\n</tool_call>',  # not in enum
    '<tool_call>\n{"name": "list_orders", "arguments": {"status": "open"}}</tool_call>',  # layout
    '<tool_call>\n{"name":"ping", "arguments": {}}\n</tool_call>',
    '<tool_call>\n{"name": "pay_order", "arguments": {"order_id": 1234567890123456789}}',  # past int64
    '<tool_call>\n{"name": "pay_order", "arguments": {"order_id": 1, "amount": 5.6d2}}',
]


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.embedded()


@pytest.fixture(scope="module")
def grammar(tok):
    return call_grammar(tok, TOOLS, tok.vocab_size)


def _run_bytes(grammar, text: str):
    state = grammar.start()
    for b in text.encode():
        state = advance(grammar, state, b)
        if state is None:
            return None
    return state


def test_every_valid_call_is_accepted_token_by_token_and_may_end_only_after_a_block(tok, grammar):
    for name, args in VALID:
        text = "Let me look.\n" + format_tool_call(name, args) + "\n" + format_tool_call("ping")
        con = CallConstraint(grammar)
        for token in tok.encode(text):
            assert con.mask()[token], f"{tok.decode([token])!r} masked in {text!r}"
            end_here = con.mask()[tok.im_end_id]
            assert end_here == grammar.stop_allowed(con.state)
            con.advance(token)
        assert con.mask()[tok.im_end_id]
        con.advance(tok.im_end_id)
        assert con.state is None
    # mid-call the turn may not end; in an answer it may
    assert not grammar.mask(_run_bytes(grammar, '<tool_call>\n{"name": "pi'))[tok.im_end_id]
    assert grammar.mask(_run_bytes(grammar, "The order is paid."))[tok.im_end_id]


def test_calls_the_tools_do_not_accept_leave_the_grammar(grammar):
    for text in INVALID:
        assert _run_bytes(grammar, text) is None, text
    # a closed object offers no second key once its only key is used
    assert _run_bytes(grammar, '<tool_call>\n{"name": "list_orders", "arguments": {"status": "open", ') is None


def test_trie_masks_equal_checking_every_token(tok, grammar):
    table = grammar.table
    texts = ["", "Sure <", "<tool_call>", '<tool_call>\n{"name": "pay_', '<tool_call>\n{"name": "pay_order", "arguments": {',
             '<tool_call>\n{"name": "pay_order", "arguments": {"order_id": 4',
             '<tool_call>\n{"name": "add_note", "arguments": {"order_id": 4, "text": "ab',
             '<tool_call>\n{"name": "add_note", "arguments": {"order_id": 4, "text": "a\\u00',
             '<tool_call>\n{"name": "add_note", "arguments": {"order_id": 4, "text": "a", "tags": [1',
             '<tool_call>\n{"name": "ping", "arguments": {}}\n</tool_call>']
    for text in texts:
        state = _run_bytes(grammar, text)
        want = np.zeros(table.vocab_size, bool)
        want[list(table.stop_ids)] = grammar.stop_allowed(state)
        for i, data in enumerate(table.bytes):
            s = state if data else None
            for b in data or b"":
                s = advance(grammar, s, b)
                if s is None:
                    break
            want[i] |= s is not None
        got = grammar.mask(state)
        assert (got == want).all(), (text, [tok.decode([i]) for i in np.flatnonzero(got != want)[:5]])


def test_schemas_it_cannot_hold_are_named():
    table = token_table(Tokenizer.embedded(), 49152)
    with pytest.raises(ValueError, match="required"):
        CallGrammar([_tool("f", {"a": {"type": "integer"}}, ["b"])], table)
    with pytest.raises(ValueError, match="at least one tool"):
        CallGrammar([], table)
    with pytest.raises(ValueError, match="vocab_size"):
        token_table(Tokenizer.embedded(), 1000)


def test_sampling_under_the_grammar_writes_only_calls_the_schemas_accept(tok, grammar):
    """A random model mid-call (after `<tool_call>`) at temperature 1: every finished block parses,
    names a tool and passes the environment's own argument check."""
    config = ModelConfig.tiny(vocab_size=tok.vocab_size)
    sampler = Sampler(Decoder(config, rngs=nnx.Rngs(0)), config, max_cache_len=256, pad_id=tok.pad_id)
    opened = tok.encode("<tool_call>")
    prompts = [[1, 2, 3] + opened] * 8
    seen, finished = set(), 0
    for seed in range(3):
        cons = []
        for _ in prompts:
            con = CallConstraint(grammar)
            for t in opened:
                con.advance(t)
            cons.append(con)
        sampling = SamplingConfig(temperature=1.0, max_new_tokens=96, seed=seed, stop_token_ids=tok.stop_token_ids)
        for gen in sampler.generate(prompts, sampling, constraints=cons):
            text = tok.decode(opened + gen.token_ids, skip_special_tokens=True)
            if "</tool_call>" not in text:
                continue  # the budget ran out inside a long value
            finished += 1
            block = text[: text.index("</tool_call>") + len("</tool_call>")]
            parsed = parse_tool_calls(block, "direct", [t["function"]["name"] for t in TOOLS])
            assert parsed.ok and len(parsed.calls) == 1, (block, parsed.errors)
            call = parsed.calls[0]
            spec = next(t["function"] for t in TOOLS if t["function"]["name"] == call.name)
            assert compile_validator(spec["parameters"])(call.arguments)[1] is None, block
            seen.add(call.name)
            # the model's own log-probabilities are returned, the masked draw's beside them
            assert all(s >= m - 1e-4 for s, m in zip(gen.sampling_logprobs, gen.logprobs))
            assert any(s > m + 1e-3 for s, m in zip(gen.sampling_logprobs, gen.logprobs))
    assert finished >= 8 and len(seen) >= 2, (finished, seen)


def test_constrained_calls_need_the_sampler(tok):
    from awmjax.rollout import RolloutConfig, run_episodes
    from tests.envgen.worlds import shop_doc
    from envgen import world as W

    class Scripted:
        def generate(self, prompts, sampling, *, budgets=None):
            raise AssertionError("not reached")

    world = W.from_dict(shop_doc())
    with pytest.raises(ValueError, match="constrain_calls"):
        run_episodes(Scripted(), tok, _NoPool(), [(world, world.tasks[0], 0)],
                     RolloutConfig(constrain_calls=True, max_new_tokens=16, max_context=512), SamplingConfig())


class _NoPool:
    def reset(self, items):
        return [type("R", (), {"outcome": "ok", "slot": slot})() for slot, *_ in items]


def test_eval_cli_refuses_constrained_calls_on_an_endpoint(tmp_path, capsys):
    from awmjax.cli import main

    argv = ["eval", "--worlds", str(tmp_path), "--base-url", "http://127.0.0.1:9/v1", "--constrain-calls"]
    assert main(argv) == 2
    assert "drop --constrain-calls with --base-url" in capsys.readouterr().err
