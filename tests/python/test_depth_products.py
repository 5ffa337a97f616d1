"""Depth as a product (issue 14): exports in every format and their sidecars, reading back,
re-rendering from an export, conversions between formats, files made the way the metric-depth
toolboxes make them, infill masks, point clouds of exports, and bad inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import sbsconv
from sbsconv import media
from sbsconv.errors import InputError, OptionError, OutputError
from conftest import tiny_depth_anything
from helpers import data

CLIP = "bt601_limited_range.mp4"  # 320x240, 2 s, 30 fps


@pytest.fixture(scope="module")
def textured_model(tmp_path_factory) -> Path:
    """A tiny random relative Depth-Anything-V2 whose depth varies across the picture (the
    shared tiny model's is nearly flat, which would make every re-render look alike)."""
    model = tiny_depth_anything()
    with torch.no_grad():
        for p in model.head.parameters():
            p.mul_(30.0)
        model.head.conv3.bias.fill_(0.5)
    folder = tmp_path_factory.mktemp("textured_model")
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_metric(tmp_path_factory) -> Path:
    """A tiny random metric Depth-Anything-V2 (max_depth 20 m)."""
    folder = tmp_path_factory.mktemp("tiny_metric")
    tiny_depth_anything(seed=1, depth_estimation_type="metric", max_depth=20).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def reference(tmp_path_factory, textured_model) -> tuple[Path, torch.Tensor, tuple[float, ...]]:
    """The clip's depth as exact float32 (npy) and its times."""
    out = tmp_path_factory.mktemp("ref") / "ref.npy"
    sbsconv.export_depth(data(CLIP), out, format="npy", model=str(textured_model), progress=False)
    batches = list(sbsconv.read_depth(out))
    return out, torch.cat([b.depth for b in batches]), sum((b.times for b in batches), ())


def _all(path, **kw) -> tuple[torch.Tensor, tuple[float, ...]]:
    batches = list(sbsconv.read_depth(path, **kw))
    return torch.cat([b.depth for b in batches]), sum((b.times for b in batches), ())


def _video_times(path) -> list[float]:
    info = sbsconv.probe(path)
    return [float(t) - float(info.start_time or 0.0) for b in media.read_frames(path, batch_size=64) for t in b.pts]


def _psnr_per_frame(a_path, b_path) -> torch.Tensor:
    a = torch.cat([b.data for b in media.read_frames(a_path, batch_size=64)]).float()
    b = torch.cat([b.data for b in media.read_frames(b_path, batch_size=64)]).float()
    assert a.shape == b.shape
    mse = ((a - b) ** 2).mean(dim=(1, 2, 3)).clamp_min(1e-12)
    return 10 * torch.log10(255.0 ** 2 / mse)


# ---- exports and round trips ------------------------------------------------------------------


def test_reference_export_has_every_frame_at_its_time(reference):
    path, depth, times = reference
    video_times = _video_times(data(CLIP))
    assert len(times) == len(video_times) == depth.shape[0]
    assert np.allclose(times, video_times, atol=1e-6)
    assert depth.shape[1:] == (1, 240, 320)
    assert 0.0 <= float(depth.min()) and float(depth.max()) <= 1.0  # relative: normalised inverse depth


@pytest.mark.parametrize(("fmt", "tolerance"), [
    ("gray16", 0.5 / 65535 + 1e-7),
    ("gray8", 0.5 / 255 + 1e-7),
    ("rgb-packed", 0.5 * 65536 / 255 ** 4 + 1e-7),
    ("png16", 0.5 / 65535 + 1e-7),
    ("exr", 0.0),
])
def test_every_format_round_trips_within_its_quantisation(tmp_path, textured_model, reference, fmt, tolerance):
    _, ref, ref_times = reference
    out = tmp_path / ("seq" if fmt in ("png16", "exr") else f"d.{'mkv'}")
    result = sbsconv.export_depth(data(CLIP), out, format=fmt, model=str(textured_model), progress=False)
    assert result.frames == ref.shape[0] and result.relative
    depth, times = _all(result.path)
    assert times == pytest.approx(ref_times, abs=1e-9)
    assert (depth - ref).abs().max().item() <= tolerance
    side = json.loads(Path(result.sidecar).read_text())
    assert side["format"] == fmt and side["units"] == "relative inverse depth"
    assert side["frame_count"] == ref.shape[0] and len(side["frames"]["time"]) == ref.shape[0]
    assert side["width"] == 320 and side["height"] == 240 and side["fps"] == "30/1"
    assert side["model"] == Path(textured_model).name and side["options"]["depth_format"] == fmt
    assert isinstance(side["scene_cuts"], list)


def test_float16_exports_are_half_precision(tmp_path, reference):
    path, ref, _ = reference
    for fmt, out in (("npy", tmp_path / "h.npy"), ("exr", tmp_path / "hexr")):
        sbsconv.export_depth(path, out, format=fmt, depth_precision="float16", progress=False)
        depth, _ = _all(out)
        assert (depth - ref).abs().max().item() <= 1e-3
        assert (depth - ref).abs().max().item() > 0  # really float16
    raw = np.load(tmp_path / "h.npy")
    assert raw.dtype == np.float16 and raw.shape == (ref.shape[0], 240, 320)


def test_npy_export_is_a_plain_numpy_array_with_a_sidecar(reference):
    path, ref, times = reference
    array = np.load(path, mmap_mode="r")
    assert array.dtype == np.float32 and array.shape == (ref.shape[0], 240, 320)
    assert np.array_equal(np.asarray(array), ref[:, 0].numpy())
    side = json.loads(Path(str(path) + ".json").read_text())
    assert side["frames"]["time"] == pytest.approx(list(times))


def test_metric_depth_exports_in_metres_with_per_frame_ranges(tmp_path, tiny_metric):
    ref_path = tmp_path / "m.npy"
    sbsconv.export_depth(data(CLIP), ref_path, format="npy", model=str(tiny_metric), progress=False)
    ref, _ = _all(ref_path)
    assert float(ref.min()) > 0  # metres
    gray = sbsconv.export_depth(ref_path, tmp_path / "m.mkv", format="gray16", progress=False)
    side = json.loads(Path(gray.sidecar).read_text())
    assert side["units"] == "metres" and side["encoding"]["per_frame_range"] is True
    low, high = np.array(side["frames"]["low"]), np.array(side["frames"]["high"])
    assert np.allclose(low, ref.amin(dim=(1, 2, 3)).numpy(), atol=1e-5)
    depth, _ = _all(gray.path)
    assert ((depth - ref).abs().amax(dim=(1, 2, 3)) <= torch.tensor((high - low) / 65535 / 2 + 1e-5)).all()
    packed = sbsconv.export_depth(ref_path, tmp_path / "p.mkv", format="rgb-packed", max_depth=30.0, progress=False)
    assert json.loads(Path(packed.sidecar).read_text())["encoding"]["max_depth"] == 30.0
    depth, _ = _all(packed.path)
    assert (depth - ref).abs().max().item() <= 30.0 * 65536 / 255 ** 4


def test_rgb_packed_clipping_beyond_max_depth_is_reported(tmp_path, tiny_metric):
    with pytest.warns(sbsconv.errors.SbsconvWarning, match="beyond max_depth"):
        sbsconv.export_depth(data(CLIP), tmp_path / "p.mkv", format="rgb-packed", max_depth=0.01,
                             model=str(tiny_metric), duration=0.2, progress=False)


# ---- the toolboxes' files -----------------------------------------------------------------------


def _toolbox_frames(max_depth: float, n: int = 6, h: int = 144, w: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """A scene's metric depth (a floor receding from 1 to 4 m, a wall, a nearer object) packed as
    the toolboxes pack it: a 32-bit value with 255^4 steps over max_depth, its top byte in red
    and green, the next in blue."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    frames, depths = [], []
    for k in range(n):
        d = 1.0 + 3.0 * (1.0 - y / h) + 0.2 * np.sin((x + 4 * k) / 23.0)
        d[20:90, 60 + 2 * k:140 + 2 * k] = 1.5 + 0.003 * (x[20:90, 60 + 2 * k:140 + 2 * k] - 60)  # an object
        d = np.clip(d, 0, max_depth)
        v = np.floor(d * (255 ** 4 / max_depth)).astype(np.uint64)
        hi = ((v >> 24) & 255).astype(np.uint8)
        lo = ((v >> 16) & 255).astype(np.uint8)
        frames.append(np.stack([hi, hi, lo], axis=-1))
        depths.append(d)
    return np.stack(frames), np.stack(depths)


def _encode_rgb(frames: np.ndarray, path: Path, codec_args: list[str]) -> None:
    n, h, w, _ = frames.shape
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
                    "-r", "24", "-i", "-", *codec_args, str(path)], input=frames.tobytes(), check=True)


@pytest.mark.parametrize(("codec_args", "beyond"), [
    (["-c:v", "ffv1"], 0.0),
    (["-c:v", "libx264", "-crf", "16", "-pix_fmt", "yuv444p"], 0.025),
    (["-c:v", "libx264rgb", "-crf", "18"], 0.01),
    (["-c:v", "libx265", "-x265-params", "log-level=error", "-crf", "16", "-pix_fmt", "yuv444p"], 0.02),
], ids=["ffv1", "h264", "h264rgb", "hevc"])
def test_rgb_packed_files_from_the_toolboxes_read_within_one_percent(tmp_path, codec_args, beyond):
    # The toolboxes write FFV1 (exact); lossy copies keep depth within 1 % of max_depth but for
    # a small share of pixels at depth edges and steep slopes (Note [Lossy packed depth]).
    max_depth = 6.0
    frames, truth = _toolbox_frames(max_depth)
    path = tmp_path / "toolbox_depth.mkv"
    _encode_rgb(frames, path, codec_args)
    with pytest.raises(OptionError, match="max_depth"):
        list(sbsconv.read_depth(path))  # no sidecar, no max_depth: refused
    depth, times = _all(path, max_depth=max_depth)
    assert depth.shape == (6, 1, 144, 256)
    assert times == pytest.approx([k / 24 for k in range(6)], abs=1e-3)
    error = np.abs(depth[:, 0].double().numpy() - truth)
    if codec_args[1] == "ffv1":
        assert error.max() <= 1.01 * max_depth * 65536 / 255 ** 4  # exact up to their truncation
    assert (error > 0.01 * max_depth).mean() <= beyond
    assert error.mean() <= 0.005 * max_depth


def test_rgb_packed_file_converts_to_gray16_and_exr_without_a_model(tmp_path):
    frames, truth = _toolbox_frames(6.0, n=3)
    src = tmp_path / "toolbox.mkv"
    _encode_rgb(frames, src, ["-c:v", "ffv1"])
    gray = sbsconv.export_depth(src, tmp_path / "g.mkv", format="gray16", max_depth=6.0, progress=False)
    exr = sbsconv.export_depth(src, tmp_path / "e", format="exr", max_depth=6.0, progress=False)
    assert gray.frames == exr.frames == 3 and not gray.relative
    a, _ = _all(gray.path)
    b, _ = _all(exr.path)
    assert np.abs(a[:, 0].double().numpy() - truth).max() <= 1.01 * 6.0 * 65536 / 255 ** 4 + 6.0 / 65535
    assert np.abs(b[:, 0].double().numpy() - truth).max() <= 1.01 * 6.0 * 65536 / 255 ** 4


# ---- re-rendering -----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["gray16", "rgb-packed", "png16"])
def test_rerender_from_a_lossless_export_equals_the_direct_conversion(tmp_path, textured_model, fmt):
    depth_out = tmp_path / ("seq" if fmt == "png16" else "d.mkv")
    common = dict(progress=False, crf=0, duration=1.0)  # lossless video: compare the renders themselves
    direct = sbsconv.convert(data(CLIP), tmp_path / "direct.mkv", model=str(textured_model), depth_out=depth_out,
                             depth_format=fmt, **common)
    assert direct.depth_out and Path(direct.depth_out).exists() and direct.depth_sidecar
    again = sbsconv.convert(data(CLIP), tmp_path / "again.mkv", depth=depth_out, **common)
    assert again.frames == direct.frames == 30
    assert again.model.startswith("depth file")
    assert _psnr_per_frame(tmp_path / "direct.mkv", tmp_path / "again.mkv").min() >= 45.0


def test_rerender_takes_other_settings_and_a_window(tmp_path, textured_model, reference):
    # The export holds the whole clip's depth (stabilised over the whole clip): a window of it
    # re-renders that window of the whole clip's direct conversion, with any 3D settings. (With
    # the spatial fill: the temporal fill of a window sees only the window's frames, so its holes
    # differ near the window's ends; test_metric_rerender_equals_direct re-renders with every
    # option at its default.)
    path, _, _ = reference
    strong = sbsconv.convert(data(CLIP), tmp_path / "strong.mkv", depth=path, divergence=4.0, progress=False,
                             crf=0, start=0.5, duration=0.5, fill="spatial")
    weak = sbsconv.convert(data(CLIP), tmp_path / "weak.mkv", depth=path, divergence=1.0, progress=False, crf=0,
                           start=0.5, duration=0.5, fill="spatial")
    direct = sbsconv.convert(data(CLIP), tmp_path / "direct.mkv", model=str(textured_model), divergence=4.0,
                             progress=False, crf=0, fill="spatial")
    assert strong.frames == weak.frames == 15 and direct.frames == 60
    a = torch.cat([b.data for b in media.read_frames(tmp_path / "strong.mkv", batch_size=64)]).float()
    b = torch.cat([b.data for b in media.read_frames(tmp_path / "direct.mkv", batch_size=64)])[15:30].float()
    psnr = 10 * torch.log10(255.0 ** 2 / ((a - b) ** 2).mean(dim=(1, 2, 3)).clamp_min(1e-12))
    assert psnr.min() >= 45.0
    assert _psnr_per_frame(tmp_path / "strong.mkv", tmp_path / "weak.mkv").min() < 45.0  # the settings matter


def test_metric_rerender_equals_direct(tmp_path, tiny_metric):
    common = dict(progress=False, crf=0, duration=0.5, fov_degrees=70.0)
    sbsconv.convert(data(CLIP), tmp_path / "direct.mkv", model=str(tiny_metric), depth_out=tmp_path / "m.mkv",
                    **common)
    sbsconv.convert(data(CLIP), tmp_path / "again.mkv", depth=tmp_path / "m.mkv", **common)
    assert _psnr_per_frame(tmp_path / "direct.mkv", tmp_path / "again.mkv").min() >= 45.0


def test_depth_of_another_size_is_resized(tmp_path, reference):
    path, ref, _ = reference
    small = torch.nn.functional.interpolate(ref, size=(120, 160), mode="bilinear", align_corners=False)
    np.save(tmp_path / "small.npy", small[:, 0].numpy())
    side = json.loads(Path(str(path) + ".json").read_text())
    side.update(width=160, height=120, file="small.npy")
    (tmp_path / "small.npy.json").write_text(json.dumps(side))
    result = sbsconv.convert(data(CLIP), tmp_path / "out.mkv", depth=tmp_path / "small.npy", progress=False,
                             duration=0.5)
    assert result.frames == 15 and result.width == 640 and result.height == 240


def test_with_the_depth_from_a_file_the_preset_keeps_pace_with_the_stage_that_sets_it(tmp_path, reference):
    """No model runs: the encoder's preset is chosen against the slowest other stage (Note
    [Encoder preset chosen to keep pace]), not against a model that takes no time."""
    path, _, _ = reference
    result = sbsconv.convert(data(CLIP), tmp_path / "out.mp4", depth=path, progress=False, duration=0.5)
    assert result.encoder == "libx264" and result.encoder_preset in ("medium", "fast", "faster", "veryfast")
    reason = result.encoder_preset_reason
    assert reason.startswith(f"libx264 preset {result.encoder_preset}: the ")
    assert "stage (the depth read from a file) runs at" in reason and "model" not in reason
    # no model takes the cores: the stereo stage renders on all of them from the start
    stereo = next(s for s in result.stages if s["name"] == "stereo")
    assert stereo["threads_after_model"] == torch.get_num_threads()


# ---- bad inputs -------------------------------------------------------------------------------


def test_a_depth_file_shorter_than_the_video_is_refused_before_any_output(tmp_path, textured_model):
    short = tmp_path / "short.mkv"
    sbsconv.export_depth(data(CLIP), short, model=str(textured_model), duration=1.0, progress=False)
    out = tmp_path / "out.mp4"
    with pytest.raises(InputError, match="shorter than the video"):
        sbsconv.convert(data(CLIP), out, depth=short, progress=False)
    assert not out.exists() and list(tmp_path.glob(".out.mp4*")) == []
    # the part it covers converts
    assert sbsconv.convert(data(CLIP), out, depth=short, duration=1.0, progress=False).frames == 30


def test_a_depth_file_at_another_frame_rate_is_refused(tmp_path, reference, make_clip):
    other = make_clip("rate25.mp4", ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=2",
                                     "-pix_fmt", "yuv420p"])
    out = tmp_path / "out.mp4"
    with pytest.raises(InputError, match="frames per second"):
        sbsconv.convert(other, out, depth=reference[0], progress=False)
    assert not out.exists()


def test_missing_sidecar_and_non_depth_videos_are_refused(tmp_path, reference):
    path, _, _ = reference
    bare = tmp_path / "bare.npy"
    bare.write_bytes(Path(path).read_bytes())
    with pytest.raises(InputError, match="sidecar"):
        sbsconv.convert(data(CLIP), tmp_path / "a.mp4", depth=bare, progress=False)
    plain = data(CLIP)  # an ordinary video given as RGB-packed depth
    with pytest.raises(OptionError, match="max_depth"):
        sbsconv.convert(data(CLIP), tmp_path / "b.mp4", depth=plain, progress=False)
    with pytest.raises(InputError, match="red and green"):
        sbsconv.convert(data(CLIP), tmp_path / "c.mp4", depth=plain, max_depth=6.0, progress=False)
    with pytest.raises(InputError, match="no such depth file"):
        sbsconv.convert(data(CLIP), tmp_path / "d.mp4", depth=tmp_path / "nothing.mkv", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare.npy"]


def test_a_colour_mapped_export_is_not_depth(tmp_path, reference):
    out = sbsconv.export_depth(reference[0], tmp_path / "c.mp4", format="colormap", progress=False)
    assert out.sidecar is None and Path(out.path).exists()
    assert sbsconv.probe(out.path).width == 320
    with pytest.raises(OptionError, match="max_depth"):
        list(sbsconv.read_depth(out.path))


def test_export_refuses_a_folder_that_is_not_an_export(tmp_path, reference):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(OutputError, match="not an sbsconv depth folder"):
        sbsconv.export_depth(reference[0], folder, format="png16", progress=False)
    assert sorted(p.name for p in folder.iterdir()) == ["holiday.jpg"]
    seq = tmp_path / "seq"
    first = sbsconv.export_depth(reference[0], seq, format="png16", progress=False)
    again = sbsconv.export_depth(reference[0], seq, format="png16", progress=False)  # replaces its own
    assert first.frames == again.frames == len(list(seq.glob("depth_*.png")))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_depth_options_are_checked(tmp_path, reference):
    with pytest.raises(OptionError, match="folder"):
        sbsconv.export_depth(reference[0], tmp_path / "x.mkv", format="png16", progress=False)
    with pytest.raises(OptionError, match=r"\.npy"):
        sbsconv.export_depth(reference[0], tmp_path / "x.mkv", format="npy", progress=False)
    with pytest.raises(OptionError, match="anaglyph"):
        sbsconv.ConvertOptions(infill_mask="m.mkv", layout="anaglyph")
    with pytest.raises(OptionError, match="apple-3d"):  # MV-HEVC views: no picture to inpaint
        sbsconv.ConvertOptions(infill_mask="m.mkv", layout="spatial")
    with pytest.raises(OptionError, match="depth_out"):
        sbsconv.convert(data(CLIP), tmp_path / "o.mp4", depth=reference[0], point_clouds_every=5, progress=False)


# ---- infill masks, point clouds, the command line -----------------------------------------------


def test_infill_mask_marks_each_eyes_disocclusions_with_the_background_side(tmp_path, reference):
    result = sbsconv.convert(data(CLIP), tmp_path / "o.mkv", depth=reference[0], infill_mask=tmp_path / "m.mkv",
                             divergence=6.0, duration=0.5, progress=False)
    info = sbsconv.probe(tmp_path / "m.mkv")
    assert (info.width, info.height) == (result.width, result.height) == (640, 240)
    mask = torch.cat([b.data for b in media.read_frames(tmp_path / "m.mkv", batch_size=32)])
    assert mask.shape[0] == result.frames
    colours = {tuple(c) for c in mask.permute(0, 2, 3, 1).reshape(-1, 3).unique(dim=0).tolist()}
    assert colours <= {(0, 0, 0), (0, 128, 0), (255, 128, 0)}
    left, right = mask[..., :320], mask[..., 320:]
    assert (left[:, 1] == 128).any() and (right[:, 1] == 128).any()  # both eyes have holes
    assert (left[:, 0] == 0).all() and ((right[:, 0] == 255) == (right[:, 1] == 128)).all()
    # holes are a small part of each picture
    assert (mask[:, 1] == 128).float().mean() < 0.3  # holes beside the random depth's edges, not everything


def test_point_clouds_of_an_export(tmp_path, tiny_metric):
    result = sbsconv.export_depth(data(CLIP), tmp_path / "m.mkv", model=str(tiny_metric), duration=0.5,
                                  point_clouds_every=5, fov_degrees=60.0, progress=False)
    assert [Path(p).name for p in result.point_clouds] == ["frame_000001.ply", "frame_000006.ply", "frame_000011.ply"]
    header, _, body = Path(result.point_clouds[0]).read_bytes().partition(b"end_header\n")
    count = int(header.split(b"element vertex ")[1].split(b"\n")[0])
    assert count == 320 * 240 and len(body) == count * 15
    # the field of view sets the lateral extent: at fov 60 the cloud spans 2 tan(30 deg) z across
    cloud = np.frombuffer(body, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1")])
    row = cloud.reshape(240, 320)[120]
    width = row["x"][-1] - row["x"][0]
    expected = 2 * np.tan(np.radians(30)) * (row["z"][0] + row["z"][-1]) / 2 * 319 / 320
    assert width == pytest.approx(expected, rel=1e-3)
    assert (cloud["z"] > 0).all()


def test_relative_point_clouds_need_a_scale(tmp_path, textured_model):
    with pytest.raises(OptionError, match="point_cloud_scale"):
        sbsconv.export_depth(data(CLIP), tmp_path / "r.mkv", model=str(textured_model), duration=0.2,
                             point_clouds_every=5, progress=False)
    assert list(tmp_path.iterdir()) == []
    result = sbsconv.export_depth(data(CLIP), tmp_path / "r.mkv", model=str(textured_model), duration=0.2,
                                  point_clouds_every=5, point_cloud_scale=1.5, fov_degrees=60, progress=False)
    assert len(result.point_clouds) == 2


def test_command_line_exports_and_rerenders(tmp_path, textured_model):
    run = [sys.executable, "-m", "sbsconv.cli"]
    out = subprocess.run([*run, "depth", data(CLIP), str(tmp_path / "d.npy"), "--format", "npy", "--model",
                          str(textured_model), "--duration", "0.5", "-q"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "15 frames of relative depth (npy)" in out.stdout
    out = subprocess.run([*run, "convert", data(CLIP), str(tmp_path / "o.mp4"), "--depth", str(tmp_path / "d.npy"),
                          "--duration", "0.5", "-q"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert sbsconv.probe(tmp_path / "o.mp4").width == 640
    out = subprocess.run([*run, "depth", data(CLIP), str(tmp_path / "x.npy"), "--format", "tiff", "-q"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "format" in out.stderr


MEMORY_WORKER = """
import sys
import sbsconv
clip, out, model = sys.argv[1:4]
sbsconv.export_depth(clip, out, format="npy", model=model, input_size=70, progress=False)
# VmHWM: this process's own peak (ru_maxrss would keep the forking parent's across exec)
print(next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) / 1024)
"""


def test_memory_stays_flat_exporting_a_40_second_clip(tmp_path, testsrc, textured_model):
    # Each export in a fresh process: the peak memory of 40 s of 320x240 depth (1000 frames,
    # 300 MB of float32) is that of 10 s, because nothing of a frame is kept once written.
    peaks = {}
    for seconds in (10, 40):
        clip = testsrc(f"long{seconds}.mp4", size="320x240", rate=25, seconds=seconds)
        out = subprocess.run([sys.executable, "-c", MEMORY_WORKER, str(clip), str(tmp_path / f"d{seconds}.npy"),
                              str(textured_model)], capture_output=True, text=True, check=True)
        peaks[seconds] = float(out.stdout.strip().splitlines()[-1])
        assert np.load(tmp_path / f"d{seconds}.npy", mmap_mode="r").shape == (25 * seconds, 240, 320)
    assert peaks[40] - peaks[10] < 40.0, peaks


def test_max_depth_with_an_ordinary_video_sets_the_export_scale(tmp_path, tiny_metric):
    # max_depth is the rgb-packed scale: given with an ordinary video it does not make the video
    # "depth to convert" (that needs a sidecar, or red and green that agree)
    result = sbsconv.export_depth(data(CLIP), tmp_path / "p.mkv", format="rgb-packed", max_depth=40.0,
                                  model=str(tiny_metric), duration=0.2, progress=False)
    assert result.model == Path(tiny_metric).name and result.frames == 6
    assert json.loads(Path(result.sidecar).read_text())["encoding"]["max_depth"] == 40.0
