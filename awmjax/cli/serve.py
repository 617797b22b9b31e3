"""`awmjax serve`: an OpenAI-compatible HTTP endpoint for a policy (embedded, checkpoint, HF directory)."""

from __future__ import annotations

import argparse

from awmjax.cli import CliError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `serve` command."""
    from awmjax.policy import SOURCES_HELP

    p = sub.add_parser("serve", help="serve a policy over an OpenAI-compatible HTTP API",
                       description="Serve a policy at /v1/models and /v1/chat/completions (tools and tool_calls, "
                                   "stream, logprobs), so OpenAI clients and benchmark harnesses (BFCL, tau2-bench, "
                                   "MCP-Universe) can use it. Concurrent requests are batched into one sampler call.")
    p.add_argument("--policy", default="embedded", help=f"what to serve: {SOURCES_HELP} (default: embedded)")
    p.add_argument("--model-name", default=None, help="the model id clients send (default: 'embedded', or the folder's name)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="compute dtype (default float32)")
    p.add_argument("--max-context", type=int, default=None,
                   help="prompt + completion tokens per request (default: the model's limit, at most 4096)")
    p.add_argument("--max-tokens", type=int, default=512, help="completion tokens when a request names none (default 512)")
    p.add_argument("--max-batch", type=int, default=16, help="rows in one sampler call (default 16)")
    p.add_argument("--batch-wait-ms", type=float, default=5.0,
                   help="how long the first queued request waits for others to share its sampler call (default 5)")
    p.set_defaults(handler=cmd_serve, noun_parser=p)


def cmd_serve(args: argparse.Namespace) -> int:
    """Load the policy and serve it until interrupted."""
    if not 0 < args.port < 65536:
        raise CliError(f"--port={args.port}; give a port in 1..65535")
    import uvicorn

    from awmjax.serve import load_engine, make_app

    try:
        engine = load_engine(args.policy, model_id=args.model_name, dtype=args.dtype, max_context=args.max_context,
                             max_tokens=args.max_tokens, max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms)
    except (FileNotFoundError, ValueError) as e:
        raise CliError(f"cannot serve --policy {args.policy}: {e}") from None
    print(f"awmjax serve: {args.policy} as model {engine.model_id!r} at http://{args.host}:{args.port}/v1", flush=True)
    try:
        uvicorn.run(make_app(engine), host=args.host, port=args.port, log_level="warning")
    finally:
        engine.close()
    return 0
