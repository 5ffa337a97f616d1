"""Depth as a product: exporting depth, reading it back, re-rendering from it.

    sbsconv.export_depth("clip.mp4", "clip_depth.mkv")                   # gray16 + clip_depth.mkv.json
    sbsconv.export_depth("clip.mp4", "frames/", format="exr")             # one EXR per frame
    sbsconv.convert("clip.mp4", "clip_3d.mp4", depth_out="clip_depth.mkv")  # both in one run
    sbsconv.convert("clip.mp4", "clip_3d_b.mp4", depth="clip_depth.mkv", divergence=3)  # no model
    for batch in sbsconv.read_depth("clip_depth.mkv"):
        batch.depth, batch.times                                          # float [N,1,H,W], seconds

The formats, the value mappings and the sidecar are described in Note [Depth files]
(cpp/sbsconv/media/DepthFile.h); the engine's side in Note [Depth products]
(cpp/sbsconv/pipeline/Engine.h). The writers and readers are C++ (``media/``); this module
finds sidecars, checks a depth file against the video it is used with before anything is
written, and drives exports and conversions between depth formats.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

import sbsconv
from sbsconv._native import _core
from sbsconv.errors import InputError, OptionError
from sbsconv.options import CALL_KEYWORDS, DEPTH_FORMATS, ConvertOptions

__all__ = ["DepthBatch", "DepthExportResult", "DepthFromFile", "DepthInfo", "export_depth",
           "open_depth", "read_depth", "sidecar_of"]

SEQUENCES = ("png16", "exr")
EXTENSIONS = {"gray16": ".mkv", "rgb-packed": ".mkv", "npy": ".npy", "colormap": ".mp4"}
SEQUENCE_SIDECAR = "depth.json"
DEFAULT_MAX_DEPTH = 6.0  # metres at full scale in rgb-packed exports, as the toolboxes use


# ---- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DepthInfo:
    """What a depth file holds: from its sidecar, or (an RGB-packed video without one) from the
    video itself."""

    path: str  # the depth file, or the folder of a sequence
    format: str
    relative: bool  # normalised inverse depth in [0, 1] (1 = nearest); else metres
    width: int
    height: int
    frame_count: int  # -1 when unknown
    fps: float
    start: float  # first frame's time, seconds from the source's start
    end: float  # last frame's time plus one frame
    max_depth: float | None  # rgb-packed
    fov_degrees: float | None
    sidecar: dict | None = field(default=None, repr=False)


@dataclass(frozen=True)
class DepthBatch:
    depth: torch.Tensor  # float32 [N,1,H,W]: metres, or relative inverse depth in [0, 1]
    times: tuple[float, ...]  # seconds from the source video's start
    fov: torch.Tensor | None  # [N] degrees, when the file records the model's estimates


def sidecar_of(path: str | os.PathLike[str]) -> Path | None:
    """The sidecar of a depth file (``X`` -> ``X.json``), of a sequence folder
    (``folder/depth.json``), or the path itself when it is one; None when there is none."""
    p = Path(path)
    if p.suffix.lower() == ".json":
        return p if p.is_file() else None
    if p.is_dir():
        candidate = p / SEQUENCE_SIDECAR
        return candidate if candidate.is_file() else None
    candidate = p.with_name(p.name + ".json")
    return candidate if candidate.is_file() else None


def _load_sidecar(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the depth sidecar: {exc}", path=str(path), stage="read depth") from None
    if not isinstance(data, dict) or data.get("sbsconv_depth") != 1 or data.get("format") not in DEPTH_FORMATS:
        raise InputError("not an sbsconv depth sidecar (no sbsconv_depth/format)", path=str(path),
                         stage="read depth")
    return data


def open_depth(path: str | os.PathLike[str], *, max_depth: float | None = None) -> tuple[dict, DepthInfo]:
    """The C++ reader's description of a depth file (``_core.DepthReader(spec)``) and what it
    holds. Checks the file opens and is depth; raises InputError/OptionError otherwise."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError("no such depth file", path=path, stage="read depth")
    sidecar_path = sidecar_of(path)
    if sidecar_path is not None:
        side = _load_sidecar(sidecar_path)
        fmt = side["format"]
        if fmt == "colormap":
            raise InputError("a colour-mapped depth video is a preview, not depth values", path=path,
                             stage="read depth")
        folder = sidecar_path.parent
        target = str(folder) if fmt in SEQUENCES else str(folder / side.get("file", Path(path).name))
        encoding = side.get("encoding") or {}
        frames = side.get("frames") or {}
        times = [float(t) for t in frames.get("time", [])]
        if not times:
            raise InputError("the depth sidecar lists no frames", path=str(sidecar_path), stage="read depth")
        spec: dict[str, Any] = {"path": target, "format": fmt, "relative": bool(side.get("relative", True)),
                                "times": times}
        if encoding.get("type") == "linear16":
            if encoding.get("per_frame_range"):
                spec["low"] = [float(v) for v in frames.get("low", [])]
                spec["high"] = [float(v) for v in frames.get("high", [])]
            else:
                spec["low"] = [float(encoding.get("low", 0.0))]
                spec["high"] = [float(encoding.get("high", 1.0))]
        if fmt == "rgb-packed":
            spec["max_depth"] = float(encoding.get("max_depth", max_depth or DEFAULT_MAX_DEPTH))
        if fmt in SEQUENCES:
            pattern = str(side.get("files", "depth_%06d")).rsplit(".", 1)[0]
            spec["pattern"] = pattern.replace("%06d", "%06lld")
        if frames.get("fov"):
            spec["fov"] = [float(v) for v in frames["fov"]]
        fov = side.get("fov_degrees")
        fps_text = side.get("fps") or "0/1"
    else:
        p = Path(path)
        if p.is_dir() or p.suffix.lower() in (".npy", ".png", ".exr"):
            raise InputError(f"no sidecar ({p.name}.json or depth.json) beside this depth file: sbsconv "
                             "needs it to read the values", path=path, stage="read depth")
        if max_depth is None:
            raise OptionError(f"{path}: a depth video without a sidecar ({p.name}.json) is read as "
                              "RGB-packed metric depth, which needs max_depth= (metres at full scale)")
        spec = {"path": path, "format": "rgb-packed", "relative": False, "max_depth": float(max_depth)}
        side = None
        fov = None
        fps_text = None
        xfovs = p.with_name(p.name + "_xfovs.json")  # the toolboxes' per-frame field of view
        if xfovs.is_file():
            try:
                values = [float(v) for v in json.loads(xfovs.read_text())]
                spec["fov"] = values
                fov = sum(values) / len(values) if values else None
            except (OSError, ValueError, TypeError):
                pass
    reader = _core.DepthReader(spec)
    fps = float(Fraction(fps_text)) if fps_text and Fraction(fps_text) > 0 else float(reader.frame_rate)
    times = spec.get("times")
    if times:
        start, end = times[0], times[-1] + (1.0 / fps if fps > 0 else 0.0)
    else:
        info = sbsconv.probe(spec["path"])
        start = 0.0
        end = float(info.duration) if info.duration and math.isfinite(info.duration) else math.inf
        fps = float(info.fps) if info.fps else fps
    return spec, DepthInfo(path=spec["path"], format=spec["format"], relative=spec["relative"],
                           width=int(reader.width), height=int(reader.height),
                           frame_count=int(reader.frame_count), fps=fps, start=start, end=end,
                           max_depth=spec.get("max_depth"), fov_degrees=fov, sidecar=side)


def read_depth(path: str | os.PathLike[str], *, max_depth: float | None = None,
               batch_size: int = 8) -> Iterator[DepthBatch]:
    """The frames of a depth file in order, ``batch_size`` at a time (memory stays flat)."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise OptionError(f"batch_size must be a positive integer, got {batch_size!r}")
    spec, _ = open_depth(path, max_depth=max_depth)
    reader = _core.DepthReader(spec)
    while True:
        depth, times, fov = reader.read(batch_size)
        if depth is None or not times:
            return
        yield DepthBatch(depth=depth, times=tuple(times), fov=fov)


class DepthFromFile:
    """Stands where a depth model stands when depth comes from a file (Note [Depth
    products]): the engine reads it instead of running a model."""

    temporal = False
    _core = None
    dtype = "float32"

    def __init__(self, path: str, spec: dict, info: DepthInfo, device: str) -> None:
        self.spec = spec
        self.info = info
        self.source = path
        self.name = f"depth file {Path(path).name}"
        self.kind = "relative" if info.relative else "metric"
        self.device = torch.device("cpu" if device in ("auto", "") else device)

    def check_against(self, video: Any, options: ConvertOptions) -> None:
        """Refuses a depth file that cannot serve this video, before anything is written: another
        frame rate, or depth that ends before the video (or its window) does."""
        info = self.info
        video_fps = float(video.fps) if video.fps else 0.0
        if video_fps > 0 and info.fps > 0 and abs(info.fps - video_fps) > 0.01 * video_fps:
            raise InputError(f"the depth file has {info.fps:.3f} frames per second and the video "
                             f"{video_fps:.3f}: it was made from another video or resampled",
                             path=self.source, stage="read depth")
        start = float(options.start or 0.0)
        duration = float(video.duration) if video.duration and math.isfinite(video.duration) else math.inf
        end = min(duration, start + float(options.duration)) if options.duration else duration
        frame = 1.0 / video_fps if video_fps > 0 else 0.04
        if math.isfinite(end) and info.end < end - 1.5 * frame:
            raise InputError(f"the depth file covers {info.start:.2f}-{info.end:.2f} s, but the video "
                             f"runs to {end:.2f} s: it is shorter than the video", path=self.source,
                             stage="read depth")
        if info.start > start + 1.5 * frame:
            raise InputError(f"the depth file starts at {info.start:.2f} s, after the video's "
                             f"{start:.2f} s", path=self.source, stage="read depth")


def depth_model_for(options: ConvertOptions, video: Any) -> Any:
    """What gives a run its depth: the model (loaded, with the given field of view), or the
    exported file of ``options.depth`` checked against the video (Note [Depth products]); and
    the point clouds' scale checked before any work."""
    from sbsconv import models

    if options.depth is not None:
        model: Any = depth_source(options, video)
    else:
        model = models.load(options.model, checkpoint=options.checkpoint, device=options.device,
                            precision=options.precision, input_size=options.input_size,
                            temporal_mode=options.temporal_mode)
        if options.fov_degrees is not None:
            # a model whose metric depth depends on the field of view (Depth Pro) uses the given one
            model._core.set_field_of_view(float(options.fov_degrees))
    if options.depth_out is not None:
        check_point_cloud_scale(options, model)
    return model


def depth_source(options: ConvertOptions, video: Any) -> DepthFromFile:
    """The depth file of ``options.depth``, checked against the video."""
    path = os.fspath(options.depth)
    spec, info = open_depth(path, max_depth=options.max_depth)
    source = DepthFromFile(path, spec, info, options.device)
    source.check_against(video, options)
    return source


# ---- writing ---------------------------------------------------------------------------------


def depth_output_path(depth_out: str | os.PathLike[str], depth_format: str, input_path: str) -> str:
    """Where an export goes: the path given; inside it (``<input>_depth.<ext>``) when it is a
    folder and the format is one file; a folder for image sequences."""
    out = Path(depth_out)
    if depth_format in SEQUENCES:
        if out.suffix.lower() in (".mkv", ".mp4", ".npy", ".json", ".png", ".exr"):
            raise OptionError(f"depth_format={depth_format!r} writes one image per frame into a folder; "
                              f"got a file name {str(out)!r}")
        return str(out)
    ext = EXTENSIONS[depth_format]
    if out.is_dir() or str(depth_out).endswith(os.sep):
        return str(out / (Path(input_path).stem + "_depth" + ext))
    if out.suffix.lower() != ext and not (depth_format == "colormap" and out.suffix.lower() in (".mp4", ".mkv", ".mov")):
        raise OptionError(f"depth_format={depth_format!r} writes a {ext} file; got {str(out)!r}")
    return str(out)


def check_point_cloud_scale(options: ConvertOptions, model: Any) -> None:
    """Point clouds of relative depth need a stated scale: refused before any work."""
    if options.point_clouds_every is not None and model.kind != "metric" and options.point_cloud_scale is None:
        raise OptionError("point clouds from relative depth need a stated scale: give point_cloud_scale= "
                          "(metres at the nearest depth)")


def export_engine_options(options: ConvertOptions, input_path: str, model: Any) -> dict:
    """The engine's options for ``options.depth_out`` (ConvertOptions.engine_options calls this)."""
    path = depth_output_path(options.depth_out, options.depth_format, input_path)
    parent = Path(path).parent
    if str(parent) not in ("", ".") and not parent.is_dir():
        from sbsconv.errors import OutputError

        raise OutputError("the depth output's folder does not exist", path=path, stage="write depth")
    if options.depth_format == "colormap":
        return {"depth_video": path}
    relative = model.kind != "metric"
    extra = {"model": model.name, "checkpoint": str(model.source),
             "sbsconv_version": sbsconv.__version__, "source_video": os.path.abspath(input_path),
             "options": {k: (str(v) if isinstance(v, Fraction | os.PathLike) else v)
                         for k, v in options.to_dict().items()}}
    members = ",\n  ".join(f"{json.dumps(k)}: {json.dumps(v, default=str)}" for k, v in extra.items())
    spec: dict[str, Any] = {"path": path, "format": options.depth_format, "relative": relative,
                            "max_depth": float(options.max_depth or DEFAULT_MAX_DEPTH),
                            "half": options.depth_precision == "float16", "sidecar_extra": members}
    if options.fov_degrees is not None:
        spec["fov_degrees"] = float(options.fov_degrees)
    return {"depth_export": spec}


@dataclass(frozen=True)
class DepthExportResult:
    path: str  # the depth file, or the folder of a sequence
    sidecar: str | None  # None for the colour-mapped preview
    format: str
    frames: int
    seconds: float
    fps: float  # frames per second of this call
    model: str
    relative: bool
    cuts: tuple[int, ...]
    warnings: tuple[str, ...]
    point_clouds: tuple[str, ...] = ()


def _is_depth_file(path: str, max_depth: float | None = None) -> bool:
    """Whether an input is depth (to convert) rather than a video (to estimate depth for): it
    has a sidecar, or is an array/folder, or (given max_depth) it reads as RGB-packed depth."""
    p = Path(path)
    if sidecar_of(p) is not None or p.suffix.lower() in (".npy", ".json") or p.is_dir():
        return True
    if max_depth is None or not p.is_file():
        return False
    try:
        open_depth(path, max_depth=max_depth)  # an ordinary video fails its red/green check
    except InputError:
        return False
    return True


def export_depth(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    options: ConvertOptions | None = None,
    *,
    format: str | None = None,
    progress: bool = True,
    on_progress: Callable[[dict], Any] | None = None,
    **overrides: Any,
) -> DepthExportResult:
    """Writes the depth of a video (``format``: gray16, rgb-packed, png16, exr, npy or colormap;
    default ``depth_format``) with its JSON sidecar, without a 3D video. The depth is what
    :func:`sbsconv.convert` would render from with the same options (the model, then the
    stabiliser), so ``convert(..., depth=<this export>)`` re-renders without the model.

    ``input`` may also be a depth file (found by its sidecar; an RGB-packed video without one
    given ``max_depth=``): it is then converted into ``format`` without a model.
    ``point_clouds_every=N`` also writes a PLY point cloud of every N-th frame into
    ``<output>_pointclouds/``. Options as for :func:`sbsconv.convert`.
    """
    ConvertOptions.check_names(overrides, also=CALL_KEYWORDS)
    options = ConvertOptions.merged(options, overrides)
    options = options.replace(depth_out=os.fspath(output),
                              depth_format=format if format is not None else options.depth_format)
    input_path = os.fspath(input)
    if os.path.abspath(input_path) == os.path.abspath(os.fspath(output)):
        raise OptionError("the depth output would overwrite the input")
    t0 = time.perf_counter()
    from_depth = _is_depth_file(input_path, options.max_depth)
    if from_depth:
        result = _convert_depth_file(input_path, options, t0)
    else:
        result = _export_from_video(input_path, options, progress, on_progress, t0)
    if options.point_clouds_every is not None:
        from sbsconv import pointcloud

        clouds = pointcloud.export_point_clouds(
            result.path, every=options.point_clouds_every, video=None if from_depth else input_path,
            fov_degrees=options.fov_degrees, scale=options.point_cloud_scale, max_depth=options.max_depth)
        result = DepthExportResult(**{**result.__dict__, "point_clouds": tuple(clouds)})
    return result


def _export_from_video(input_path: str, options: ConvertOptions, progress: bool,
                       on_progress: Callable[[dict], Any] | None, t0: float) -> DepthExportResult:
    from sbsconv import conversion

    info = sbsconv.probe(input_path)
    model = depth_model_for(options, info)
    path = depth_output_path(options.depth_out, options.depth_format, input_path)
    engine_options = options.engine_options(input_path, path, model, info)
    engine_options["render_stereo"] = False
    engine_options["resume"] = False
    engine_options["writer"]["path"] = path  # the run lock sits beside the depth
    engine_options["fingerprint"] = ""
    raw = conversion.run_engine(engine_options, Path(input_path).name, progress, on_progress)
    conversion.warn_all(input_path, raw["warnings"])
    seconds = time.perf_counter() - t0
    exported = raw.get("depth_export")
    return DepthExportResult(
        path=exported["path"] if exported else path,
        sidecar=exported["sidecar"] if exported else None,
        format=options.depth_format, frames=raw["frames"], seconds=seconds,
        fps=raw["frames"] / seconds if seconds > 0 else 0.0, model=model.name,
        relative=model.kind != "metric", cuts=tuple(raw["cuts"]), warnings=tuple(raw["warnings"]))


def _convert_depth_file(input_path: str, options: ConvertOptions, t0: float) -> DepthExportResult:
    """Depth file -> depth file in another format, no model (the values as read)."""
    spec, info = open_depth(input_path, max_depth=options.max_depth)
    path = depth_output_path(options.depth_out, options.depth_format, input_path)
    side = info.sidecar or {}
    fps = Fraction(side.get("fps") or Fraction(info.fps).limit_denominator(1001) or 25)
    time_base = Fraction(1, 1000000) if not side.get("time_base") else Fraction(side["time_base"])
    reader = _core.DepthReader(spec)
    writer = None
    colormap = options.depth_format == "colormap"
    frames = 0
    warnings_seen: list[str] = []
    with contextlib.ExitStack() as stack:  # closes (or on failure discards) the colour-map video
        while True:
            depth, times, fov = reader.read(8)
            if depth is None or not times:
                break
            pts = [round(t / time_base) for t in times]
            if writer is None:
                if colormap:
                    from sbsconv import media

                    writer = stack.enter_context(media.VideoWriter(
                        path, width=info.width, height=info.height, fps=fps, codec=options.codec,
                        crf=options.crf, preset=options.preset))
                else:
                    extra = {"converted_from": os.path.abspath(input_path), "sbsconv_version": sbsconv.__version__}
                    for key in ("model", "checkpoint", "options", "source_video"):
                        if key in side:
                            extra[key] = side[key]
                    members = ",\n  ".join(f"{json.dumps(k)}: {json.dumps(v, default=str)}" for k, v in extra.items())
                    writer = _core.DepthWriter({
                        "path": path, "format": options.depth_format, "relative": info.relative,
                        "max_depth": float(options.max_depth or DEFAULT_MAX_DEPTH),
                        "half": options.depth_precision == "float16", "width": info.width,
                        "height": info.height, "time_base": time_base, "frame_rate": fps,
                        "time_origin": float(side.get("source_start", 0.0)),
                        "source_start": float(side.get("source_start", 0.0)),
                        "fov_degrees": side.get("fov_degrees") if side.get("fov_source") == "given" else None,
                        "sidecar_extra": members})
            if colormap:
                shown = depth if info.relative else _inverse_normalised(depth)
                writer.write(_core.colorize_depth(shown), list(times))
            else:
                writer.write(depth, [p + round(float(side.get("source_start", 0.0)) / time_base) for p in pts],
                             list(times), fov)
            frames += len(times)
        if writer is None:
            raise InputError("the depth file holds no frames", path=input_path, stage="read depth")
        if colormap:
            summary = {"path": path, "sidecar": None, "warnings": []}
        else:
            summary = writer.finish(list(side.get("scene_cuts", [])))
    warnings_seen.extend(summary["warnings"])
    from sbsconv.conversion import warn_all

    warn_all(input_path, warnings_seen)
    seconds = time.perf_counter() - t0
    return DepthExportResult(path=summary["path"], sidecar=summary["sidecar"], format=options.depth_format,
                             frames=frames, seconds=seconds, fps=frames / seconds if seconds > 0 else 0.0,
                             model=str(side.get("model", "depth file")), relative=info.relative,
                             cuts=tuple(side.get("scene_cuts", [])), warnings=tuple(warnings_seen))


def _inverse_normalised(depth: torch.Tensor) -> torch.Tensor:
    # metres shown as the engine shows them: inverse depth, near bright, per frame
    inv = depth.clamp_min(1e-3).reciprocal()
    lo = inv.amin(dim=(1, 2, 3), keepdim=True)
    hi = inv.amax(dim=(1, 2, 3), keepdim=True)
    return (inv - lo) / (hi - lo).clamp_min(1e-6)


