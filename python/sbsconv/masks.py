"""Subject masks: ``sbsconv.export_mask()`` writes the salient subject of every frame of a
video (U²-Net, :class:`sbsconv.models.MaskModel`) as a mask video with a JSON sidecar, and
:func:`read_masks` reads one back, checked against its video.

    sbsconv.export_mask("clip.mp4", "clip_mask.mkv")        # u2netp; clip_mask.mkv.json beside it

The file is a depth file of sbsconv's ``gray8`` format (8-bit grey FFV1 in Matroska, lossless,
values 0..1 over 0..255; Note [Depth files] in cpp/sbsconv/media/DepthFile.h) whose sidecar
says ``"product": "mask"``: every depth tool reads it, and any video tool shows it. Masks are temporally stable: each frame's mask is blended with the previous
output where the picture did not move (the stabiliser's motion-weighted EMA, Note [Depth
stabilisation], on the mask's values), and a scene cut starts afresh.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import torch

from sbsconv._native import _core
from sbsconv.errors import InputError, OptionError
from sbsconv.options import check_path

__all__ = ["MaskExportResult", "export_mask", "read_masks", "write_masks"]

# How much of the previous frame's mask a still pixel keeps (export_mask's default, and the
# engine's for convergence="subject" and mask_out).
MASK_SMOOTHING = 0.6
# The EMA decay of the subject's screen plane within a shot (Note [Subject on the screen plane]).
PLANE_SMOOTHING = 0.8
# The scene-cut detector decides a frame's cut two frames later (SceneCutDetector).
_CUT_LAG = 2
_MOTION_THRESHOLD = 0.08  # mean absolute RGB change (0..1) where the blending stops


@dataclass(frozen=True)
class MaskExportResult:
    path: str
    sidecar: str
    frames: int
    seconds: float
    fps: float  # frames per second of this call
    model: str
    cuts: tuple[int, ...]  # frames that start a new shot (the masks start afresh there)
    warnings: tuple[str, ...]


def mask_file_options(path: str, *, model: str, license: str | None, smoothing: float | None,
                      source: str | None) -> dict:
    """The writer options (``_core.DepthExportOptions``' fields) of a mask file, its sidecar
    marked ``product: mask``: the one maker for export_mask(), write_masks() and mask_out=."""
    extra = {"product": "mask", "model": model, "license": license, "smoothing": smoothing,
             "source_video": os.path.abspath(source) if source else None, "sbsconv_version": _core.__version__}
    members = ",\n  ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in extra.items())
    return {"path": path, "format": "gray8", "relative": True, "max_depth": 1.0, "half": False,
            "fov_degrees": None, "sidecar_extra": members}


def mask_output_path(input: str | os.PathLike[str], output: str | os.PathLike[str] | None) -> str:
    if output is None:
        p = Path(input)
        return str(p.with_name(p.stem + "_mask.mkv"))
    out = check_path("output", output, "the path of the mask video to write")
    if Path(out).suffix.lower() != ".mkv":
        raise OptionError(f"a mask video is written as 8-bit FFV1 in Matroska: name it .mkv, not {out!r}")
    return out


def export_mask(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    model: str | os.PathLike[str] = "u2netp",
    checkpoint: str | os.PathLike[str] | None = None,
    device: str = "auto",
    precision: str = "auto",
    input_size: int | None = None,
    batch_size: int | None = None,
    start: float | None = None,
    duration: float | None = None,
    smoothing: float = MASK_SMOOTHING,
) -> MaskExportResult:
    """Writes the salient subject's mask of every frame of ``input`` (float in [0, 1], 1 on the
    subject) to ``output`` (default ``<input>_mask.mkv``) with its sidecar.

    ``model``: a mask model's registry name (``u2netp``, ``u2net``), path or repository id;
    ``input_size``: the side frames are resized to for it (default: the reference's 320).
    ``smoothing`` (0..0.95): how much of the previous frame's mask a still pixel keeps (0: each
    frame on its own). ``start``/``duration`` (seconds) take a part of the video.
    """
    from sbsconv import media, models

    t0 = time.perf_counter()
    input_path = check_path("input", input, "the path of a video")
    if isinstance(smoothing, bool) or not isinstance(smoothing, int | float) or not 0 <= smoothing <= 0.95:
        raise OptionError(f"smoothing must be a number within 0..0.95, got {smoothing!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise OptionError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    path = mask_output_path(input_path, output)
    if os.path.abspath(path) == os.path.abspath(input_path):
        raise OptionError("the mask would overwrite its input video; choose another output")
    info = media.probe(input_path)
    mask_model = models.load(model, checkpoint=checkpoint, device=device, precision=precision,
                             input_size=input_size)
    if not isinstance(mask_model, models.MaskModel):
        raise OptionError(f"model={os.fspath(model)!r} estimates depth, not subject masks: give a mask model"
                          " (u2netp, u2net)")
    batch = batch_size or int(mask_model._core.preferred_batch(mask_model.device.type != "cpu"))
    detector = _core.SceneCutDetector(sensitivity=0.5, min_scene_length=8)
    stabiliser = _core.DepthStabilizer(relative=False, align=False, alpha=float(smoothing),
                                       motion_threshold=_MOTION_THRESHOLD)
    file_options = mask_file_options(path, model=mask_model.name, license=mask_model.license,
                                     smoothing=float(smoothing), source=input_path)
    writer = None
    pending: list[tuple[torch.Tensor, torch.Tensor, list[int], list[float]]] = []  # frames, masks, pts, times
    cuts: list[int] = []
    done = pushed = 0

    def write_through(limit: int) -> None:
        """Stabilises and writes the pending frames whose cut decision is final (index < limit)."""
        nonlocal done
        while pending and done + len(pending[0][2]) <= limit:
            frames, masks, pts, times = pending.pop(0)
            starts = [done + k == 0 or (done + k) in cuts for k in range(len(pts))]
            writer.write(stabiliser.process(masks, frames, starts), pts, times)
            done += len(pts)

    try:
        for fb in media.read_frames(input_path, batch_size=batch, start=start, duration=duration,
                                    device=mask_model.device):
            frames = fb.data.contiguous()
            if writer is None:
                writer = _core.DepthWriter(
                    _core.DepthExportOptions(**file_options),
                    width=int(frames.shape[3]), height=int(frames.shape[2]), time_base=fb.time_base,
                    frame_rate=info.fps, time_origin=float(fb.pts[0]), source_start=float(info.start_time))
            masks = mask_model.masks(frames)
            cuts += detector.push(frames)  # indices from the first frame pushed
            pushed += len(fb)
            pending.append((frames, masks, list(fb.pts_ticks), [float(t) - info.start_time for t in fb.pts.tolist()]))
            write_through(pushed - _CUT_LAG)
        if writer is None:
            raise InputError("the video holds no frames in the chosen window", path=input_path, stage="decode")
        cuts += detector.flush()
        write_through(pushed)
        summary = writer.finish(sorted(set(cuts)))
    finally:
        writer = None  # an unfinished writer removes what it wrote (its destructor)
    seconds = time.perf_counter() - t0
    return MaskExportResult(path=summary["path"], sidecar=summary["sidecar"], frames=done, seconds=seconds,
                            fps=done / seconds if seconds > 0 else 0.0, model=mask_model.name,
                            cuts=tuple(sorted(set(cuts))), warnings=tuple(summary["warnings"]))


def _open_masks(path: str | os.PathLike[str], video: str | os.PathLike[str] | None,
                tolerance: float = 0.5) -> tuple[dict, object]:
    """A mask file's reader spec and description, checked to be masks and, given ``video``,
    to be of its size, frame rate and length (InputError saying which differs)."""
    from sbsconv import media
    from sbsconv.depthio import open_depth

    try:
        spec, info = open_depth(path)
    except OptionError as exc:  # (a video without a sidecar: read as depth it would need max_depth)
        raise InputError("not a mask file (no sidecar says product: mask); make one with export_mask() or "
                         "write_masks()", path=os.fspath(path), stage="read mask") from exc
    side = info.sidecar or {}
    if side.get("product") != "mask":
        raise InputError("not a mask file (its sidecar does not say product: mask); make one with export_mask()"
                         " or write_masks()", path=os.fspath(path), stage="read mask")
    if video is not None:
        v = media.probe(video)
        if (info.width, info.height) != (v.width, v.height):
            raise InputError(f"the masks are {info.width}x{info.height}, the video {v.width}x{v.height}",
                             path=os.fspath(path), stage="read mask")
        if v.fps and info.fps and abs(float(info.fps) - float(v.fps)) > 0.01 * float(v.fps):
            raise InputError(f"the masks run at {float(info.fps):.3f} frames/s, the video at {float(v.fps):.3f}",
                             path=os.fspath(path), stage="read mask")
        if v.num_frames and info.frame_count >= 0 and abs(info.frame_count - v.num_frames) > tolerance:
            raise InputError(f"the masks hold {info.frame_count} frames, the video {v.num_frames}",
                             path=os.fspath(path), stage="read mask")
    return spec, info


def mask_source(path: str | os.PathLike[str], video: str | os.PathLike[str]) -> dict:
    """The engine's reader spec (``_core.DepthSourceOptions``) of a mask file checked against
    its video (convert(..., masks=))."""
    spec, _ = _open_masks(path, video)
    return spec


def read_masks(path: str | os.PathLike[str], video: str | os.PathLike[str] | None = None,
               *, tolerance: float = 0.5) -> torch.Tensor:
    """A mask file's masks, float ``[N,1,H,W]`` in [0, 1]. Given its ``video``, the masks must
    be of the video's size, frame rate and length (within ``tolerance`` frames): otherwise an
    InputError says which differs."""
    spec, _ = _open_masks(path, video, tolerance)
    reader = _core.DepthReader(_core.DepthSourceOptions(**spec))
    out = []
    while True:
        depth, times, _ = reader.read(64)
        if depth is None or not times:
            break
        out.append(depth)
    if not out:
        raise InputError("the mask file holds no frames", path=os.fspath(path), stage="read mask")
    return torch.cat(out).clamp_(0.0, 1.0)


def write_masks(masks: torch.Tensor, path: str | os.PathLike[str], *, fps: float | Fraction,
                source: str | os.PathLike[str] | None = None, model: str = "") -> str:
    """Writes your own subject masks (float ``[N,1,H,W]`` in [0, 1], frame k at time k / fps;
    from any segmentation model) as a mask file that ``convert(..., convergence="subject",
    masks=path)`` and :func:`read_masks` take. ``source``: the video they belong to (its start
    time becomes the file's time zero). Returns the sidecar's path."""
    from sbsconv import media

    if not isinstance(masks, torch.Tensor) or masks.dim() != 4 or masks.shape[1] != 1 or masks.shape[0] == 0 \
            or not masks.is_floating_point():
        raise OptionError(f"masks must be a float tensor [N, 1, H, W], got {getattr(masks, 'shape', masks)!r}")
    out = mask_output_path("", path)
    rate = Fraction(fps).limit_denominator(1001) if not isinstance(fps, Fraction) else fps
    if rate <= 0:
        raise OptionError(f"fps must be > 0, got {fps!r}")
    start = media.probe(source).start_time if source is not None else 0.0
    n, _, h, w = masks.shape
    time_base = 1 / (rate * 1000)  # a thousand ticks a frame
    writer = _core.DepthWriter(
        _core.DepthExportOptions(**mask_file_options(out, model=model or "given", license=None, smoothing=None,
                                                     source=os.fspath(source) if source else None)),
        width=int(w), height=int(h), time_base=time_base, frame_rate=rate, time_origin=float(start),
        source_start=float(start))
    ticks = [round((start + k / rate) / time_base) for k in range(n)]
    writer.write(masks.detach().float().clamp(0, 1).cpu(), ticks, [float(k / rate) for k in range(n)])
    return writer.finish([])["sidecar"]
