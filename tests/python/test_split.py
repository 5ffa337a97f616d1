"""Segment-parallel conversion of one video (issue 17, Note [Parts of one video]): the timeline cut
at keyframes into parts converted by separate workers, each after a warm-up stretch that is
discarded, joined by stream copy. The result must equal a single run: every frame once, the same
timestamps, the same pictures (PSNR >= 40 dB at every frame, the seams included), the audio."""

from __future__ import annotations

import math

import numpy as np
import pytest

import sbsconv
from helpers import ffprobe, run
from sbsconv.batch import plan_parts
from sbsconv.errors import OptionError

FAST = dict(input_size=70, preset="ultrafast", progress=False)


@pytest.fixture(scope="module")
def long_clip(make_clip):
    """8 s at 25 fps with a keyframe every second, and audio."""
    return make_clip("split_8s.mp4", [
        "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=8",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=8",
        "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac"])


@pytest.fixture(scope="module")
def single(long_clip, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "single.mp4"
    sbsconv.convert(long_clip, out, model=str(tiny_model), **FAST)
    return out


def _frames(path, width=640, height=240) -> np.ndarray:
    raw = run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def _psnr_per_frame(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(1)
    return 10 * np.log10(255.0**2 / np.maximum(mse, 1e-12))


def _times(path) -> list[float]:
    frames = ffprobe(path, "-select_streams", "v", "-show_frames", "-show_entries", "frame=pts_time")["frames"]
    return [round(float(f["pts_time"]), 6) for f in frames]


def check_equals_single(result, single) -> np.ndarray:
    a, b = _frames(single), _frames(result.output)
    assert len(b) == len(a) == result.frames
    assert _times(result.output) == _times(single)
    psnr = _psnr_per_frame(a, b)
    assert psnr.min() >= 40, f"frame {int(psnr.argmin())}: {psnr.min():.1f} dB"
    streams = ffprobe(result.output, "-show_streams")["streams"]
    assert [s["codec_type"] for s in streams] == ["video", "audio"]
    return psnr


def test_a_split_run_equals_a_single_run(long_clip, single, tiny_model, tmp_path):
    out = tmp_path / "split.mp4"
    result = sbsconv.convert_split(long_clip, out, split=3, model=str(tiny_model), **FAST)
    assert [round(s, 3) for s, _ in result.parts] == [0.0, 3.0, 5.0]  # keyframes nearest thirds
    assert result.part_frames == (75, 50, 75) and result.frames == 200
    # each part after the first ran the depth model over the 3 s (75 frames) before its cut, and
    # wrote none of them
    assert result.warm_up_frames == (0, 75, 75)
    psnr = check_equals_single(result, single)
    for seam in (75, 125):  # the frames on both sides of each cut
        assert min(psnr[seam - 2:seam + 2]) >= 40
    assert sorted(p.name for p in tmp_path.iterdir()) == ["split.mp4"]  # the parts are gone


def test_parts_on_two_worker_processes(long_clip, single, tiny_model, tmp_path):
    result = sbsconv.convert_split(long_clip, tmp_path / "split.mp4", split=2, devices=["cpu", "cpu"],
                                   model=str(tiny_model), **FAST)
    assert len(result.parts) == 2 and sum(result.part_frames) == 200
    check_equals_single(result, single)


def test_progress_before_the_length_is_known_is_reported_as_zero(long_clip, tiny_model, tmp_path, monkeypatch):
    """A part's run reports fraction None until it knows its length (on a loaded machine its first
    report can come that early): the whole video's progress counts it as 0, and the run goes on."""
    from sbsconv import conversion

    part = conversion.convert_part

    def early_report(*args, on_progress=None, **kwargs):
        on_progress({"frames_done": 0, "frames_total": None, "fraction": None, "fps": 0.0,
                     "eta_seconds": None, "phase": "converting", "elapsed": 0.0})
        return part(*args, on_progress=on_progress, **kwargs)

    monkeypatch.setattr(conversion, "convert_part", early_report)
    seen = []
    result = sbsconv.convert_split(long_clip, tmp_path / "split.mp4", split=2, model=str(tiny_model),
                                   duration=3.0, on_progress=seen.append, **FAST)
    assert result.frames == 75
    # each part's first report (the one without a length) counts as none of that part done
    assert [next(e["fraction"] for e in seen if e["part"] == k) for k in (0, 1)] == [0.0, 0.5]
    fractions = [e["fraction"] for e in seen]
    assert all(isinstance(f, float) and 0.0 <= f <= 1.0 for f in fractions) and fractions[-1] == 1.0


def test_a_window_is_split_on_the_whole_videos_timeline(long_clip, tiny_model, tmp_path):
    kw = dict(model=str(tiny_model), start=1.5, duration=5.0, **FAST)
    whole = sbsconv.convert(long_clip, tmp_path / "whole.mp4", **kw)
    result = sbsconv.convert_split(long_clip, tmp_path / "split.mp4", split=2, **kw)
    assert result.frames == whole.frames == 125
    assert _times(result.output) == _times(whole.output)
    psnr = _psnr_per_frame(_frames(whole.output), _frames(result.output))
    assert psnr.min() >= 40


def test_plan_parts_cuts_at_the_nearest_keyframes():
    keys = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    assert plan_parts(keys, 0.0, 8.0, 3) == [0.0, 3.0, 5.0]
    assert plan_parts(keys, 1.5, 6.5, 2) == [1.5, 4.0]
    assert plan_parts([0.0, 10.0], 0.0, 12.0, 4) == [0.0, 10.0]  # only one keyframe to cut at
    assert plan_parts([0.0], 0.0, 5.0, 4) == [0.0]  # no keyframe inside: one part
    assert plan_parts([*keys, 8.0], 0.0, None, 2) == [0.0, 4.0]  # unknown end: up to the last keyframe
    cuts = plan_parts([i * 0.5 for i in range(40)], 0.0, 20.0, 7)
    assert cuts == sorted(set(cuts)) and len(cuts) == 7
    assert all(math.isclose(c % 0.5, 0) for c in cuts)


def test_split_options_are_checked(long_clip, tmp_path):
    with pytest.raises(OptionError, match="split"):
        sbsconv.convert_split(long_clip, tmp_path / "o.mp4", split=0)
    with pytest.raises(OptionError, match="depth"):
        sbsconv.convert_split(long_clip, tmp_path / "o.mp4", split=2, depth_out=tmp_path / "d.mkv")
    with pytest.raises(OptionError, match="depth_video"):
        sbsconv.convert_split(long_clip, tmp_path / "o.mp4", split=2, depth_video=tmp_path / "d.mp4")
    with pytest.raises(OptionError, match="MP4/MOV"):
        sbsconv.convert_split(long_clip, tmp_path / "o.mkv", split=2, layout="apple-3d")
    with pytest.raises(OptionError, match="overwrite the input"):
        sbsconv.convert_split(long_clip, long_clip, split=2)
    with pytest.raises(OptionError, match="spatial"):
        sbsconv.convert_split(long_clip, tmp_path / "o.mp4", split=2, layout="spatial")
    with pytest.raises(OptionError, match="warm_up"):
        sbsconv.convert_split(long_clip, tmp_path / "o.mp4", split=2, warm_up=-1)
    with pytest.raises(OptionError, match="must end in"):
        sbsconv.convert_split(long_clip, tmp_path / "o.avi", split=2)


def test_the_command_line_splits_one_video(long_clip, tiny_model, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "split.mp4"
    proc = subprocess.run([sys.executable, "-m", "sbsconv.cli", "convert", str(long_clip), str(out), "--split", "2",
                           "--model", str(tiny_model), "--input-size", "70", "--preset", "ultrafast", "-q"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "200 frames in 2 parts" in proc.stdout and len(_times(out)) == 200
