"""The AgentWorldModel-1K sample rows shared beside the repository (../shared/awm1k), for tests."""

import json
import os
from pathlib import Path

import pytest

AWM_DIR = Path(os.environ.get("AWM1K_DIR", Path(__file__).resolve().parents[3] / "shared" / "awm1k"))

needs_awm = pytest.mark.skipif(
    not (AWM_DIR / "gen_envs.jsonl").is_file(),
    reason=f"AWM sample files not found at {AWM_DIR} (set AWM1K_DIR to the folder of AWM's gen_*.jsonl files)",
)


def source_row(file: str, scenario: str) -> dict:
    """The row of an AWM file for `scenario` (fields as stored)."""
    with open(AWM_DIR / file, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row.get("scenario") == scenario:
                return row
    raise KeyError(f"{file} has no row for {scenario}")
