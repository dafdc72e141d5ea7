"""Time to 90% test accuracy on Fashion-MNIST: the keras.io "simple MNIST convnet" recipe
(two conv layers, Adam, batch 128, 15 epochs, 10% validation split) against the shortest
imclass run that reaches 90% (`imclass train --epochs N`, every other setting default), the
two run alternately in one sitting, each a fresh process timed from its start to its test
accuracy (imclass: to the report written). Prints the machine's matmul speed first.

Keras runs in its own environment (TensorFlow is not an imclass dependency):

    python3.11 -m venv /tmp/kerasvenv && /tmp/kerasvenv/bin/pip install tensorflow-cpu
    .venv/bin/python bench/keras_time_to_90.py --keras-python /tmp/kerasvenv/bin/python \
        [--runs 3] [--imclass-epochs 1,2,3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

KERAS_EPOCHS, KERAS_BATCH = 15, 128


def keras_worker(npz: str) -> None:
    """The keras.io recipe, verbatim but for the data (run under --keras-python)."""
    import numpy as np
    from tensorflow import keras
    from tensorflow.keras import layers

    data = np.load(npz)
    x_train, x_test = (data[k].astype("float32")[..., None] / 255 for k in ("x_train", "x_test"))
    y_train, y_test = (keras.utils.to_categorical(data[k], 10) for k in ("y_train", "y_test"))
    model = keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Flatten(),
        layers.Dropout(0.5),
        layers.Dense(10, activation="softmax"),
    ])
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=KERAS_BATCH, epochs=KERAS_EPOCHS,
              validation_split=0.1, verbose=0)
    print(json.dumps({"accuracy": float(model.evaluate(x_test, y_test, verbose=0)[1])}))


def timed(command: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return time.perf_counter() - start, done.stdout


def keras_run(python: str, npz: Path) -> dict:
    wall, out = timed([python, __file__, "--keras-worker", str(npz)])
    return {"wall_s": wall, "accuracy": json.loads(out.strip().splitlines()[-1])["accuracy"]}


def imclass_run(out: Path, epochs: int, seed: int) -> dict:
    wall, _ = timed([sys.executable, "-m", "imclass", "train", "--out", str(out), "--overwrite",
                     "--quiet", "--seed", str(seed), "--epochs", str(epochs)])
    test = json.loads((out / "metrics.json").read_text())["test"]
    return {"wall_s": wall, "accuracy": test["accuracy"]}


def write_arrays(folder: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import numpy as np

    from imclass.data import fashion_mnist
    train, test = fashion_mnist.load()
    npz = folder / "fashion-mnist.npz"
    np.savez(npz, x_train=train.store[:, 0].numpy(), y_train=train.labels.numpy(),
             x_test=test.store[:, 0].numpy(), y_test=test.labels.numpy())
    return npz


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keras-python", required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--imclass-epochs", default="1,2,3",
                        help="imclass runs of these lengths, each run after each Keras run")
    parser.add_argument("--out", default="runs/bench-keras")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.own_images import matmul_gflops

    print(f"{date.today()}: {platform.processor() or platform.machine()}, {os.cpu_count()} "
          f"cores; matmul {matmul_gflops():.0f} GFLOP/s (4096x4096 fp32); command: `python "
          f"bench/keras_time_to_90.py {' '.join(sys.argv[1:])}`", flush=True)
    lengths = [int(e) for e in args.imclass_epochs.split(",")]
    results: dict[str, list[dict]] = {"keras": [], **{f"imclass {e}": [] for e in lengths}}
    with tempfile.TemporaryDirectory() as tmp:
        npz = write_arrays(Path(tmp))
        for i in range(args.runs):
            results["keras"].append(keras_run(args.keras_python, npz))
            for e in lengths:
                results[f"imclass {e}"].append(imclass_run(Path(args.out) / f"e{e}", e, i))
            print(f"round {i + 1}: " + ", ".join(
                f"{k} {v[-1]['accuracy']:.4f} in {v[-1]['wall_s']:.0f} s"
                for k, v in results.items()), flush=True)
    keras_s = statistics.median(r["wall_s"] for r in results["keras"])
    print("\n| contender | test accuracy (median) | wall time (median, s) | Keras time / it |"
          "\n|---|---|---|---|")
    for name, runs in results.items():
        wall = statistics.median(r["wall_s"] for r in runs)
        acc = statistics.median(r["accuracy"] for r in runs)
        label = f"Keras simple convnet, {KERAS_EPOCHS} epochs" if name == "keras" else (
            f"`imclass train --epochs {name.split()[1]}`")
        print(f"| {label} | {acc:.4f} | {wall:.0f} | {keras_s / wall:.1f}x |")
    print(f"\nmatmul after: {matmul_gflops():.0f} GFLOP/s")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--keras-worker":
        keras_worker(sys.argv[2])
    else:
        main()
