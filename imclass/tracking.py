"""`--track tensorboard,mlflow`: a run in the experiment trackers people already watch.

history.csv and the report are always written; trackers are extra views of the same figures,
fed by the training loop's events (epoch_end) and, at the end, by the run folder:

- tensorboard: event files in RUN_DIR/tensorboard/: per epoch the losses, accuracies,
  learning rate and images/s; the hyperparameters with the final test figures (the HPARAMS
  tab); every figure of the report as an image.
- mlflow: a run in `--mlflow-uri` (default a local SQLite store in ./mlruns): params (the
  resolved config, flattened: train.lr), metrics per epoch (step = epoch), tags (task,
  architecture, dataset), the test figures, the run folder as artifacts, and the model in
  MLflow's ONNX flavor (`mlflow models serve` runs it; input `pixels`, uint8). A trial of
  `imclass tune` is a nested run under the study's run.

A tracker that fails (a server down, a full disk) says so in one line and is dropped; the
training goes on.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imclass.errors import ConfigError
from imclass.extras import need

KINDS = ("tensorboard", "mlflow")
DEFAULT_MLFLOW_URI = "sqlite:///mlruns/mlflow.db"
EPOCH_METRICS = {"train_loss": "loss/train", "val_loss": "loss/val", "train_acc": "accuracy/train",
                 "val_acc": "accuracy/val", "val_balanced_acc": "balanced_accuracy/val",
                 "lr": "learning_rate", "images_per_s": "images_per_s"}


def epoch_scalars(info: dict) -> dict[str, float]:
    """{tag: value} of an epoch's figures; a run without validation has none to send (NaN)."""
    return {tag: float(info[key]) for key, tag in EPOCH_METRICS.items()
            if not math.isnan(float(info[key]))}


@dataclass(frozen=True)
class TrackOptions:
    kinds: tuple[str, ...] = ()
    mlflow_uri: str = DEFAULT_MLFLOW_URI
    experiment: str = "imclass"
    parent_run_id: str | None = None  # an MLflow run to nest under (a tune study's)


def options_from(kinds: tuple[str, ...], uri: str | None = None,
                 experiment: str | None = None) -> TrackOptions:
    """TrackOptions with MLflow's own variables honoured: a flag's value, else
    MLFLOW_TRACKING_URI / MLFLOW_EXPERIMENT_NAME (as every MLflow user and shared tracking
    server sets them), else a SQLite store in ./mlruns and the experiment 'imclass'."""
    import os
    return TrackOptions(kinds, uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_MLFLOW_URI,
                        experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or "imclass")


def parse_kinds(text: str | None) -> tuple[str, ...]:
    """'tensorboard,mlflow' -> ('tensorboard', 'mlflow'); 'none' or '' -> ()."""
    names = tuple(n.strip() for n in (text or "").split(",") if n.strip() and n.strip() != "none")
    unknown = [n for n in names if n not in KINDS]
    if unknown:
        raise ConfigError(f"--track: unknown tracker '{unknown[0]}'; valid: "
                          f"{', '.join(KINDS)} (comma-separated) or none")
    return names


def warn(message: str) -> None:
    print(f"imclass: warning: {message}", file=sys.stderr, flush=True)


def flat_config(cfg_dict: dict) -> dict[str, Any]:
    """{'train': {'lr': 0.1}} -> {'train.lr': 0.1}; lists and None as text."""
    out = {}
    for section, values in cfg_dict.items():
        for key, value in values.items():
            out[f"{section}.{key}"] = value if isinstance(value, (int, float, str, bool)) \
                else str(value)
    return out


def scalar_metrics(test: dict) -> dict[str, float]:
    return {k: float(v) for k, v in test.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


class Tracker:
    """Base: event callbacks for the training loop; `finish` once the run folder is complete.
    Any failure drops the tracker with one warning line."""

    name = "tracker"

    def __init__(self):
        self.failed = False

    def fail(self, exc: BaseException) -> None:
        self.failed = True
        warn(f"{self.name} tracking stopped ({type(exc).__name__}: "
             f"{str(exc).splitlines()[0] if str(exc) else ''}); the training goes on")

    def guarded(self, fn, *args) -> None:
        if self.failed:
            return
        try:
            fn(*args)
        except Exception as exc:  # a tracker must never end a run
            self.fail(exc)

    def __call__(self, event: str, info: dict):
        if event == "epoch_end":
            self.guarded(self.epoch, info)
        return None

    def epoch(self, info: dict) -> None: ...

    def finish(self, run_dir: Path, cfg_dict: dict, test: dict) -> None:
        self.guarded(self.close, run_dir, cfg_dict, test)

    def close(self, run_dir: Path, cfg_dict: dict, test: dict) -> None: ...


class TensorBoardTracker(Tracker):
    name = "TensorBoard"

    def __init__(self, run_dir: Path):
        super().__init__()
        need("tensorboard", "tracking", "--track tensorboard")
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def epoch(self, info: dict) -> None:
        for tag, value in epoch_scalars(info).items():
            self.writer.add_scalar(tag, value, info["epoch"])
        self.writer.flush()

    def close(self, run_dir: Path, cfg_dict: dict, test: dict) -> None:
        import numpy as np
        from PIL import Image

        metrics = {f"test/{k}": v for k, v in scalar_metrics(test).items()}
        self.writer.add_hparams(flat_config(cfg_dict), metrics, run_name=".")
        for png in sorted((run_dir / "plots").glob("*.png")):
            with Image.open(png) as img:
                self.writer.add_image(f"figures/{png.stem}", np.asarray(img.convert("RGB")),
                                      dataformats="HWC")
        self.writer.close()


class MlflowTracker(Tracker):
    name = "MLflow"

    def __init__(self, options: TrackOptions, cfg_dict: dict, tags: dict[str, str], log):
        super().__init__()
        need("mlflow", "tracking", "--track mlflow")
        self.uri, self.run_id, self.log = options.mlflow_uri, None, log
        self.experiment = options.experiment
        self.guarded(self.start, options, cfg_dict, tags)

    def start(self, options: TrackOptions, cfg_dict: dict, tags: dict[str, str]) -> None:
        self.client = client(self.uri)
        experiment_id = experiment_of(self.client, options)
        if options.parent_run_id:
            tags = {**tags, "mlflow.parentRunId": options.parent_run_id}
        self.run_id = self.client.create_run(experiment_id, tags=tags,
                                             run_name=tags.get("run")).info.run_id
        from mlflow.entities import Param
        params = [Param(k, str(v)[:6000]) for k, v in flat_config(cfg_dict).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params a call
            self.client.log_batch(self.run_id, params=params[start:start + 100])

    def epoch(self, info: dict) -> None:
        import time

        from mlflow.entities import Metric
        stamp = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[
            Metric(tag.replace("/", "_"), value, stamp, info["epoch"])
            for tag, value in epoch_scalars(info).items()])

    def close(self, run_dir: Path, cfg_dict: dict, test: dict) -> None:
        import time

        from mlflow.entities import Metric
        stamp = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[
            Metric(f"test_{k}", v, stamp, 0) for k, v in scalar_metrics(test).items()])
        log_onnx_model(self.uri, self.run_id, run_dir)  # exports RUN_DIR/model.onnx first
        self.client.log_artifacts(self.run_id, str(run_dir))
        self.client.set_terminated(self.run_id)
        self.log(f"MLflow: run {self.run_id} in experiment {self.experiment} at {self.uri}")


def client(uri: str):
    """An MlflowClient for `uri`, after checking that a server answers within seconds (MLflow
    itself retries for minutes); a local SQLite store gets its folder."""
    from mlflow import MlflowClient

    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # stdout is ours
    if uri.startswith(("http://", "https://")):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        import urllib.request
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=3):
            pass
    elif uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        import logging  # its "creating initial MLflow database tables" lines are not ours
        for name in ("mlflow.store.db.utils", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
    return MlflowClient(uri)


def experiment_of(c, options: TrackOptions) -> str:
    """The experiment's id, created when new. In a SQLite store its artifacts go beside the
    database (MLflow's default is ./mlruns under whatever folder the process runs in)."""
    experiment = c.get_experiment_by_name(options.experiment)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if options.mlflow_uri.startswith("sqlite:///"):
        db = Path(options.mlflow_uri.removeprefix("sqlite:///"))
        location = (db.parent / "artifacts").resolve().as_uri()
    return c.create_experiment(options.experiment, artifact_location=location)


def log_onnx_model(uri: str, run_id: str, run_dir: Path) -> None:
    """The run's exported model.onnx in MLflow's ONNX flavor, with its signature."""
    import mlflow
    import numpy as np
    import onnx

    from imclass.predictor import load_onnx, onnx_of_run

    path = onnx_of_run(run_dir)
    predictor = load_onnx(path)
    c = predictor.contract
    example = np.zeros((1, c.input_channels, c.decoded_size, c.decoded_size), np.uint8)
    signature = mlflow.models.infer_signature({"pixels": example},
                                              predictor.probabilities(example))
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(run_id=run_id):
        mlflow.onnx.log_model(onnx.load(str(path)), name="model", signature=signature)


def study_run(options: TrackOptions | None, study: str, space: dict[str, str]
              ) -> TrackOptions | None:
    """For `imclass tune`: the MLflow run of the study (found again when the study resumes),
    under which every trial and the final run nest. Without mlflow the options are returned
    as they are; if MLflow fails, without mlflow (after one warning)."""
    import dataclasses

    if not options or "mlflow" not in options.kinds:
        return options
    need("mlflow", "tracking", "--track mlflow")
    try:
        c = client(options.mlflow_uri)
        experiment_id = experiment_of(c, options)
        found = c.search_runs([experiment_id], f"tags.`imclass.study` = '{study}'",
                              max_results=1)
        if found:
            run_id = found[0].info.run_id
        else:
            run_id = c.create_run(experiment_id, tags={"imclass.study": study},
                                  run_name=f"study {study}").info.run_id
            for key, value in space.items():
                c.log_param(run_id, f"space.{key}", value[:6000])
    except Exception as exc:  # the study goes on without MLflow
        warn(f"MLflow tracking stopped ({type(exc).__name__}: {exc}); the search goes on")
        kinds = tuple(k for k in options.kinds if k != "mlflow")
        return dataclasses.replace(options, kinds=kinds)
    return dataclasses.replace(options, parent_run_id=run_id)


def check_available(options: TrackOptions | None) -> None:
    """Refuse a tracker whose library is missing before any work starts."""
    for kind in (options.kinds if options else ()):
        need(kind, "tracking", f"--track {kind}")


def trackers(options: TrackOptions | None, run_dir: Path, cfg_dict: dict,
             tags: dict[str, str], log) -> list[Tracker]:
    if not options or not options.kinds:
        return []
    out: list[Tracker] = []
    if "tensorboard" in options.kinds:
        out.append(TensorBoardTracker(run_dir))
    if "mlflow" in options.kinds:
        out.append(MlflowTracker(options, cfg_dict, tags, log))
    return out
