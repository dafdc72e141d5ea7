"""Compare finished runs: their key figures, the config values that differ, overlaid curves."""

from __future__ import annotations

from pathlib import Path

import yaml

from imclass.atomic import atomic_write_text
from imclass.errors import DataError
from imclass.report import STYLE, html_table, img_tag, read_json
from imclass.runfolder import read_history

FIGURES = [("test accuracy", "test", "accuracy"),
           ("test balanced accuracy", "test", "balanced_accuracy"),
           ("test macro F1", "test", "f1_macro"),
           ("test F1 (positive class)", "test", "f1_at_threshold"),  # binary runs
           ("test ROC AUC", "test", "roc_auc_macro"), ("best val accuracy", "validation", "val_acc"),
           ("best val loss", "validation", "val_loss")]


def _flat(config: dict) -> dict:
    return {f"{section}.{key}": value for section, values in config.items()
            for key, value in values.items()}


def load_runs(run_dirs: list[Path]) -> list[dict]:
    runs = []
    for d in map(Path, run_dirs):
        if not (d / "config.yaml").is_file() or not (d / "metrics.json").is_file():
            raise DataError(f"{d} is not a finished imclass run (no config.yaml or metrics.json)")
        runs.append({"name": d.name, "dir": d, "metrics": read_json(d / "metrics.json"),
                     "run": read_json(d / "run.json"), "history": read_history(d),
                     "config": _flat(yaml.safe_load((d / "config.yaml").read_text()))})
    names = [r["name"] for r in runs]
    for r in runs:  # runs from different parents may share a folder name
        if names.count(r["name"]) > 1:
            r["name"] = str(r["dir"])
    return runs


def figures_table(runs: list[dict]) -> tuple[list[str], list[list]]:
    """The key figures of each run; a figure no run has (a binary F1 among multiclass runs)
    is left out, one some runs lack reads '-'."""
    figures = [f for f in FIGURES if any(r["metrics"].get(f[1], {}).get(f[2]) is not None
                                         for r in runs)]
    header = ["run"] + [label for label, _, _ in figures] + ["parameters", "epochs", "seconds"]
    rows = [[r["name"]] + [_or_dash(r["metrics"].get(block, {}).get(key))
                           for _, block, key in figures]
            + [_or_dash(r["run"].get("model", {}).get("parameters")),
               r["run"].get("epochs_run"), round(r["run"].get("total_seconds", 0))]
            for r in runs]
    return header, rows


def _or_dash(value):
    return "-" if value is None else value


def differing_config(runs: list[dict]) -> tuple[list[str], list[list]]:
    keys = sorted({k for r in runs for k in r["config"]})
    differ = [k for k in keys if len({repr(r["config"].get(k)) for r in runs}) > 1]
    return ["key"] + [r["name"] for r in runs], [[k] + [r["config"].get(k) for r in runs]
                                                 for k in differ]


def text_table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        return f"{v:.4f}" if isinstance(v, float) else str(v)
    cells = [header] + [[cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells)


def curves_plot(runs: list[dict], path: Path) -> Path:
    from imclass.plots import pyplot, save_figure
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for r in runs:
        epochs = [h["epoch"] for h in r["history"]]
        axes[0].plot(epochs, [h["val_loss"] for h in r["history"]], "o-", label=r["name"])
        axes[1].plot(epochs, [h["val_acc"] for h in r["history"]], "o-", label=r["name"])
    for ax, title in zip(axes, ("validation loss", "validation accuracy")):
        ax.set(title=title, xlabel="epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def compare(run_dirs: list[str | Path], out: str | Path = "compare.html") -> tuple[str, Path]:
    """(console text, path of the HTML page) comparing the runs."""
    if len(run_dirs) < 2:
        raise DataError("give at least two run folders to compare")
    runs = load_runs(run_dirs)
    figures, config = figures_table(runs), differing_config(runs)
    text = (text_table(*figures) + "\n\nconfig values that differ:\n"
            + (text_table(*config) if config[1] else "(none)"))
    out = Path(out)
    plot = curves_plot(runs, out.with_suffix(".png"))
    html = ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>imclass: comparing {len(runs)} runs</title><style>{STYLE}</style></head>"
            f"<body><h1>Comparing {len(runs)} runs</h1><h2>Key figures</h2>{html_table(*figures)}"
            f"<h2>Config values that differ</h2>"
            f"{html_table(*config) if config[1] else '<p>None: the configs are the same.</p>'}"
            f"<h2>Validation curves</h2>{img_tag(plot, 'validation curves of every run')}"
            "</body></html>\n")
    atomic_write_text(out, html)
    plot.unlink()  # embedded in the page
    return text, out
