"""A run folder: where its files go, what is written into it as the training loop runs
(history.csv, checkpoints), and how a finished run is read back (history, the model).

```
RUN_DIR/config.yaml  run.json  metrics.json  history.csv  report.html
        checkpoints/{best,last}.safetensors + .json     plots/*.png
```
"""

from __future__ import annotations

import csv
import os
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from imclass import checkpoint, config as config_mod
from imclass.atomic import atomic_write_text, json_text
from imclass.config import RunConfig
from imclass.devices import resolve_device
from imclass.contract import check_written_by_us
from imclass.errors import ConfigError, DataError
from imclass.timekeeping import Pace
from imclass.version import versions

HISTORY_COLUMNS = ("epoch", "stage", "train_loss", "train_acc", "val_loss", "val_acc",
                   "val_balanced_acc", "val_macro_f1", "lr", "seconds", "images_per_s")


MIN_FREE_BYTES = 50 * 2 ** 20  # plots, report, history and a small model's checkpoints


def check_run_dir(out: str | Path | None, overwrite: bool) -> None:
    """Refuse, before any work: a folder that holds an earlier run, a file where the folder
    should be, a place that cannot be written, a disk too full for a run."""
    if out is None:
        return
    out = Path(out)
    if (out / "config.yaml").exists() and not overwrite:
        raise ConfigError(f"{out} already holds a run; choose another --out or pass "
                          "--overwrite to replace it")
    existing = next(p for p in (out, *out.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"--out {out}: {existing} is a file, not a folder; choose another "
                          "--out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: {existing} cannot be written (permission denied); "
                          "choose another --out")
    check_space(existing, MIN_FREE_BYTES)


def check_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise ConfigError(f"only {free / 2 ** 20:.0f} MB free where the run goes ({folder}); "
                          f"it needs about {needed / 2 ** 20:.0f} MB: free some space or "
                          "choose another --out")


def prepare_run_dir(out: str | Path | None, cfg: RunConfig, overwrite: bool) -> Path:
    """The run folder, with checkpoints/ and plots/ inside (default: a new timestamped one)."""
    if out is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        dataset = Path(cfg.data.source).name or "data"
        out = Path("runs") / f"{dataset}-{cfg.model.name}-{stamp}"
    run_dir = Path(out)
    check_run_dir(run_dir, overwrite)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run_dir / "plots").mkdir(exist_ok=True)
    return run_dir


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json_text(data))


class HistoryWriter:
    """Rewrites history.csv after every epoch, so a stopped run keeps what it did."""

    def __init__(self, path: Path):
        self.path, self.rows = path, []

    def __call__(self, event: str, info: dict):
        if event != "epoch_end":
            return None
        self.rows.append({k: info[k] for k in HISTORY_COLUMNS})
        lines = [",".join(HISTORY_COLUMNS)]
        lines += [",".join(f"{row[k]:.6g}" if isinstance(row[k], float) else str(row[k])
                           for k in HISTORY_COLUMNS) for row in self.rows]
        atomic_write_text(self.path, "\n".join(lines) + "\n")
        return None


def read_history(run_dir: Path) -> list[dict[str, float]]:
    path = Path(run_dir) / "history.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def checkpoint_meta(cfg: RunConfig, splits, task) -> dict:
    """What a checkpoint's sidecar holds besides its metrics: all it takes to use the weights."""
    train = splits.train
    return {"config": config_mod.to_dict(cfg), "class_names": list(train.class_names),
            "task": task.name, "hierarchy_sep": cfg.data.hierarchy_sep,
            "input": {"channels": train.channels, "height": splits.input_size,
                      "width": splits.input_size, "decoded": train.size[0],
                      "fit": cfg.data.fit},
            "normalization": {"mean": list(splits.norm.mean), "std": list(splits.norm.std)},
            "versions": versions()}


class Checkpointer:
    """Saves `last` after every epoch and `best` whenever validation improved. Without
    validation (`validated` False) every epoch is both, and the writes are paced
    (imclass.timekeeping.Pace): the epoch left unwritten is written at "final_epoch" (before
    the resume state says the run finished, so a kill between the two cannot leave a finished
    run with older weights), or, when a stop signal ended training, at "train_end" from the
    weights fit ends with (`best_weights`: the last finished epoch's)."""

    def __init__(self, folder: Path, model: torch.nn.Module, meta: dict,
                 validated: bool = True):
        self.folder, self.model, self.meta, self.validated = folder, model, meta, validated
        self.pace, self.unwritten = Pace(), None

    def __call__(self, event: str, info: dict):
        if event == "final_epoch" and self.unwritten is not None:
            self.write(self.model, self.unwritten, best=True)
        if event == "train_end" and self.unwritten is not None and info.get("best_weights"):
            self.write(info["best_weights"], self.unwritten, best=True)
        if event != "epoch_end":
            return None
        metrics = {k: info[k] for k in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc")}
        meta = {**self.meta, "metrics": metrics}
        if self.validated:
            self.write(self.model, meta, best=info["improved"])
        elif self.pace.due():
            self.pace.timed(lambda: self.write(self.model, meta, best=True))
        else:
            self.unwritten = meta
        return None

    def write(self, weights, meta: dict, best: bool) -> None:
        if best:  # the same weights: written once, linked as `last`
            checkpoint.save(self.folder / "best", weights, meta, also=self.folder / "last")
        else:
            checkpoint.save(self.folder / "last", weights, meta)
        self.unwritten = None


@dataclass
class LoadedRun:
    model: torch.nn.Module
    meta: dict
    config: RunConfig
    device: torch.device

    @property
    def class_names(self) -> list[str]:
        return self.meta["class_names"]

    @property
    def norm(self):
        from imclass.data.batches import Normalization
        n = self.meta["normalization"]
        return Normalization(tuple(n["mean"]), tuple(n["std"]))

    @property
    def task(self):
        from imclass.tasks import get_task
        return get_task(self.meta["task"], self.meta.get("hierarchy_sep", "/"))

    @property
    def thresholds(self) -> list[float] | None:
        return self.meta.get("thresholds")

    @property
    def data_config(self):
        return model_data_config(self.config, self.meta)


def model_data_config(cfg: RunConfig, meta: dict):
    """The run's data config at the size its model was trained at (a folder dataset's
    default size is measured from the images, not saved), so a rebuilt split matches it."""
    import dataclasses
    return dataclasses.replace(cfg.data, image_size=meta["input"]["height"])


def load_run(run_dir: str | Path, which: str = "best", device: str = "auto") -> LoadedRun:
    """Rebuild a run's model from its checkpoint (safetensors + JSON sidecar; no pickle)."""
    from imclass.models import build_model

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"run folder {run_dir} does not exist")
    stem = run_dir / "checkpoints" / which
    state, meta = checkpoint.load(stem)
    sidecar = stem.with_suffix(".json")
    check_written_by_us(meta, sidecar)
    try:
        cfg = config_mod.from_dict(meta["config"])
        dev = resolve_device(device)
        run = LoadedRun(None, meta, cfg, dev)
        model = build_model(cfg.model, meta["input"]["channels"],
                            run.task.num_outputs(len(meta["class_names"])),
                            meta.get("architecture"))
    except (KeyError, TypeError) as exc:
        raise DataError(f"{sidecar} lacks what it takes to rebuild the model ({exc!r} "
                        "missing or malformed); the file was edited or cut short") from None
    except ConfigError as exc:
        raise DataError(f"{sidecar}: its config is not valid here ({exc})") from None
    if (meta.get("pruned") or {}).get("structured"):
        from imclass.models.resize import fit_to_state
        fit_to_state(model, state)  # its layers narrowed by imclass prune --structured
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # torch's message lists every missing or misshapen tensor
        first = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise DataError(f"{stem.with_suffix('.safetensors')} does not fit the model its "
                        f"sidecar describes ({first[:200]}); the files come from different "
                        "runs or were edited") from None
    run.model = model.to(dev, memory_format=torch.channels_last).eval()
    return run
