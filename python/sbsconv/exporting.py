"""``sbsconv.export_depth()``: the depth of a video written as a product (Note [Depth products]
in cpp/sbsconv/pipeline/Engine.h), or a depth file converted into another depth format without
a model. The formats and the sidecar: Note [Depth files] (cpp/sbsconv/media/DepthFile.h);
reading them: :mod:`sbsconv.depthio`."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from sbsconv import plan as planning
from sbsconv._native import _core
from sbsconv.depthio import DEFAULT_MAX_DEPTH, depth_output_path, open_depth, sidecar_of
from sbsconv.engine import run_engine, warn_all
from sbsconv.errors import InputError, OptionError
from sbsconv.options import CALL_KEYWORDS, ConvertOptions, check_path

__all__ = ["DepthExportResult", "export_depth"]


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
    """Writes the depth of a video (``format``: gray16, gray8, rgb-packed, png16, exr, npy or colormap;
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
    input_path = check_path("input", input, "the path of a video or a depth file")
    output = check_path("output", output, "the path of the depth file to write")
    options = options.replace(depth_out=output,
                              depth_format=format if format is not None else options.depth_format)
    if os.path.abspath(input_path) == os.path.abspath(output):
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
    path = depth_output_path(options.depth_out, options.depth_format, input_path)
    # the run lock sits beside the depth
    plan = planning.build_plan(input_path, path, options, purpose="export")
    warn_all(input_path, plan.notes)  # before the work (Note [3D input])
    run = run_engine(plan.engine, Path(input_path).name, progress, on_progress)
    warn_all(input_path, run.warnings)
    seconds = time.perf_counter() - t0
    exported = run.depth_export
    return DepthExportResult(
        path=exported["path"] if exported else path,
        sidecar=exported["sidecar"] if exported else None,
        format=options.depth_format, frames=run.frames, seconds=seconds,
        fps=run.frames / seconds if seconds > 0 else 0.0, model=plan.depth_name,
        relative=plan.depth.kind != "metric", cuts=run.cuts, warnings=plan.notes + run.warnings)


def _convert_depth_file(input_path: str, options: ConvertOptions, t0: float) -> DepthExportResult:
    """Depth file -> depth file in another format, no model (the values as read)."""
    spec, info = open_depth(input_path, max_depth=options.max_depth)
    path = depth_output_path(options.depth_out, options.depth_format, input_path)
    side = info.sidecar or {}
    fps = Fraction(side.get("fps") or Fraction(info.fps).limit_denominator(1001) or 25)
    time_base = Fraction(1, 1000000) if not side.get("time_base") else Fraction(side["time_base"])
    reader = _core.DepthReader(_core.DepthSourceOptions(**spec))
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
                    extra = {"converted_from": os.path.abspath(input_path), "sbsconv_version": _core.__version__}
                    for key in ("model", "checkpoint", "options", "source_video"):
                        if key in side:
                            extra[key] = side[key]
                    members = ",\n  ".join(f"{json.dumps(k)}: {json.dumps(v, default=str)}" for k, v in extra.items())
                    writer = _core.DepthWriter(
                        _core.DepthExportOptions(
                            path=path, format=options.depth_format, relative=info.relative,
                            max_depth=float(options.max_depth or DEFAULT_MAX_DEPTH),
                            half=options.depth_precision == "float16",
                            fov_degrees=side.get("fov_degrees") if side.get("fov_source") == "given" else None,
                            sidecar_extra=members),
                        width=info.width, height=info.height, time_base=time_base, frame_rate=fps,
                        time_origin=float(side.get("source_start", 0.0)),
                        source_start=float(side.get("source_start", 0.0)))
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


