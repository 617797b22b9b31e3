"""`awmjax eval`: run every task of a split with a policy and print outcome rates with 95% intervals."""

from __future__ import annotations

import argparse

from awmjax.chat import TOOL_SCHEMAS
from awmjax.cli import CliError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `eval` command."""
    p = sub.add_parser(
        "eval", help="evaluate a policy on every task of a catalog split",
        description="Run one episode per task of a split (greedy by default) and print completed / partial / "
                    "incomplete / format-error / environment-error rates with 95%% Wilson intervals, mean turns and "
                    "tool calls, broken down by difficulty (gold calls) and task type. Writes OUT/report.json, "
                    "OUT/table.txt, OUT/episodes.jsonl and one readable transcript per episode.")
    p.add_argument("--policy", default="embedded",
                   help="'embedded', a Hugging Face directory, an awmjax run folder (sft/, demo/...), or with "
                        "--base-url the endpoint's model name (default embedded)")
    p.add_argument("--worlds", required=True, help="catalog directory")
    p.add_argument("--split", default="held-out", help="catalog split (default held-out)")
    p.add_argument("--base-url", help="an OpenAI-compatible endpoint (e.g. http://localhost:8000/v1); key from $OPENAI_API_KEY")
    p.add_argument("--model", help="the endpoint's model name (with --base-url; default: --policy)")
    p.add_argument("--surface", choices=("direct", "mcp"), default="direct", help="tool surface (default direct)")
    p.add_argument("--tool-schema", choices=TOOL_SCHEMAS, default="full",
                   help="how the system turn lists the tools: full JSON schemas, lean (no value constraints) or "
                        "brief (names, types, descriptions); use the listing the policy was trained with "
                        "(default full; make demo trains with brief)")
    p.add_argument("--history-window", type=int, default=3, help="history limit w (0: full history; default 3)")
    p.add_argument("--limit", type=int,
                   help="evaluate only the first N tasks (--gold-check: whole worlds until N tasks)")
    p.add_argument("--max-turns", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=192, help="per turn")
    p.add_argument("--max-context", type=int, default=4096)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=32, help="episodes run at once")
    p.add_argument("--constrain-calls", action="store_true",
                   help="decode tool calls under the tools' JSON schemas (a listed tool, arguments its schema "
                        "accepts); the awmjax sampler only, not --base-url")
    p.add_argument("--gold-check", action="store_true",
                   help="instead of episodes, replay each task's gold trajectory and score the policy's greedy "
                        "choice at every turn, teacher-forced: call vs answer, which tool, the whole call "
                        "(one forward pass per sample; low-noise where completion is near zero); writes "
                        "OUT/gold_check.json")
    p.add_argument("--out", help="report folder (default runs/eval/<policy>-<split>)")
    p.set_defaults(handler=cmd_eval, noun_parser=p)


def cmd_eval(args) -> int:
    from pathlib import Path

    from awmjax.eval import evaluate, write_report
    from awmjax.rollout import RolloutConfig
    from awmjax.sampling import SamplingConfig
    from envgen.catalog import Catalog, CatalogError

    if args.gold_check and args.base_url:
        raise CliError("--gold-check reads the policy's logits at every gold turn, which an endpoint does not "
                       "return: drop --gold-check with --base-url")
    if args.constrain_calls and args.base_url:
        raise CliError("--constrain-calls masks tokens in the awmjax sampler, and an endpoint decodes on its own "
                       "server: drop --constrain-calls with --base-url (or use the server's own structured output)")
    try:
        catalog = Catalog.open(args.worlds)
        worlds = list(catalog.worlds(args.split))
    except (CatalogError, KeyError, ValueError) as e:
        raise CliError(f"--worlds {args.worlds} --split {args.split}: {e}") from None
    if not worlds:
        raise CliError(f"split {args.split!r} of {args.worlds} has no worlds; splits: {', '.join(catalog.index['splits'])}")
    try:
        rollout = RolloutConfig(max_turns=args.max_turns, max_context=args.max_context, max_new_tokens=args.max_new_tokens,
                                history_window=args.history_window or None, surface=args.surface,
                                tool_schema=args.tool_schema,
                                constrain_calls=args.constrain_calls)
    except ValueError as e:
        raise CliError(str(e)) from None
    if args.gold_check:
        return _gold_check(args, worlds, rollout)
    policy, tok, name = _policy(args)
    sampling = SamplingConfig(temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                              stop_token_ids=tuple(tok.stop_token_ids), seed=args.seed)
    report = evaluate(policy, tok, worlds, rollout, sampling, policy_name=name, split=args.split, limit=args.limit,
                      batch=args.batch)
    out = Path(args.out or Path("runs/eval") / f"{Path(name).name or name}-{args.split}")
    write_report(report, out)
    print(report.table())
    print(f"report: {out}/report.json  transcripts: {out}/transcripts/")
    return 0


def _gold_check(args, worlds, rollout) -> int:
    import json
    from pathlib import Path

    from awmjax.files import write_atomic
    from awmjax.goldcheck import gold_check
    from awmjax.policy import load_policy

    try:
        model, _, tok = load_policy(args.policy)
    except (ValueError, FileNotFoundError) as e:
        raise CliError(f"--policy {args.policy}: {e}") from None
    try:
        report = gold_check(model, tok, worlds, rollout, policy_name=args.policy, split=args.split, limit=args.limit,
                            row_tokens=args.max_context, progress=True)
    except ValueError as e:
        raise CliError(f"--gold-check: {e}") from None
    out = Path(args.out or Path("runs/eval") / f"{Path(args.policy).name or args.policy}-{args.split}")
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "gold_check.json", json.dumps(report.to_json(), indent=1))
    print(report.table())
    print(f"report: {out}/gold_check.json")
    return 0


def _policy(args):
    """(policy, tokenizer, name) for --policy / --base-url."""
    from awmjax.tokenizer import Tokenizer

    if args.base_url:
        from awmjax.endpoint import EndpointPolicy

        model = args.model or args.policy
        return EndpointPolicy(Tokenizer.embedded(), args.base_url, model), Tokenizer.embedded(), model
    from awmjax.policy import load_policy
    from awmjax.sampler import Sampler

    try:
        model, cfg, tok = load_policy(args.policy)
    except (ValueError, FileNotFoundError) as e:
        raise CliError(f"--policy {args.policy}: {e}") from None
    sampler = Sampler(model, cfg, max_cache_len=args.max_context, pad_id=tok.pad_id, decode_fn=tok.decode)
    return sampler, tok, args.policy
