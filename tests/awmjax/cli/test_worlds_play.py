"""`awmjax worlds play` and `replay` on the hand-written test world."""

from __future__ import annotations

import io
import json

import pytest

from awmjax.cli import main
from envgen.world import dumps
from tests.envgen.worlds import shop_world


@pytest.fixture()
def world_file(tmp_path):
    path = tmp_path / "shop.json"
    path.write_text(dumps(shop_world()))
    return str(path)


def test_replay_prints_a_verdict_table(world_file, capsys):
    assert main(["worlds", "replay", world_file]) == 0
    out = capsys.readouterr().out
    assert "buy-lamps" in out and "desk-price" in out and "2/2 tasks complete" in out


def test_play_calls_tools_and_shows_changes_and_verdicts(world_file, capsys, monkeypatch):
    lines = [":tools", 'place_order {"product_id": 1, "quantity": 2}', "place_order {oops", ":changes",
             ":verdict buy-lamps", ":verdict nope", ":reset", ":changes", ":quit"]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines) + "\n"))
    assert main(["worlds", "play", world_file]) == 0
    out = capsys.readouterr().out
    assert "place_order(product_id: integer, quantity: integer)" in out
    assert "[ok]" in out and '"order_id": 2' in out
    assert "format_error: arguments are not valid JSON" in out
    assert '"result": "complete"' in out and "no task 'nope'" in out
    assert "reset (rollback)" in out and out.rstrip().endswith("[]")


def test_unknown_world_is_one_clear_error(capsys):
    assert main(["worlds", "replay", "nope"]) == 2
    assert "pass --catalog" in capsys.readouterr().err
