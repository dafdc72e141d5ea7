"""The head on cached features: while the backbone is frozen, its output for an image cannot
change, so it is computed once per augmented view and the head trains on the cached vectors.

With `--feature-views V` the frozen stage of a fine-tuning run (`--freeze-epochs N`) first
scores V augmented views of every training image and the validation images once through the
frozen backbone (eval mode: BatchNorm as pretrained, no dropout), then trains the head for N
epochs on those vectors, epoch e drawing view e mod V. An epoch of the head alone then costs
microseconds per image instead of a forward pass of the backbone (EfficientNet-Lite0: 768
MFLOPs an image at 224 px against 1,280 x classes multiply-adds), so the head can train to
convergence for the cost of V passes. The classifier's dropout (`--dropout`) is applied to the
cached vectors as the network applies it to its pooled features.

Only networks whose frozen part ends where `embed` ends take this path (timm models: `embed`
is the pooled features the classifier reads). It is an option, not the transfer recipe's
default: with 4 views and 15 head epochs before fine-tuning, the photo-like set lost 1.3
points and the 30-per-class folder 2.3 (docs/benchmarks.md "Your photos in a minute").
"""

from __future__ import annotations

import time

import torch
from torch import nn

FEATURE_BYTES = 512 * 1024 ** 2  # the most a cache of views may hold; fewer views beyond it


def can_cache(model: nn.Module) -> bool:
    """Whether the model's head reads exactly `model.embed(x)` (timm networks)."""
    return hasattr(model, "embed") and hasattr(model, "backbone")


def views_within(requested: int, images: int, width: int) -> int:
    """Views of `images` vectors of `width` floats that fit FEATURE_BYTES (at least one)."""
    return max(1, min(requested, FEATURE_BYTES // max(1, images * width * 4)))


@torch.no_grad()
def embed_all(model: nn.Module, batches, views: int = 1, seed: int = 0) -> torch.Tensor:
    """float32 [views, N, D]: `model.embed` of every image of `batches` (in order, not
    shuffled), once per pass; augmented passes are drawn from their own seeded random stream,
    so the views are the same in a resumed run and the training stream is untouched."""
    was_training = model.training
    model.eval()
    out = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(views):
            out.append(torch.cat([model.embed(x).float() for x, _ in batches]))
    model.train(was_training)
    return torch.stack(out)


class FeatureBatches:
    """(features [B, D], labels [B]) minibatches over cached views: pass e draws view
    `epoch mod views` in an order seeded by (seed, epoch), so a resumed run draws what an
    uninterrupted one would. `epoch` is set by the loop before each pass; `skip` skips the
    first batches of the next pass (a resumed epoch), as imclass.data.Batches does."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, batch_size: int, *,
                 shuffle: bool = True, drop_last: bool = False, seed: int = 0):
        self.features, self.labels = features, labels
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.epoch, self.skip = seed, 0, 0

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        n = len(self.labels)
        view = self.features[self.epoch % len(self.features)]
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        first, self.skip = self.skip * self.batch_size, 0
        for start in range(first, len(self) * self.batch_size, self.batch_size):
            index = order[start:start + self.batch_size].to(view.device)
            yield view[index], self.labels[index]


class CachedHead(nn.Module):
    """The model's head as it reads cached features: the classifier's dropout, then the head
    itself (its parameters are the model's own, trained in place)."""

    def __init__(self, model: nn.Module, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.head = model.head

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(features))


class FeatureCache:
    """What the frozen stage trains and validates on, built once by `fit` when the stage
    starts: `plain_train` is the training set in order, augmented as configured (one pass per
    view), `val_batches` the validation set (or None)."""

    def __init__(self, views: int, seed: int, dropout: float, plain_train, train_batches,
                 val_batches, log=lambda message: None):
        self.views, self.seed, self.dropout, self.log = views, seed, dropout, log
        self.plain_train, self.train_batches, self.val_batches = (plain_train, train_batches,
                                                                  val_batches)
        self.train: FeatureBatches | None = None
        self.val: FeatureBatches | None = None

    def build(self, model: nn.Module) -> None:
        started = time.perf_counter()
        width = getattr(model.head, "in_features", 1280)
        self.views = views_within(self.views, len(self.plain_train.labels), width)
        tb = self.train_batches
        self.train = FeatureBatches(embed_all(model, self.plain_train, self.views, self.seed),
                                    tb.labels, tb.batch_size, drop_last=tb.drop_last,
                                    seed=self.seed)
        if self.val_batches is not None:
            self.val = FeatureBatches(embed_all(model, self.val_batches), self.val_batches.labels,
                                      self.val_batches.batch_size, shuffle=False)
        self.log(f"features: {self.views} augmented view(s) of {len(tb.labels)} training images"
                 f"{'' if self.val is None else f' and {len(self.val.labels)} validation images'}"
                 f" through the frozen backbone once, in {time.perf_counter() - started:.1f}s")
