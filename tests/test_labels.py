"""`imclass labels`: images put in the wrong class folder on purpose are found by K-fold
out-of-fold predictions and confident learning; the corrections file feeds
`imclass train --relabel/--exclude`, and the run's report says how many rows changed."""
import csv
import json
import shutil

import pytest

from imagedata import folder_dataset
from imclass import cli

pytestmark = pytest.mark.slow
QUICK = ["--model", "cnn", "--epochs", "10", "--batch-size", "16", "--lr", "0.05", "--quiet"]


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """A colour-coded dataset with 4 red images moved into green/, audited with 3 folds."""
    root = tmp_path_factory.mktemp("labels")
    data = folder_dataset(root / "pets", n_train=24, n_test=6)
    moved = []
    for path in sorted((data / "train" / "red").iterdir())[:4]:
        target = data / "train" / "green" / f"was-red-{path.name}"
        shutil.move(path, target)
        moved.append(f"green/{target.name}")
    out = root / "review"
    assert cli.main(["labels", str(data), "--folds", "3", "--out", str(out), "--cache-dir",
                     str(root / "cache"), *QUICK]) == 0
    with (out / "label_issues.csv").open() as fh:
        issues = list(csv.DictReader(fh))
    return root, data, out, moved, issues


def test_mislabelled_images_are_found_and_ranked_first(audited):
    root, data, out, moved, issues = audited
    found = [i["image"] for i in issues]
    hits = [f for f in found if f in moved]
    assert len(hits) >= 3, (moved, found)  # recall at least 3 of 4 on this easy set
    assert len(found) <= len(hits) + 2  # and few false alarms
    assert set(found[:len(hits)]) == set(hits)  # the planted ones are the likeliest
    assert all(i["given"] == "green" and i["suggested"] == "red" for i in issues
               if i["image"] in moved)
    confidences = [float(i["self_confidence"]) for i in issues]
    assert confidences == sorted(confidences)
    page = (out / "review.html").read_text()
    assert page.count('class="card"') == len(issues) and "data:image/png;base64" in page


def test_corrections_relabel_and_exclude_in_training_and_the_report_says_so(audited):
    root, data, out, moved, issues = audited
    rows = list(csv.DictReader((out / "corrections.csv").open()))
    assert {r["action"] for r in rows} == {"relabel"}
    rows[-1]["action"] = "exclude"  # the user's edit: leave one out instead
    with (out / "corrections.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, ["image", "action", "given", "new_label"])
        writer.writeheader()
        writer.writerows(rows)
    run = root / "run"
    assert cli.main(["train", "--data", str(data), "--out", str(run), "--relabel",
                     str(out / "corrections.csv"), "--exclude", str(out / "corrections.csv"),
                     "--cache-dir", str(root / "cache"), *QUICK]) == 0
    findings = {f["code"]: f for f in json.loads((run / "analysis.json").read_text())["findings"]}
    assert findings["relabelled"]["message"].startswith(f"{len(rows) - 1} image(s) relabelled")
    assert findings["excluded"]["message"].startswith("1 image(s) left out")
    counts = json.loads((run / "run.json").read_text())["data"]["counts"]
    total = sum(sum(c.values()) for c in counts.values())
    assert total == 3 * (24 + 6) - 1
    assert "relabelled as corrections.csv says" in (run / "report.html").read_text()


def test_bad_uses_are_refused_in_one_line(audited, capsys, tmp_path):
    root, data, out, moved, issues = audited
    (tmp_path / "bad.csv").write_text("file,label\nx.png,red\n")
    cases = [(["labels", str(data), "--folds", "1"], "at least 2 folds"),
             (["train", "--data", str(data), "--relabel", str(tmp_path / "bad.csv")],
              "needs a header with an image column"),
             (["train", "--relabel", str(out / "corrections.csv")], "fashion-mnist's files"),
             (["labels", str(data), "--folds", "50", "--cache-dir", str(root / "cache"),
               "--quiet"], "fewer images than --folds 50")]
    for args, message in cases:
        assert cli.main(args) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_a_csv_datasets_issues_name_their_csv_line(tmp_path):
    from imagedata import csv_dataset

    data = csv_dataset(tmp_path / "tags", "multiclass", n_train=60, n_test=15)
    lines = (data / "train" / "labels.csv").read_text().splitlines()
    flipped = {}
    for line in (5, 9, 13):  # 1-based CSV lines, the header is line 1
        name, label = lines[line - 1].split(",")
        new = "green" if label != "green" else "blue"
        lines[line - 1] = f"{name},{new}"
        flipped[f"images/{name}"] = line
    (data / "train" / "labels.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "review"
    assert cli.main(["labels", str(data), "--folds", "3", "--out", str(out), "--cache-dir",
                     str(tmp_path / "cache"), *QUICK]) == 0
    issues = list(csv.DictReader((out / "label_issues.csv").open()))
    named = {i["image"]: int(i["csv_row"]) for i in issues if i["image"] in flipped}
    assert len(named) >= 2 and all(named[n] == flipped[n] for n in named), (flipped, issues)


def test_fold_models_near_chance_list_no_image_as_mislabelled(tmp_path, capsys):
    """Labels that say nothing of the images (each image's label drawn at random): the fold
    models agree with them about as often as chance, so nothing is listed, and it says why."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    for i in range(60):
        folder = tmp_path / "coin" / "train" / ("heads", "tails")[int(rng.integers(2))]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
            folder / f"{i}.png")
    out = tmp_path / "review"
    assert cli.main(["labels", str(tmp_path / "coin"), "--folds", "2", "--out", str(out),
                     "--cache-dir", str(tmp_path / "cache"), "--model", "cnn", "--epochs",
                     "3", "--batch-size", "16", "--lr", "0.05"]) == 0
    err = capsys.readouterr().err
    assert "Cohen's kappa" in err and "no image is listed as mislabelled" in err
    with (out / "label_issues.csv").open() as fh:
        assert list(csv.DictReader(fh)) == []


def test_only_images_the_models_place_elsewhere_with_confidence_are_listed():
    import numpy as np
    import torch

    from imclass.data.images import ImageSet
    from imclass.label_issues import SURE_OTHER, find_issues
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 40)
    probs = np.full((120, 3), 0.02)
    probs[np.arange(120), labels] = 0.96  # the fold models agree with most labels
    probs[0] = [0.01, 0.98, 0.01]  # given a, surely b
    probs[2] = [0.01, 0.01, 0.98]  # given a, surely c
    probs[1] = [0.002, 0.499, 0.499]  # given a, torn between b and c
    probs += rng.uniform(0, 1e-4, probs.shape)
    probs /= probs.sum(1, keepdims=True)
    images = ImageSet(torch.zeros(120, 1, 2, 2, dtype=torch.uint8), torch.as_tensor(labels),
                      ("a", "b", "c"))
    from cleanlab.filter import find_label_issues
    assert 1 in find_label_issues(labels, probs, filter_by="low_self_confidence")  # alone
    found = set(find_issues(images, probs).tolist())
    assert 1 not in found and len(found) == 1 and found <= {0, 2} and SURE_OTHER == 0.5
