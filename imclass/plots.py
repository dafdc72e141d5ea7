"""Every figure of a run, drawn headless with matplotlib and saved as PNG."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def pyplot():
    import matplotlib
    matplotlib.use("Agg")  # headless: no display needed
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path: Path, tight: bool = True) -> Path:
    """`tight`: let matplotlib fit the margins to the text (a draw of its own: a quarter of a
    second on a grid of 40 images); grids lay themselves out with `grid_margins` instead."""
    if tight:
        fig.tight_layout(rect=(0, 0, 1, 0.97) if fig._suptitle else (0, 0, 1, 1))
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path


def grid_margins(fig, title_in: float = 0.45, caption_in: float = 0.4) -> None:
    """Fixed margins for a grid of captioned images, in inches: `title_in` above the grid for
    the figure's title, `caption_in` above each row for its captions (two lines at 8 pt)."""
    height = fig.get_size_inches()[1]
    rows = fig.axes[0].get_subplotspec().get_gridspec().nrows if fig.axes else 1
    top = title_in + caption_in  # inches from the figure's top edge to the first row's images
    cell = (height - top - 0.05) / rows + caption_in  # inches per row, caption included
    if fig._suptitle:
        fig._suptitle.set_y(1 - 0.08 / height)  # matplotlib's 0.98 is half an inch on a tall grid
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.05 / height, top=1 - top / height,
                        wspace=0.08, hspace=caption_in / max(cell - caption_in, 0.1))


def curves(history: list[dict], path: Path) -> Path:
    """Loss and accuracy per epoch, train and validation (when the run had it); the best
    epoch marked (the row whose "best" is true; else the lowest validation loss)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    epochs = [h["epoch"] for h in history]
    validated = [h for h in history if not math.isnan(h["val_loss"])]
    marked = [h for h in history if h.get("best")]
    best = int((marked or [min(validated, key=lambda h: h["val_loss"])])[0]["epoch"]) \
        if validated else None
    for ax, key, title in ((axes[0], "loss", "loss"), (axes[1], "acc", "accuracy")):
        ax.plot(epochs, [h[f"train_{key}"] for h in history], "o-", label="train")
        if validated:
            ax.plot(epochs, [h[f"val_{key}"] for h in history], "o-", label="validation")
        if best is not None:
            ax.axvline(best, color="grey", linestyle="--", linewidth=1, label=f"best (epoch {best})")
        for h, prev in zip(history[1:], history):  # fine-tuning: where a new stage begins
            if h.get("stage", 1) != prev.get("stage", 1):
                ax.axvline(h["epoch"] - 0.5, color="tab:green", linestyle=":",
                           label=f"stage {int(h['stage'])} starts")
        ax.set(title=title, xlabel="epoch")
        ax.legend()
        ax.grid(alpha=0.3)
    axes[2].plot(epochs, [h["lr"] for h in history], "o-", color="tab:purple")
    axes[2].set(title="learning rate at epoch start", xlabel="epoch")
    axes[2].grid(alpha=0.3)
    return save_figure(fig, path)


def confusion(matrix: np.ndarray, class_names, path: Path, normalize: bool) -> Path:
    """Rows are true classes, columns predicted; normalized rows sum to 1 (recall on the diagonal)."""
    plt = pyplot()
    m = matrix.astype(float)
    if normalize:
        m = m / np.maximum(m.sum(1, keepdims=True), 1)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.65 * k, 0.6 + 0.6 * k))
    im = ax.imshow(m, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set(xlabel="predicted", ylabel="true",
           title="confusion matrix" + (" (row-normalized)" if normalize else " (counts)"))
    threshold = m.max() / 2
    for i in range(k):
        for j in range(k):
            text = f"{m[i, j]:.2f}" if normalize else f"{int(m[i, j])}"
            ax.text(j, i, text, ha="center", va="center", fontsize=7,
                    color="white" if m[i, j] > threshold else "black")
    return save_figure(fig, path)


def roc(curves_per_class, aucs, averaged: dict, class_names, path: Path) -> Path:
    """One-vs-rest ROC curve per class with its AUC, and the micro and macro averages."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    for name, curve, auc in zip(class_names, curves_per_class, aucs):
        if curve is not None:
            ax.plot(curve[0], curve[1], label=f"{name} (AUC {auc:.3f})", linewidth=1.0)
    for kind, style in (("micro", "--"), ("macro", "-.")):
        if kind in averaged:
            fpr, tpr, auc = averaged[kind]
            ax.plot(fpr, tpr, style, color="black", linewidth=2,
                    label=f"{kind}-average (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate",
           title="ROC, one class vs the rest", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def precision_recall(curves_per_class, aps, class_names, path: Path) -> Path:
    """One-vs-rest precision-recall curve per class with its average precision (AP)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    for name, curve, ap in zip(class_names, curves_per_class, aps):
        if curve is not None:
            ax.plot(curve[0], curve[1], label=f"{name} (AP {ap:.3f})", linewidth=1.0)
    ax.set(xlabel="recall", ylabel="precision", title="precision-recall, one class vs the rest",
           xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def reliability(bins: list[dict], ece: float, path: Path) -> Path:
    """Reliability diagram: accuracy against confidence per bin; the diagonal is perfect."""
    plt = pyplot()
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5.5, 6), sharex=True,
                                   gridspec_kw={"height_ratios": [3, 1]})
    centres = [(b["low"] + b["high"]) / 2 for b in bins]
    width = bins[0]["high"] - bins[0]["low"] if bins else 0.1
    ax.bar(centres, [b["accuracy"] for b in bins], width=width * 0.9, color="tab:blue",
           edgecolor="black", label="accuracy")
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o", color="tab:red",
            label="mean confidence")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.set(ylabel="accuracy", title=f"calibration (ECE {ece:.3f})", ylim=(0, 1))
    ax.legend(fontsize=8, loc="upper left")
    hist.bar(centres, [b["count"] for b in bins], width=width * 0.9, color="grey")
    hist.set(xlabel="confidence of the predicted class", ylabel="images", xlim=(0, 1))
    return save_figure(fig, path)


def _show(ax, img: np.ndarray, title: str, wrong: bool, heat: np.ndarray | None = None) -> None:
    """One uint8 [C, H, W] image with a title; a red frame when the prediction is wrong."""
    ax.imshow(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0),
              cmap="gray" if img.shape[0] == 1 else None, vmin=0, vmax=255)
    if heat is not None:
        ax.imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1)
    ax.set_title(title, fontsize=8, color="red" if wrong else "black")
    ax.set_xticks([]), ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set(color="red" if wrong else "white", linewidth=3 if wrong else 0)


def gallery(images: np.ndarray, labels: np.ndarray, probs: np.ndarray, predicted: np.ndarray,
            class_names, indices: np.ndarray, title: str, path: Path,
            heat: np.ndarray | None = None) -> Path:
    """The chosen images with true and decided label (`predicted`, as the metrics count it)
    and its probability; with `heat`, each beside its heatmap overlay."""
    captions = [f"true: {class_names[labels[i]]}\npred: {class_names[predicted[i]]} "
                f"{probs[i, predicted[i]]:.0%}" for i in indices]
    return captioned_grid(images, indices, captions, [predicted[i] != labels[i] for i in indices],
                          title, path, heat=heat)


def captioned_grid(images: np.ndarray, indices, captions: list[str], wrong: list[bool],
                   title: str, path: Path, columns: int = 8,
                   heat: np.ndarray | None = None) -> Path:
    """Images `indices` of uint8 [N, C, H, W] in a grid, each with its caption, a red frame
    where `wrong`; with `heat` ([len(indices), H, W] in [0, 1]), each image is shown beside
    its heatmap overlay."""
    plt = pyplot()
    per_item = 2 if heat is not None else 1
    rows = max(1, -(-len(indices) * per_item // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.75 * columns, 2.3 * rows + 0.4),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for n, (i, text, bad) in enumerate(zip(indices, captions, wrong)):
        cell = axes.flat[n * per_item]
        cell.axis("on")
        _show(cell, images[i], text, bad)
        if heat is not None:
            axes.flat[n * per_item + 1].axis("on")
            _show(axes.flat[n * per_item + 1], images[i], "Grad-CAM", bad, heat[n])
    if not len(indices):
        axes.flat[0].text(0.5, 0.5, "none", ha="center", va="center")
    fig.suptitle(title, fontsize=11)
    grid_margins(fig)
    return save_figure(fig, path, tight=False)


def label_confusions(truth: np.ndarray, decided: np.ndarray, class_names, path: Path,
                     columns: int = 5) -> Path:
    """Multilabel: one 2x2 confusion matrix per label (rows true absent/present, columns
    decided absent/present, each label at its own threshold)."""
    from sklearn.metrics import multilabel_confusion_matrix

    plt = pyplot()
    matrices = multilabel_confusion_matrix(truth, decided)
    columns = min(columns, len(class_names))
    rows = -(-len(class_names) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.3 * columns, 2.3 * rows + 0.5),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, name, m in zip(axes.flat, class_names, matrices):
        ax.axis("on")
        ax.imshow(m / max(m.sum(), 1), cmap="Blues", vmin=0, vmax=1)
        for (r, c), count in np.ndenumerate(m):
            ax.text(c, r, str(count), ha="center", va="center", fontsize=9,
                    color="white" if m[r, c] > m.sum() / 2 else "black")
        ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["no", "yes"],
               yticklabels=["no", "yes"], title=name[:24])
        ax.tick_params(labelsize=7)
    fig.supxlabel("decided", fontsize=9)
    fig.supylabel("true", fontsize=9)
    fig.suptitle("confusion matrix per label (at its threshold)", fontsize=11)
    return save_figure(fig, path)


def embedding(points: np.ndarray, labels: np.ndarray, wrong: np.ndarray, class_names,
              method: str, path: Path) -> Path:
    """Penultimate-layer features in 2-D, coloured by true class; mistakes as black crosses."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 6))
    cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    for c, name in enumerate(class_names):
        members = (labels == c) & ~wrong
        ax.scatter(points[members, 0], points[members, 1], s=6, color=cmap(c % cmap.N),
                   label=name, alpha=0.7)
    ax.scatter(points[wrong, 0], points[wrong, 1], s=14, marker="x", color="black",
               linewidths=0.8, label="misclassified")
    ax.set(title=f"test-set features ({method} of the penultimate layer)", xticks=[], yticks=[])
    ax.legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return save_figure(fig, path)


def image_grid(images: np.ndarray, title: str, path: Path, columns: int = 8) -> Path:
    """Plain images (uint8 [N, C, H, W]) in a grid, e.g. training images after augmentation."""
    plt = pyplot()
    rows = max(1, -(-len(images) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.4 * columns, 1.4 * rows + 0.4),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img in zip(axes.flat, images):
        ax.imshow(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0),
                  cmap="gray" if img.shape[0] == 1 else None, vmin=0, vmax=255)
    fig.suptitle(title, fontsize=11)
    grid_margins(fig, caption_in=0.1)
    return save_figure(fig, path, tight=False)


def prediction_grid(images: np.ndarray, labels: np.ndarray, probs: np.ndarray,
                    predicted: np.ndarray, class_names, path: Path, per_class: int = 4) -> Path:
    """A few test images per class (rows) with true and decided label; mistakes in red.

    Each row shows the first misclassified image of that class (when there is one) and then
    correct ones, so both kinds are always visible.
    """
    plt = pyplot()
    k = len(class_names)
    fig, axes = plt.subplots(k, per_class, figsize=(2.0 * per_class, 2.1 * k), squeeze=False)
    for c in range(k):
        members = np.flatnonzero(labels == c)
        wrong = members[predicted[members] != c][:1]
        right = members[predicted[members] == c][:per_class - len(wrong)]
        for ax in axes[c]:
            ax.axis("off")
        for ax, i in zip(axes[c], list(wrong) + list(right)):
            ax.axis("on")
            _show(ax, images[i], f"true: {class_names[labels[i]]}\npred: "
                  f"{class_names[predicted[i]]} {probs[i, predicted[i]]:.0%}", predicted[i] != labels[i])
    fig.suptitle("sample test predictions (red: wrong)", fontsize=11)
    grid_margins(fig)
    return save_figure(fig, path, tight=False)


def class_counts(counts: dict[str, dict[str, int]], path: Path) -> Path:
    """Images per class (multilabel: per label), one bar per split, side by side."""
    plt = pyplot()
    names = list(next(iter(counts.values())).keys())
    splits = list(counts)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * len(names) * len(splits) + 2), 3.8))
    width = 0.8 / len(splits)
    for i, split in enumerate(splits):
        ax.bar(np.arange(len(names)) + i * width, [counts[split].get(n, 0) for n in names],
               width, label=split)
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=45, ha="right")
    ax.set(ylabel="images", title="images per class and split")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def per_label_scores(per_label: dict[str, dict], path: Path) -> Path:
    """Multilabel: F1 at the tuned threshold and average precision, one pair of bars a label."""
    plt = pyplot()
    names = list(per_label)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.7 * len(names) + 2), 3.8))
    ax.bar(x - 0.2, [per_label[n]["f1"] for n in names], 0.4, label="F1 at its threshold")
    ax.bar(x + 0.2, [per_label[n]["average_precision"] or 0 for n in names], 0.4,
           label="average precision")
    ax.set_xticks(x, names, rotation=45, ha="right")
    ax.set(ylim=(0, 1.05), title="per-label scores on the test set")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def label_set_grid(images: np.ndarray, truth: np.ndarray, decided: np.ndarray, class_names,
                   path: Path, count: int = 16, columns: int = 8) -> Path:
    """Multilabel: test images with their true and predicted label sets; red when they differ.
    The wrong ones come first so both kinds are visible."""
    plt = pyplot()
    wrong = (truth != decided).any(1)
    order = np.concatenate([np.flatnonzero(wrong)[:count // 2], np.flatnonzero(~wrong)])[:count]
    rows = max(1, -(-len(order) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.9 * columns, 2.4 * rows + 0.4),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")

    def names(row):
        return ", ".join(class_names[k] for k in np.flatnonzero(row)) or "none"
    for ax, i in zip(axes.flat, order):
        ax.axis("on")
        _show(ax, images[i], f"true: {names(truth[i])}\npred: {names(decided[i])}", wrong[i])
    fig.suptitle("sample test predictions (red: label set wrong)", fontsize=11)
    return save_figure(fig, path)
