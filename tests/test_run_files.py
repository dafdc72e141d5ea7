"""Files around a run: a damaged or foreign run folder is refused in one line naming the file,
by every command that reads one (evaluate, predict, export, serve); an output that cannot hold
a run is refused before any work; a disk that fills up during training keeps what was
written, and the run resumes."""
import json
import shutil

import pytest

from imclass import cli


def edit_sidecar(run, change):
    path = run / "checkpoints" / "best.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def truncate_weights(run):
    path = run / "checkpoints" / "best.safetensors"
    path.write_bytes(path.read_bytes()[:1000])


DAMAGE = {
    "truncated weights": (truncate_weights, "best.safetensors does not match the checksum"),
    "garbled sidecar": (lambda run: (run / "checkpoints" / "best.json").write_text("{not json"),
                        "best.json is not valid JSON"),
    "missing sidecar": (lambda run: (run / "checkpoints" / "best.json").unlink(),
                        "best.json is missing"),
    "sidecar without its input": (lambda run: edit_sidecar(run, lambda m: m.pop("input")),
                                  "best.json lacks what it takes to rebuild the model"),
    "weights of another shape": (
        lambda run: edit_sidecar(run, lambda m: m["config"]["model"].update(widths=[8, 16, 32,
                                                                                    64])),
        "best.safetensors does not fit the model its sidecar describes"),
    "written by a newer imclass": (
        lambda run: edit_sidecar(run, lambda m: m["versions"].update(imclass="99.0.0")),
        "was written by imclass 99.0.0, newer than this imclass"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_each_command_names_the_damaged_file_in_one_line(trained_run, tmp_path, capsys,
                                                         damage):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("model*"))
    harm, message = DAMAGE[damage]
    harm(run)
    (tmp_path / "x.png").write_bytes(b"")
    commands = [["evaluate", str(run), "--quiet"], ["predict", str(run), str(tmp_path / "x.png")],
                ["export", str(run), "--out", str(tmp_path / "m.onnx")],
                ["serve", str(run), "--port", "0"]]
    for args in commands:
        assert cli.main(args) == 2, args
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (args, err)
    assert not (tmp_path / "m.onnx").exists()


def test_an_output_that_cannot_hold_a_run_is_refused_before_any_work(tmp_path, capsys,
                                                                      monkeypatch):
    import shutil as shutil_mod
    from collections import namedtuple

    taken = tmp_path / "a-file"
    taken.write_text("not a folder")
    assert cli.main(["train", "--out", str(taken / "run"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and err.count("\n") == 1
    usage = namedtuple("usage", "total used free")
    nearly_full = usage(10 ** 12, 10 ** 12, 10 * 2 ** 20)  # 10 MB free
    monkeypatch.setattr(shutil_mod, "disk_usage", lambda p: nearly_full)
    assert cli.main(["train", "--out", str(tmp_path / "run"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "only 10 MB free" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_disk_full_during_training_keeps_what_was_written_and_resumes(tmp_path, capsys,
                                                                        monkeypatch):
    import errno
    import os

    import imclass.resume as resume_mod

    real, calls = resume_mod.save_file, {"n": 0}

    def full_at_epoch_two(tensors, path):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        real(tensors, path)
    monkeypatch.setattr(resume_mod, "save_file", full_at_epoch_two)
    out = tmp_path / "run"
    flags = ["--subset", "1200", "--epochs", "3", "--batch-size", "64", "--quiet"]
    assert cli.main(["train", *flags, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and err.count("\n") == 1
    assert f"imclass train --resume {out}" in err
    assert json.loads((out / "checkpoints" / "state.json").read_text())["epoch"] == 1
    assert not list(out.rglob("*.tmp"))
    monkeypatch.setattr(resume_mod, "save_file", real)  # space made
    assert cli.main(["train", "--resume", str(out), "--quiet"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["epochs_run"] == 3 and run["stopped"] is None
