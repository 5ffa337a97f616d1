"""Chunk-parallel encoding (Note [Chunk-parallel encoding], cpp/sbsconv/pipeline/SegmentEncoders.h):
a resumable run's segments encoded by several encoder instances at once, each on its share of
the cores, joined in order into one stream; its faults, kills and resumes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sbsconv
import torch
from helpers import ffprobe, psnr, run_python, to_hwc
from sbsconv import media
from sbsconv._native import _core
from sbsconv.errors import InternalError, OptionError, SbsconvWarning

FAST = {"input_size": 70, "progress": False, "preset": "ultrafast", "segment_seconds": 0.5}


def frames_of(path) -> torch.Tensor:
    return torch.cat([b.data for b in media.read_frames(path)])


def min_psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return min(psnr(to_hwc(a[i:i + 1]), to_hwc(b[i:i + 1])) for i in range(len(a)))


def keyframes(path) -> list[int]:
    frames = ffprobe(path, "-select_streams", "v", "-show_entries", "frame=key_frame")["frames"]
    return [i for i, f in enumerate(frames) if f["key_frame"] == 1]


def x264_threads(path) -> list[int]:
    """The thread count in each x264 settings message of the stream (one per encoder instance's
    stream: one per segment)."""
    return [int(m.group(1)) for m in re.finditer(rb" threads=(\d+) ", Path(path).read_bytes())]


@pytest.fixture(scope="module")
def clip(cut_clip) -> Path:
    """76 frames, 160x96, a cut at frame 38."""
    return cut_clip


@pytest.fixture(scope="module")
def one_stream(clip, tiny_model, tmp_path_factory) -> tuple[sbsconv.ConversionResult, torch.Tensor]:
    """The same conversion with the encoders left alone (a CPU run: one at a time)."""
    out = tmp_path_factory.mktemp("one") / "one.mp4"
    result = sbsconv.convert(clip, out, model=str(tiny_model), **FAST)
    return result, frames_of(out)


def test_left_alone_a_cpu_run_encodes_one_segment_at_a_time(one_stream):
    result, frames = one_stream
    assert result.encoders == 1 and result.frames == 76 == len(frames)


def test_segments_are_encoded_by_several_encoders_at_once_and_joined_in_order(clip, tiny_model, one_stream,
                                                                                tmp_path):
    out = tmp_path / "parallel.mp4"
    result = sbsconv.convert(clip, out, model=str(tiny_model), encoders=2, **FAST)
    assert result.encoders == 2 and result.frames == 76
    frames = frames_of(out)
    # the same pictures, in order (the instances encode alike; only the keyframes differ)
    assert min_psnr(frames, one_stream[1]) >= 35
    # one stream per segment, each opened by its own encoder on its share of the cores
    starts = keyframes(out)
    assert starts[0] == 0 and len(starts) >= 5  # 0.5 s segments of a 3 s clip
    threads = x264_threads(out)
    assert len(threads) == len(starts)
    assert set(threads) == {max(1, _core.usable_cores() // 2)}
    # the timestamps run on without a gap or a repeat across the joins
    pts = [f["pts"] for f in ffprobe(out, "-select_streams", "v", "-show_entries", "frame=pts")["frames"]]
    steps = {b - a for a, b in zip(pts, pts[1:], strict=False)}
    assert len(steps) == 1 and steps.pop() > 0
    assert not (tmp_path / ".parallel.mp4.sbsconv-resume").exists()  # the journal goes with success
    from sbsconv import ui

    assert "2 encoding segments at once" in ui.figures_markdown([result])  # the web app's figures


def test_the_command_line_names_the_encoders_and_reports_them(clip, tiny_model, tmp_path):
    out = tmp_path / "cli.mp4"
    proc = subprocess.run([sys.executable, "-m", "sbsconv.cli", "convert", str(clip), str(out), "--model",
                           str(tiny_model), "--input-size", "70", "--preset", "ultrafast", "--segment-seconds", "0.5",
                           "--encoders", "2", "--quiet"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "encoder libx264 (preset ultrafast), 2 encoding segments at once" in proc.stdout
    assert len(keyframes(out)) >= 5


def test_an_encoder_that_fails_inside_a_segment_fails_the_run_and_the_next_run_completes(
        clip, tiny_model, one_stream, tmp_path, monkeypatch):
    out = tmp_path / "failed.mp4"
    monkeypatch.setenv("SBSCONV_TEST_FAULT", "encode-segment:20")
    with pytest.raises(InternalError, match="injected") as caught:
        sbsconv.convert(clip, out, model=str(tiny_model), encoders=2, **FAST)
    assert caught.value.stage == "encode-segment"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".sbsconv-resume")) == []
    monkeypatch.delenv("SBSCONV_TEST_FAULT")
    result = sbsconv.convert(clip, out, model=str(tiny_model), encoders=2, **FAST)
    assert result.resumed_from > 0 and result.frames == 76  # the segments finished before were kept
    assert min_psnr(frames_of(out), one_stream[1]) >= 35


KILLED = textwrap.dedent(
    """
    import os, sys, sbsconv
    os.environ["SBSCONV_TEST_FAULT"] = sys.argv[4]
    sbsconv.convert(sys.argv[1], sys.argv[2], model=sys.argv[3], input_size=70, preset="ultrafast",
                    segment_seconds=0.5, progress=False, encoders=2)
    """
)


def test_a_run_killed_while_segments_encode_at_once_resumes_with_the_choice_it_made(clip, tiny_model, one_stream,
                                                                                   tmp_path):
    out = tmp_path / "killed.mp4"
    proc = run_python(KILLED, str(clip), str(out), str(tiny_model), "encode-segment:12:kill", timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    journal = (tmp_path / ".killed.mp4.sbsconv-resume" / "journal.txt").read_text()
    assert re.search(r"^choice encoder_instances 2\b", journal, re.M) and "\nsegment 0 " in journal
    # resumed with the encoders left alone: the interrupted run's choice is kept
    result = sbsconv.convert(clip, out, model=str(tiny_model), **FAST)
    assert result.resumed_from > 0 and result.frames == 76 and result.encoders == 2
    assert min_psnr(frames_of(out), one_stream[1]) >= 35
    assert sorted(p.name for p in tmp_path.iterdir()) == ["killed.mp4"]


def test_encoders_without_segments_encode_one_stream_and_say_so(clip, tiny_model, tmp_path):
    with pytest.warns(SbsconvWarning, match="encoders=2 needs a resumable run"):
        result = sbsconv.convert(clip, tmp_path / "whole.mp4", model=str(tiny_model), encoders=2, resume=False,
                                 **FAST)
    assert result.encoders == 1 and result.frames == 76
    assert len(keyframes(result.output)) == 1


@pytest.mark.parametrize("bad", [0, -1, 65, 1.5, "two"])
def test_a_bad_encoder_count_is_refused(bad, clip, tmp_path):
    with pytest.raises(OptionError, match="encoders"):
        sbsconv.convert(clip, tmp_path / "never.mp4", encoders=bad)
    assert not os.listdir(tmp_path)


def test_the_rule_takes_more_instances_only_where_one_cannot_keep_pace():
    choose = _core.choose_encoder_preset
    order = ["medium", "fast", "faster", "veryfast"]
    # 1080p full side by side, the encoder on 16 cores, a GPU run with segments
    preset, reason, keeps, instances = choose("libx264", 3840, 1080, 1 / 15.0, 1, False, 16, True)
    assert (preset, keeps, instances) == ("medium", True, 1)  # one instance keeps pace
    preset, reason, keeps, instances = choose("libx264", 3840, 1080, 1 / 30.0, 1, False, 16, True)
    assert (preset, keeps, instances) == ("medium", True, 2) and "2 instances encoding segments at once" in reason
    # without segments (one stream) the same pace needs a faster preset
    alone = choose("libx264", 3840, 1080, 1 / 30.0, 1, False, 16, False)
    assert alone[3] == 1 and order.index(alone[0]) > 0
    # more cores: more instances, up to what the cores allow
    assert choose("libx264", 3840, 1080, 1 / 60.0, 1, False, 64, True)[:4:3] == ("medium", 4)
    floor, reason, keeps, instances = choose("libx264", 3840, 1080, 1 / 657.0, 1, False, 16, True)
    assert (floor, keeps, instances) == ("veryfast", False, 2) and "the encoder sets the pace" in reason
    # the caller's count is kept; on the CPU (the model's cores) one unless named
    assert choose("libx264", 3840, 1080, 1 / 30.0, 1, False, 16, True, 3)[3] == 3
    assert choose("libx264", 2560, 720, 0.5, 2, True, 16, True)[3] == 1
    assert choose("libx264", 2560, 720, 0.5, 2, True, 16, True, 2)[3] == 2
