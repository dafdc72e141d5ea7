"""`imclass evaluate RUN` and `imclass predict RUN one.jpg` as a user waits for them: whole
processes, from two checkouts side by side (issue 29's "answers in a second").

Each tree gets its own copy of the run folder (evaluate rewrites metrics, figures and the
report; predict may export the run's network once, untimed here), then the trees' commands
alternate A B A B so that a noisy machine weighs on both alike. Prints the CPU and its matmul
speed, then a Markdown table of each command's seconds per tree (every run and the median).

    .venv/bin/python bench/answer_times.py --run RUN --image one.jpg \\
        --trees /path/to/before,/path/to/after [--runs 3] [--commands evaluate,predict]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.budget import cpu_name  # noqa: E402
from bench.own_images import matmul_gflops  # noqa: E402


def command(tree: Path, run: Path, image: Path, name: str) -> list[str]:
    """The command as the user types it, run with `tree`'s own code."""
    python = tree / ".venv" / "bin" / "python"
    args = {"evaluate": ["evaluate", str(run), "--quiet"],
            "predict": ["predict", str(run), str(image)]}[name]
    return [str(python if python.exists() else sys.executable), "-m", "imclass", *args]


def seconds(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--trees", required=True, help="two checkouts, comma-separated")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--commands", default="evaluate,predict")
    args = parser.parse_args()
    trees = [Path(t).resolve() for t in args.trees.split(",")]
    print(f"{time.strftime('%Y-%m-%d')} {cpu_name()}, matmul {matmul_gflops():.0f} GFLOP/s "
          "(fp32, 4096x4096)")
    with tempfile.TemporaryDirectory() as scratch:
        runs = [shutil.copytree(args.run, Path(scratch) / f"run{i}") for i in range(len(trees))]
        rows = []
        for name in args.commands.split(","):
            cmds = [command(t, r, args.image.resolve(), name) for t, r in zip(trees, runs)]
            for cmd, tree in zip(cmds, trees):  # untimed: page cache, a first export
                seconds(cmd, tree)
            times: list[list[float]] = [[] for _ in trees]
            for _ in range(args.runs):
                for i, (cmd, tree) in enumerate(zip(cmds, trees)):
                    times[i].append(seconds(cmd, tree))
            for tree, t in zip(trees, times):
                rows.append(f"| `{name}` | {tree.name} | {', '.join(f'{s:.2f}' for s in t)} | "
                            f"**{statistics.median(t):.2f}** |")
    print("\n| command | tree | seconds (each run) | median |\n|---|---|---|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
