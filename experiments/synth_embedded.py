"""The synthesis pipeline against the embedded SmolLM2-135M served by `awmjax serve`: calls, tokens, retries per stage.

    python experiments/synth_embedded.py --n 5 --time-limit 450
    python experiments/synth_embedded.py --n 3 --scenarios ../shared/awm1k/gen_scenario.jsonl   # from AWM's scenarios

Starts `awmjax serve --policy embedded` on a free port, runs `awmjax worlds synthesize`
against it (fresh cache and catalog in a temporary directory unless --out is given),
prints the command's per-stage table, its notes and rejection reasons, and stops the
server. The small model fails most stages; what this shows is that every failure is
gated, repaired within the retry bound, and recorded with its reason.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, seconds: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if proc.poll() is not None:
            raise SystemExit(f"awmjax serve exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/models", timeout=2):
                return time.monotonic() - start
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"awmjax serve did not answer {url}/models within {seconds:.0f}s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=384, help="completion tokens per call (CPU decoding is slow)")
    ap.add_argument("--max-retries", type=int, default=5)
    ap.add_argument("--tasks-per-world", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--time-limit", type=float, default=480.0, help="seconds of synthesis before no new call is sent")
    ap.add_argument("--out", default=None, help="catalog directory (default: a temporary one)")
    ap.add_argument("--scenarios", default=None, help="JSONL of scenarios to start from (skips stage 1), e.g. ../shared/awm1k/gen_scenario.jsonl")
    args = ap.parse_args()

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    tmp = Path(tempfile.mkdtemp(prefix="synth-embedded-"))
    out = Path(args.out) if args.out else tmp / "catalog"
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    server = subprocess.Popen([sys.executable, "-m", "awmjax.cli", "serve", "--policy", "embedded", "--port", str(port),
                               "--max-batch", str(args.concurrency)], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=open(tmp / "serve.log", "w"))
    try:
        print(f"awmjax serve ready after {wait_ready(url, server, 300):.1f}s at {url}", flush=True)
        cmd = [sys.executable, "-m", "awmjax.cli", "worlds", "synthesize", "--base-url", url, "--model", "embedded",
               "--n", str(args.n), "--out", str(out), "--cache", str(tmp / "cache"), "--concurrency", str(args.concurrency),
               "--max-retries", str(args.max_retries), "--tasks-per-world", str(args.tasks_per_world),
               "--max-tokens", str(args.max_tokens), "--timeout", "300", "--time-limit", str(args.time_limit)]
        if args.scenarios:
            cmd += ["--scenarios", str(Path(args.scenarios).resolve())]
        print("$ " + " ".join(cmd[1:]), flush=True)
        start = time.monotonic()
        done = subprocess.run(cmd, cwd=REPO, env=env, text=True, capture_output=True)
        print(done.stdout, end="")
        if done.returncode not in (0, 1):
            print(done.stderr[-2000:], file=sys.stderr)
        print(f"synthesis wall time {time.monotonic() - start:.0f}s (exit {done.returncode}); files in {tmp}")
        return 0 if done.returncode in (0, 1) else done.returncode
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    sys.exit(main())
