"""A damaged or foreign run folder is refused in one line naming the file, by every command
that reads one (evaluate, predict, export, serve)."""
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
