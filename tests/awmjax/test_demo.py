"""Smoke run of the demo pipeline on a tiny configuration: every phase runs and leaves its outputs."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_pipeline_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-m", "experiments.demo", "--quick", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    assert "held-out completion: before" in text and "-> after" in text
    assert "tasks by kind" in text and "phase wall times:" in text
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"before", "after_sft", "after_grpo", "phases"}
    assert set(summary["phases"]) >= {"SFT warm start", "GRPO", "evaluate untrained", "evaluate after GRPO"}
    for phase in ("before", "after_sft", "after_grpo"):
        assert summary[phase]["overall"]["episodes"] >= 4
        assert any((out / "eval" / phase / "transcripts").iterdir())
    for policy in (out / "sft" / "policy", out / "grpo" / "policy"):
        assert (policy / "config.json").is_file() and (policy / "tokenizer.json").is_file()
    assert (out / "completion.png").stat().st_size > 0 and (out / "grpo" / "metrics.jsonl").is_file()
    assert (out / "config.json").is_file() and any((out / "grpo" / "checkpoints").iterdir())
