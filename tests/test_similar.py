"""`imclass similar` and serve's /similar: the training images nearest a query by the model's
features, an index built once per checkpoint, galleries, and refusals in one line."""
import json

import numpy as np
import pytest
from PIL import Image

from imagedata import folder_dataset
from imclass import api, cli
from imclass.similarity import Index, nearest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A small folder-dataset run whose classes differ by colour (easy to tell apart)."""
    root = tmp_path_factory.mktemp("similar")
    data = folder_dataset(root / "pets", n_train=20, n_test=6)
    out = root / "run"
    assert cli.main(["train", "--data", str(data), "--out", str(out), "--model", "cnn",
                     "--epochs", "5", "--batch-size", "16", "--lr", "0.05", "--quiet",
                     "--cache-dir", str(root / "cache")]) == 0
    return data, out


def run_similar(capsys, *args) -> list[dict]:
    code = cli.main(["similar", *map(str, args)])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


def test_a_training_image_finds_itself_first_and_neighbours_share_its_class(folder_run,
                                                                            capsys, tmp_path):
    data, run = folder_run
    greens = sorted((data / "test" / "green").iterdir())[:3]
    run_similar(capsys, run, greens[0])  # builds the index: the images the run learnt from
    items = json.loads((run / "similarity" / "index.json").read_text())["items"]
    indexed = next(i["image"] for i in items if i["label"] == "blue")
    train_image = data / "train" / indexed
    queries = [train_image, *greens]
    results = run_similar(capsys, run, *queries, "--k", "5", "--out", tmp_path / "q")
    assert len(results) == 4 and all(len(r["neighbours"]) == 5 for r in results)
    first = results[0]["neighbours"][0]
    assert first["image"] == indexed and first["similarity"] > 0.999
    for r in results:
        sims = [n["similarity"] for n in r["neighbours"]]
        assert sims == sorted(sims, reverse=True) and -1.0001 <= sims[-1] <= 1.0001
    greens = [n["label"] for r in results[1:] for n in r["neighbours"]]
    assert greens.count("green") >= 0.8 * len(greens)  # precision@5 on an easy set
    assert (tmp_path / "q" / "query001.png").is_file()
    page = (tmp_path / "q" / "similar.html").read_text()
    assert "query004.png" in page and "cosine similarity" in page


def test_the_index_is_built_once_per_checkpoint(folder_run, capsys):
    data, run = folder_run
    query = sorted((data / "test" / "red").iterdir())[0]
    run_similar(capsys, run, query)
    index = run / "similarity" / "embeddings.npy"
    built = index.stat().st_mtime_ns
    run_similar(capsys, run, query)
    assert index.stat().st_mtime_ns == built  # reused
    meta = json.loads((run / "similarity" / "index.json").read_text())
    meta["weights_sha256"] = "another checkpoint"
    (run / "similarity" / "index.json").write_text(json.dumps(meta))
    run_similar(capsys, run, query)
    assert index.stat().st_mtime_ns != built  # rebuilt for the new weights
    assert len(np.load(index)) == len(meta["items"]) == 60  # train and validation images


def test_similar_refuses_an_exported_file_and_reports_an_unreadable_query(folder_run,
                                                                        capsys, tmp_path):
    data, run = folder_run
    (tmp_path / "model.onnx").write_bytes(b"not a run")
    assert cli.main(["similar", str(tmp_path / "model.onnx"), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is not a run folder" in err and err.count("\n") == 1
    (tmp_path / "page.png").write_text("<html></html>")
    good = sorted((data / "test" / "red").iterdir())[0]
    assert cli.main(["similar", str(run), str(tmp_path / "page.png"), str(good),
                     "--out", str(tmp_path / "q")]) == 1
    captured = capsys.readouterr()
    results = json.loads(captured.out)
    assert "error" in results[0] and len(results[1]["neighbours"]) == 8
    assert f"imclass: error: {tmp_path / 'page.png'}: not an image" in captured.err
    assert "1 of 2 queries failed" in captured.err  # exit 1 is never silent


def test_serve_answers_similar_for_a_run_folder(folder_run):
    from fastapi.testclient import TestClient

    from imclass.commands.serve import create_app
    from imclass.predictor import load

    data, run = folder_run
    query = sorted((data / "test" / "blue").iterdir())[0]
    with TestClient(create_app(load(run))) as client:
        answer = client.post("/similar?k=3", files=[("files", (query.name, query.read_bytes(),
                                                               "image/png"))])
        assert answer.status_code == 200, answer.text
        assert [len(r["neighbours"]) for r in answer.json()] == [3]
        assert client.post("/similar?k=0", files=[("files", ("a.png", query.read_bytes(),
                                                             "image/png"))]).status_code == 422
        mixed = client.post("/similar?k=2", files=[
            ("files", ("page.png", b"<html></html>", "image/png")),
            ("files", (query.name, query.read_bytes(), "image/png"))])
        assert mixed.status_code == 200
        assert "error" in mixed.json()[0] and len(mixed.json()[1]["neighbours"]) == 2
    exported, _ = api.export(run)
    with TestClient(create_app(load(exported))) as client:  # no training images: no route
        assert "/similar" not in client.get("/openapi.json").json()["paths"]
        assert client.post("/similar", files=[("files", (query.name, query.read_bytes(),
                                                         "image/png"))]).status_code == 404


def test_nearest_is_exact_cosine_order():
    features = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0]]
    index = Index(features, np.zeros(4, np.float32), [{} for _ in range(5)], [])
    query = np.array([[0.8, 0.6, 0, 0]], dtype=np.float32)
    rows, sims = nearest(index, query, 3)
    assert set(rows[0][:2]) == {0, 4} and rows[0][2] == 1
    assert np.allclose(sims[0], [0.8, 0.8, 0.6])


def test_a_query_image_of_another_size_is_decoded_like_training_images(folder_run, capsys,
                                                                       tmp_path):
    data, run = folder_run
    big = tmp_path / "big.png"
    Image.open(sorted((data / "test" / "blue").iterdir())[0]).resize((200, 120)).save(big)
    results = run_similar(capsys, run, big, "--k", "3")
    assert [n["label"] for n in results[0]["neighbours"]].count("blue") >= 2
