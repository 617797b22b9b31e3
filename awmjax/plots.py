"""PNG curves of a training run (reward, outcomes, loss, KL, throughput)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def plot_run(run: Path) -> Path:
    """Write RUN/curves.png from RUN/metrics.jsonl; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [r["step"] for r in rows]
    panels = [
        ("reward", ["reward_mean"]),
        ("episode outcomes", ["outcome/complete", "outcome/partial", "outcome/format_error", "outcome/env_error"]),
        ("loss", ["loss", "pg_loss"]),
        ("KL / entropy", ["kl", "entropy"]),
        ("zero-variance groups", ["zero_variance_groups"]),
        ("tokens / s", ["rollout_tokens_per_s", "train_tokens_per_s"]),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(14, 7))
    for ax, (title, keys) in zip(axes.flat, panels):
        plotted = False
        for k in keys:
            ys = [r.get(k) for r in rows]
            if any(y is not None for y in ys):
                ax.plot(steps, [float("nan") if y is None else y for y in ys], marker=".", label=k)
                plotted = True
        ax.set_title(title)
        ax.set_xlabel("step")
        if plotted:
            ax.legend(fontsize=7)
        else:  # e.g. no step updated: every group's rewards were equal, so there is no loss to show
            ax.text(0.5, 0.5, "not recorded in this run", ha="center", va="center", transform=ax.transAxes)
    return save_figure(fig, run / "curves.png")


def save_figure(fig, path: Path) -> Path:
    """Lay out, write to a temporary file, rename (a reader never sees half a PNG), close."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path
