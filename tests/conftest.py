import gzip
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write a uint8 array as a gzip-compressed IDX file (the Fashion-MNIST format)."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())
    return path


@pytest.fixture
def tiny_idx_dir(tmp_path):
    """A Fashion-MNIST-shaped folder: 40 train and 20 test random images over 10 classes."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "fmnist"
    folder.mkdir()
    for prefix, n in (("train", 40), ("t10k", 20)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz",
                  rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n, dtype=np.uint8) % 10)
    return folder


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One short real training on 1,200 Fashion-MNIST images (about 5 s), shared by the tests
    that read its run folder."""
    import imclass
    from imclass.config import RunConfig, override

    out = tmp_path_factory.mktemp("runs") / "small"
    cfg = override(RunConfig(), {"subset": 1200, "epochs": 6, "batch_size": 64, "lr": 0.1})
    imclass.train(cfg, out, quiet=True, command="pytest")
    return out


CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="session")
def browser():
    assert CHROMIUM and DRIVER, ("chromium and chromedriver are missing: `make test` installs "
                                 "Debian's chromium and chromium-driver packages")
    from selenium import webdriver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-sync",
                "--disable-component-update", "--window-size=1280,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(DRIVER))
    yield driver
    driver.quit()
