"""`dltool recipe`'s one summary figure: time per stage (passed / failed), and the lr range test's curve with
the suggested lr, the coarse search range and the learning rate the searches chose."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from dltool.plots import Figure, _save


def recipe_figure(stages: Sequence[dict], curve: dict | None, chosen: float | None, coarse: Sequence[float] | None,
                  path: Path, title: str) -> None:
    """Left: seconds per stage (green passed, red failed). Right: smoothed loss vs lr, suggestion and choice."""
    fig = Figure(figsize=(12, 4.2))
    fig.subplots_adjust(left=0.14, right=0.98, bottom=0.14, top=0.88, wspace=0.3)
    ax = fig.add_subplot(1, 2, 1)
    names = [s["name"] for s in stages][::-1]
    secs = [float(s.get("seconds", 0.0)) for s in stages][::-1]
    colors = ["tab:green" if s.get("passed") else "tab:red" for s in stages][::-1]
    ax.barh(names, secs, color=colors)
    for y, v in enumerate(secs):
        ax.text(v, y, f" {v:.0f} s", va="center", fontsize=8)
    ax.set_xlabel("seconds (green: passed, red: failed)")
    ax.set_title(f"time per stage (total {sum(secs):.0f} s)")
    ax.set_xlim(0, max(secs + [1.0]) * 1.2)
    ax2 = fig.add_subplot(1, 2, 2)
    if curve:
        ax2.plot(curve["lrs"], curve["smoothed_losses"], "-", label="lr range test: smoothed loss")
        ax2.axvline(curve["suggested_lr"], color="red", linestyle="--", label=f"suggested {curve['suggested_lr']:.2e}")
        finite = [v for v in curve["smoothed_losses"] if v == v and abs(v) != float("inf")]
        if finite:
            lo, first = min(finite), finite[0]
            ax2.set_ylim(lo - 0.05 * abs(first - lo), max(first, lo) + 0.25 * abs(first - lo) + 1e-12)
    if coarse:
        ax2.axvspan(coarse[0], coarse[1], color="tab:blue", alpha=0.1, label="coarse search range")
    if chosen:
        ax2.axvline(chosen, color="black", linewidth=1.5, label=f"chosen by the search {chosen:.2e}")
    ax2.set_xscale("log")
    ax2.set_xlabel("learning rate (log scale)")
    ax2.set_ylabel("loss")
    ax2.set_title("suggested vs chosen learning rate")
    ax2.grid(alpha=0.3, which="both")
    if curve or coarse or chosen:
        ax2.legend(fontsize=8)
    fig.suptitle(title)
    _save(fig, path, tight=False)
