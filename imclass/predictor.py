"""One code path from a model to decisions: `load(path)` returns a Predictor for a run folder
(eager PyTorch), an exported `.onnx` file (ONNX Runtime), a TorchScript `.ts` file or a
torch.export `.pt2` file. `imclass predict`, `imclass serve` and the Python API all call
`Predictor.predict`, so they cannot disagree.

A predictor turns each input (a path, encoded bytes, a PIL image or an HxW / HxWxC uint8
array) into uint8 pixels exactly as training images were decoded (EXIF orientation, the same
mode conversion, squash or centre fit, the same filter), runs the contract's `PixelModel` and
makes the task's decision with the run's tuned thresholds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np

from imclass.atomic import atomic_write
from imclass.contract import Contract, check_written_by_us
from imclass.data.decode import channels_first, fitted, read_pixels
from imclass.data.labels import ancestors, node_probabilities
from imclass.decisions import decide
from imclass.errors import DataError, ImclassError
from imclass.extras import need

if TYPE_CHECKING:
    import torch

Forward = Callable[[np.ndarray], np.ndarray]  # uint8 [N, C, D, D] -> float32 [N, K]


@dataclass
class Predictor:
    contract: Contract
    forward: Forward
    backend: str   # torch | onnx | torchscript | torch-export
    source: str    # the run folder or file it was loaded from

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.contract.class_names

    def pixels(self, item: Any) -> np.ndarray:
        """uint8 [C, D, D] of one input, decoded as training images were; DataError if it
        cannot be (missing, not an image, over Pillow's pixel limit)."""
        return pixels_of(item, self.contract)

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """float32 [N, K] for uint8 pixels [N, C, D, D]."""
        c = self.contract
        expected = (c.input_channels, c.decoded_size, c.decoded_size)
        if pixels.dtype != np.uint8 or pixels.shape[1:] != expected:
            raise DataError(f"pixels must be uint8 [N, {', '.join(map(str, expected))}]; got "
                            f"{pixels.dtype} {list(pixels.shape)}")
        return self.forward(np.ascontiguousarray(pixels))

    def decisions(self, probs: np.ndarray, top_k: int = 3) -> list[dict]:
        """Per row: the top-k classes with probabilities and the task's decision (binary: the
        class at the tuned threshold; multilabel: every label over its threshold; hierarchical:
        the leaf and the path down the tree with each node's probability)."""
        c, names = self.contract, self.contract.class_names
        decided = decide(c.task, probs, list(c.thresholds) if c.thresholds else None)
        nodes = node_probabilities(probs, names, c.hierarchy_sep) \
            if c.task == "hierarchical" else {}
        out = []
        for n, row in enumerate(probs):
            top = row.argsort()[::-1][:min(top_k, len(names))]
            item: dict = {"top": [{"class": names[i], "probability": float(row[i])}
                                  for i in top]}
            if c.task == "multilabel":
                item["labels"] = [names[k] for k in np.flatnonzero(decided[n])]
            else:
                item["decision"] = names[int(decided[n])]
            if c.task == "hierarchical":
                item["path"] = [{"node": a, "probability": float(nodes[a][n])}
                                for a in ancestors(item["decision"], c.hierarchy_sep)]
            out.append(item)
        return out

    def predict(self, items: Iterable[Any], top_k: int = 3, batch_size: int = 64
                ) -> list[dict]:
        """One result per input, in order: {"image", "top", decision...}, or {"image",
        "error"} for an input that could not be read (the others are still scored)."""
        results: list[dict] = []
        labels: list[str] = []
        decoded: list[np.ndarray | str] = []
        # decoded and scored a batch at a time: memory holds one batch of pixels, whatever
        # the number of inputs
        for k, item in enumerate(items):
            labels.append(describe(item, k))
            try:
                decoded.append(self.pixels(item))
            except DataError as exc:
                decoded.append(str(exc))
            if len(decoded) == batch_size:
                results += self.score(labels, decoded, top_k, batch_size)
                labels, decoded = [], []
        return results + self.score(labels, decoded, top_k, batch_size)

    def score(self, labels: list[str], decoded: list, top_k: int = 3,
              batch_size: int = 64) -> list[dict]:
        """Results for already decoded inputs (uint8 [C, D, D], or the error message)."""
        ok = [k for k, d in enumerate(decoded) if not isinstance(d, str)]
        results: list[dict] = [{"image": labels[k], "error": d} for k, d in enumerate(decoded)]
        for start in range(0, len(ok), batch_size):
            rows = ok[start:start + batch_size]
            probs = self.probabilities(np.stack([decoded[k] for k in rows]))
            for k, decision in zip(rows, self.decisions(probs, top_k)):
                results[k] = {"image": labels[k], **decision}
        return results


def pixels_of(item: Any, c: Contract) -> np.ndarray:
    """uint8 [C, D, D] of a path, encoded bytes, a PIL image or a uint8 HxW / HxWxC array,
    decoded the way the contract's training images were."""
    from PIL import Image

    size = (c.decoded_size, c.decoded_size)
    if isinstance(item, (str, Path)):
        item = read_bytes(item)
    if isinstance(item, (bytes, bytearray, memoryview)):
        array, error = read_pixels(bytes(item), size, c.input_channels, False,
                                   c.interpolation, c.fit)
        if array is None:
            raise DataError(error)
        return array
    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8 or item.ndim not in (2, 3):
            raise DataError(f"an array image must be uint8 HxW or HxWxC; got {item.dtype} "
                            f"{item.shape}")
        item = Image.fromarray(item[..., 0] if item.ndim == 3 and item.shape[2] == 1 else item)
    if isinstance(item, Image.Image):
        return channels_first(fitted(item, size, c.input_channels, c.interpolation, c.fit),
                              c.input_channels)
    raise DataError(f"cannot predict a {type(item).__name__}: give a path, bytes, a PIL "
                    "image or a uint8 array")


def describe(item: Any, index: int) -> str:
    return str(item) if isinstance(item, (str, Path)) else f"<{type(item).__name__} {index}>"


def read_bytes(path: str | Path) -> bytes:
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise unreadable(path, "does not exist") from None
    except IsADirectoryError:
        raise unreadable(path, "is a folder, not an image") from None
    except OSError as exc:
        raise unreadable(path, f"cannot be read: {exc.strerror or exc}") from None


def unreadable(path: Path, reason: str) -> DataError:
    """'image PATH does not exist', with the reason alone in `.reason` for a listing whose
    rows already name the file (predict's output)."""
    exc = DataError(f"image {path} {reason}")
    exc.reason = reason
    return exc


def load(model: str | Path, backend: str | None = None, device: str = "auto") -> Predictor:
    """A predictor for a run folder or an exported file. backend: torch (a run folder's eager
    model) or onnx (ONNX Runtime: the .onnx file given, or the run folder's model.onnx,
    exported on first use); default: what `model` is, for a run folder the fastest to start
    (its ONNX network, then its trace, see NETWORK and TRACED, then the eager model)."""
    path = Path(model)
    if not path.exists():
        raise DataError(f"model {path} does not exist; give a run folder or an exported "
                        ".onnx, .ts or .pt2 file")
    if backend not in (None, "torch", "onnx"):
        raise ImclassError(f"unknown backend '{backend}'; valid: torch, onnx")
    if path.is_dir():
        if backend == "onnx":
            return load_onnx(onnx_of_run(path))
        fast = load_run_network(path) if backend is None and device == "auto" else None
        return fast or load_torch_run(path, device)
    if path.suffix == ".onnx":
        if backend == "torch":
            raise ImclassError(f"{path} is an ONNX file; --backend torch needs its run folder")
        return load_onnx(path)
    if path.suffix in (".ts", ".pt2"):
        return load_torch_file(path, device)
    raise DataError(f"{path} is not a run folder or an .onnx, .ts or .pt2 file")


def run_contract(run_dir: Path, meta: dict) -> Contract:
    metrics_file = run_dir / "metrics.json"
    test = {}
    if metrics_file.is_file():
        try:
            test = json.loads(metrics_file.read_text()).get("test", {})
        except json.JSONDecodeError:
            raise DataError(f"{metrics_file} is not valid JSON") from None
    return Contract.of_run(meta, test)


def pixel_model_of_run(run_dir: Path, device: str = "auto"):
    """(PixelModel of the run's best weights on `device`, its Contract)."""
    from imclass.pixel_model import PixelModel
    from imclass.runfolder import load_run

    run = load_run(run_dir, device=device)
    contract = run_contract(Path(run_dir), run.meta)
    return PixelModel(run.model, contract).to(run.device).eval(), contract


def torch_forward(module: "torch.nn.Module", device: "torch.device") -> Forward:
    """A TorchScript module runs without the JIT's profiling executor: on lite0 at 224 px it
    made the first call of a process 0.13 s instead of 0.045 (the call `imclass predict RUN
    one.jpg` makes), the second 0.06 s instead of 0.017, and later ones no faster than
    without it (0.015 s; batch 32: 0.53 s either way; 2 cores, 2026-12-06)."""
    import torch

    plain = (lambda: torch.jit.optimized_execution(False)) if isinstance(
        module, torch.jit.ScriptModule) else contextlib.nullcontext

    def forward(pixels: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), plain():
            return module(torch.from_numpy(pixels).to(device)).float().cpu().numpy()
    return forward


def load_torch_run(run_dir: Path, device: str = "auto", traced: bool = True) -> Predictor:
    """The run's best model: its trace when current (see TRACED), else rebuilt eagerly."""
    fast = load_traced(Path(run_dir), device) if traced else None
    if fast is not None:
        return fast
    module, contract = pixel_model_of_run(run_dir, device)
    dev = next(module.parameters()).device
    return Predictor(contract, torch_forward(module, dev), "torch", str(run_dir))


# The best checkpoint's PixelModel as TorchScript, beside it: loading it needs neither timm nor
# torchvision (whose imports, torch._dynamo's among them, took 3 of the 6.5 s of `imclass
# predict RUN one.png` on 2 cores, 2026-12-04) nor a network built and then overwritten.
TRACED = "best.ts"


def save_traced(run_dir: Path) -> None:
    """Trace the run's best model for `load_traced`, tagged with its sidecar's checksum (which
    holds the weights' own): a checkpoint rewritten or edited later is never paired with an
    old trace. A model the tracer cannot follow is left to the eager path."""
    import torch

    from imclass.exporters import example_pixels

    module, contract = pixel_model_of_run(run_dir, device="cpu")
    extra = {"sidecar_sha256": _sha256(Path(run_dir) / "checkpoints" / "best.json")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's and TorchScript's deprecation notes
        try:
            traced = torch.jit.trace(module, example_pixels(contract))
        except Exception:  # noqa: BLE001 - any tracer failure means: use the eager model
            return
        atomic_write(Path(run_dir) / "checkpoints" / TRACED,
                     lambda tmp: torch.jit.save(traced, str(tmp), _extra_files=extra))


# The best checkpoint's PixelModel as an ONNX network, beside it, where ONNX Runtime is
# installed: `imclass predict RUN one.jpg` then scores without importing torch, which took 1.09
# of its 1.84 s on lite0 (2 cores, 2026-12-06). Written with torch.onnx's TorchScript-based
# exporter (dynamo=False): 1.03 s for lite0 at the end of training, against several for the
# torch.export-based one that `imclass export` uses; ONNX Runtime agrees with eager PyTorch on
# it within 6e-8. The sidecar's checksum is in its metadata, as in the trace's extra file.
NETWORK = "best.onnx"
NETWORK_TAG = "imclass_sidecar_sha256"


def save_fast_model(run_dir: Path) -> None:
    """What predict and serve load without building the network: the ONNX network where ONNX
    Runtime and onnx are installed and the exporter can follow the model, else the trace."""
    import importlib.util

    if all(importlib.util.find_spec(m) for m in ("onnxruntime", "onnx")) and save_network(
            run_dir):
        return
    save_traced(run_dir)


def save_network(run_dir: Path) -> bool:
    """Export the run's best model for `load_run_network`; False where the exporter fails."""
    import io

    import onnx
    import torch

    from imclass.exporters import example_pixels

    from imclass.pixel_model import WithFeatures

    module, contract = pixel_model_of_run(run_dir, device="cpu")
    outputs = ["probabilities"]
    if hasattr(module.network, "forward_with_embedding"):  # for evaluation's embedding figure
        module, outputs = WithFeatures(module), ["probabilities", "features"]
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes
        try:
            torch.onnx.export(module, (example_pixels(contract),), buffer, dynamo=False,
                              input_names=["pixels"], output_names=outputs,
                              dynamic_axes={name: {0: "batch"} for name in ["pixels", *outputs]},
                              opset_version=17)
        except Exception:  # noqa: BLE001 - any exporter failure means: use the trace
            return False
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.helper.set_model_props(proto, {NETWORK_TAG: _sha256(
        Path(run_dir) / "checkpoints" / "best.json")})
    atomic_write(Path(run_dir) / "checkpoints" / NETWORK,
                 lambda tmp: onnx.save(proto, str(tmp)))
    return True


def load_run_network(run_dir: Path) -> Predictor | None:
    """The run's ONNX network (see NETWORK) under ONNX Runtime when it was exported from the
    current checkpoint (as `load_traced` checks its trace); None otherwise, or without ONNX
    Runtime. Imports no torch."""
    found = run_network_session(Path(run_dir))
    if found is None:
        return None
    session, meta = found
    return Predictor(run_contract(run_dir, meta), onnx_forward(session), "onnx", str(run_dir))


# The test pass on a CPU runs the run's network (NETWORK) under ONNX Runtime: the metrics and
# figures are then those of the very file predict and serve load, and the pass a little faster
# than eager PyTorch in fp32 (lite0: 473 against 440 images/s at 96 px, 96 against 84 at 224
# px, batch 128 and 32, both with imclass.devices.keep_freed_memory; 2 cores of a Xeon with
# AMX, 2026-12-07).
def exported_network(run_dir: Path, device) -> object | None:
    """An ONNX Runtime session of the run's network for imclass.evaluation on a CPU (with
    as many threads as torch has) when it holds the current best checkpoint; None otherwise,
    and on a GPU (the eager model scores)."""
    if device.type != "cpu":
        return None
    import torch

    found = run_network_session(Path(run_dir), threads=torch.get_num_threads())
    return None if found is None else found[0]


def run_network_session(run_dir: Path, threads: int | None = None) -> tuple | None:
    """(ONNX Runtime session of the run's network, the best checkpoint's sidecar) when the
    network was exported from the current checkpoint; None otherwise, or without ONNX
    Runtime."""
    import importlib.util

    folder = run_dir / "checkpoints"
    path, sidecar, weights = folder / NETWORK, folder / "best.json", folder / "best.safetensors"
    if not (path.is_file() and sidecar.is_file() and weights.is_file()
            and importlib.util.find_spec("onnxruntime")):
        return None
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
        session = onnx_session(path, threads)
    except (DataError, ValueError, OSError):  # unreadable or cut short: the other paths decide
        return None
    check_written_by_us(meta, sidecar)  # a newer imclass's run: refused as the eager path does
    tag = session.get_modelmeta().custom_metadata_map.get(NETWORK_TAG)
    if tag != _sha256(sidecar) or meta.get("weights_sha256") != _sha256(weights):
        return None
    return session, meta


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_traced(run_dir: Path, device: str = "auto") -> Predictor | None:
    """The run's traced model (see TRACED) when the checkpoint is the one it was traced from:
    the sidecar unchanged and the weights matching it. Otherwise None, and the eager path
    loads the run (and names whatever is wrong with it)."""
    folder = run_dir / "checkpoints"
    path, sidecar, weights = folder / TRACED, folder / "best.json", folder / "best.safetensors"
    if not (path.is_file() and sidecar.is_file() and weights.is_file()):
        return None
    import torch

    from imclass.devices import resolve_device
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
        extra = {"sidecar_sha256": ""}
        dev = resolve_device(device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation
            module = torch.jit.load(str(path), map_location=dev, _extra_files=extra)
    except Exception:  # noqa: BLE001 - unreadable or cut short: the eager path decides
        return None
    check_written_by_us(meta, sidecar)  # a newer imclass's run: refused as the eager path does
    tag = extra["sidecar_sha256"]
    if ((tag.decode() if isinstance(tag, bytes) else tag) != _sha256(sidecar)
            or meta.get("weights_sha256") != _sha256(weights)):
        return None
    return Predictor(run_contract(run_dir, meta), torch_forward(module, dev), "torch",
                     str(run_dir))


def onnx_of_run(run_dir: Path) -> Path:
    """The run's model.onnx, exported now when missing or older than its best checkpoint."""
    onnx_file = run_dir / "model.onnx"
    best = run_dir / "checkpoints" / "best.safetensors"
    if not onnx_file.is_file() or (best.is_file() and
                                   best.stat().st_mtime > onnx_file.stat().st_mtime):
        from imclass.exporters import write
        module, contract = pixel_model_of_run(run_dir, device="cpu")
        write(module, contract, onnx_file, "onnx")
    return onnx_file


def onnx_session(path: Path, threads: int | None = None):
    ort = need("onnxruntime", "onnx", f"running {path.name} with ONNX Runtime")

    options = ort.SessionOptions()
    # no busy-waiting between calls: the threads decoding the next batch need those cores
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                 if p in ort.get_available_providers()]
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own untyped errors for a bad file
        raise DataError(f"{path} is not a readable ONNX model ({str(exc).splitlines()[0]})"
                        ) from None


def load_onnx(path: Path, threads: int | None = None) -> Predictor:
    session = onnx_session(path, threads)
    contract = Contract.from_metadata(session.get_modelmeta().custom_metadata_map, str(path))
    return Predictor(contract, onnx_forward(session), "onnx", str(path))


def onnx_forward(session) -> Forward:
    """The probabilities: a model's first output (a run's own network adds its features)."""
    input_name, output = session.get_inputs()[0].name, session.get_outputs()[0].name

    def forward(pixels: np.ndarray) -> np.ndarray:
        return session.run([output], {input_name: pixels})[0]
    return forward


def load_torch_file(path: Path, device: str = "auto") -> Predictor:
    """A TorchScript (.ts) or torch.export (.pt2) file written by imclass export."""
    import torch

    from imclass.devices import resolve_device
    dev = resolve_device(device)
    extra = {"imclass.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation note
        try:
            if path.suffix == ".ts":
                module, backend = torch.jit.load(str(path), map_location=dev,
                                                 _extra_files=extra), "torchscript"
            else:
                module = torch.export.load(str(path), extra_files=extra).module()
                if dev.type != "cpu":
                    module = module.to(dev)
                backend = "torch-export"
        except Exception as exc:  # torch raises RuntimeError, zipfile or pickle-free serde errors
            raise DataError(f"{path} is not a readable model file ({str(exc).splitlines()[0]})"
                            ) from None
    try:
        props = json.loads(extra["imclass.json"] or "{}")
    except json.JSONDecodeError:
        raise DataError(f"{path}: its imclass.json is not valid JSON") from None
    contract = Contract.from_metadata(props, str(path))
    return Predictor(contract, torch_forward(module, dev), backend, str(path))
