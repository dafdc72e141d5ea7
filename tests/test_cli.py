import subprocess
import sys

import pytest

from imclass import cli
from imclass.data import fashion_mnist


def run_cli(capsys, *args):
    code = cli.main(list(args))
    return code, capsys.readouterr().err


def test_help_is_instant_and_loads_no_torch():
    code = ("import sys; from imclass import cli\n"
            "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported by --help'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "train" in out.stdout and "predict" in out.stdout


def test_unknown_flag_suggests_the_nearest(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--epoch", "3"])
    assert exit_.value.code == 2
    assert "did you mean --epochs?" in capsys.readouterr().err


def test_bad_value_is_one_line_with_the_range(capsys):
    code, err = run_cli(capsys, "train", "--lr", "-0.1")
    assert code == 2 and err.strip() == "imclass: error: 'lr' must be in (0, 10]; got -0.1"
    code, err = run_cli(capsys, "train", "--val-fraction", "1.5")
    assert code == 2 and "'val_fraction' must be in (0, 1)" in err


def test_unknown_yaml_key_names_file_and_nearest_key(tmp_path, capsys):
    (tmp_path / "run.yaml").write_text("train:\n  optimiser: adam\n")
    code, err = run_cli(capsys, "train", "--config", str(tmp_path / "run.yaml"))
    assert code == 2 and "run.yaml: unknown config key 'train.optimiser'" in err
    assert "did you mean 'optimizer'?" in err


def test_missing_data_is_one_clear_sentence(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("IMCLASS_DATA", raising=False)
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", tmp_path / "none")
    monkeypatch.setattr(fashion_mnist, "download",
                        lambda target: (_ for _ in ()).throw(OSError("offline")))
    code, err = run_cli(capsys, "train", "--cache-dir", str(tmp_path / "cache"), "--out",
                        str(tmp_path / "run"), "--quiet")
    assert code == 2
    assert err.count("\n") == 1 and "Fashion-MNIST was not found" in err
    assert "apt-get install dataset-fashion-mnist" in err


def test_predict_on_a_missing_run_or_image(tmp_path, capsys):
    code, err = run_cli(capsys, "predict", str(tmp_path / "norun"), "x.png")
    assert code == 2 and "run folder" in err and "does not exist" in err
