"""The depthwise convolutions' own backward pass (imclass.models.depthwise) against autograd's
oneDNN one: each 5x5 depthwise layer of EfficientNet-Lite0 at the transfer recipe's sides, and
whole fine-tuning steps (the recipe's top 5 layer groups, BatchNorms folded), side by side in
one process.

    .venv/bin/python bench/depthwise.py [--sides 96,192] [--steps 5] [--rounds 3]

Batch 32, channels-last, fp32, random weights (the speed does not depend on them). Layers: the
median of `--steps` forward + backward passes after two untimed; steps: `--rounds` rounds of
`--steps` steps each way, alternating, the median step of each way.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from own_images import machine_line  # noqa: E402

from imclass.config import ModelConfig  # noqa: E402
from imclass.devices import keep_freed_memory  # noqa: E402
from imclass.finetune import layer_groups  # noqa: E402
from imclass.models import build_model, depthwise  # noqa: E402
from imclass.models.folding import fold_norms  # noqa: E402

BATCH = 32
# (channels, input side, stride) of Lite0's 5x5 depthwise layers, at a 96 px input
LAYERS_AT_96 = [(240, 12, 1), (480, 6, 1), (672, 6, 1), (1152, 3, 1)]  # stride 1: ours
# (the stride-2 ones, 144 ch at 24 px and 672 at 6, keep autograd's: the split lost or tied)


def median_ms(fn, steps: int) -> float:
    for _ in range(2):
        fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def plain_autograd():
    """Our path switched off: every convolution is F.conv2d with autograd's backward."""
    return mock.patch.object(depthwise, "_wanted", lambda *args: False)


def layer_rows(side: int, steps: int) -> None:
    print(f"\n| layer at {side} px input | forward (ms) | autograd fwd+bwd | ours | ratio |")
    print("|---|---|---|---|---|")
    for channels, at96, stride in LAYERS_AT_96:
        size = at96 * side // 96
        x = torch.randn(BATCH, channels, size, size).contiguous(
            memory_format=torch.channels_last).requires_grad_()
        w = torch.randn(channels, 1, 5, 5, requires_grad=True)
        out = F.conv2d(x, w, None, stride, 2, 1, channels)
        grad = torch.randn_like(out)

        def step(conv=depthwise.conv2d):
            torch.autograd.grad(conv(x, w, None, stride, 2, 1, channels), (x, w), grad)
        forward = median_ms(lambda: F.conv2d(x.detach(), w.detach(), None, stride, 2, 1,
                                             channels), steps)
        theirs = median_ms(lambda: step(F.conv2d), steps)
        ours = median_ms(step, steps)
        print(f"| {channels} ch at {size}x{size}, stride {stride} | {forward:.2f} | "
              f"{theirs:.2f} | {ours:.2f} | {theirs / ours:.2f}x |")


def step_rows(side: int, steps: int, rounds: int) -> None:
    model = build_model(ModelConfig(name="efficientnet_lite0"), 3, 10).to(
        memory_format=torch.channels_last)
    x = torch.randn(BATCH, 3, side, side).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (BATCH,))
    trainable = {id(p) for group in layer_groups(model)[-6:] for p in group}  # top 5 + head
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    model.eval()  # every BatchNorm on its running statistics, as --freeze-bn trains
    fold_norms(model, x[:2])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])

    def step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    plain, ours = [], []
    for _ in range(rounds):
        with plain_autograd():
            plain.append(median_ms(step, steps))
        ours.append(median_ms(step, steps))
    a, b = statistics.median(plain), statistics.median(ours)
    print(f"| Lite0 fine-tuning step at {side} px | {a:.0f} ms | {b:.0f} ms | {a / b:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", default="96,192")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    keep_freed_memory()
    print(machine_line(BATCH))
    sides = [int(s) for s in args.sides.split(",")]
    for side in sides:
        layer_rows(side, args.steps)
    print("\n| step | autograd's backward | ours | ratio |\n|---|---|---|---|")
    for side in sides:
        step_rows(side, args.steps, args.rounds)


if __name__ == "__main__":
    main()
