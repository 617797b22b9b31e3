"""`awmjax worlds play` and `awmjax worlds replay`: call a world's tools by hand, replay gold sequences."""

from __future__ import annotations

import argparse
import json
import sys

from awmjax.cli import CliError

PLAY_HELP = """commands:
  TOOL {json arguments}      call a tool, e.g.  find_product {"query": "lamp"}
  <tool_call>...</tool_call>  a turn as a model would write it
  :tools                     list the tools and their parameters
  :tasks                     list the tasks
  :changes                   the changeset of this episode so far
  :verdict TASK [ANSWER]     the code verdict of TASK on the current state
  :reset                     back to the seeded state
  :help  :quit"""


def add_play_commands(verbs: argparse._SubParsersAction) -> None:
    """Add `play` and `replay` to the `worlds` noun's verbs."""
    p = verbs.add_parser("play", help="call a world's tools interactively", description=__doc__,
                         epilog=PLAY_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_world_arguments(p)
    p.add_argument("--surface", choices=["direct", "mcp"], default="direct", help="tool surface for <tool_call> turns")
    p.set_defaults(handler=cmd_play)

    r = verbs.add_parser("replay", help="replay every task's gold sequence and print the verdicts",
                         description="Run each task's gold calls on a fresh copy of the world and judge it. "
                                     "Exit status 1 if any task is not complete.")
    add_world_arguments(r)
    r.add_argument("--json", action="store_true", help="print one JSON line per task")
    r.set_defaults(handler=cmd_replay)


def add_world_arguments(parser: argparse.ArgumentParser) -> None:
    """WORLD (an id, a unique prefix or a .json path) and --catalog, read back by `_world(args)`."""
    parser.add_argument("world", help="world id (or unique prefix), or a path to a world .json file")
    parser.add_argument("--catalog", default=None, help="catalog directory holding the world")


def _world(args):
    from pathlib import Path

    from envgen.world import WorldFormatError, load

    p = Path(args.world)
    try:
        if p.is_file():
            return load(str(p))
        if not args.catalog:
            raise CliError(f"{args.world} is not a file; pass --catalog DIR to look it up by id")
        from envgen.catalog import Catalog, CatalogError

        try:
            return Catalog.open(args.catalog).get(args.world)
        except CatalogError as e:
            raise CliError(str(e)) from None
    except WorldFormatError as e:
        raise CliError(str(e)) from None


def _pretty(text: str) -> str:
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except json.JSONDecodeError:
        return text  # a truncated result


def cmd_play(args) -> int:
    from envgen import toolcalls as tc
    from envgen.runtime import Episode, Slot, compile_world

    world = _world(args)
    cw = compile_world(world)
    slot = Slot()
    ep, proto = Episode(slot, cw), tc.Protocol(args.surface)
    interactive = sys.stdin.isatty()
    print(f"{world.id}: {world.scenario.name} - {len(world.tools)} tools, {len(world.tasks)} tasks. :help for commands.")
    try:
        while True:
            if interactive:
                print("> ", end="", flush=True)
            line = sys.stdin.readline()
            if not line:
                break
            line = line.strip()
            if not line:
                continue
            if line in (":quit", ":q", ":exit"):
                break
            if line == ":help":
                print(PLAY_HELP)
            elif line == ":tools":
                for t in world.tools:
                    props = t.parameters.get("properties", {})
                    req = set(t.parameters.get("required", []))
                    params = ", ".join(f"{k}{'' if k in req else '?'}: {v.get('type', 'any')}" for k, v in props.items())
                    print(f"  {t.name}({params})  {t.description}")
            elif line == ":tasks":
                for t in world.tasks:
                    print(f"  {t.id}: {t.instruction}")
            elif line == ":changes":
                print(json.dumps(ep.changes(), indent=2, ensure_ascii=False))
            elif line == ":reset":
                ep.close()
                ep, proto = Episode(slot, cw), tc.Protocol(args.surface)
                print(f"reset ({ep.reset_method})")
            elif line.startswith(":verdict"):
                parts = line.split(maxsplit=2)
                if len(parts) < 2:
                    print("usage: :verdict TASK [ANSWER]")
                    continue
                try:
                    ep.task = world.task(parts[1])
                except KeyError as e:
                    print(f"error: {e.args[0]}; tasks: {', '.join(t.id for t in world.tasks)}")
                    continue
                print(json.dumps(ep.verdict(parts[2] if len(parts) > 2 else None).to_dict(), indent=2, ensure_ascii=False, default=str))
            elif line.startswith(":"):
                print(f"unknown command {line.split()[0]}; :help lists them")
            else:
                if line.startswith("<tool_call>"):
                    turn = line
                else:
                    name, _, rest = line.partition(" ")
                    try:
                        turn = tc.Call(name, json.loads(rest) if rest.strip() else {})
                    except json.JSONDecodeError as e:
                        print(f"format_error: arguments are not valid JSON ({e.msg}); write  TOOL {{\"arg\": value}}")
                        continue
                obs = tc.step(ep, proto, turn)
                print(f"[{obs.outcome}]")
                print(_pretty(obs.text))
    finally:
        ep.close()
        slot.close()
    return 0


def cmd_replay(args) -> int:
    from envgen.runtime import Episode, Slot, compile_world

    world = _world(args)
    cw = compile_world(world)
    slot = Slot()
    rows, failed = [], 0
    try:
        for task in world.tasks:
            if not task.gold:
                rows.append((task.id, 0, "-", "no gold sequence", ""))
                continue
            ep = Episode(slot, cw, task)
            outcomes = [ep.call(c.tool, c.arguments).outcome for c in task.gold]
            verdict = ep.verdict(task.answer)
            ep.close()
            failed += verdict.result != "complete"
            summary = ", ".join(f"{n} {o}" for o, n in sorted(_count(outcomes).items()))
            bad = [a["assertion"] for a in verdict.evidence.get("assertions", []) if not a["holds"]] + verdict.evidence.get("violations", [])
            rows.append((task.id, len(task.gold), summary, verdict.result, "; ".join(bad)[:80]))
            if args.json:
                print(json.dumps({"task": task.id, "calls": outcomes, "verdict": verdict.to_dict()}, default=str))
    finally:
        slot.close()
    if not args.json:
        head = ("task", "calls", "outcomes", "verdict", "why not complete")
        widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(5)]
        print(f"{world.id}: {world.scenario.name}")
        for r in [head] + rows:
            print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())
        print(f"{len(rows) - failed}/{len(rows)} tasks complete")
    return 1 if failed else 0


def _count(xs):
    out: dict[str, int] = {}
    for x in xs:
        out[x] = out.get(x, 0) + 1
    return out
