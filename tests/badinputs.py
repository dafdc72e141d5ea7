"""The bad-input corpus: every case builds its own broken input in a temp folder and names the
command line that meets it. tests/test_bad_inputs.py runs them all; docs/reliability.md tables
each case (by its name) with what the user sees.

A case's `build(folder, run)` gets an empty folder and a finished tiny run folder (for the
commands that need one) and returns the argv after `imclass`.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from imagedata import bomb_png, draw

CLASSES = ("red", "green", "blue")


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path, Path], list[str]]
    says: str          # the text the one-line error (or the skip listing) must contain
    exit_code: int = 2
    skipped: str | None = None  # a bad image inside a dataset: listed as skipped, not fatal
    as_other_user: bool = False  # permission cases: root reads anything, so run as nobody


def image(path: Path, label: str = "red", seed: int = 0, size: int = 20) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(draw((label,), np.random.default_rng(seed), size)).save(
        path, format="PNG" if path.suffix.lower() not in (".jpg", ".jpeg") else "JPEG")
    return path


def good_folders(root: Path, per_class: int = 6) -> Path:
    """train/<class>/*.png, enough to analyze and to train on."""
    for c in CLASSES:
        for i in range(per_class):
            image(root / "train" / c / f"{i}.png", c, seed=i)
    return root


def csv_data(root: Path, text: str | bytes, images: int = 15) -> Path:
    """train/labels.csv with the given content beside train/images/0.png .. n.png."""
    for i in range(images):
        image(root / "train" / "images" / f"{i}.png", CLASSES[i % 3], seed=i)
    data = text.encode("utf-8") if isinstance(text, str) else text
    (root / "train" / "labels.csv").write_bytes(data)
    return root


def good_rows(n: int = 15) -> str:
    return "".join(f"{i}.png,{CLASSES[i % 3]}\n" for i in range(n))


def analyze(root: Path, folder: Path) -> list[str]:
    return ["analyze", str(root), "--out", str(folder / "analysis"), "--cache-dir",
            str(folder / "cache")]


def train_data(root: Path, folder: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(root), "--out", str(folder / "run"), "--cache-dir",
            str(folder / "cache"), "--epochs", "1", "--model", "cnn", "--quiet", *extra]


def with_bad_image(name: str, write: Callable[[Path], object]) -> Callable[[Path, Path],
                                                                           list[str]]:
    """A good class-folder dataset plus one bad file in train/red/, analyzed."""
    def build(folder: Path, run: Path) -> list[str]:
        root = good_folders(folder / "data")
        write(root / "train" / "red" / name)
        return analyze(root, folder)
    return build


def config_file(text: str | bytes) -> Callable[[Path, Path], list[str]]:
    def build(folder: Path, run: Path) -> list[str]:
        path = folder / "config.yaml"
        path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
        return ["train", "--config", str(path), "--subset", "300", "--epochs", "1",
                "--out", str(folder / "run"), "--quiet"]
    return build


def space_file(text: str) -> Callable[[Path, Path], list[str]]:
    def build(folder: Path, run: Path) -> list[str]:
        (folder / "space.yaml").write_text(text)
        return ["tune", "--space", str(folder / "space.yaml"), "--trials", "1", "--subset",
                "300", "--epochs", "1", "--out", str(folder / "study")]
    return build


def csv_case(text: str | bytes) -> Callable[[Path, Path], list[str]]:
    def build(folder: Path, run: Path) -> list[str]:
        return analyze(csv_data(folder / "data", text), folder)
    return build


def _truncated_png(path: Path) -> None:
    image(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _sixteen_bit(path: Path) -> None:
    Image.fromarray((np.arange(400).reshape(20, 20) * 150).astype(np.uint16)).save(path)


def _cmyk(path: Path) -> None:
    Image.new("CMYK", (20, 20), (0, 200, 200, 0)).save(path, format="JPEG")


def _animated(path: Path) -> None:
    frames = [Image.new("RGB", (20, 20), c) for c in ((200, 0, 0), (0, 200, 0))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)


def _exif_rotated(path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.new("RGB", (30, 20), (200, 0, 0)).save(path, format="JPEG", exif=exif)


def _png_named_jpg(path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 20), (200, 0, 0)).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())


def _quoted_commas(folder: Path, run: Path) -> list[str]:
    root = csv_data(folder / "data", 'image,label\n"red, bright.png",red\n' + good_rows())
    image(root / "train" / "images" / "red, bright.png", seed=50)
    return analyze(root, folder)


def _symlink_loop(folder: Path, run: Path) -> list[str]:
    root = good_folders(folder / "data")
    os.symlink(root / "train", root / "train" / "red" / "loop")
    return analyze(root, folder)


def _escaping_csv(folder: Path, run: Path) -> list[str]:
    image(folder / "outside.png")
    return analyze(csv_data(folder / "data", "image,label\n../../outside.png,red\n"
                            + good_rows()), folder)


def _linked_class(folder: Path, run: Path) -> list[str]:
    """train/blue is a link to a folder elsewhere: its images count like any others."""
    root = good_folders(folder / "data")
    shutil.move(root / "train" / "blue", folder / "elsewhere")
    os.symlink(folder / "elsewhere", root / "train" / "blue")
    return analyze(root, folder)


def _file_for_folder(folder: Path, run: Path) -> list[str]:
    (folder / "data.txt").write_text("not a folder")
    return analyze(folder / "data.txt", folder)


def _unreadable_image(folder: Path, run: Path) -> list[str]:
    root = good_folders(folder / "data")
    os.chmod(image(root / "train" / "red" / "secret.png", seed=99), 0)
    return analyze(root, folder)


def _unreadable_folder(folder: Path, run: Path) -> list[str]:
    root = good_folders(folder / "data")
    os.chmod(root / "train" / "green", 0)
    return analyze(root, folder)


def _no_images(folder: Path, run: Path) -> list[str]:
    (folder / "data" / "train" / "red").mkdir(parents=True)
    (folder / "data" / "train" / "red" / "notes.txt").write_text("no images here")
    return analyze(folder / "data", folder)


def _damaged_run(folder: Path, run: Path) -> list[str]:
    copy = folder / "run"
    shutil.copytree(run, copy)
    weights = copy / "checkpoints" / "best.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    return ["evaluate", str(copy)]


def _weights_flags(path: Path, folder: Path) -> list[str]:
    return ["train", "--weights", str(path), "--subset", "300", "--epochs", "1", "--quiet",
            "--out", str(folder / "new")]


def _truncated_weights(folder: Path, run: Path) -> list[str]:
    data = (run / "checkpoints" / "best.safetensors").read_bytes()
    (folder / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    return _weights_flags(folder / "truncated.safetensors", folder)


def _garbage_weights(folder: Path, run: Path) -> list[str]:
    (folder / "junk.pth").write_bytes(b"PK\x03\x04 not a torch file")
    return _weights_flags(folder / "junk.pth", folder)


def _weights_from_damaged_run(folder: Path, run: Path) -> list[str]:
    _damaged_run(folder, run)
    return _weights_flags(folder / "run", folder)


def _resume_damaged_state(folder: Path, run: Path) -> list[str]:
    """A run killed before it finished (no run.json) whose saved state was then cut short."""
    copy = folder / "run"
    shutil.copytree(run, copy)
    (copy / "run.json").unlink()
    state = copy / "checkpoints" / "state.safetensors"
    state.write_bytes(state.read_bytes()[:1000])
    return ["train", "--resume", str(copy)]


def _garbled_sidecar(folder: Path, run: Path) -> list[str]:
    copy = folder / "run"
    shutil.copytree(run, copy)
    (copy / "checkpoints" / "best.json").write_text("{not json")
    return ["predict", str(copy), str(folder)]


def _not_a_model(folder: Path, run: Path) -> list[str]:
    (folder / "model.onnx").write_bytes(b"\x00" * 64)
    image(folder / "x.png")
    return ["predict", str(folder / "model.onnx"), str(folder / "x.png")]


def _predict_bad_files(folder: Path, run: Path) -> list[str]:
    (folder / "page.png").write_text("<html><body>not an image</body></html>")
    (folder / "empty.png").write_bytes(b"")
    return ["predict", str(run), str(folder / "page.png"), str(folder / "empty.png"),
            str(folder / "missing.png"), "--out", str(folder / "p.csv")]


def _serve_busy_port(folder: Path, run: Path) -> list[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    _serve_busy_port.socket = sock  # held open until the case has run
    return ["serve", str(run), "--port", str(sock.getsockname()[1])]


CASES: list[Case] = [
    # CSV files
    Case("csv-quoted-commas", _quoted_commas, "", exit_code=0),
    Case("csv-no-header", csv_case(good_rows()), "", exit_code=0),
    Case("csv-duplicated-header", csv_case("image,label,label\n" + good_rows()), "label"),
    Case("csv-nul-bytes", csv_case(b"image,label\n" + good_rows().encode() + b"1\x00.png,red\n"),
         "bad_name", exit_code=1),
    Case("csv-1mb-line", csv_case("image,label\n" + "x" * 1_000_000 + ".png,red\n"
                                  + good_rows()), "", exit_code=1),
    Case("csv-only-header", csv_case("image,label\n"), "no"),
    Case("csv-empty-file", csv_case(""), "empty"),
    Case("csv-numeric-labels", csv_case("image,label\n" + "".join(
        f"{i}.png,{i % 2}\n" for i in range(15))), "", exit_code=0),
    Case("csv-not-utf8", csv_case("image,label\n0.png,r\xe9d\n".encode("latin-1")), "UTF-8"),
    Case("csv-missing-image", csv_case("image,label\n" + good_rows() + "gone.png,red\n"),
         "gone.png", exit_code=0),
    Case("csv-path-escapes-dataset", _escaping_csv, "outside", exit_code=1),
    Case("csv-missing-label", csv_case("image,label\n0.png,\n" + good_rows()), "no_label",
         exit_code=0),
    # images inside a dataset: listed as skipped, the rest is used
    Case("image-zero-bytes", with_bad_image("empty.png", lambda p: p.write_bytes(b"")),
         "empty.png", exit_code=0, skipped="empty.png"),
    Case("image-truncated", with_bad_image("cut.png", _truncated_png), "cut.png",
         exit_code=0, skipped="cut.png"),
    Case("image-html-named-png", with_bad_image("page.png", lambda p: p.write_text(
        "<!DOCTYPE html><html><body>404</body></html>")), "page.png", exit_code=0,
         skipped="page.png"),
    Case("image-decompression-bomb", with_bad_image("bomb.png", bomb_png), "bomb.png",
         exit_code=0, skipped="bomb.png"),
    Case("image-1x1", with_bad_image("dot.png", lambda p: image(p, size=1)), "", exit_code=0),
    Case("image-16-bit", with_bad_image("deep.png", _sixteen_bit), "", exit_code=0),
    Case("image-cmyk", with_bad_image("print.jpg", _cmyk), "", exit_code=0),
    Case("image-animated", with_bad_image("anim.gif", _animated), "", exit_code=0),
    Case("image-exif-rotated", with_bad_image("phone.jpg", _exif_rotated), "", exit_code=0),
    Case("image-wrong-extension", with_bad_image("really-png.jpg", _png_named_jpg), "",
         exit_code=0),
    Case("image-unreadable", _unreadable_image, "secret.png", exit_code=0,
         skipped="secret.png", as_other_user=True),
    # configs
    Case("config-wrong-type", config_file("train:\n  epochs: ten\n"), "epochs"),
    Case("config-unknown-key", config_file("train:\n  epoch: 3\n"), "epochs"),
    Case("config-tabs", config_file("train:\n\tepochs: 3\n"), "tab"),
    Case("config-not-utf8", config_file(b"train:\n  optimizer: \xff\xfe\n"), "UTF-8"),
    Case("config-negative-lr", config_file("train:\n  lr: -1\n"), "lr"),
    Case("config-zero-epochs", config_file("train:\n  epochs: 0\n"), "epochs"),
    Case("config-a-list", config_file("- epochs\n- 3\n"), "mapping"),
    Case("config-missing-file", lambda f, r: ["train", "--config", str(f / "none.yaml")],
         "none.yaml"),
    Case("flag-wrong-type", lambda f, r: ["train", "--batch-size", "abc"], "batch"),
    Case("flag-misspelt", lambda f, r: ["train", "--epoch", "3"], "--epochs"),
    # search spaces
    Case("space-unknown-key", space_file("lrr: [0.1, 0.2]\n"), "lr"),
    Case("space-low-above-high", space_file("lr: {low: 0.5, high: 0.1}\n"), "low"),
    Case("space-not-yaml", space_file("lr: [0.1, 0.2\n"), "space.yaml"),
    Case("space-missing-file", lambda f, r: ["tune", "--space", str(f / "none.yaml")],
         "none.yaml"),
    # paths
    Case("data-missing", lambda f, r: analyze(f / "nowhere", f), "nowhere"),
    Case("data-a-file", _file_for_folder, "data.txt"),
    Case("data-symlink-loop", _symlink_loop, "link_loop", exit_code=0),
    Case("data-linked-class-folder", _linked_class, "images 14 train, 4 test",
         exit_code=0),
    Case("data-unreadable-folder", _unreadable_folder, "unreadable_folder", exit_code=1,
         as_other_user=True),
    Case("data-no-images", _no_images, "no class folders with images"),
    Case("train-data-missing", lambda f, r: train_data(f / "nowhere", f), "nowhere"),
    Case("out-is-a-file", lambda f, r: (f / "file").write_text("x") and [
        "train", "--subset", "300", "--epochs", "1", "--out", str(f / "file" / "run")],
         "is a file"),
    # run folders and models
    Case("evaluate-missing-run", lambda f, r: ["evaluate", str(f / "nothing")], "nothing"),
    Case("evaluate-not-a-run", lambda f, r: ["evaluate", str(f)], "missing"),
    Case("evaluate-damaged-weights", _damaged_run, "damaged"),
    Case("predict-garbled-sidecar", _garbled_sidecar, "not valid JSON"),
    Case("predict-not-a-model", _not_a_model, "not a readable ONNX model"),
    Case("predict-bad-and-missing-files", _predict_bad_files, "3 failed", exit_code=1),
    Case("weights-truncated-file", _truncated_weights, "truncated.safetensors"),
    Case("weights-not-a-weights-file", _garbage_weights, "junk.pth"),
    Case("weights-damaged-run", _weights_from_damaged_run, "damaged"),
    Case("resume-damaged-state", _resume_damaged_state, "state is damaged"),
    Case("export-missing-run", lambda f, r: ["export", str(f / "nothing")], "nothing"),
    Case("serve-missing-model", lambda f, r: ["serve", str(f / "nothing")], "nothing"),
    Case("serve-port-in-use", _serve_busy_port, "in use"),
]
