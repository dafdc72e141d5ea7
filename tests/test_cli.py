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


def test_a_flag_of_another_command_is_not_suggested_as_itself(capsys):
    with pytest.raises(SystemExit):
        cli.main(["prune", "some-run", "--cache-dir", "c"])
    err = capsys.readouterr().err
    assert "did you mean --cache-dir" not in err and "imclass prune --help" in err


def test_a_mistyped_command_gets_the_nearest_and_bare_imclass_gets_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["trian"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "unknown command 'trian'; did you mean 'train'?" in err
    assert err.count("\n") == 1  # one line, not argparse's list of every command
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: imclass") and "predict" in out


def test_usage_lines_name_each_value(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    usage = capsys.readouterr().out
    assert "[--lr LR]" in usage and "[--data DATA]" in usage and " V]" not in usage


def test_bad_value_is_one_line_with_the_range(capsys):
    code, err = run_cli(capsys, "train", "--lr", "-0.1")
    assert code == 2 and err.strip() == "imclass: error: 'lr' must be in (0, 10]; got -0.1"
    code, err = run_cli(capsys, "train", "--val-fraction", "1.5")
    assert code == 2 and "'val_fraction' must be in [0, 1)" in err


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


def test_version_names_imclass_torch_and_timm():
    from importlib.metadata import version
    out = subprocess.run([sys.executable, "-m", "imclass", "--version"], capture_output=True,
                         text=True)
    assert out.returncode == 0
    assert out.stdout.strip() == (f"imclass {imclass_version()}, torch {version('torch')}, "
                                  f"timm {version('timm')}")


def imclass_version() -> str:
    from imclass.version import __version__
    return __version__


def test_a_command_piped_into_head_exits_quietly():
    """`imclass models | head -2`: the reader leaves early; no BrokenPipeError traceback."""
    shell = f"{sys.executable} -m imclass models | head -2"
    out = subprocess.run(["bash", "-o", "pipefail", "-c", shell], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    assert out.stderr == "" and len(out.stdout.splitlines()) == 2


def test_models_matches_a_bare_word_and_describes_each(capsys):
    assert cli.main(["models", "resnet5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["model", "default", "input", "parameters", "weights"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert "resnet50" in rows and "cnn" not in rows  # a substring, not an exact name
    assert "3x224x224" in rows["resnet50"] and "25.6M" in rows["resnet50"]
    assert cli.main(["models", "lite0"]) == 0
    lite0 = next(x for x in capsys.readouterr().out.splitlines()
                 if x.startswith("efficientnet_lite0 "))
    assert "installed package (offline)" in lite0
    assert cli.main(["models", "resnet5?"]) == 0  # wildcards still work as written
    names = [x.split()[0] for x in capsys.readouterr().out.splitlines()[1:]]
    assert "resnet50" in names and all(n.startswith("resnet5") and len(n) == 8 for n in names)
    code, err = run_cli(capsys, "models", "no-such-net")
    assert code == 2 and "no model matches 'no-such-net'" in err


@pytest.mark.slow
def test_logs_off_a_terminal_have_no_redraws_and_verbose_adds_stage_times(tmp_path):
    run = [sys.executable, "-m", "imclass", "train", "--subset", "600", "--epochs", "2",
           "--out", str(tmp_path / "r1")]
    out = subprocess.run(run + ["--verbose"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "\r" not in out.stderr, "a progress bar redrew itself into a log"
    epochs = [x for x in out.stderr.splitlines() if x.startswith("epoch ")]
    assert len(epochs) == 2 and epochs[0].startswith("epoch   1/2  train loss")
    stages = [x.split(":")[0] for x in out.stderr.splitlines() if x.startswith("stage ")]
    assert stages == ["stage data", "stage training", "stage evaluation", "stage report"]
    quiet = subprocess.run(run[:-1] + [str(tmp_path / "r2"), "--quiet"], capture_output=True,
                           text=True)
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert quiet.stdout.strip() == str(tmp_path / "r2" / "report.html")
