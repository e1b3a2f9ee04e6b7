"""The page in a real browser: Debian's headless Chromium, driven by Selenium through the system chromedriver.

A COCO photo is uploaded through the file input, the canvas must show the drawing where the
boxes are, the score slider must hide the low-score people without a new request, and a
keypoint's name must appear on hover. Chromium is installed by `make install` / `make test`
(root with apt-get, as on CI); elsewhere the test skips and says why.
"""
import base64
import io
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium (dev extra)")

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

BOX_MARGIN = 24  # px around a box that its outline, label and skeleton may touch


def browser_paths() -> tuple[str, str]:
    chromium = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver = shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    installable = os.geteuid() == 0 and shutil.which("apt-get")
    message = "no chromium/chromedriver: `make install` installs Debian's chromium and chromium-driver"
    if installable:  # CI (root on Debian) must run this test: a missing browser is an error there
        pytest.fail(message)
    pytest.skip(message + " (needs root with apt-get)")


@pytest.fixture(scope="module")
def live_server(serve_predictor):
    """The app under uvicorn on a free 127.0.0.1 port, in a thread; yields the base URL."""
    import uvicorn

    from poseseg.serve import ServeSettings, create_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    app = create_app(serve_predictor, ServeSettings(score_thresh=0.0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture(scope="module")
def browser():
    chromium, driver_path = browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1100,760", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


def canvas_pixels(driver, bare: bool = False) -> np.ndarray:
    """The canvas as (H, W, 3) uint8; ``bare``: the same picture drawn by the browser without any overlay."""
    script = """
      const canvas = document.getElementById('canvas');
      if (!arguments[0]) return canvas.toDataURL('image/png');
      const item = window.poseseg.items[window.poseseg.current], c = document.createElement('canvas');
      c.width = canvas.width; c.height = canvas.height;
      c.getContext('2d').drawImage(item.bitmap, 0, 0);
      return c.toDataURL('image/png');"""
    url = driver.execute_script(script, bare)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


def box_region(boxes, shape) -> np.ndarray:
    region = np.zeros(shape[:2], bool)
    for x1, y1, x2, y2 in boxes:
        region[max(0, int(y1) - BOX_MARGIN):int(y2) + BOX_MARGIN, max(0, int(x1) - BOX_MARGIN):int(x2) + BOX_MARGIN] = True
    return region


def test_page_draws_the_people_and_the_slider_hides_low_scores(live_server, browser, photo_path, tmp_path):
    browser.get(live_server + "/")
    WebDriverWait(browser, 30).until(lambda d: d.execute_script("return window.poseseg.info !== null"))
    assert "ResNet-18" in browser.find_element(By.ID, "model-info").text
    browser.find_element(By.ID, "file").send_keys(str(photo_path))
    WebDriverWait(browser, 60).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state")
                                     in ("ready", "error"))
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "ready", \
        browser.find_element(By.ID, "status").text
    result = browser.execute_script("return window.poseseg.items[0].result")
    people = result["people"]
    assert len(people) >= 4 and browser.execute_script("return window.poseseg.requests") == 1
    canvas = browser.find_element(By.ID, "canvas")
    assert (int(canvas.get_attribute("width")), int(canvas.get_attribute("height"))) == (640, 425)
    assert int(canvas.get_attribute("data-shown")) == len(people)  # the slider starts at the server's 0.0

    bare = canvas_pixels(browser, bare=True)
    drawn = np.abs(canvas_pixels(browser).astype(int) - bare).max(axis=2) > 8
    boxes = [p["box"] for p in people]
    assert drawn.sum() > 2000  # boxes, labels and skeletons are on the canvas
    assert drawn[box_region(boxes, drawn.shape)].sum() / drawn.sum() > 0.99  # ... where the boxes are
    for x1, y1, x2, y2 in boxes:  # and every box's outline was drawn
        top = drawn[max(0, int(y1) - 2):int(y1) + 3, int(x1):int(x2) + 1]
        assert top.any()

    scores = sorted(p["score"] for p in people)
    steps = next(s for s in range(1, 101) if 0 < sum(x >= s / 100 for x in scores) < len(scores))
    slider = browser.find_element(By.ID, "score")
    slider.send_keys(*[Keys.ARROW_RIGHT] * steps)  # a user moving the slider with the keyboard
    threshold = steps / 100
    kept = [p for p in people if p["score"] >= threshold]
    hidden = [p for p in people if p["score"] < threshold]
    assert float(slider.get_attribute("value")) == pytest.approx(threshold)
    assert int(canvas.get_attribute("data-shown")) == len(kept) and hidden
    assert browser.execute_script("return window.poseseg.requests") == 1  # filtered without a new request
    drawn = np.abs(canvas_pixels(browser).astype(int) - bare).max(axis=2) > 8
    only_hidden = box_region([p["box"] for p in hidden], drawn.shape) & ~box_region([p["box"] for p in kept],
                                                                                     drawn.shape)
    assert only_hidden.any() and not drawn[only_hidden].any()  # hidden people left no trace
    assert drawn[box_region([p["box"] for p in kept], drawn.shape)].any()

    layers = ["show-masks", "show-boxes", "show-skeletons", "show-labels"]
    for layer in layers:  # every layer off: the bare picture; the slider's setting is kept
        browser.find_element(By.ID, layer).click()
    assert not (np.abs(canvas_pixels(browser).astype(int) - bare).max(axis=2) > 8).any()
    browser.find_element(By.ID, "show-boxes").click()
    boxes_only = np.abs(canvas_pixels(browser).astype(int) - bare).max(axis=2) > 8
    assert boxes_only.any() and boxes_only.sum() < drawn.sum()
    for layer in layers:
        if layer != "show-boxes":
            browser.find_element(By.ID, layer).click()
    assert browser.execute_script("return window.poseseg.requests") == 1

    browser.find_element(By.ID, "keypoint-score").send_keys(Keys.HOME)  # every keypoint, however unsure
    names = result["keypoint_schema"]["names"]
    person, k = kept[0], int(np.argmax([kp[2] for kp in kept[0]["keypoints"]]))
    rect = browser.execute_script("return document.getElementById('canvas').getBoundingClientRect().toJSON()")
    scale = rect["width"] / 640
    x, y = person["keypoints"][k][:2]
    ActionChains(browser).move_to_element_with_offset(canvas, x * scale - rect["width"] / 2,
                                                      y * scale - rect["height"] / 2).perform()
    tooltip = browser.find_element(By.ID, "tooltip")
    WebDriverWait(browser, 5).until(lambda d: tooltip.is_displayed())
    assert tooltip.text.split(" ")[0] in names
    browser.save_screenshot(str(tmp_path / "page.png"))  # docs/serve.png comes from here


def test_unreadable_upload_is_reported_on_the_page(live_server, browser, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(Path(__file__).read_bytes()[:2000])
    browser.get(live_server + "/")
    WebDriverWait(browser, 30).until(lambda d: d.execute_script("return window.poseseg.info !== null"))
    browser.find_element(By.ID, "file").send_keys(str(broken))
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state")
                                     == "error")
    assert "not an image" in browser.find_element(By.ID, "status").text


def test_the_page_decodes_coco_rle_masks_exactly(live_server, browser):
    from poseseg.serve.results import encode_mask

    yy, xx = np.mgrid[:97, :131]
    mask = ((xx - 40) ** 2 + (yy - 50) ** 2 < 30 ** 2) | ((xx > 90) & (yy > 10) & (yy < 80)) | (xx + yy == 150)
    rle = encode_mask(mask, "rle")  # the JSON the page receives
    browser.get(live_server + "/")
    alpha = browser.execute_script("""
      const layer = maskLayer(arguments[0], [10, 20, 30]);
      const data = layer.getContext('2d').getImageData(0, 0, layer.width, layer.height).data;
      return Array.from(data.filter((_, i) => i % 4 === 3));""", rle)
    drawn = np.array(alpha).reshape(97, 131) > 0
    np.testing.assert_array_equal(drawn, mask)
