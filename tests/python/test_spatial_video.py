"""Apple spatial video (issue 15, layout="spatial"): two MV-HEVC views written through an external
x265 with multiview support (Note [Spatial video through x265]).

No x265 here can encode MV-HEVC (Debian's is 3.5), so the route is tested with a stand-in
executable that behaves as x265 4.x's command line does for the arguments sbsconv gives it: it
answers --help, checks the multiview configuration, reads the side-by-side pictures from its
standard input and writes a real two-layer MV-HEVC byte stream: the one inside Apple's own
spatial video in ../shared/data, taken out of its MP4 with the tests' independent box reader.
The output's samples must then be Apple's samples byte for byte, its lhvC Apple's second-layer
parameter sets, and FFmpeg must decode the same base-layer pictures in the same order."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import isobmff
import numpy as np
import pytest
import sbsconv
from helpers import data, ffprobe, run
from sbsconv._native import _core
from sbsconv.errors import EncoderError, OptionError

APPLE = "apple_spatial_160x120.mp4"  # 160x120 per eye, 10 pictures, B-frames


FAKE_X265 = r'''
import json, math, os, sys

args = sys.argv[1:]
if args == ["--help"]:
    print("x265 [info]: HEVC encoder version 4.1+fake")
    print("Syntax: x265 [options] infile [-o] outfile")
    if os.environ.get("FAKE_X265_MULTIVIEW", "1") == "1":
        print("   --multiview-config            Configuration file for Multiview Encoding")
    sys.exit(0)
flags = {"--no-progress"}
opts, i = {}, 0
while i < len(args):
    if args[i] in flags:
        opts[args[i]] = True
        i += 1
    else:
        opts[args[i]] = args[i + 1]
        i += 2
config = open(opts["--multiview-config"]).read()
if config.split() != ["--num-views", "2", "--format", "1", "--input", "-"]:
    print("x265 [error]: unexpected multiview config", file=sys.stderr)
    sys.exit(1)
w, h = map(int, opts["--input-res"].split("x"))
picture = 2 * w * h * 3 // 2
first = sys.stdin.buffer.read(picture)
if os.environ.get("FAKE_X265_FAIL"):
    print("x265 [error]: " + os.environ["FAKE_X265_FAIL"], file=sys.stderr)
    sys.exit(4)
rest = sys.stdin.buffer.read()
if os.environ.get("FAKE_X265_FAIL_AT_END"):
    print("x265 [error]: " + os.environ["FAKE_X265_FAIL_AT_END"], file=sys.stderr)
    sys.exit(3)
total = len(first) + len(rest)
if total % picture:
    print("x265 [error]: a partial picture", file=sys.stderr)
    sys.exit(4)
record = os.environ["FAKE_X265_RECORD"]
with open(record + ".yuv", "wb") as f:
    f.write(first)
with open(record, "w") as f:
    json.dump({"args": args, "config": config, "frames": total // picture}, f)
if os.environ.get("FAKE_X265_CALLS"):
    with open(os.environ["FAKE_X265_CALLS"], "a") as f:
        f.write(f"{total // picture}\n")
stream = open(os.environ["FAKE_X265_STREAM"], "rb").read()
units = int(os.environ["FAKE_X265_UNITS"])
if total // picture == 1:  # a probe of the headers: Apple's first access unit alone
    stream = stream[:stream.index(bytes([0, 0, 0, 1, 1 << 1, 1]))]  # up to the first TRAIL_R
copies = math.ceil(total // picture / units)
with open(opts["--output"], "wb") as f:
    f.write(stream * copies)
'''


@pytest.fixture()
def fake_x265(tmp_path, monkeypatch):
    """A stand-in x265 with multiview support, named by SBSCONV_X265; returns where it records
    its arguments (JSON) and its first input picture (that path + ".yuv")."""
    tool = tmp_path / "bin" / "x265"
    tool.parent.mkdir()
    tool.write_text(f"#!{sys.executable}\n" + FAKE_X265)
    tool.chmod(0o755)
    stream = tmp_path / "apple.hevc"
    stream.write_bytes(isobmff.hevc_annexb(data(APPLE)))
    record = tmp_path / "x265-record.json"
    monkeypatch.setenv("SBSCONV_X265", str(tool))
    monkeypatch.setenv("FAKE_X265_STREAM", str(stream))
    monkeypatch.setenv("FAKE_X265_UNITS", "10")
    monkeypatch.setenv("FAKE_X265_RECORD", str(record))
    return record


@pytest.fixture(scope="module")
def ten_frames(testsrc):
    """160x120 at 25 fps with audio: 10 frames, one per picture of Apple's stream."""
    return testsrc("spatial_10.mp4", size="160x120", rate=25, seconds=0.4, audio=True)


def _framemd5(path) -> list[str]:
    out = run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v:0", "-f", "framemd5", "-"]).stdout.decode()
    return [line.split(",")[-1].strip() for line in out.splitlines() if line and not line.startswith("#")]


def _scratch_files(folder) -> list:
    """Temporary files (the output's, x265's bitstream, configuration and log) left anywhere
    below ``folder``, the resume journal's folder included."""
    return [p for p in Path(folder).rglob("*") if p.name.endswith(".part")]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


# ---- the route ---------------------------------------------------------------------------------


def test_spatial_video_is_two_layer_hevc_with_apples_boxes(tmp_path, tiny_model, fake_x265, ten_frames):
    out = tmp_path / "clip.mov"
    result = sbsconv.convert(ten_frames, out, model=str(tiny_model), layout="spatial", ipd_mm=64.0,
                             fov_degrees=70.0, crf=20, preset="fast", progress=False)
    assert result.encoder == "x265-mvhevc" and result.frames == 10

    # x265 was asked for two views of 160x120 from side-by-side pictures on its input
    call = json.loads(fake_x265.read_text())
    flags = [a for a in call["args"] if a == "--no-progress"]
    valued = [a for a in call["args"] if a not in flags]
    args = dict(zip(valued[0::2], valued[1::2], strict=True))
    assert call["args"][0] == "--multiview-config" and flags == ["--no-progress"]
    assert call["frames"] == 10
    assert args["--input-res"] == "160x120" and args["--fps"] == "25/1"
    assert args["--crf"] == "20" and args["--preset"] == "fast" and args["--input-csp"] == "i420"
    assert call["config"].split() == ["--num-views", "2", "--format", "1", "--input", "-"]

    # the sample entry: hvc1 with both layers' parameter sets and Apple's boxes, no packing
    boxes = isobmff.check_sizes(out)
    entry = isobmff.video_sample_entry(boxes)
    apple_entry = isobmff.video_sample_entry(isobmff.parse(data(APPLE)))
    assert entry.type == "hvc1" and isobmff.visual_size(entry) == (160, 120)
    assert entry.child_types().index("hvcC") < entry.child_types().index("lhvC")
    assert isobmff.config_arrays(entry.child("lhvC").raw, 5) == isobmff.config_arrays(apple_entry.child("lhvC").raw, 5)
    ours, theirs = isobmff.config_arrays(entry.child("hvcC").raw, 22), isobmff.config_arrays(apple_entry.child("hvcC").raw, 22)
    assert all(ours[t] == theirs[t] for t in (32, 33, 34))
    assert entry.child("lhvC").raw[4] & 3 == 3  # 4-byte NAL lengths, as the samples have
    apple = isobmff.apple(entry)
    assert apple["stri"] == 3 and apple["hero"] == 1 and apple["baseline_um"] == 64000
    assert apple["hfov_millidegrees"] == 70000
    assert apple["packing"] is None and apple["projection"] is None  # two layers, not a packing
    assert isobmff.apple(apple_entry)["packing"] is None  # (as in Apple's own file)

    # the samples are Apple's, byte for byte, and decode to the same pictures in the same order
    assert isobmff.video_samples(out) == isobmff.video_samples(data(APPLE))
    assert _framemd5(out) == _framemd5(data(APPLE))
    frames = ffprobe(out, "-select_streams", "v", "-show_frames", "-show_entries", "frame=pts_time")["frames"]
    assert [round(float(f["pts_time"]), 3) for f in frames] == [round(i * 0.04, 3) for i in range(10)]
    streams = ffprobe(out, "-show_streams")["streams"]
    assert [s["codec_type"] for s in streams] == ["video", "audio"]
    assert not _scratch_files(tmp_path)


def test_spatial_pictures_hold_the_left_eye_on_the_left(tmp_path, tiny_model, fake_x265, ten_frames):
    """The pictures x265 reads are the two eyes side by side (BT.709 limited 4:2:0): their luma
    matches the left and right halves of the same conversion as full-sbs."""
    kw = dict(model=str(tiny_model), divergence=6.0, convergence=0.0, progress=False)
    sbsconv.convert(ten_frames, tmp_path / "spatial.mp4", layout="spatial", **kw)
    reference = tmp_path / "sbs.mkv"
    sbsconv.convert(ten_frames, reference, layout="full-sbs", crf=0, **kw)
    luma = np.frombuffer((tmp_path / "x265-record.json.yuv").read_bytes()[:320 * 120], np.uint8).reshape(120, 320)
    raw = run(["ffmpeg", "-v", "error", "-i", str(reference), "-frames:v", "1", "-f", "rawvideo",
               "-pix_fmt", "gray", "-vf", "scale=out_range=tv:out_color_matrix=bt709", "-"]).stdout
    ref = np.frombuffer(raw, np.uint8).reshape(120, 320)
    left, right = ref[:, :160], ref[:, 160:]
    assert _psnr(luma[:, :160], left) > 35 and _psnr(luma[:, 160:], right) > 35
    assert _psnr(luma[:, :160], left) > _psnr(luma[:, :160], right) + 3  # not swapped


# ---- bad input and missing tools ---------------------------------------------------------------


def test_an_x265_without_multiview_is_named_with_what_to_install(tmp_path, tiny_model, fake_x265, ten_frames,
                                                                 monkeypatch):
    monkeypatch.setenv("FAKE_X265_MULTIVIEW", "0")
    out = tmp_path / "clip.mp4"
    with pytest.raises(EncoderError) as caught:
        sbsconv.convert(ten_frames, out, model=str(tiny_model), layout="spatial", progress=False)
    message = str(caught.value)
    assert "built without multiview support" in message and "4.1+fake" in message
    assert "ENABLE_MULTIVIEW" in message and "apple-3d" in message
    assert not out.exists() and not fake_x265.exists()  # refused before anything ran


def test_no_x265_at_all(tmp_path, tiny_model, ten_frames, monkeypatch):
    monkeypatch.delenv("SBSCONV_X265", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # (ffmpeg is not needed: nothing is run)
    with pytest.raises(EncoderError, match="no x265 command was found on PATH.*apple-3d"):
        sbsconv.convert(ten_frames, tmp_path / "clip.mp4", model=str(tiny_model), layout="spatial", progress=False)
    monkeypatch.setenv("SBSCONV_X265", str(tmp_path / "missing"))
    found = _core.find_mvhevc_encoder()
    assert "not an executable file" in found["error"]


def test_a_failing_x265_is_reported_and_leaves_nothing(tmp_path, tiny_model, fake_x265, ten_frames, monkeypatch):
    monkeypatch.setenv("FAKE_X265_FAIL", "out of memory (fake)")
    out = tmp_path / "clip.mov"
    with pytest.raises(EncoderError, match=r"x265 stopped \(exit status 4\).*out of memory \(fake\)"):
        sbsconv.convert(ten_frames, out, model=str(tiny_model), layout="spatial", progress=False)
    assert not out.exists() and not _scratch_files(tmp_path)
    monkeypatch.delenv("FAKE_X265_FAIL")
    monkeypatch.setenv("FAKE_X265_FAIL_AT_END", "cannot write the output (fake)")
    with pytest.raises(EncoderError, match=r"x265 failed \(exit status 3\).*cannot write the output \(fake\)"):
        sbsconv.convert(ten_frames, out, model=str(tiny_model), layout="spatial", progress=False)
    assert not out.exists() and not _scratch_files(tmp_path)


def test_a_stream_with_the_wrong_number_of_pictures_is_refused(tmp_path, tiny_model, fake_x265, testsrc):
    clip = testsrc("spatial_15.mp4", size="160x120", rate=25, seconds=0.6)  # 15 frames; the stand-in makes 20
    out = tmp_path / "clip.mp4"
    with pytest.raises(EncoderError, match="20 pictures of 15 frames"):
        sbsconv.convert(clip, out, model=str(tiny_model), layout="spatial", progress=False)
    assert not out.exists() and not _scratch_files(tmp_path)


def test_an_interrupted_spatial_run_resumes_and_joins_its_segments(tmp_path, tiny_model, fake_x265, testsrc,
                                                                   monkeypatch):
    """Each segment of a resumable run is its own x265 stream (both views' parameter sets kept in
    the segment); a continued run checks that x265 still makes the same headers, encodes only
    what is missing, and the assembled MP4 splits the headers into hvcC and lhvC again."""
    clip = testsrc("spatial_30.mp4", size="160x120", rate=25, seconds=1.2, audio=True)  # 30 frames
    out = tmp_path / "clip.mp4"
    kw = dict(model=str(tiny_model), layout="spatial", segment_seconds=0.4, batch_size=5, progress=False)
    monkeypatch.setenv("SBSCONV_TEST_FAULT", "encode:4")  # after two segments of ten frames
    with pytest.raises(sbsconv.errors.InternalError, match="injected"):
        sbsconv.convert(clip, out, **kw)
    assert not out.exists()
    calls = []
    real_record = fake_x265.with_name("calls.txt")
    monkeypatch.delenv("SBSCONV_TEST_FAULT")
    monkeypatch.setenv("FAKE_X265_CALLS", str(real_record))
    result = sbsconv.convert(clip, out, **kw)
    calls = real_record.read_text().split()
    assert result.frames == 30 and result.resumed_from == 20
    # one probe of x265's headers (one black frame), then the missing segment
    assert calls == ["1", "10"]
    entry = isobmff.video_sample_entry(isobmff.check_sizes(out))
    apple_entry = isobmff.video_sample_entry(isobmff.parse(data(APPLE)))
    assert isobmff.config_arrays(entry.child("lhvC").raw, 5) == isobmff.config_arrays(apple_entry.child("lhvC").raw, 5)
    assert isobmff.config_arrays(entry.child("hvcC").raw, 22)[33] == isobmff.config_arrays(apple_entry.child("hvcC").raw, 22)[33]
    assert isobmff.video_samples(out) == isobmff.video_samples(data(APPLE)) * 3
    assert _framemd5(out) == _framemd5(data(APPLE)) * 3
    assert [s["codec_type"] for s in ffprobe(out, "-show_streams")["streams"]] == ["video", "audio"]
    assert not _scratch_files(tmp_path)


def test_spatial_options_are_checked_first(tmp_path, tiny_model, ten_frames):
    with pytest.raises(OptionError, match="MP4/MOV"):
        sbsconv.convert(ten_frames, tmp_path / "clip.mkv", model=str(tiny_model), layout="spatial", progress=False)
    with pytest.raises(OptionError, match="8-bit"):
        sbsconv.ConvertOptions(layout="spatial", bit_depth=10, codec="hevc")


def _real_multiview_x265() -> str | None:
    env = {k: v for k, v in os.environ.items() if k != "SBSCONV_X265"}
    code = "from sbsconv._native import _core; import json; print(json.dumps(_core.find_mvhevc_encoder()))"
    found = json.loads(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=True).stdout)
    return found.get("path")


@pytest.mark.skipif(_real_multiview_x265() is None,
                    reason="no x265 with multiview support on this machine (Debian's x265 3.5 has none; "
                           "x265 4.x needs -DENABLE_MULTIVIEW=ON)")
def test_spatial_video_with_a_real_x265(tmp_path, tiny_model, ten_frames):
    out = tmp_path / "clip.mov"
    result = sbsconv.convert(ten_frames, out, model=str(tiny_model), layout="spatial", progress=False)
    entry = isobmff.video_sample_entry(isobmff.check_sizes(out))
    assert result.frames == 10 and entry.type == "hvc1" and entry.child("lhvC") is not None
    assert len(_framemd5(out)) == 10


# ---- reading raw streams back (Note [MV-HEVC bitstreams]) --------------------------------------


@pytest.mark.parametrize("params", [
    "bframes=3:keyint=12:min-keyint=12:open-gop=1",  # CRA pictures, leading pictures
    "bframes=4:b-pyramid=1:keyint=9:min-keyint=9:open-gop=0",  # IDR every 9 frames
    "bframes=2:keyint=250:log2-max-poc-lsb=4",  # the POC's low bits wrap every 16 frames
])
def test_display_order_from_the_picture_order_count(tmp_path, params):
    """The display order read from the stream's POC is the order FFmpeg gives the same packets
    (libx265 through FFmpeg into Matroska, where every packet keeps its pts)."""
    mkv = tmp_path / "x265.mkv"
    run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=2",
         "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", f"log-level=none:{params}", str(mkv)])
    packets = ffprobe(mkv, "-show_packets", "-show_entries", "packet=pts,flags")["packets"]
    pts = [int(p["pts"]) for p in packets]
    expected = [sorted(pts).index(t) for t in pts]
    raw = run(["ffmpeg", "-v", "error", "-i", str(mkv), "-c", "copy", "-bsf:v", "hevc_mp4toannexb",
               "-f", "hevc", "-"]).stdout
    units, delay = _core._hevc_stream_order(raw)
    assert [u[0] for u in units] == expected
    assert [u[1] for u in units] == ["K" in p["flags"] for p in packets]
    assert all(u[2] == 1 for u in units)
    assert delay == max(0, max(i - d for i, d in enumerate(expected)))


def test_apples_stream_reads_as_ten_two_layer_units():
    units, delay = _core._hevc_stream_order(isobmff.hevc_annexb(data(APPLE)))
    assert len(units) == 10 and all(u[2] == 2 for u in units)
    assert [u[1] for u in units] == [True] + [False] * 9
    assert delay > 0  # B-frames: shown before later pictures that are decoded first


def test_streams_sbsconv_cannot_mux_are_refused():
    stream = isobmff.hevc_annexb(data(APPLE))
    with pytest.raises(EncoderError, match="start code"):
        _core._hevc_stream_order(b"not a stream at all")
    first_slice = stream.index(b"\0\0\0\1" + bytes([20 << 1, 1]))  # the IDR picture
    with pytest.raises(EncoderError, match="PPS it never sent"):
        _core._hevc_stream_order(stream[first_slice:])  # no parameter sets
    three_layers = bytearray(stream)
    three_layers[first_slice + 4] |= 1  # nuh_layer_id 32
    with pytest.raises(EncoderError, match="more than two layers"):
        _core._hevc_stream_order(bytes(three_layers))
