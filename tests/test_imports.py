"""The import layers of docs/design.md, checked by import-linter (the contracts live in
pyproject.toml): the package keeps them, and an upward import is caught with both modules named."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--no-cache"], cwd=folder, capture_output=True, text=True,
                          env={"PYTHONPATH": str(folder), "PATH": "/usr/bin:/bin"}, timeout=120)


def test_the_package_keeps_its_import_layers():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_contract_and_names_both_modules(tmp_path):
    shutil.copytree(ROOT / "imclass", tmp_path / "imclass",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with (tmp_path / "imclass" / "metrics.py").open("a") as fh:
        fh.write("\nfrom imclass.commands.train import train  # a stage reaching up\n")
    result = lint(tmp_path)
    assert result.returncode != 0
    assert "imclass.metrics is not allowed to import imclass.commands.train" in result.stdout
    assert "No cycles are allowed in imclass" in result.stdout
