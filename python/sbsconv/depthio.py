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
written. Exports and conversions between depth formats: ``sbsconv.exporting``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from sbsconv._native import _core
from sbsconv.errors import InputError, InternalError, OptionError
from sbsconv.options import DEPTH_FORMATS, ConvertOptions

__all__ = ["DepthBatch", "DepthFromFile", "DepthInfo", "check_point_cloud_scale", "depth_output_path",
           "depth_source", "export_engine_options", "open_depth", "read_depth", "sidecar_of"]

SEQUENCES = ("png16", "exr")
EXTENSIONS = {"gray16": ".mkv", "gray8": ".mkv", "rgb-packed": ".mkv", "npy": ".npy", "colormap": ".mp4"}
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
    # True: ``depth`` is relative inverse depth (no unit, 1 = nearest), as the default models
    # give; point clouds from it need a stated scale (point_cloud(..., relative=True, scale=)).
    # False: metres.
    relative: bool = True


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


def source_spec(path: str, fmt: str, *, relative: bool, times: list[float] | None = None,
                max_depth: float = 0.0) -> dict[str, Any]:
    """A complete description of a depth file for the C++ reader (``_core.DepthSourceOptions``):
    every field, the ones this file does not use at their neutral values."""
    return {"path": path, "format": fmt, "relative": relative, "max_depth": max_depth,
            "pattern": "depth_%06lld", "times": list(times or []), "low": [], "high": [], "fov": []}


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
        spec = source_spec(target, fmt, relative=bool(side.get("relative", True)), times=times)
        if encoding.get("type") in ("linear16", "linear8"):
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
        spec = source_spec(path, "rgb-packed", relative=False, max_depth=float(max_depth))
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
    reader = _core.DepthReader(_core.DepthSourceOptions(**spec))
    fps = float(Fraction(fps_text)) if fps_text and Fraction(fps_text) > 0 else float(reader.frame_rate)
    times = spec.get("times")
    if times:
        start, end = times[0], times[-1] + (1.0 / fps if fps > 0 else 0.0)
    else:
        from sbsconv.media import probe

        info = probe(spec["path"])
        start = 0.0
        end = float(info.duration) if info.duration and math.isfinite(info.duration) else math.inf
        fps = float(info.fps) if info.fps else fps
    return spec, DepthInfo(path=spec["path"], format=spec["format"], relative=spec["relative"],
                           width=int(reader.width), height=int(reader.height),
                           frame_count=int(reader.frame_count), fps=fps, start=start, end=end,
                           max_depth=spec.get("max_depth"), fov_degrees=fov, sidecar=side)


def read_depth(path: str | os.PathLike[str], *, max_depth: float | None = None,
               batch_size: int = 8) -> Iterator[DepthBatch]:
    """The frames of a depth file in order, up to ``batch_size`` at a time (memory stays flat:
    fewer where a batch would pass 256 MB, as 8K frames do, at least one)."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise OptionError(f"batch_size must be a positive integer, got {batch_size!r}")
    spec, info = open_depth(path, max_depth=max_depth)
    reader = _core.DepthReader(_core.DepthSourceOptions(**spec))
    while True:
        depth, times, fov = reader.read(batch_size)
        if depth is None or not times:
            return
        yield DepthBatch(depth=depth, times=tuple(times), fov=fov, relative=info.relative)


class DepthFromFile:
    """A run's depth when it comes from an exported file (Note [Depth products]): the engine
    reads it instead of running a model. One of the two kinds of
    :data:`sbsconv.plan.DepthSource`; ``reader_spec`` is the C++ reader's description."""

    temporal = False

    def __init__(self, path: str, spec: dict, info: DepthInfo, device: str) -> None:
        self.reader_spec = spec
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
             "sbsconv_version": _core.__version__, "source_video": os.path.abspath(input_path),
             "options": {k: (str(v) if isinstance(v, Fraction | os.PathLike) else v)
                         for k, v in options.to_dict().items()}}
    members = ",\n  ".join(f"{json.dumps(k)}: {json.dumps(v, default=str)}" for k, v in extra.items())
    spec: dict[str, Any] = {"path": path, "format": options.depth_format, "relative": relative,
                            "max_depth": float(options.max_depth or DEFAULT_MAX_DEPTH),
                            "half": options.depth_precision == "float16",
                            "fov_degrees": None if options.fov_degrees is None else float(options.fov_degrees),
                            "sidecar_extra": members}
    return {"depth_export": spec}


def record_screen_plane(sidecar: str | os.PathLike[str], planes: tuple[float, ...], *, relative: bool) -> None:
    """Adds convergence="subject"'s plane of every frame to a depth export's sidecar
    (``frames.screen_plane``: the convergence for relative depth, the screen distance in
    metres for metric; Note [Subject on the screen plane]), rewritten whole in place."""
    from sbsconv.files import write_whole

    side = _load_sidecar(Path(sidecar))
    frames = side.setdefault("frames", {})
    if len(planes) != len(frames.get("time", [])):
        raise InternalError(f"{len(planes)} screen planes for the {len(frames.get('time', []))} frames of {sidecar}")
    frames["screen_plane"] = [round(float(p), 6) for p in planes]
    side["screen_plane"] = ("per frame in frames.screen_plane: the subject's convergence (0..1)" if relative
                            else "per frame in frames.screen_plane: the subject's distance, metres (the screen)")
    write_whole(sidecar, json.dumps(side, indent=1).encode(), "write depth")
