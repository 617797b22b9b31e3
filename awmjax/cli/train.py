"""`awmjax train --config FILE` runs GRPO; `awmjax plot RUN` draws a run's curves as PNG."""

from __future__ import annotations

import argparse

from awmjax.cli import CliError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `train` and `plot` commands."""
    p = sub.add_parser("train", help="train a policy with GRPO on a catalog of worlds",
                       description="Run (or resume, from the run folder's latest checkpoint) GRPO training "
                                   "as described by a TOML run config; see awmjax/config.py for its sections.")
    p.add_argument("--config", required=True, help="TOML (or JSON) run config")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value, e.g. --set train.steps=3 (repeatable)")
    p.set_defaults(handler=cmd_train, noun_parser=p)

    q = sub.add_parser("plot", help="write PNG curves of a run's metrics",
                       description="Read RUN/metrics.jsonl and write RUN/curves.png (reward, outcomes, loss, KL, speed).")
    q.add_argument("run")
    q.set_defaults(handler=cmd_plot, noun_parser=q)


def _apply_overrides(doc: dict, overrides: list[str]) -> dict:
    import json

    for item in overrides:
        key, sep, raw = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot:
            raise CliError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. train.steps=3")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw  # a bare string
        doc.setdefault(section, {})[name] = value
    return doc


def cmd_train(args) -> int:
    import tomllib
    from pathlib import Path

    from awmjax.config import RunConfig
    from awmjax.train import train

    path = Path(args.config)
    if not path.is_file():
        raise CliError(f"config file {path} does not exist; see awmjax/config.py for the sections")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
        cfg = RunConfig.from_dict(_apply_overrides(doc, args.set), source=str(path))
    except (tomllib.TOMLDecodeError, ValueError) as e:
        raise CliError(str(e)) from None
    if not cfg.train.catalog:
        raise CliError(f"{path}: [train] catalog is empty; point it at a catalog (awmjax worlds generate --out DIR)")
    run = train(cfg)
    print(f"run folder: {run}  (metrics.jsonl, tensorboard/, checkpoints/, config.json)")
    return 0


def cmd_plot(args) -> int:
    from pathlib import Path

    from awmjax.plots import plot_run

    run = Path(args.run)
    if not (run / "metrics.jsonl").is_file():
        raise CliError(f"{run} has no metrics.jsonl; give a run folder written by `awmjax train`")
    print(plot_run(run))
    return 0
