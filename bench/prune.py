"""Pruning: accuracy against sparsity, parameters, FLOPs and CPU latency (`imclass prune`).

Trains the default Fashion-MNIST run (or takes --base RUN_DIR), prunes it by magnitude
(unstructured) and by channels (structured, torch-pruning) at several amounts, each fine-tuned
with the default (3 epochs at a tenth of the run's learning rate), then times every model in
this one process, round-robin: eager PyTorch and ONNX Runtime fp32, batch 1 latency (mean of
20 calls) and batch 256 throughput (mean of 2), every model once per round, medians over
--rounds rounds after a warm-up round.

    .venv/bin/python bench/prune.py [--base RUN_DIR] [--out runs/bench-prune] [--rounds 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.own_images import matmul_gflops  # noqa: E402

AMOUNTS = {"unstructured": (0.5, 0.8, 0.9), "structured": (0.25, 0.5, 0.75)}


def forwards(run_dir: Path, folder: Path) -> dict:
    """The run's model as eager PyTorch and as ONNX Runtime fp32, and its ONNX file size."""
    from imclass.exporters import write
    from imclass.predictor import load_onnx, pixel_model_of_run, torch_forward

    module, contract = pixel_model_of_run(run_dir, device="cpu")
    onnx = folder / f"{run_dir.name}.onnx"
    write(module, contract, onnx, "onnx")
    return {"eager": torch_forward(module, torch.device("cpu")),
            "onnx": load_onnx(onnx).forward, "onnx_mb": onnx.stat().st_size / 1e6}


def speeds(runs: list[Path], rounds: int) -> list[dict]:
    """ms per image at batch 1 and images/s at batch 256, eager and ONNX Runtime: every model
    timed once per round, round after round, so a slow minute of the machine falls on all of
    them alike; medians over the rounds."""
    rng = np.random.default_rng(0)
    one, many = (rng.integers(0, 256, (b, 1, 28, 28), dtype=np.uint8) for b in (1, 256))
    with tempfile.TemporaryDirectory() as tmp:
        models = [forwards(r, Path(tmp)) for r in runs]
        samples = [{k: [] for k in ("eager_ms", "eager_ips", "onnx_ms", "onnx_ips")}
                   for _ in runs]
        for _ in range(rounds + 1):  # the first round warms up and is dropped
            for model, sample in zip(models, samples):
                for label in ("eager", "onnx"):
                    sample[f"{label}_ms"].append(1e3 * mean_seconds(model[label], one, 20))
                    sample[f"{label}_ips"].append(256 / mean_seconds(model[label], many, 2))
        return [{k: statistics.median(v[1:]) for k, v in sample.items()}
                | {"onnx_mb": model["onnx_mb"]} for model, sample in zip(models, samples)]


def mean_seconds(forward, pixels: np.ndarray, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        forward(pixels)
    return (time.perf_counter() - start) / calls


def row_of(run_dir: Path) -> dict:
    run = json.loads((run_dir / "run.json").read_text())
    test = json.loads((run_dir / "metrics.json").read_text())["test"]
    pruned = run.get("pruned")
    after = pruned["after"] if pruned else None
    return {"name": (f"{pruned['method']} {pruned['amount']:g}" if pruned else "trained"),
            "accuracy": test["accuracy"],
            "before_fine_tune": after["val_acc"] if after else None,
            "sparsity": after["sparsity"] if after else 0.0,
            "parameters": run["model"]["parameters"],
            "nonzero": after["nonzero_parameters"] if after else run["model"]["parameters"],
            "mflops": run["model"]["flops_per_image"] / 1e6,
            "seconds": run["total_seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, help="a trained run (default: train the default)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-prune"))
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    import imclass
    from imclass.commands.prune import prune

    print(f"{date.today()}: matmul {matmul_gflops():.0f} GFLOP/s (4096x4096 fp32); torch "
          f"threads {torch.get_num_threads()}", flush=True)
    base = args.base
    if base is None:
        base = args.out / "base"
        if not (base / "run.json").is_file():
            imclass.train(None, base, overwrite=True, quiet=True, command="bench/prune.py")
    runs = [base]
    for method, amounts in AMOUNTS.items():
        for amount in amounts:
            out = args.out / f"{method}-{round(amount * 100)}"
            started = time.perf_counter()
            if not (out / "run.json").is_file():
                prune(base, amount, structured=method == "structured", out=out,
                      overwrite=True, quiet=True)
            print(f"{method} {amount:g}: {time.perf_counter() - started:.0f} s", flush=True)
            runs.append(out)
    rows = [row_of(r) | speed for r, speed in zip(runs, speeds(runs, args.rounds))]
    base_ms = rows[0]["eager_ms"], rows[0]["onnx_ms"]
    print(f"\nmatmul {matmul_gflops():.0f} GFLOP/s after timing\n")
    print("| model | test acc | val acc pruned, before fine-tune | zero weights | parameters "
          "| nonzero | MFLOPs/image | eager ms (b1) | eager img/s (b256) | ONNX ms (b1) | "
          "ONNX img/s (b256) | ONNX MB | run s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        before = f"{r['before_fine_tune']:.2%}" if r["before_fine_tune"] is not None else ""
        print(f"| {r['name']} | {r['accuracy']:.2%} | {before} | {r['sparsity']:.0%} | "
              f"{r['parameters']:,} | {r['nonzero']:,} | {r['mflops']:.1f} | "
              f"{r['eager_ms']:.2f} ({base_ms[0] / r['eager_ms']:.2f}x) | "
              f"{r['eager_ips']:,.0f} | {r['onnx_ms']:.2f} ({base_ms[1] / r['onnx_ms']:.2f}x) | "
              f"{r['onnx_ips']:,.0f} | {r['onnx_mb']:.2f} | {r['seconds']:.0f} |")


if __name__ == "__main__":
    main()
