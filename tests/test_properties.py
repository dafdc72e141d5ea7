"""Properties, not examples (hypothesis): the CSV reader, task detection and the config
parser never fail with anything but imclass's own error on arbitrary input, and a parsed CSV
keeps each valid row exactly once."""
import csv
import io
import string
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from imclass.config import KEYS, RunConfig, from_dict, override, validate
from imclass.data.folders import list_split
from imclass.data.labels import infer_task
from imclass.errors import ImclassError

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
NAMES = [f"img{k}.png" for k in range(4)]


def dataset_folder(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    for name in NAMES:
        Image.new("L", (4, 4)).save(root / "images" / name)
    return root


# anything a CSV file can hold: separators, quotes, NUL, newlines, BOMs, long lines, non-ASCII
csv_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)),
                   max_size=400) | st.lists(
    st.lists(st.sampled_from(["image", "label", "labels", "file", "", "img0.png", "a;b",
                              '"', ",", "\t", "\x00", "1", "0", "../x.png", "/etc/passwd", ".",
                              "ü", "x" * 300]), max_size=5), max_size=8).map(
    lambda rows: "\n".join(",".join(r) for r in rows))


@SETTINGS
@given(text=csv_text, raw_bytes=st.binary(max_size=60))
@example(text="image,label\n./,a", raw_bytes=b".")  # a name that is the folder itself
def test_any_csv_is_listed_or_refused_with_our_error(text, raw_bytes):
    with tempfile.TemporaryDirectory() as tmp:
        folder = dataset_folder(Path(tmp))
        for content in (text.encode("utf-8"), raw_bytes):
            (folder / "labels.csv").write_bytes(content)
            try:
                listing = list_split("train", folder)
            except ImclassError:
                continue
            for entry in listing.entries:  # only real files inside the folder, labelled
                assert entry.path.is_file() and entry.labels
                assert entry.path.resolve().is_relative_to(folder.resolve())


row = st.tuples(st.sampled_from(NAMES + ["missing.png", ""]),
                st.lists(st.text(alphabet=string.ascii_letters + " é", min_size=0,
                                 max_size=6), max_size=3))


@SETTINGS
@given(rows=st.lists(row, max_size=25), delimiter=st.sampled_from([",", ";", "\t"]))
def test_a_parsed_csv_keeps_each_valid_row_exactly_once(rows, delimiter):
    label_sep = "|" if delimiter == ";" else ";"
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
    writer.writerow(["image", "label"])
    for name, labels in rows:
        writer.writerow([name, label_sep.join(labels)])
    expected = [(name, tuple(sorted({x.strip() for x in labels if x.strip()})))
                for name, labels in rows]
    expected = [e for e in expected if e[0] in NAMES and e[1]]
    with tempfile.TemporaryDirectory() as tmp:
        folder = dataset_folder(Path(tmp))
        (folder / "labels.csv").write_text(buffer.getvalue(), encoding="utf-8")
        listing = list_split("train", folder)
        got = [(e.path.name, e.labels) for e in listing.entries]
    assert got == expected


label_sets = st.lists(st.lists(st.text(max_size=8), min_size=1, max_size=3).map(tuple),
                      max_size=20)


@SETTINGS
@given(sets=label_sets, requested=st.sampled_from(["auto", "multiclass", "binary",
                                                    "multilabel", "hierarchical"]),
       sep=st.sampled_from(["/", ">", "::"]))
def test_task_detection_answers_a_task_or_our_error(sets, requested, sep):
    try:
        task = infer_task(sets, sep, requested)
    except ImclassError:
        return
    assert task in ("multiclass", "binary", "multilabel", "hierarchical")
    if requested != "auto":
        assert task == requested


values = st.none() | st.booleans() | st.integers(-10**12, 10**12) | \
    st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20) | \
    st.lists(st.integers(-5, 300) | st.text(max_size=4), max_size=5)
keys = st.sampled_from(sorted(KEYS) + [f"{KEYS[k][0]}.{k}" for k in sorted(KEYS)]) | \
    st.text(max_size=12)


@SETTINGS
@given(flat=st.dictionaries(keys, values | st.dictionaries(st.text(max_size=6), values,
                                                           max_size=3), max_size=6))
def test_the_config_parser_answers_a_config_or_our_error(flat):
    for parse in (lambda: from_dict(flat),
                  lambda: override(RunConfig(), {k: str(v) for k, v in flat.items()})):
        try:
            cfg = validate(parse())
        except ImclassError:
            continue
        assert isinstance(cfg, RunConfig)
