"""report.html: one self-contained page (plots embedded, nothing from the network) per run.

It is built from the run folder alone (config.yaml, run.json, metrics.json, history.csv,
plots/), so it can be rebuilt at any time with `write_report(run_dir)`.
"""

from __future__ import annotations

import base64
import json
from html import escape
from pathlib import Path

from imclass.atomic import atomic_write_text

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#1d232a;line-height:1.45}
h1{margin-bottom:.1em} h2{border-bottom:2px solid #e3e7ec;padding-bottom:.2em;margin-top:1.8em}
.sub{color:#5b6773;margin-top:0} table{border-collapse:collapse;margin:.6em 0}
td,th{border:1px solid #d9dee4;padding:.3em .7em;text-align:right} th{background:#f3f5f8}
td:first-child,th:first-child{text-align:left} .cards{display:flex;gap:1em;flex-wrap:wrap}
.card{background:#f3f5f8;border-radius:8px;padding:.7em 1.1em;min-width:9em}
.card b{display:block;font-size:1.5em} img{max-width:100%;border:1px solid #e3e7ec;
border-radius:4px;margin:.4em 0} .warn{background:#fff4e0;border-left:4px solid #f0a020;
padding:.5em .9em;margin:.5em 0} pre{background:#f3f5f8;padding:.8em;overflow-x:auto;
font-size:.85em}
"""


def _img(path: Path, alt: str) -> str:
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}">'


def _table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        return f"{v:.4f}" if isinstance(v, float) else escape(str(v))
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _summary(run: dict, test: dict) -> str:
    val = run.get("validation", {})
    cards = [("test accuracy", f"{test.get('accuracy', float('nan')):.2%}"),
             ("test macro F1", f"{test.get('f1_macro', float('nan')):.4f}"),
             ("test ROC AUC", f"{test.get('roc_auc_macro') or float('nan'):.4f}"),
             ("best val accuracy", f"{val.get('val_acc', float('nan')):.2%}"),
             ("run time", f"{run.get('total_seconds', run.get('train_seconds', 0)):.0f} s")]
    html = '<div class="cards">' + "".join(
        f'<div class="card">{escape(k)}<b>{escape(v)}</b></div>' for k, v in cards) + "</div>"
    model = run.get("model", {})
    data = run.get("data", {})
    html += (f"<p>Model <b>{escape(str(model.get('name')))}</b> "
             f"({model.get('parameters', 0):,} parameters, "
             f"{model.get('flops_per_image', 0) / 1e6:.1f} MFLOPs per image), trained on "
             f"{escape(str(run.get('hardware')))}. Dataset: {escape(str(data.get('source')))}. "
             f"Best epoch {run.get('best_epoch')} of {run.get('epochs_run')}"
             f"{' (stopped early)' if run.get('stopped_early') else ''}.</p>")
    return html


def _data_section(data: dict) -> str:
    counts = data.get("counts", {})
    names = data.get("classes", [])
    rows = [[name] + [counts.get(s, {}).get(name, 0) for s in ("train", "val", "test")]
            for name in names]
    rows.append(["total"] + [sum(counts.get(s, {}).values()) for s in ("train", "val", "test")])
    size = data.get("size", ["?", "?"])
    return (f"<p>{len(names)} classes, images {data.get('channels')} channel(s) of "
            f"{size[0]}x{size[1]} pixels. The validation split is held out from the training "
            "images (stratified); the test set is used only for the figures below.</p>"
            + _table(["class", "train", "validation", "test"], rows))


def _results(test: dict) -> str:
    keys = ["accuracy", "precision_macro", "recall_macro", "f1_macro", "precision_weighted",
            "recall_weighted", "f1_weighted", "roc_auc_macro"]
    html = _table(["metric", "value"], [[k, test[k]] for k in keys if test.get(k) is not None])
    per_class = test.get("per_class", {})
    rows = [[name, m["precision"], m["recall"], m["f1"], m["support"],
             m["auc"] if m["auc"] is not None else "n/a"] for name, m in per_class.items()]
    return html + "<h3>Per class</h3>" + _table(
        ["class", "precision", "recall", "F1", "support", "ROC AUC"], rows)


def build_report(run_dir: Path) -> str:
    run_dir = Path(run_dir)
    run = _read_json(run_dir / "run.json")
    test = _read_json(run_dir / "metrics.json").get("test", {})
    plots = run_dir / "plots"
    config_text = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").is_file() else ""
    warnings = "".join(f'<div class="warn">{escape(w["message"])}</div>'
                       for w in run.get("overfitting", []))
    versions = ", ".join(f"{k} {v}" for k, v in run.get("versions", {}).items())
    parts = [
        f"<h1>imclass run: {escape(run_dir.name)}</h1>",
        f'<p class="sub">{escape(str(run.get("data", {}).get("source", "")))}</p>',
        "<h2>Summary</h2>", _summary(run, test),
        "<h2>Data</h2>", _data_section(run.get("data", {})),
        "<h2>Training</h2>", warnings or "<p>No overfitting warning was raised.</p>",
        _img(plots / "curves.png", "training curves"),
        "<h2>Results on the test set</h2>", _results(test) if test else "<p>Not evaluated.</p>",
        _img(plots / "confusion.png", "confusion matrix"),
        _img(plots / "confusion_normalized.png", "normalized confusion matrix"),
        _img(plots / "roc.png", "ROC curves"),
        _img(plots / "predictions.png", "sample predictions"),
        "<h2>Reproduce</h2>",
        f"<p>Command: <code>{escape(str(run.get('command') or 'imclass train --config config.yaml'))}"
        f"</code></p><p>Versions: {escape(versions)}</p><pre>{escape(config_text)}</pre>",
    ]
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>imclass report: {escape(run_dir.name)}</title><style>{STYLE}</style>"
            "</head><body>" + "\n".join(parts) + "</body></html>\n")


def write_report(run_dir: Path) -> Path:
    path = Path(run_dir) / "report.html"
    atomic_write_text(path, build_report(run_dir))
    return path
