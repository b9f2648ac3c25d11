"""Plots of simulator runs: regret, reward against the oracle, and exploration over time."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from equilibra.evaluate.simulate import SimResult


def plot_runs(results: Sequence[SimResult], out_dir: Path, title: str) -> list[Path]:
    """Three PNGs comparing the runs of one scenario; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    panels = [
        ("cumulative_regret", "cumulative regret to the oracle (expected reward)", "regret.png"),
        ("window_reward", "expected reward per request (window)", "reward.png"),
        ("explore_share", "share of shown slots that explore (window)", "explore.png"),
    ]
    paths = []
    for column, label, name in panels:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for result in results:
            ax.plot(result.curve["request"], result.curve[column], label=result.policy, lw=1.4)
        if column == "window_reward" and results:
            oracle = results[0].curve
            ax.plot(oracle["request"], oracle["window_oracle"], "k--", lw=1, label="oracle")
        ax.set_xlabel("request")
        ax.set_ylabel(label)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, ncol=2)
        fig.tight_layout()
        path = out_dir / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
