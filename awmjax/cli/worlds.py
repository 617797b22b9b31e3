"""`awmjax worlds ...`: generate, validate, summarize and show worlds (no jax needed)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from awmjax.cli import CliError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `worlds` noun and its verbs."""
    p = sub.add_parser("worlds", help="generate, validate, inspect and play worlds", description=__doc__)
    p.set_defaults(noun_parser=p)
    verbs = p.add_subparsers(dest="verb", metavar="VERB")

    g = verbs.add_parser("generate", help="write a catalog of procedural worlds (no model needed)",
                         description="Generate N procedural worlds, run the validation gate on each, and write "
                                     "a catalog with deterministic train / held-out splits. Byte-identical for the same seed.")
    g.add_argument("--n", type=int, default=1000, help="number of worlds (default 1000)")
    g.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    g.add_argument("--out", required=True, help="catalog directory to create")
    g.add_argument("--held-out", type=float, default=0.1, help="fraction of each category held out (default 0.1)")
    g.add_argument("--workers", type=int, default=None, help="worker processes (default: one per core)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing catalog at --out")
    g.set_defaults(handler=cmd_generate)

    v = verbs.add_parser("validate", help="run the validation gate and report every failure",
                         description="Validate a catalog directory, a world .json file, or a .jsonl file of worlds. "
                                     "Exit status 1 if any world fails.")
    v.add_argument("path")
    v.add_argument("--json", action="store_true", help="print failures as JSON lines")
    v.set_defaults(handler=cmd_validate)

    s = verbs.add_parser("stats", help="summary table of a catalog (like AWM's)",
                         description="Tables, tools, seed rows, tasks and gold-sequence lengths (mean / median / P90), "
                                     "categories and distinct-name counts.")
    s.add_argument("catalog")
    s.add_argument("--split", choices=["train", "held-out"], default=None)
    s.add_argument("--json", action="store_true", help="print the summary as JSON")
    s.set_defaults(handler=cmd_stats)

    sh = verbs.add_parser("show", help="print one world readably", description="Print a world's scenario, schema, tools and tasks.")
    sh.add_argument("world", help="world id (or unique prefix), or a path to a world .json file")
    sh.add_argument("--catalog", default=None, help="catalog directory holding the world")
    sh.add_argument("--json", action="store_true", help="print the world's JSON document")
    sh.set_defaults(handler=cmd_show)

    try:
        from awmjax.cli.worlds_play import add_play_commands
    except ModuleNotFoundError as e:
        if e.name != "awmjax.cli.worlds_play":
            raise
    else:
        add_play_commands(verbs)


def _load_world_file(path: Path):
    from envgen.world import WorldFormatError, from_dict, loads

    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        worlds = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    worlds.append(from_dict(json.loads(line), source=f"{path}:{n}"))
                except json.JSONDecodeError as e:
                    raise WorldFormatError(f"not valid JSON ({e.msg})", source=f"{path}:{n}") from None
        return worlds
    return [loads(text, source=str(path))]


def open_worlds(path_or_catalog: str):
    """Worlds from a catalog directory, a .json world file or a .jsonl file."""
    from envgen.catalog import Catalog, CatalogError
    from envgen.world import WorldFormatError

    p = Path(path_or_catalog)
    try:
        if p.is_dir():
            return list(Catalog.open(p).worlds())
        if p.is_file():
            return _load_world_file(p)
    except (CatalogError, WorldFormatError) as e:
        raise CliError(str(e)) from None
    raise CliError(f"{p} does not exist; give a catalog directory or a world .json / .jsonl file")


def cmd_generate(args) -> int:
    from envgen.build import generate_catalog
    from envgen.catalog import CatalogError

    try:
        report = generate_catalog(args.n, args.seed, args.out, workers=args.workers, held_out=args.held_out, overwrite=args.overwrite)
    except (CatalogError, ValueError) as e:
        raise CliError(str(e)) from None
    rate = report.accepted / report.seconds if report.seconds else 0.0
    print(f"wrote {report.path}: {report.accepted} worlds accepted, {report.rejected} rejected "
          f"in {report.seconds:.1f}s ({rate:.0f} worlds/s)")
    if report.rejected:
        print("rejections by rule: " + ", ".join(f"{k} {v}" for k, v in sorted(report.failures_by_rule.items())))
        print(f"reasons: {Path(report.path) / 'rejected.jsonl'}")
    return 0


def cmd_validate(args) -> int:
    from envgen.build import validate_many

    worlds = open_worlds(args.path)
    results = validate_many(worlds, progress=sys.stderr.isatty())
    bad = {wid: f for wid, f in results.items() if f}
    for wid, failures in bad.items():
        for f in failures:
            if args.json:
                print(json.dumps({"world": wid, **f.__dict__}))
            else:
                print(f"{wid}: {f}")
    print(f"{len(results) - len(bad)}/{len(results)} worlds pass the gate" + (f"; {len(bad)} fail" if bad else ""), file=sys.stderr)
    return 1 if bad else 0


def cmd_stats(args) -> int:
    from envgen.catalog import Catalog, CatalogError
    from envgen.stats import format_summary, summarize

    try:
        cat = Catalog.open(args.catalog)
        summary = summarize(cat.worlds(args.split))
    except CatalogError as e:
        raise CliError(str(e)) from None
    summary["splits"] = {k: len(v) for k, v in cat.index["splits"].items()}
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(format_summary(summary))
        print("splits: " + ", ".join(f"{k} {v}" for k, v in summary["splits"].items()))
    return 0


def cmd_show(args) -> int:
    from envgen.catalog import Catalog, CatalogError
    from envgen.world import dumps

    p = Path(args.world)
    if p.is_file():
        worlds = _load_world_file(p)
        if len(worlds) != 1:
            raise CliError(f"{p} holds {len(worlds)} worlds; show takes one (use a catalog and an id)")
        world = worlds[0]
    else:
        if not args.catalog:
            raise CliError(f"{args.world} is not a file; pass --catalog DIR to look it up by id")
        try:
            world = Catalog.open(args.catalog).get(args.world)
        except CatalogError as e:
            raise CliError(str(e)) from None
    print(dumps(world, indent=2) if args.json else describe(world))
    return 0


def describe(world) -> str:
    """A world as readable text: scenario, tables, tools with parameters, tasks with gold calls."""
    out = [f"{world.id}  [{world.scenario.category}]", f"  {world.scenario.name}: {world.scenario.description}", ""]
    out.append(f"tables ({len(world.seed)}), {world.seed_row_count()} seed rows:")
    for table, spec in world.seed.items():
        out.append(f"  {table}({', '.join(spec['columns'])})  {len(spec['rows'])} rows")
    out.append(f"\ntools ({len(world.tools)}):")
    for t in world.tools:
        props = t.parameters.get("properties", {})
        req = set(t.parameters.get("required", []))
        params = ", ".join(f"{k}{'' if k in req else '?'}: {v.get('type', 'any')}" for k, v in props.items())
        out.append(f"  {t.name}({params})  [{t.impl.kind}]\n      {t.description}")
    out.append(f"\ntasks ({len(world.tasks)}):")
    for task in world.tasks:
        tags = f" [{', '.join(task.tags)}]" if task.tags else ""
        out.append(f"  {task.id}{tags}: {task.instruction}")
        for c in task.gold or ():
            out.append(f"      -> {c.tool} {json.dumps(c.arguments, ensure_ascii=False)}")
        if task.answer:
            out.append(f"      answer: {task.answer}")
    return "\n".join(out)
