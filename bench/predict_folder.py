"""Scoring a folder of images: `imclass predict --out` against the plain PyTorch loop a user
would write (PIL + torchvision transforms + DataLoader + the eager model), side by side.

10,000 Fashion-MNIST test images as PNG files in one folder tree, one trained run. Each
contender scores every file with the same number of decoding processes (--workers); times are
medians of --repeats, taken in one process after imports (both read the files from the page
cache after the first pass). imclass runs with its run folder (eager PyTorch) and with the
exported model.onnx (ONNX Runtime).

    .venv/bin/python bench/predict_folder.py RUN_DIR [--images 10000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.own_images import matmul_gflops  # noqa: E402


def write_pngs(folder: Path, count: int) -> Path:
    from imclass.data import fashion_mnist

    if folder.is_dir() and len(list(folder.rglob("*.png"))) == count:
        return folder
    _, test = fashion_mnist.load()
    for k in range(count):
        sub = folder / f"{k // 1000:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(test.images[k % len(test), 0].numpy()).save(sub / f"{k:05d}.png")
    return folder


class PlainFiles(torch.utils.data.Dataset):
    """What the PyTorch tutorials do: open with PIL, ToTensor, Normalize."""

    def __init__(self, paths, mean, std):
        from torchvision import transforms
        self.paths = paths
        self.transform = transforms.Compose([transforms.Grayscale(), transforms.Resize((28, 28)),
                                             transforms.ToTensor(),
                                             transforms.Normalize(mean, std)])

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, k):
        with Image.open(self.paths[k]) as img:
            return self.transform(img)


def plain_loop(run_dir: Path, paths: list[str], workers: int, batch: int) -> float:
    from imclass.runfolder import load_run

    start = time.perf_counter()
    run = load_run(run_dir, device="cpu")
    norm = run.meta["normalization"]
    loader = torch.utils.data.DataLoader(PlainFiles(paths, norm["mean"], norm["std"]),
                                         batch_size=batch, num_workers=workers)
    decided = []
    with torch.no_grad():
        for x in loader:
            decided.append(run.model(x).softmax(1).argmax(1))
    assert sum(len(d) for d in decided) == len(paths)
    return time.perf_counter() - start


def imclass_predict(model: Path, paths: list[str], workers: int, batch: int) -> float:
    from imclass.commands.predict import predict_files
    from imclass.predictor import load

    start = time.perf_counter()
    predictor = load(model, device="cpu")
    rows = list(predict_files(predictor, paths, 3, batch, workers))
    assert len(rows) == len(paths) and not any("error" in r for r in rows)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--folder", type=Path, default=Path("runs/bench-predict/pngs"))
    args = parser.parse_args()
    from imclass.commands.export import export
    from imclass.commands.predict import collect

    print(f"{date.today()}: matmul {matmul_gflops():.0f} GFLOP/s (4096x4096 fp32); "
          f"{args.images} PNGs, {args.workers} decoding workers, batch {args.batch_size}",
          flush=True)
    paths = collect([write_pngs(args.folder, args.images)])
    onnx_file, _ = export(args.run_dir, args.folder.parent / "model.onnx")
    contenders = {
        "plain PIL + torchvision + DataLoader + eager": lambda: plain_loop(
            args.run_dir, paths, args.workers, args.batch_size),
        "imclass predict, run folder (eager PyTorch)": lambda: imclass_predict(
            args.run_dir, paths, args.workers, args.batch_size),
        "imclass predict, model.onnx (ONNX Runtime)": lambda: imclass_predict(
            onnx_file, paths, args.workers, args.batch_size),
    }
    times = {name: [] for name in contenders}
    contenders[next(iter(contenders))]()  # warm the page cache
    for _ in range(args.repeats):  # interleaved, so a busy spell hits all alike
        for name, run in contenders.items():
            times[name].append(run())
    base = statistics.median(next(iter(times.values())))
    print("\n| contender | median s | images/s | vs plain |\n|---|---:|---:|---:|")
    for name, t in times.items():
        m = statistics.median(t)
        print(f"| {name} | {m:.2f} | {len(paths) / m:.0f} | {base / m:.2f}x |")


if __name__ == "__main__":
    main()
