"""The web app (python/sbsconv/ui.py): the settings generated from ConvertOptions, the presets,
the inputs' rules, cancelling a conversion; then the app itself in a real browser (Debian's
headless chromium through chromium-driver): upload, preview, convert and download, cancel, a
broken file. The README's screenshot is taken here, written to docs/ only when asked:
SBSCONV_SCREENSHOT=docs/sbsconv-ui.png (a path, relative to the repository's root or absolute)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

import pytest

import sbsconv
import sbsconv.models
from helpers import data, ffprobe
from sbsconv import ui
from sbsconv.errors import CancelledError, InputError, OptionError
from sbsconv.options import Choice, ConvertOptions

REPO = Path(__file__).resolve().parents[2]


def _screenshot_target(tmp_path: Path) -> Path:
    """Where the README's picture goes: the path SBSCONV_SCREENSHOT names, else the test's own
    folder, so an ordinary run never rewrites the tracked picture."""
    asked = os.environ.get("SBSCONV_SCREENSHOT", "").strip()
    return (REPO / asked) if asked else tmp_path / "sbsconv-ui.png"
CLIP = "bt601_limited_range.mp4"  # 320x240, 2 s, 30 fps


# ---- settings and presets ---------------------------------------------------------------------


def test_every_option_is_on_the_page_once_with_its_default_and_help():
    placed = [f for _, fields in ui.sections() for f in fields]
    assert sorted(f.name for f in placed) == sorted(f.name for f in ConvertOptions.fields())
    assert len({f.name for f in placed}) == len(placed)
    for f in placed:
        spec = ui.component_spec(f)
        assert f.help in spec["info"] and spec["label"] == f.name
        if spec["type"] == "dropdown":
            assert isinstance(f.constraint, Choice) and spec["choices"] == list(f.constraint.values)
        if spec["type"] == "number":
            assert spec["value"] == f.default and spec["minimum"] == f.constraint.low
    # The page's untouched values are convert()'s defaults.
    untouched = {f.name: ui.component_spec(f)["value"] for f in placed}
    assert ui.options_from(untouched) == ConvertOptions()


def test_typed_settings_are_checked_as_convert_checks_them():
    values = {f.name: ui.component_spec(f)["value"] for f in ConvertOptions.fields()}
    values.update(divergence=3.5, percentiles="2 98", eye_size="1920x1080", crf=20.0, fps="30000/1001")
    o = ui.options_from(values)
    assert (o.divergence, o.percentiles, o.eye_size, o.crf) == (3.5, (2.0, 98.0), (1920, 1080), 20)
    assert str(o.fps) == "30000/1001"
    values["divergence"] = 50.0
    with pytest.raises(OptionError, match="divergence"):
        ui.options_from(values)


def test_headset_presets_fill_in_valid_settings():
    defaults = {f.name: ui.component_spec(f)["value"] for f in ConvertOptions.fields()}
    assert {"Meta Quest 3 / 3S", "Pico 4", "Apple Vision Pro", "3D TV (half side-by-side)",
            "Anaglyph (red-cyan glasses)"} <= set(ui.HEADSET_PRESETS)
    assert any(p["layout"].startswith("vr180") for p in ui.HEADSET_PRESETS.values())
    for name, preset in ui.HEADSET_PRESETS.items():
        filled = ui.apply_preset(name, defaults)
        o = ui.options_from(filled)  # every preset is a valid set of options
        for key, value in preset.items():
            assert getattr(o, key) == value
    assert ui.options_from(ui.apply_preset("Apple Vision Pro", defaults)).layout == "apple-3d"
    with pytest.raises(OptionError, match="unknown preset"):
        ui.apply_preset("Virtual Boy", defaults)


CHOICES = """
import json
from sbsconv import ui
print(json.dumps(dict((name, label) for label, name in ui.model_choices())))
"""


def test_the_model_menu_names_licences_and_what_is_cached(tmp_path, tiny_model):
    from test_depth_anything_v2 import write_cache_entry

    home = tmp_path / "hf_home"
    write_cache_entry(home / "hub", "depth-anything/Depth-Anything-V2-Small",
                      {"depth_anything_v2_vits.pth": next(Path(tiny_model).glob("*.safetensors"))})
    env = dict(os.environ, HF_HOME=str(home), HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, "-c", CHOICES], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    labels = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(labels) == set(sbsconv.models.depth_models())  # the mask models are not depth
    assert labels["depth-anything-v2-small"] == "depth-anything-v2-small (Apache-2.0, cached)"
    assert labels["depth-anything-v2-large"] == "depth-anything-v2-large (CC-BY-NC-4.0, non-commercial)"
    assert labels["depth-anything-3-small"] == "depth-anything-3-small (Apache-2.0)"


def test_inputs_keep_uploads_by_content_and_guard_paths(tmp_path):
    allowed = tmp_path / "videos"
    allowed.mkdir()
    inside = allowed / "a.mp4"
    shutil.copy(data(CLIP), inside)
    inputs = ui.Inputs(tmp_path / "work", [allowed], max_upload_mb=1)
    first = inputs.upload(str(inside))
    assert first.read_bytes() == inside.read_bytes() and inputs.upload(str(inside)) == first
    assert inputs.local(str(inside)) == inside.resolve()
    outside = tmp_path / "b.mp4"
    shutil.copy(data(CLIP), outside)
    with pytest.raises(OptionError, match="outside the allowed folders"):
        inputs.local(str(outside))
    with pytest.raises(OptionError, match="outside"):
        inputs.local(str(allowed / ".." / "b.mp4"))
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0" * (2 * 2**20))
    with pytest.raises(InputError, match="limited to 1 MB"):
        inputs.upload(str(big))
    with pytest.raises(OptionError, match="give a video"):
        inputs.gather([], "", "")
    with pytest.raises(OptionError, match="not a web address"):
        inputs.url(str(outside))  # a path in the URL box does not get round the allowed folders
    # what settings read on the server: the model a registry name or under the allowed folders
    assert inputs.confined(ConvertOptions(model="depth-anything-3-small")).model == "depth-anything-3-small"
    with pytest.raises(OptionError, match="model: a registry name"):
        inputs.confined(ConvertOptions(model=str(outside)))
    with pytest.raises(OptionError, match="outside the allowed folders"):
        inputs.confined(ConvertOptions(checkpoint=str(outside)))
    assert inputs.confined(ConvertOptions(model=str(inside))).model == str(inside.resolve())
    assert not ui.Inputs(tmp_path / "w2").allowed
    with pytest.raises(OptionError, match="--allow-path"):
        ui.Inputs(tmp_path / "w2").local(str(inside))
    # the same input and settings land on the same output (a second request resumes)
    o = ConvertOptions(divergence=2.5)
    assert inputs.output_for(first, o) == inputs.output_for(first, ConvertOptions(divergence=2.5))
    assert inputs.output_for(first, o) != inputs.output_for(first, ConvertOptions(divergence=3.0))


def test_convert_stops_when_cancelled_and_leaves_nothing(tmp_path, tiny_model, testsrc):
    source = testsrc("ui_cancel.mp4", size="320x240", rate=30, seconds=20.0)
    out = tmp_path / "x.mp4"
    cancel = threading.Event()
    seen = []

    def progress(info):
        seen.append(info["frames_done"])
        if info["frames_done"] > 0:
            cancel.set()

    t0 = time.monotonic()
    with pytest.raises(CancelledError):
        sbsconv.convert(source, out, model=str(tiny_model), device="cpu", progress=False, on_progress=progress,
                        cancel=cancel, resume=False)
    assert time.monotonic() - t0 < 60 and seen and max(seen) < 600
    assert not out.exists()


def test_a_cancelled_conversion_resumes_from_the_page(tmp_path, tiny_model, testsrc):
    source = testsrc("ui_resume.mp4", size="320x240", rate=30, seconds=8.0)
    app = ui.App(ui.Inputs(tmp_path / "work", [Path(tiny_model).parent]))
    values = {f.name: ui.component_spec(f)["value"] for f in ConvertOptions.fields()}
    values.update(model=str(tiny_model), device="cpu", segment_seconds="1", preset="ultrafast")
    settings = [values[name] for name in app.names]
    statuses = []
    for job, status, video, downloads, figures in app.convert([str(source)], "", "", *settings):
        statuses.append(status)
        if "frames/s" in status and _frames_in(status) >= 90:
            assert app.cancel(job).startswith("<div")
    assert "Cancelled" in statuses[-1] and video is None
    assert not list((tmp_path / "work" / "outputs").glob("*/ui_resume_3d.mp4"))
    # the same input and settings again: it continues where it stopped
    *_, (job, status, video, downloads, figures) = app.convert([str(source)], "", "", *settings)
    assert "Done" in status, status
    assert "resumed from frame" in figures and Path(video).is_file()
    assert app.cancel(job).endswith("Nothing is converting.</div>")


def test_depth_exports_are_written_beside_the_result_and_offered(tmp_path, tiny_model):
    app = ui.App(ui.Inputs(tmp_path / "work", [Path(tiny_model).parent]))
    values = {f.name: ui.component_spec(f)["value"] for f in ConvertOptions.fields()}
    values.update(model=str(tiny_model), device="cpu", duration="0.5", depth_out="clip_depth.mkv",
                  preset="ultrafast")
    *_, (job, status, video, downloads, figures) = app.convert([str(data(CLIP))], "", "",
                                                               *[values[n] for n in app.names])
    assert "Done" in status, status
    names = sorted(Path(p).name for p in downloads)
    assert names == sorted([Path(video).name, "clip_depth.mkv", "clip_depth.mkv.json"])
    assert all(Path(p).parent == Path(video).parent for p in downloads)
    # a place on the server is refused, with the setting named
    values["depth_out"] = str(tmp_path / "elsewhere.mkv")
    *_, (job, status, *_rest) = app.convert([str(data(CLIP))], "", "", *[values[n] for n in app.names])
    assert "depth_out" in status and "sbs-error" in status and not (tmp_path / "elsewhere.mkv").exists()


def test_a_closed_page_stops_its_conversion(tmp_path, tiny_model, testsrc):
    source = testsrc("ui_closed.mp4", size="320x240", rate=30, seconds=20.0)
    app = ui.App(ui.Inputs(tmp_path / "work", [Path(tiny_model).parent]))
    values = {f.name: ui.component_spec(f)["value"] for f in ConvertOptions.fields()}
    values.update(model=str(tiny_model), device="cpu", resume=False)
    updates = app.convert([str(source)], "", "", *[values[n] for n in app.names])
    for job, status, *_ in updates:
        if "frames/s" in status:
            break
    before = {t for t in threading.enumerate() if t.name == "sbsconv-ui-convert"}
    assert before
    updates.close()  # what Gradio does when the page goes away
    for t in before:
        t.join(30)
        assert not t.is_alive()
    assert not list((tmp_path / "work" / "outputs").glob("*/ui_closed_3d.mp4"))
    assert not app.jobs.cancel(job)  # nothing left registered


def _frames_in(status: str) -> int:
    import re

    m = re.search(r"(\d+)(?: / \d+)? frames", status)
    return int(m.group(1)) if m else 0


LAUNCH = """
import sys, urllib.request
from sbsconv import ui
port = int(sys.argv[1])
app = ui.launch(port=port, work_dir=sys.argv[2], block=False)
with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
    page = r.read()
print(app.local_url, r.status, b"sbsconv" in page)
app.close()
"""


def test_launch_serves_on_localhost_and_closes(tmp_path):
    pytest.importorskip("gradio", reason="the ui extra (gradio) is not installed")
    port = _free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False")
    done = subprocess.run([sys.executable, "-c", LAUNCH, str(port), str(tmp_path)], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    ours = [line for line in done.stdout.splitlines() if line.startswith("http")]
    assert ours and ours[-1].split() == [f"http://127.0.0.1:{port}/", "200", "True"], done.stdout


# ---- the app in a browser ------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model):
    pytest.importorskip("gradio", reason="the ui extra (gradio) is not installed")
    port = _free_port()
    work = tmp_path_factory.mktemp("ui_work")
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    log = open(work / "server.log", "w")  # noqa: SIM115 (closed at teardown)
    proc = subprocess.Popen([sys.executable, "-m", "sbsconv.cli", "ui", "--port", str(port), "--work-dir", str(work),
                             "--allow-path", str(data(CLIP).parent), "--allow-path", str(Path(tiny_model).parent),
                             "--max-upload-mb", "64"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.5)
    else:
        proc.kill()
    if proc.poll() is not None:
        log.close()
        pytest.fail("sbsconv ui did not start:\n" + (work / "server.log").read_text()[-3000:])
    yield {"url": url, "work": work, "model": str(tiny_model)}
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture
def browser(tmp_path, request):
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("needs Debian's chromium and chromium-driver (scripts/bootstrap.sh installs them)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1500,2200",
                "--disable-gpu"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    report = getattr(request.node, "rep_call", None)  # set by conftest's pytest_runtest_makereport
    if report is not None and report.failed:
        shot = tmp_path / "failure.png"
        driver.save_screenshot(str(shot))
        print(f"screenshot of the page at the failure: {shot}")
    driver.quit()


def _wait(driver, condition, timeout: float, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.25).until(condition)
    except Exception:
        status = driver.find_element("css selector", "#sbs-status").text if driver.find_elements(
            "css selector", "#sbs-status") else ""
        raise AssertionError(f"timed out waiting for {what}; status: {status!r}") from None


def _open(driver, server, clip: Path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.get(server["url"])
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#sbs-convert"), 60, "the page")
    model = driver.find_element(By.CSS_SELECTOR, "#sbs-opt-model input")
    model.send_keys(Keys.CONTROL, "a")
    model.send_keys(server["model"], Keys.ENTER)
    device = driver.find_element(By.CSS_SELECTOR, "#sbs-opt-device input, #sbs-opt-device textarea")
    device.send_keys(Keys.CONTROL, "a")
    device.send_keys("cpu", Keys.TAB)
    driver.find_element(By.CSS_SELECTOR, "#sbs-files input[type=file]").send_keys(str(clip))


def _status(driver) -> str:
    return driver.find_element("css selector", "#sbs-status").text


def test_upload_preview_convert_and_download(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    _open(browser, server, data(CLIP))
    image = _wait(browser, lambda d: [e for e in d.find_elements(By.CSS_SELECTOR, "#sbs-preview-3d img")
                                      if (e.get_attribute("src") or "").strip()], 180, "the preview")
    assert image
    for panel in ("frame", "depth", "anaglyph"):
        assert browser.find_elements(By.CSS_SELECTOR, f"#sbs-preview-{panel} img")
    # a setting that changes the 3D frame refreshes the preview
    before = image[0].get_attribute("src")
    strength = browser.find_element(By.CSS_SELECTOR, "#sbs-opt-divergence input")
    strength.send_keys(Keys.CONTROL, "a")
    strength.send_keys("6", Keys.TAB)
    _wait(browser, lambda d: [e for e in d.find_elements(By.CSS_SELECTOR, "#sbs-preview-3d img")
                              if e.get_attribute("src") not in (before, None, "")], 120, "the refreshed preview")
    browser.find_element(By.CSS_SELECTOR, "#sbs-convert").click()
    _wait(browser, lambda d: "Done" in _status(d) or "error" in _status(d).lower(), 300, "the conversion")
    assert "Done" in _status(browser), _status(browser)
    links = _wait(browser, lambda d: [a.get_attribute("href") for a in d.find_elements(By.CSS_SELECTOR, "#sbs-downloads a")
                                      if (a.get_attribute("href") or "").endswith(".mp4")], 30, "the download link")
    target = tmp_path / "downloaded.mp4"
    with urllib.request.urlopen(links[0], timeout=60) as r:
        target.write_bytes(r.read())
    info = ffprobe(target, "-count_frames", "-show_entries", "stream=nb_read_frames,width,height")
    stream = info["streams"][0]
    assert int(stream["nb_read_frames"]) == 60 and (stream["width"], stream["height"]) == (640, 240)
    figures = browser.find_element(By.CSS_SELECTOR, "#sbs-figures").text
    assert "frames/s per stage" in figures and "encoder" in figures
    # The README's picture: the top of the page (inputs, preview, result), scaled down.
    from PIL import Image

    browser.execute_script("window.scrollTo(0, 0)")
    full = tmp_path / "page.png"
    browser.save_screenshot(str(full))
    with Image.open(full) as page:
        top = page.crop((0, 0, page.width, min(page.height, 1450))).convert("RGB")
        top = top.resize((top.width * 2 // 3, top.height * 2 // 3), Image.LANCZOS)
        picture = _screenshot_target(tmp_path)
        picture.parent.mkdir(parents=True, exist_ok=True)
        top.save(picture, optimize=True)
    with Image.open(picture) as saved:
        assert saved.width >= 300 and saved.height >= 300, saved.size


def test_cancel_stops_a_long_conversion(server, browser, testsrc):
    from selenium.webdriver.common.by import By

    long_clip = testsrc("ui_long.mp4", size="320x240", rate=30, seconds=40.0)
    _open(browser, server, long_clip)
    _wait(browser, lambda d: [e for e in d.find_elements(By.CSS_SELECTOR, "#sbs-preview-frame img")
                              if (e.get_attribute("src") or "").strip()], 180, "the preview")
    browser.find_element(By.CSS_SELECTOR, "#sbs-convert").click()
    _wait(browser, lambda d: "frames/s" in _status(d), 120, "progress")
    browser.find_element(By.CSS_SELECTOR, "#sbs-cancel").click()
    t0 = time.monotonic()
    _wait(browser, lambda d: "Cancelled" in _status(d), 30, "the cancellation")
    assert time.monotonic() - t0 < 15
    finished = list(Path(server["work"], "outputs").glob("*/ui_long_3d*.mp4"))
    assert finished == []  # nothing under the output name


def test_a_broken_file_shows_its_error(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"this is not a video at all" * 100)
    _open(browser, server, broken)
    browser.find_element(By.CSS_SELECTOR, "#sbs-convert").click()
    _wait(browser, lambda d: "error" in _status(d).lower(), 120, "the error message")
    text = _status(browser)
    assert "broken.mp4" in text or "input" in text.lower(), text
    assert "Traceback" not in browser.page_source
    assert browser.find_elements(By.CSS_SELECTOR, "#sbs-status .sbs-error")


def test_a_preset_fills_in_the_settings(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(server["url"])
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#sbs-preset input"), 60, "the page")
    choose = browser.find_element(By.CSS_SELECTOR, "#sbs-preset input")
    choose.click()
    choose.send_keys("3D TV", Keys.ENTER)
    for title in ("Layout", "Quality and encoder"):  # closed sections: open them to read their settings
        browser.find_element(By.XPATH, f"//*[contains(@class, 'label-wrap')][contains(., '{title}')]").click()
    layout = _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#sbs-opt-layout input"), 30, "the layout")[0]
    _wait(browser, lambda d: layout.get_attribute("value") == "half-sbs", 30, "the preset's layout")
    # (the opened section renders its settings when it gets to them: under load, after the layout's)
    codec = _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#sbs-opt-codec input"), 30, "the codec")[0]
    _wait(browser, lambda d: codec.get_attribute("value") == "h264", 30, "the preset's codec")


def test_two_tabs_queue_rather_than_collide(server, browser, tmp_path, request):
    """Two pages convert the same clip with the same settings (the same output) at once: one
    waits for the other, and both finish."""
    from selenium.webdriver.common.by import By

    second = request.getfixturevalue("second_browser")
    for driver in (browser, second):
        _open(driver, server, data(CLIP))
    for driver in (browser, second):
        _wait(driver, lambda d: [e for e in d.find_elements(By.CSS_SELECTOR, "#sbs-preview-frame img")
                                 if (e.get_attribute("src") or "").strip()], 180, "the preview")
    for driver in (browser, second):
        driver.find_element(By.CSS_SELECTOR, "#sbs-convert").click()
    for driver in (browser, second):
        _wait(driver, lambda d: "Done" in _status(d) or "error" in _status(d).lower(), 300, "the conversion")
        assert "Done" in _status(driver), _status(driver)


@pytest.fixture
def second_browser(browser):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1500,2200"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    yield driver
    driver.quit()


def test_the_command_line_checks_its_options(tmp_path, capsys):
    from sbsconv import cli

    assert cli.main(["ui", "--port", "70000"]) == 2
    assert "--port must be within 1..65535" in capsys.readouterr().err
    assert cli.main(["ui", "--allow-path", str(tmp_path / "missing")]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert cli.main(["ui", "--max-upload-mb", "0"]) == 2


def test_the_depth_in_3d_plays_in_the_page(server, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    _open(browser, server, data(CLIP))
    _wait(browser, lambda d: [e for e in d.find_elements(By.CSS_SELECTOR, "#sbs-preview-frame img")
                              if (e.get_attribute("src") or "").strip()], 180, "the preview")
    toggle = [e for e in browser.find_elements(By.XPATH, "//*[contains(text(), 'Depth in 3D')]") if e.is_displayed()]
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].click()", toggle[0])
    button = _wait(browser, lambda d: [b for b in d.find_elements(By.CSS_SELECTOR, "#sbs-depth-3d-button")
                                       if b.is_displayed()], 30, "the 3D button")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].click()", button[0])
    frame = _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#sbs-depth-3d-frame"), 180, "the 3D view")
    browser.switch_to.frame(frame[0])
    try:
        canvas = _wait(browser, lambda d: [c for c in d.find_elements(By.ID, "sbs-depth-canvas")
                                           if int(c.get_attribute("data-drawn") or 0) >= 2], 60, "points drawn")[0]
        browser.find_element(By.ID, "sbs-depth-play").click()  # pause
        from test_viewer import canvas_pixels, drawn, wait_for

        # the points, once the browser's (software) WebGL has them in the canvas (drawn again on
        # the first displayed frame): a loaded machine may show the clear colour a moment longer
        def points_shown():
            pixels = canvas_pixels(browser, canvas)
            # (the tiny model's flat depth puts its points on about 6 % of the canvas; blank is 0)
            return (pixels,) if drawn(pixels) > 0.02 else None

        try:
            (before,) = wait_for(points_shown)
        except AssertionError:
            state = {a: canvas.get_attribute(a) for a in ("data-drawn", "data-frame", "data-error")}
            raise AssertionError(f"no points reached the canvas: {state}") from None
        ActionChains(browser).move_to_element(canvas).click_and_hold().move_by_offset(120, 30).release().perform()
        after = canvas_pixels(browser, canvas)
        assert (np.abs(after - before).sum(-1) > 30).mean() > 0.02  # the view turned
    finally:
        browser.switch_to.default_content()
