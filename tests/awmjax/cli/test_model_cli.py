"""`awmjax model generate` end to end on the embedded policy, and the CLI's user-error messages."""

import json

import pytest

from awmjax.cli import main


def test_generate_end_to_end_with_the_embedded_model(tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("What is the capital of France?\nWrite a haiku about databases.\n", encoding="utf-8")
    out = tmp_path / "out" / "gen.jsonl"
    argv = ["model", "generate", str(prompts), "--out", str(out), "--max-new-tokens", "8", "--seed", "1",
            "--temperature", "0.7", "--top-k", "50", "--top-p", "0.9"]
    assert main(argv) == 0
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["prompt"] for r in records] == ["What is the capital of France?", "Write a haiku about databases."]

    from awmjax.tokenizer import Tokenizer

    tok = Tokenizer.embedded()
    for r in records:
        assert 1 <= len(r["token_ids"]) <= 8 and len(r["logprobs"]) == len(r["token_ids"])
        assert all(isinstance(t, int) and 0 <= t < tok.vocab_size for t in r["token_ids"])
        assert all(lp <= 0.0 for lp in r["logprobs"])
        assert r["text"] == tok.decode(r["token_ids"], skip_special_tokens=True)
        assert isinstance(r["finish_reason"], str) and r["prompt_tokens"] > 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["gen.jsonl"]
    assert "wrote 2 generations" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content, name, message",
    [
        (None, "missing.txt", "does not exist"),
        ("\n\n", "empty.txt", "holds no prompts"),
        ('{"prompt": "a"}\nnot json\n', "bad.jsonl", "bad.jsonl:2 is not valid JSON"),
        ('{"text": "a"}\n', "nofield.jsonl", 'no "prompt" string'),
    ],
)
def test_generate_reports_bad_prompt_files(tmp_path, capsys, content, name, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content, encoding="utf-8")
    assert main(["generate", str(path), "--out", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("awmjax: error:") and message in err
    assert not (tmp_path / "o.jsonl").exists()


def test_generate_reports_bad_options_before_loading_a_model(tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("hi\n", encoding="utf-8")
    assert main(["generate", str(prompts), "--out", str(tmp_path / "o.jsonl"), "--max-new-tokens", "0"]) == 2
    assert "--max-new-tokens=0" in capsys.readouterr().err
    assert main(["generate", str(prompts), "--out", str(tmp_path / "o.jsonl"), "--hf-dir", str(tmp_path / "nope")]) == 2
    assert "--hf-dir" in capsys.readouterr().err
    assert main(["model", "generate", str(prompts), "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_model_noun_without_verb_prints_help(capsys):
    assert main(["model"]) == 2
    assert "chat" in capsys.readouterr().out
