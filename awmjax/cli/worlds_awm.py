"""`awmjax worlds import-awm` and `awmjax worlds serve-mcp`: AWM's published worlds, and any world over MCP."""

from __future__ import annotations

import argparse
import sys
import time

from awmjax.cli import CliError
from awmjax.cli.worlds_play import add_world_arguments


def add_awm_commands(verbs: argparse._SubParsersAction) -> None:
    """Add `import-awm` and `serve-mcp` to the `worlds` noun's verbs."""
    i = verbs.add_parser("import-awm", help="import AgentWorldModel-1K's JSONL files as a catalog",
                         description="Join AWM's gen_*.jsonl files by scenario, convert each complete scenario into a "
                                     "world (schema, seed, tools with their FastAPI server, tasks, verifiers), run the "
                                     "validation gate, and write a catalog. Incomplete scenarios and broken verifiers "
                                     "are reported; the rest import.")
    i.add_argument("dir", help="folder holding AWM's gen_*.jsonl files")
    i.add_argument("--out", required=True, help="catalog directory to create")
    i.add_argument("--held-out", type=float, default=0.1, help="fraction of each category held out (default 0.1)")
    i.add_argument("--overwrite", action="store_true", help="replace an existing catalog at --out")
    i.set_defaults(handler=cmd_import_awm)

    s = verbs.add_parser("serve-mcp", help="serve a world as an MCP server (stdio or streamable HTTP)",
                         description="Serve any world, native or imported, with the mcp SDK: list_tools and call_tool, "
                                     "a fresh seeded state per MCP session.")
    add_world_arguments(s)
    how = s.add_mutually_exclusive_group()
    how.add_argument("--stdio", action="store_true", help="serve over stdin / stdout (the default)")
    how.add_argument("--http", type=int, metavar="PORT", default=None, help="serve streamable HTTP at http://HOST:PORT/mcp")
    s.add_argument("--host", default="127.0.0.1", help="address for --http (default 127.0.0.1)")
    s.set_defaults(handler=cmd_serve_mcp)


def cmd_import_awm(args) -> int:
    from tqdm import tqdm

    from envgen.awm_import import AwmImportError, import_awm
    from envgen.build import validate_many
    from envgen.catalog import CatalogError, write_catalog

    start = time.perf_counter()
    try:
        bar = tqdm(desc="import", unit="scenario", disable=not sys.stderr.isatty(), dynamic_ncols=True)
        report = import_awm(args.dir, on_scenario=lambda _: bar.update())
        bar.close()
    except AwmImportError as e:
        raise CliError(str(e)) from None
    gate = validate_many(report.worlds, progress=sys.stderr.isatty())
    accepted = [w for w in report.worlds if not gate[w.id]]
    rejected = report.rejected() + [
        {"awm_scenario": report.sources[w.id], "world": w.id, "failures": [str(f) for f in gate[w.id]]}
        for w in report.worlds if gate[w.id]
    ]
    try:
        path = write_catalog(args.out, accepted, rejected=rejected, held_out=args.held_out, overwrite=args.overwrite,
                             provenance={"importer": "envgen.awm_import", "source": str(args.dir),
                                         "scenarios": {w.id: report.sources[w.id] for w in accepted}})
    except (CatalogError, ValueError) as e:
        raise CliError(str(e)) from None
    for p in report.problems:
        print(f"  {p}")
    print(f"{'world':<36} {'AWM scenario':<28} {'tables':>6} {'rows':>5} {'tools':>5} {'tasks':>5} {'verified':>8}")
    for w in accepted:
        verified = sum(t.check.kind != "llm" for t in w.tasks)
        print(f"{w.id:<36} {report.sources[w.id]:<28} {len(w.seed):>6} {w.seed_row_count():>5} {len(w.tools):>5} {len(w.tasks):>5} {verified:>8}")
    print(f"wrote {path}: {len(accepted)} of {report.scenarios} scenarios imported, {len(rejected)} not "
          f"({time.perf_counter() - start:.1f}s); reasons in {path / 'rejected.jsonl'}")
    return 0


def cmd_serve_mcp(args) -> int:
    from awmjax.cli.worlds_play import _world
    from envgen import mcp_server

    world = _world(args)
    if args.http is not None:
        print(f"serving {world.id} ({len(world.tools)} tools) at http://{args.host}:{args.http}/mcp", file=sys.stderr)
        mcp_server.serve_http(world, args.http, args.host)
    else:
        mcp_server.serve_stdio(world)
    return 0
