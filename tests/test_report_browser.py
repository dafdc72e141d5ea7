"""report.html in a real headless browser (Debian's chromium, driven by selenium)."""
import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow


def test_report_loads_cleanly_and_renders_whole(trained_run, browser, tmp_path):
    browser.get((trained_run / "report.html").resolve().as_uri())
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])")
    assert len(images) == 12
    assert all(done and width > 0 for _alt, done, width in images), images
    width, height = browser.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
    assert width <= 1280, "the page is wider than the window: something is cut off"
    browser.set_window_size(1280, height + 200)  # the whole page in one screenshot
    shot = tmp_path / "report.png"
    browser.save_screenshot(str(shot))
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 20, "the screenshot is blank"
    rows = np.flatnonzero((pixels < 250).any(1))  # rows holding anything but background
    assert rows.max() > 0.8 * min(pixels.shape[0], height), "the page's end did not render"
    title = browser.find_element("tag name", "h1").text
    assert title.startswith("imclass run:")
