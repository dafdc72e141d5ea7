"""Evaluate a trained model on one labelled set: the metrics and every figure of the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from imclass import interpret, plots
from imclass.config import RunConfig
from imclass.contract import flip_dims
from imclass.data.batches import Batches, Normalization
from imclass.data.images import ImageSet
from imclass.distributed import SINGLE, Dist, gather_in_order
from imclass.errors import ConfigError
from imclass.metrics import (EmbeddingTap, auc_per_class, average_precision_per_class,
                             averaged_roc, headline, pr_curves, predict_probabilities,
                             recall_line, roc_curves)
from imclass.models.folding import fold_norms
from imclass.runfolder import read_history, write_json
from imclass.training import mark_best
from imclass.two_processes import run_side_by_side

GALLERY_SIZE = 16  # images in each of the worst-mistakes and least-confident galleries
CAM_IMAGES = 8     # images with a Grad-CAM overlay: half right, half wrong
EMBED_PER_CLASS = 60  # points per class in the t-SNE view (t-SNE grows fast with points)


def predict_split(model, data: ImageSet, norm: Normalization, batch_size: int, task,
                  device: torch.device, dist: Dist = SINGLE, flips=(), shift: int = 0,
                  tap=None) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, labels) of every image of `data`, in order. In a distributed run each
    rank scores its own share (no image twice, none padded in) and all get the whole.
    `tap` (metrics.EmbeddingTap, one process) keeps some images' features on the way."""
    share = data.take(torch.as_tensor(dist.shard(len(data)))) if dist.active else data
    probs, labels = predict_probabilities(model, Batches(share, batch_size, norm, device=device),
                                          task, device, flips=flips, shift=shift, tap=tap)
    return gather_in_order(dist, probs, len(data)), gather_in_order(dist, labels, len(data))


def evaluate_model(model, task, data: ImageSet, norm: Normalization, device: torch.device,
                   folder: Path, *, history: list[dict] | None = None, flips=(), shift: int = 0,
                   tta_flips=(), batch_size: int = 1024, seed: int = 0, thresholds=None,
                   input_size: int | None = None, dist: Dist = SINGLE, network=None) -> dict:
    """Metrics of `model` on `data` ({"plain": ..., "tta": ... when tta_flips}) and the
    figures in `folder`. `flips` and `shift`: the views the model itself averages over (a run
    trained with --tta, --tta-shift), in every figure. `thresholds` (binary, multilabel) come
    from the validation split.
    Images decoded with a crop margin are centre-cropped to `input_size` first. In a
    distributed run every rank scores its share and rank 0 alone computes and draws.
    `network`: the same model exported (an ONNX Runtime session of the run's network, see
    imclass.predictor.exported_network), which then scores the images in one process;
    `model` draws the Grad-CAM figure."""
    whole = data
    data = data.center_cropped(input_size)
    tap = embedding_tap(model, task, data, seed, dist)
    if dist.active or not network_fits(network, whole, tap):
        network = None
    if len(data) and not dist.active and (network is None or tta_flips):
        # (a model trained here is folded already)
        fold_norms(model, normalized(data, range(min(2, len(data))), norm, device))
    if network is not None:
        probs, labels = score_with_network(network, whole, batch_size, tap)
    else:
        probs, labels = predict_split(model, data, norm, batch_size, task, device, dist,
                                      flips=flips, shift=shift, tap=tap)
    tta_probs = predict_split(model, data, norm, batch_size, task, device, dist,
                              flips=tta_flips)[0] if tta_flips else None
    if not dist.is_main:
        return {}
    names = list(data.class_names)
    result = {"plain": task.metrics(labels, probs, names, thresholds)}
    if tta_probs is not None:
        result["tta"] = task.metrics(labels, tta_probs, names, thresholds)
    folder.mkdir(parents=True, exist_ok=True)
    if task.name == "multilabel":
        write_multilabel_figures(folder, model, data, norm, device, labels, probs,
                                 result["plain"], history)
    else:
        predicted = task.predictions(probs, thresholds)  # the decisions the metrics count
        write_figures(folder, model, data, norm, device, labels, probs, predicted,
                      result["plain"], history, seed, batch_size, tap)
    return result


def network_fits(network, data: ImageSet, tap) -> bool:
    """Whether `network` takes `data`'s images as they are (uint8 at the decoded size; the
    network crops) and gives what `tap` keeps."""
    if network is None or not len(data):
        return False
    shape = network.get_inputs()[0].shape[1:]
    return (list(shape) == [data.channels, *data.size]
            and (tap is None or len(network.get_outputs()) >= 2))


# Images a call when ONNX Runtime scores on a CPU: Lite0's 2,000 test images at 96 px took
# 3.5 s in calls of 32 against 3.9 s in calls of 128 (the eval batch) and 3.6 s of 64, three
# runs each (an Intel Xeon, 2026-12-07); at 224 px (300 photos) all three took 3.0-3.1 s.
ORT_CPU_BATCH = 32


def score_with_network(network, data: ImageSet, batch_size: int,
                       tap: EmbeddingTap | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, labels) of every image of `data` from the exported network; `tap`
    keeps some images' features from its second output."""
    pixels_in = network.get_inputs()[0].name
    outputs = [o.name for o in network.get_outputs()][:1 if tap is None else 2]
    if "CUDAExecutionProvider" not in network.get_providers():
        batch_size = min(batch_size, ORT_CPU_BATCH)
    probs = None
    for start in range(0, len(data), batch_size):
        index = torch.arange(start, min(len(data), start + batch_size))
        out = network.run(outputs, {pixels_in: data.gather(index).cpu().numpy()})
        if probs is None:
            probs = np.empty((len(data), *out[0].shape[1:]), dtype=np.float64)
        probs[start:start + len(index)] = out[0]
        if tap is not None:
            tap.take(start, torch.from_numpy(out[1]))
    return probs, data.labels.cpu().numpy()


def embedding_tap(model, task, data: ImageSet, seed: int, dist: Dist) -> EmbeddingTap | None:
    """What the embedding figure shows (EMBED_PER_CLASS test images of each class), to keep
    from the test pass; None where that figure is not drawn or the model cannot say."""
    if task.name == "multilabel" or dist.active or not hasattr(model, "forward_with_embedding"):
        return None
    return EmbeddingTap(interpret.sample_per_class(data.labels.cpu().numpy(), EMBED_PER_CLASS,
                                                     seed))


def evaluate_split(run_dir: Path, model, task, data: ImageSet, norm, cfg: RunConfig,
                   device: torch.device, log, *, split: str = "test", tta: bool = False,
                   thresholds=None, input_size: int | None = None, dist: Dist = SINGLE,
                   network=None) -> dict:
    """A run's model on one labelled split: its metrics into the run's metrics.json under
    `split` (and `split`_tta), its figures under plots/ (plots/<split>/ for val), a console line.
    A run trained with --tta is scored with its flips, as predict scores it; `tta` then adds
    nothing."""
    in_model = model_flips(cfg)
    flips = tta_flips(cfg) if tta and not in_model else ()
    folder = run_dir / "plots" if split == "test" else run_dir / "plots" / split
    history = (mark_best(read_history(run_dir), cfg.train)
               if split == "test" and not curves_current(run_dir) else None)
    result = evaluate_model(model, task, data, norm, device, folder, history=history,
                            flips=in_model, shift=model_shift(cfg), tta_flips=flips,
                            batch_size=cfg.train.eval_batch_size,
                            seed=cfg.train.seed, thresholds=thresholds,
                            input_size=input_size, dist=dist,
                            network=network)
    if not dist.is_main:
        return result
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    for m in result.values():
        m["source"] = data.source
    metrics[split] = result["plain"]
    metrics.pop(f"{split}_tta", None)
    if "tta" in result:
        metrics[f"{split}_tta"] = result["tta"]
    write_json(metrics_path, metrics)
    plain = f"{split} with its test-time flips" if in_model else split
    for key, m in ((plain, result["plain"]), (f"{split} with TTA", result.get("tta"))):
        if m:
            log(f"{key}: {headline(m)} on {m['count']} images")
    log(f"{split} {recall_line(result['plain'])}")
    return result


def curves_current(run_dir: Path) -> bool:
    """Whether plots/curves.png was drawn from the run's history as it is now (evaluating a
    finished run again need not redraw it)."""
    curves, history = run_dir / "plots" / "curves.png", run_dir / "history.csv"
    return (curves.is_file() and history.is_file()
            and curves.stat().st_mtime_ns >= history.stat().st_mtime_ns)


def tta_flips(cfg: RunConfig) -> tuple[int, ...]:
    """The flips the model was trained to be indifferent to: only those are fair at test time."""
    flips = flip_dims(cfg.augment.hflip_p, cfg.augment.vflip_p)
    if not flips:
        raise ConfigError("--tta averages over the flips the run was trained with, and this "
                          "run used none; train with --hflip-p or --vflip-p above 0")
    return flips


def model_flips(cfg: RunConfig) -> tuple[int, ...]:
    """The flips a run's model averages over wherever it predicts: its training flips when
    trained with --tta (imclass.contract.test_time_flips, from the same config), else none."""
    return tta_flips(cfg) if cfg.train.tta else ()


def model_shift(cfg: RunConfig) -> int:
    """The px a run's model moves each image by at test time (--tta-shift;
    imclass.contract.test_time_shift, from the same config). Moves are fair only where
    training moved images, so a run whose augmentation did not is refused."""
    if cfg.train.tta_shift and not (cfg.augment.shift_p and cfg.augment.shift):
        raise ConfigError(f"--tta-shift {cfg.train.tta_shift} averages over moved images, and "
                          "this run's augmentation moves none; train with --shift-p and "
                          "--shift above 0, or leave --tta-shift at 0")
    return cfg.train.tta_shift


def write_multilabel_figures(folder: Path, model, data: ImageSet, norm, device,
                             labels: np.ndarray, probs: np.ndarray, metrics: dict,
                             history) -> None:
    """Curves, per-label ROC and PR, per-label scores, and the single-label views per label,
    each label decided at its threshold as the metrics count it: confusion matrices, sample
    label sets, the surest wrong label decisions, Grad-CAM of a few labels. (Calibration of
    the top class and the class-coloured embedding have no multilabel form.)"""
    names = list(data.class_names)
    images = Pixels(data)
    thresholds = metrics["thresholds"]
    if history:
        plots.curves(history, folder / "curves.png")
    plots.roc(roc_curves(labels, probs), auc_per_class(labels, probs),
              averaged_roc(labels, probs), names, folder / "roc.png")
    plots.precision_recall(pr_curves(labels, probs), average_precision_per_class(labels, probs),
                           names, folder / "pr.png")
    plots.per_label_scores(metrics["per_class"], folder / "labels.png")
    decided = probs >= np.asarray(thresholds)[None, :]
    plots.label_confusions(labels > 0.5, decided, names, folder / "label_confusion.png")
    plots.label_set_grid(images, labels > 0.5, decided, names, folder / "predictions.png")
    rows, cols = interpret.label_mistakes(labels, probs, thresholds, GALLERY_SIZE)
    plots.captioned_grid(images, rows, [
        f"{names[k]}: {'false positive' if probs[i, k] >= thresholds[k] else 'missed'}\n"
        f"{probs[i, k]:.0%} (threshold {thresholds[k]:.0%})" for i, k in zip(rows, cols)],
        [True] * len(rows),
        "worst label mistakes: wrong with the highest confidence", folder / "mistakes.png")
    rows, cols = interpret.label_examples(labels, probs, thresholds, CAM_IMAGES)
    if len(rows):
        heat = interpret.gradcam(model, normalized(data, rows, norm, device),
                                 torch.as_tensor(cols, device=device))
        plots.captioned_grid(images, rows, [f"{names[k]} {probs[i, k]:.0%}"
                                            for i, k in zip(rows, cols)], [False] * len(rows),
                             "where the model looked for each label (Grad-CAM)",
                             folder / "gradcam.png", heat=heat)


def write_figures(folder: Path, model, data: ImageSet, norm, device, labels: np.ndarray,
                  probs: np.ndarray, predicted: np.ndarray, metrics: dict, history,
                  seed: int, batch_size: int = 256, tap: EmbeddingTap | None = None) -> None:
    """Every single-label figure; each view shows the decisions `predicted` that the
    metrics count (a binary run's at its tuned threshold). `tap`: the embedding figure's
    features, kept from the test pass (else scored again)."""
    names = list(data.class_names)
    images = Pixels(data)
    matrix = np.array(metrics["confusion_matrix"])
    # two halves of about equal drawing time; the model's figures stay in this process
    summaries = [
        lambda: history and plots.curves(history, folder / "curves.png"),
        lambda: plots.confusion(matrix, names, folder / "confusion.png", normalize=False),
        lambda: plots.confusion(matrix, names, folder / "confusion_normalized.png",
                                normalize=True),
        lambda: plots.roc(roc_curves(labels, probs), auc_per_class(labels, probs),
                          averaged_roc(labels, probs), names, folder / "roc.png"),
        lambda: plots.precision_recall(pr_curves(labels, probs),
                                       average_precision_per_class(labels, probs), names,
                                       folder / "pr.png"),
        lambda: plots.reliability(metrics["calibration"], metrics["ece"],
                                  folder / "calibration.png"),
        lambda: plots.prediction_grid(images, labels, probs, predicted, names,
                                      folder / "predictions.png")]
    examples = [
        lambda: plots.gallery(images, labels, probs, predicted, names,
                              interpret.worst_mistakes(labels, probs, GALLERY_SIZE, predicted),
                              "worst mistakes: wrong with the highest confidence",
                              folder / "mistakes.png"),
        lambda: plots.gallery(images, labels, probs, predicted, names,
                              interpret.least_confident_right(labels, probs, GALLERY_SIZE,
                                                              predicted),
                              "least confident right answers", folder / "unsure.png"),
        lambda: _heatmaps(folder / "gradcam.png", model, data, norm, device, labels, probs,
                          predicted),
        lambda: _embedding(folder / "embedding.png", model, data, norm, device, labels,
                           predicted, seed, batch_size, tap)]
    run_side_by_side(summaries, examples)


def _heatmaps(path: Path, model, data: ImageSet, norm, device, labels, probs,
              predicted) -> None:
    """Grad-CAM for the decided class over a few right and a few wrong test images."""
    half = CAM_IMAGES // 2
    right = np.flatnonzero(predicted == labels)
    right = right[interpret.sample_per_class(labels[right], 1, seed=0)][:half]  # distinct classes
    chosen = np.concatenate([right, interpret.worst_mistakes(labels, probs, half, predicted)]
                            ).astype(int)
    targets = torch.as_tensor(predicted[chosen], device=device)
    heat = interpret.gradcam(model, normalized(data, chosen, norm, device), targets)
    plots.gallery(Pixels(data), labels, probs, predicted, list(data.class_names), chosen,
                  "where the model looked (Grad-CAM of the predicted class)", path, heat=heat)


class Pixels:
    """A set's images by position as uint8 numpy [C, H, W], each gathered (resized, cropped)
    when a figure asks for it: the galleries show a few dozen images of a split they never
    hold whole."""

    def __init__(self, data: ImageSet):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, position) -> np.ndarray:
        return self.data.pixels(position)


def normalized(data: ImageSet, rows, norm: Normalization, device) -> torch.Tensor:
    """The model's input for a few images of `data` (float, normalised, on `device`)."""
    pixels = data.gather(torch.as_tensor(np.asarray(rows), dtype=torch.long))
    return norm.apply(pixels.to(device).float().div(255))


def _embedding(path: Path, model, data: ImageSet, norm, device, labels, predicted,
               seed, batch_size: int, tap: EmbeddingTap | None = None) -> None:
    chosen = interpret.sample_per_class(labels, EMBED_PER_CLASS, seed)
    if tap is not None and np.array_equal(tap.rows, chosen):
        features = tap.features
    else:
        subset = data.take(torch.as_tensor(chosen))
        features = interpret.embeddings(model, Batches(subset, batch_size, norm, device=device))
    points, method = interpret.project_2d(features, seed)
    wrong = predicted[chosen] != labels[chosen]
    plots.embedding(points, labels[chosen], wrong, list(data.class_names), method, path)
