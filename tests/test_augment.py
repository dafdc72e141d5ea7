import dataclasses

import pytest
import torch

from imclass.config import RunConfig, override, resolve
from imclass.data.augment import PRESETS, build_augment
from imclass.data.batches import Batches, Normalization
from imclass.data.images import ImageSet


def batch(n=64, c=1, side=28):
    torch.manual_seed(1)
    return torch.rand(n, c, side, side)


@pytest.mark.parametrize("preset", ["fashion", "light", "strong"])
@pytest.mark.parametrize("channels", [1, 3])
def test_presets_keep_shape_dtype_and_range(preset, channels):
    x = batch(c=channels)
    out = build_augment(PRESETS[preset], (channels, 28, 28))(x)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, x)


@pytest.mark.parametrize("op", [
    dict(hflip_p=1.0), dict(vflip_p=1.0), dict(rotate_p=1.0, rotate_degrees=30.0),
    dict(shift_p=1.0, shift=0.2, scale=0.1), dict(shift_p=1.0, shift=0.2), dict(brightness_p=1.0, brightness=0.5),
    dict(contrast_p=1.0, contrast=0.5), dict(saturation_p=1.0, saturation=0.8),
    dict(noise_p=1.0, noise_std=0.1), dict(blur_p=1.0, blur_sigma=2.0),
    dict(erase_p=1.0, erase_area=0.3)])
def test_each_operation_changes_images_and_draws_per_image(op):
    cfg = dataclasses.replace(PRESETS["none"], **op)
    one = torch.rand(1, 3, 28, 28)
    x = one.repeat(16, 1, 1, 1)  # 16 copies of the same image
    out = build_augment(cfg, (3, 28, 28))(x)
    assert not torch.allclose(out, x, atol=1e-4), f"{op} left the images unchanged"
    if "hflip_p" not in op and "vflip_p" not in op:  # a flip has only one outcome
        distinct = {tuple(o.flatten().round(decimals=4).tolist()) for o in out}
        assert len(distinct) > 8, f"{op} gave the same result to identical images"


def test_probability_sets_the_share_of_images_touched():
    cfg = dataclasses.replace(PRESETS["none"], hflip_p=0.3)
    x = torch.rand(4000, 1, 8, 8)
    flipped = (build_augment(cfg, (1, 8, 8))(x) != x).flatten(1).any(1).float().mean()
    assert 0.25 < flipped < 0.35


def test_random_erasing_blacks_out_one_rectangle_within_its_area():
    cfg = dataclasses.replace(PRESETS["none"], erase_p=1.0, erase_area=0.25)
    out = build_augment(cfg, (1, 28, 28))(torch.ones(200, 1, 28, 28))
    erased = out == 0
    share = erased.flatten(1).float().mean(1)
    # 2% to 25% of the area, give or take the sides' rounding to whole pixels
    assert share.min() >= 0.015 and share.max() <= 0.28
    rows, cols = erased.any(3), erased.any(2)  # [N, 1, H] / [N, 1, W]: its bounding box
    box = rows.sum(-1).flatten() * cols.sum(-1).flatten()
    assert torch.equal(box, erased.flatten(1).sum(1))  # the zeros fill their box: a rectangle


def test_none_preset_is_the_identity_in_the_batch_pipeline():
    cfg = resolve(override(RunConfig(), {"augment": "none"}))
    assert build_augment(cfg.augment, (1, 28, 28)) is None
    images = torch.randint(0, 256, (10, 1, 28, 28), dtype=torch.uint8)
    data = ImageSet(images, torch.arange(10), tuple("abcdefghij"))
    norm = Normalization.of(images)
    (x, y), = list(Batches(data, 10, norm, augment=None))
    assert torch.allclose(x, norm.apply(images.float() / 255))
    assert abs(x.mean().item()) < 1e-5 and abs(x.std(unbiased=False).item() - 1) < 1e-4


def test_same_seed_same_augmentation():
    aug = build_augment(PRESETS["strong"], (1, 28, 28))
    x = batch()
    torch.manual_seed(5)
    a = aug(x)
    torch.manual_seed(5)
    assert torch.equal(a, aug(x))


def test_a_pure_shift_moves_pixels_whole_without_blurring():
    cfg = dataclasses.replace(PRESETS["none"], shift_p=1.0, shift=0.1)
    x = torch.zeros(32, 1, 28, 28)
    x[:, :, 14, 14] = 1.0
    out = build_augment(cfg, (1, 28, 28))(x)
    assert torch.equal(out.flatten(1).sum(1), torch.ones(32))  # one lit pixel each, not smeared
    assert set(out.unique().tolist()) == {0.0, 1.0}
    rows = out[:, 0].amax(2).argmax(1)
    assert rows.min() >= 11 and rows.max() <= 17 and len(set(rows.tolist())) > 3


def test_resize_keeps_uint8_and_labels():
    images = torch.zeros(3, 1, 28, 28, dtype=torch.uint8)
    images[:, :, :14] = 200  # top half bright
    data = ImageSet(images, torch.tensor([0, 1, 2]), ("a", "b", "c"))
    big = data.resized(56)
    assert big.images.shape == (3, 1, 56, 56) and big.images.dtype == torch.uint8
    assert big.images[0, 0, 5, 5] == 200 and big.images[0, 0, 50, 5] == 0
    assert torch.equal(big.labels, data.labels) and data.resized(None) is data


def structured_images(n: int, side: int = 24) -> torch.Tensor:
    """n copies of one colour image with gradients, an edge and a bright patch."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, side), torch.linspace(0, 1, side),
                            indexing="ij")
    img = torch.stack([0.2 + 0.6 * xx, 0.8 * yy, 0.5 * (xx > 0.5).float()])
    img[:, 5:11, 4:9] = torch.tensor([0.9, 0.2, 0.1]).view(3, 1, 1)
    return img.repeat(n, 1, 1, 1)


def kornia_twins():
    """Each whole-batch operation beside the kornia module it replaces (imclass.data.batch_ops:
    same distributions, without kornia's per-image host loop). RandomCrop at p=1 only: kornia
    draws its probability per batch."""
    import kornia.augmentation as K

    from imclass.data import batch_ops as ops
    return {
        "hflip": (ops.Flip(0.5, -1), K.RandomHorizontalFlip(p=0.5)),
        "vflip": (ops.Flip(0.5, -2), K.RandomVerticalFlip(p=0.5)),
        "shift": (ops.Shift(1.0, (3, 3)), K.RandomCrop((24, 24), padding=(3, 3), p=1.0)),
        "affine": (ops.Affine(1.0, degrees=15, translate=0.1, scale=0.15),
                   K.RandomAffine(15.0, translate=(0.1, 0.1), scale=(0.85, 1.15), p=1.0)),
        "rotate": (ops.Affine(0.5, degrees=30), K.RandomRotation(30.0, p=0.5)),
        "resized_crop": (ops.ResizedCrop(16, 0.35),
                         K.RandomResizedCrop((16, 16), scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3))),
        "brightness": (ops.Brightness(0.5, 0.3), K.RandomBrightness((0.7, 1.3), p=0.5)),
        "contrast": (ops.Contrast(0.5, 0.3), K.RandomContrast((0.7, 1.3), p=0.5)),
        "saturation": (ops.Saturation(0.5, 0.8), K.RandomSaturation((0.2, 1.8), p=0.5)),
        "noise": (ops.Noise(0.3, 0.05), K.RandomGaussianNoise(std=0.05, p=0.3)),
        "erase": (ops.Erase(0.5, 0.3),
                  K.RandomErasing(scale=(0.02, 0.3), ratio=(0.3, 3.3), value=0.0, p=0.5)),
    }


@pytest.mark.parametrize("name", list(kornia_twins()))
def test_whole_batch_operations_draw_what_kornia_draws(name):
    ours, theirs = kornia_twins()[name]
    torch.manual_seed(0)
    x = structured_images(3000)
    a, b = ours(x).clamp(0, 1), theirs(x).clamp(0, 1)
    # pixel by pixel, the mean and spread over the draws; per image, its mean brightness
    assert (a.mean(0) - b.mean(0)).abs().max() < 0.03, "mean image differs"
    assert (a.std(0) - b.std(0)).abs().max() < 0.04, "spread of each pixel differs"
    ours_means, theirs_means = a.flatten(1).mean(1), b.flatten(1).mean(1)
    assert abs(ours_means.mean() - theirs_means.mean()) < 0.004
    assert abs(ours_means.std() - theirs_means.std()) <= 0.08 * theirs_means.std() + 1e-4


def aten_calls(fn) -> int:
    """How many tensor operations (aten calls) `fn()` makes."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.calls += 1
            return func(*args, **(kwargs or {}))

    with Count():
        fn()
    return Count.calls


@pytest.mark.parametrize("preset", ["fashion", "light", "photo", "erase", "strong-unblurred"])
def test_a_batch_costs_the_same_operations_whatever_its_size(preset):
    cfg = {"erase": dataclasses.replace(PRESETS["fashion"], erase_p=0.5, erase_area=0.25),
           "strong-unblurred": dataclasses.replace(PRESETS["strong"], blur_p=0.0,
                                                   erase_p=0.5)}.get(preset) or PRESETS[preset]
    channels, side, out = (3, 40, 32) if preset == "photo" else (1, 28, None)
    augment = build_augment(cfg, (channels, side, side), out)
    small, large = torch.rand(64, channels, side, side), torch.rand(1024, channels, side, side)
    calls = aten_calls(lambda: augment(small))
    assert calls == aten_calls(lambda: augment(large))
    assert calls < 40 * len(augment.ops)  # a few dozen per operation, not one per image


def test_a_shift_is_drawn_per_image_not_per_batch():
    cfg = dataclasses.replace(PRESETS["none"], shift_p=0.5, shift=0.2)
    x = torch.rand(2000, 1, 16, 16)
    moved = (build_augment(cfg, (1, 16, 16))(x) != x).flatten(1).any(1).float().mean()
    assert 0.42 < moved < 0.52  # half, less the few drawn a shift of zero


def test_photo_augmentation_is_deterministic_on_cpu():
    aug = build_augment(PRESETS["photo"], (3, 40, 40), 32)
    x = torch.rand(16, 3, 40, 40)
    torch.manual_seed(3)
    a = aug(x)
    torch.manual_seed(3)
    assert a.shape == (16, 3, 32, 32) and torch.equal(a, aug(x))


def test_a_run_trains_on_its_train_size_and_is_judged_at_its_input_size(tmp_path, monkeypatch):
    """--train-size: the random crops training sees are that side, validation and the test
    pass the full input (the recipe's 192 px crops of 224 px photos, here 24 of 32)."""
    from imagedata import folder_dataset
    from imclass.commands import train as train_cmd

    seen = []

    class Recording(Batches):
        def __iter__(self):
            for x, y in super().__iter__():
                seen.append(("training" if self.shuffle else "evaluation", x.shape[-1]))
                yield x, y
    monkeypatch.setattr(train_cmd, "Batches", Recording)
    data = folder_dataset(tmp_path / "data", n_train=16, n_test=4)
    cfg = override(RunConfig(), {"data": str(data), "model": "cnn", "image_size": 32,
                                 "train_size": 24, "augment": "photo", "epochs": 2,
                                 "recipe": "none"})
    run = train_cmd.train(cfg, tmp_path / "run", quiet=True)
    assert {side for what, side in seen if what == "training"} == {24}
    assert {side for what, side in seen if what == "evaluation"} == {32}
    assert (run / "metrics.json").is_file()


def test_the_early_epochs_train_on_the_early_size_and_the_rest_on_the_train_size(tmp_path,
                                                                                monkeypatch):
    """--early-size, --early-epochs (progressive resizing): the first epochs' crops at the
    early side, the later ones at --train-size, every evaluation at the input side."""
    from imagedata import folder_dataset
    from imclass.commands import train as train_cmd

    seen = []

    class Recording(Batches):
        def __iter__(self):  # the sides of one pass's batches
            sides: set[int] = set()
            seen.append(("training" if self.shuffle else "evaluation", sides))
            for x, y in super().__iter__():
                sides.add(x.shape[-1])
                yield x, y
    monkeypatch.setattr(train_cmd, "Batches", Recording)
    data = folder_dataset(tmp_path / "data", n_train=16, n_test=4)
    cfg = override(RunConfig(), {"data": str(data), "model": "cnn", "image_size": 32,
                                 "train_size": 24, "early_size": 16, "early_epochs": 2,
                                 "augment": "photo", "epochs": 3, "recipe": "none"})
    run = train_cmd.train(cfg, tmp_path / "run", quiet=True)
    assert [sides for what, sides in seen if what == "training"] == [{16}, {16}, {24}]
    assert all(sides == {32} for what, sides in seen if what == "evaluation")
    assert (run / "metrics.json").is_file()
