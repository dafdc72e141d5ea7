"""`imclass annotate`: the label store, the background model, the HTTP routes, and the page in
a real browser (Debian's chromium, driven by selenium) over a real server process."""
import csv
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from imagedata import bomb_png, draw
from imclass.assistant import Helper, active_order, least_sure
from imclass.commands.annotate import Session, create_app
from imclass.data.folders import list_split
from imclass.errors import ConfigError
from imclass.labelstore import LabelStore
from test_serve import answering, free_port

COLOURS = ("red", "green", "blue")


def pool(root: Path, n: int = 30, *, layout: str = "flat", seed: int = 0) -> dict[str, str]:
    """n tinted 20 px images, unlabelled (flat), in class folders, or beside a CSV of their
    labels (csv); {name relative to where the images lie: true colour}."""
    rng, truth = np.random.default_rng(seed), {}
    for i in range(n):
        colour = COLOURS[i % 3]
        name = f"{colour}/{i:03d}.png" if layout == "folders" else f"img{i:03d}.png"
        where = root / "images" if layout == "csv" else root
        (where / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(draw((colour,), rng)).save(where / name)
        truth[name] = colour
    if layout == "csv":
        with open(root / "given.csv", "w", newline="") as f:
            csv.writer(f).writerows([("image", "label")] + sorted(truth.items())[:12])
    return truth


def rows(path: Path) -> dict[str, str]:
    with open(path, newline="") as f:
        return {r["image"]: r["label"] for r in csv.DictReader(f)}


@pytest.fixture
def session(tmp_path):
    truth = pool(tmp_path / "photos")
    s = Session(tmp_path / "photos", list(COLOURS), False, tmp_path / "cache")
    yield s, TestClient(create_app(s)), truth
    s.close()


def label(client, name: str, labels: list[str], version: int):
    return client.post("/api/label", json={"name": name, "labels": labels, "version": version})


def test_each_label_is_in_labels_csv_at_once_and_training_reads_it(session, tmp_path):
    s, client, truth = session
    queue = client.get("/api/queue?mode=plain").json()
    assert [q["name"] for q in queue] == sorted(truth)  # plain: file order, all unlabelled
    for item in queue[:7]:
        assert label(client, item["name"], [truth[item["name"]]], 0).status_code == 200
        assert rows(s.store.csv_file)[item["name"]] == truth[item["name"]]
    listing = list_split("train", s.store.folder)  # the CSV beside the images, no images/
    assert {listing.relative(e.path): e.labels[0] for e in listing.entries} == \
        {q["name"]: truth[q["name"]] for q in queue[:7]}
    state = client.get("/api/state").json()
    assert state["labelled"] == 7 and sum(state["counts"].values()) == 7
    s.close()  # a new session (a restarted server) starts where this one stopped
    again = LabelStore(tmp_path / "photos", list(COLOURS))
    assert len(again.labelled()) == 7
    again.close()


def test_a_change_made_on_an_old_version_is_refused_with_the_labels_now_held(session):
    s, client, truth = session
    name = sorted(truth)[0]
    first = label(client, name, ["red"], 0)  # tab one
    assert first.status_code == 200 and first.json()["version"] == 1
    second = label(client, name, ["blue"], 0)  # tab two, which still saw version 0
    assert second.status_code == 409
    assert second.json()["item"]["labels"] == ["red"] and rows(s.store.csv_file)[name] == "red"
    changes = client.get("/api/changes?since=0").json()["items"]
    assert [(c["name"], c["labels"]) for c in changes] == [(name, ["red"])]
    assert client.get(f"/api/changes?since={s.store.seq}").json()["items"] == []
    # unlabelling is a change like any other; an unknown class is refused
    assert label(client, name, [], 1).json()["labels"] == []
    assert name not in rows(s.store.csv_file)
    bad = label(client, name, ["purple"], 2)
    assert bad.status_code == 422 and "unknown class 'purple'" in bad.json()["detail"]


def test_paths_outside_the_folder_and_unknown_names_are_refused(session, tmp_path):
    _, client, _ = session
    (tmp_path / "secret.png").write_bytes((tmp_path / "photos" / "img000.png").read_bytes())
    assert client.get("/image/%2E%2E/secret.png").status_code == 403
    assert client.get("/image/nothing.png").status_code == 404
    assert label(client, "../secret.png", ["red"], 0).status_code == 403
    assert label(client, "/etc/passwd", ["red"], 0).status_code == 403
    shown = client.get("/image/img000.png")
    assert shown.status_code == 200 and shown.headers["content-type"] == "image/png"


def test_bad_files_are_listed_with_their_reason_and_never_break_the_page(tmp_path):
    folder = tmp_path / "photos"
    pool(folder, 9)
    (folder / "broken.png").write_bytes(b"not a png")
    (folder / "empty.jpg").write_bytes(b"")
    bomb_png(folder / "bomb.png")
    s = Session(folder, list(COLOURS), False, tmp_path / "cache")
    client = TestClient(create_app(s))
    bad = {b["name"]: b["reason"] for b in client.get("/api/state").json()["bad"]}
    assert set(bad) == {"broken.png", "empty.jpg", "bomb.png"}
    assert "not an image" in bad["broken.png"] and "empty" in bad["empty.jpg"]
    assert "pixel" in bad["bomb.png"]
    refused = client.get("/image/broken.png")
    assert refused.status_code == 415 and "broken.png" in refused.json()["detail"]
    names = [q["name"] for q in client.get("/api/queue?filter=all").json()]
    assert len(names) == 9 and "broken.png" not in names
    s.close()


def test_class_folders_and_a_csv_give_the_labels_to_start_from(tmp_path):
    truth = pool(tmp_path / "folders", 12, layout="folders")
    store = LabelStore(tmp_path / "folders")  # no --classes: the class folders are the classes
    assert store.classes == ["blue", "green", "red"]
    assert {i.name: i.labels[0] for i in store.labelled()} == truth
    store.close()
    truth = pool(tmp_path / "given", 30, layout="csv")
    store = LabelStore(tmp_path / "given", ["red", "green", "blue", "orange"])
    assert store.classes == ["red", "green", "blue", "orange"]  # as asked, in that order
    assert len(store.labelled()) == 12 and store.root == tmp_path / "given" / "images"
    item = next(i for i in store.items if not i.labels)
    store.set(item.name, [truth[item.name]], 0)
    assert len(rows(store.csv_file)) == 13 and (tmp_path / "given" / "given.csv").is_file()
    listing = list_split("train", tmp_path / "given")  # labels.csv wins over given.csv
    assert len(listing.entries) == 13 and listing.csv_file.name == "labels.csv"
    store.close()


def test_one_session_per_folder_and_clear_errors(tmp_path, capsys):
    from imclass import cli

    pool(tmp_path / "photos", 6)
    first = LabelStore(tmp_path / "photos", list(COLOURS))
    with pytest.raises(ConfigError, match="another imclass annotate"):
        LabelStore(tmp_path / "photos", list(COLOURS))
    first.close()
    with pytest.raises(ConfigError, match="--classes"):
        LabelStore(tmp_path / "photos")  # nothing labelled and no classes named
    (tmp_path / "split" / "train").mkdir(parents=True)
    for argv, says in ((["annotate", str(tmp_path / "missing")], "does not exist"),
                       (["annotate", str(tmp_path / "split")], "label one split at a time"),
                       (["annotate", str(tmp_path / "photos"), "--classes", "a",
                         "--classes-from", "x.csv"], "not both")):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 1, err


def test_several_labels_per_image_with_multilabel(tmp_path):
    pool(tmp_path / "photos", 6)
    store = LabelStore(tmp_path / "photos", list(COLOURS), multilabel=True)
    store.set("img000.png", ["red", "blue"], 0)
    assert rows(store.csv_file)["img000.png"] == "blue;red"
    listing = list_split("train", store.folder)
    assert listing.entries[0].labels == ("blue", "red")
    store.close()
    single = LabelStore(tmp_path / "photos", list(COLOURS))
    with pytest.raises(ValueError, match="--multilabel"):
        single.set("img001.png", ["red", "blue"], 0)
    single.close()


def test_the_active_order_puts_the_least_sure_first_with_some_random_ones():
    probs = np.array([[0.98, 0.01, 0.01], [0.4, 0.35, 0.25], [0.6, 0.3, 0.1],
                      [0.34, 0.33, 0.33], [0.9, 0.05, 0.05]] * 4)
    doubt = least_sure(probs, multilabel=False)
    assert doubt[3] > doubt[1] > doubt[2] > doubt[4] > doubt[0]
    order = active_order(np.arange(20), doubt, seed=0)
    assert sorted(order.tolist()) == list(range(20))  # every image once
    assert [probs[k].max() for k in order[:4]] == [0.34] * 4  # the four least sure lead
    plain = active_order(np.arange(20), doubt, seed=0, random_share=0)
    assert list(doubt[plain]) == sorted(doubt, reverse=True)
    assert least_sure(np.array([[0.5, 0.99], [0.9, 0.02]]), multilabel=True)[0] == 1.0


def test_the_model_waits_for_five_labels_each_then_suggests_and_reviews(tmp_path):
    truth = pool(tmp_path / "photos", 45)
    names = sorted(truth)
    shutil.copy(tmp_path / "photos" / names[0], tmp_path / "photos" / "copy.png")  # a copy
    store = LabelStore(tmp_path / "photos", list(COLOURS))
    from imclass.data.decode import inspect_all
    infos = dict(zip([i.name for i in store.items], inspect_all([str(i.path)
                                                                 for i in store.items])))
    helper = Helper(store, infos, tmp_path / "cache")
    helper.prepare()
    assert [(set(d[:2]), d[2]) for d in helper.duplicates] == [({"copy.png", names[0]}, 0)]
    for name in names[:12]:
        store.set(name, [truth[name]], 0)
    assert not helper.step() and "5 labels of each class" in helper.status
    given = names[:30]
    wrong = given[-1]  # one label flipped: a red image called green, or so on
    for name in given[12:]:
        store.set(name, [COLOURS[(COLOURS.index(truth[name]) + (name == wrong)) % 3]], 0)
    assert helper.step() and "trained on 30 labels" in helper.status
    rest = [n for n in names if n not in given]
    right = [helper.suggestion(n)["labels"][0] == truth[n] for n in rest]
    assert sum(right) >= 0.9 * len(rest), helper.status
    assert helper.doubts[:1] == [wrong], helper.doubts
    assert not helper.step()  # nothing new: no refit
    assert set(helper.unlabelled("active")) == set(rest) | {"copy.png"}
    assert len(helper.unlabelled("active")) == len(rest) + 1
    store.close()


def test_the_page_needs_the_token_beyond_this_machine(session):
    s, _, _ = session
    client = TestClient(create_app(s, token="t0ken"))
    assert client.get("/api/state").status_code == 401
    assert client.get("/").status_code == 401
    assert client.get("/api/state", headers={"X-Token": "t0ken"}).status_code == 200
    assert client.get("/image/img000.png?token=t0ken").status_code == 200


# --- the page in a real browser, over a real `imclass annotate` process ---------------------

def start(folder: Path, *extra: str, port: int | None = None):
    port = port or free_port()
    proc = subprocess.Popen([sys.executable, "-m", "imclass", "annotate", str(folder),
                             "--port", str(port), *extra], stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    return answering(proc, f"{url}/api/state", 60), url


def stop(proc, sig=signal.SIGTERM) -> None:
    proc.send_signal(sig)
    proc.wait(30)


def current(browser) -> str | None:
    """The image the page shows as current (read in one go: the page redraws often)."""
    return browser.execute_script(
        "const t = document.querySelector('.tile.current'); return t && t.dataset.name;")


def text(browser, selector: str) -> str:
    return browser.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';",
        selector)


def key(browser, *keys: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    for k in keys:
        ActionChains(browser).send_keys(k).perform()


def wait_for(browser, condition, seconds: float = 30):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(browser, seconds, poll_frequency=0.05).until(condition)


@pytest.mark.slow
def test_keyboard_labelling_undo_two_tabs_and_a_killed_server(tmp_path, browser):
    from selenium.webdriver.common.keys import Keys

    folder = tmp_path / "photos"
    truth = pool(folder, 45)
    (folder / "broken.png").write_bytes(b"not a png")
    port = free_port()
    proc, url = start(folder, "--classes", "red,green,blue", "--cache-dir",
                      str(tmp_path / "cache"), port=port)
    try:
        browser.get(url)
        wait_for(browser, current)
        assert "broken.png: not an image" in text(browser, "#badlist")
        labelled = []
        for n in range(20):  # 1-3 by number, or the colour's first letter
            name = current(browser)
            colour = truth[name]
            key(browser, str(COLOURS.index(colour) + 1) if n % 2 else colour[0])
            wait_for(browser, lambda d: current(d) != name)
            labelled.append(name)
        wait_for(browser, lambda d: len(rows(folder / "labels.csv")) == 20)
        assert rows(folder / "labels.csv") == {n: truth[n] for n in labelled}
        key(browser, Keys.BACKSPACE)  # undo: the last image is unlabelled again
        wait_for(browser, lambda d: "undone" in text(d, "#msg"))
        assert labelled[-1] not in rows(folder / "labels.csv")
        assert current(browser) == labelled[-1]
        # a second tab labels the image this one shows; this tab hears of it
        first_tab = browser.current_window_handle
        browser.switch_to.new_window("tab")
        browser.get(url)
        wait_for(browser, current)
        other = [i for i in httpx.get(f"{url}/api/queue?mode=plain").json()
                 if i["name"] == labelled[-1]][0]
        assert httpx.post(f"{url}/api/label", json={"name": other["name"], "labels": ["blue"],
                                                   "version": other["version"]}).status_code == 200
        browser.close()
        browser.switch_to.window(first_tab)
        wait_for(browser, lambda d: text(d, ".tile.current .labels") == "blue")
        # another change lands after this tab last heard (no poll in between): the key
        # press is made on the old version, refused, and the other change kept
        items = httpx.get(f"{url}/api/changes?since=0").json()["items"]
        version = next(i["version"] for i in items if i["name"] == labelled[-1])
        browser.execute_script("""
            const x = new XMLHttpRequest(); x.open('POST', '/api/label', false);
            x.setRequestHeader('Content-Type', 'application/json');
            x.send(JSON.stringify({name: arguments[0], labels: ['green'], version: arguments[1]}));
            document.dispatchEvent(new KeyboardEvent('keydown', {key: 'r'}));""",
                               labelled[-1], version)
        wait_for(browser, lambda d: "changed in another tab" in text(d, "#msg"))
        assert rows(folder / "labels.csv")[labelled[-1]] == "green"
        assert text(browser, ".tile.current .labels") == "green"
        # the model trains in the background; its suggestions appear on the page
        wait_for(browser, lambda d: "trained on" in text(d, "#model"), 120)
        key(browser, Keys.SPACE)
        wait_for(browser, lambda d: text(d, ".tile.current .suggestion"))
        name = current(browser)
        key(browser, Keys.ENTER)  # take the suggestion
        wait_for(browser, lambda d: name in rows(folder / "labels.csv"))
        severe = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"
                  and "409" not in e["message"] and "broken.png" not in e["message"]]
        assert severe == [], severe
        held = rows(folder / "labels.csv")
        stop(proc, signal.SIGKILL)  # killed, not stopped: nothing may be lost
        wait_for(browser, lambda d: "does not answer" in text(d, "#msg"))
        proc, url = start(folder, "--classes", "red,green,blue", "--cache-dir",
                          str(tmp_path / "cache"), port=port)
        wait_for(browser, lambda d: text(d, "#msg") == "")  # the page finds it again
        browser.refresh()
        wait_for(browser, lambda d: text(d, "#progress").startswith(f"{len(held)} / 45"))
        assert rows(folder / "labels.csv") == held
    finally:
        stop(proc)
        browser.get("about:blank")
        browser.get_log("browser")  # read, so the next page's test starts with an empty log


def helper_over(folder: Path, classes, multilabel: bool = False) -> Helper:
    from imclass.data.decode import inspect_all

    store = LabelStore(folder, classes, multilabel)
    infos = dict(zip([i.name for i in store.items], inspect_all([str(i.path)
                                                                 for i in store.items])))
    helper = Helper(store, infos, folder.parent / "cache", reviews=False)
    helper.prepare()
    return helper


def test_small_images_get_the_cnn_averaged_with_the_features(tmp_path, monkeypatch):
    from imclass import assistant

    monkeypatch.setattr(assistant, "CNN_FROM_LABELS", 20)  # 300 in use; a small test set
    truth = pool(tmp_path / "photos", 45)
    helper = helper_over(tmp_path / "photos", list(COLOURS))
    names = sorted(truth)
    for name in names[:24]:
        helper.store.set(name, [truth[name]], 0)
    assert helper.step() and "our CNN from scratch and logistic regression" in helper.status
    assert helper.scores.guesses == 0  # no earlier model to guess with
    for name in names[24:28]:
        helper.store.set(name, [truth[name]], 0)
    assert helper.step() and "28 labels and" in helper.status, helper.status
    assert 0 < helper.scores.guesses <= len(names) - 28  # its guesses: unlabelled images only
    right = [helper.suggestion(n)["labels"] == [truth[n]] for n in names[28:]]
    assert sum(right) >= 0.9 * len(right), helper.status
    helper.store.close()


def test_self_training_takes_the_surest_guesses_of_unlabelled_images_only():
    from imclass.assistant import GUESS_SURE, surest_guesses

    probs = np.array([[0.95, 0.05], [0.2, 0.8], [0.05, 0.95], [0.99, 0.01], [0.5, 0.5]])
    rows, classes = surest_guesses(probs, labelled=np.array([3]), most=10, seed=0)
    assert rows.tolist() == [0, 2] and classes.tolist() == [0, 1]  # 3 is labelled already
    assert probs[rows].max(1).min() >= GUESS_SURE
    few, _ = surest_guesses(probs, labelled=np.array([], dtype=int), most=2, seed=0)
    assert len(few) == 2 and set(few.tolist()) <= {0, 2, 3}


def test_several_labels_per_image_get_suggested_label_sets(tmp_path):
    from imagedata import label_sets

    folder, rng = tmp_path / "photos", np.random.default_rng(1)
    sets = label_sets("multilabel", 60, rng)
    folder.mkdir()
    for i, labels in enumerate(sets):
        Image.fromarray(draw(labels, rng)).save(folder / f"img{i:03d}.png")
    helper = helper_over(folder, list(COLOURS), multilabel=True)
    for i, labels in enumerate(sets[:30]):
        helper.store.set(f"img{i:03d}.png", list(labels), 0)
    assert helper.step(), helper.status
    right = [sorted(helper.suggestion(f"img{i:03d}.png")["labels"]) == sorted(sets[i])
             for i in range(30, 60)]
    assert sum(right) >= 0.8 * len(right), helper.status
    doubt = least_sure(helper.scores.probs, multilabel=True)
    assert doubt.shape == (60,) and ((doubt >= 0) & (doubt <= 1)).all()
    helper.store.close()
