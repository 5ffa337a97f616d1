"""``sbsconv.convert()``: a 2D video in, a stereoscopic 3D video out.

The work runs in the C++ engine (Note [Engine] in cpp/sbsconv/pipeline/Engine.h): decoding,
depth, stabilisation, warping and encoding overlap on their own threads, with the GIL
released. This module validates the options (before any work), resolves the model, shows
progress, turns Ctrl-C into a prompt stop, and makes long runs resumable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

import sbsconv
from sbsconv import stereo
from sbsconv._native import _core, flush_log
from sbsconv.errors import OptionError, SbsconvWarning

logger = logging.getLogger("sbsconv")

__all__ = ["ConversionResult", "HEADSET_SUFFIXES", "OPTION_HELP", "convert", "output_name"]

# One line per convert() option: the CLI's --help and the notebook's form use these, so the
# three faces of sbsconv describe the same options with the same names.
OPTION_HELP = {
    "model": "depth model: a registry name (sbsconv models), a Hugging Face repo id or a local path",
    "checkpoint": "a local checkpoint file replacing the download of a registry model",
    "device": "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps",
    "precision": "auto (fp16 on GPUs, fp32 on the CPU), fp32, fp16 or bf16",
    "batch_size": "frames per depth batch (default: 8 on GPUs, 2 on the CPU; 1 for Depth Pro)",
    "input_size": "the depth model's input: frames are resized so their shorter side is this",
    "temporal_mode": "video models (Video-Depth-Anything): windowed (32-frame windows, most accurate) or streaming (lower latency and memory)",
    "layout": "full-sbs, half-sbs, full-tb, half-tb, cross-eyed, anaglyph, anaglyph-color, anaglyph-gray",
    "eye_size": "output eye size: 720, 1080, 1440, 2160 (lines) or WIDTHxHEIGHT; default: the source's",
    "keep_aspect": "pad with black instead of stretching when eye_size changes the aspect ratio",
    "fps": "resample to this frame rate (default: keep every source frame and its timestamp)",
    "start": "start of the part to convert, in seconds from the beginning",
    "duration": "length of the part to convert, in seconds",
    "divergence": "3D strength: the largest disparity, in percent of the eye width",
    "convergence": "the depth on the screen plane: 0 = everything in front, 1 = everything behind",
    "max_shift": "the largest disparity in pixels (replaces divergence)",
    "synthetic_view": "both (each eye half the shift), left or right (the other eye is the source frame)",
    "ipd_mm": "interpupillary distance for metric depth models, in millimetres",
    "fov_degrees": "horizontal field of view for metric depth (default: the model's estimate, else 60)",
    "screen_distance": "distance of the screen plane for metric depth, in metres",
    "edge_dilation": "grow nearer regions by this many pixels against halos at object edges",
    "percentiles": "the robust depth range: low and high percentiles",
    "range_decay": "how slowly the depth range follows the scene (EMA decay, 0..1)",
    "align": "fit each frame's depth scale and shift to the previous frame (less flicker)",
    "smoothing": "temporal smoothing of depth (EMA alpha, 0 = off), weaker where the picture moves",
    "motion_threshold": "the picture change (0..1) at which temporal smoothing stops",
    "scene_cuts": "detect scene cuts and restart depth stabilisation at each",
    "cut_sensitivity": "scene-cut sensitivity, 0..1 (higher finds more cuts)",
    "min_scene_length": "the shortest scene, in frames",
    "comfort_limit": "the comfortable disparity in percent of the eye width (reported per scene)",
    "auto_strength": "scale the 3D strength down in scenes that exceed the comfort limit",
    "encoder": "auto (NVENC, VideoToolbox, then libx264/libx265), nvenc, videotoolbox, software or an FFmpeg name",
    "codec": "h264 or hevc",
    "crf": "x264/x265 quality, 0-51, lower is better (default 16/18)",
    "cq": "NVENC constant quality, 0-51 (default 21)",
    "quality": "VideoToolbox quality, 1-100 (default 65)",
    "preset": "encoder preset (default: medium for x264/x265, p5 for NVENC)",
    "bit_depth": "8, or 10 with HEVC",
    "audio": "copy (stream copy where the container allows, else AAC), aac or none",
    "subtitles": "copy (converted to the container's text format where needed) or none",
    "hwaccel": "hardware decoding: auto, none, cuda, videotoolbox ...",
    "stream": "the video stream to convert (default: the largest picture)",
    "headset_suffix": "name the output as headset players expect (_LR, _SBS, _TB)",
    "preview_every": "preview mode: one frame every this many seconds, into a short clip and PNG images",
    "depth_video": "also write the stabilised depth, colour-mapped (near is bright), as a video here",
    "resume": "keep a journal beside the output so that an interrupted run can continue",
    "segment_seconds": "how much video a resumable run finishes at a time",
}

# The names headset players (DeoVR, Skybox, Pico's and Quest's own) recognise.
HEADSET_SUFFIXES = {
    "full-sbs": "_LR", "half-sbs": "_SBS", "full-tb": "_TB", "half-tb": "_TB",
    "cross-eyed": "_RL", "anaglyph": "_anaglyph", "anaglyph-color": "_anaglyph",
    "anaglyph-gray": "_anaglyph",
}
_STEREO_TAG = {"full-sbs": "sbs", "half-sbs": "sbs", "cross-eyed": "sbs-rl", "full-tb": "tb", "half-tb": "tb"}
_CONTAINERS = (".mp4", ".m4v", ".mov", ".mkv")


@dataclass(frozen=True)
class ConversionResult:
    output: str
    frames: int  # frames in the output
    seconds: float  # wall time of this call
    fps: float  # frames this call processed per second
    resumed_from: int  # the first frame this call processed (0 for a fresh run)
    width: int
    height: int
    layout: str
    model: str
    encoder: str
    skipped_encoders: tuple[str, ...]
    streams: tuple[str, ...]  # carried audio/subtitle streams and what happened to them
    stage_fps: dict[str, float]  # frames per second of busy time, per stage
    cuts: tuple[int, ...]  # frames that start a new shot
    comfort: tuple[dict, ...]  # per scene: disparity statistics against the comfort limit
    fov_degrees: float | None  # the model's field-of-view estimate, when it makes one
    warnings: tuple[str, ...]
    damaged_frames: int = 0  # frames decoded with errors (or corrupt packets skipped)
    truncated: bool = False  # the input ended before the end its container declares
    images: tuple[str, ...] = field(default_factory=tuple)  # preview mode: the PNG files


def output_name(output: str | os.PathLike[str], layout: str) -> str:
    """The output path with the headset suffix for ``layout`` (``clip.mp4`` ->
    ``clip_LR.mp4``), unless it already ends with it."""
    path = Path(output)
    suffix = HEADSET_SUFFIXES.get(layout, "")
    if not suffix or path.stem.endswith(suffix):
        return str(path)
    return str(path.with_name(path.stem + suffix + path.suffix))


def _number(value, name, low, high, *, integer=False, low_open=False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise OptionError(f"{name} must be a number, got {value!r}")
    if integer and int(value) != value:
        raise OptionError(f"{name} must be an integer, got {value!r}")
    if value < low or value > high or (low_open and value == low):
        raise OptionError(f"{name} must be within {low:g}..{high:g}, got {value!r}")
    return value


def _choice(value, name, choices) -> str:
    if value not in choices:
        raise OptionError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")
    return value


def _fingerprint(input_path: str, options: dict) -> str:
    stat = os.stat(input_path)
    payload = {"input": os.path.abspath(input_path), "size": stat.st_size, "mtime": stat.st_mtime_ns,
               "version": sbsconv.__version__, **options}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


class _Progress:
    """A progress bar (tqdm: in notebooks the widget, in terminals the text bar) with fps and
    ETA, plus the caller's callback. Values only grow."""

    def __init__(self, show: bool, callback: Callable[[dict], Any] | None, description: str) -> None:
        self.callback = callback
        self.bar = None
        self.last = 0
        if show:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=None, unit="frame", desc=description, dynamic_ncols=True, leave=True)

    def update(self, info: dict, *, final: bool = False) -> None:
        done = max(self.last, int(info["frames_done"]))
        total = info.get("frames_total")
        if final:
            total = done
        if total is not None:
            total = max(total, done)
        fraction = None if not total else min(1.0, done / total)
        elapsed = float(info.get("elapsed", 0.0))
        processed = done - int(info.get("resumed_from", 0))
        rate = processed / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if (total and rate > 0) else None
        if self.bar is not None:
            if total is not None and self.bar.total != total:
                self.bar.total = total
            self.bar.n = done
            self.bar.set_postfix_str(info.get("phase", ""), refresh=False)
            self.bar.refresh()
        self.last = done
        if self.callback is not None:
            self.callback({"frames_done": done, "frames_total": total, "fraction": fraction, "fps": rate,
                           "eta_seconds": eta, "phase": info.get("phase"), "elapsed": elapsed})

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def convert(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    model: str | os.PathLike[str] = "depth-anything-v2-small",
    checkpoint: str | os.PathLike[str] | None = None,
    device: str = "auto",
    precision: str = "auto",
    batch_size: int | None = None,
    input_size: int = 518,
    temporal_mode: str = "windowed",
    layout: str = "full-sbs",
    eye_size=None,
    keep_aspect: bool = True,
    fps: Fraction | float | str | None = None,
    start: float | None = None,
    duration: float | None = None,
    divergence: float = stereo.DEFAULT_DIVERGENCE,
    convergence: float = stereo.DEFAULT_CONVERGENCE,
    max_shift: float | None = None,
    synthetic_view: str = "both",
    ipd_mm: float = stereo.DEFAULT_IPD_MM,
    fov_degrees: float | None = None,
    screen_distance: float = stereo.DEFAULT_SCREEN_DISTANCE,
    edge_dilation: int = 2,
    percentiles: tuple[float, float] = (1.0, 99.0),
    range_decay: float = 0.9,
    align: bool = True,
    smoothing: float = 0.0,
    motion_threshold: float = 0.08,
    scene_cuts: bool = True,
    cut_sensitivity: float = 0.5,
    min_scene_length: int = 8,
    comfort_limit: float = 3.0,
    auto_strength: bool = False,
    encoder: str = "auto",
    codec: str = "h264",
    crf: int | None = None,
    cq: int | None = None,
    quality: int | None = None,
    preset: str | None = None,
    bit_depth: int = 8,
    audio: str = "copy",
    subtitles: str = "copy",
    hwaccel: str = "auto",
    stream: int | None = None,
    headset_suffix: bool = False,
    preview_every: float | None = None,
    depth_video: str | os.PathLike[str] | None = None,
    resume: bool = True,
    segment_seconds: float = 10.0,
    progress: bool = True,
    on_progress: Callable[[dict], Any] | None = None,
) -> ConversionResult:
    """Converts a 2D video into a stereoscopic 3D video.

    Depth (``model``, ``checkpoint``, ``device``, ``precision``, ``batch_size``,
    ``input_size``, ``temporal_mode``): see :func:`sbsconv.models.load`. Stereo (``layout``, ``eye_size``,
    ``divergence``, ``convergence``, ``max_shift``, ``synthetic_view``, ``ipd_mm``,
    ``fov_degrees``, ``screen_distance``, ``edge_dilation``): see
    :func:`sbsconv.stereo.render`. Stability: the depth stabiliser (``percentiles``,
    ``range_decay``, ``align``, ``smoothing`` = its alpha, ``motion_threshold``), scene cuts
    (``scene_cuts``, ``cut_sensitivity``, ``min_scene_length``), the comfort budget
    (``comfort_limit`` in % of the eye width, ``auto_strength``). Encoding: ``encoder``,
    ``codec``, ``crf``/``cq``/``quality``, ``preset``, ``bit_depth``; ``audio`` and
    ``subtitles`` carry the source's streams over. Timing: every source frame once with its
    timestamp, unless ``fps`` resamples; ``start``/``duration`` select a window (seconds).

    ``preview_every=N``: one frame every N seconds, into a short clip (one second per frame)
    and PNG images beside it, for tuning settings. ``depth_video``: also write the depth,
    colour-mapped, as a video (no resume then). ``resume``: the run keeps a journal beside
    the output and a later identical call continues after the last finished segment
    (``segment_seconds`` long). ``headset_suffix`` names the output the way headset players
    expect (``_LR``, ``_SBS``, ``_TB``). ``on_progress`` receives a dict (frames_done,
    frames_total, fraction, fps, eta_seconds, phase) several times a second.

    Every option is checked before any work; problems raise :class:`~sbsconv.errors.OptionError`
    (a ValueError). Ctrl-C stops the run within about a second (after the current depth batch)
    and leaves nothing under the output name.
    """
    from sbsconv import models

    # ---- options, all checked before any work --------------------------------------------
    input_path = os.fspath(input)
    output_path = os.fspath(output)
    _choice(layout, "layout", [name for name in stereo.LAYOUTS if name != "separate"])
    if headset_suffix:
        output_path = output_name(output_path, layout)
    if Path(output_path).suffix.lower() not in _CONTAINERS:
        raise OptionError(f"the output must end in {', '.join(_CONTAINERS)}: {output_path!r}")
    if os.path.abspath(output_path) == os.path.abspath(input_path):
        raise OptionError("the output would overwrite the input")
    _choice(synthetic_view, "synthetic_view", ("both", "left", "right"))
    _choice(codec, "codec", ("h264", "hevc"))
    _choice(audio, "audio", ("copy", "aac", "none"))
    _choice(subtitles, "subtitles", ("copy", "none"))
    _choice(precision, "precision", ("auto", "fp32", "fp16", "bf16"))
    _choice(temporal_mode, "temporal_mode", ("windowed", "streaming"))
    _choice(bit_depth, "bit_depth", (8, 10))
    if bit_depth == 10 and codec != "hevc":
        raise OptionError("bit_depth=10 needs codec='hevc'")
    _number(divergence, "divergence", 0, 20)
    _number(convergence, "convergence", 0, 1)
    if max_shift is not None:
        _number(max_shift, "max_shift", 0, 10_000)
    _number(ipd_mm, "ipd_mm", 1, 999)
    if fov_degrees is not None:
        _number(fov_degrees, "fov_degrees", 1, 179)
    _number(screen_distance, "screen_distance", 0.001, 1e6, low_open=True)
    _number(edge_dilation, "edge_dilation", 0, 32, integer=True)
    if not isinstance(percentiles, tuple | list) or len(percentiles) != 2 or not (
            0 <= _number(percentiles[0], "percentiles[0]", 0, 100) < _number(percentiles[1], "percentiles[1]", 0, 100)):
        raise OptionError(f"percentiles must be an increasing (low, high) pair within 0..100, got {percentiles!r}")
    _number(range_decay, "range_decay", 0, 0.999)
    _number(smoothing, "smoothing", 0, 0.99)
    _number(motion_threshold, "motion_threshold", 0.001, 1)
    _number(cut_sensitivity, "cut_sensitivity", 0, 1)
    _number(min_scene_length, "min_scene_length", 1, 1_000_000, integer=True)
    _number(comfort_limit, "comfort_limit", 0.1, 50)
    for name, value, high in (("crf", crf, 51), ("cq", cq, 51), ("quality", quality, 100)):
        if value is not None:
            _number(value, name, 0 if name != "quality" else 1, high, integer=True)
    if start is not None:
        _number(start, "start", 0, 1e9)
    if duration is not None:
        _number(duration, "duration", 0, 1e9, low_open=True)
    if preview_every is not None:
        _number(preview_every, "preview_every", 0.01, 1e6)
    _number(segment_seconds, "segment_seconds", 0.1, 1e6)
    rate = None
    if fps is not None:
        if isinstance(fps, bool):
            raise OptionError(f"fps must be a positive number or fraction, got {fps!r}")
        try:
            rate = Fraction(fps)
        except (TypeError, ValueError, ZeroDivisionError, OverflowError):
            raise OptionError(f"fps must be a positive number or fraction, got {fps!r}") from None
        if not 0 < rate <= 1000:
            raise OptionError(f"fps must be within (0, 1000], got {fps!r}")
        # The engine keeps rates as 32-bit fractions: 30000/1001 stays exact, a fraction with
        # a huge numerator or denominator becomes the nearest one that fits.
        rate = rate.limit_denominator(100_000)
        if rate <= 0:
            raise OptionError(f"fps must be within (0, 1000], got {fps!r}")
    if batch_size is not None:
        _number(batch_size, "batch_size", 1, 1024, integer=True)
    if stream is not None:
        _number(stream, "stream", 0, 100_000, integer=True)
    if not isinstance(device, str):
        raise OptionError(f"device must be a string, got {device!r}")
    eye_w, eye_h = (0, 0)
    # The input must be a video before anything is loaded or written.
    info = sbsconv.probe(input_path)
    # Anamorphic sources (non-square pixels): each eye is made of square pixels at the
    # source's display aspect ratio (headset players ignore a file's pixel aspect ratio).
    pixel_aspect = float(info.sample_aspect_ratio)
    if eye_size is not None:
        eye_w, eye_h = stereo.eye_size_for(eye_size, info.height, info.display_width)
    if not Path(output_path).parent.exists() and str(Path(output_path).parent) not in ("", "."):
        from sbsconv.errors import OutputError

        raise OutputError(f"the output folder does not exist [{output_path}]", path=output_path, stage="open output")

    depth_model = models.load(model, checkpoint=checkpoint, device=device, precision=precision,
                              input_size=input_size, temporal_mode=temporal_mode)
    if fov_degrees is not None:
        # a model whose metric depth depends on the field of view (Depth Pro) uses the given one
        depth_model._core.set_field_of_view(float(fov_degrees))
    on_gpu = depth_model.device.type != "cpu"
    batch = int(batch_size or depth_model._core.preferred_batch(on_gpu))
    preview = preview_every is not None
    if preview or rate is not None:
        resume = False
    if preview:
        audio, subtitles = "none", "none"
    source_fps = float(info.fps) if info.fps else 25.0
    engine_options: dict[str, Any] = {
        "input": input_path,
        "start": None if start is None else float(start),
        "duration": None if duration is None else float(duration),
        "stream": -1 if stream is None else int(stream),
        "hwaccel": hwaccel,
        "device": str(depth_model.device),
        "batch_size": batch,
        "model": depth_model._core,
        "detect_cuts": bool(scene_cuts),
        "cut_sensitivity": float(cut_sensitivity),
        "min_scene_length": int(min_scene_length),
        "stabilizer": {"relative": depth_model.kind == "relative", "low_percentile": float(percentiles[0]),
                       "high_percentile": float(percentiles[1]), "range_decay": float(range_decay),
                       "align": bool(align), "alpha": float(smoothing), "motion_threshold": float(motion_threshold)},
        "comfort": {"limit_percent": float(comfort_limit), "auto_strength": bool(auto_strength)},
        "disparity": {"divergence": float(divergence), "max_shift": None if max_shift is None else float(max_shift),
                      "convergence": float(convergence), "ipd_metres": float(ipd_mm) / 1000.0,
                      "fov_degrees": None if fov_degrees is None else float(fov_degrees),
                      "screen_distance": float(screen_distance)},
        "stereo": {"layout": layout, "synthetic_view": synthetic_view, "fill_holes": True,
                   "edge_dilation": int(edge_dilation), "eye_width": eye_w, "eye_height": eye_h,
                   "keep_aspect": bool(keep_aspect), "pixel_aspect": pixel_aspect},
        "writer": {"path": output_path, "codec": codec, "encoder": encoder, "crf": crf, "cq": cq,
                   "quality": quality, "preset": preset or "", "bit_depth": int(bit_depth), "audio": audio,
                   "subtitles": subtitles, "stereo": _STEREO_TAG.get(layout, ""),
                   "metadata": {"comment": f"3D ({layout}) by sbsconv {sbsconv.__version__}, depth: {depth_model.name}"}},
        "fps": rate,
        "preview_every": float(preview_every) if preview else 0.0,
        "resume": bool(resume),
        "segment_frames": max(1, round(segment_seconds * (float(rate) if rate else source_fps))),
        # Debugging and the fault tests (Note [No float64 on devices], EngineOptions::fault).
        "check_float64": os.environ.get("SBSCONV_CHECK_FLOAT64", "") not in ("", "0"),
        "fault": os.environ.get("SBSCONV_TEST_FAULT", ""),
    }
    if depth_video is not None:
        depth_path = os.fspath(depth_video)
        if Path(depth_path).suffix.lower() not in _CONTAINERS:
            raise OptionError(f"depth_video must end in {', '.join(_CONTAINERS)}: {depth_path!r}")
        engine_options["depth_video"] = depth_path
        engine_options["resume"] = False  # the depth video is written in one piece
    images_dir = None
    if preview:
        images_dir = Path(output_path).with_name(Path(output_path).stem + "_frames")
        images_dir.mkdir(parents=True, exist_ok=True)
        for old in images_dir.glob("frame_*.png"):
            old.unlink()
        engine_options["image_dir"] = str(images_dir)
    fingerprint_options = {k: v for k, v in engine_options.items()
                           if k not in ("model", "check_float64", "fault")}
    fingerprint_options.update(model=depth_model.name, checkpoint=str(depth_model.source), input_size=input_size,
                               precision=precision, dtype=depth_model.dtype,
                               temporal_mode=temporal_mode if depth_model.temporal else None)
    engine_options["fingerprint"] = _fingerprint(input_path, fingerprint_options)

    # ---- the run ---------------------------------------------------------------------------
    engine = _core.Engine(engine_options)
    bar = _Progress(progress, on_progress, Path(input_path).name)
    t0 = time.perf_counter()
    engine.start()
    try:
        while not engine.wait(0.2):
            flush_log()
            bar.update(engine.progress())
    except KeyboardInterrupt:
        engine.cancel()
        engine.wait(30.0)
        flush_log()
        bar.close()
        raise
    try:
        raw = engine.result()
    finally:
        flush_log()
    final = engine.progress()
    bar.update(final, final=True)
    bar.close()
    seconds = time.perf_counter() - t0
    processed = raw["frames"] - raw["resumed_from"]
    stage_fps = {s["name"]: (s["frames"] / s["busy_seconds"] if s["busy_seconds"] > 0 else float("inf"))
                 for s in raw["stages"]}
    for message in raw["warnings"]:
        import warnings

        warnings.warn(f"{input_path}: {message}", SbsconvWarning, stacklevel=2)
    images = tuple(sorted(str(p) for p in images_dir.glob("frame_*.png"))) if images_dir else ()
    return ConversionResult(
        output=raw["output"] or output_path,
        frames=raw["frames"],
        seconds=seconds,
        fps=processed / seconds if seconds > 0 else 0.0,
        resumed_from=raw["resumed_from"],
        width=raw["width"],
        height=raw["height"],
        layout=layout,
        model=depth_model.name,
        encoder=raw["encoder"],
        skipped_encoders=tuple(raw["skipped_encoders"]),
        streams=tuple(raw["streams"]),
        stage_fps=stage_fps,
        cuts=tuple(raw["cuts"]),
        comfort=tuple(raw["comfort"]),
        fov_degrees=raw["fov_degrees"],
        warnings=tuple(raw["warnings"]),
        images=images,
        damaged_frames=raw["damaged_frames"],
        truncated=raw["truncated"],
    )
