"""convergence="subject" (Note [Subject on the screen plane]): the subject's depth at zero
parallax, shot by shot, from a mask model or a mask file, for relative and metric depth; the
masks as a product of a conversion (mask_out=); and bad input refused before anything is
written."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import hubcache
import sbsconv
import stereoscenes
from sbsconv._native import _core
from sbsconv.errors import InputError, OptionError

W, H, N, FPS = 160, 96, 24, 12
BOX = 40  # the subject's side


def subject_box(t: int) -> tuple[int, int]:
    """The subject's top-left corner in frame t (it moves right, 2 px a frame)."""
    return 24, 20 + 2 * t


def make_clip(folder: Path, *, metric: bool, hidden: range = range(0)):
    """A textured wall and a textured square (the subject) moving right and coming nearer;
    its exact depth (relative: the wall 0.2, the subject 0.5 -> 0.8; metric: the wall 8 m, the
    subject 3 -> 2 m) as a depth file, and its exact masks as a mask file (empty in `hidden`
    frames). Returns (video, depth, masks, the subject's depth per frame)."""
    rng = np.random.default_rng(0)
    wall = (rng.random((H, W + 64, 3)) * 255).astype(np.uint8)
    skin = (rng.random((BOX, BOX, 3)) * 255).astype(np.uint8)
    frames = np.empty((N, H, W, 3), np.uint8)
    depth = np.empty((N, H, W), np.float32)
    masks = torch.zeros(N, 1, H, W)
    subject = []
    for t in range(N):
        frames[t] = wall[:, t:t + W]  # the camera pans slowly
        y, x = subject_box(t)
        frames[t, y:y + BOX, x:x + BOX] = skin
        d = (0.5 + 0.3 * t / (N - 1)) if not metric else (3.0 - t / (N - 1))
        depth[t] = 0.2 if not metric else 8.0
        depth[t, y:y + BOX, x:x + BOX] = d
        subject.append(d)
        if t not in hidden:
            masks[t, 0, y:y + BOX, x:x + BOX] = 1.0
    video = folder / "subject.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{W}x{H}",
                    "-r", str(FPS), "-i", "-", "-c:v", "ffv1", "-pix_fmt", "bgr0", str(video)],
                   input=frames.tobytes(), check=True, capture_output=True)
    depth_path = folder / "subject_depth.npy"
    np.save(depth_path, depth)
    side = {"sbsconv_depth": 1, "format": "npy", "file": depth_path.name, "relative": not metric,
            "units": "metres" if metric else "relative inverse depth",
            "encoding": {"type": "float32", "depth": "value"}, "width": W, "height": H, "frame_count": N,
            "fps": f"{FPS}/1", "time_base": f"1/{FPS}", "source_start": 0.0, "window_start": 0.0,
            "fov_degrees": 60.0, "scene_cuts": [], "model": "exact",
            "frames": {"time": [t / FPS for t in range(N)], "fov": [60.0] * N}}
    Path(str(depth_path) + ".json").write_text(json.dumps(side))
    mask_path = folder / "subject_mask.mkv"
    sbsconv.write_masks(masks, mask_path, fps=FPS, source=video, model="exact")
    return video, depth_path, mask_path, np.array(subject)


def test_the_subject_sits_on_the_screen_plane_on_every_frame(tmp_path):
    video, depth, masks, subject = make_clip(tmp_path, metric=False)
    divergence = 5.0
    result = sbsconv.convert(video, tmp_path / "out.mp4", depth=depth, masks=masks, convergence="subject",
                             divergence=divergence, layout="full-sbs", progress=False, resume=False)
    plane = np.array(result.screen_plane)
    assert plane.shape == (N,)
    # the subject's disparity, m * (depth - plane), within 1 % of the eye width on every frame
    shift = divergence / 100 * (subject - plane)
    assert np.abs(shift).max() <= 0.01, shift
    # and the plane moves smoothly with the subject (no flicker: steps no larger than its own)
    assert np.abs(np.diff(plane)).max() <= np.abs(np.diff(subject)).max() + 1e-4
    # rendered: the subject's pixels stand still between the eyes, the wall's do not
    eyes = stereoscenes.convert_eyes(video, depth, tmp_path, masks=masks, convergence="subject",
                                     divergence=divergence)
    left, right = eyes.left.astype(float), eyes.right.astype(float)
    assert len(left) == N
    for t in (0, N // 2, N - 1):
        y, x = subject_box(t)
        subject_shift = best_shift(left[t], right[t], slice(y + 4, y + BOX - 4), slice(x + 6, x + BOX - 6))
        wall_shift = best_shift(left[t], right[t], slice(2, 18), slice(12, W - 12))
        assert subject_shift == 0 and abs(wall_shift) >= 2, (t, subject_shift, wall_shift)


def best_shift(left: np.ndarray, right: np.ndarray, rows: slice, cols: slice, reach: int = 6) -> int:
    """The whole-pixel shift s that best maps the left eye's region onto the right eye's
    (right[x] = left[x + s])."""
    errors = {s: np.abs(left[rows, cols.start + s:cols.stop + s] - right[rows, cols]).mean()
              for s in range(-reach, reach + 1)}
    return min(errors, key=errors.get)


def test_metric_depth_puts_the_screen_at_the_subject(tmp_path):
    video, depth, masks, subject = make_clip(tmp_path, metric=True)
    result = sbsconv.convert(video, tmp_path / "out.mp4", depth=depth, masks=masks, convergence="subject",
                             layout="full-sbs", progress=False, resume=False, depth_out=tmp_path / "d.npy",
                             depth_format="npy")
    screen = np.array(result.screen_plane)  # metres
    # the depth export's sidecar holds the plane of every frame
    side = json.loads(Path(result.depth_sidecar).read_text())
    assert side["frames"]["screen_plane"] == pytest.approx(screen.tolist(), abs=1e-5)
    focal = (W / 2) / np.tan(np.radians(30.0))
    shift = focal * 0.063 * (1 / subject - 1 / screen) / W
    assert np.abs(shift).max() <= 0.01, shift


def test_a_frame_without_a_subject_keeps_the_plane_and_a_cut_starts_afresh(tmp_path):
    video, depth, masks, subject = make_clip(tmp_path, metric=False, hidden=range(10, 15))
    result = sbsconv.convert(video, tmp_path / "out.mp4", depth=depth, masks=masks, convergence="subject",
                             progress=False, resume=False)
    plane = np.array(result.screen_plane)
    assert np.all(plane[10:15] == plane[9]) and plane[15] != plane[9]
    # the plane itself (the engine's SubjectPlane): a new shot takes its first frame's subject
    finder = _core.SubjectPlane(relative=True, smoothing=0.8, fallback=0.5)
    d = torch.full((3, 1, 8, 8), 0.2)
    d[:, :, 2:6, 2:6] = torch.tensor([0.4, 0.6, 0.9]).view(3, 1, 1, 1)
    m = torch.zeros(3, 1, 8, 8)
    m[:, :, 2:6, 2:6] = 1
    planes = finder.process(d, m, [True, False, True]).tolist()
    assert planes[0] == pytest.approx(0.4) and planes[1] == pytest.approx(0.8 * 0.4 + 0.2 * 0.6)
    assert planes[2] == pytest.approx(0.9)
    empty = _core.SubjectPlane(relative=True, smoothing=0.8, fallback=0.5)
    assert empty.process(d[:1], torch.zeros(1, 1, 8, 8), [True]).tolist() == [0.5]  # no subject yet


def test_convert_with_the_subject_by_default_reaches_the_models(offline_hub, testsrc, tmp_path):
    # the default depth model and the default mask model (u2netp), from the hub cache
    clip = testsrc("subject_default.mp4", size="96x64", rate=10, seconds=0.6)
    result = sbsconv.convert(clip, tmp_path / "out.mp4", convergence="subject", mask_out=tmp_path / "m.mkv",
                             progress=False)
    assert len(result.screen_plane) == 6 and all(0.0 <= p <= 1.0 for p in result.screen_plane)
    assert result.mask_out == str(tmp_path / "m.mkv")
    masks = sbsconv.read_masks(result.mask_out, clip)
    assert masks.shape == (6, 1, 64, 96)
    side = json.loads((tmp_path / "m.mkv.json").read_text())
    assert side["product"] == "mask" and side["model"] == "u2netp"
    # the same masks as export_mask() makes with the same model
    alone = sbsconv.read_masks(sbsconv.export_mask(clip, tmp_path / "alone.mkv").path)
    assert (alone - masks).abs().max() < 1e-3


def test_bad_subject_input_is_refused_before_anything_is_written(tmp_path, testsrc, tiny_model):
    video, depth, masks, _ = make_clip(tmp_path, metric=False)
    other = testsrc("subject_other.mp4", size="96x64", rate=FPS, seconds=2.0)
    out = tmp_path / "out.mp4"
    with pytest.raises(InputError, match="160x96, the video 96x64"):
        sbsconv.convert(other, out, model=str(tiny_model), masks=masks, convergence="subject", progress=False)
    with pytest.raises(OptionError, match="without it"):
        sbsconv.convert(video, out, depth=depth, masks=masks, progress=False)
    with pytest.raises(OptionError, match="not subject masks"):
        sbsconv.convert(video, out, depth=depth, convergence="subject", mask_model=str(tiny_model), progress=False)
    with pytest.raises(OptionError, match="convergence"):
        sbsconv.ConvertOptions(convergence="middle")
    with pytest.raises(OptionError, match="mask_out"):
        sbsconv.ConvertOptions(mask_out=tmp_path / "m.mp4")
    assert not out.exists()
    assert sbsconv.ConvertOptions(convergence="0.3").convergence == 0.3  # as typed on the command line


KILLED = """
import os, sys, sbsconv
os.environ["SBSCONV_TEST_FAULT"] = "encode:4:kill"
sbsconv.convert(sys.argv[1], sys.argv[2], depth=sys.argv[3], masks=sys.argv[4], convergence="subject",
                segment_seconds=0.5, batch_size=2, progress=False)
"""


def test_a_killed_run_resumes_the_plane_where_it_was(tmp_path):
    import signal

    from helpers import run_python

    video, depth, masks, _ = make_clip(tmp_path, metric=False)
    whole = sbsconv.convert(video, tmp_path / "whole.mp4", depth=depth, masks=masks, convergence="subject",
                            segment_seconds=0.5, batch_size=2, progress=False, resume=False)
    proc = run_python(KILLED, str(video), str(tmp_path / "out.mp4"), str(depth), str(masks), timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    resumed = sbsconv.convert(video, tmp_path / "out.mp4", depth=depth, masks=masks, convergence="subject",
                              segment_seconds=0.5, batch_size=2, progress=False)
    assert 0 < resumed.resumed_from < N
    # the plane continues from its saved state: the same values as the uninterrupted run's
    assert resumed.screen_plane == pytest.approx(whole.screen_plane[resumed.resumed_from:], abs=1e-6)
