"""Encoding and muxing: quality, containers, tags, audio and subtitle carry-over."""

from __future__ import annotations

import hashlib
import os

import pytest
import torch

from sbsconv import media
from sbsconv.errors import EncoderError, OptionError, OutputError

from helpers import HAS_CUDA, data, ffprobe, psnr, run, to_hwc


def first_frames(path, n=5) -> torch.Tensor:
    return next(iter(media.read_frames(path, batch_size=n))).data


def packet_hashes(path, stream: str) -> list[str]:
    """MD5 of every packet's payload, read with the ffmpeg command line."""
    out = run(["ffmpeg", "-v", "error", "-i", str(path), "-map", stream, "-c", "copy",
               "-f", "framemd5", "-"]).stdout.decode()
    return [line.rsplit(",", 1)[1].strip() for line in out.splitlines() if not line.startswith("#")]


def stream_durations(path) -> list[float]:
    streams = ffprobe(path, "-show_streams")["streams"]
    return [float(s["duration"]) for s in streams]


# ---- video ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Tokyo-Walk_rgb.mp4", "davis_rollercoaster.mp4", "bt709_full_range.mp4"])
def test_round_trip_psnr_at_default_quality(tmp_path, name):
    src = data(name)
    out = tmp_path / "round_trip.mp4"
    result = media.reencode(src, out, duration=0.5)
    assert result.encoder == "libx264" or HAS_CUDA
    a = first_frames(src)
    b = first_frames(out)
    for i in range(len(a)):
        assert psnr(to_hwc(a)[i], to_hwc(b)[i]) >= 38


def test_output_is_tagged_bt709_limited_with_faststart(tmp_path):
    out = tmp_path / "tags.mp4"
    media.reencode(data("bt601_limited_range.mp4"), out, duration=0.3)
    video = ffprobe(out, "-show_streams")["streams"][0]
    assert video["pix_fmt"] == "yuv420p"
    assert (video["color_space"], video["color_transfer"], video["color_primaries"]) == ("bt709",) * 3
    assert video["color_range"] == "tv"
    head = out.read_bytes()[:4096]
    assert head.find(b"moov") < head.find(b"mdat") or b"mdat" not in head  # faststart


def test_odd_sizes_are_made_even(tmp_path):
    out = tmp_path / "odd.mp4"
    media.reencode(data("testsrc2_odd_height_and_width_444.mp4"), out, duration=0.2)
    video = ffprobe(out, "-show_streams")["streams"][0]
    assert (video["width"], video["height"]) == (322, 242)


def test_hevc_ten_bit_mp4_uses_hvc1(tmp_path):
    out = tmp_path / "hevc10.mp4"
    src = data("Tokyo-Walk_rgb.mp4")
    result = media.reencode(src, out, codec="hevc", bit_depth=10, duration=0.3)
    assert result.encoder in ("libx265", "hevc_nvenc", "hevc_videotoolbox")
    video = ffprobe(out, "-show_streams")["streams"][0]
    assert video["codec_name"] == "hevc" and video["codec_tag_string"] == "hvc1"
    assert video["pix_fmt"] == "yuv420p10le"
    a, b = first_frames(src), first_frames(out)
    assert psnr(to_hwc(a)[0], to_hwc(b)[0]) >= 38


def test_timestamps_and_frame_count_survive(tmp_path):
    src = data("test_non_zero_start.mp4")
    out = tmp_path / "nz.mkv"
    media.reencode(src, out)
    n = ffprobe(out, "-count_frames", "-show_entries", "stream=nb_read_frames")["streams"][0]
    assert int(n["nb_read_frames"]) == 12
    pts = [b.pts for b in media.read_frames(out)]
    times = torch.cat(pts)
    assert times[0] == pytest.approx(0.0, abs=1e-3)  # the output starts at zero
    assert torch.diff(times).tolist() == pytest.approx([1 / 30] * 11, abs=2e-3)


def test_writer_with_default_timing_and_preset(tmp_path):
    out = tmp_path / "gradient.mkv"
    frames = torch.arange(64, dtype=torch.uint8).repeat(3, 48, 1).unsqueeze(0).repeat(10, 1, 1, 1) * 3
    with media.VideoWriter(out, width=64, height=48, fps=24, preset="veryfast") as w:
        w.write(frames[:4])
        w.write(frames[4])
        w.write(frames[5:])
    assert w.result is not None and w.result.frames == 10
    back = torch.cat([b.data for b in media.read_frames(out)])
    assert back.shape == (10, 3, 48, 64)
    assert psnr(to_hwc(back), to_hwc(frames)) >= 38
    assert ffprobe(out, "-show_format")["format"]["format_name"] == "matroska,webm"


def test_auto_encoder_reports_what_it_skipped(tmp_path):
    result = media.reencode(data("bt601_limited_range.mp4"), tmp_path / "auto.mp4", duration=0.2)
    assert result.encoder
    tried = [s.split(":")[0] for s in result.skipped_encoders]
    if result.encoder == "libx264":
        assert tried == ["h264_nvenc", "h264_videotoolbox"]
        assert all(":" in s and s.split(":", 1)[1].strip() for s in result.skipped_encoders)


@pytest.mark.nvenc
@pytest.mark.skipif(not HAS_CUDA, reason="needs an NVIDIA GPU with NVENC")
def test_nvenc_takes_cuda_frames(tmp_path):
    try:  # data-centre GPUs (A100, H100, H200) have no NVENC
        media.VideoWriter(tmp_path / "probe.mp4", width=64, height=64, fps=25, encoder="nvenc", device="cuda").abort()
    except EncoderError as e:
        pytest.skip(f"this GPU has no usable NVENC: {e}")
    out = tmp_path / "nvenc.mp4"
    reader = media.VideoReader(data("Tokyo-Walk_rgb.mp4"), device="cuda", duration=0.5)
    info = reader.info
    with media.VideoWriter(out, width=info["width"], height=info["height"], fps=info["frame_rate"],
                           encoder="nvenc", device="cuda") as w:
        for batch in reader:
            w.write(batch.data, batch.pts)
    assert w.result.encoder == "h264_nvenc"
    assert psnr(to_hwc(first_frames(out)), to_hwc(first_frames(data("Tokyo-Walk_rgb.mp4")))) >= 35


# ---- audio and subtitles -------------------------------------------------------------------


def test_aac_is_copied_bit_exact_and_every_track_kept(tmp_path):
    src = data("nasa_13013.mp4")
    out = tmp_path / "nasa.mp4"
    result = media.reencode(src, out)
    streams = ffprobe(out, "-show_streams")["streams"]
    assert [s["codec_type"] for s in streams] == ["video", "audio", "subtitle", "audio", "subtitle"]
    assert [s["tags"].get("language") for s in streams] == ["eng"] * 5
    assert streams[2]["codec_name"] == "mov_text"
    assert packet_hashes(out, "0:a:0") == packet_hashes(src, "0:a:0")
    assert packet_hashes(out, "0:a:1") == packet_hashes(src, "0:a:1")
    assert any("copied" in line for line in result.streams)


def test_audio_and_video_end_together(tmp_path):
    out = tmp_path / "nasa.mp4"
    media.reencode(data("nasa_13013.mp4"), out)
    durations = stream_durations(out)
    frame = 1001 / 30000
    assert all(abs(d - durations[0]) <= frame for d in durations)


def test_vorbis_is_transcoded_to_aac_for_mp4(tmp_path):
    out = tmp_path / "echo.mp4"
    result = media.reencode(data("echo-hereweare.webm"), out, start=10, duration=3)
    streams = ffprobe(out, "-show_streams")["streams"]
    assert [s["codec_name"] for s in streams] == ["h264", "aac"]
    assert streams[1]["tags"]["language"] == "eng"
    assert int(streams[1]["channels"]) == 2 and streams[1]["sample_rate"] == "44100"
    assert abs(float(streams[1]["duration"]) - float(streams[0]["duration"])) <= 1 / 30
    assert any("vorbis" in line and "aac" in line for line in result.streams)
    # Real audio, not silence: the decoded samples carry energy.
    pcm = run(["ffmpeg", "-v", "error", "-i", str(out), "-map", "0:a", "-f", "s16le", "-"]).stdout
    assert len(pcm) > 44100 * 2 * 2 * 2 and max(pcm[::97]) > 0


def test_mkv_keeps_vorbis_and_converts_mov_text_to_srt(tmp_path):
    out = tmp_path / "echo.mkv"
    media.reencode(data("echo-hereweare.webm"), out, duration=1)
    assert [s["codec_name"] for s in ffprobe(out, "-show_streams")["streams"]] == ["h264", "vorbis"]
    out2 = tmp_path / "nasa.mkv"
    media.reencode(data("nasa_13013.mp4"), out2, duration=6)
    streams = ffprobe(out2, "-show_streams")["streams"]
    assert [s["codec_name"] for s in streams] == ["h264", "aac", "subrip", "aac", "subrip"]
    text = run(["ffmpeg", "-v", "error", "-i", str(out2), "-map", "0:s:0", "-f", "srt", "-"]).stdout
    assert text.strip(), "the converted subtitles are empty"


def test_audio_none_and_forced_aac(tmp_path):
    media.reencode(data("nasa_13013.mp4"), tmp_path / "silent.mp4", duration=1, audio="none",
                   subtitles="none")
    assert [s["codec_type"] for s in ffprobe(tmp_path / "silent.mp4", "-show_streams")["streams"]] == ["video"]
    media.reencode(data("nasa_13013.mp4"), tmp_path / "aac.mp4", duration=1, audio="aac")
    audio = [s for s in ffprobe(tmp_path / "aac.mp4", "-show_streams")["streams"] if s["codec_type"] == "audio"]
    assert len(audio) == 2 and all(s["codec_name"] == "aac" for s in audio)


def test_window_cuts_audio_with_the_video(tmp_path):
    out = tmp_path / "cut.mp4"
    media.reencode(data("nasa_13013.mp4"), out, start=4.0, duration=2.0)
    durations = stream_durations(out)
    assert durations[0] == pytest.approx(2.0, abs=0.05)
    assert all(abs(d - durations[0]) <= 0.14 for d in durations[1:])  # 8 kHz AAC: 128 ms packets


# ---- failures leave nothing behind ---------------------------------------------------------


def test_nothing_under_the_output_name_until_closed_or_after_abort(tmp_path):
    out = tmp_path / "partial.mp4"
    writer = media.VideoWriter(out, width=64, height=48, fps=25)
    writer.write(torch.zeros(3, 3, 48, 64, dtype=torch.uint8))
    assert not out.exists()
    writer.abort()
    assert os.listdir(tmp_path) == []


def test_exception_inside_with_block_discards_the_output(tmp_path):
    out = tmp_path / "failed.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with media.VideoWriter(out, width=64, height=48, fps=25) as w:
            w.write(torch.zeros(2, 3, 48, 64, dtype=torch.uint8))
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_wrong_frame_size_is_an_option_error(tmp_path):
    out = tmp_path / "x.mp4"
    w = media.VideoWriter(out, width=64, height=48, fps=25)
    with pytest.raises(OptionError, match="64x48"):
        w.write(torch.zeros(1, 3, 40, 64, dtype=torch.uint8))
    w.write(torch.zeros(1, 3, 48, 64, dtype=torch.uint8))  # the writer is still usable
    assert w.close().frames == 1 and out.exists()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"codec": "vp9"}, OptionError, "codec"),
        ({"bit_depth": 10}, OptionError, "hevc"),
        ({"crf": 60}, OptionError, "crf"),
        ({"audio": "mp3"}, OptionError, "audio"),
        ({"encoder": "libx265"}, OptionError, "H.264"),
        ({"encoder": "not_an_encoder"}, EncoderError, "no h264 encoder"),
        ({"fps": 0}, OptionError, "fps"),
    ],
)
def test_bad_writer_options(tmp_path, kwargs, error, match):
    options = {"width": 64, "height": 48, "fps": 25, **kwargs}
    with pytest.raises(error, match=match):
        media.VideoWriter(tmp_path / "x.mp4", **options)
    assert os.listdir(tmp_path) == []


def test_output_problems_are_output_errors(tmp_path):
    with pytest.raises(OutputError, match="folder does not exist"):
        media.VideoWriter(tmp_path / "missing" / "x.mp4", width=64, height=48, fps=25)
    with pytest.raises(OptionError, match="unsupported output container"):
        media.VideoWriter(tmp_path / "x.avi", width=64, height=48, fps=25)
    src = tmp_path / "src.mp4"
    src.write_bytes(data("bt601_limited_range.mp4").read_bytes())
    digest = hashlib.md5(src.read_bytes()).hexdigest()
    with pytest.raises(OptionError, match="overwrite the input"):
        media.reencode(src, src)
    assert hashlib.md5(src.read_bytes()).hexdigest() == digest
