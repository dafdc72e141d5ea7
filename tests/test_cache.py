"""`imclass cache`: the decode cache listed with what each entry is, pruned by age, size cap or
all (least recently used first, never the test-split records), and a decode that would fill
the disk refused before it writes."""
import os
import time
from pathlib import Path

import pytest

from imclass import cli
from imclass.data import cache
from imclass.errors import DataError
from imagedata import folder_dataset

DAY_S = 24 * 3600


def analyze(data: Path, tmp_path: Path, *extra: str) -> int:
    return cli.main(["analyze", str(data), "--out", str(tmp_path / "analysis"), "--cache-dir",
                     str(tmp_path / "cache"), *extra])


@pytest.fixture
def two_entries(tmp_path) -> Path:
    """A cache with two datasets decoded, the first one last used 10 days ago."""
    old = folder_dataset(tmp_path / "old", n_train=6, n_test=2)
    new = folder_dataset(tmp_path / "new", n_train=6, n_test=2, seed=1)
    for data in (old, new):
        assert analyze(data, tmp_path, "--image-size", "32") == 0
    ten_days_ago = time.time() - 10 * DAY_S
    for e in cache.entries(tmp_path / "cache"):
        if str(old) in e.source:
            for f in e.files:
                os.utime(f, (ten_days_ago, ten_days_ago))
    return tmp_path / "cache"


def keys(root: Path) -> set[str]:
    return {e.source for e in cache.entries(root)}


def test_list_names_each_entry_with_its_source_shape_size_and_age(two_entries, capsys):
    assert cli.main(["cache", "--cache-dir", str(two_entries)]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if " MB " in line and "images" in line]
    assert len(lines) == 4  # train and test of each dataset
    assert "3x32x32" in out and "10 days ago" in out and "/old/train" in out
    assert "total" in out and "in 4 entries" in out


def test_prune_by_age_size_cap_and_all_least_recently_used_first(two_entries, capsys):
    root = two_entries
    sources = keys(root)
    assert cli.main(["cache", "prune", "--older-than", "5", "--dry-run",
                     "--cache-dir", str(root)]) == 0
    assert "would remove 2 of 4" in capsys.readouterr().out and keys(root) == sources
    assert cli.main(["cache", "prune", "--older-than", "5", "--cache-dir", str(root)]) == 0
    assert "removed 2 of 4" in capsys.readouterr().out
    assert all("/new/" in s for s in keys(root)) and len(keys(root)) == 2
    entries = cache.entries(root)
    one = max(e.bytes for e in entries)  # a cap that holds one entry keeps the newer one
    newest = entries[0].key
    assert cli.main(["cache", "prune", "--max-size", f"{one / cache.MB + 0.001:.3f}MB",
                     "--cache-dir", str(root)]) == 0
    assert [e.key for e in cache.entries(root)] == [newest]
    assert cli.main(["cache", "prune", "--all", "--cache-dir", str(root)]) == 0
    assert cache.entries(root) == [] and not list((root / "decoded").iterdir())


def test_prune_removes_a_killed_decode_and_keeps_the_test_split_records(two_entries):
    leftover = two_entries / "decoded" / "0123abcd.npy.4242.tmp.npy"
    leftover.write_bytes(b"\0" * 1000)
    (two_entries / "test-splits").mkdir(exist_ok=True)
    record = two_entries / "test-splits" / "x.json"
    record.write_text("{}")
    unfinished = [e for e in cache.entries(two_entries) if not e.complete]
    assert [e.key for e in unfinished] == ["0123abcd (unfinished)"]
    assert cli.main(["cache", "prune", "--older-than", "100", "--cache-dir",
                     str(two_entries)]) == 0
    assert not leftover.exists() and record.exists() and len(cache.entries(two_entries)) == 4


def test_reusing_an_entry_makes_it_recent(two_entries, tmp_path):
    before = {e.key: e.last_used for e in cache.entries(two_entries)}
    assert analyze(tmp_path / "old", tmp_path, "--image-size", "32") == 0
    after = {e.key: e.last_used for e in cache.entries(two_entries)}
    assert before.keys() == after.keys()
    assert all(after[k] > time.time() - 60 for k in after)  # the old ones were touched


def test_cache_command_refuses_bad_use_in_one_line(tmp_path, capsys):
    cases = [(["cache", "prune"], "needs what to remove"),
             (["cache", "--all"], "--all is for imclass cache prune"),
             (["cache", "prune", "--max-size", "lots"], "is not a size")]
    for args, message in cases:
        assert cli.main([*args, "--cache-dir", str(tmp_path / "c")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_sizes_parse_with_units():
    assert cache.parse_size("2GB") == 2 * 1024 ** 3
    assert cache.parse_size("500") == 500 * cache.MB
    assert cache.parse_size("1.5 g") == int(1.5 * 1024 ** 3)


def test_a_decode_that_would_fill_the_disk_is_refused_before_writing(tmp_path, monkeypatch,
                                                                      capsys):
    data = folder_dataset(tmp_path / "d", n_train=6, n_test=2)
    real = cache.shutil.disk_usage
    monkeypatch.setattr(cache.shutil, "disk_usage",
                        lambda p: real(p)._replace(free=50 * cache.MB))
    assert analyze(data, tmp_path) == 2
    err = capsys.readouterr().err
    assert "MB are free" in err and "imclass cache prune" in err and err.count("\n") == 1
    written = {p.suffix for p in (tmp_path / "cache" / "decoded").iterdir()}
    assert written <= {".lock"}  # no array, no half-written one: only the decode lock
    with pytest.raises(DataError, match="needs 977 MB"):
        cache.check_room(tmp_path, 1024 * 1000 * 1000, "many images")


def test_an_entry_decoded_from_a_relative_folder_lists_its_absolute_path(tmp_path, monkeypatch,
                                                                         capsys):
    folder_dataset(tmp_path / "mine", n_train=4, n_test=2)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["analyze", "mine", "--out", "analysis", "--cache-dir", "cache"]) == 0
    monkeypatch.chdir("/")  # `imclass cache` from another folder
    sources = {e.source for e in cache.entries(tmp_path / "cache")}
    assert sources == {str(tmp_path / "mine" / "train"), str(tmp_path / "mine" / "test")}
