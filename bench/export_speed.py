"""Speed of the exported model: ONNX Runtime (fp32 and static int8) against eager PyTorch, at
batch 1 (latency) and batch 64 (throughput), for a run's model (the default `cnn` on
Fashion-MNIST, 28x28 grey) and for EfficientNet-Lite0 at 224x224 RGB (10 classes).

Each figure is the median of --repeats timed calls after warm-up calls, all in this one
process, one contender after another per size, so they are compared in the same minute. All
of them get the machine's threads (torch and ONNX Runtime both use every core by default).
Optionally the int8 accuracy cost on the run's test set (`imclass export --int8` measures it).

    .venv/bin/python bench/export_speed.py RUN_DIR [--repeats 30]
"""

from __future__ import annotations

import argparse
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


def median_seconds(call, repeats: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def lite0():
    """A PixelModel of EfficientNet-Lite0 (fresh weights: speed does not depend on them)."""
    from imclass.config import ModelConfig
    from imclass.contract import Contract
    from imclass.pixel_model import PixelModel
    from imclass.models import build_model

    contract = Contract(class_names=tuple(f"c{k}" for k in range(10)), task="multiclass",
                        thresholds=None, hierarchy_sep="/", input_channels=3, input_size=224,
                        decoded_size=224, fit="crop", interpolation="bilinear",
                        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    network = build_model(ModelConfig(name="efficientnet_lite0", dropout=0.2), 3, 10)
    network = network.to(memory_format=torch.channels_last)  # as load_run does
    return PixelModel(network, contract).eval(), contract


def contenders(module, contract, folder: Path, calibration: np.ndarray) -> dict:
    from imclass.commands.export import quantize_file
    from imclass.exporters import write
    from imclass.predictor import load_onnx, torch_forward

    fp32, int8 = folder / "model.onnx", folder / "model-int8.onnx"
    write(module, contract, fp32, "onnx")
    quantize_file(fp32, int8, calibration)
    return {"eager PyTorch": torch_forward(module, torch.device("cpu")),
            "ONNX Runtime fp32": load_onnx(fp32).forward,
            "ONNX Runtime int8": load_onnx(int8).forward}, {
            "fp32": fp32.stat().st_size / 1e6, "int8": int8.stat().st_size / 1e6}


def measure(name: str, module, contract, repeats: int) -> None:
    rng = np.random.default_rng(0)
    shape = (contract.input_channels, contract.decoded_size, contract.decoded_size)
    batches = {b: rng.integers(0, 256, (b, *shape), dtype=np.uint8) for b in (1, 64)}
    with tempfile.TemporaryDirectory() as tmp:
        forwards, sizes = contenders(module, contract, Path(tmp), batches[64])
        rows = {}
        for label, forward in forwards.items():
            one = median_seconds(lambda: forward(batches[1]), repeats)
            many = median_seconds(lambda: forward(batches[64]), max(5, repeats // 3))
            rows[label] = (one, many)
    base = rows["eager PyTorch"][0]
    print(f"\n{name} ({'x'.join(map(str, shape))}; ONNX file {sizes['fp32']:.2f} MB fp32, "
          f"{sizes['int8']:.2f} MB int8)\n")
    print("| runtime | batch 1 latency ms | vs eager | batch 64 images/s |\n|---|---:|---:|---:|")
    for label, (one, many) in rows.items():
        print(f"| {label} | {1e3 * one:.2f} | {base / one:.1f}x | {64 / many:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    from imclass.predictor import pixel_model_of_run

    print(f"{date.today()}: matmul {matmul_gflops():.0f} GFLOP/s (4096x4096 fp32); torch "
          f"threads {torch.get_num_threads()}", flush=True)
    module, contract = pixel_model_of_run(args.run_dir, device="cpu")
    measure(f"{args.run_dir.name}: the run's {contract.task} model", module, contract,
            args.repeats)
    module, contract = lite0()
    measure("efficientnet_lite0", module, contract, args.repeats)


if __name__ == "__main__":
    main()
