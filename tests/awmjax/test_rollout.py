"""Multi-turn episodes over a real pool with a scripted policy: every way an episode can end."""

import copy

import pytest

from awmjax.chat import ChatConfig, Conversation
from awmjax.rollout import RolloutConfig, history_prompt, run_episodes
from awmjax.sampler import Generation
from awmjax.sampling import SamplingConfig
from awmjax.tokenizer import Tokenizer
from awmjax.toolcall import format_tool_call
from envgen import world as W
from envgen.pool import Pool
from tests.envgen.worlds import shop_doc

LAMPS = [format_tool_call("find_product", {"query": "Lamp"}), format_tool_call("place_order", {"product_id": 1, "quantity": 2}), "I ordered two lamps."]
SCRIPTS = {
    "complete": LAMPS,
    "partial": [format_tool_call("place_order", {"product_id": 1, "quantity": 1})] * 2 + ["Done."],
    "gives up": ["Sorry, I cannot do that."],
    "bad json": ['<tool_call>\n{"name": "find_product", "arguments": {"query": }\n</tool_call>'],
    "unknown tool": [format_tool_call("delete_everything", {})],
    "loops": [format_tool_call("find_product", {"query": "Lamp"})] * 10,
    "guard refuses then answers": [format_tool_call("place_order", {"product_id": 3, "quantity": 1}), "The chair is out of stock."],
}


def _world():
    doc = shop_doc()
    base = doc["tasks"][0]
    doc["tasks"] = []
    for name in SCRIPTS:
        t = copy.deepcopy(base)
        t["id"], t["instruction"] = name.replace(" ", "-"), f"Buy two lamps. [{name}]"
        doc["tasks"].append(t)
    return W.from_dict(doc)


class ScriptedPolicy:
    """Answers each episode (recognized by its task text) with the next turn of its script."""

    def __init__(self, tokenizer):
        self.tok, self.cursor = tokenizer, {}

    def generate(self, prompts, sampling, *, budgets=None):
        out = []
        for prompt in prompts:
            text = self.tok.decode(prompt)
            name = next(n for n in SCRIPTS if f"[{n}]" in text)
            k = self.cursor.get(name, 0)
            self.cursor[name] = k + 1
            ids = self.tok.encode(SCRIPTS[name][k]) + [self.tok.im_end_id]
            out.append(Generation(ids, [-0.5] * len(ids), [-0.5] * len(ids), "stop"))
        return out


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.embedded()


@pytest.fixture(scope="module")
def pool():
    with Pool(n_slots=16, workers=2) as p:
        yield p


def test_every_episode_ending(tokenizer, pool):
    world = _world()
    pool.register([world])
    items = [(world, t, 0) for t in world.tasks]
    results = {r.task_id: r for r in run_episodes(ScriptedPolicy(tokenizer), tokenizer, pool, items, RolloutConfig(max_turns=4), SamplingConfig())}
    r = results["complete"]
    assert (r.outcome, r.end_reason, r.turns, r.tool_calls, r.final_answer) == ("complete", "answer", 3, 2, "I ordered two lamps.")
    assert [c["table"] for c in r.changes] == ["orders", "products"]
    assert results["partial"].outcome == "partial"  # stock is right, but as two orders of one
    assert (results["gives-up"].outcome, results["gives-up"].tool_calls) == ("incomplete", 0)
    for name in ("bad-json", "unknown-tool"):
        assert results[name].outcome == "format_error" and results[name].end_reason == "format_error", name
        assert results[name].messages
    assert (results["loops"].outcome, results["loops"].end_reason, results["loops"].turns) == ("incomplete", "max_turns", 4)
    g = results["guard-refuses-then-answers"]
    assert g.outcome == "incomplete" and g.tool_calls == 1 and "out of stock" in g.final_answer


def test_policy_tokens_are_kept_exactly_and_only_they_are_trainable(tokenizer, pool):
    world = _world()
    pool.register([world])
    task = world.task("complete")
    (r,) = run_episodes(ScriptedPolicy(tokenizer), tokenizer, pool, [(world, task, 0)], RolloutConfig(), SamplingConfig())
    conv = r.conversation
    trained = [i for i, m in zip(conv.ids, conv.mask) if m]
    expected = sum((tokenizer.encode(t) + [tokenizer.im_end_id] for t in LAMPS), [])
    assert trained == expected
    assert sum(1 for lp in conv.logprobs if lp == -0.5) == len(expected)


def test_history_window_keeps_system_task_and_last_steps(tokenizer):
    conv = Conversation.start(tokenizer, "Do it.", [], ChatConfig())
    for k in range(3):
        conv.append_assistant(tokenizer.encode(f"step {k}") + [tokenizer.im_end_id])
        conv.append_tool_responses([f"result {k}"])
    full = tokenizer.decode(history_prompt(conv, None))
    one = tokenizer.decode(history_prompt(conv, 1))
    assert all(f"step {k}" in full for k in range(3))
    assert "Do it." in one and "step 2" in one and "result 2" in one and "step 0" not in one and "step 1" not in one
    assert one.endswith("<|im_start|>assistant\n")


class PromptRecorder(ScriptedPolicy):
    """The scripted policy, keeping every prompt it was given."""

    def __init__(self, tokenizer):
        super().__init__(tokenizer)
        self.prompts = []

    def generate(self, prompts, sampling, *, budgets=None):
        self.prompts += [list(p) for p in prompts]
        return super().generate(prompts, sampling, budgets=budgets)


def test_mcp_history_limit_pins_the_tool_listing_in_prompts_and_training_samples(tokenizer, pool, monkeypatch):
    from awmjax.rl.batch import samples_from_episode
    from awmjax.toolcall import LIST_TOOLS, format_mcp_call

    world = _world()
    pool.register([world])
    task = world.task("loops")
    script = [format_tool_call(LIST_TOOLS, {})] + [format_mcp_call("find_product", {"query": f"Lamp {k}"}) for k in range(4)]
    monkeypatch.setitem(SCRIPTS, "loops", script + ["No lamps."])
    policy = PromptRecorder(tokenizer)
    cfg = RolloutConfig(surface="mcp", history_window=2, max_turns=6)
    (r,) = run_episodes(policy, tokenizer, pool, [(world, task, 0)], cfg, SamplingConfig())
    assert (r.end_reason, r.turns, r.tool_calls) == ("answer", 6, 5)
    texts = [tokenizer.decode(p) for p in policy.prompts]
    for k, text in enumerate(texts):
        # the listing (the world's own tools, which the mcp system turn does not show) stays in every prompt
        assert ('"place_order"' in text) == (k >= 1), k
        visible = set(range(k)) if k <= 2 else {0, k - 2, k - 1}  # window 2, the list_tools step pinned
        assert [j for j in range(1, k) if f"Lamp {j - 1}" in text] == sorted(visible - {0}), (k, text)
    # training: sample k is exactly the prompt turn k was sampled from, then that turn
    samples = samples_from_episode(r, advantage=1.0, history_window=cfg.history_window)
    assert len(samples) == r.turns
    turns = [t for t in r.conversation.turns if t.role == "assistant"]
    for prompt, sample, turn in zip(policy.prompts, samples, turns):
        written = r.conversation.turn_ids(turn)
        assert sample.ids == prompt[:-len(r.conversation._generation_prompt)] + written
        assert sum(sample.mask) == sum(r.conversation.mask[turn.start:turn.end]) > 0


def test_direct_surface_pins_no_step(tokenizer):
    conv = Conversation.start(tokenizer, "Do it.", [], ChatConfig())
    mcp = Conversation.start(tokenizer, "Do it.", [], ChatConfig(surface="mcp"))
    for c in (conv, mcp):
        for k in range(3):
            c.append_assistant(tokenizer.encode(f"step {k}") + [tokenizer.im_end_id])
            c.append_tool_responses([f"result {k}"])
    assert "step 0" not in tokenizer.decode(history_prompt(conv, 1))
    pinned = tokenizer.decode(history_prompt(mcp, 1))
    assert "step 0" in pinned and "result 0" in pinned and "step 1" not in pinned and "step 2" in pinned


def test_rollout_config_names_bad_limits():
    import pytest

    from awmjax.rollout import RolloutConfig

    with pytest.raises(ValueError, match="observation_chars"):
        RolloutConfig(observation_chars=10)
    with pytest.raises(ValueError, match="tool_schema"):
        RolloutConfig(tool_schema="tiny")
