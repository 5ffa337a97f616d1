"""sbsconv.infill_merge / `sbsconv infill-merge`: the way back from inpainting with another model.

A short clip with audio is converted with fill="none" and an infill mask; a stand-in for the
user's model paints the masked pixels grey and writes a video with no audio and no metadata; the
merge must give that picture with the 3D video's audio, stereo metadata and frame timing, and
refuse what cannot be the same frames before anything is written.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sbsconv
import torch
from helpers import data, ffprobe, psnr, to_hwc
from sbsconv import cli, infill, media
from sbsconv._native import _core
from sbsconv.errors import InputError, InputNotFoundError, OptionError, SbsconvWarning

ROOT = Path(__file__).resolve().parents[2]
FAST = {"input_size": 70, "preset": "ultrafast", "progress": False}
GREY = 128


@pytest.fixture(scope="module")
def clip(make_clip) -> Path:
    """The sample clip's first 0.6 s (9 frames at 15 fps), 320x180, with a tone."""
    from sbsconv import samples

    return make_clip("infill_clip.mp4", [
        "-i", str(samples.path()),
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=0.6",
        "-t", "0.6", "-vf", "scale=320:180", "-c:v", "libx264", "-preset", "ultrafast",
        "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k"])


def frame_times(path: Path) -> list[float]:
    out = ffprobe(path, "-select_streams", "v:0", "-show_entries", "packet=pts_time")
    return sorted(float(p["pts_time"]) for p in out["packets"])


def frames_of(path: Path) -> torch.Tensor:
    return torch.cat([b.data for b in media.read_frames(path, batch_size=16)])


def painted(sbs: Path, mask: Path) -> torch.Tensor:
    """What the stand-in model makes: the 3D video's frames, each masked pixel grey."""
    picture, holes = frames_of(sbs), frames_of(mask)
    hole = (holes != 0).any(dim=1, keepdim=True)
    return torch.where(hole, torch.full_like(picture, GREY), picture)


def write_plain(frames: torch.Tensor, out: Path, *, fps=15) -> Path:
    """A video as an inpainting tool writes it: the picture only (no audio, no metadata)."""
    height, width = frames.shape[2:]
    with media.VideoWriter(out, width=width, height=height, fps=fps, preset="ultrafast") as w:
        w.write(frames)
    return out


@pytest.fixture(scope="module")
def made(clip, tiny_model, tmp_path_factory) -> dict:
    """The 3D videos (MP4 full-sbs with sbsconv's default Apple boxes; MOV half-tb with
    apple_metadata and a field of view; MKV full-sbs), their masks and the stand-in's pictures."""
    folder = tmp_path_factory.mktemp("infill")
    out: dict = {}
    apple = {"layout": "half-tb", "apple_metadata": True, "fov_degrees": 75.0}
    for name, options in (("sbs.mp4", {}), ("tb.mov", apple), ("sbs.mkv", {})):
        sbs, mask = folder / name, folder / f"{name}.mask.mkv"
        sbsconv.convert(clip, sbs, model=str(tiny_model), fill="none", infill_mask=mask,
                        divergence=5.0, **options, **FAST)
        out[name] = (sbs, mask, painted(sbs, mask))
    return out


def merged_folder_is_clean(folder: Path, *allowed: str) -> None:
    """Only the named files in ``folder``: nothing under the output name, no temporaries left."""
    assert sorted(p.name for p in folder.iterdir()) == sorted(allowed)


# ---- the merge --------------------------------------------------------------------------------


def test_merge_keeps_the_picture_with_the_audio_timing_and_stereo_metadata(made, tmp_path):
    sbs, mask, picture = made["sbs.mp4"]
    inpainted = write_plain(picture, tmp_path / "inpainted.mp4")
    plain = sbsconv.probe(inpainted)
    assert not plain.has_audio and not plain.stereo["layout"] and not plain.stereo["apple"]
    result = sbsconv.infill_merge(sbs, inpainted, tmp_path / "final.mp4", preset="ultrafast",
                                  progress=False)
    final = Path(result.output)
    merged_folder_is_clean(tmp_path, "inpainted.mp4", "final.mp4")
    source, info = sbsconv.probe(sbs), sbsconv.probe(final)
    assert result.frames == result.infilled_frames == info.num_frames == source.num_frames == 9
    size = (result.width, result.height)
    assert size == (info.width, info.height) == (source.width, source.height)
    assert result.codec == info.codec == "h264" and result.encoder == "libx264"
    # the picture is the inpainted one: its holes are grey, not black
    got = frames_of(final)
    assert psnr(to_hwc(got), to_hwc(frames_of(inpainted))) > 35
    holes = (frames_of(mask) != 0).any(dim=1, keepdim=True).expand_as(got)
    assert holes.any() and abs(got[holes].float().mean().item() - GREY) < 12
    # the audio, copied, over the source's duration; the frame timing; the comment
    assert [s.codec for s in info.audio_streams] == ["aac"]
    assert "audio #1 aac (und): copied" in result.streams
    assert info.audio_streams[0].duration == pytest.approx(source.audio_streams[0].duration,
                                                           abs=0.03)
    assert frame_times(final) == frame_times(sbs)
    assert info.tags["comment"].startswith(source.tags["comment"])
    # the stereo metadata: st3d and Apple's boxes, as the 3D video has them
    assert info.stereo == source.stereo == result.stereo
    assert source.stereo["layout"] == "side-by-side" and source.stereo["apple"]["packing"] == "side"
    assert _core.read_stereo_boxes(str(final)) == _core.read_stereo_boxes(str(sbs))


def test_an_apple_layout_in_mov_keeps_vexu_and_hfov(made, tmp_path):
    # half top-bottom with apple_metadata, a field of view of its own; the inpainted video is an MKV
    sbs, _, picture = made["tb.mov"]
    inpainted = write_plain(picture, tmp_path / "inpainted.mkv")
    assert sbsconv.probe(inpainted).num_frames is None  # Matroska does not say: counted as merged
    result = sbsconv.infill_merge(sbs, inpainted, tmp_path / "final.mov", preset="ultrafast",
                                  progress=False)
    boxes = _core.read_stereo_boxes(result.output)
    assert boxes == _core.read_stereo_boxes(str(sbs))
    assert boxes["vexu"] and boxes["packing"] == "over" and boxes["hfov_millidegrees"] == 75000
    assert boxes["st3d"] == 1 and sbsconv.probe(result.output).stereo["layout"] == "top-bottom"
    assert sbsconv.probe(result.output).has_audio
    merged_folder_is_clean(tmp_path, "inpainted.mkv", "final.mov")


def test_mkv_keeps_its_stereo_mode_and_an_mp4_becomes_mkv_without_apple_boxes(made, tmp_path):
    sbs, _, picture = made["sbs.mkv"]
    inpainted = write_plain(picture, tmp_path / "inpainted.mp4")
    result = sbsconv.infill_merge(sbs, inpainted, tmp_path / "final.mkv", preset="ultrafast",
                                  progress=False)
    info = sbsconv.probe(result.output)
    assert info.stereo == sbsconv.probe(sbs).stereo and info.stereo["layout"] == "side-by-side"
    assert info.has_audio and frames_of(Path(result.output)).shape[0] == 9
    # Apple's boxes do not fit in Matroska: said, and the layout tag is kept
    sbs_mp4 = made["sbs.mp4"][0]
    with pytest.warns(SbsconvWarning, match="only MP4/MOV"):
        result = sbsconv.infill_merge(sbs_mp4, inpainted, tmp_path / "from_mp4.mkv",
                                      preset="ultrafast", progress=False)
    assert sbsconv.probe(result.output).stereo["layout"] == "side-by-side" and result.warnings


@pytest.mark.parametrize("frames", [8, 10], ids=["one-fewer", "one-more"])
def test_one_frame_more_or_fewer_at_the_end_is_accepted(made, tmp_path, frames):
    sbs, _, picture = made["sbs.mp4"]
    extra = torch.cat([picture, picture[-1:]])
    inpainted = write_plain(extra[:frames], tmp_path / "inpainted.mp4")
    result = sbsconv.infill_merge(sbs, inpainted, tmp_path / "final.mp4", preset="ultrafast",
                                  progress=False)
    assert (result.frames, result.infilled_frames) == (9, frames)
    got = frames_of(Path(result.output))
    last = picture[min(frames, 9) - 1]  # the inpainted video's last frame, or the 3D video's
    assert got.shape[0] == 9 and psnr(to_hwc(got[-1:]), to_hwc(last[None])) > 35


# ---- refused before anything is written ------------------------------------------------------


def _bad(made, folder: Path, case: str):
    """(sbs, inpainted, output, keywords) for a bad input."""
    sbs, _, picture = made["sbs.mp4"]
    out = folder / "final.mp4"
    if case == "missing-sbs":
        return folder / "nope.mp4", write_plain(picture, folder / "in.mp4"), out, {}
    if case == "missing-inpainted":
        return sbs, folder / "nope.mp4", out, {}
    if case == "size":
        return sbs, write_plain(picture[..., :160, :], folder / "in.mp4"), out, {}
    if case == "rate":
        return sbs, write_plain(picture, folder / "in.mp4", fps=25), out, {}
    if case == "count":
        return sbs, write_plain(picture[:6], folder / "in.mp4"), out, {}
    if case == "count-mkv":  # the counts the containers do not state are estimated first
        return sbs, write_plain(picture[:5], folder / "in.mkv"), out, {}
    if case == "count-mkv-late":  # too close for the estimate: found while merging
        return sbs, write_plain(picture[:7], folder / "in.mkv"), out, {}
    inpainted = write_plain(picture, folder / "in.mp4")
    if case == "out-is-sbs":
        return sbs, inpainted, sbs, {}
    if case == "out-is-inpainted":
        return sbs, inpainted, inpainted, {}
    if case == "extension":
        return sbs, inpainted, folder / "final.avi", {}
    if case == "option":
        return sbs, inpainted, out, {"crf": 99}
    if case == "unknown-option":
        return sbs, inpainted, out, {"divergance": 2}
    raise AssertionError(case)


BAD = [
    ("missing-sbs", InputNotFoundError, "nope.mp4"),
    ("missing-inpainted", InputNotFoundError, "nope.mp4"),
    ("size", InputError, "is 640x160, .* is 640x180"),
    ("rate", InputError, "runs at 25 frames/s, .* at 15 frames/s"),
    ("count", InputError, "has 6 frames, .* has 9"),
    ("count-mkv", InputError, "has about 5 frames, .* has about 9"),
    ("count-mkv-late", InputError, "has 7 frames, .* has 9"),
    ("out-is-sbs", OptionError, "is an input"),
    ("out-is-inpainted", OptionError, "is an input"),
    ("extension", OptionError, r"must end in \.mp4"),
    ("option", OptionError, "crf must be within"),
    ("unknown-option", OptionError, "'divergance'"),
]


@pytest.mark.parametrize(("case", "error", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_refused_with_nothing_under_the_output_name(made, tmp_path, case, error,
                                                                  message):
    sbs, inpainted, out, keywords = _bad(made, tmp_path, case)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    with pytest.raises(error, match=message):
        sbsconv.infill_merge(sbs, inpainted, out, preset="ultrafast", progress=False, **keywords)
    # nothing new, nothing touched
    assert {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before
    assert _core.read_stereo_boxes(str(made["sbs.mp4"][0]))["vexu"]


def test_count_error_says_the_estimate_when_the_container_does_not_state_it(made, tmp_path):
    sbs, _, picture = made["sbs.mkv"]
    with pytest.raises(InputError, match="has about 5 frames, .*sbs.mkv has about 9"):
        sbsconv.infill_merge(sbs, write_plain(picture[:5], tmp_path / "in.mkv"), tmp_path / "o.mkv",
                             progress=False)


def test_spatial_video_is_refused_and_apple_3d_as_the_message_says_merges(clip, tiny_model,
                                                                           tmp_path):
    spatial = data("apple_spatial_160x120.mp4")  # two MV-HEVC views
    inpainted = write_plain(torch.zeros(10, 3, 120, 160, dtype=torch.uint8), tmp_path / "in.mp4",
                            fps=30)
    with pytest.raises(InputError, match="convert with layout='apple-3d'"):
        sbsconv.infill_merge(spatial, inpainted, tmp_path / "o.mp4", progress=False)
    assert not (tmp_path / "o.mp4").exists()
    # as the message says: Vision Pro's side-by-side layout (HEVC, Apple's boxes) merges
    sbs, mask = tmp_path / "a.mp4", tmp_path / "a_mask.mkv"
    sbsconv.convert(clip, sbs, layout="apple-3d", fill="none", infill_mask=mask,
                    model=str(tiny_model), **FAST)
    inpainted = write_plain(painted(sbs, mask), tmp_path / "a_inpainted.mp4")
    result = sbsconv.infill_merge(sbs, inpainted, tmp_path / "a_final.mp4", preset="ultrafast",
                                  progress=False)
    assert result.codec == sbsconv.probe(sbs).codec == "hevc"  # the codec Vision Pro plays, kept
    assert _core.read_stereo_boxes(result.output) == _core.read_stereo_boxes(str(sbs))
    assert result.stereo["apple"]["packing"] == "side" and result.frames == 9


def test_vr180_is_refused(clip, tiny_model, tmp_path):
    vr180 = tmp_path / "vr180.mp4"
    sbsconv.convert(clip, vr180, layout="vr180", eye_size=(192, 192), model=str(tiny_model), **FAST)
    inpainted = write_plain(frames_of(vr180), tmp_path / "in.mp4")
    with pytest.raises(InputError, match=r"equirectangular 180 \(VR180\)"):
        sbsconv.infill_merge(vr180, inpainted, tmp_path / "o.mp4", progress=False)
    assert not (tmp_path / "o.mp4").exists()


# ---- the command line, as the README writes it -----------------------------------------------


def readme_round_trip() -> tuple[str, str, str]:
    """The README's convert command with an infill mask, its stand-in line for the user's
    model, and its infill-merge command."""
    text = (ROOT / "README.md").read_text()
    convert = re.search(r"^sbsconv convert .*--infill-mask .*$", text, re.M)
    model = re.search(r"^your-inpainter .*$", text, re.M)
    merge = re.search(r"^sbsconv infill-merge .*$", text, re.M)
    assert convert and model and merge, "README: the inpainting round trip is missing"
    return convert.group(0), model.group(0), merge.group(0)


def test_the_readme_round_trip_runs_as_written(clip, tiny_model, tmp_path, capsys):
    convert, model, merge = readme_round_trip()
    os.symlink(clip, tmp_path / "clip.mp4")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        # the README's convert (which the README's own test runs with the default model), on the
        # tiny model for speed
        argv = [*convert.split()[1:], "--model", str(tiny_model), "--input-size", "70",
                "--preset", "ultrafast", "-q"]
        assert cli.main(argv) == 0
    finally:
        os.chdir(cwd)
    # the user's model: reads the 3D video and the mask, writes the inpainted video
    sbs, mask, inpainted = (tmp_path / name for name in model.split("#")[0].split()[1:4])
    write_plain(painted(sbs, mask), inpainted)
    # the merge, as written, in a shell
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", merge], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "wrote" in proc.stdout and "side-by-side" in proc.stdout
    final = tmp_path / merge.split()[-1]
    info = sbsconv.probe(final)
    assert info.has_audio and info.stereo == sbsconv.probe(sbs).stereo and info.num_frames == 9


def test_the_command_line_reports_bad_input_and_bugs_with_its_exit_codes(made, tmp_path, capsys,
                                                                         monkeypatch):
    sbs, _, picture = made["sbs.mp4"]
    small = write_plain(picture[..., :160, :], tmp_path / "small.mp4")

    def merge(inpainted: Path, out: str, *flags: str) -> int:
        argv = ["infill-merge", str(sbs), str(inpainted), str(tmp_path / out), "-q", *flags]
        return cli.main(argv)

    assert merge(small, "o.mp4") == cli.EXIT_INPUT
    err = capsys.readouterr().err
    assert err.startswith("sbsconv: error: ") and "is 640x160" in err and "is 640x180" in err
    assert merge(small, "o.avi") == cli.EXIT_USAGE
    assert merge(small, "o.mp4", "--crf", "99") == cli.EXIT_USAGE
    capsys.readouterr()

    # an unexpected exception inside is a bug: one line, a report, nothing under the output name
    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the merge")

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(infill, "_merge_frames", broken)
    inpainted = write_plain(picture, tmp_path / "inpainted.mp4")
    assert merge(inpainted, "o.mp4") == cli.EXIT_INTERNAL
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "RuntimeError: a bug in the merge" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "inpainted.mp4", "small.mp4"]
