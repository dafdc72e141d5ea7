"""A fine-tuning step of EfficientNet-Lite0 with its lowest layer groups frozen (the transfer
recipe's `--unfreeze last-5` leaves the stem and the first two blocks as pretrained), and the
same step on smaller random crops (`--train-size`): the backward pass ends above the frozen
groups, and a smaller side costs its share of the pixels.

    .venv/bin/python bench/frozen_groups.py [--sides 224,192,96] [--frozen 0,3,4] [--repeats 5]

Random weights, BatchNorms frozen and folded into their convolutions as the recipe trains
(imclass.models.folding), channels-last, fp32, batch 32, AdamW over the trainable weights,
glibc keeping freed memory; the cases alternate in one process, medians of --repeats. Prints
the CPU and its fp32 matmul speed first.
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
from imclass.finetune import NORM_TYPES, layer_groups  # noqa: E402
from imclass.models import build_model  # noqa: E402
from imclass.models.folding import fold_norms  # noqa: E402

NAME = "tf_efficientnet_lite0"


def training_step(base, frozen: int, side: int, batch: int):
    """A step of a copy of `base` with its `frozen` lowest layer groups frozen."""
    model = copy.deepcopy(base)
    for group in layer_groups(model)[:frozen]:
        for p in group:
            p.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x = torch.randn(batch, 3, side, side).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))

    def step():
        model.train()
        for m in model.modules():
            if isinstance(m, NORM_TYPES):
                m.eval()  # --freeze-bn
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", default="224,192,96")
    parser.add_argument("--frozen", default="0,3,4", help="lowest layer groups frozen")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    keep_freed_memory()
    print(machine_line(args.batch))
    torch.manual_seed(0)
    base = build_model(ModelConfig(name=NAME), 3, 10, NAME).to(memory_format=torch.channels_last)
    fold_norms(base, torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last))
    sizes = [sum(p.numel() for p in g) for g in layer_groups(base)]
    cases = {(side, k): training_step(base, k, side, args.batch)
             for side in map(int, args.sides.split(",")) for k in map(int, args.frozen.split(","))}
    for step in cases.values():
        step()  # untimed: oneDNN picks its kernels
    times: dict[tuple, list[float]] = {case: [] for case in cases}
    for _ in range(args.repeats):
        for case, step in cases.items():
            start = time.perf_counter()
            step()
            times[case].append(time.perf_counter() - start)
    print("| side (px) | lowest groups frozen | weights frozen | step (ms) | against none frozen |")
    print("|---:|---:|---:|---:|---:|")
    for (side, k), ts in times.items():
        ms = 1000 * statistics.median(ts)
        whole = 1000 * statistics.median(times[(side, 0)]) if (side, 0) in times else ms
        print(f"| {side} | {k} | {sum(sizes[:k]):,} | {ms:.0f} | {ms / whole:.2f} |")


if __name__ == "__main__":
    main()
