"""The bad-input corpus (tests/badinputs.py): each case gets a one-line error with a non-zero
exit code and no traceback, or (a bad image inside a dataset, a file imclass can convert) the
run goes on with the file listed as skipped or used; docs/reliability.md tables every case."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from badinputs import CASES, Case
from imclass import cli

DOCS = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"
# Root reads any file whatever its mode: the permission cases drop the two capabilities that
# let it (util-linux's setpriv), so root meets "permission denied" like any user.
NO_OVERRIDE = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
               "--bounding-set=-dac_override,-dac_read_search"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus") / "run"
    assert cli.main(["train", "--subset", "300", "--epochs", "1", "--quiet", "--out",
                     str(out)]) == 0
    return out


def run_case(case: Case, folder: Path, run: Path, capsys) -> tuple[int, str, str]:
    argv = case.build(folder, run)
    if case.as_other_user and os.geteuid() == 0:
        assert shutil.which("setpriv"), "the permission cases need setpriv (util-linux)"
        done = subprocess.run([*NO_OVERRIDE, sys.executable, "-m", "imclass", *argv],
                              capture_output=True, text=True)
        return done.returncode, done.stdout, done.stderr
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse's own refusals exit from inside
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gets_a_sentence_not_a_traceback(case, tiny_run, tmp_path, capsys):
    code, out, err = run_case(case, tmp_path, tiny_run, capsys)
    assert "Traceback" not in out + err
    assert code == case.exit_code, (code, err[-1500:], out[-1500:])
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("imclass: error: "), err
        assert case.says in lines[0], lines[0]
    else:
        assert case.says in out + err, out + err
    analysis = tmp_path / "analysis" / "analysis.json"
    if analysis.is_file():
        skipped = [s["file"] for s in json.loads(analysis.read_text())["skipped"]]
        expected = [f"red/{case.skipped}"] if case.skipped else []
        assert skipped == expected


def test_the_corpus_is_large_and_every_case_is_in_the_docs():
    assert len(CASES) >= 40 and len({c.name for c in CASES}) == len(CASES)
    table = DOCS.read_text()
    missing = [c.name for c in CASES if f"| `{c.name}` |" not in table]
    assert not missing, f"docs/reliability.md does not table {missing}"
