"""`awmjax model ...` (and the aliases `awmjax chat`, `awmjax generate`): talk to or sample from the policy."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from awmjax.cli import CliError

DEFAULT_CHAT_SYSTEM_PROMPT = "You are a helpful assistant."


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `model` noun with `chat` and `generate`, and the top-level aliases `chat` and `generate`."""
    p = sub.add_parser("model", help="chat with or sample from the policy model", description=__doc__)
    p.set_defaults(noun_parser=p)
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    for parent in (verbs, sub):
        _add_chat(parent)
        _add_generate(parent)


def _add_chat(parent: argparse._SubParsersAction) -> None:
    c = parent.add_parser(
        "chat",
        help="talk to the policy in the terminal, tokens streamed as sampled",
        description="Chat with the embedded SmolLM2-135M-Instruct policy (or --hf-dir). "
        "Type /exit (or Ctrl-D) to leave, /reset to start over.",
    )
    _add_model_options(c)
    _add_sampling_options(c, temperature=0.7, max_new_tokens=512)
    c.add_argument("--system", default=DEFAULT_CHAT_SYSTEM_PROMPT, help="system prompt (default: %(default)r)")
    c.add_argument(
        "--max-context", type=int, default=2048, help="tokens of history kept in the KV cache (default 2048)"
    )
    c.set_defaults(handler=cmd_chat)


def _add_generate(parent: argparse._SubParsersAction) -> None:
    g = parent.add_parser(
        "generate",
        help="sample completions for a file of prompts, written as JSONL",
        description="Sample one completion per prompt. PROMPTS is a text file with one prompt per line, or a "
        '.jsonl file of objects with a "prompt" string. Each prompt becomes a user turn in the chat format '
        "unless --raw. Writes one JSON object per prompt (text, token_ids, logprobs under the model, "
        "sampling_logprobs, finish_reason) to --out.",
    )
    g.add_argument("prompts", help="prompts file: one prompt per line, or .jsonl with a \"prompt\" field")
    g.add_argument("--out", required=True, help="output .jsonl path (written atomically)")
    g.add_argument("--raw", action="store_true", help="feed each prompt as plain text, without the chat format")
    g.add_argument("--system", default=None, help="system prompt for every prompt (default: none)")
    g.add_argument("--batch-size", type=int, default=16, help="prompts sampled together (default 16)")
    _add_model_options(g)
    _add_sampling_options(g, temperature=1.0, max_new_tokens=128)
    g.set_defaults(handler=cmd_generate)


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hf-dir", default=None, help="local Hugging Face checkpoint (default: the embedded SmolLM2-135M)")
    p.add_argument(
        "--dtype", choices=["float32", "bfloat16"], default="float32", help="compute dtype (default float32)"
    )


def _add_sampling_options(p: argparse.ArgumentParser, *, temperature: float, max_new_tokens: int) -> None:
    p.add_argument("--temperature", type=float, default=temperature, help="0 is greedy (default %(default)s)")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens; 0 keeps all (default 0)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus probability mass (default 1.0)")
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens, help="tokens per reply (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")


def _sampling_config(args: argparse.Namespace, stop_token_ids):
    """The SamplingConfig for the options, with bad values reported as CLI errors before any model loads."""
    from awmjax.sampler import SamplingConfig

    if args.max_new_tokens < 1:
        raise CliError(f"--max-new-tokens={args.max_new_tokens}; it must be at least 1")
    try:
        return SamplingConfig(
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            max_new_tokens=args.max_new_tokens,
            stop_token_ids=tuple(stop_token_ids),
            seed=args.seed,
        )
    except ValueError as e:
        raise CliError(f"bad sampling option: {e}") from None


def _load_tokenizer(args: argparse.Namespace):
    from awmjax.tokenizer import Tokenizer

    if args.hf_dir is None:
        return Tokenizer.embedded()
    path = Path(args.hf_dir)
    if not path.is_dir():
        raise CliError(f"--hf-dir {path} is not a directory; pass a local Hugging Face checkpoint directory")
    try:
        return Tokenizer.from_hf_dir(path)
    except (FileNotFoundError, ValueError) as e:
        raise CliError(f"--hf-dir {path}: {e}") from None


def _load_model(args: argparse.Namespace):
    """(model, ModelConfig) of the embedded policy or of --hf-dir."""
    try:
        if args.hf_dir is None:
            from awmjax.model.gguf_loader import load_smollm2

            return load_smollm2(dtype=args.dtype)
        from awmjax.model.hf_io import load_hf

        return load_hf(args.hf_dir, dtype=args.dtype)
    except (FileNotFoundError, ValueError) as e:
        raise CliError(f"cannot load the model: {e}") from None


def _read_prompts(path: Path) -> list[str]:
    """Prompts from a text file (one per non-empty line) or a .jsonl file of {"prompt": ...} objects."""
    if not path.is_file():
        raise CliError(f"prompts file {path} does not exist; pass a text file with one prompt per line")
    prompts = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        if path.suffix != ".jsonl":
            prompts.append(line)
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise CliError(f"{path}:{n} is not valid JSON ({e.msg}); write one object per line") from None
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
            raise CliError(f'{path}:{n} has no "prompt" string; write lines like {{"prompt": "..."}}')
        prompts.append(record["prompt"])
    if not prompts:
        raise CliError(f"prompts file {path} holds no prompts")
    return prompts


def _prompt_ids(tokenizer, prompt: str, *, raw: bool, system: str | None) -> list[int]:
    from awmjax.chat import render_text

    if raw:
        return tokenizer.encode(prompt, add_special_tokens=True)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return tokenizer.encode(render_text(messages, add_generation_prompt=True), add_special_tokens=True)


def _write_jsonl_atomic(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def cmd_generate(args: argparse.Namespace) -> int:
    """Sample a completion for each prompt in a file and write them as JSONL."""
    if args.batch_size < 1:
        raise CliError(f"--batch-size={args.batch_size}; it must be at least 1")
    out = Path(args.out)
    if out.is_dir():
        raise CliError(f"--out {out} is a directory; pass a file path such as {out / 'generations.jsonl'}")
    prompts = _read_prompts(Path(args.prompts))
    tokenizer = _load_tokenizer(args)
    sampling = _sampling_config(args, tokenizer.stop_token_ids)
    encoded = [_prompt_ids(tokenizer, p, raw=args.raw, system=args.system) for p in prompts]

    from tqdm import tqdm

    from awmjax.sampler import Sampler

    model, config = _load_model(args)
    longest = max(len(ids) for ids in encoded) + args.max_new_tokens
    if longest > config.max_position_embeddings:
        raise CliError(
            f"the longest prompt plus --max-new-tokens is {longest} tokens, over the model's "
            f"{config.max_position_embeddings}; shorten the prompt or lower --max-new-tokens"
        )
    sampler = Sampler(model, config, max_cache_len=longest, pad_id=tokenizer.pad_id)
    records, new_tokens, start = [], 0, time.perf_counter()
    with tqdm(total=len(prompts), desc="generate", unit="prompt", file=sys.stderr) as bar:
        for i in range(0, len(prompts), args.batch_size):
            batch = encoded[i : i + args.batch_size]
            for prompt, ids, gen in zip(prompts[i : i + args.batch_size], batch, sampler.generate(batch, sampling)):
                token_ids = [int(t) for t in gen.token_ids]
                new_tokens += len(token_ids)
                records.append(
                    {
                        "prompt": prompt,
                        "text": tokenizer.decode(token_ids, skip_special_tokens=True),
                        "token_ids": token_ids,
                        "logprobs": [float(x) for x in gen.logprobs],
                        "sampling_logprobs": [float(x) for x in gen.sampling_logprobs],
                        "finish_reason": gen.finish_reason,
                        "prompt_tokens": len(ids),
                    }
                )
            bar.update(len(batch))
    _write_jsonl_atomic(out, records)
    seconds = time.perf_counter() - start
    print(
        f"wrote {len(records)} generations to {out}: {new_tokens} new tokens in {seconds:.1f}s "
        f"({new_tokens / max(seconds, 1e-9):.1f} tok/s)",
        file=sys.stderr,
    )
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    """Talk to the policy in the terminal, printing each reply's tokens as they are sampled."""
    tokenizer = _load_tokenizer(args)
    sampling = _sampling_config(args, tokenizer.stop_token_ids)

    from awmjax.chat import ChatConfig, Conversation
    from awmjax.sampler import Sampler

    model, config = _load_model(args)
    if not 0 < args.max_context <= config.max_position_embeddings:
        raise CliError(f"--max-context={args.max_context}; it must be in 1..{config.max_position_embeddings}")
    sampler = Sampler(model, config, max_cache_len=args.max_context, pad_id=tokenizer.pad_id)
    chat_config = ChatConfig(system_prompt=args.system)
    print("awmjax chat: /exit or Ctrl-D to leave, /reset to start over.", file=sys.stderr)
    conversation, replies = None, 0
    while True:
        try:
            line = input("you> ")
        except EOFError:
            print(file=sys.stderr)
            return 0
        command = line.strip()
        if command == "/exit":
            return 0
        if command == "/reset":
            conversation = None
            continue
        if not command:
            continue
        if conversation is None:
            conversation = Conversation.start(tokenizer, line, (), chat_config)
        else:
            conversation.append_user(line)
        prompt = conversation.prompt_ids()
        if len(prompt) + args.max_new_tokens > args.max_context:
            print(f"[the conversation is {len(prompt)} tokens, past --max-context; starting over]", file=sys.stderr)
            conversation = Conversation.start(tokenizer, line, (), chat_config)
            prompt = conversation.prompt_ids()
        step = tokenizer.stream_decoder(skip_special_tokens=True)
        sampled: list[int] = []
        print("model> ", end="", flush=True)
        # a fresh seed per reply, so the same question asked twice need not get the same answer
        reply_sampling = dataclasses.replace(sampling, seed=args.seed + replies)
        replies += 1
        for token_id in sampler.stream(prompt, reply_sampling):
            sampled.append(int(token_id))
            print(step(token_id), end="", flush=True)
        print()
        conversation.append_assistant(sampled)
