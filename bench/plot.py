"""
results.png: gemfcgi / peer ratios, one group per figure, targets marked.

Run as a script (``python plot.py DATA.json OUT.png``) by whichever Python
has matplotlib, which need not be the one running the benchmark.
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

COLOURS = {"jetforce": "#4c72b0", "molly-brown": "#dd8452", "bare Twisted": "#8c8c8c",
           "gemfcgi": "#55a868"}


def plot(data: dict, path: str) -> None:
    groups = data["groups"]
    peers = sorted({peer for group in groups for peer in group["ratios"]}, key=list(COLOURS).index)
    width = 0.8 / max(len(peers), 1)
    figure, axes = plt.subplots(figsize=(11, 5.5))
    for index, peer in enumerate(peers):
        xs = [n + (index - (len(peers) - 1) / 2) * width for n, g in enumerate(groups) if peer in g["ratios"]]
        ys = [g["ratios"][peer] for g in groups if peer in g["ratios"]]
        bars = axes.bar(xs, ys, width, label=f"gemfcgi / {peer}" if peer != "gemfcgi" else "gemfcgi",
                        color=COLOURS.get(peer))
        axes.bar_label(bars, fmt="%.2f", fontsize=8)
    for n, group in enumerate(groups):
        if group["target"] is not None:
            axes.hlines(group["target"], n - 0.45, n + 0.45, colors="red", linestyles="dashed")
            sign = ">=" if group["higher_is_better"] else "<="
            axes.annotate(f"target {sign} {group['target']:g} vs {group['target_peer']}",
                          (n, group["target"]), textcoords="offset points", xytext=(0, -10),
                          ha="center", va="top", fontsize=7, color="red")
    # Ratios: 2x better and 2x worse are equally far from 1.
    axes.set_yscale("log")
    axes.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda y, _: f"{y:g}x"))
    axes.axhline(1.0, color="grey", linewidth=0.8)
    axes.set_xticks(range(len(groups)))
    axes.set_xticklabels(
        [g["label"] + ("\n(higher is better)" if g["higher_is_better"] else "\n(lower is better)")
         for g in groups], fontsize=8)
    axes.set_ylabel("gemfcgi / peer, same run (log scale)")
    title = "gemfcgi relative to its peers (medians)"
    axes.set_title(title + (" - smoke run, meaningless" if data.get("quick") else ""))
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    with open(sys.argv[1]) as source:
        plot(json.load(source), sys.argv[2])
