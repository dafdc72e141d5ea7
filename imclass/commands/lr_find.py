"""`imclass lr-find`: the learning-rate range test alone, over the run's own data and model."""

from __future__ import annotations

import json
from pathlib import Path

from imclass.console import make_log
from imclass.lr_find import plot, quiet_output, range_test
from imclass.run_setup import build_run_model, prepare_training


def lr_find(config, out: Path, quiet: bool = False, iterations: int = 100) -> dict:
    """`imclass lr-find`: the test alone; writes out/lr_find.png and out/lr_find.json."""
    log = make_log(quiet)
    setup = prepare_training(config, log)
    model, _ = build_run_model(setup, log)
    with quiet_output():
        result = range_test(setup, model, iterations)
    out.mkdir(parents=True, exist_ok=True)
    plot(result, out / "lr_find.png")
    (out / "lr_find.json").write_text(json.dumps(result, indent=2))
    return result
