"""imclass analyze and the folder-dataset listing: every finding triggered on purpose, the CSV
dialects we accept, the image conversions, the decode-once cache."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from imagedata import csv_dataset, draw, folder_dataset
from imclass import cli
from imclass.data.audit import analyze
from imclass.config import DataConfig
from imclass.data.own import load_folder
from imclass.errors import DataError


def cfg_for(root, tmp_path, **kw) -> DataConfig:
    return DataConfig(source=str(root), cache_dir=str(tmp_path / "cache"), workers=1, **kw)


def append_rows(csv_file, *rows):
    with csv_file.open("a") as f:
        for row in rows:
            f.write(",".join(row) + "\n")


def by_code(analysis) -> dict[str, list[dict]]:
    out = {}
    for f in analysis["findings"]:
        out.setdefault(f["code"], []).append(f)
    return out


@pytest.fixture
def flawed(tmp_path):
    """A CSV dataset with one of every problem analyze looks for."""
    root = csv_dataset(tmp_path / "flawed", "multiclass", n_train=45, n_test=12)
    train, test = root / "train", root / "test"
    rng = np.random.default_rng(1)
    (train / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (train / "images" / "empty.png").write_bytes(b"")
    Image.fromarray(draw(("red",), rng)).save(train / "images" / "png_inside.jpg", format="PNG")
    Image.fromarray(draw(("red",), rng)).save(train / "images" / "nobody.png")  # no row
    Image.new("1", (10_000, 10_000)).save(train / "images" / "bomb.png")  # 1e8 px > limit
    near = np.asarray(Image.open(train / "images" / "img0001.png")).astype(int)
    Image.fromarray(np.clip(near + 3, 0, 255).astype(np.uint8)).save(train / "images" / "near.png")
    shutil.copy(train / "images" / "img0002.bmp", test / "images" / "leak.bmp")
    other = np.asarray(Image.open(train / "images" / "img0006.bmp")).astype(int)
    Image.fromarray(np.clip(other + 3, 0, 255).astype(np.uint8)).save(
        test / "images" / "nearleak.png")
    append_rows(train / "labels.csv", ["broken.jpg", "red"], ["empty.png", "green"],
                ["png_inside.jpg", "red"], ["ghost.png", "blue"], ["../../outside.png", "red"],
                ["/etc/passwd", "red"], ["bomb.png", "red"], ["near.png", "green"],
                ["img0004.jpg", "red"], ["img0005.png", ""])
    Image.fromarray(draw(("red",), rng)).save(test / "images" / "purple.png")
    append_rows(test / "labels.csv", ["leak.bmp", "blue"], ["purple.png", "purple"],
                ["nearleak.png", "blue"])
    return root


def test_every_finding_names_its_file_and_row(flawed, tmp_path):
    analysis = analyze(cfg_for(flawed, tmp_path), tmp_path / "out")
    codes = by_code(analysis)
    # rows 2-46 are the 45 generated images; the appended rows follow in order
    expect = {"broken_file": ("train", "images/broken.jpg", 47),
              "empty_file": ("train", "images/empty.png", 48),
              "wrong_extension": ("train", "images/png_inside.jpg", 49),
              "missing_file": ("train", "images/ghost.png", 50),
              "duplicate_row": ("train", "images/img0004.jpg", 55),
              "no_label": ("train", "images/img0005.png", 56),
              "near_leak": ("test", "images/nearleak.png", 16),
              "unlisted_file": ("train", "images/nobody.png", None),
              "leak_duplicate": ("test", "images/leak.bmp", 14),
              "unknown_label": ("test", "images/purple.png", 15),
              "near_duplicate": ("train", "images/near.png", 54)}
    for code, (split, file, row) in expect.items():
        assert code in codes, f"no {code} finding"
        assert (codes[code][0]["split"], codes[code][0]["file"], codes[code][0]["row"]) == (
            split, file, row), codes[code]
    unsafe = {(f["file"], f["row"]) for f in codes["unsafe_path"]}
    assert unsafe == {("../../outside.png", 51), ("/etc/passwd", 52)}
    assert all(f["level"] == "error" for f in codes["unsafe_path"] + codes["leak_duplicate"])
    bomb = [f for f in codes["broken_file"] if f["file"] == "images/bomb.png"]
    assert bomb and "Pillow's limit" in bomb[0]["message"]
    assert "images/img0001.png" in codes["near_duplicate"][0]["message"]
    assert codes["duplicate_row"][0]["message"].startswith("lists the same image as row 6")
    assert "train/images/img0006.bmp" in codes["near_leak"][0]["message"]
    tiny = {f["message"].split("'")[1] for f in codes["tiny_class"]}
    assert tiny == {"red", "green", "blue"}  # 15 each, under 30
    saved = json.loads((tmp_path / "out" / "analysis.json").read_text())
    assert saved["counts_by_level"]["error"] == 3
    assert (tmp_path / "out" / "plots" / "class_counts.png").stat().st_size > 1000
    assert {s["file"] for s in saved["skipped"]} == {"images/broken.jpg", "images/empty.png",
                                                     "images/bomb.png"}


def test_analyze_cli_exits_non_zero_on_errors_and_strict_warnings(flawed, tmp_path, capsys):
    args = ["analyze", str(flawed), "--out", str(tmp_path / "a"), "--cache-dir",
            str(tmp_path / "cache")]
    assert cli.main(args) == 1
    out = capsys.readouterr().out
    assert "ERROR leak_duplicate: 1" in out and "test/images/leak.bmp row 14" in out
    # by severity: what loses or leaks images before the hundreds of size hints
    order = [out.index(f"WARNING {code}") for code in ("broken_file", "duplicate_row",
                                                       "near_leak", "small_image")]
    assert order == sorted(order) and out.index("ERROR") < order[0]
    clean = csv_dataset(tmp_path / "clean", "binary", n_train=20, n_test=6)
    args = ["analyze", str(clean), "--out", str(tmp_path / "b"), "--cache-dir",
            str(tmp_path / "cache")]
    assert cli.main(args) == 0  # tiny classes and small images are warnings only
    assert cli.main(args + ["--strict"]) == 1


def test_training_refuses_a_leaking_dataset_before_writing_anything(flawed, tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["train", "--data", str(flawed), "--out", str(out), "--epochs", "1",
                     "--cache-dir", str(tmp_path / "cache"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert "stop training" in err and "imclass analyze" in err and len(err.splitlines()) == 1


def test_csv_dialects_header_bom_columns_and_multi_hot(tmp_path):
    root = tmp_path / "d"
    images = root / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(draw(("red",), rng)).save(images / f"{i}.png")
    (root / "labels.csv").write_text("".join(f"{i}.png,{'a' if i % 2 else 'b'}\n"
                                             for i in range(6)), encoding="utf-8")
    data = load_folder(cfg_for(root, tmp_path, test_fraction=0.3), decode_images=False)
    assert data.task == "binary" and data.class_names == ("a", "b")  # no header: name, label
    assert len(data.listings["test"].entries) == 2 and data.test_carved
    (root / "labels.csv").write_text("\ufeffPicture\tKind\n" + "".join(
        f"{i}.png\tx|y\n" for i in range(6)), encoding="utf-8")
    with pytest.raises(DataError, match="no image column"):
        load_folder(cfg_for(root, tmp_path), decode_images=False)
    data = load_folder(cfg_for(root, tmp_path, image_column="picture", label_column="Kind"),
                       decode_images=False)
    assert data.task == "multilabel" and data.class_names == ("x", "y")
    (root / "labels.csv").write_text("file,cat,dog\n" + "".join(
        f"{i}.png,{i % 2},1\n" for i in range(6)))
    data = load_folder(cfg_for(root, tmp_path), decode_images=False)
    assert data.task == "multilabel" and data.listings["train"].multi_hot
    assert {e.labels for e in data.listings["train"].entries} | {
        e.labels for e in data.listings["test"].entries} == {("dog",), ("cat", "dog")}
    (root / "labels.csv").write_bytes("image,label\n0.png,caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        load_folder(cfg_for(root, tmp_path), decode_images=False)


def test_task_follows_the_labels_and_refuses_a_task_that_cannot_fit(tmp_path):
    nested = folder_dataset(tmp_path / "nested", "hierarchical", n_train=4, n_test=2)
    data = load_folder(cfg_for(nested, tmp_path), decode_images=False)
    assert data.task == "hierarchical" and "warm/orange" in data.class_names
    flat = folder_dataset(tmp_path / "flat", "multiclass", n_train=4, n_test=2)
    assert load_folder(cfg_for(flat, tmp_path), decode_images=False).task == "multiclass"
    with pytest.raises(DataError, match="exactly two classes"):
        load_folder(cfg_for(flat, tmp_path, task="binary"), decode_images=False)
    assert load_folder(cfg_for(flat, tmp_path, task="multilabel"),
                       decode_images=False).task == "multilabel"


def test_image_modes_are_converted_one_way_and_greyscale_stays_one_channel(tmp_path):
    root = tmp_path / "modes"
    for c in ("a", "b"):
        (root / "train" / c).mkdir(parents=True)
    grey = np.full((16, 16), 200, np.uint8)
    Image.fromarray(grey).save(root / "train" / "a" / "l.png")
    Image.fromarray((grey.astype(np.uint16) * 257)).save(root / "train" / "a" / "16bit.png")
    Image.fromarray(grey).convert("LA").save(root / "train" / "b" / "la.png")
    from imclass.data import decode
    infos = decode.inspect_all([str(p) for p in sorted((root / "train").rglob("*.*"))], 1)
    assert decode.choose_channels(infos) == 1  # L, 16-bit and LA: all greyscale
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:, 8:, 3] = 255  # left half transparent: laid on white
    Image.fromarray(rgba, "RGBA").save(root / "train" / "b" / "rgba.png")
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).convert("CMYK").save(
        root / "train" / "b" / "cmyk.jpg")
    rotated = Image.fromarray(np.tile(np.arange(16, dtype=np.uint8)[None] * 16, (8, 1)))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    rotated.convert("RGB").save(root / "train" / "a" / "exif.jpg", exif=exif, quality=95)
    infos = decode.inspect_all([str(p) for p in sorted((root / "train").rglob("*.*"))], 1)
    assert decode.choose_channels(infos) == 3
    pixels = {p.name: decode.read_pixels(p.read_bytes(), (16, 16), 3)[0]
              for p in (root / "train").rglob("*.*")}
    assert pixels["16bit.png"].max() == 200 == pixels["l.png"].max()
    assert tuple(pixels["rgba.png"][:, 4, 2]) == (255, 255, 255)  # transparent -> white
    assert tuple(pixels["rgba.png"][:, 4, 12]) == (255, 0, 0)
    assert abs(int(pixels["cmyk.jpg"].mean()) - 90) < 8
    exif_img = pixels["exif.jpg"][0]  # 8x16 displayed upright as 16 wide, 8 tall -> rotated
    assert decode.read_pixels((root / "train" / "a" / "exif.jpg").read_bytes(), (8, 16), 1)[0] \
        .shape == (1, 16, 8)
    assert exif_img[0].std() < exif_img[:, 0].std()  # the gradient now runs top to bottom


def test_decoded_cache_is_reused_and_rebuilt_when_a_file_changes(tmp_path):
    root = folder_dataset(tmp_path / "d", n_train=4, n_test=2)
    cfg = cfg_for(root, tmp_path, image_size=12)
    first = load_folder(cfg)
    assert not first.cache_reused and first.sets["train"].images.shape[1:] == (3, 12, 12)
    second = load_folder(cfg)
    assert second.cache_reused
    assert torch_equal(first.sets["train"].images, second.sets["train"].images)
    target = sorted((root / "train" / "red").iterdir())[0]
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(target, format=Image.open(target).format)
    third = load_folder(cfg)
    assert not third.cache_reused
    changed = third.sets["train"].files.index(f"red/{target.name}")
    assert third.sets["train"].images[changed].max() == 0
    assert load_folder(cfg_for(root, tmp_path, image_size=10)).cache_reused is False


def test_held_out_test_split_is_recorded_and_kept_when_images_are_added(tmp_path):
    root = csv_dataset(tmp_path / "d", "multiclass", n_train=30, test=False)
    cfg = cfg_for(root, tmp_path)
    first = {e.path.name for e in load_folder(cfg, decode_images=False).listings["test"].entries}
    assert len(first) == 6
    rng = np.random.default_rng(5)
    from imagedata import label_sets, write_csv_split
    extra = tmp_path / "extra"
    write_csv_split(extra, label_sets("multiclass", 15, rng), rng, start=100)
    for p in (extra / "images").iterdir():
        shutil.move(p, root / "train" / "images" / p.name)
    append_rows(root / "train" / "labels.csv",
                *[r.split(",") for r in (extra / "labels.csv").read_text().splitlines()[1:]])
    again = {e.path.name for e in load_folder(cfg, decode_images=False).listings["test"].entries}
    assert first < again and len(again) == 9  # the old six stay, three of the new join


def torch_equal(a, b) -> bool:
    return bool((a == b).all())


def test_analyze_decodes_photos_at_the_size_training_will(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for label in ("red", "blue"):
        folder = tmp_path / "photos" / "train" / label
        folder.mkdir(parents=True)
        for i in range(6):  # 200 x 160 px: photos, which the recipe decodes at 256 px
            Image.fromarray(draw((label,), rng, size=200)[:160]).save(folder / f"{i}.jpg")
    assert cli.main(["analyze", str(tmp_path / "photos"), "--out", str(tmp_path / "a"),
                     "--cache-dir", str(tmp_path / "cache")]) == 0
    assert "decoded as 3 channel(s) at 256x256" in capsys.readouterr().out
    assert json.loads((tmp_path / "a" / "analysis.json").read_text())["image_size"] == 256


def test_small_images_are_near_duplicates_only_with_identical_perceptual_hashes():
    from imclass.data.audit import _near_duplicates

    def item(name, phash, side):
        return ("train", name, None, {"phash": phash, "width": side, "height": side})
    hashes = {"a.png": "ff00ff00ff00ff00", "b.png": "ff00ff00ff00ff03",  # 2 bits apart
              "c.png": "00ff00ff00ff00ff", "d.png": "00ff00ff00ff00ff"}  # identical
    pairs = {side: [item(name, h, side) for name, h in hashes.items()] for side in (28, 300)}
    small = {f.file for f in _near_duplicates(pairs[28])}
    large = {f.file for f in _near_duplicates(pairs[300])}
    assert small == {"d.png"}  # 2 bits apart is noise at 28 px; identical hashes still count
    assert large == {"b.png", "d.png"}
