"""The default recipe (what `make demo` runs) on the full Fashion-MNIST, timed end to end, side
by side with the recipe of 2026-12-01 (issue 14's baseline, spelled out in flags so that it
stays what it was when the defaults move on).

Each run is a fresh `imclass train` process, timed from its start to the report being written
(imports, data loading, training, test evaluation, plots, report). Run i of each contender
uses --seed i, and the contenders alternate (baseline seed 0, default seed 0, baseline seed
1, ...) so that a slow spell of this shared machine falls on both. Prints the machine's
matmul speed first, then a Markdown table per contender with accuracy, wall time and the
seconds until validation accuracy first reached 90% (from history.csv), and medians.

    .venv/bin/python bench/default_recipe.py --runs 3 [--first-seed 0] [--only default]
        [-- extra flags for the default contender]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.own_images import matmul_gflops  # noqa: E402

# The default recipe measured on 2026-12-01 (92.65-93.04%, 232-244 s on a quiet day).
BASELINE = ["--widths", "16,32,64,128", "--depths", "1,2,2,1", "--dropout", "0.2",
            "--epochs", "10", "--batch-size", "256", "--lr", "0.2", "--optimizer", "sgd",
            "--schedule", "onecycle", "--label-smoothing", "0.1", "--weight-decay", "5e-4",
            "--val-fraction", "0.2", "--augment", "fashion", "--erase-p", "0",
            "--precision", "fp32"]


def one_run(out: Path, seed: int, flags: list[str]) -> dict:
    command = [sys.executable, "-m", "imclass", "train", "--out", str(out), "--overwrite",
               "--quiet", "--seed", str(seed), *flags]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    test = json.loads((out / "metrics.json").read_text())["test"]
    rows = list(csv.DictReader((out / "history.csv").open()))
    return {"seed": seed, "wall_s": wall, "accuracy": test["accuracy"], "epochs": len(rows),
            "images_per_s": statistics.median(float(r["images_per_s"]) for r in rows),
            "to_90_s": seconds_to(rows, 0.90),
            "validated": any(r["val_acc"] != "nan" for r in rows)}  # not --val-fraction 0


def seconds_to(rows: list[dict], accuracy: float) -> float | None:
    """Training seconds until validation accuracy first reached `accuracy` (None: never)."""
    spent = 0.0
    for r in rows:
        spent += float(r["seconds"])
        if float(r["val_acc"]) >= accuracy:
            return spent
    return None


def table(name: str, results: list[dict]) -> None:
    print(f"\n{name}\n\n| run | seed | wall time (s) | test accuracy | train s to 90% val | "
          "train images/s | epochs |\n|---|---|---|---|---|---|---|")
    for i, r in enumerate(results, 1):
        to90 = (f"{r['to_90_s']:.0f}" if r["to_90_s"] is not None
                else "never" if r["validated"] else "n/a (no validation)")
        print(f"| {i} | {r['seed']} | {r['wall_s']:.0f} | {r['accuracy']:.4f} | {to90} | "
              f"{r['images_per_s']:.0f} | {r['epochs']} |")
    med = {k: statistics.median(r[k] for r in results)
           for k in ("wall_s", "accuracy", "images_per_s")}
    print(f"| **median** | | **{med['wall_s']:.0f}** | **{med['accuracy']:.4f}** | | "
          f"**{med['images_per_s']:.0f}** | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("--only", choices=("baseline", "default"))
    args, extra = parser.parse_known_args()
    extra = [e for e in extra if e != "--"]
    contenders = {"baseline": BASELINE, "default": extra}
    if args.only:
        contenders = {args.only: contenders[args.only]}
    print(f"{date.today()}: {platform.processor() or platform.machine()}, {os.cpu_count()} "
          f"cores; matmul {matmul_gflops():.0f} GFLOP/s (4096x4096 fp32); command: `python "
          f"bench/default_recipe.py {' '.join(sys.argv[1:])}`", flush=True)
    results: dict[str, list[dict]] = {name: [] for name in contenders}
    for i in range(args.runs):
        for name, flags in contenders.items():
            seed = args.first_seed + i
            r = one_run(Path(args.out) / f"{name}{i + 1}", seed, flags)
            results[name].append(r)
            print(f"{name} run {i + 1} (seed {seed}): {r['wall_s']:.0f} s, test accuracy "
                  f"{r['accuracy']:.4f}, {r['images_per_s']:.0f} train images/s", flush=True)
    for name, flags in contenders.items():
        table(f"{name}: `imclass train {' '.join(flags)}`", results[name])
    print(f"\nmatmul after: {matmul_gflops():.0f} GFLOP/s")


if __name__ == "__main__":
    main()
