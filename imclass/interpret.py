"""What the model looked at and how it sees the data: Grad-CAM (captum), penultimate-layer
embeddings projected to 2-D (scikit-learn), and the choice of images worth showing."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def cam_layer(model: nn.Module, input_shape: tuple[int, int, int], min_side: int = 7) -> nn.Module:
    """The deepest conv layer whose output is still at least `min_side` pixels a side: deeper
    layers see more, but a 3x3 map says little about where in a 28x28 image the evidence is."""
    sides: dict[nn.Module, int] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out: sides.__setitem__(mod, out.shape[-1]))
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *input_shape, device=next(model.parameters()).device))
    model.train(was_training)
    for h in hooks:
        h.remove()
    convs = list(sides)
    wide = [m for m in convs if sides[m] >= min(min_side, input_shape[-1])]
    return (wide or convs)[-1]


def gradcam(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    """Grad-CAM maps [N, H, W] in [0, 1] for class `targets`, upsampled to the input size."""
    from captum.attr import LayerAttribution, LayerGradCam

    model.eval()
    layer = cam_layer(model, tuple(x.shape[1:]))
    attr = LayerGradCam(model, layer).attribute(x, target=targets, relu_attributions=True)
    maps = LayerAttribution.interpolate(attr, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    maps = maps.detach()[:, 0].cpu().numpy()
    peak = maps.reshape(len(maps), -1).max(1).reshape(-1, 1, 1)
    return np.where(peak > 0, maps / np.maximum(peak, 1e-12), 0.0)


@torch.no_grad()
def embeddings(model: nn.Module, batches) -> np.ndarray:
    """Penultimate-layer features [N, D] (the input of the classification head)."""
    model.eval()
    return torch.cat([model.embed(x).float().cpu() for x, _ in batches]).numpy()


def project_2d(features: np.ndarray, seed: int = 0) -> tuple[np.ndarray, str]:
    """t-SNE of the features (PCA to 50 dimensions first, as is usual), or PCA alone for
    fewer than 50 points; returns the points and the method's name."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    if len(features) < 50:
        return PCA(n_components=2, random_state=seed).fit_transform(features), "PCA"
    reduced = PCA(n_components=min(50, features.shape[1], len(features)),
                  random_state=seed).fit_transform(features)
    # 500 iterations, not sklearn's 1,000: the view of a few hundred points has settled by
    # then, and the run's report waits a second less (t-SNE was a quarter of its figures).
    tsne = TSNE(n_components=2, init="pca", perplexity=min(30, len(features) // 4),
                max_iter=500, random_state=seed)
    return tsne.fit_transform(reduced), "t-SNE"


def sample_per_class(labels: np.ndarray, per_class: int, seed: int = 0) -> np.ndarray:
    """Up to `per_class` random indices of each class, seeded, sorted."""
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:per_class]
              for c in np.unique(labels)]
    return np.sort(np.concatenate(chosen)) if chosen else np.array([], dtype=int)


def confidence(probs: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Each image's probability of the class it was decided to be (for a binary run at its
    tuned threshold that need not be the larger of the two)."""
    return probs[np.arange(len(probs)), predicted]


def worst_mistakes(labels: np.ndarray, probs: np.ndarray, n: int,
                   predicted: np.ndarray) -> np.ndarray:
    """Wrong decisions (`predicted`, as the metrics count them), most confident first."""
    wrong = np.flatnonzero(predicted != labels)
    return wrong[np.argsort(-confidence(probs, predicted)[wrong], kind="stable")][:n]


def least_confident_right(labels: np.ndarray, probs: np.ndarray, n: int,
                          predicted: np.ndarray) -> np.ndarray:
    """Right decisions, least confident first."""
    right = np.flatnonzero(predicted == labels)
    return right[np.argsort(confidence(probs, predicted)[right], kind="stable")][:n]


def label_mistakes(truth: np.ndarray, probs: np.ndarray, thresholds, n: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Multilabel: (image, label) index pairs of wrong label decisions, the surest first: a
    label decided present though absent, or absent though present, farthest from its
    threshold."""
    t = np.asarray(thresholds, dtype=float)
    rows, cols = np.nonzero((probs >= t[None, :]) != (truth > 0.5))
    order = np.argsort(-np.abs(probs[rows, cols] - t[cols]), kind="stable")[:n]
    return rows[order], cols[order]


def label_examples(truth: np.ndarray, probs: np.ndarray, thresholds, n: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Multilabel, for Grad-CAM: per label (the most frequent first, up to `n` labels) the
    image where it is present and found with the highest probability."""
    found = (truth > 0.5) & (probs >= np.asarray(thresholds, dtype=float)[None, :])
    labels = [k for k in np.argsort(-(truth > 0.5).sum(0), kind="stable") if found[:, k].any()]
    rows = [int(np.flatnonzero(found[:, k])[probs[found[:, k], k].argmax()]) for k in labels[:n]]
    return np.array(rows, dtype=int), np.array(labels[:n], dtype=int)
