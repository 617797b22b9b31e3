"""The LLM judges against a scripted OpenAI-compatible endpoint: verdict mapping, prompts, retries, fallback."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from awmjax.chat import Conversation
from awmjax.config import RunConfig
from awmjax.judges import JudgeConfig, JudgeRunner, make_judge
from awmjax.llm_judge import JudgeOutputError, parse_verdict
from awmjax.rl.config import RewardConfig
from awmjax.rollout import EpisodeResult
from awmjax.tokenizer import Tokenizer
from awmjax.toolcall import format_tool_call
from tests.fakes.replay_server import Reply, ReplayServer

TOOLS = [{"type": "function", "function": {"name": "cancel_order", "description": "Cancel an order.",
                                           "parameters": {"type": "object", "properties": {"order_id": {"type": "integer"}}}}}]


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.embedded()


def _episode(tok, task="Cancel order 7.", code="partial"):
    conv = Conversation.start(tok, task, TOOLS)
    conv.append_assistant(tok.encode(format_tool_call("cancel_order", {"order_id": 7})) + [tok.im_end_id])
    conv.append_tool_responses(['{"status": "cancelled", "order_id": 7}'])
    conv.append_assistant(tok.encode("Order 7 is cancelled.") + [tok.im_end_id])
    return EpisodeResult("shop", "t1", 0, conv, outcome=code, end_reason="answer", final_answer="Order 7 is cancelled.",
                         verdict={"result": code, "evidence": {"assertions": [{"assertion": "order 7 cancelled", "holds": True}]}},
                         changes=[{"table": "orders", "op": "update", "pk": {"id": 7}, "new": {"status": "cancelled"}}])


def _config(srv, name="llm", **kw):
    return JudgeConfig(name=name, base_url=srv.base_url, model="judge-model", **kw)


def _judge(cfg):
    return make_judge(cfg.name, **cfg.options())


def test_labels_map_to_outcomes_and_rewards(tok):
    replies = {  # routed by task, since the runner sends a batch's calls concurrently
        "task A": '{"reasoning": "done", "evidence": ["status cancelled"], "label": "completed"}',
        "task B": 'Here is my verdict:\n```json\n{"reasoning": "half", "evidence": [], "label": "Partially Completed"}\n```\nThanks!',
        "task C": '<think>hmm</think>{"reasoning": "wrong order", "evidence": "called with id 8", "label": "agent_error",}',
        "task D": '{"reasoning": "tool crashed", "evidence": [], "label": "environment-error"}',
    }
    route = lambda req: next(v for k, v in replies.items() if k in req["messages"][1]["content"])
    with ReplayServer([route] * 4) as srv:
        cfg = _config(srv, concurrency=4)
        with JudgeRunner(_judge(cfg), cfg) as runner:
            js = runner.submit([_episode(tok, f"{k}: cancel order 7.") for k in replies]).result(30)
    assert [j.result for j in js] == ["complete", "partial", "incomplete", "env_error"]
    assert [RewardConfig().reward(j.result) for j in js] == [1.0, 0.1, 0.0, 0.0]
    assert all(j.source == "llm" for j in js) and runner.fallbacks == 0
    assert js[0].evidence["evidence"] == ["status cancelled"] and js[2].evidence["evidence"] == ["called with id 8"]
    assert js[1].evidence["code_result"] == "partial" and {r["model"] for r in srv.requests} == {"judge-model"}


def test_prompts_show_what_each_judge_reads(tok):
    with ReplayServer(['{"label": "completed", "reasoning": "", "evidence": []}'] * 2) as srv:
        for name in ("llm", "code-augmented"):
            cfg = _config(srv, name=name)
            with JudgeRunner(_judge(cfg), cfg) as runner:
                (j,) = runner.submit([_episode(tok)]).result(30)
            assert j.source == name
        llm, aug = (r["messages"] for r in srv.requests)
    for messages in (llm, aug):
        user = messages[1]["content"]
        assert "Cancel order 7." in user and '"order_id": 7' in user and "Order 7 is cancelled." in user
        assert "<|im_start|>" not in user  # the trajectory is shown as roles and text, not raw ChatML
    assert "changeset" not in llm[1]["content"] and "imperfect" not in llm[0]["content"]
    assert '"status": "cancelled"' in aug[1]["content"] and "result: partial" in aug[1]["content"]
    assert "order 7 cancelled" in aug[1]["content"] and "imperfect" in aug[0]["content"]


def test_unusable_replies_are_retried_then_fall_back_to_the_code_verdict(tok):
    truncated = '{"reasoning": "The agent called cancel_order with the right id and the tool confirmed'
    script = ["I think it went fine.", truncated, Reply(status=500),
              '{"reasoning": "ok", "evidence": [], "label": "completed"',  # truncated after the label: repaired
              "garbage", Reply("late", delay=3.0)]
    with ReplayServer(script) as srv:
        cfg = _config(srv, retries=3, concurrency=1, timeout_s=1.0)
        with JudgeRunner(_judge(cfg), cfg) as runner:
            (j,) = runner.submit([_episode(tok)]).result(30)
            assert (j.result, j.source, runner.retries, runner.fallbacks) == ("complete", "llm", 3, 0)
        cfg = _config(srv, retries=1, timeout_s=1.0)
        with JudgeRunner(_judge(cfg), cfg) as runner:
            (j,) = runner.submit([_episode(tok, code="partial")]).result(30)
            assert (j.result, j.source, runner.fallbacks, runner.retries) == ("partial", "code-fallback", 1, 1)
            assert runner.failures["JudgeOutputError"] == 1 and runner.failures["timeout"] + runner.failures["APITimeoutError"] == 1
            assert "order 7 cancelled" in json.dumps(j.evidence)  # the code evidence stands in
        assert srv.served == 6


def test_parse_verdict_names_the_problem():
    assert parse_verdict('```\n{"label": "COMPLETED"}\n```')[0] == "complete"
    with pytest.raises(JudgeOutputError, match="no JSON object"):
        parse_verdict("completed")
    with pytest.raises(JudgeOutputError, match="no string \"label\""):
        parse_verdict('{"reasoning": "fine"}')
    with pytest.raises(JudgeOutputError, match="'maybe' is not one of"):
        parse_verdict('{"label": "maybe"}')


def test_judge_config_wires_the_endpoint():
    with pytest.raises(ValueError, match=r"\[judge\]: \[judge\] name = 'llm' needs base_url and model"):
        RunConfig.from_dict({"judge": {"name": "llm"}})
    cfg = RunConfig.from_dict({"judge": {"name": "code-augmented", "base_url": "http://127.0.0.1:9/v1", "model": "m",
                                         "retries": 1, "concurrency": 8, "timeout_s": 5}}).judge
    assert cfg.options()["base_url"] == "http://127.0.0.1:9/v1" and cfg.options()["timeout_s"] == 5
    assert callable(make_judge(cfg.name, **cfg.options()))


def test_train_rewards_come_from_the_llm_judge(tmp_path):
    from awmjax.train import train
    from envgen.catalog import write_catalog
    from tests.envgen.worlds import shop_world

    catalog = str(write_catalog(tmp_path / "shop", [shop_world()], held_out=0.0))
    verdict = '{"reasoning": "the order was handled", "evidence": [], "label": "completed"}'
    with ReplayServer([verdict] * 64) as srv:
        cfg = RunConfig.from_dict({
            "train": {"catalog": catalog, "out": str(tmp_path / "run"), "policy": "tiny-random", "steps": 1,
                      "tasks_per_step": 2, "group_size": 2, "micro_batch": 2, "checkpoint_every": 1, "max_cache_len": 1024},
            "rollout": {"max_turns": 2, "max_new_tokens": 8, "max_context": 1024},
            "judge": {"name": "llm", "base_url": srv.base_url, "model": "judge-model", "retries": 0},
        })
        (row,) = [json.loads(line) for line in (train(cfg, progress=False) / "metrics.jsonl").read_text().splitlines()]
    judged = srv.served
    assert judged >= 1 and row["judge_fallbacks"] == 0  # a random policy never passes the code check itself,
    assert row["outcome/complete"] == judged / 4  # so every "complete" is the LLM judge's
    assert row["reward_mean"] == pytest.approx(row["outcome/complete"] * 1.0 + row["outcome/format_error"] * -1.0)
