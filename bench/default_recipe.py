"""The default recipe (what `make demo` runs) on the full Fashion-MNIST, timed end to end.

Each run is a fresh `imclass train` process, timed from its start to the report being written
(imports, data loading, training, test evaluation, plots, report). Run i uses --seed i, so the
accuracy spread covers different splits, initialisations and batch orders. Prints a Markdown
table to paste into docs/benchmarks.md, with the median of the runs.

    .venv/bin/python bench/default_recipe.py --runs 3 [--first-seed 0] [-- extra train flags]
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path


def one_run(out: Path, seed: int, extra: list[str]) -> dict:
    command = [sys.executable, "-m", "imclass", "train", "--out", str(out), "--overwrite",
               "--quiet", "--seed", str(seed), *extra]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    test = json.loads((out / "metrics.json").read_text())["test"]
    rows = list(csv.DictReader((out / "history.csv").open()))
    return {"seed": seed, "wall_s": wall, "accuracy": test["accuracy"], "epochs": len(rows),
            "images_per_s": statistics.median(float(r["images_per_s"]) for r in rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench")
    args, extra = parser.parse_known_args()
    extra = [e for e in extra if e != "--"]
    results = []
    for i in range(args.runs):
        r = one_run(Path(args.out) / f"run{i + 1}", args.first_seed + i, extra)
        results.append(r)
        print(f"run {i + 1} (seed {r['seed']}): {r['wall_s']:.0f} s, test accuracy "
              f"{r['accuracy']:.4f}, {r['images_per_s']:.0f} train images/s", file=sys.stderr)
    print(f"\nMachine: {platform.processor() or platform.machine()}, "
          f"{__import__('os').cpu_count()} cores; date {date.today()}; "
          f"command: `python bench/default_recipe.py --runs {args.runs} --first-seed "
          f"{args.first_seed} {' '.join(extra)}`\n")
    print("| run | seed | wall time (s) | test accuracy | train images/s | epochs |")
    print("|---|---|---|---|---|---|")
    for i, r in enumerate(results, 1):
        print(f"| {i} | {r['seed']} | {r['wall_s']:.0f} | {r['accuracy']:.4f} | "
              f"{r['images_per_s']:.0f} | {r['epochs']} |")
    med = {k: statistics.median(r[k] for r in results) for k in ("wall_s", "accuracy",
                                                                "images_per_s")}
    print(f"| **median** | | **{med['wall_s']:.0f}** | **{med['accuracy']:.4f}** | "
          f"**{med['images_per_s']:.0f}** | |")


if __name__ == "__main__":
    main()
