"""Catalogs: atomic writes, deterministic splits, clear errors, and the worlds CLI end to end."""

import filecmp
import json
import os

import pytest

from awmjax.cli import main
from envgen.catalog import Catalog, CatalogError, assign_splits, write_catalog
from tests.envgen.worlds import shop_world


def test_splits_are_deterministic_and_keep_every_category():
    pairs = [(f"w{i:03d}", f"cat{i % 5}") for i in range(100)]
    a = assign_splits(pairs, 0.2)
    b = assign_splits(list(reversed(pairs)), 0.2)
    assert a == b
    assert len(a["held-out"]) == 20 and not set(a["held-out"]) & set(a["train"])
    cats = {c for w, c in pairs if w in set(a["held-out"])}
    assert cats == {f"cat{i}" for i in range(5)}


def test_existing_catalog_is_not_overwritten_by_accident(tmp_path):
    out = tmp_path / "cat"
    write_catalog(out, [shop_world()], held_out=0.0)
    with pytest.raises(CatalogError, match="--overwrite"):
        write_catalog(out, [shop_world()])
    assert Catalog.open(out).get("tiny-shop") == shop_world()


def test_failed_write_leaves_nothing_behind(tmp_path):
    def worlds():
        yield shop_world()
        raise RuntimeError("generator crashed")

    with pytest.raises(RuntimeError):
        write_catalog(tmp_path / "cat", worlds())
    assert os.listdir(tmp_path) == []


def test_open_names_the_problem(tmp_path):
    with pytest.raises(CatalogError, match="no index.json"):
        Catalog.open(tmp_path)


def _cli(*args):
    return main([str(a) for a in args])


def test_cli_generate_is_byte_identical_and_valid(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert _cli("worlds", "generate", "--n", 30, "--seed", 3, "--out", a, "--workers", 2) == 0
    assert _cli("worlds", "generate", "--n", 30, "--seed", 3, "--out", b, "--workers", 1) == 0
    for name in sorted(os.listdir(a)):
        assert filecmp.cmp(a / name, b / name, shallow=False), name
    cat = Catalog.open(a)
    assert len(cat) == 30 and cat.rejected() == []
    assert _cli("worlds", "validate", a) == 0
    assert _cli("worlds", "stats", a, "--json") == 0
    out = capsys.readouterr().out
    stats = json.loads(out[out.index("{"):])
    assert stats["worlds"] == 30 and stats["tasks"] == 300
    wid = cat.ids("held-out")[0]
    assert _cli("worlds", "show", wid[:20], "--catalog", a) == 0
    assert wid in capsys.readouterr().out


def test_cli_errors_are_one_line_and_status_2(tmp_path, capsys):
    assert _cli("worlds", "stats", tmp_path / "missing") == 2
    err = capsys.readouterr().err
    assert err.startswith("awmjax: error:") and "worlds generate" in err
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert _cli("worlds", "validate", bad) == 2
    assert "field format" in capsys.readouterr().err
