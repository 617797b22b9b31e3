"""Catalogs: a directory of worlds (JSONL shards plus an index) with named, deterministic splits.

Layout of a catalog directory:
    index.json            format, world count, shard list, splits, provenance
    worlds-00000.jsonl    one canonical world JSON per line (up to `shard_size` lines)
    rejected.jsonl        worlds the gate refused, with every failure (may be empty)

A catalog is written into a temporary sibling directory and renamed into place at the
end, so a crash never leaves a half-written catalog, and a reader never sees one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from envgen.world import World, WorldFormatError, canonical_json, from_dict, to_dict

CATALOG_FORMAT = "awmjax.catalog/1"
SPLITS = ("train", "held-out")


class CatalogError(ValueError):
    """A catalog directory is missing or malformed; the message names it and the fix."""


def assign_splits(worlds: list[tuple[str, str]], held_out: float, salt: str = "") -> dict[str, list[str]]:
    """Split (world id, category) pairs into train / held-out, per category, by hash order.

    Holding out per category keeps every domain in both splits; ordering by a hash of
    the id makes the split depend only on the worlds, not on generation order.
    """
    if not 0.0 <= held_out < 1.0:
        raise ValueError(f"held_out must be in [0, 1), got {held_out}")
    by_cat: dict[str, list[str]] = defaultdict(list)
    for wid, cat in worlds:
        by_cat[cat].append(wid)
    splits: dict[str, list[str]] = {"train": [], "held-out": []}
    for cat in sorted(by_cat):
        ids = sorted(by_cat[cat], key=lambda w: hashlib.sha256((salt + w).encode()).hexdigest())
        k = math.ceil(len(ids) * held_out) if held_out > 0 and len(ids) > 1 else 0
        splits["held-out"] += ids[:k]
        splits["train"] += ids[k:]
    return {name: sorted(ids) for name, ids in splits.items()}


def write_catalog(
    out_dir: str | os.PathLike,
    worlds: Iterable[World],
    *,
    rejected: Iterable[dict[str, Any]] = (),
    held_out: float = 0.1,
    shard_size: int = 250,
    provenance: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write worlds as a catalog at `out_dir` atomically (temp dir, then rename)."""
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise CatalogError(f"{out} already exists; choose another --out or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        shards, members, seen = [], [], set()
        handle, count = None, 0
        for world in worlds:
            if world.id in seen:
                continue  # content-addressed: the same world twice is one world
            seen.add(world.id)
            if handle is None or count == shard_size:
                if handle:
                    handle.close()
                shards.append(f"worlds-{len(shards):05d}.jsonl")
                handle, count = open(tmp / shards[-1], "w", encoding="utf-8"), 0
            handle.write(canonical_json(to_dict(world)) + "\n")
            members.append((world.id, world.scenario.category, len(shards) - 1))
            count += 1
        if handle:
            handle.close()
        with open(tmp / "rejected.jsonl", "w", encoding="utf-8") as f:
            for r in rejected:
                f.write(json.dumps(r, sort_keys=True) + "\n")
        index = {
            "format": CATALOG_FORMAT,
            "n_worlds": len(members),
            "shards": shards,
            "worlds": {wid: {"category": cat, "shard": s} for wid, cat, s in members},
            "splits": assign_splits([(w, c) for w, c, _ in members], held_out),
            "provenance": provenance or {},
        }
        with open(tmp / "index.json", "w", encoding="utf-8") as f:
            json.dump(index, f, indent=1, sort_keys=True)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


@dataclass
class Catalog:
    """A catalog opened for reading; worlds are parsed on demand and cached."""

    path: Path
    index: dict[str, Any]
    _cache: dict[str, World] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, path: str | os.PathLike) -> "Catalog":
        """Open a catalog directory (clear error if it is not one)."""
        p = Path(path)
        index_file = p / "index.json"
        if not index_file.is_file():
            raise CatalogError(f"{p} is not a catalog (no index.json); create one with `awmjax worlds generate --out {p}`")
        try:
            index = json.loads(index_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise CatalogError(f"{index_file} is not valid JSON ({e.msg}); regenerate the catalog") from None
        if index.get("format") != CATALOG_FORMAT:
            raise CatalogError(f"{index_file}: unsupported format {index.get('format')!r}; expected {CATALOG_FORMAT!r}")
        return cls(p, index)

    def __len__(self) -> int:
        return self.index["n_worlds"]

    def ids(self, split: str | None = None) -> list[str]:
        """World ids, all or of one split."""
        if split is None:
            return sorted(self.index["worlds"])
        if split not in self.index["splits"]:
            raise CatalogError(f"catalog {self.path} has no split {split!r}; splits: {', '.join(self.index['splits'])}")
        return list(self.index["splits"][split])

    def resolve(self, prefix: str) -> str:
        """The full id for an id or unique id prefix."""
        if prefix in self.index["worlds"]:
            return prefix
        hits = [w for w in self.index["worlds"] if w.startswith(prefix)]
        if len(hits) != 1:
            raise CatalogError(
                f"{'no' if not hits else str(len(hits))} worlds in {self.path} match {prefix!r}; "
                "list them with `awmjax worlds stats` or give more of the id"
            )
        return hits[0]

    def get(self, world_id: str) -> World:
        """One world by id (or unique id prefix)."""
        wid = self.resolve(world_id)
        if wid not in self._cache:
            shard = self.index["shards"][self.index["worlds"][wid]["shard"]]
            for world in self._read_shard(shard):
                self._cache[world.id] = world
        return self._cache[wid]

    def _read_shard(self, shard: str) -> Iterator[World]:
        path = self.path / shard
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                try:
                    yield from_dict(json.loads(line), source=f"{path}:{n}")
                except json.JSONDecodeError as e:
                    raise WorldFormatError(f"not valid JSON ({e.msg})", source=f"{path}:{n}") from None

    def worlds(self, split: str | None = None) -> Iterator[World]:
        """All worlds (or one split's) in id order."""
        wanted = set(self.ids(split))
        for shard in self.index["shards"]:
            for world in self._read_shard(shard):
                if world.id in wanted:
                    yield world

    def rejected(self) -> list[dict[str, Any]]:
        """Records of worlds the gate refused when this catalog was built."""
        path = self.path / "rejected.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
