"""Memory over a hyperparameter search: resident memory after each trial of a 20-trial
study run in one process (`imclass tune`'s way), on small Fashion-MNIST trials.

    .venv/bin/python bench/tune_memory.py [--trials 20] [--out runs/bench-tune]
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from imclass.config import RunConfig, override
from imclass.tune import parse_space, run_study

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--out", default="runs/bench-tune")
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    base = override(RunConfig(), {"subset": 2000, "epochs": 3})
    space = {"lr": {"low": 0.01, "high": 0.5, "log": True}, "batch_size": [64, 128, 256],
             "dropout": {"low": 0.0, "high": 0.4}, "widths": [[16, 32, 64, 128], [8, 16, 32, 64]]}
    params = parse_space(space, base)
    samples = []
    start = time.perf_counter()
    study = run_study(base, params, out, method="tpe", trials=args.trials, pruner="median",
                      callbacks=[lambda study, trial: samples.append(rss_mib())])
    seconds = time.perf_counter() - start
    states = [t.state.name.lower() for t in study.trials]
    print(f"{len(samples)} trials in {seconds:.0f} s ({states.count('complete')} complete, "
          f"{states.count('pruned')} pruned)")
    print("| after trial | 1 | 5 | 10 | 15 | 20 | peak |")
    print("|---|---|---|---|---|---|---|")
    picks = [samples[i - 1] for i in (1, 5, 10, 15, 20) if i <= len(samples)]
    print("| resident memory (MiB) | " + " | ".join(f"{v:.0f}" for v in picks)
          + f" | {max(samples):.0f} |")


if __name__ == "__main__":
    main()
