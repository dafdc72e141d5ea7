"""Time-to-accuracy plot: validation accuracy after each epoch against the training seconds
spent until then (history.csv's per-epoch seconds, validation included), one line per run
folder, its test accuracy in the legend. For docs/benchmarks.md.

    .venv/bin/python bench/time_to_accuracy.py runs/bench/baseline1=today runs/long=long \
        [--out docs/time_to_accuracy.png] [--floor 0.85]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
from pathlib import Path


def curve(run: Path) -> tuple[list[float], list[float]]:
    """(cumulative training seconds, validation accuracy) after each epoch of `run`."""
    rows = list(csv.DictReader((run / "history.csv").open()))
    seconds = list(itertools.accumulate(float(r["seconds"]) for r in rows))
    return seconds, [float(r["val_acc"]) for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="RUN_DIR=label")
    parser.add_argument("--out", default="docs/time_to_accuracy.png")
    parser.add_argument("--floor", type=float, default=0.85, help="lowest accuracy shown")
    parser.add_argument("--title", default="Fashion-MNIST on 2 CPU cores")
    args = parser.parse_args()

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for spec in args.runs:
        folder, _, label = spec.partition("=")
        run = Path(folder)
        seconds, acc = curve(run)
        test = json.loads((run / "metrics.json").read_text())["test"]["accuracy"]
        ax.plot([s / 60 for s in seconds], acc, marker=".", label=f"{label or run.name}: "
                f"test {test:.2%} after {seconds[-1] / 60:.0f} min")
    ax.set(xlabel="training minutes (validation included)", ylabel="validation accuracy",
           title=args.title, ylim=(args.floor, None))
    ax.set_xscale("log")  # minutes-long and hour-long runs on one axis
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
