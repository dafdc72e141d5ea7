"""`imclass serve` as a real process on a free port, called over HTTP (httpx) and through its
web page in headless Chromium."""
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image

from imagedata import bomb_png
from imclass import api

KEY = "test-key-1234"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(model, *extra) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "imclass", "serve", str(model), "--port",
                             str(port), *extra], stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    return answering(proc, f"{url}/health", 90), url


def answering(proc: subprocess.Popen, probe: str, seconds: float) -> subprocess.Popen:
    """`proc` once `probe` answers 200 (killed, and the test failed, if it does not within
    `seconds` or the process ends)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        try:
            if httpx.get(probe, timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"{probe} did not answer within {seconds:g} s")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from imclass.data import fashion_mnist
    _, test = fashion_mnist.load()
    folder = tmp_path_factory.mktemp("uploads")
    paths = []
    for k in range(4):
        paths.append(folder / f"item{k}.png")
        Image.fromarray(test.images[k, 0].numpy()).save(paths[-1])
    (folder / "page.png").write_text("<html>404</html>")
    bomb_png(folder / "bomb.png")
    (folder / "big.png").write_bytes(b"\0" * (2 * 2 ** 20))
    return folder, paths


@pytest.fixture(scope="module")
def server(trained_run):
    model, _ = api.export(trained_run)
    proc, url = start(model, "--api-key", KEY, "--max-upload-mb", "1", "--max-wait-ms", "50")
    yield url
    proc.terminate()
    proc.wait(timeout=20)


def post(url, *paths, key=KEY):
    files = [("files", (p.name, p.read_bytes(), "image/png")) for p in paths]
    return httpx.post(f"{url}/predict", files=files, headers={"X-API-Key": key} if key else {},
                      timeout=30)


def test_serve_answers_like_predict_json(server, trained_run, images):
    _, paths = images
    health = httpx.get(f"{server}/health").json()
    assert health["status"] == "ok"
    model = httpx.get(f"{server}/model", headers={"X-API-Key": KEY}).json()
    assert model["task"] == "multiclass" and len(model["classes"]) == 10
    assert model["backend"] == "onnx" and 0 < model["test_metrics"]["accuracy"] <= 1
    answer = post(server, *paths)
    assert answer.status_code == 200
    served = answer.json()
    local = api.predict(trained_run, paths)
    assert [r["image"] for r in served] == [p.name for p in paths]
    for s, p in zip(served, local):
        assert s["decision"] == p["decision"]
        assert [t["class"] for t in s["top"]] == [t["class"] for t in p["top"]]
        assert s["top"][0]["probability"] == pytest.approx(p["top"][0]["probability"], abs=1e-4)


def test_bad_requests_get_a_4xx_with_a_sentence(server, images):
    folder, paths = images
    cases = [(post(server, folder / "page.png"), 415, "page.png: not an image"),
             (post(server, folder / "bomb.png"), 422, "Pillow's limit"),
             (post(server, folder / "big.png"), 413, "limit of 1 MB"),
             (post(server, paths[0], key=None), 401, "API key"),
             (post(server, paths[0], key="wrong"), 401, "API key"),
             (httpx.post(f"{server}/predict", headers={"X-API-Key": KEY}), 422, "'files'"),
             (httpx.get(f"{server}/model"), 401, "X-API-Key")]
    for response, status, words in cases:
        assert response.status_code == status, response.text
        assert words in response.json()["detail"]
    assert httpx.get(f"{server}/health").status_code == 200  # still up


def test_a_bad_file_among_good_ones_is_answered_on_its_own(server, images):
    folder, paths = images
    answer = post(server, paths[0], folder / "page.png", paths[1])
    assert answer.status_code == 200, answer.text  # the good results are not lost
    first, bad, last = answer.json()
    assert first["decision"] and last["decision"] and "decision" not in bad
    assert bad["image"] == "page.png" and "not an image" in bad["error"]


def test_docs_and_the_page_need_nothing_from_the_network(server):
    docs = httpx.get(f"{server}/docs")
    assert docs.status_code == 200 and "/static/swagger/swagger-ui-bundle.js" in docs.text
    assert "http" not in docs.text.split("<body>")[0].replace("http-equiv", "")
    assert httpx.get(f"{server}/static/swagger/swagger-ui-bundle.js").status_code == 200
    spec = httpx.get(f"{server}/openapi.json", headers={"X-API-Key": KEY}).json()
    assert "/predict" in spec["paths"]
    page = httpx.get(f"{server}/").text
    assert "<script src" not in page and "https://" not in page and 'type="file"' in page


def test_concurrent_requests_share_forward_passes(server, images):
    _, paths = images
    before = httpx.get(f"{server}/health").json()
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda k: post(server, paths[k % len(paths)]), range(32)))
    assert [a.status_code for a in answers] == [200] * 32
    after = httpx.get(f"{server}/health").json()
    images_served = after["images"] - before["images"]
    passes = after["batches"] - before["batches"]
    assert images_served == 32
    assert passes < 32, "16 clients at once within 50 ms should share forward passes"


@pytest.mark.slow
def test_the_web_page_shows_the_class_of_an_uploaded_image(server, trained_run, images,
                                                           browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    folder, paths = images
    browser.get(f"{server}/")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: d.find_element(By.ID, "keybox").is_displayed())
    browser.find_element(By.ID, "key").send_keys(KEY)
    browser.find_element(By.ID, "files").send_keys(str(paths[0]))
    card = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, ".card.done"))
    expected = api.predict(trained_run, [paths[0]])[0]["decision"]
    assert card.find_element(By.CLASS_NAME, "decision").text == expected
    assert len(card.find_elements(By.CLASS_NAME, "bar")) == 3
    browser.find_element(By.ID, "files").send_keys(str(folder / "page.png"))
    # newer Chromium appends to a multiple-file input, so item0.png may be sent again too
    def page_card(d):
        return next((c for c in d.find_elements(By.CSS_SELECTOR, ".card.done")
                     if "page.png" in c.text), None)
    error = wait.until(page_card).find_element(By.CLASS_NAME, "error").text
    assert "page.png: not an image" in error
    expected_refusals = ("/model - Failed to load resource: the server responded with a "
                         "status of 401", "/predict - Failed to load resource: the server "
                         "responded with a status of 415")  # Chromium logs each 4xx
    severe = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"
              and not any(r in e["message"] for r in expected_refusals)]
    assert severe == [], severe


def test_serve_refuses_a_busy_port_and_bad_limits_in_one_line(trained_run, capsys):
    from imclass import cli

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert cli.main(["serve", str(trained_run), "--port", str(port)]) == 2
        err = capsys.readouterr().err
        assert f"cannot listen on 127.0.0.1:{port}" in err and err.count("\n") == 1
    assert cli.main(["serve", str(trained_run), "--max-batch", "0"]) == 2
    assert "--max-batch must be at least 1" in capsys.readouterr().err
