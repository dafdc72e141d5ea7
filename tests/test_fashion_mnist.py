import gzip
import hashlib
import io
import urllib.error

import numpy as np
import pytest

from imclass.data import fashion_mnist as fm
from imclass.errors import DataError

from conftest import write_idx


def raw_md5(folder):
    return {name: hashlib.md5(gzip.open(folder / name).read()).hexdigest()
            for name in fm.FILES.values()}


def test_reads_idx_files_into_uint8_image_sets(tiny_idx_dir):
    train, test = fm.load(tiny_idx_dir, checksums=raw_md5(tiny_idx_dir), allow_download=False)
    assert train.images.shape == (40, 1, 28, 28) and test.images.shape == (20, 1, 28, 28)
    assert train.images.dtype.is_floating_point is False
    assert train.labels.tolist()[:12] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    expected = np.frombuffer(gzip.open(tiny_idx_dir / fm.FILES["train_images"]).read()[16:],
                             np.uint8).reshape(40, 28, 28)
    assert np.array_equal(train.images[:, 0].numpy(), expected)
    assert train.class_names[9] == "Ankle boot" and len(train.class_names) == 10


def test_wrong_checksum_is_refused_naming_the_file(tiny_idx_dir):
    sums = raw_md5(tiny_idx_dir)
    sums["t10k-labels-idx1-ubyte.gz"] = "0" * 32
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz has MD5 \w+ but the official"):
        fm.load(tiny_idx_dir, checksums=sums, allow_download=False)


def test_truncated_gzip_is_refused(tiny_idx_dir):
    path = tiny_idx_dir / fm.FILES["train_images"]
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz is truncated or not a gzip"):
        fm.load(tiny_idx_dir, checksums=None, allow_download=False)


def test_idx_shorter_than_its_header_promises_is_refused(tmp_path):
    path = write_idx(tmp_path / "x.gz", np.zeros((5, 28, 28), np.uint8))
    raw = gzip.open(path).read()
    with gzip.open(path, "wb") as fh:
        fh.write(raw[:-100])
    with pytest.raises(DataError, match="header promises 3920"):
        fm.read_idx(path)


def test_search_order_prefers_data_dir_then_env(tiny_idx_dir, tmp_path, monkeypatch):
    other = tmp_path / "other"
    other.mkdir()
    for f in tiny_idx_dir.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    monkeypatch.setenv("IMCLASS_DATA", str(other))
    dirs = fm.candidate_dirs(tiny_idx_dir, tmp_path / "cache")
    assert dirs[:3] == [tiny_idx_dir, other, tmp_path / "cache"] and dirs[3] == fm.SYSTEM_DIR
    assert fm.locate(dirs) == tiny_idx_dir
    assert fm.locate(fm.candidate_dirs(None, tmp_path / "cache")) == other


def test_offline_and_absent_gives_one_sentence_on_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv("IMCLASS_DATA", raising=False)
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "nowhere")

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")
    monkeypatch.setattr(fm.urllib.request, "urlopen", offline)
    with pytest.raises(DataError) as err:
        fm.ensure(cache_dir=tmp_path / "cache")
    message = str(err.value)
    assert "network is unreachable" in message and "apt-get install dataset-fashion-mnist" in message
    assert "\n" not in message
    assert not list((tmp_path / "cache").glob("*.part")), "no partial download left behind"


def test_download_verifies_md5_before_keeping_a_file(tmp_path, monkeypatch, tiny_idx_dir):
    served = {name: (tiny_idx_dir / name).read_bytes() for name in fm.FILES.values()}
    monkeypatch.setattr(fm.urllib.request, "urlopen",
                        lambda url, timeout: io.BytesIO(served[url.rsplit("/", 1)[1]]))
    good = {name: hashlib.md5(data).hexdigest() for name, data in served.items()}
    monkeypatch.setattr(fm, "GZ_MD5", good)
    assert fm.download(tmp_path / "ok") == tmp_path / "ok"
    assert sorted(p.name for p in (tmp_path / "ok").iterdir()) == sorted(fm.FILES.values())
    monkeypatch.setattr(fm, "GZ_MD5", {**good, "train-labels-idx1-ubyte.gz": "f" * 32})
    with pytest.raises(DataError, match="downloaded train-labels-idx1-ubyte.gz has MD5"):
        fm.download(tmp_path / "bad")
    assert not (tmp_path / "bad" / "train-labels-idx1-ubyte.gz").exists()
    assert not list((tmp_path / "bad").glob("*.part"))


def test_the_installed_copy_matches_the_official_checksums():
    """The real dataset the demo trains on (installed by the set-up) passes every check."""
    folder = fm.ensure(allow_download=False)
    train, test = fm.load(folder, allow_download=False)
    assert len(train) == 60_000 and len(test) == 10_000
    assert train.class_counts() == [6000] * 10
