"""imclass as a package: the wheel `python -m build` makes holds what imclass needs at run
time and installs into a fresh environment; a missing optional library names its extra."""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from imclass import cli

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built offline (--no-isolation: this environment's setuptools) from a copy of the
    sources, so the checkout gets no build/ folder."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "imclass", src / "imclass",
                    ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation",
                           "--outdir", str(out), str(src)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    (path,) = out.glob("imclass-*.whl")
    return path


def test_the_wheel_holds_the_code_the_page_and_the_entry_point(wheel):
    from imclass.version import __version__

    assert wheel.name == f"imclass-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        info = f"imclass-{__version__}.dist-info"
        entry_points = z.read(f"{info}/entry_points.txt").decode()
        metadata = z.read(f"{info}/METADATA").decode()
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "imclass").rglob("*.py")}
    assert sources <= names, sources - names
    assert "imclass/web/index.html" in names
    assert not [n for n in names if n.startswith("tests/") or "__pycache__" in n]
    assert "[console_scripts]\nimclass = imclass.cli:main" in entry_points
    for extra in ("onnx", "serve", "tracking", "offline", "postgres", "all"):
        assert f"Provides-Extra: {extra}" in metadata
    assert "Requires-Dist: torch" in metadata


def test_the_wheel_installs_and_runs_outside_the_checkout(wheel, tmp_path):
    """A fresh environment that sees this one's libraries (a .pth file) but gets imclass from
    the wheel: the command, the version and the serve page come from the installed files."""
    import site

    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig."
                              "get_paths()['purelib'])"], capture_output=True, text=True,
                             check=True).stdout.strip()
    libraries = [p for p in site.getsitepackages() if "site-packages" in p]
    (Path(purelib) / "libraries.pth").write_text("\n".join(libraries) + "\n")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
                           "--target", purelib, str(wheel)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    check = ("import imclass, importlib.resources as r; "
             "print(imclass.__file__); "
             "print(len(r.files('imclass').joinpath('web/index.html').read_text()))")
    out = subprocess.run([str(python), "-c", check], capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    location, page_chars = out.stdout.split()
    assert location.startswith(purelib) and int(page_chars) > 1000
    version = subprocess.run([str(python), "-m", "imclass", "--version"], capture_output=True,
                             text=True, cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("imclass ")


@pytest.mark.parametrize("module,args,extra", [
    ("mlflow", ["train", "--track", "mlflow"], "tracking"),
    ("tensorboard", ["train", "--track", "tensorboard"], "tracking"),
    ("fastapi", ["serve", "some-run"], "serve"),
])
def test_a_missing_optional_library_names_its_extra(monkeypatch, capsys, tmp_path, module,
                                                    args, extra):
    monkeypatch.setitem(sys.modules, module, None)  # import now raises ImportError
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    assert cli.main([*args, "--out", str(out)] if args[0] == "train" else args) == 2
    err = capsys.readouterr().err
    assert f"pip install 'imclass[{extra}]'" in err and err.count("\n") == 1, err
    assert not out.exists(), "refused before any work"
