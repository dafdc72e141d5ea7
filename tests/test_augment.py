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
    assert share.min() >= 0.015 and share.max() <= 0.26
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
