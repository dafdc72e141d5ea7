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
font-size:.85em} a{color:#1f5fa8}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:1em;align-items:start}
"""


def img_tag(path: Path, alt: str) -> str:
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}">'


def html_table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        return f"{v:.4f}" if isinstance(v, float) else escape(str(v))
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _fmt(v, pct: bool = False) -> str:
    if v is None:
        return "n/a"
    return f"{v:.2%}" if pct else f"{v:.4f}"


def _summary(run: dict, test: dict) -> str:
    val = run.get("validation", {})
    cards = [("test accuracy", _fmt(test.get("accuracy"), True)),
             ("test top-3 accuracy", _fmt(test.get("top_3"), True)),
             ("test macro F1", _fmt(test.get("f1_macro"))),
             ("test ROC AUC", _fmt(test.get("roc_auc_macro"))),
             ("best validation accuracy", _fmt(val.get("val_acc"), True)),
             ("run time", f"{run.get('total_seconds', run.get('train_seconds', 0)):.0f} s")]
    html = '<div class="cards">' + "".join(
        f'<div class="card">{escape(k)}<b>{escape(v)}</b></div>' for k, v in cards) + "</div>"
    model, data = run.get("model", {}), run.get("data", {})
    html += (f"<p>A <b>multiclass</b> classifier of {len(data.get('classes', []))} classes, "
             f"model <b>{escape(str(model.get('name')))}</b> "
             f"({model.get('parameters', 0):,} parameters, "
             f"{model.get('flops_per_image', 0) / 1e6:.1f} MFLOPs per image), trained on "
             f"{escape(str(run.get('hardware')))} from {escape(str(data.get('source')))}. "
             f"Best epoch {run.get('best_epoch')} of {run.get('epochs_run')}"
             f"{' (stopped early)' if run.get('stopped_early') else ''}.</p>")
    return html


def _data_section(data: dict, plots: Path) -> str:
    counts = data.get("counts", {})
    names = data.get("classes", [])
    rows = [[name] + [counts.get(s, {}).get(name, 0) for s in ("train", "val", "test")]
            for name in names]
    rows.append(["total"] + [sum(counts.get(s, {}).values()) for s in ("train", "val", "test")])
    size = data.get("size", ["?", "?"])
    return (f"<p>{len(names)} classes, images {data.get('channels')} channel(s) of "
            f"{size[0]}x{size[1]} pixels. The validation split is held out from the training "
            "images (stratified); it picks the best epoch. The test set is used only for the "
            "results below.</p>"
            + html_table(["class", "train", "validation", "test"], rows)
            + img_tag(plots / "augmented.png", "training images after augmentation"))


def _training_section(run: dict, plots: Path) -> str:
    warnings = "".join(f'<div class="warn">{escape(w["message"])}</div>'
                       for w in run.get("overfitting", []))
    stop = (f"Early stopping ended training after epoch {run.get('epochs_run')}; "
            if run.get("stopped_early") else f"Training ran all {run.get('epochs_run')} epochs; ")
    return (f"<p>{stop}the weights kept are those of epoch {run.get('best_epoch')}, the lowest "
            "validation loss (dashed line).</p>"
            + (warnings or "<p>No overfitting warning was raised.</p>")
            + img_tag(plots / "curves.png", "loss, accuracy and learning-rate curves"))


METRIC_ROWS = [("accuracy", "accuracy"), ("top_3", "top-3 accuracy"),
               ("top_5", "top-5 accuracy"), ("precision_macro", "precision (macro)"),
               ("recall_macro", "recall (macro)"), ("f1_macro", "F1 (macro)"),
               ("precision_weighted", "precision (weighted)"),
               ("recall_weighted", "recall (weighted)"), ("f1_weighted", "F1 (weighted)"),
               ("roc_auc_macro", "ROC AUC (macro, one-vs-rest)"),
               ("roc_auc_micro", "ROC AUC (micro)"),
               ("average_precision_macro", "average precision (macro)"),
               ("ece", "expected calibration error")]


def _results(test: dict, tta: dict, plots: Path) -> str:
    header = ["metric", "value"] + (["with flip TTA"] if tta else [])
    rows = [[label, test[key]] + ([tta.get(key)] if tta else [])
            for key, label in METRIC_ROWS if test.get(key) is not None]
    html = html_table(header, rows)
    per_class = test.get("per_class", {})
    html += "<h3>Per class</h3>" + html_table(
        ["class", "precision", "recall", "F1", "support", "ROC AUC", "AP"],
        [[name, m["precision"], m["recall"], m["f1"], m["support"],
          m["auc"] if m["auc"] is not None else "n/a",
          m.get("average_precision") if m.get("average_precision") is not None else "n/a"]
         for name, m in per_class.items()])
    confused = test.get("most_confused", [])
    if confused:
        html += "<h3>Most confused pairs</h3>" + html_table(
            ["true class", "predicted as", "images"],
            [[c["true"], c["predicted"], c["count"]] for c in confused])
    pairs = [(("confusion", "confusion matrix"),
              ("confusion_normalized", "normalized confusion matrix")),
             (("roc", "ROC curves"), ("pr", "precision-recall curves")),
             (("calibration", "reliability diagram"),)]
    for pair in pairs:
        html += '<div class="pair">' + "".join(img_tag(plots / f"{name}.png", alt)
                                               for name, alt in pair) + "</div>"
    return html


def _interpretation(plots: Path) -> str:
    return "".join(img_tag(plots / f"{name}.png", alt) for name, alt in (
        ("predictions", "sample predictions per class"), ("mistakes", "worst mistakes"),
        ("unsure", "least confident right answers"), ("gradcam", "Grad-CAM heatmaps"),
        ("embedding", "embedding of the test set")))


def build_report(run_dir: Path) -> str:
    run_dir = Path(run_dir)
    run = read_json(run_dir / "run.json")
    metrics = read_json(run_dir / "metrics.json")
    test, tta = metrics.get("test", {}), metrics.get("test_tta", {})
    plots = run_dir / "plots"
    config_path = run_dir / "config.yaml"
    config_text = config_path.read_text() if config_path.is_file() else ""
    versions = ", ".join(f"{k} {v}" for k, v in run.get("versions", {}).items())
    sections = [
        ("summary", "Summary", _summary(run, test)),
        ("data", "Data", _data_section(run.get("data", {}), plots)),
        ("training", "Training", _training_section(run, plots)),
        ("results", "Results on the test set",
         _results(test, tta, plots) if test else "<p>Not evaluated.</p>"),
        ("interpretation", "Interpretation", _interpretation(plots)),
        ("reproduce", "Reproduce",
         f"<p>Command: <code>{escape(str(run.get('command') or 'imclass train --config config.yaml'))}"
         f"</code> (or <code>imclass train --config config.yaml</code> with this folder's "
         f"config).</p><p>Versions: {escape(versions)}. Hardware: "
         f"{escape(str(run.get('hardware')))}.</p><pre>{escape(config_text)}</pre>"),
    ]
    nav = " · ".join(f'<a href="#{key}">{escape(title)}</a>' for key, title, _ in sections)
    body = "\n".join(f'<h2 id="{key}">{escape(title)}</h2>{html}' for key, title, html in sections)
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>imclass report: {escape(run_dir.name)}</title><style>{STYLE}</style>"
            f"</head><body><h1>imclass run: {escape(run_dir.name)}</h1>"
            f'<p class="sub">{nav}</p>{body}</body></html>\n')


def write_report(run_dir: Path) -> Path:
    path = Path(run_dir) / "report.html"
    atomic_write_text(path, build_report(run_dir))
    return path
