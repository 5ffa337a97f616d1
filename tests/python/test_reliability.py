"""Reliability: hostile and damaged inputs, faults in every stage, interrupted and concurrent
runs, and the float64 check (Note [No float64 on devices]).

Faults are injected through SBSCONV_TEST_FAULT ("STAGE:N" fails STAGE at its N-th batch,
"STAGE:N:kill" kills the process there), which the engine reads for these tests only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import pytest
import sbsconv
import torch
from helpers import data, ffprobe, psnr, run_python, to_hwc
from sbsconv import media, plan
from sbsconv.errors import (
    CancelledError,
    InputError,
    InternalError,
    OptionError,
    OutputError,
    SbsconvWarning,
)

FAST = {"input_size": 70, "progress": False, "preset": "ultrafast"}
STAGES = ["decode", "depth", "stabilise", "stereo", "encode"]


def frames_of(path) -> torch.Tensor:
    return torch.cat([b.data for b in media.read_frames(path)])


def min_psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return min(psnr(to_hwc(a[i:i + 1]), to_hwc(b[i:i + 1])) for i in range(len(a)))


def leftovers(folder: Path, name: str) -> list[str]:
    """Files in `folder` that belong to the output `name` (itself, its temporary, its lock)."""
    return sorted(p.name for p in folder.iterdir() if name in p.name and not p.name.endswith(".sbsconv-resume"))


@pytest.fixture(scope="module")
def clip(cut_clip) -> Path:
    """76 frames, 160x96, a cut at frame 38 (conftest's cut_clip)."""
    return cut_clip


@pytest.fixture(scope="module")
def reference(clip, tiny_model, tmp_path_factory) -> torch.Tensor:
    """The frames of an uninterrupted conversion of `clip`."""
    out = tmp_path_factory.mktemp("reference") / "whole.mp4"
    sbsconv.convert(clip, out, model=str(tiny_model), segment_seconds=0.5, **FAST)
    return frames_of(out)


# ---- no float64 on the model's device ------------------------------------------------------


@pytest.mark.parametrize("family", ["depth-anything-v2", "vda-windowed", "vda-streaming"])
def test_default_conversions_make_no_float64_on_the_model_device(family, clip, tiny_model, tiny_vda, tmp_path,
                                                                   monkeypatch):
    # Every stage observes its own tensor operations and fails on a float64 tensor, the CPU
    # standing in for the GPU (MPS has no float64): the default path, alignment, scene cuts,
    # the comfort statistics and the resumable states included.
    monkeypatch.setenv("SBSCONV_CHECK_FLOAT64", "1")
    model = str(tiny_model) if family == "depth-anything-v2" else str(tiny_vda)
    mode = "streaming" if family == "vda-streaming" else "windowed"
    result = sbsconv.convert(clip, tmp_path / "out.mp4", model=model, temporal_mode=mode, segment_seconds=1.0,
                             **FAST)
    assert result.frames == 76
    assert result.cuts == (38,)


def test_the_float64_check_sees_every_stage(clip, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("SBSCONV_CHECK_FLOAT64", "1")
    for stage in STAGES:
        monkeypatch.setenv("SBSCONV_TEST_FAULT", f"{stage}:1:float64")
        with pytest.raises(InternalError, match="float64") as caught:
            sbsconv.convert(clip, tmp_path / f"{stage}.mp4", model=str(tiny_model), **FAST)
        assert caught.value.stage == stage
    # and without the check mode the same tensor goes unremarked (on the CPU it is harmless)
    monkeypatch.delenv("SBSCONV_CHECK_FLOAT64")
    assert sbsconv.convert(clip, tmp_path / "unchecked.mp4", model=str(tiny_model), **FAST).frames == 76


# ---- damaged and hostile inputs --------------------------------------------------------------


def test_a_truncated_matroska_file_is_reported(tmp_path, tiny_model, make_clip):
    whole = make_clip("whole_4s.mkv", ["-f", "lavfi", "-i", "testsrc2=size=160x96:rate=25:duration=4",
                                       "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"])
    cut = tmp_path / "cut.mkv"
    raw = whole.read_bytes()
    cut.write_bytes(raw[: len(raw) * 45 // 100])  # mid-cluster
    with pytest.warns(SbsconvWarning, match="truncated"):
        result = sbsconv.convert(cut, tmp_path / "out.mp4", model=str(tiny_model), **FAST)
    assert result.truncated
    assert 0 < result.frames < 100
    assert any("truncated" in w for w in result.warnings)
    # the same file whole is not
    result = sbsconv.convert(whole, tmp_path / "whole.mp4", model=str(tiny_model), **FAST)
    assert not result.truncated and result.frames == 100 and result.damaged_frames == 0


def test_bit_flipped_h264_is_converted_with_its_damage_counted(tmp_path, tiny_model, make_clip):
    flipped = make_clip("flipped.mp4", ["-f", "lavfi", "-i", "testsrc2=size=160x96:rate=25:duration=2",
                                        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
                                        "-bsf:v", "noise=amount=400"])
    with pytest.warns(SbsconvWarning, match="with errors|corrupt"):
        result = sbsconv.convert(flipped, tmp_path / "out.mp4", model=str(tiny_model), **FAST)
    assert result.damaged_frames > 0
    assert result.frames > 0


def _patch_matroska_size(raw: bytes, old: tuple[int, int], new: tuple[int, int]) -> bytes:
    # PixelWidth (0xB0) and PixelHeight (0xBA), each a 2-byte unsigned integer here.
    out = raw
    for element, a, b in ((b"\xb0", old[0], new[0]), (b"\xba", old[1], new[1])):
        needle = element + b"\x82" + a.to_bytes(2, "big")
        assert needle in out
        out = out.replace(needle, element + b"\x82" + b.to_bytes(2, "big"), 1)
    return out


@pytest.mark.parametrize(("size", "where"), [((16000, 16000), "larger than sbsconv handles"),
                                              ((40000, 256), "larger than sbsconv handles")])
def test_a_huge_declared_picture_is_refused_before_allocating(size, where, tmp_path, tiny_model, make_clip):
    # Raw video takes its picture size from the container alone: a file can declare any size.
    small = make_clip("raw_256.mkv", ["-f", "lavfi", "-i", "testsrc2=size=256x256:rate=5:duration=0.4",
                                      "-c:v", "rawvideo", "-pix_fmt", "gray"])
    huge = tmp_path / "huge.mkv"
    huge.write_bytes(_patch_matroska_size(small.read_bytes(), (256, 256), size))
    assert (sbsconv.probe(huge).width, sbsconv.probe(huge).height) == size  # the header is read as it is
    out = tmp_path / "out.mp4"
    with pytest.raises(InputError, match=where):
        sbsconv.convert(huge, out, model=str(tiny_model), **FAST)
    assert leftovers(tmp_path, "out.mp4") == []


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"stream": -5}, "stream"),
    ({"stream": 1.5}, "stream"),
    ({"fps": float("nan")}, "fps"),
    ({"fps": float("inf")}, "fps"),
    ({"fps": "1e400"}, "fps"),
    ({"fps": Fraction(1, 10**30)}, "fps"),
    ({"fps": True}, "fps"),
])
def test_out_of_range_numbers_are_option_errors(tmp_path, tiny_model, kwargs, match):
    with pytest.raises(OptionError, match=match):
        sbsconv.convert(data("bt601_limited_range.mp4"), tmp_path / "out.mp4", model=str(tiny_model), **FAST,
                        **kwargs)


def test_a_rate_with_a_huge_fraction_is_brought_into_range(tmp_path, tiny_model):
    rate = Fraction(30 * 10**20 + 1, 10**20)  # 30.00000...1 fps: no 32-bit fraction holds it
    result = sbsconv.convert(data("bt601_limited_range.mp4"), tmp_path / "out.mp4", model=str(tiny_model),
                             fps=rate, duration=0.5, **FAST)
    assert result.frames == 15
    assert ffprobe(result.output, "-show_streams")["streams"][0]["r_frame_rate"] == "30/1"


def test_anamorphic_sources_keep_their_display_aspect_ratio(tmp_path, tiny_model, make_clip):
    dvd = make_clip("dvd_ntsc_wide.mp4", ["-f", "lavfi", "-i", "testsrc2=size=720x480:rate=25:duration=0.4",
                                          "-vf", "setsar=32/27", "-c:v", "libx264", "-preset", "ultrafast",
                                          "-pix_fmt", "yuv420p"])
    info = sbsconv.probe(dvd)
    assert info.sample_aspect_ratio == Fraction(32, 27)
    assert info.display_aspect_ratio == Fraction(16, 9)
    assert info.display_width == 853
    result = sbsconv.convert(dvd, tmp_path / "sbs.mp4", model=str(tiny_model), **FAST)
    assert (result.width, result.height) == (2 * 854, 480)  # square-pixel eyes at 16:9
    stream = ffprobe(result.output, "-show_streams")["streams"][0]
    assert stream.get("sample_aspect_ratio", "1:1") in ("1:1", "0:1", "N/A")
    # an explicit eye size keeps the displayed picture's shape (padding, not squeezing)
    result = sbsconv.convert(dvd, tmp_path / "tb.mp4", model=str(tiny_model), layout="full-tb",
                             eye_size=(640, 480), **FAST)
    frame = frames_of(result.output)[0].float()
    top = frame[:, :480]
    rows = top.mean(dim=(0, 2))
    # 640 wide at 16:9 is 360 lines of picture: black bars of 60 lines above and below
    assert rows[:50].max() < 20 and rows[70:410].min() > 20 and rows[430:].max() < 20


def test_progress_of_a_variable_frame_rate_source_reaches_the_real_count(tmp_path, tiny_model):
    # echo-hereweare.webm says 30 fps, but changes to 15 fps after 14.7 s: 10 s from 10 s on
    # hold about 220 frames, not 300.
    seen = []
    result = sbsconv.convert(data("echo-hereweare.webm"), tmp_path / "vfr.mp4", model=str(tiny_model),
                             start=10, duration=10, on_progress=seen.append, audio="none", **FAST)
    assert 200 < result.frames < 240
    totals = [p["frames_total"] for p in seen if p["frames_total"]]
    fractions = [p["fraction"] for p in seen if p["fraction"] is not None]
    assert fractions[-1] == 1.0 and all(f <= 1.0 for f in fractions)
    halfway = [p["frames_total"] for p in seen if p["frames_done"] >= result.frames // 2]
    assert halfway and all(t == result.frames for t in halfway), (totals, result.frames)


# ---- faults in every stage -------------------------------------------------------------------


@pytest.mark.parametrize("stage", [*STAGES, "assemble"])
def test_a_stage_that_fails_names_itself_and_leaves_nothing(stage, clip, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("SBSCONV_TEST_FAULT", f"{stage}:1")
    out = tmp_path / "failed.mp4"
    with pytest.raises(InternalError, match="injected") as caught:
        sbsconv.convert(clip, out, model=str(tiny_model), segment_seconds=0.5, **FAST)
    assert caught.value.stage == stage
    assert leftovers(tmp_path, "failed.mp4") == []  # no output, no temporary, no lock
    # the journal keeps what was finished, and the next run completes the file
    monkeypatch.delenv("SBSCONV_TEST_FAULT")
    result = sbsconv.convert(clip, out, model=str(tiny_model), segment_seconds=0.5, **FAST)
    assert result.frames == 76 and out.exists()


KILLED = textwrap.dedent(
    """
    import os, sys, sbsconv
    os.environ["SBSCONV_TEST_FAULT"] = sys.argv[4]
    sbsconv.convert(sys.argv[1], sys.argv[2], model=sys.argv[3], input_size=70, preset="ultrafast",
                    segment_seconds=0.5, progress=False)
    """
)


# (late enough that a segment is finished in every stage: the stereo stage holds the temporal
# fill's look-ahead back)
@pytest.mark.parametrize("fault", [f"{stage}:28:kill" for stage in STAGES] + ["assemble:0:kill", "assemble:1:kill"])
def test_a_run_killed_in_any_stage_resumes_to_the_same_file(fault, clip, tiny_model, reference, tmp_path):
    out = tmp_path / "killed.mp4"
    proc = run_python(KILLED, str(clip), str(out), str(tiny_model), fault, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not out.exists()
    result = sbsconv.convert(clip, out, model=str(tiny_model), segment_seconds=0.5, **FAST)
    assert result.resumed_from > 0  # finished segments were kept
    if fault.startswith("assemble"):
        assert result.resumed_from == 76  # only the assembly was left
    assert result.frames == 76
    assert min_psnr(frames_of(out), reference) >= 45
    assert leftovers(tmp_path, "killed.mp4") == ["killed.mp4"]


@pytest.mark.parametrize("point", ["assemble:0:cancel", "assemble:1:cancel"])
def test_a_cancel_during_assembly_is_honoured(point, clip, tiny_model, reference, tmp_path, monkeypatch):
    # Ctrl-C while the segments are joined (before the copy, and after it but before the
    # rename): the run stops, nothing appears under the output name, the journal stays.
    out = tmp_path / "assembling.mp4"
    monkeypatch.setenv("SBSCONV_TEST_FAULT", point)
    with pytest.raises(CancelledError):
        sbsconv.convert(clip, out, model=str(tiny_model), segment_seconds=0.5, **FAST)
    assert leftovers(tmp_path, "assembling.mp4") == []
    assert (tmp_path / ".assembling.mp4.sbsconv-resume").is_dir()
    monkeypatch.delenv("SBSCONV_TEST_FAULT")
    result = sbsconv.convert(clip, out, model=str(tiny_model), segment_seconds=0.5, **FAST)
    assert result.resumed_from == 76  # only the assembly was left
    assert min_psnr(frames_of(out), reference) >= 45


# ---- damaged resume files --------------------------------------------------------------------


def _interrupted(clip, tiny_model, out: Path, kill_at: str = "encode:28:kill") -> Path:
    proc = run_python(KILLED, str(clip), str(out), str(tiny_model), kill_at, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    folder = out.parent / f".{out.name}.sbsconv-resume"
    assert len(list(folder.glob("segment_*.nut"))) >= 3
    return folder


def _fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


@pytest.mark.parametrize("damage", ["journal-cut", "journal-garbage", "state-flipped", "segment-cut",
                                    "segment-missing"])
def test_damaged_resume_files_never_leave_the_user_stuck(damage, clip, tiny_model, reference, tmp_path):
    out = tmp_path / "damaged.mp4"
    folder = _interrupted(clip, tiny_model, out)
    journal = folder / "journal.txt"
    finished = sum(line.startswith(b"segment ") for line in journal.read_bytes().splitlines())
    if damage == "journal-cut":
        text = journal.read_bytes()
        journal.write_bytes(text[: len(text) - 40])  # half of the last line
    elif damage == "journal-garbage":
        journal.write_bytes(os.urandom(300))
    elif damage == "state-flipped":
        state = sorted(folder.glob("segment_*.state"))[1]
        raw = bytearray(state.read_bytes())
        raw[len(raw) // 2] ^= 0x40
        state.write_bytes(bytes(raw))
    elif damage == "segment-cut":
        segment = sorted(folder.glob("segment_*.nut"))[1]
        segment.write_bytes(segment.read_bytes()[:-100])
    else:
        sorted(folder.glob("segment_*.nut"))[1].unlink()
    with pytest.warns(SbsconvWarning, match="resume|start"):
        result = sbsconv.convert(clip, out, model=str(tiny_model), segment_seconds=0.5, **FAST)
    assert result.frames == 76
    if damage == "journal-cut":
        assert result.resumed_from == 12 * (finished - 1)  # all but the torn line
    elif damage == "journal-garbage":
        assert result.resumed_from == 0
    else:
        assert result.resumed_from == 12  # segment 0 still checks out
    assert min_psnr(frames_of(out), reference) >= 45
    assert not folder.exists()


def test_segments_from_another_encoder_are_converted_again(clip, tiny_model, reference, tmp_path, monkeypatch):
    # The same input and options (the fingerprint), but this run's encoder makes another
    # stream (another GPU, an FFmpeg update): stand-in, a different CRF with the fingerprint
    # held fixed. Joining the two would make a stream whose headers lie about half its packets.
    monkeypatch.setattr(plan, "_fingerprint", lambda *args: "same-input-same-options")
    out = tmp_path / "mixed.mp4"

    # Ctrl-C at the encoder's 6th batch, after the first segments are journaled (a progress
    # callback could come too late on a loaded machine: the clip converts in a second)
    monkeypatch.setenv("SBSCONV_TEST_FAULT", "encode:5:cancel")
    with pytest.raises(CancelledError):
        sbsconv.convert(clip, out, model=str(tiny_model), segment_seconds=0.5, crf=35, **FAST)
    monkeypatch.delenv("SBSCONV_TEST_FAULT")
    with pytest.warns(SbsconvWarning, match="converting them again"):
        result = sbsconv.convert(clip, out, model=str(tiny_model), segment_seconds=0.5, crf=18, **FAST)
    assert result.resumed_from == 0 and result.frames == 76
    assert min_psnr(frames_of(out), reference) >= 35  # crf 18 against the reference's default


# ---- concurrent runs -------------------------------------------------------------------------

SLOW = textwrap.dedent(
    """
    import sys, sbsconv
    def progress(p):
        if p["frames_done"] >= 4:
            print("READY", flush=True)
    sbsconv.convert(sys.argv[1], sys.argv[2], model=sys.argv[3], input_size=70, preset="ultrafast",
                    progress=False, on_progress=progress)
    """
)


def test_a_second_run_on_the_same_output_fails_at_once(tmp_path, tiny_model, testsrc):
    source = testsrc("concurrent_20s.mp4", size="320x180", rate=25, seconds=20.0)
    out = tmp_path / "busy.mp4"
    with subprocess.Popen([sys.executable, "-c", SLOW, str(source), str(out), str(tiny_model)],
                          stdout=subprocess.PIPE, text=True) as proc:
        try:
            for line in proc.stdout:
                if "READY" in line:
                    break
            with pytest.raises(OutputError, match=f"another sbsconv run \\(PID {proc.pid}\\)"):
                sbsconv.convert(source, out, model=str(tiny_model), **FAST)
            with pytest.raises(OutputError, match="another sbsconv run"):
                sbsconv.convert(source, out, model=str(tiny_model), resume=False, **FAST)
        finally:
            proc.kill()
            proc.wait(timeout=30)
    # the dead run's lock is stale: the next run takes it over and finishes (its journal was
    # for other settings)
    with pytest.warns(SbsconvWarning, match="other settings"):
        result = sbsconv.convert(source, out, model=str(tiny_model), duration=1.0, **FAST)
    assert result.frames == 25
    assert leftovers(tmp_path, "busy.mp4") == ["busy.mp4"]


# ---- a full disk -----------------------------------------------------------------------------


def test_a_full_disk_fails_cleanly(tmp_path, tiny_model):
    small = tmp_path / "small_disk"
    small.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(small)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        out = small / "full.mp4"
        with pytest.raises(OutputError) as caught:
            sbsconv.convert(data("Tokyo-Walk_rgb.mp4"), out, model=str(tiny_model), duration=2, crf=0, **FAST)
        assert "space" in str(caught.value).lower() or "No space" in (caught.value.ffmpeg_message or "")
        assert leftovers(small, "full.mp4") == []
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_a_playlist_in_disguise_cannot_make_sbsconv_read_other_files(tmp_path, tiny_model):
    # Note [One file per input]: an HLS playlist named .mp4 would have FFmpeg open the files it
    # lists (any file on the machine); a local input may open only itself.
    folder = tmp_path / "hls"
    folder.mkdir()
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=5:duration=2",
                    "-c:v", "libx264", "-f", "hls", "-hls_time", "1", str(folder / "list.m3u8")], check=True)
    disguised = tmp_path / "holiday.mp4"
    disguised.write_bytes((folder / "list.m3u8").read_bytes().replace(b"list", str(folder / "list").encode()))
    with pytest.raises(InputError):
        sbsconv.probe(disguised)
    with pytest.raises(InputError):
        sbsconv.convert(disguised, tmp_path / "out.mp4", model=str(tiny_model), **FAST)
    assert leftovers(tmp_path, "out.mp4") == []
    # the segments themselves are ordinary videos
    assert sbsconv.probe(folder / "list0.ts").width == 64
