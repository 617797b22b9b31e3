"""`awmjax train --config FILE` runs GRPO; `awmjax sft --config FILE` the SFT warm start;
`awmjax plot RUN` draws a run's curves as PNG."""

from __future__ import annotations

import argparse

from awmjax.cli import CliError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `train` and `plot` commands."""
    p = sub.add_parser("train", help="train a policy with GRPO on a catalog of worlds",
                       description="Run (or resume, from the run folder's latest checkpoint) GRPO training "
                                   "as described by a TOML run config; see awmjax/config.py for its sections.")
    _config_arguments(p, "train.steps=3")
    p.set_defaults(handler=cmd_train, noun_parser=p)

    f = sub.add_parser("sft", help="SFT warm start on the gold trajectories of a catalog",
                       description="Play every task's gold sequence through the pool (real tool responses), "
                                   "render it in the chat format with varied phrasings, and train on the policy's "
                                   "turns with the run's history limit. Writes [train] out/sft/ with metrics.jsonl "
                                   "and policy/ (a Hugging Face directory that `awmjax eval --policy` and "
                                   "`[train] policy` accept). Its schedule is the config's [sft] section.")
    _config_arguments(f, "sft.epochs=1")
    f.set_defaults(handler=cmd_sft, noun_parser=f)

    q = sub.add_parser("plot", help="write PNG curves of a run's metrics",
                       description="Read RUN/metrics.jsonl and write RUN/curves.png (reward, outcomes, loss, KL, speed).")
    q.add_argument("run")
    q.set_defaults(handler=cmd_plot, noun_parser=q)


def _config_arguments(parser: argparse.ArgumentParser, example: str) -> None:
    """--config FILE and repeatable --set SECTION.KEY=VALUE (read by load_run_config)."""
    parser.add_argument("--config", required=True, help="TOML (or JSON) run config")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help=f"override one config value, e.g. --set {example} (repeatable)")


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


def load_run_config(args):
    """The run config of --config with the --set overrides; errors name the file and the fix."""
    import tomllib
    from pathlib import Path

    from awmjax.config import RunConfig

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
    return cfg


def cmd_train(args) -> int:
    from awmjax.train import train

    run = train(load_run_config(args))
    print(f"run folder: {run}  (metrics.jsonl, tensorboard/, checkpoints/, config.json)")
    return 0


def cmd_sft(args) -> int:
    from awmjax.sft import run_sft

    try:
        out = run_sft(load_run_config(args))
    except ValueError as e:
        raise CliError(str(e)) from None
    print(f"sft folder: {out}  (policy/, metrics.jsonl, summary.json)")
    return 0


def cmd_plot(args) -> int:
    from pathlib import Path

    from awmjax.plots import plot_run

    run = Path(args.run)
    if not (run / "metrics.jsonl").is_file():
        raise CliError(f"{run} has no metrics.jsonl; give a run folder written by `awmjax train`")
    print(plot_run(run))
    return 0
