"""`imclass export`: a run's best model as one ONNX (default), TorchScript or torch.export
file with its contract inside (formats: imclass/exporters.py; keys: docs/deploy.md).

`--int8` adds ONNX Runtime static quantization (QDQ, weights per channel, activations uint8)
calibrated on 512 of the run's validation images, and measures on its test set what it costs:
accuracy, file size and speed against the fp32 file.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from imclass.atomic import atomic_write
from imclass.console import Log, make_log
from imclass.errors import ConfigError
from imclass.exporters import FORMATS, write
from imclass.predictor import load_onnx, pixel_model_of_run


def export(run_dir: str | Path, out: str | Path | None = None, fmt: str = "onnx",
           int8: bool = False, quiet: bool = True) -> tuple[Path, dict | None]:
    """Write the run's best model to `out` (default RUN_DIR/model[-int8].<suffix>); returns
    the path and, with int8, the measured figures."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format '{fmt}'; valid: {', '.join(FORMATS)}")
    if int8 and fmt != "onnx":
        raise ConfigError("--int8 needs --format onnx (ONNX Runtime quantizes the graph)")
    run_dir = Path(run_dir)
    module, contract = pixel_model_of_run(run_dir, device="cpu")
    name = f"model{'-int8' if int8 else ''}{FORMATS[fmt]}"
    out = Path(out) if out else run_dir / name
    if out.is_dir():
        out = out / name
    if out.suffix != FORMATS[fmt]:  # the suffix is how imclass.load knows the format
        raise ConfigError(f"--out {out}: a {fmt} file must end in {FORMATS[fmt]}")
    if not int8:
        write(module, contract, out, fmt)
        return out, None
    fp32 = out.with_name(f".{out.stem}-fp32.onnx")
    write(module, contract, fp32, "onnx")
    try:
        figures = quantize(run_dir, fp32, out, make_log(quiet))
    finally:
        fp32.unlink(missing_ok=True)
    return out, figures


def run_splits(run_dir: Path):
    """The run's validation and test sets, decoded as its model expects."""
    from imclass.data import prepare
    from imclass.runfolder import load_run

    run = load_run(run_dir, device="cpu")
    return prepare(run.data_config, run.config.train.seed)


class Calibration:
    """ONNX Runtime's CalibrationDataReader over a few hundred validation images."""

    def __init__(self, images: np.ndarray, batch: int = 32):
        self.batches = iter([images[i:i + batch] for i in range(0, len(images), batch)])

    def get_next(self):
        chunk = next(self.batches, None)
        return None if chunk is None else {"pixels": np.ascontiguousarray(chunk)}


def quantize(run_dir: Path, fp32: Path, out: Path, log: Log, calibration_images: int = 512
             ) -> dict:
    """Static int8 quantization of `fp32` into `out`, calibrated on the run's validation
    images (its training images when it had none: calibration only measures activation
    ranges, so seen images serve); returns (and logs) accuracy, size and speed of both on the
    run's test set."""
    splits = run_splits(run_dir)
    sample = splits.val if splits.validated else splits.train
    rows = torch.randperm(len(sample), generator=torch.Generator().manual_seed(0))
    quantize_file(fp32, out, sample.gather(rows[:calibration_images]).numpy())
    figures = compare_int8(fp32, out, splits.test)
    log(f"int8: test accuracy {figures['fp32']['accuracy']:.4f} -> "
        f"{figures['int8']['accuracy']:.4f} ({figures['accuracy_change_points']:+.2f} points); "
        f"{figures['fp32']['megabytes']:.2f} -> {figures['int8']['megabytes']:.2f} MB; "
        f"{figures['fp32']['images_per_s']:.0f} -> {figures['int8']['images_per_s']:.0f} "
        "images/s at batch 64")
    return figures


def quantize_file(fp32: Path, out: Path, calibration: np.ndarray) -> None:
    """ONNX Runtime's static quantization of an exported file, calibrated on uint8 pixels
    [N, C, D, D]; the contract (metadata) carried over."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = fp32.with_name(fp32.stem + "-prep.onnx")
    try:
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        atomic_write(out, lambda tmp: quantize_static(
            str(prepared), str(tmp), Calibration(calibration), quant_format=QuantFormat.QDQ,
            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8))
    finally:
        prepared.unlink(missing_ok=True)
    model = onnx.load(str(out))  # the quantizer drops metadata_props: put the contract back
    del model.metadata_props[:]
    model.metadata_props.extend(onnx.load(str(fp32)).metadata_props)
    atomic_write(out, lambda tmp: onnx.save(model, str(tmp)))


def compare_int8(fp32: Path, int8: Path, test) -> dict:
    """Accuracy on the test set (top-1; multilabel: share of labels right at 0.5), file size
    and batch-64 speed of both files."""
    labels = test.labels.numpy()
    figures = {}
    for name, path in (("fp32", fp32), ("int8", int8)):
        predictor = load_onnx(path)
        start, probs = time.perf_counter(), []
        for chunk in test.chunks(64):
            probs.append(predictor.probabilities(chunk.numpy()))
        seconds = time.perf_counter() - start
        p = np.concatenate(probs)
        accuracy = float((p.argmax(1) == labels).mean()) if labels.ndim == 1 else \
            float(((p >= 0.5) == (labels > 0.5)).mean())
        figures[name] = {"accuracy": accuracy, "megabytes": path.stat().st_size / 1e6,
                         "images_per_s": len(test) / seconds}
    figures["accuracy_change_points"] = 100 * (figures["int8"]["accuracy"]
                                               - figures["fp32"]["accuracy"])
    return figures
