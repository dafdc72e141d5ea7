"""Every view of a run makes the decisions its metrics count: a binary run's galleries and
confusion matrix at its tuned threshold, not at 0.5; a multilabel run's per-label views."""
import numpy as np
import torch

from imclass import evaluation, plots
from imclass.config import ModelConfig
from imclass.data.batches import Normalization
from imclass.data.images import ImageSet
from imclass.models import build_model
from imclass.tasks import get_task


def tiny_set(task: str, n: int = 24, k: int = 2) -> ImageSet:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 16, 16), dtype=torch.uint8, generator=g)
    labels = (torch.randint(0, 2, (n, k), generator=g).float() if task == "multilabel"
              else torch.arange(n) % k)
    return ImageSet(images, labels, tuple(f"c{i}" for i in range(k)), task=task)


def model_for(data: ImageSet, outputs: int):
    torch.manual_seed(0)
    return build_model(ModelConfig(name="cnn"), 1, outputs).eval()


def test_binary_views_and_confusion_matrix_decide_at_the_tuned_threshold(tmp_path,
                                                                         monkeypatch):
    data = tiny_set("binary")
    shown = {}
    real = plots.gallery

    def spy(images, labels, probs, predicted, names, indices, title, path, **kw):
        shown[path.name] = (np.asarray(predicted), list(indices))
        return real(images, labels, probs, predicted, names, indices, title, path, **kw)
    monkeypatch.setattr(plots, "gallery", spy)
    task = get_task("binary")
    # threshold 0: every image is decided positive, whatever the (untrained) model says
    result = evaluation.evaluate_model(model_for(data, 2), task, data, Normalization.of(data),
                                       torch.device("cpu"), tmp_path, thresholds=[0.0])
    m = result["plain"]
    negatives = np.flatnonzero(data.labels.numpy() == 0)
    assert np.asarray(m["confusion_matrix"])[:, 0].sum() == 0  # nothing decided negative
    assert m["accuracy"] == m["accuracy_at_threshold"] == 0.5
    predicted, mistakes = shown["mistakes.png"]
    assert (predicted == 1).all() and set(mistakes) <= set(negatives) and mistakes
    assert set(shown["unsure.png"][1]).isdisjoint(negatives)


def test_multilabel_runs_get_per_label_confusions_mistakes_and_gradcam(tmp_path):
    data = tiny_set("multilabel", k=3)
    task = get_task("multilabel")
    thresholds = [0.0, 0.0, 0.0]  # every label decided present: each one has an example
    evaluation.evaluate_model(model_for(data, 3), task, data, Normalization.of(data),
                              torch.device("cpu"), tmp_path, thresholds=thresholds)
    written = {p.name for p in tmp_path.iterdir()}
    assert {"label_confusion.png", "mistakes.png", "predictions.png", "gradcam.png"} <= written
    assert "confusion.png" not in written  # the single-label matrix has no multilabel form


def test_label_mistakes_are_the_surest_wrong_label_decisions():
    from imclass.interpret import label_examples, label_mistakes
    truth = np.array([[1, 0], [0, 1], [1, 1]], dtype=float)
    probs = np.array([[0.9, 0.95], [0.4, 0.2], [0.7, 0.6]])
    rows, cols = label_mistakes(truth, probs, [0.5, 0.5], 5)
    # (0,1) decided present at 0.95 though absent; (1,1) missed at 0.2: 0.45 vs 0.30 off
    assert list(zip(rows, cols)) == [(0, 1), (1, 1)]
    rows, cols = label_examples(truth, probs, [0.5, 0.5], 5)
    assert list(zip(rows, cols)) == [(0, 0), (2, 1)]  # label 0: 0.9 beats 0.7; label 1: (2,1)


def test_image_grids_keep_title_captions_and_images_apart(tmp_path, monkeypatch):
    """Grids are laid out by hand (no tight_layout): on a tall grid (ten classes, four rows
    of the gallery) the figure's title stays above every caption, and each row's captions
    above its images and below the row before."""
    data = tiny_set("multiclass", n=40, k=10)
    probs = np.full((40, 10), 0.1)
    labels = data.labels.numpy()
    predicted = (labels + np.arange(40) % 2) % 10  # every other image wrong
    figures = []
    monkeypatch.setattr(plots, "save_figure",
                        lambda fig, path, tight=True: (fig.canvas.draw(), figures.append(fig)))
    plots.prediction_grid(data.images.numpy(), labels, probs, predicted, data.class_names,
                          tmp_path / "p.png")
    plots.gallery(data.images.numpy(), labels, probs, predicted, data.class_names,
                  np.arange(32), "gallery", tmp_path / "g.png")
    for fig in figures:
        renderer = fig.canvas.get_renderer()
        title = fig._suptitle.get_window_extent(renderer)
        shown = [ax for ax in fig.axes if ax.get_title()]
        assert shown
        for ax in shown:
            caption = ax.title.get_window_extent(renderer)
            image = ax.get_window_extent(renderer)
            assert caption.y1 <= title.y0, ax.get_title()  # pixels, from the bottom
            assert caption.y0 >= image.y1 - 1, ax.get_title()
            above = [other for other in shown if other.get_window_extent(renderer).y0 > image.y1]
            for other in above:
                assert caption.y1 <= other.get_window_extent(renderer).y0 + 1
