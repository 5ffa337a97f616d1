"""Depth in 3D (python/sbsconv/viewer.py, python/sbsconv/assets/depth_viewer.js): the page plays
a depth export as a point cloud in headless Chromium (pixels drawn; dragging orbits, the wheel
zooms, play/pause moves through the frames, the mask and the camera path toggle), `sbsconv
view-depth` as a user runs it, and bad input refused with a clear error."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import hubcache
import sbsconv
from helpers import run_python  # noqa: F401  (the tests' own helpers are importable here)
from sbsconv.errors import InputError, OptionError
from test_ui import CHROMIUM, DRIVER

W, H, N = 96, 64, 8


def write_clip_and_depth(folder: Path, make_clip, frames: int = N) -> tuple[Path, Path]:
    """A clip of ``frames`` frames and its exact relative depth (a near square on a far wall) as
    an npy depth file with the camera's poses (it moves right)."""
    video = make_clip(f"viewer_src_{frames}.mp4", [
        "-f", "lavfi", "-i", f"testsrc2=size={W}x{H}:rate=10:duration={frames / 10}",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"])
    depth = np.full((frames, H, W), 0.2, np.float32)
    depth[:, 16:48, 30:66] = 0.8
    path = folder / "depth.npy"
    np.save(path, depth)
    poses = [[1, 0, 0, 0.05 * k, 0, 1, 0, 0, 0, 0, 1, 0] for k in range(frames)]
    side = {"sbsconv_depth": 1, "format": "npy", "file": path.name, "relative": True,
            "encoding": {"type": "float32", "depth": "value"}, "width": W, "height": H, "frame_count": frames,
            "fps": "10/1", "time_base": "1/10", "source_start": 0.0, "window_start": 0.0, "fov_degrees": 60.0,
            "scene_cuts": [], "model": "exact",
            "frames": {"time": [k / 10 for k in range(frames)], "camera_to_world": poses}}
    Path(str(path) + ".json").write_text(json.dumps(side))
    return video, path


@pytest.fixture(scope="module")
def clip_and_depth(tmp_path_factory, make_clip):
    """write_clip_and_depth's N frames, and a mask file of the square."""
    folder = tmp_path_factory.mktemp("viewer")
    video, path = write_clip_and_depth(folder, make_clip)
    masks = torch.zeros(N, 1, H, W)
    masks[:, :, 16:48, 30:66] = 1
    mask = folder / "mask.mkv"
    sbsconv.write_masks(masks, mask, fps=10, source=video)
    return video, path, mask


@pytest.fixture
def chromium():
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("needs Debian's chromium and chromium-driver (scripts/bootstrap.sh installs them)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                "--disable-gpu"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    yield driver
    driver.quit()


def canvas_pixels(driver, canvas) -> np.ndarray:
    from PIL import Image

    url = driver.execute_script("return arguments[0].toDataURL('image/png')", canvas)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",")[1]))).convert("RGB")).astype(int)


def drawn(pixels: np.ndarray) -> float:
    return float((np.abs(pixels - np.array([15, 18, 23])).sum(-1) > 30).mean())


def wait_for(condition, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_the_page_plays_the_depth_and_the_view_follows_the_mouse(clip_and_depth, chromium, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains

    video, depth, mask = clip_and_depth
    page = sbsconv.write_depth_view(video, depth, tmp_path / "view.html", masks=mask, points_wide=64)
    chromium.get(Path(page).as_uri())
    canvas = chromium.find_element("id", "sbs-depth-canvas")
    wait_for(lambda: int(canvas.get_attribute("data-drawn") or 0) >= 1)
    assert canvas.get_attribute("data-error") is None
    # playing: the frames advance; paused: they stay
    wait_for(lambda: int(canvas.get_attribute("data-frame")) > 0)
    chromium.find_element("id", "sbs-depth-play").click()
    held = canvas.get_attribute("data-frame")
    time.sleep(0.5)
    assert canvas.get_attribute("data-frame") == held
    before = canvas_pixels(chromium, canvas)
    assert drawn(before) > 0.05  # points on the canvas
    # the subject mask on/off changes the subject's colour (the square: about a fifth of the frame)
    chromium.find_element("id", "sbs-depth-mask").click()
    untinted = canvas_pixels(chromium, canvas)
    assert (np.abs(untinted - before).sum(-1) > 30).mean() > 0.004  # thousands of pixels
    chromium.find_element("id", "sbs-depth-mask").click()
    # orbit: a drag turns the view and moves the points
    ActionChains(chromium).move_to_element(canvas).click_and_hold().move_by_offset(140, 40).release().perform()
    assert canvas.get_attribute("data-view").split(",")[:2] != ["0.000", "0.000"]
    turned = canvas_pixels(chromium, canvas)
    assert (np.abs(turned - before).sum(-1) > 30).mean() > 0.02
    # zoom: the wheel changes the distance
    distance = float(canvas.get_attribute("data-view").split(",")[2])
    chromium.execute_script("arguments[0].dispatchEvent(new WheelEvent('wheel', {deltaY: 400, bubbles: true}))", canvas)
    assert float(canvas.get_attribute("data-view").split(",")[2]) > distance
    # the camera path and frustum: lines of their own
    path_box = chromium.find_element("id", "sbs-depth-path")
    assert path_box.is_enabled() and path_box.is_selected()  # the depth holds poses
    with_path = canvas_pixels(chromium, canvas)
    path_box.click()
    assert (np.abs(canvas_pixels(chromium, canvas) - with_path).sum(-1) > 30).sum() > 20


def test_a_lost_webgl_context_is_reported_and_the_view_starts_again(clip_and_depth, chromium, tmp_path):
    video, depth, _ = clip_and_depth
    page = sbsconv.write_depth_view(video, depth, tmp_path / "view.html", points_wide=64)
    chromium.get(Path(page).as_uri())
    canvas = chromium.find_element("id", "sbs-depth-canvas")
    wait_for(lambda: int(canvas.get_attribute("data-drawn") or 0) >= 2)
    # the browser takes the context away (as it does under memory pressure): the page says so
    chromium.execute_script("window.sbsLose = arguments[0].getContext('webgl').getExtension('WEBGL_lose_context');"
                            "window.sbsLose.loseContext()", canvas)
    wait_for(lambda: canvas.get_attribute("data-error") == "context-lost")
    assert "interrupted" in chromium.find_element("id", "sbs-depth-status").text
    # and gives it back: the view starts again from the page's data and draws points
    chromium.execute_script("window.sbsLose.restoreContext()")

    def drawing_again():
        from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

        try:  # the page reloads meanwhile: the old canvas goes stale, the new one may not be there yet
            fresh = chromium.find_element("id", "sbs-depth-canvas")
            if fresh.get_attribute("data-error") is None and int(fresh.get_attribute("data-drawn") or 0) >= 2:
                return fresh
        except (NoSuchElementException, StaleElementReferenceException):
            pass
        return None

    fresh = wait_for(drawing_again)
    assert drawn(canvas_pixels(chromium, fresh)) > 0.05


def test_the_first_displayed_frame_is_drawn_again(make_clip, chromium, tmp_path):
    """A draw made while the page is still being laid out may never reach the screen, so the
    first frame the browser displays draws again. With one frame nothing else would: the view
    does not advance, and before this the canvas could stay blank."""
    video, depth = write_clip_and_depth(tmp_path, make_clip, frames=1)
    page = sbsconv.write_depth_view(video, depth, tmp_path / "view.html", points_wide=64)
    chromium.get(Path(page).as_uri())
    canvas = chromium.find_element("id", "sbs-depth-canvas")
    wait_for(lambda: int(canvas.get_attribute("data-drawn") or 0) >= 2)
    assert drawn(canvas_pixels(chromium, canvas)) > 0.05
    time.sleep(0.5)  # and then it rests: a still view is not redrawn frame after frame
    assert int(canvas.get_attribute("data-drawn")) == 2


def test_a_frame_of_noise_is_shown_not_hidden_as_edges(make_clip, tmp_path):
    """Points between depth layers are hidden (flying pixels). A frame whose depth is noise (a
    flat frame stretched to the full range, as a stabiliser does with a shot's first frame) has
    its every point "between layers": hiding them left the frame blank, and the web app's 3D
    view showed nothing when paused there. Such a frame keeps its points; a layered one keeps
    its edges."""
    video, path = write_clip_and_depth(tmp_path, make_clip, frames=2)
    depth = np.load(path)
    depth[0] = np.random.default_rng(0).uniform(0.0, 1.0, (H, W))
    np.save(path, depth)
    from sbsconv.viewer import depth_view_html

    page = depth_view_html(video, path, points_wide=48)
    data = json.loads(page.split('id="sbs-depth-data">', 1)[1].split("</script>", 1)[0])
    w, h = data["grid"]
    flags = np.frombuffer(base64.b64decode(data["flags"]), np.uint8).reshape(2, h, w)
    assert not (flags[0] & 1).any()  # the noise: nothing hidden
    edges = (flags[1] & 1).astype(bool)  # the square on the wall: its outline, and only that
    assert 0 < edges.mean() < 0.3
    assert edges[round(32 * h / H), round(30 * w / W)] and not edges[round(32 * h / H), round(48 * w / W)]


def test_view_depth_as_a_user_runs_it(clip_and_depth, tmp_path):
    video, depth, mask = clip_and_depth
    out = tmp_path / "page.html"
    proc = subprocess.run([sys.executable, "-m", "sbsconv.cli", "view-depth", str(video), str(depth), str(out),
                           "--masks", str(mask), "--no-open"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stdout and out.is_file()
    text = out.read_text()
    data = json.loads(text.split('id="sbs-depth-data">', 1)[1].split("</script>", 1)[0])
    assert data["frames"] == N and data["has_mask"] and len(data["poses"]) == N
    assert data["grid"] == [160, round(160 * H / W)]
    # a missing depth file: a clear error, no traceback, nothing written
    proc = subprocess.run([sys.executable, "-m", "sbsconv.cli", "view-depth", str(video), str(tmp_path / "no.npy"),
                           str(tmp_path / "bad.html"), "--no-open"], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "sbsconv: error:" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "bad.html").exists()


def test_bad_viewer_input_is_refused(clip_and_depth, tmp_path, testsrc):
    video, depth, mask = clip_and_depth
    with pytest.raises(OptionError, match="points_wide"):
        sbsconv.write_depth_view(video, depth, tmp_path / "v.html", points_wide=2)
    with pytest.raises(OptionError, match=".html"):
        sbsconv.write_depth_view(video, depth, tmp_path / "v.txt")
    other = testsrc("viewer_other.mp4", size="80x48", rate=10, seconds=0.8)
    other_masks = sbsconv.export_mask(other, tmp_path / "other_mask.mkv", model=_u2netp(tmp_path), input_size=32)
    with pytest.raises(InputError, match="masks are 80x48"):
        sbsconv.write_depth_view(video, depth, tmp_path / "v.html", masks=other_masks.path)
    assert not list(tmp_path.glob("v.*"))


def _u2netp(folder: Path) -> str:
    path = folder / "u2netp.pth"
    torch.save(hubcache.u2net_reference(small=True).state_dict(), path)
    return str(path)
