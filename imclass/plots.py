"""Every figure of a run, drawn headless with matplotlib and saved as PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # headless: no display needed
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout(rect=(0, 0, 1, 0.97) if fig._suptitle else (0, 0, 1, 1))
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def curves(history: list[dict], path: Path) -> Path:
    """Loss and accuracy per epoch, train and validation; the best epoch marked."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    epochs = [h["epoch"] for h in history]
    best = int(min(history, key=lambda h: h["val_loss"])["epoch"]) if history else None
    for ax, key, title in ((axes[0], "loss", "loss"), (axes[1], "acc", "accuracy")):
        ax.plot(epochs, [h[f"train_{key}"] for h in history], "o-", label="train")
        ax.plot(epochs, [h[f"val_{key}"] for h in history], "o-", label="validation")
        if best is not None:
            ax.axvline(best, color="grey", linestyle="--", linewidth=1, label=f"best (epoch {best})")
        ax.set(title=title, xlabel="epoch")
        ax.legend()
        ax.grid(alpha=0.3)
    axes[2].plot(epochs, [h["lr"] for h in history], "o-", color="tab:purple")
    axes[2].set(title="learning rate at epoch start", xlabel="epoch")
    axes[2].grid(alpha=0.3)
    return _save(fig, path)


def confusion(matrix: np.ndarray, class_names, path: Path, normalize: bool) -> Path:
    """Rows are true classes, columns predicted; normalized rows sum to 1 (recall on the diagonal)."""
    plt = _pyplot()
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
    return _save(fig, path)


def roc(curves_per_class, aucs, class_names, path: Path) -> Path:
    """One-vs-rest ROC curve per class with its AUC."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    for name, curve, auc in zip(class_names, curves_per_class, aucs):
        if curve is not None:
            ax.plot(curve[0], curve[1], label=f"{name} (AUC {auc:.3f})", linewidth=1.2)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate",
           title="ROC, one class vs the rest", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def prediction_grid(images: np.ndarray, labels: np.ndarray, probs: np.ndarray, class_names,
                    path: Path, per_class: int = 4) -> Path:
    """A few test images per class (rows) with true and predicted label; mistakes in red.

    Each row shows the first misclassified image of that class (when there is one) and then
    correct ones, so both kinds are always visible.
    """
    plt = _pyplot()
    k = len(class_names)
    predicted, confidence = probs.argmax(1), probs.max(1)
    fig, axes = plt.subplots(k, per_class, figsize=(2.0 * per_class, 2.1 * k), squeeze=False)
    for c in range(k):
        members = np.flatnonzero(labels == c)
        wrong = members[predicted[members] != c][:1]
        right = members[predicted[members] == c][:per_class - len(wrong)]
        chosen = list(wrong) + list(right)
        for col in range(per_class):
            ax = axes[c, col]
            ax.axis("off")
            if col >= len(chosen):
                continue
            i = chosen[col]
            img = images[i]
            ax.imshow(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0),
                      cmap="gray" if img.shape[0] == 1 else None, vmin=0, vmax=255)
            ok = predicted[i] == labels[i]
            ax.set_title(f"true: {class_names[labels[i]]}\npred: {class_names[predicted[i]]} "
                         f"{confidence[i]:.0%}", fontsize=8, color="black" if ok else "red")
            if not ok:
                ax.axis("on")
                ax.set_xticks([]), ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set(color="red", linewidth=3)
    fig.suptitle("sample test predictions (red: wrong)", fontsize=11)
    return _save(fig, path)


def write_all(folder: Path, history, labels: np.ndarray, probs: np.ndarray, test_set) -> dict:
    """Every evaluation figure into `folder`; returns name -> path."""
    from sklearn.metrics import confusion_matrix

    from imclass.metrics import auc_per_class, roc_curves

    folder.mkdir(parents=True, exist_ok=True)
    names = list(test_set.class_names)
    matrix = confusion_matrix(labels, probs.argmax(1), labels=list(range(len(names))))
    out = {}
    if history:
        out["curves"] = curves(history, folder / "curves.png")
    out["confusion"] = confusion(matrix, names, folder / "confusion.png", normalize=False)
    out["confusion_normalized"] = confusion(matrix, names, folder / "confusion_normalized.png",
                                            normalize=True)
    out["roc"] = roc(roc_curves(labels, probs), auc_per_class(labels, probs), names,
                     folder / "roc.png")
    out["predictions"] = prediction_grid(test_set.images.numpy(), labels, probs, names,
                                         folder / "predictions.png")
    return out
