"""BatchNorm folded into its convolution (imclass.models.folding), against the same model
unfolded: a fine-tuning step with every BatchNorm frozen (the transfer recipe's --freeze-bn)
and an eval-mode forward pass, alternating in one process, medians of --repeats.

    .venv/bin/python bench/folding.py [--models tf_efficientnet_lite0:224,tf_efficientnet_lite0:160]
                                      [--batch 32] [--repeats 5]

Random weights with scrambled BatchNorm statistics (the speed does not depend on them),
channels-last, fp32, AdamW over every parameter, glibc keeping freed memory as a training run
does. Prints the CPU and its fp32 matmul speed first.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.own_images import machine_line  # noqa: E402
from imclass.config import ModelConfig  # noqa: E402
from imclass.devices import keep_freed_memory  # noqa: E402
from imclass.finetune import NORM_TYPES  # noqa: E402
from imclass.models import build_model  # noqa: E402
from imclass.models.folding import _scramble_statistics, fold_norms  # noqa: E402


def frozen_norm_step(model, x, y):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        model.train()
        for m in model.modules():
            if isinstance(m, NORM_TYPES):
                m.eval()  # as finetune.train_mode keeps them under --freeze-bn
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def forward(model, x):
    def run():
        model.eval()
        with torch.no_grad():
            model(x)
    return run


def measure(architecture: str, side: int, batch: int, repeats: int) -> list[str]:
    torch.manual_seed(0)
    plain = build_model(ModelConfig(name=architecture), 3, 10, architecture)
    _scramble_statistics(plain)
    plain = plain.to(memory_format=torch.channels_last)
    folded = copy.deepcopy(plain)
    x = torch.randn(batch, 3, side, side).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    pairs = fold_norms(folded, x[:2])
    rows = []
    for what, make in (("training step, BatchNorms frozen", lambda m: frozen_norm_step(m, x, y)),
                       ("eval forward", lambda m: forward(m, x))):
        runs = {"unfolded": make(plain), "folded": make(folded)}
        for run in runs.values():
            run()  # untimed: oneDNN picks its kernels
        times: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(repeats):
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
        ms = {k: 1000 * statistics.median(v) for k, v in times.items()}
        rows.append(f"| {architecture} {side} px ({pairs} pairs) | {what} | "
                    f"{ms['unfolded']:.0f} | {ms['folded']:.0f} | "
                    f"{ms['unfolded'] / ms['folded']:.2f}x |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tf_efficientnet_lite0:224,tf_efficientnet_lite0:160,"
                                            "resnet50:224")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    keep_freed_memory()
    print(machine_line(args.batch))
    print("| network | pass | unfolded (ms) | folded (ms) | speed-up |\n|---|---|---:|---:|---:|")
    for spec in args.models.split(","):
        name, side = spec.split(":")
        for row in measure(name, int(side), args.batch, args.repeats):
            print(row, flush=True)


if __name__ == "__main__":
    main()
