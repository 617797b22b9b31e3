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
    g.add_argument("--profile", choices=("full", "compact"), default="full",
                   help="full (default) or compact: two tasks per world and only the tools they use plus one (CPU demos)")
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

    sy = verbs.add_parser("synthesize", help="synthesize worlds with a model over an OpenAI-compatible endpoint",
                          description="Run the AWM stages (scenarios, tasks, schema, seed, tool spec, tools, checks) "
                                      "against an OpenAI-compatible server; every stage output goes through the validation "
                                      "gate and is repaired by the model (bounded retries). Passing worlds form the catalog; "
                                      "the rest are listed with their reasons in its rejected.jsonl. The key is read from "
                                      "OPENAI_API_KEY (not needed by local servers).")
    sy.add_argument("--base-url", required=True, help="endpoint, e.g. http://127.0.0.1:8000/v1")
    sy.add_argument("--model", required=True, help="model name the endpoint serves")
    sy.add_argument("--n", type=int, required=True, help="number of worlds (scenarios) to synthesize")
    sy.add_argument("--out", required=True, help="catalog directory to create")
    sy.add_argument("--seeds", default=None, help="file of seed scenario names, one per line (default: the built-in list)")
    sy.add_argument("--scenarios", default=None,
                    help="JSONL of scenarios {name, description, category?} to use instead of stage 1 (e.g. AWM's gen_scenario.jsonl)")
    sy.add_argument("--concurrency", type=int, default=4, help="concurrent requests (default 4)")
    sy.add_argument("--cache", default=None, help="response cache directory (default: <out>.cache); a rerun resumes from it")
    sy.add_argument("--max-retries", type=int, default=5, help="repair rounds per stage after a gate failure (default 5, as AWM)")
    sy.add_argument("--tasks-per-world", type=int, default=10, help="tasks per scenario (default 10)")
    sy.add_argument("--category-cap", type=int, default=None, help="similar scenarios allowed per category (default 8%% of --n)")
    sy.add_argument("--max-tokens", type=int, default=4096, help="completion token limit per call (default 4096)")
    sy.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (default 0.7)")
    sy.add_argument("--timeout", type=float, default=300.0, help="seconds per request before it is retried (default 300)")
    sy.add_argument("--time-limit", type=float, default=None,
                    help="seconds after which no new request is sent; unfinished worlds are rejected with that reason")
    sy.add_argument("--embedding-model", default=None, help="model for scenario embeddings (default: --model; lexical dedup if not served)")
    sy.add_argument("--prices", default=None, help='JSON {"<model>": {"prompt": $/1M tokens, "completion": $/1M tokens}} for the cost column')
    sy.add_argument("--held-out", type=float, default=0.1, help="fraction of each category held out (default 0.1)")
    sy.add_argument("--overwrite", action="store_true", help="replace an existing catalog at --out")
    sy.set_defaults(handler=cmd_synthesize)

    try:
        from awmjax.cli.worlds_play import add_play_commands
    except ModuleNotFoundError as e:
        if e.name != "awmjax.cli.worlds_play":
            raise
    else:
        add_play_commands(verbs)
    from awmjax.cli.worlds_awm import add_awm_commands

    add_awm_commands(verbs)


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
        report = generate_catalog(args.n, args.seed, args.out, workers=args.workers, held_out=args.held_out, overwrite=args.overwrite,
                                  profile=args.profile)
    except (CatalogError, ValueError) as e:
        raise CliError(str(e)) from None
    rate = report.accepted / report.seconds if report.seconds else 0.0
    print(f"wrote {report.path}: {report.accepted} worlds accepted, {report.rejected} rejected "
          f"in {report.seconds:.1f}s ({rate:.0f} worlds/s)")
    if report.rejected:
        print("rejections by rule: " + ", ".join(f"{k} {v}" for k, v in sorted(report.failures_by_rule.items())))
        print(f"reasons: {Path(report.path) / 'rejected.jsonl'}")
    return 0


def cmd_synthesize(args) -> int:
    import asyncio
    import time

    from envgen.catalog import CatalogError
    from envgen.synth.client import LLM, OpenAIBackend, ResponseCache, load_prices
    from envgen.synth.pipeline import synthesize
    from envgen.synth.scenarios import load_scenarios, load_seeds
    from envgen.synth.stages import Context

    if args.n < 1:
        raise CliError(f"--n must be at least 1, got {args.n}")
    if Path(args.out).exists() and not args.overwrite:
        raise CliError(f"{args.out} already exists; choose another --out or pass --overwrite")
    try:
        seeds = load_seeds(args.seeds)
        given = load_scenarios(args.scenarios) if args.scenarios else None
        backend = OpenAIBackend(args.base_url, args.model, timeout=args.timeout, embedding_model=args.embedding_model)
        llm = LLM(backend, ResponseCache(args.cache or f"{args.out.rstrip('/')}.cache"),
                  params={"max_tokens": args.max_tokens, "temperature": args.temperature},
                  concurrency=args.concurrency, prices=load_prices(args.prices),
                  deadline=None if args.time_limit is None else time.monotonic() + args.time_limit)
        ctx = Context(llm, max_retries=args.max_retries, tasks_per_world=args.tasks_per_world)
    except ValueError as e:
        raise CliError(str(e)) from None
    try:
        report = asyncio.run(synthesize(ctx, n=args.n, out=args.out, seeds=seeds, scenarios=given, category_cap=args.category_cap,
                                        held_out=args.held_out, overwrite=args.overwrite, progress=sys.stderr.isatty()))
    except (CatalogError, ValueError) as e:
        raise CliError(str(e)) from None
    print(llm.table())
    for note in report.notes:
        print(f"note: {note}")
    print(f"wrote {report.path}: {len(report.accepted)} worlds accepted, {len(report.rejected)} rejected "
          f"of {report.n_scenarios} scenarios in {report.seconds:.1f}s")
    if report.rejected:
        print("rejected at stage: " + ", ".join(f"{k} {v}" for k, v in sorted(report.rejects_by_stage().items())))
        for r in report.rejected[:5]:
            print(f"  {r['scenario']} [{r['stage']}, {r['attempts']} attempts]: {(r['failures'] or ['?'])[0][:200]}")
        print(f"reasons: {Path(report.path) / 'rejected.jsonl'}")
    return 0 if report.accepted else 1


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
