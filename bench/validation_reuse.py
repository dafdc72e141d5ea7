"""Validation over the frozen layers' kept output (imclass.prefix_cache), against a full pass.

    .venv/bin/python bench/validation_reuse.py [--sides 224,96] [--images 60] [--repeats 5]
    .venv/bin/python bench/validation_reuse.py --trees BEFORE,AFTER --data DIR [--seeds 0]

The first form times `validate` in one process, alternating: EfficientNet-Lite0 as the
transfer recipe validates it (ImageNet weights, random images, BatchNorms folded,
channels-last, fp32, glibc keeping freed memory as a run does, the recipe's stages: the head
alone, then the top 5 layer groups with every BatchNorm frozen), a full pass against one over
the kept activations, medians of --repeats after one untimed call; it checks that both give
the same figures. The second runs `imclass train --data DIR
--seed S` with each checkout's code in turn (A B A B) and prints the seconds spent in
`validate` over the whole run, the wall time and the test accuracy. Prints the CPU and its
fp32 matmul speed first.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.own_images import machine_line  # noqa: E402

# run inside a checkout: imclass train with its validate() timed, the total on stderr
TIMED_TRAIN = """
import atexit, os, sys, time
sys.path.insert(0, os.getcwd())
import imclass.training as training
spent, plain = [], training.validate
def timed(*args, **kwargs):
    start = time.perf_counter()
    out = plain(*args, **kwargs)
    spent.append(time.perf_counter() - start)
    return out
training.validate = timed
atexit.register(lambda: print(f"VALIDATION {len(spent)} {sum(spent):.2f}", file=sys.stderr))
from imclass.cli import main
sys.exit(main(sys.argv[1:]))
"""


def step_times(side: int, images: int, repeats: int) -> list[str]:
    from imclass.config import ModelConfig, TrainConfig
    from imclass.data.batches import Batches, Normalization
    from imclass.data.images import ImageSet
    from imclass.finetune import apply_stage, plan_stages
    from imclass.models import build_model
    from imclass.models.folding import fold_norms
    from imclass.models.weights import load_pretrained, resolve_architecture
    from imclass.prefix_cache import frozen_validation, validation_chains
    from imclass.tasks import get_task
    from imclass.training import validate

    torch.manual_seed(0)
    model_cfg = ModelConfig(name="efficientnet_lite0", pretrained=True)
    architecture, source = resolve_architecture(model_cfg)  # the offline package's weights
    model = build_model(model_cfg, 3, 3, architecture)
    load_pretrained(model, model_cfg, source)
    model = model.to(memory_format=torch.channels_last)
    data = ImageSet(torch.randint(0, 256, (images, 3, side, side), dtype=torch.uint8),
                    torch.arange(images) % 3, ("a", "b", "c"))
    val = Batches(data, 128, Normalization((0.5,) * 3, (0.25,) * 3))
    fold_norms(model, next(iter(val))[0][:2])
    loss, cpu = get_task("multiclass").loss("cross-entropy", 0.0), torch.device("cpu")
    cfg = TrainConfig(epochs=25, freeze_epochs=6, unfreeze="last-5", freeze_bn=True)
    rows = []
    for stage in plan_stages(model, cfg):
        apply_stage(model, stage)
        chains = validation_chains(model, model, val)
        shown, kept = frozen_validation(model, chains, val, cpu, None)
        validate(shown, kept, loss, cpu)  # the kept pass: computes and keeps the activations
        full, reused = [], []
        for _ in range(repeats + 1):
            for times, (m, b) in ((full, (model, val)), (reused, (shown, kept))):
                start = time.perf_counter()
                figures = validate(m, b, loss, cpu)
                times.append(time.perf_counter() - start)
            assert figures == validate(model, val, loss, cpu), "not the same figures"
        a, b = statistics.median(full[1:]), statistics.median(reused[1:])
        rows.append(f"| {side} | {stage.name} | {a * 1000:.0f} | {b * 1000:.0f} | {b / a:.2f} |")
    return rows


def timed_run(tree: Path, data: Path, seed: int) -> dict:
    out = Path(tempfile.mkdtemp(prefix="validation-reuse-")) / "run"
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", TIMED_TRAIN, "train", "--data", str(data),
                           "--seed", str(seed), "--out", str(out), "--quiet"],
                          cwd=tree, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    calls, seconds = re.search(r"VALIDATION (\d+) ([\d.]+)", done.stderr).groups()
    test = json.loads((out / "metrics.json").read_text())["test"]
    return {"calls": int(calls), "seconds": float(seconds), "wall": wall,
            "accuracy": test["accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", default="224,96")
    parser.add_argument("--images", type=int, default=60, help="validation images")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--trees", default="", help="BEFORE,AFTER checkouts: whole runs")
    parser.add_argument("--data", default="", help="the folder the whole runs train on")
    parser.add_argument("--seeds", default="0")
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    from imclass.devices import keep_freed_memory
    keep_freed_memory()  # as a training run does: no mmap/munmap per large tensor
    print(machine_line(128), flush=True)
    if args.trees:
        print("| seed | tree | validate calls | seconds in validate | wall time (s) | test "
              "accuracy |\n|---|---|---:|---:|---:|---:|")
        for seed in map(int, args.seeds.split(",")):
            for tree in args.trees.split(","):
                r = timed_run(Path(tree).resolve(), Path(args.data).resolve(), seed)
                print(f"| {seed} | {Path(tree).name} | {r['calls']} | {r['seconds']:.1f} | "
                      f"{r['wall']:.0f} | {r['accuracy']:.4f} |", flush=True)
        return
    print("| side (px) | stage | full pass (ms) | over kept activations (ms) | ratio |\n"
          "|---:|---|---:|---:|---:|")
    for side in map(int, args.sides.split(",")):
        for row in step_times(side, args.images, args.repeats):
            print(row, flush=True)


if __name__ == "__main__":
    main()
