"""Decoding: probe against ffprobe, frame counts, pixels against FFmpeg's RGB, timing."""

from __future__ import annotations

import logging
import subprocess
from fractions import Fraction

import numpy as np
import pytest
import torch

import sbsconv
from sbsconv import _core, media
from sbsconv.errors import OptionError

from helpers import (
    HAS_CUDA,
    SAMPLE_CLIPS,
    data,
    ffmpeg_rgb,
    ffprobe,
    psnr,
    to_hwc,
)


def read_all(path, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    frames, pts = [], []
    for batch in media.read_frames(path, **kwargs):
        frames.append(batch.data)
        pts.append(batch.pts)
    return torch.cat(frames), torch.cat(pts)


# ---- probe ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SAMPLE_CLIPS)
def test_probe_matches_ffprobe(name):
    path = data(name)
    info = sbsconv.probe(path)
    ref = ffprobe(path, "-show_streams", "-show_format")
    streams = ref["streams"]
    assert [s.type for s in info.streams] == [s["codec_type"] for s in streams]
    assert [s.codec for s in info.streams] == [s["codec_name"] for s in streams]
    for ours, theirs in zip(info.streams, streams, strict=True):
        language = theirs.get("tags", {}).get("language")
        assert ours.language == (None if language in (None, "und") else language)
    video = streams[info.video_stream]
    assert info.width == video["width"] and info.height == video["height"]
    assert info.pix_fmt == video["pix_fmt"]
    assert info.fps == Fraction(video["avg_frame_rate"])
    assert info.color_range == video.get("color_range", "unknown")
    assert info.color_space == video.get("color_space", "unknown")
    assert info.color_transfer == video.get("color_transfer", "unknown")
    assert info.color_primaries == video.get("color_primaries", "unknown")
    expected_duration = float(video.get("duration", ref["format"]["duration"]))
    assert info.duration == pytest.approx(expected_duration, abs=1e-3)
    expected_frames = int(video["nb_frames"]) if "nb_frames" in video else None
    assert info.num_frames == expected_frames
    assert info.has_audio == any(s["codec_type"] == "audio" for s in streams)
    assert info.rotation == 0


def test_probe_picks_the_largest_video_stream():
    info = sbsconv.probe(data("nasa_13013.mp4"))
    assert info.video_stream == 3
    assert (info.width, info.height) == (480, 270)
    assert info.fps == Fraction(30000, 1001)
    assert [s.language for s in info.audio_streams] == ["eng", "eng"]


def test_probe_accepts_pathlike_and_reports_frame_rate_as_fraction():
    info = sbsconv.probe(data("bt601_limited_range.mp4"))
    assert isinstance(info.fps, Fraction) and info.fps == 30
    assert info.video.bit_depth == 8
    assert sbsconv.probe(data("h265_10bits.mp4")).bit_depth == 10


# ---- every frame once, pixels like FFmpeg's ------------------------------------------------


@pytest.mark.parametrize("name", SAMPLE_CLIPS)
def test_frame_count_equals_ffprobe_count_frames(name):
    path = data(name)
    ref = ffprobe(path, "-count_frames", "-select_streams", f"{sbsconv.probe(path).video_stream}",
                  "-show_entries", "stream=nb_read_frames")
    expected = int(ref["streams"][0]["nb_read_frames"])
    count = sum(len(b) for b in media.read_frames(path, batch_size=16))
    assert count == expected


@pytest.mark.parametrize("name", SAMPLE_CLIPS)
def test_pixels_match_ffmpeg_rgb_conversion(name):
    path = data(name)
    info = sbsconv.probe(path)
    ours = next(iter(media.read_frames(path, batch_size=6))).data
    assert ours.dtype == torch.uint8 and ours.shape[1:] == (3, info.height, info.width)
    ref = ffmpeg_rgb(path, info.width, info.height, output_args=["-map", f"0:{info.video_stream}",
                                                                 "-frames:v", "6"])
    assert len(ref) == len(ours)
    for i in range(len(ref)):
        assert psnr(to_hwc(ours)[i], ref[i]) >= 45


def test_frames_in_the_middle_match_ffmpeg_too():
    path = data("davis_rollercoaster.mp4")
    frames, pts = read_all(path, batch_size=9)
    ref = ffmpeg_rgb(path, 960, 540)
    assert len(frames) == len(ref) == 70
    for i in (0, 33, 69):
        assert psnr(to_hwc(frames[i : i + 1])[0], ref[i]) >= 45


def test_timestamps_are_the_stream_presentation_times():
    path = data("test_non_zero_start.mp4")
    _, pts = read_all(path, batch_size=5)
    ref = ffprobe(path, "-select_streams", "v:0", "-show_entries", "frame=pts_time")
    expected = sorted(float(f["pts_time"]) for f in ref["frames"])
    assert pts.tolist() == pytest.approx(expected, abs=1e-6)
    assert pts[0] == pytest.approx(8.333, abs=1e-3)


def test_batches_have_the_requested_size_and_layout():
    batches = list(media.read_frames(data("bt601_limited_range.mp4"), batch_size=8))
    assert [len(b) for b in batches] == [8] * 7 + [4]
    b = batches[0]
    assert b.data.shape == (8, 3, 240, 320)
    assert b.pts.dtype == torch.float64 and b.durations.tolist() == pytest.approx([1 / 30] * 8)
    assert b.time_base == Fraction(1, 15360)
    # Channels-last: the decoder's packed RGB seen as [N,3,H,W] without a copy.
    assert b.data.is_contiguous(memory_format=torch.channels_last)


def test_ten_bit_444_and_odd_sizes_decode(make_clip):
    path = make_clip(
        "odd_444_10bit.mkv",
        ["-f", "lavfi", "-i", "testsrc2=size=162x92:rate=10:duration=1", "-vf", "format=yuv444p10le,crop=161:91:0:0",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv444p10le"],
    )
    frames, _ = read_all(path)
    assert frames.shape == (10, 3, 91, 161)
    ref = ffmpeg_rgb(path, 161, 91)
    assert min(psnr(to_hwc(frames)[i], ref[i]) for i in range(10)) >= 45


@pytest.mark.parametrize("size,pix_fmt", [("854x480", "yuv420p"), ("322x242", "yuv420p"), ("426x240", "yuv422p"),
                                           ("1366x768", "yuv420p"), ("174x98", "yuvj420p")])
def test_widths_that_are_not_a_multiple_of_eight_are_whole_to_the_last_column(make_clip, size, pix_fmt):
    # Note [swscale's rows of eight]: libswscale's SIMD converters write groups of 8 pixels; a
    # tightly packed row kept its last width % 8 pixels unwritten (854x480 is YouTube's 480p)
    w, h = (int(v) for v in size.split("x"))
    path = make_clip(f"width_{size}_{pix_fmt}.mp4",
                     ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate=10:duration=0.4", "-c:v", "libx264",
                      "-preset", "ultrafast", "-pix_fmt", pix_fmt])
    frames, _ = read_all(path, batch_size=3)
    ref = ffmpeg_rgb(path, w, h)
    ours = to_hwc(frames)
    assert ours.shape == ref.shape == (4, h, w, 3)
    last = np.abs(ours[:, :, -8:].astype(int) - ref[:, :, -8:].astype(int))
    assert last.max() <= 2, f"the last columns differ from FFmpeg's by up to {last.max(axis=(0, 1, 3))}"
    assert min(psnr(ours[i], ref[i]) for i in range(len(ref))) >= 45


# ---- windows, variable frame rate, rotation ------------------------------------------------


def test_window_start_and_duration_follow_ffmpeg_semantics():
    path = data("davis_rollercoaster.mp4")  # 24 fps, 70 frames
    frames, pts = read_all(path, start=1.0, duration=0.5, batch_size=4)
    assert len(frames) == 12
    assert pts[0] == pytest.approx(1.0) and pts[-1] == pytest.approx(1.0 + 11 / 24)
    ref = ffmpeg_rgb(path, 960, 540, input_args=["-ss", "1.0"], output_args=["-t", "0.5"])
    assert len(ref) == 12
    assert psnr(to_hwc(frames)[0], ref[0]) >= 45


def test_window_is_relative_to_the_file_start():
    path = data("test_non_zero_start.mp4")  # starts at 8.333 s
    frames, pts = read_all(path, start=0.1, duration=0.1)
    assert len(frames) == 3
    assert pts[0] == pytest.approx(8.333 + 0.1, abs=0.02)


def test_variable_frame_rate_keeps_every_frame_and_its_time(make_clip):
    path = make_clip(
        "vfr.mp4",
        ["-f", "lavfi", "-i", "testsrc2=size=128x96:rate=30:duration=2",
         "-vf", "select='not(mod(n\\,3))+eq(mod(n\\,7)\\,1)'", "-fps_mode", "vfr",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"],
    )
    _, pts = read_all(path, batch_size=7)
    ref = ffprobe(path, "-select_streams", "v:0", "-show_entries", "frame=pts_time")
    expected = [float(f["pts_time"]) for f in ref["frames"]]
    assert pts.tolist() == pytest.approx(expected, abs=1e-6)
    gaps = np.diff(expected)
    assert gaps.max() > 1.5 * gaps.min()  # really variable


@pytest.mark.parametrize("rotate", [90, 180, 270])
def test_rotation_metadata_is_applied(make_clip, rotate):
    plain = make_clip(
        "unrotated.mp4",
        ["-f", "lavfi", "-i", "testsrc2=size=160x96:rate=10:duration=0.5",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"],
    )
    # The way phones store it: the picture as shot plus a display matrix (written by the
    # MP4 muxer from the stream's "rotate" tag on a stream copy).
    path = make_clip(
        f"rotated_{rotate}.mp4",
        ["-i", str(plain), "-c", "copy", "-metadata:s:v:0", f"rotate={rotate}"],
    )
    info = sbsconv.probe(path)
    quarter = rotate in (90, 270)
    assert (info.width, info.height) == ((96, 160) if quarter else (160, 96))
    side = ffprobe(path, "-show_streams")["streams"][0].get("side_data_list", [{}])[0]
    assert info.rotation == pytest.approx(float(side.get("rotation", 0)))
    frames, _ = read_all(path)
    assert frames.shape[2:] == (info.height, info.width)
    ref = ffmpeg_rgb(path, info.width, info.height)  # ffmpeg autorotates
    assert min(psnr(to_hwc(frames)[i], ref[i]) for i in range(len(ref))) >= 45


def test_stream_starting_without_a_keyframe(make_clip):
    src = make_clip(
        "gop.mp4",
        ["-f", "lavfi", "-i", "testsrc2=size=128x96:rate=25:duration=3", "-c:v", "libx264",
         "-preset", "ultrafast", "-g", "50", "-pix_fmt", "yuv420p"],
    )
    # A stream copy cut between keyframes: the file begins with frames that need an earlier
    # keyframe, which FFmpeg's decoder skips.
    path = make_clip("no_leading_keyframe.mp4", ["-ss", "0.6", "-i", str(src), "-c", "copy"])
    ref = ffprobe(path, "-count_frames", "-select_streams", "v:0", "-show_entries",
                  "stream=nb_read_frames")
    frames, pts = read_all(path)
    assert len(frames) == int(ref["streams"][0]["nb_read_frames"])
    assert torch.all(pts[1:] > pts[:-1])


# ---- options, devices, hardware ------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"start": -1}, "start"),
        ({"duration": 0}, "duration"),
        ({"device": "quantum"}, "device"),
        ({"stream": 1}, "not a video stream"),
        ({"hwaccel": "warp-drive"}, "unknown hwaccel"),
    ],
)
def test_bad_options_raise_option_error(kwargs, match):
    path = data("nasa_13013.mp4")
    with pytest.raises(OptionError, match=match):
        next(iter(media.read_frames(path, **kwargs)))


def test_requested_stream_is_decoded():
    frames, _ = read_all(data("nasa_13013.mp4"), stream=0, duration=0.2)
    assert frames.shape[2:] == (180, 320)


def test_unavailable_hardware_decoder_falls_back_with_a_logged_reason(caplog):
    caplog.set_level(logging.DEBUG, logger="sbsconv")
    reader = media.VideoReader(data("bt601_limited_range.mp4"), hwaccel="cuda")
    batch = reader.read()
    assert batch is not None and len(batch) == 8
    if not HAS_CUDA:
        assert reader.hardware_decoder is None
        assert reader.hardware_fallback_reason
        assert any("decoding in software" in r.getMessage() for r in caplog.records)


# ---- NVDEC's frames converted on the device (Note [Device colour conversion]) -----------------

# (clip, raw planar format FFmpeg decodes it to, matrix as AVColorSpace, full range)
DEVICE_CONVERSION_CLIPS = [
    ("Tokyo-Walk_rgb.mp4", "yuv420p", 2, False),  # untagged: BT.601, limited
    ("bt601_limited_range.mp4", "yuv420p", 6, False),
    ("bt709_full_range.mp4", "yuvj420p", 1, True),
    ("h265_10bits.mp4", "yuv420p10le", 2, False),  # 10-bit: P010 from NVDEC
]


def semi_planar_frames(path, fmt: str, n: int):
    """The decoded frames' own planes (FFmpeg's decoder, no conversion), laid out as NVDEC
    hands them over: NV12, or P010 (10 bits in the high bits of 16-bit words)."""
    info = sbsconv.probe(path).video
    w, h = info.width, info.height
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-frames:v", str(n), "-f", "rawvideo",
                          "-pix_fmt", fmt, "-"], capture_output=True, check=True).stdout
    wide = fmt.endswith("10le")
    dtype = np.int16 if wide else np.uint8
    cw, ch = (w + 1) // 2, (h + 1) // 2
    planes = np.frombuffer(raw, dtype=dtype).reshape(n, -1)
    for i in range(n):
        y = planes[i, : w * h].reshape(h, w)
        u = planes[i, w * h: w * h + cw * ch].reshape(ch, cw)
        v = planes[i, w * h + cw * ch: w * h + 2 * cw * ch].reshape(ch, cw)
        uv = np.stack([u, v], axis=-1)
        if wide:
            y, uv = (y.astype(np.int32) << 6).astype(np.int16), (uv.astype(np.int32) << 6).astype(np.int16)
        yield torch.from_numpy(y.copy()), torch.from_numpy(uv.copy()), wide


@pytest.mark.parametrize("clip,fmt,space,full", DEVICE_CONVERSION_CLIPS)
def test_device_conversion_matches_libswscale(clip, fmt, space, full):
    # The GPU path's conversion is LibTorch code: run here on CPU tensors, it must give what
    # the CPU path (libswscale) gives for the same decoded pictures.
    path = data(clip)
    reference = next(iter(media.read_frames(path, batch_size=3))).data
    for i, (y, uv, wide) in enumerate(semi_planar_frames(path, fmt, 3)):
        ours = _core._semi_planar_to_rgb(y, uv, wide=wide, colorspace=space, full_range=full)
        assert ours.shape == (y.shape[0], y.shape[1], 3) and ours.dtype == torch.uint8
        assert psnr(ours.numpy(), to_hwc(reference[i:i + 1])) >= 45, (clip, i)


def test_device_conversion_of_ten_bits_interpolates_chroma_rows():
    # A chroma step between two rows: 10-bit pictures get swscale's bicubic rows (values in
    # between, with its slight overshoot), 8-bit ones repeat each chroma row (no values between).
    y = torch.full((8, 4), 128, dtype=torch.uint8)
    uv = torch.full((4, 2, 2), 128, dtype=torch.uint8)
    uv[2:, :, 1] = 228  # Cr steps up from chroma row 2
    narrow = _core._semi_planar_to_rgb(y, uv, wide=False, colorspace=1, full_range=True)
    assert sorted(set(narrow[:, 0, 0].tolist())) == [128, 255]
    wide = _core._semi_planar_to_rgb((y.to(torch.int32) << 8).to(torch.int16), (uv.to(torch.int32) << 8).to(torch.int16),
                                     wide=True, colorspace=1, full_range=True)
    reds = wide[:, 0, 0].tolist()
    assert reds[0] == 128 and reds[-1] == 255 and any(128 < r < 255 for r in reds[2:6])


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("clip", ["Tokyo-Walk_rgb.mp4", "bt709_full_range.mp4", "h265_10bits.mp4"])
def test_cuda_device_frames_match_cpu_frames(clip):
    path = data(clip)
    cpu = next(iter(media.read_frames(path, batch_size=4))).data
    gpu = next(iter(media.read_frames(path, batch_size=4, device="cuda")))
    assert gpu.data.device.type == "cuda"
    # NVDEC's frames converted on the GPU as libswscale converts them on the CPU
    assert psnr(to_hwc(gpu.data.cpu()), to_hwc(cpu)) >= 45


def test_frames_can_be_scaled_during_conversion():
    path = data("Tokyo-Walk_rgb.mp4")
    small = next(iter(media.read_frames(path, batch_size=2, width=320))).data
    assert small.shape == (2, 3, 180, 320)
    full = next(iter(media.read_frames(path, batch_size=2))).data
    reference = torch.nn.functional.interpolate(full.float(), (180, 320), mode="area")
    assert psnr(to_hwc(small), to_hwc(reference.round().to(torch.uint8))) >= 35
    both = next(iter(media.read_frames(path, batch_size=1, width=100, height=100))).data
    assert both.shape == (1, 3, 100, 100)
    with pytest.raises(OptionError, match="width"):
        media.VideoReader(path, width=0)


# ---- HDR sources (Note [HDR to SDR]) ---------------------------------------------------------


def _has_zscale() -> bool:
    out = subprocess.run(["ffmpeg", "-hide_banner", "-filters"], capture_output=True, text=True).stdout
    return " zscale " in out


def _hdr_clip(transfer: str, folder) -> tuple:
    """An SDR clip (a natural picture: a synthetic pattern is mostly full-intensity colour) and
    the same carried as HDR10 (PQ) or HLG the way BT.2408 places SDR white (203 cd/m2), by
    zimg's conversion, in 10-bit HEVC."""
    sdr = folder / "sdr.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", "2", "-i", str(data("Tokyo-Walk_rgb.mp4")), "-frames:v", "8",
                    "-vf", "scale=320:180", "-c:v", "libx264", "-crf", "4", "-pix_fmt", "yuv420p", str(sdr)],
                   check=True, capture_output=True)
    hdr = folder / f"{transfer}.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(sdr), "-vf",
                    "zscale=tin=bt709:min=bt709:pin=bt709:rin=tv:t=linear:p=bt709:npl=203,format=gbrpf32le,"
                    f"zscale=p=bt2020:t={transfer}:m=bt2020nc:r=tv:npl=203,format=yuv420p10le",
                    "-c:v", "libx265", "-x265-params", "log-level=error", "-crf", "4",
                    "-color_primaries", "bt2020", "-color_trc", transfer, "-colorspace", "bt2020nc", str(hdr)],
                   check=True, capture_output=True)
    return sdr, hdr


@pytest.mark.skipif(not _has_zscale(), reason="FFmpeg's zscale filter (libzimg) makes the HDR test clips")
@pytest.mark.parametrize("transfer", ["smpte2084", "arib-std-b67"])
def test_an_hdr_source_comes_back_as_its_sdr_grade(transfer, tmp_path, capsys):
    # read back, the HDR clip is its SDR grade again, where the plain conversion (the same
    # stream tagged BT.709) is far off
    sdr, hdr = _hdr_clip(transfer, tmp_path)
    assert sbsconv.probe(hdr).color_transfer == transfer
    plain = tmp_path / "tagged_bt709.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(hdr), "-c", "copy", "-bsf:v",
                    "hevc_metadata=transfer_characteristics=1:colour_primaries=1", str(plain)],
                   check=True, capture_output=True)
    assert sbsconv.probe(plain).color_transfer == "bt709"
    want, _ = read_all(sdr)
    got, _ = read_all(hdr)
    as_sdr, _ = read_all(plain)
    assert got.shape == want.shape and got.dtype == torch.uint8
    good = psnr(to_hwc(got), to_hwc(want))
    was = psnr(to_hwc(as_sdr), to_hwc(want))  # the signal shown as if it were BT.709
    assert good > 30.0, good
    assert good > was + 2.5, (good, was)  # (HLG is made to look passable as SDR; PQ is not)
    # below the knee (SDR code 232) the light is kept: the mean within a few codes
    dark = (want.float() < 200).all(dim=1, keepdim=True).expand_as(want)
    assert abs(got.float()[dark].mean() - want.float()[dark].mean()) < 3.0
    # `sbsconv probe` says so
    from sbsconv import cli

    assert cli.main(["probe", str(hdr)]) == 0
    assert "HDR: tone-mapped to SDR BT.709" in capsys.readouterr().out
    assert cli.main(["probe", str(sdr)]) == 0
    assert "HDR" not in capsys.readouterr().out


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.skipif(not _has_zscale(), reason="FFmpeg's zscale filter (libzimg) makes the HDR test clips")
def test_cuda_hdr_frames_are_tone_mapped_as_on_the_cpu(tmp_path):
    # NVDEC decodes, the CPU's converter tone-maps (Note [HDR to SDR]): the same frames
    _, hdr = _hdr_clip("smpte2084", tmp_path)
    cpu = next(iter(media.read_frames(hdr, batch_size=4))).data
    gpu = next(iter(media.read_frames(hdr, batch_size=4, device="cuda"))).data
    assert gpu.device.type == "cuda"
    assert psnr(to_hwc(gpu.cpu()), to_hwc(cpu)) >= 45
