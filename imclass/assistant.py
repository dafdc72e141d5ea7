"""The model that helps a person label (`imclass annotate`): it learns from the labels given so
far, in a background thread, and scores every image, so the page can suggest a label with its
confidence, show the images it is least sure of first (active learning) and list the labels
it doubts (a review queue).

Two learners, chosen as the folder recipe chooses (imclass.recipe):
- photos (median shortest edge >= PHOTO_MIN_EDGE): the pretrained EfficientNet-Lite0's
  features of every image, computed once, and a logistic regression on those of the labelled
  images (scikit-learn; a fit on a few hundred labels takes well under a second), the "fixed
  feature extractor" that issue 29 measured at 94.8% on the ants/bees photos;
- small images: our CNN from scratch on the labelled images, with the scratch recipe for
  that many images (ImageNet features of 28 px images are weak: on 2,000 Fashion-MNIST labels
  a logistic regression on Lite0's features at 64 px reached 83.3%, below the CNN).
Either way `fit_predict(train, targets, classes, predict)` returns probabilities for the
`predict` images of the pool; `out_of_fold` gives each labelled image's probabilities from
models that did not see it, from which the review queue is ranked (cleanlab's confident
learning, as `imclass labels`). From CNN_FROM_LABELS on, the small-image learner also trains on
the last model's surest guesses of unlabelled images (self-training, `surest_guesses`).
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from imclass.config import ModelConfig, RunConfig, override, resolve
from imclass.data import labels as label_mod
from imclass.data.augment import build_augment
from imclass.data.batches import Batches, Normalization
from imclass.data.decode import median_short_edge
from imclass.data.images import ImageSet
from imclass.evaluation import predict_split
from imclass.features import embed_all
from imclass.label_issues import SURE_OTHER
from imclass.models import build_model
from imclass.models.weights import load_pretrained, resolve_architecture
from imclass.models.zoo import build_timm, input_spec
from imclass.recipe import PHOTO_MIN_EDGE, DataFacts, scratch_side, scratch_values
from imclass.tasks import get_task
from imclass.training import fit, weight_average

MIN_PER_CLASS = 5  # labels each class needs before a model is trained (multilabel: positives)
REFIT_GROWTH = 0.1  # a new model once the labels grew by this share (and by at least one)
RANDOM_SHARE = 0.2  # of the active order: every fifth image is drawn at random, not the least
#                     sure, so the model also sees what it wrongly believes it knows
PHOTO_SIDE = 224  # px: Lite0's own input side, for the feature learner
REVIEW_FOLDS = 5


def least_sure(probs: np.ndarray, multilabel: bool) -> np.ndarray:
    """Uncertainty of each row, higher = less sure: 1 - (top probability - second) for one
    label per image (margin sampling), 1 - the distance of the most doubtful label from 0.5
    x 2 for several."""
    if multilabel:
        return 1 - 2 * np.abs(probs - 0.5).min(1)
    top2 = np.sort(probs, 1)[:, -2:]
    return 1 - (top2[:, 1] - top2[:, 0])


def active_order(candidates: np.ndarray, uncertainty: np.ndarray, seed: int,
                 random_share: float = RANDOM_SHARE) -> np.ndarray:
    """`candidates` (pool indices) least sure first, with every 1/random_share-th place given
    to a random one of the rest."""
    by_doubt = candidates[np.argsort(-uncertainty[candidates], kind="stable")]
    if not random_share or len(candidates) < 2:
        return by_doubt
    shuffled = np.random.default_rng(seed).permutation(candidates)
    every = max(2, round(1 / random_share))
    out, taken, ends = [], set(), [0, 0]  # next unread place in by_doubt, in shuffled
    for place in range(len(candidates)):
        source, k = (shuffled, 1) if place % every == every - 1 else (by_doubt, 0)
        while source[ends[k]] in taken:
            ends[k] += 1
        out.append(source[ends[k]])
        taken.add(out[-1])
    return np.array(out, dtype=int)


class FeatureLearner:
    """Logistic regression on the pretrained Lite0's pooled features of every image."""
    name = "logistic regression on EfficientNet-Lite0's ImageNet features"

    def __init__(self, pixels: torch.Tensor, multilabel: bool, seed: int = 0,
                 side: int | None = None):
        cfg = ModelConfig(name="efficientnet_lite0", pretrained=True)
        architecture, source = resolve_architecture(cfg)
        model = build_timm(cfg, pixels.shape[1], 2, architecture)
        load_pretrained(model, cfg, source)
        spec = input_spec(architecture)
        norm = Normalization(spec.mean, spec.std) if pixels.shape[1] == 3 else Normalization(
            (sum(spec.mean) / 3,), (sum(spec.std) / 3,))
        pool = ImageSet(pixels, torch.zeros(len(pixels), dtype=torch.long), ("?",), side=side)
        self.features = embed_all(model, Batches(pool, 64, norm))[0].numpy()
        self.multilabel, self.seed = multilabel, seed

    def _model(self):
        from sklearn.linear_model import LogisticRegression
        from sklearn.multiclass import OneVsRestClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        # C 0.1: a strong L2 pull for a few labels in 1,280 dimensions
        lr = LogisticRegression(C=0.1, max_iter=500)
        return make_pipeline(StandardScaler(), OneVsRestClassifier(lr) if self.multilabel
                             else lr)

    def fit_predict(self, train: np.ndarray, targets: np.ndarray, classes: int,
                    predict: np.ndarray) -> np.ndarray:
        model = self._model().fit(self.features[train], targets)
        probs = model.predict_proba(self.features[predict])
        if self.multilabel:
            return probs
        out = np.zeros((len(predict), classes), np.float32)
        out[:, model.classes_] = probs  # a class with no label yet gets no probability
        return out


class CnnLearner:
    """Our CNN from scratch on the labelled images, the scratch recipe for that many."""
    name = "our CNN from scratch"

    def __init__(self, pixels: torch.Tensor, multilabel: bool, seed: int = 0):
        self.pixels, self.multilabel, self.seed = pixels, multilabel, seed
        self.task = get_task("multilabel" if multilabel else "multiclass")

    def config(self, images: int, classes: int, smallest: int) -> RunConfig:
        facts = DataFacts(images, classes, smallest, self.pixels.shape[1],
                          self.pixels.shape[-1])
        values = {k: v for k, v in scratch_values(facts, "cpu").items() if k != "image_size"}
        return resolve(override(RunConfig(), {**values, "seed": self.seed}))

    def fit_predict(self, train: np.ndarray, targets: np.ndarray, classes: int,
                    predict: np.ndarray) -> np.ndarray:
        labels = torch.as_tensor(targets, dtype=torch.float32 if self.multilabel
                                 else torch.long)
        names = tuple(str(k) for k in range(classes))
        task = "multilabel" if self.multilabel else "multiclass"
        train_set = ImageSet(self.pixels, labels, names, rows=torch.as_tensor(train), task=task)
        counts = [c for c in train_set.class_counts() if c] or [1]
        cfg = self.config(len(train), classes, min(counts))
        t = cfg.train
        torch.manual_seed(self.seed)
        shape = tuple(self.pixels.shape[1:])
        model = build_model(cfg.model, shape[0], classes).to(memory_format=torch.channels_last)
        norm = Normalization.of(train_set)
        batches = Batches(train_set, t.batch_size, norm, shuffle=True, seed=self.seed,
                          augment=build_augment(cfg.augment, shape, shape[-1]),
                          drop_last=len(train) > t.batch_size)
        ema = weight_average(model, t.ema)
        fit(model, batches, None, self.task.loss(t.loss, t.label_smoothing), t,
            torch.device("cpu"), [], hits=self.task.hits, ema=ema)
        scored = model if ema is None else ema.module
        blank = (torch.zeros(len(predict), classes) if self.multilabel
                 else torch.zeros(len(predict), dtype=torch.long))
        pool = ImageSet(self.pixels, blank, names, rows=torch.as_tensor(predict), task=task)
        return predict_split(scored, pool, norm, 512, self.task, torch.device("cpu"))[0]


class Averaged:
    """The mean of several learners' probabilities: on small images our CNN and the
    features' logistic regression err differently (on Fashion-MNIST, 500 random labels: CNN
    80.1%, the two averaged 82.9%; 500 labels in the active order: 84.5% against 85.3%)."""

    def __init__(self, *learners, self_training: bool = False):
        self.learners, self.self_training = learners, self_training
        self.name = " and ".join(learner.name for learner in learners) + ", averaged"

    def fit_predict(self, train: np.ndarray, targets: np.ndarray, classes: int,
                    predict: np.ndarray) -> np.ndarray:
        return np.mean([learner.fit_predict(train, targets, classes, predict)
                        for learner in self.learners], axis=0)


def surest_guesses(probs: np.ndarray, labelled: np.ndarray, most: int, seed: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Self-training: unlabelled rows the last model put in a class with at least GUESS_SURE
    probability (at most `most` of them, drawn at random), and those classes. The active
    order gives the model the images it doubts; these add the ones it is sure of, which it
    would otherwise never see labelled (CEAL: Wang et al., "Cost-Effective Active Learning
    for Deep Image Classification", 2016)."""
    sure = np.flatnonzero(probs.max(1) >= GUESS_SURE)
    sure = sure[~np.isin(sure, labelled)]
    if len(sure) > most:
        sure = np.sort(np.random.default_rng(seed).choice(sure, most, replace=False))
    return sure, probs[sure].argmax(1)


def learner_for(infos: list[dict]):
    """The learner class for these images and the side to decode them at."""
    edge = median_short_edge(infos) or 0
    if edge >= PHOTO_MIN_EDGE:
        return FeatureLearner, PHOTO_SIDE
    return CnnLearner, scratch_side(DataFacts(0, 0, 0, 1, edge))


def out_of_fold(learner, train: np.ndarray, targets: np.ndarray, classes: int,
                folds: int, seed: int) -> np.ndarray:
    """Each labelled image's probabilities from a model that did not train on it."""
    from sklearn.model_selection import KFold

    probs = np.zeros((len(train), classes), np.float32)
    for rest, held in KFold(folds, shuffle=True, random_state=seed).split(train):
        probs[held] = learner.fit_predict(train[rest], targets[rest], classes, train[held])
    return probs


def doubted(targets: np.ndarray, probs: np.ndarray, multilabel: bool) -> np.ndarray:
    """Positions (into `targets`) of likely label errors, likeliest first (imclass labels'
    rule: confident learning, and another class given SURE_OTHER or more)."""
    from cleanlab.filter import find_label_issues

    if multilabel:
        given = [list(np.flatnonzero(row)) for row in targets]
        return find_label_issues(given, probs, multi_label=True,
                                 return_indices_ranked_by="self_confidence")
    if len(np.unique(targets)) < probs.shape[1]:
        return np.array([], dtype=int)
    ranked = find_label_issues(targets, probs, filter_by="low_self_confidence",
                               return_indices_ranked_by="self_confidence")
    other = probs.copy()
    other[np.arange(len(targets)), targets] = 0
    return ranked[other[ranked].max(1) > SURE_OTHER]


@dataclass
class Scores:
    """What the latest model said about the pool (indices into the decoded images)."""
    probs: np.ndarray           # [N, K]
    uncertainty: np.ndarray     # [N]
    labels_seen: int            # how many labels it learned from
    seconds: float
    doubted: list[int] = field(default_factory=list)  # pool indices, likeliest error first
    agreement: float | None = None  # out-of-fold share of labels the models agreed with
    guesses: int = 0  # unlabelled images it also trained on, under the last model's guess


def targets_of(labels: list[tuple[str, ...]], classes: list[str], multilabel: bool
               ) -> np.ndarray:
    task = "multilabel" if multilabel else "multiclass"
    return label_mod.encode(labels, task, classes).numpy()


def ready(counts: dict[str, int], minimum: int = MIN_PER_CLASS) -> bool:
    return bool(counts) and min(counts.values()) >= minimum


def waiting_for(counts: dict[str, int], minimum: int = MIN_PER_CLASS) -> str:
    short = [f"{c} {n}/{minimum}" for c, n in counts.items() if n < minimum]
    return f"the model starts at {minimum} labels of each class (" + ", ".join(short) + ")"


def should_refit(labels_now: int, labels_then: int) -> bool:
    return labels_now >= labels_then + max(1, math.ceil(REFIT_GROWTH * labels_then))


def background_threads() -> int:
    """Threads for the background model: all cores but one, kept for the page."""
    return max(1, (os.cpu_count() or 2) - 1)


SMALL_FEATURE_SIDE = 64  # px: small images upsampled for Lite0's features (32 px: 72.4% at
#                          1,000 Fashion-MNIST labels, 64 px: 81.6%)
# Labels from which our CNN joins the features on small images: on Fashion-MNIST the
# features' logistic regression led at 50-200 labels (61.5/72.1/74.8% against the CNN's
# 32.4/40.5/74.1%), the CNN from 300 on (75.8 against 74.8%, then 84.0 against 81.6% at 1,000);
# from there the two are averaged (`Averaged`).
CNN_FROM_LABELS = 300
# From CNN_FROM_LABELS the small-image learner also trains on the last model's surest guesses
# (`surest_guesses`): on Fashion-MNIST (3 orders, labels to reach 85% on the median curves)
# the model's order went from 578 labels to 407 and random order from 936 to 883
# (docs/benchmarks.md, issue 31): it pays most where the labels are the doubtful images.
GUESS_SURE = 0.9  # the last model's probability from which an unlabelled image is a guess
GUESSES_PER_LABEL = 2  # at most this many guesses join per label given
REVIEW_MIN_LABELS = 20  # the review's out-of-fold models need a few labels per fold
REVIEW_GROWTH = 0.5  # the review is run again once the labels grew by half


class Helper:
    """The background model over a LabelStore: decodes the pool once, refits as labels come,
    and keeps the latest Scores. `names` are the pool's images (broken files left out)."""

    def __init__(self, store, infos: dict[str, dict], cache_dir, seed: int = 0,
                 minimum: int = MIN_PER_CLASS, log=lambda message: None, reviews: bool = True):
        self.store, self.infos, self.cache_dir, self.seed = store, infos, cache_dir, seed
        self.minimum, self.log, self.reviews = minimum, log, reviews
        self.names = [i.name for i in store.items if "error" not in infos.get(i.name, {})]
        self.row: dict[str, int] = {}
        self.failed: dict[str, str] = {}  # names that passed inspection but not decoding
        self.scores: Scores | None = None
        self.reviewed_at = 0  # labels seen by the last review
        self.doubts: list[str] = []  # names, likeliest error first
        self.duplicates: list[tuple[str, str, int]] = []
        self.status = "reading the images"
        self.learners: list = []
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="imclass-annotate-model",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def notify(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        torch.set_num_threads(background_threads())
        try:
            self.prepare()
            while not self._stop.is_set():
                self.step()
                self._wake.wait(2.0)
                self._wake.clear()
        except Exception as exc:  # the page keeps working without suggestions
            self.status = f"the model stopped: {type(exc).__name__}: {exc}"
            self.log(self.status)

    def prepare(self) -> None:
        from imclass.data.decode import choose_channels, decode_all

        good = [self.infos[n] for n in self.names]
        self.status = f"decoding {len(good)} images"
        kind, side = learner_for(good)
        decoded = decode_all(good, side, choose_channels(good), self.cache_dir,
                             source=str(self.store.root))
        decodable = set(decoded.ok)
        for k, info in enumerate(decoded.infos):
            if k not in decodable:
                self.failed[self.names[k]] = info.get("error", "could not be decoded")
        self.row = {self.names[k]: r for r, k in enumerate(decoded.ok)}
        pool = [self.names[k] for k in decoded.ok]
        merged = [decoded.infos[k] for k in decoded.ok]
        self.duplicates = duplicate_pairs(pool, merged)
        pixels = torch.from_numpy(np.ascontiguousarray(decoded.images))
        multilabel = self.store.multilabel
        self.status = "computing the pretrained network's features"
        if kind is FeatureLearner:
            self.learners = [(0, FeatureLearner(pixels, multilabel, self.seed))]
        else:
            features = FeatureLearner(pixels, multilabel, self.seed, side=SMALL_FEATURE_SIDE)
            cnn = CnnLearner(pixels, multilabel, self.seed)
            self.learners = [(0, features), (CNN_FROM_LABELS,
                                             Averaged(cnn, features, self_training=True))]
        self.status = "ready"

    def learner(self, labels: int):
        return [learner for start, learner in self.learners if labels >= start][-1]

    def step(self, force: bool = False) -> bool:
        """Fit a new model if the labels call for one (or `force`); whether it did."""
        labelled = [(i.name, i.labels) for i in self.store.items
                    if i.labels and i.name in self.row]
        if not self.can_fit(labelled):
            return False
        if self.scores is not None and not force and not should_refit(len(labelled),
                                                                      self.scores.labels_seen):
            return False
        self.fit(labelled)
        return True

    def can_fit(self, labelled: list[tuple[str, tuple[str, ...]]]) -> bool:
        """Whether the labels allow a model; if not, the status says what is missing."""
        counts = dict.fromkeys(self.store.classes, 0)
        for _, labels in labelled:
            for label in labels:
                counts[label] += 1
        if not ready(counts, self.minimum):
            self.status = waiting_for(counts, self.minimum)
            return False
        if self.store.multilabel and max(counts.values()) >= len(labelled):
            self.status = "a class is on every labelled image: label some images without it"
            return False
        return True

    def fit(self, labelled: list[tuple[str, tuple[str, ...]]]) -> None:
        store, started = self.store, time.monotonic()
        train = np.array([self.row[n] for n, _ in labelled])
        targets = targets_of([labels for _, labels in labelled], store.classes,
                             store.multilabel)
        learner = self.learner(len(labelled))
        rows, fit_targets = self.with_guesses(learner, train, targets)
        guesses = len(rows) - len(train)
        what = f"{len(labelled)} labels" + (f" and {guesses} of its surest guesses"
                                            if guesses else "")
        self.status = f"training on {what} ({learner.name})"
        probs = learner.fit_predict(rows, fit_targets, len(store.classes),
                                    np.arange(len(self.row)))
        scores = Scores(probs, least_sure(probs, store.multilabel), len(labelled),
                        time.monotonic() - started, guesses=guesses)
        if self.reviews and len(labelled) >= max(REVIEW_MIN_LABELS,
                                                 self.reviewed_at * (1 + REVIEW_GROWTH)):
            self.review(learner, labelled, train, targets, scores)
        self.scores = scores
        agrees = ("" if scores.agreement is None else
                  f"; it agrees with {scores.agreement:.0%} of your labels, out of fold")
        self.status = f"trained on {what} in {scores.seconds:.1f} s ({learner.name}){agrees}"
        self.log(self.status)

    def with_guesses(self, learner, train: np.ndarray, targets: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
        """The rows and targets to fit: the labelled ones, and the last model's surest
        guesses if this learner self-trains (one label per image only)."""
        if (not getattr(learner, "self_training", False) or self.scores is None
                or self.store.multilabel):
            return train, targets
        rows, guessed = surest_guesses(self.scores.probs, train,
                                       GUESSES_PER_LABEL * len(train), self.seed + len(train))
        return np.concatenate([train, rows]), np.concatenate([targets, guessed])

    def review(self, learner, labelled, train, targets, scores: Scores) -> None:
        folds = min(REVIEW_FOLDS, len(labelled) // self.minimum)
        if folds < 2:
            return
        oof = out_of_fold(learner, train, targets, len(self.store.classes), folds, self.seed)
        agree = ((oof >= 0.5) == (targets > 0.5)).all(1) if self.store.multilabel \
            else oof.argmax(1) == targets
        scores.agreement = float(agree.mean())
        self.doubts = [labelled[k][0] for k in doubted(targets, oof, self.store.multilabel)]
        self.reviewed_at = len(labelled)

    def suggestion(self, name: str) -> dict | None:
        scores, row = self.scores, self.row.get(name)
        if scores is None or row is None:
            return None
        p, classes = scores.probs[row], self.store.classes
        if self.store.multilabel:
            chosen = [c for c, q in zip(classes, p) if q >= 0.5]
            return {"labels": chosen, "confidence": round(float(np.abs(p - 0.5).min() * 2
                                                                 ), 3)}
        return {"labels": [classes[int(p.argmax())]], "confidence": round(float(p.max()), 3)}

    def unlabelled(self, mode: str) -> list[str]:
        """The good images without labels: least sure first (`active`, random order before the
        first model), or in file order (`plain`)."""
        todo = [n for n in self.names if n not in self.failed
                and not self.store.by_name[n].labels]
        if mode == "plain" or not todo:
            return todo
        if self.scores is None:  # before the first model (or while images decode)
            rng = np.random.default_rng(self.seed)
            return [todo[k] for k in rng.permutation(len(todo))]
        index = np.array([self.row[n] for n in todo])
        by_row = {self.row[n]: n for n in todo}
        ordered = active_order(index, self.scores.uncertainty, self.seed + self.scores.labels_seen)
        return [by_row[r] for r in ordered]

    def suggested(self, label: str) -> list[str]:
        """Unlabelled images the model puts in `label`, the surest first."""
        if self.scores is None:
            return []
        k = self.store.classes.index(label)
        todo = [n for n in self.names if n in self.row and not self.store.by_name[n].labels]
        probs = self.scores.probs
        picked = [n for n in todo if (probs[self.row[n], k] >= 0.5 if self.store.multilabel
                                      else int(probs[self.row[n]].argmax()) == k)]
        return sorted(picked, key=lambda n: -probs[self.row[n], k])


def duplicate_pairs(names: list[str], infos: list[dict]) -> list[tuple[str, str, int]]:
    """(image, the earlier image it copies or nearly copies, hash bits that differ; 0 for an
    identical file)."""
    from imclass.data.audit import near_pairs

    out, first = [], {}
    for name, info in zip(names, infos):
        if info.get("sha256") in first:
            out.append((name, first[info["sha256"]], 0))
        else:
            first[info.get("sha256")] = name
    copies = {a for a, _, _ in out}
    hashed = [(n, i) for n, i in zip(names, infos) if "phash" in i and n not in copies]
    pairs = near_pairs([i["phash"] for _, i in hashed],
                       [min(i.get("width", 0), i.get("height", 0)) for _, i in hashed])
    return out + [(hashed[b][0], hashed[a][0], bits) for a, b, bits in pairs]
