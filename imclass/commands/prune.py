"""`imclass prune RUN_DIR --amount 0.5 [--structured] [--fine-tune-epochs N]`: a smaller (or
sparser) copy of a trained model, fine-tuned on the same data and split, as a new run folder
with its own metrics and report (imclass.pruning says how each way prunes)."""

from __future__ import annotations

import json
from pathlib import Path

from imclass.commands.train import train
from imclass.errors import ConfigError, DataError
from imclass.pruning import PruneSpec, fine_tune_config


def prune(run_dir: str | Path, amount: float = 0.5, *, structured: bool = False,
          fine_tune_epochs: int | None = None, lr: float | None = None,
          out: str | Path | None = None, overwrite: bool = False, quiet: bool = False,
          command: str | None = None) -> Path:
    """Prune the best model of `run_dir` and fine-tune it; returns the new run folder
    (default: beside the trained one, named for how it was pruned)."""
    run_dir = Path(run_dir)
    spec = PruneSpec(str(run_dir), amount, structured)
    if fine_tune_epochs is not None and fine_tune_epochs < 1:
        raise ConfigError(f"--fine-tune-epochs {fine_tune_epochs}: give at least 1 (the "
                          "pruned model is always fine-tuned)")
    check_source(run_dir)
    cfg = fine_tune_config(run_dir, fine_tune_epochs, lr)
    out = Path(out) if out else run_dir.parent / default_name(run_dir, spec)
    return train(cfg, out, overwrite=overwrite, quiet=quiet, prune=spec,
                 command=command or f"imclass prune {run_dir} --amount {amount:g}"
                 + (" --structured" if structured else ""))


def check_source(run_dir: Path) -> None:
    """A finished run to prune; not one whose layers were narrowed already (its weights
    would not fit the architecture its config builds)."""
    summary = run_dir / "run.json"
    if not summary.is_file():
        raise DataError(f"{run_dir} holds no finished run (no run.json); train one first "
                        "with imclass train")
    pruned = json.loads(summary.read_text()).get("pruned")
    if pruned and pruned.get("structured"):
        raise ConfigError(f"{run_dir} was pruned structurally already; prune its source "
                          f"{pruned['source']} with a larger --amount instead")


def default_name(run_dir: Path, spec: PruneSpec) -> str:
    return (f"{run_dir.name}-pruned{round(spec.amount * 100)}"
            + ("-structured" if spec.structured else ""))
