"""The recipe chosen from the data: which one a tiny, a small and a large dataset get, what the
machine changes, and that every flag the user sets wins over it."""

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from imagedata import folder_dataset
from imclass import cli, recipe as recipe_mod
from imclass.config import RunConfig, load_yaml, override, resolve, user_set
from imclass.data import scan
from imclass.errors import ConfigError
from imclass.evaluation import model_flips
from imclass.recipe import DataFacts, Recipe, apply, choose, facts_of


def facts(n, classes=10, channels=1, edge=28) -> DataFacts:
    return DataFacts(n, classes, n // classes, channels, edge)


def chosen(cfg: RunConfig, data: DataFacts, device: str = "cpu") -> tuple[RunConfig, dict]:
    cfg, applied = apply(cfg, choose(cfg, data, device))
    return cfg, applied.values


def folder_cfg(tmp_path, **values) -> RunConfig:
    return override(RunConfig(), {"data": str(tmp_path), **values})


def test_tiny_photo_set_gets_pretrained_lite0_at_224_with_photo_augmentation(tmp_path):
    cfg, values = chosen(folder_cfg(tmp_path), facts(90, classes=3, channels=3, edge=375))
    assert (cfg.model.name, cfg.model.pretrained) == ("efficientnet_lite0", True)
    assert (cfg.data.image_size, cfg.data.crop_pct, cfg.data.fit) == (224, 0.875, "crop")
    assert cfg.augment.preset == "photo" and cfg.train.freeze_bn
    assert 0 < cfg.train.freeze_epochs < cfg.train.epochs
    # every frozen epoch through the backbone (cached features did not pay on the photo-like
    # set: docs/benchmarks.md), then all but Lite0's stem and first three blocks, on 192 px crops
    assert (cfg.train.feature_views, cfg.train.unfreeze) == (0, "last-4")
    assert cfg.data.train_size == 192
    # a quarter of the run without a better validation loss stops it (a third never kept
    # another epoch on the runs replayed)
    assert cfg.train.patience == max(4, cfg.train.epochs // 4) < cfg.train.epochs // 3
    assert "at 224 px (training on 192 px crops, the first 12 epochs on 128 px), batch" in \
        choose(folder_cfg(tmp_path), facts(90, classes=3, channels=3, edge=375), "cpu").line(cfg)
    # a CPU budget of training images: 90 images may not train for a thousand passes
    assert cfg.train.epochs * 90 <= recipe_mod.CPU_IMAGE_BUDGET["transfer-photo"]
    assert values["name"] == "efficientnet_lite0"


def test_the_smaller_crops_and_frozen_blocks_yield_to_the_users_keys(tmp_path):
    """The 192 px crops are the photo preset's at 224 px, the frozen groups Lite0's: another
    side, augmentation or network drops them rather than refuse the user's flags."""
    photos = facts(240, classes=3, channels=3, edge=400)
    for given in ({"image_size": 160}, {"augment": "light"}, {"crop_scale": 0.5}):
        cfg, values = chosen(folder_cfg(tmp_path, **given), photos)
        assert cfg.data.train_size is None and "train_size" not in values, given
    cfg, _ = chosen(folder_cfg(tmp_path, model="resnet18", pretrained=True), photos)
    assert cfg.train.unfreeze == "all" and cfg.data.train_size == 192
    cfg, _ = chosen(folder_cfg(tmp_path, train_size=160), photos)
    assert cfg.data.train_size == 160  # the user's own


def test_a_train_size_needs_random_crops_no_larger_than_the_input(tmp_path):
    from imclass.config import resolve
    from imclass.run_setup import check_train_size

    check_train_size(resolve(folder_cfg(tmp_path, train_size=96, image_size=128,
                                        augment="photo")))
    with pytest.raises(ConfigError, match="augment 'light' takes none"):
        check_train_size(resolve(folder_cfg(tmp_path, train_size=96, augment="light")))
    with pytest.raises(ConfigError, match="above the input side"):
        check_train_size(resolve(folder_cfg(tmp_path, train_size=160, image_size=128,
                                            augment="photo")))


def test_large_greyscale_images_are_photos_too(tmp_path):
    cfg, _ = chosen(folder_cfg(tmp_path), facts(200, classes=2, channels=1, edge=512))
    assert (cfg.data.image_size, cfg.data.fit, cfg.augment.preset) == (224, "crop", "photo")
    assert "greyscale photos" in choose(folder_cfg(tmp_path), facts(200, 2, 1, 512),
                                        "cpu").reason


def test_small_greyscale_set_is_upsampled_for_the_pretrained_network(tmp_path):
    cfg, _ = chosen(folder_cfg(tmp_path), facts(240))
    assert cfg.model.name == "efficientnet_lite0" and cfg.data.image_size == 96
    assert cfg.data.fit == "squash" and cfg.augment.preset == "fashion"
    assert cfg.train.batch_size == 32 and cfg.train.optimizer == "adamw"


def test_large_set_of_small_images_trains_our_cnn_at_native_size(tmp_path):
    cfg, _ = chosen(folder_cfg(tmp_path), facts(9600))
    assert (cfg.model.name, cfg.model.pretrained, cfg.data.image_size) == ("cnn", False, 28)
    assert cfg.train.batch_size == 128 and cfg.train.lr == pytest.approx(0.1)
    steps = cfg.train.epochs * (9600 // 128)
    assert 1500 <= steps <= 2600, steps  # counted in optimisation steps, not passes


def test_epochs_follow_steps_so_a_small_set_gets_more_passes(tmp_path):
    small, _ = chosen(folder_cfg(tmp_path), facts(6000, channels=1))
    large, _ = chosen(folder_cfg(tmp_path), facts(40000, channels=1))
    assert small.model.name == large.model.name == "cnn"
    assert small.train.epochs > large.train.epochs


def test_a_gpu_is_not_held_to_the_cpu_budget(tmp_path):
    cpu, _ = chosen(folder_cfg(tmp_path), facts(300, classes=3, channels=3, edge=400), "cpu")
    gpu, _ = chosen(folder_cfg(tmp_path), facts(300, classes=3, channels=3, edge=400), "cuda")
    assert gpu.train.epochs > cpu.train.epochs


def test_a_large_photo_set_on_a_cpu_gets_a_smaller_input_not_too_few_epochs(tmp_path):
    cpu, _ = chosen(folder_cfg(tmp_path), facts(2400, classes=3, channels=3, edge=400), "cpu")
    gpu, _ = chosen(folder_cfg(tmp_path), facts(2400, classes=3, channels=3, edge=400), "cuda")
    assert cpu.data.image_size < gpu.data.image_size == 224
    assert cpu.train.epochs >= recipe_mod.MIN_EPOCHS


def test_photos_train_at_the_side_the_budget_buys_and_are_tested_one_side_up(tmp_path):
    """FixRes: at 160 and 128 px the side a CPU affords is the training crops' side, and
    validation and tests see the images one side larger; 192 px is trained and tested as is,
    224 px is the photo recipe's own (192 px crops, the first epochs on 128)."""
    def sides(images: int, device: str = "cpu"):
        cfg, _ = chosen(folder_cfg(tmp_path), facts(images, classes=3, channels=3, edge=400),
                        device)
        return cfg.data.train_size, cfg.data.image_size, cfg.data.early_size

    assert sides(2400) == (128, 160, None)
    assert sides(1600) == (160, 192, None)
    assert sides(1200) == (None, 192, None)
    assert sides(300) == sides(2400, "cuda") == (192, 224, 128)
    cfg, _ = chosen(folder_cfg(tmp_path), facts(2400, classes=3, channels=3, edge=400))
    # the epochs are counted at the training side: 128 px images within the budget
    assert recipe_mod.MIN_EPOCHS < cfg.train.epochs
    assert cfg.train.epochs * 2400 <= recipe_mod.CPU_IMAGE_BUDGET["transfer-photo"] * (
        224 / 128) ** 2
    line = choose(folder_cfg(tmp_path), facts(2400, classes=3, channels=3, edge=400),
                  "cpu").line(cfg)
    assert "pretrained at 160 px (training on 128 px crops)" in line
    cfg, _ = chosen(folder_cfg(tmp_path, image_size=128),
                    facts(2400, classes=3, channels=3, edge=400))
    assert (cfg.data.image_size, cfg.data.train_size) == (128, None)  # the user's side


def test_every_flag_the_user_sets_wins(tmp_path):
    mine = folder_cfg(tmp_path, epochs=8, batch_size=16, augment="light", lr=0.01)
    cfg, values = chosen(mine, facts(240))
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.augment.preset, cfg.train.lr) == (
        8, 16, "light", 0.01)
    assert cfg.model.name == "efficientnet_lite0"  # what was left unset still comes from it
    assert cfg.train.freeze_epochs == 2  # a quarter of the user's 8 epochs
    assert not {"epochs", "batch_size", "preset", "lr"} & set(values)
    assert user_set(cfg) >= {"epochs", "batch_size", "preset", "lr"}


def test_folder_recipes_keep_a_weight_average_that_the_user_can_change_or_turn_off(tmp_path):
    for data in (facts(240), facts(9600), facts(90, classes=3, channels=3, edge=375)):
        cfg, values = chosen(folder_cfg(tmp_path), data)
        assert cfg.train.ema == values["ema"] == recipe_mod.FOLDER_EMA
        assert "weight average 0.999;" in choose(folder_cfg(tmp_path), data, "cpu").line(cfg)
    # `--ema none` on the command line: the user's word, so the recipe leaves it off
    args = cli.build_parser().parse_args(["train", "--data", str(tmp_path), "--ema", "none"])
    off, values = chosen(cli._base_config(args), facts(240))
    assert off.train.ema is None and "ema" not in values
    assert "weight average" not in choose(off, facts(240), "cpu").line(off)
    assert chosen(folder_cfg(tmp_path, ema=0.99), facts(9600))[0].train.ema == 0.99
    # Fashion-MNIST keeps its plain defaults, its long recipe included (measured worth nothing)
    assert chosen(RunConfig(), None)[0].train.ema is None
    assert chosen(override(RunConfig(), {"recipe": "long"}), None)[0].train.ema is None


def test_a_plans_test_time_flips_yield_to_a_user_who_turned_flips_off(tmp_path):
    """A --budget plan averages each test image with its mirror image (--tta); where the
    user's flags leave training no flip, the plan goes without it instead of the run refusing
    a --tta the user never gave."""
    plan = Recipe("transfer", {"tta": True, "preset": "photo"}, "a budget's plan")
    for given, kept in (({}, True), ({"hflip_p": 0.0}, False), ({"augment": "none"}, False),
                        ({"hflip_p": 0.0, "vflip_p": 0.5}, True), ({"tta": False}, False)):
        cfg, applied = apply(folder_cfg(tmp_path, **given), plan)
        assert cfg.train.tta is kept and ("tta" in applied.values) is kept, given
        assert bool(model_flips(resolve(cfg))) is kept, given  # what the run then averages
    with pytest.raises(ConfigError, match="--tta averages over the flips"):
        model_flips(resolve(apply(folder_cfg(tmp_path, hflip_p=0.0, tta=True), plan)[0]))


def test_a_chosen_model_keeps_its_own_recipe(tmp_path):
    cfg, _ = chosen(folder_cfg(tmp_path, model="cnn"), facts(90, classes=3, channels=3,
                                                             edge=375))
    assert cfg.model.name == "cnn" and not cfg.model.pretrained and cfg.data.image_size == 64


def test_the_line_says_what_was_chosen_even_when_lr_is_found_later(tmp_path):
    cfg, _ = chosen(folder_cfg(tmp_path, lr="auto"), facts(240))
    line = choose(cfg, facts(240), "cpu").line(cfg)
    assert "efficientnet_lite0 pretrained at 96 px" in line and "adamw lr auto" in line


def test_saying_no_pretrained_weights_gets_the_cnn_from_scratch(tmp_path):
    cfg, _ = chosen(folder_cfg(tmp_path, pretrained=False), facts(240))
    assert (cfg.model.name, cfg.model.pretrained, cfg.train.freeze_epochs) == ("cnn", False, 0)


def test_recipe_none_and_fashion_mnist_keep_the_plain_defaults(tmp_path):
    plain = RunConfig()
    assert chosen(folder_cfg(tmp_path, recipe="none"), facts(240))[1] == {}
    assert chosen(plain, None)[0] == plain
    assert choose(plain, None, "cpu").name == "none"


def test_without_pretrained_weights_the_recipe_trains_from_scratch_and_says_why(
        tmp_path, monkeypatch):
    def no_weights(cfg):
        raise ConfigError("no pretrained weights for efficientnet_lite0: looked in ...")
    monkeypatch.setattr(recipe_mod, "resolve_architecture", no_weights)
    r = choose(folder_cfg(tmp_path), facts(240), "cpu")
    assert r.name == "scratch" and "no pretrained weights" in r.reason


def held(n, classes=10, channels=1, edge=28, task="multiclass") -> DataFacts:
    """A folder of n images without val/: a fifth held out for validation (the default)."""
    kept = round(n * 0.8)
    return DataFacts(kept, classes, kept // classes, channels, edge, task, n - kept)


def test_a_small_single_label_set_trains_on_every_image(tmp_path):
    """30 per class: no validation split, the images it would hold join training, and the
    run plans its end (no early stopping) within EVERY_IMAGE_EPOCHS."""
    r = choose(folder_cfg(tmp_path), held(300), "cpu")
    cfg, applied = apply(folder_cfg(tmp_path), r)
    assert (cfg.data.val_fraction, cfg.train.patience) == (0.0, None)
    assert applied.values["val_fraction"] == 0.0
    assert cfg.train.epochs == recipe_mod.EVERY_IMAGE_EPOCHS
    assert cfg.train.freeze_epochs == cfg.train.epochs // 4
    line = r.line(cfg)
    assert line.startswith("recipe for 300 training images") and "all trained on" in line
    # the photo-like set: its epochs come from the image budget over all 300 photos
    photos = choose(folder_cfg(tmp_path), held(300, classes=3, channels=3, edge=400), "cpu")
    assert photos.values["val_fraction"] == 0.0
    # (small images stop at EVERY_IMAGE_EPOCHS; photos lost a point with fewer passes)
    assert photos.values["epochs"] == recipe_mod.CPU_IMAGE_BUDGET["transfer-photo"] // 300
    # the same set with validation drawn counts its epochs from 240 images
    assert choose(folder_cfg(tmp_path), facts(240), "cpu").values["epochs"] \
        > recipe_mod.EVERY_IMAGE_EPOCHS
    # the cap is in steps: 90 images (3 batches an epoch) take more passes than 300, up to
    # the recipe's 30; 500 still get EVERY_IMAGE_EPOCHS
    epochs = {n: choose(folder_cfg(tmp_path), held(n, classes=3), "cpu").values["epochs"]
              for n in (90, 200, 500)}
    assert epochs == {90: 30, 200: 22, 500: recipe_mod.EVERY_IMAGE_EPOCHS}


def test_validation_stays_where_it_is_the_users_or_decides_something(tmp_path):
    plain = folder_cfg(tmp_path)
    kept = [
        (plain, facts(240)),  # a val/ folder: nothing is drawn from training
        (plain, held(300, classes=2, task="binary")),  # thresholds are tuned on it
        (plain, held(300, task="multilabel")),
        (plain, held(recipe_mod.EVERY_IMAGE_MAX + 1)),  # larger sets choose their epoch
        (folder_cfg(tmp_path, val_fraction=0.1), held(300)),
        (folder_cfg(tmp_path, patience=5), held(300)),
        (folder_cfg(tmp_path, select_metric="macro-f1"), held(300)),
        (folder_cfg(tmp_path, budget="5m"), held(300)),  # calibrated with validation
    ]
    for cfg, data in kept:
        r = choose(cfg, data, "cpu")
        trained, applied = apply(cfg, r)
        assert "val_fraction" not in applied.values, (cfg, data)
        assert trained.data.val_fraction > 0 and trained.train.patience, (cfg, data)
        assert "all trained on" not in r.reason


def test_facts_come_from_a_scan_of_the_files(tmp_path):
    root = folder_dataset(tmp_path / "d", n_train=20, n_test=4)
    big = root / "train" / "red" / "large.png"
    Image.fromarray(np.zeros((300, 200, 3), np.uint8)).save(big)
    cfg = override(RunConfig(), {"data": str(root), "cache_dir": str(tmp_path / "c")})
    f = facts_of(scan(cfg.data), cfg.data.val_fraction)
    assert (f.classes, f.channels, f.short_edge) == (3, 3, 20)
    assert f.train_images == round(61 * 0.8) and f.smallest_class == 16
    assert not f.photos
    assert (f.task, f.held_out) == ("multiclass", 61 - round(61 * 0.8))
    part = facts_of(scan(cfg.data), cfg.data.val_fraction, subset=40)  # --subset 40
    assert part.train_images == 32 and part.smallest_class == round(20 * 0.8 * 40 / 61)
    assert part.held_out == 8
    own_val = folder_dataset(tmp_path / "v", n_train=4, n_test=2)
    (own_val / "test").rename(own_val / "val")  # a val/ folder: none drawn from train/
    cfg = override(RunConfig(), {"data": str(own_val), "cache_dir": str(tmp_path / "c")})
    assert facts_of(scan(cfg.data), cfg.data.val_fraction).held_out == 0


@pytest.mark.slow
def test_train_prints_the_recipe_records_it_and_its_config_repeats_the_run(tmp_path, capsys):
    root = folder_dataset(tmp_path / "d", n_train=12, n_test=4)
    out = tmp_path / "run"
    assert cli.main(["train", "--data", str(root), "--out", str(out), "--epochs", "2",
                     "--cache-dir", str(tmp_path / "c")]) == 0
    line = next(l for l in capsys.readouterr().err.splitlines() if l.startswith("recipe"))
    assert "efficientnet_lite0 pretrained at 96 px" in line
    assert "1 frozen + 1 epoch of the top 4 layer groups," in line
    # 36 images of 3 classes: all of them train, none is held out for validation
    assert "36 training images" in line and "all trained on" in line
    run = json.loads((out / "run.json").read_text())
    assert run["recipe"]["name"] == "transfer" and "epochs" not in run["recipe"]["chosen"]
    assert run["recipe"]["chosen"]["name"] == "efficientnet_lite0"
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["model"]["name"] == "efficientnet_lite0" and saved["train"]["epochs"] == 2
    assert saved["data"]["val_fraction"] == 0 and run["recipe"]["chosen"]["val_fraction"] == 0
    assert sum(run["data"]["counts"]["train"].values()) == 36 and run["best_epoch"] == 2
    assert "the recipe's choice for a set this small" in (out / "report.html").read_text()
    again, values = chosen(load_yaml(out / "config.yaml"), facts(12, classes=3, channels=3))
    assert values == {} and again.model.name == "efficientnet_lite0"


def test_crop_fit_keeps_the_centre_and_the_margin_feeds_random_crops(tmp_path):
    import torch

    from imclass.config import AUGMENT_PRESETS
    from imclass.data.augment import build_augment
    from imclass.data.batches import Batches, Normalization
    from imclass.data.decode import read_pixels, sides
    from imclass.data.images import ImageSet

    wide = np.zeros((20, 60, 3), np.uint8)
    wide[:, :20, 0] = wide[:, 40:, 0] = 255  # red sides
    wide[:, 20:40, 1] = 255  # a green middle
    path = tmp_path / "wide.png"
    Image.fromarray(wide).save(path)
    cropped, _ = read_pixels(path.read_bytes(), (20, 20), 3, fit="crop")
    squashed, _ = read_pixels(path.read_bytes(), (20, 20), 3)
    assert cropped[1].min() == 255 and cropped[0].max() == 0  # only the green centre
    assert squashed[0].max() == 255  # squashing keeps the red sides

    assert sides(224, 0.875, 999) == (256, 224) and sides(None, 1.0, 28) == (28, 28)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    data = ImageSet(images, torch.arange(8) % 2, ("a", "b"))
    norm = Normalization((0.5,) * 3, (0.25,) * 3)
    augment = build_augment(AUGMENT_PRESETS["photo"], (3, 32, 32), 24)
    x, _ = next(iter(Batches(data, 8, norm, augment=augment, size=24)))
    assert x.shape == (8, 3, 24, 24)
    plain, _ = next(iter(Batches(data, 8, norm, size=24)))
    centre = norm.apply(images[:, :, 4:28, 4:28].float().div(255))
    assert torch.allclose(plain, centre) and data.center_cropped(24).size == (24, 24)


@pytest.mark.slow
def test_a_run_with_a_crop_margin_evaluates_and_predicts_on_the_centre(tmp_path, capsys):
    from imclass import api

    root = folder_dataset(tmp_path / "d", n_train=12, n_test=4)
    out = tmp_path / "run"
    assert cli.main(["train", "--data", str(root), "--out", str(out), "--model", "cnn",
                     "--image-size", "16", "--crop-pct", "0.8", "--fit", "crop", "--augment",
                     "photo", "--epochs", "6", "--batch-size", "8", "--lr", "0.05", "--quiet",
                     "--cache-dir", str(tmp_path / "c")]) == 0
    sidecar = json.loads((out / "checkpoints" / "best.json").read_text())
    assert sidecar["input"] | {"channels": 3} == {"channels": 3, "height": 16, "width": 16,
                                                  "decoded": 20, "fit": "crop"}
    before = json.loads((out / "metrics.json").read_text())["test"]["accuracy"]
    capsys.readouterr()
    assert cli.main(["evaluate", str(out), "--quiet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["plain"]["accuracy"] == pytest.approx(before)
    assert cli.main(["evaluate", str(out)]) == 0  # readable lines, and what it rewrote
    printed = capsys.readouterr()
    assert printed.out == "" and "test: accuracy" in printed.err
    assert f"updated {out / 'metrics.json'} ('test')" in printed.err
    assert "report.html" in printed.err
    assert cli.main(["evaluate", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("test: accuracy")
    image = next((root / "test" / "blue").iterdir())
    assert before > 0.9  # the tint survives a centre crop
    assert api.predict(out, [image])[0]["top"][0]["class"] == "blue"


def test_the_long_recipe_trains_the_residual_cnn_longer_and_flags_still_win(tmp_path):
    plain = RunConfig()
    long, values = chosen(override(plain, {"recipe": "long"}), None)
    assert (long.model.name, long.model.depths, long.train.epochs) == (
        "rescnn", (0, 1, 0, 1), recipe_mod.LONG_EPOCHS)
    assert long.train.patience is None and long.augment.erase_p > 0
    assert values["epochs"] > plain.train.epochs
    mine, values = chosen(override(plain, {"recipe": "long", "epochs": 3, "erase_p": 0}), None)
    assert (mine.train.epochs, mine.augment.erase_p) == (3, 0) and "epochs" not in values
    # a folder: the scratch recipe's size and batch, many more passes than it would get
    small = facts(3000, channels=3, edge=40)
    scratch, _ = chosen(folder_cfg(tmp_path, pretrained=False), small)
    folder, _ = chosen(folder_cfg(tmp_path, recipe="long"), small)
    assert folder.model.name == "rescnn" and folder.data.image_size == scratch.data.image_size
    assert folder.train.batch_size == scratch.train.batch_size
    assert folder.train.epochs > 2 * scratch.train.epochs
    assert "for an hour (--recipe long): rescnn from scratch at 40 px" in (
        choose(folder, small, "cpu").line(folder))


def test_a_small_fashion_mnist_subset_gets_the_folder_recipes_care():
    """--subset 3000 --epochs 2 (2,400 training images): batches of 64, not 256, so four
    times the steps, with the learning rate scaled and the weights' average; the user's
    epochs still win. A large subset keeps the built-in defaults."""
    small = override(RunConfig(), {"subset": 3000, "epochs": 2})
    recipe = choose(small, None, "cpu")
    assert recipe.name == "scratch" and "(--subset 3000)" in recipe.reason
    cfg, values = chosen(small, None)
    assert (cfg.train.batch_size, cfg.train.lr, cfg.train.ema) == (64, 0.05, 0.999)
    assert cfg.train.epochs == 2 and "epochs" not in values and cfg.model.name == "cnn"
    assert choose(override(RunConfig(), {"subset": 20_000}), None, "cpu").name == "none"
    assert choose(RunConfig(), None, "cpu").name == "none"


def test_photos_train_their_first_epochs_on_smaller_crops_unless_the_user_sets_sides(tmp_path):
    """Progressive resizing: the frozen epochs and the first fifth of fine-tuning on 128 px
    crops, counted again from the user's --epochs or --freeze-epochs; the user's own
    --train-size or --image-size leaves it out."""
    photos = facts(240, classes=3, channels=3, edge=400)
    cfg, _ = chosen(folder_cfg(tmp_path), photos)
    t = cfg.train
    assert cfg.data.early_size == 128 < cfg.data.train_size
    assert t.early_epochs == t.freeze_epochs + round(0.2 * (t.epochs - t.freeze_epochs))
    assert t.freeze_epochs < t.early_epochs < t.epochs
    line = choose(folder_cfg(tmp_path), photos, "cpu").line(cfg)
    assert f"(training on 192 px crops, the first {t.early_epochs} epochs on 128 px)" in line
    cfg, _ = chosen(folder_cfg(tmp_path, epochs=12), photos)
    assert (cfg.train.freeze_epochs, cfg.train.early_epochs) == (3, 3 + 2)
    cfg, _ = chosen(folder_cfg(tmp_path, epochs=12, freeze_epochs=2), photos)
    assert cfg.train.early_epochs == 2 + 2
    cfg, _ = chosen(folder_cfg(tmp_path, early_epochs=0), photos)
    assert cfg.train.early_epochs == 0 and "128 px" not in choose(
        folder_cfg(tmp_path), photos, "cpu").line(cfg)
    for given in ({"train_size": 160}, {"image_size": 160}, {"augment": "light"}):
        cfg, values = chosen(folder_cfg(tmp_path, **given), photos)
        assert cfg.train.early_epochs == 0 and "early_size" not in values, given
    small = facts(300, classes=10, channels=1, edge=28)  # small images take no random crops
    cfg, values = chosen(folder_cfg(tmp_path), small)
    assert cfg.train.early_epochs == 0 and cfg.data.early_size is None


def test_an_early_size_needs_random_crops_below_the_training_side_and_its_epochs(tmp_path):
    from imclass.run_setup import check_train_size

    def check(**values):
        check_train_size(resolve(folder_cfg(tmp_path, image_size=128, augment="photo",
                                            **values)))
    check(train_size=96, early_size=64, early_epochs=2)
    check(early_size=96, early_epochs=2)  # below the input side when no --train-size
    with pytest.raises(ConfigError, match="--early-epochs 2 trains .* give --early-size"):
        check(early_epochs=2)
    with pytest.raises(ConfigError, match="--early-size 96 is not below the training side"):
        check(train_size=96, early_size=96, early_epochs=2)
    with pytest.raises(ConfigError, match="give --early-epochs N"):
        check(early_size=64)
    with pytest.raises(ConfigError, match="augment 'light' takes none"):
        check_train_size(resolve(folder_cfg(tmp_path, early_size=64, early_epochs=2,
                                            augment="light")))
