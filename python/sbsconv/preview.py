"""Previews for notebooks: a few frames, their depth, the 3D rendering and an anaglyph,
shown inline (``_repr_png_``/``_repr_html_``) to tune settings before a long conversion.

    sbsconv.preview("clip.mp4", at=[5, 30], divergence=2.5)
    sbsconv.preview("clip.mp4", at=5, point_cloud=True, histogram=True)  # the depth in 3D
    sbsconv.compare("clip.mp4", at=10, variants=[{"model": "depth-anything-v2-small"},
                                                 {"model": "depth-anything-v2-base"}])
"""

from __future__ import annotations

import base64
import html
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from sbsconv import media, pointcloud, stereo, temporal
from sbsconv._native import _core, flush_log
from sbsconv.errors import OptionError
from sbsconv.options import CALL_KEYWORDS, ConvertOptions, check_path, numeric_convergence

__all__ = ["Preview", "compare", "preview"]

ROW_HEIGHT = 270  # pixels of each picture in the composed image
GAP = 8
BACKGROUND = 32

DEFAULT_FOV_DEGREES = 60.0  # the point cloud's field of view when option and model give none
POINT_CLOUD_SIDE = 640  # the point-cloud view's longer side at most (pixels subsampled to it)

_MODELS: dict[tuple, object] = {}  # loaded models, reused by later previews in a session
_KEEP_MODELS = 2  # the models kept loaded (compare() against one other)


@dataclass
class Panel:
    title: str
    image: torch.Tensor  # uint8 [3,H,W] on the CPU


@dataclass
class Preview:
    """Rows of titled pictures, displayed inline in Jupyter and savable as PNG or HTML."""

    rows: list[list[Panel]]
    captions: list[str] = field(default_factory=list)

    def image(self) -> torch.Tensor:
        """The composed picture, uint8 [3,H,W]."""
        rendered = []
        for row in self.rows:
            pictures = []
            for panel in row:
                _, h, w = panel.image.shape
                width = max(1, round(w * ROW_HEIGHT / h))
                scaled = F.interpolate(panel.image[None].float(), (ROW_HEIGHT, width), mode="area")
                pictures.append(scaled[0].round().clamp(0, 255).byte())
                pictures.append(torch.full((3, ROW_HEIGHT, GAP), BACKGROUND, dtype=torch.uint8))
            rendered.append(torch.cat(pictures[:-1], 2))
        width = max(r.shape[2] for r in rendered)
        padded = []
        for r in rendered:
            pad = torch.full((3, ROW_HEIGHT, width - r.shape[2]), BACKGROUND, dtype=torch.uint8)
            padded.append(torch.cat([r, pad], 2))
            padded.append(torch.full((3, GAP, width), BACKGROUND, dtype=torch.uint8))
        return torch.cat(padded[:-1], 1)

    def png(self) -> bytes:
        return bytes(_core.encode_png(self.image()))

    def _repr_png_(self) -> bytes:
        return self.png()

    def _repr_html_(self) -> str:
        data = base64.b64encode(self.png()).decode()
        titles = "".join(
            f"<tr><td>{html.escape(caption)}</td><td>{' | '.join(html.escape(p.title) for p in row)}</td></tr>"
            for caption, row in zip(self.captions or [""] * len(self.rows), self.rows, strict=False))
        return (f'<figure style="margin:0"><img src="data:image/png;base64,{data}" style="max-width:100%"/>'
                f'<table style="font-size:smaller">{titles}</table></figure>')

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Writes the preview as PNG (or as a self-contained HTML page for a .html path)."""
        path = Path(path)
        if path.suffix.lower() in (".html", ".htm"):
            path.write_text(self._repr_html_())
        else:
            path.write_bytes(self.png())
        return path


def _load(model, checkpoint, device, precision, input_size, temporal_mode):
    from sbsconv import models

    key = (str(model), str(checkpoint), device, precision, input_size, temporal_mode)
    if key not in _MODELS:
        loaded = models.load(model, checkpoint=checkpoint, device=device, precision=precision,
                             input_size=input_size, temporal_mode=temporal_mode)
        while len(_MODELS) >= _KEEP_MODELS:  # a long session (the web app) does not pile models up
            _MODELS.pop(next(iter(_MODELS)))
        _MODELS[key] = loaded
    _MODELS[key] = _MODELS.pop(key)  # the most recently used last
    return _MODELS[key]


def _subject_plane(o: ConvertOptions, frames: torch.Tensor, stable: torch.Tensor, kind: str,
                   convergence: float, screen_distance: float) -> tuple[float, float]:
    """convergence="subject" for one frame: the subject's plane as the engine finds it (Note
    [Subject on the screen plane]): the convergence, or the screen distance for metric depth."""
    from sbsconv import masks as masking, models

    mask_model = _load(o.mask_model, None, str(stable.device), "auto", None, "windowed")
    if not isinstance(mask_model, models.MaskModel):
        raise OptionError(f"mask_model={o.mask_model!r} estimates depth, not subject masks: give a mask model"
                          " (u2netp, u2net)")
    relative = kind != "metric"
    plane = _core.SubjectPlane(relative=relative, smoothing=masking.PLANE_SMOOTHING,
                               fallback=convergence if relative else 1.0 / screen_distance)
    value = float(plane.process(stable.float(), mask_model.masks(frames), [True] * len(frames))[0])
    return (value, screen_distance) if relative else (convergence, 1.0 / value)


def _frame_at(video: str, seconds: float) -> torch.Tensor:
    for batch in media.read_frames(video, start=float(seconds), duration=5.0, batch_size=1):
        return batch.data
    raise OptionError(f"{video} has no frame at {seconds:g} s")


def _check_options(options: ConvertOptions | None, overrides: dict) -> ConvertOptions:
    """convert()'s options for a preview, checked; convert()'s progress keywords are taken
    and ignored (a preview has no progress bar)."""
    ConvertOptions.check_names(overrides, also=CALL_KEYWORDS)
    return ConvertOptions.merged(options, {k: v for k, v in overrides.items() if k not in CALL_KEYWORDS})


def _times(video: str, at) -> list[float]:
    if at is None:
        info = media.probe(video)
        return [round((info.duration or 0.0) / 2, 3)]
    values = list(at) if isinstance(at, list | tuple) else [at]
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
            raise OptionError(f"at must be seconds >= 0 (one or a list), got {at!r}")
    return [float(v) for v in values]


def _depth_from_file(o: ConvertOptions, video: str, seconds: float, frame: torch.Tensor):
    """The depth of the frame at ``seconds`` in the exported depth file of ``o.depth`` (the
    nearest stored frame), as convert(depth=...) takes it: used as stored (it was stabilised
    when exported), at the frame's size. Returns (name, depth [1,1,H,W], kind, fov)."""
    from sbsconv import depthio

    source = depthio.depth_source(o, media.probe(video))
    best, best_gap, fov = None, math.inf, None
    for batch in depthio.read_depth(source.source, max_depth=o.max_depth):
        for i, t in enumerate(batch.times):
            gap = abs(t - seconds)
            if gap < best_gap:
                best, best_gap = batch.depth[i:i + 1], gap
                fov = None if batch.fov is None else float(batch.fov.reshape(-1)[i])
        if batch.times[-1] >= seconds:
            break
    if best is None:
        raise OptionError(f"{source.source} holds no depth for {seconds:g} s")
    _, _, height, width = frame.shape
    if best.shape[-2:] != (height, width):
        best = torch.nn.functional.interpolate(best, size=(height, width), mode="bilinear", align_corners=False)
    return source.name, best.float(), source.kind, fov


def _render(frame: torch.Tensor, o: ConvertOptions, keep: dict | None = None, *, video: str = "",
            seconds: float = 0.0):
    """Depth, packed layout and anaglyph of one frame with convert() options `o` (the depth:
    the model's, or with ``o.depth`` the exported file's at ``seconds`` of ``video``); `keep`,
    if given, also receives the depth itself, its kind and the field of view (see
    _depth_panels). Returns the depth's name, then the three pictures."""
    if o.depth is not None:
        name, stable, file_kind, estimated = _depth_from_file(o, video, seconds, frame)
        kind = "metric" if file_kind == "metric" else "relative"
        device = torch.device("cpu") if o.device in ("auto", "") else torch.device(o.device)
        stable = stable.to(device)
        estimate_fov = None if estimated is None else torch.tensor([estimated])
    else:
        model = _load(o.model, o.checkpoint, o.device, o.precision, o.input_size, o.temporal_mode)
        model._core.set_field_of_view(None if o.fov_degrees is None else float(o.fov_degrees))
        # A video model sees the frame as a sequence of its own (a still shot).
        estimate = model.estimate_clip(frame.to(model.device))
        depth = model.pipeline_depth(estimate.depth.float())  # Depth Anything 3's depth: its inverse
        kind = "metric" if model.kind == "metric" else "relative"
        stabilizer = temporal.DepthStabilizer(kind=kind, percentiles=o.percentiles)
        stable = stabilizer.process(depth)
        name, device, estimate_fov = model.name, model.device, estimate.fov_degrees
    if kind == "metric":
        inverse = stable.clamp_min(1e-3).reciprocal()
        shown = (inverse - inverse.amin()) / (inverse.amax() - inverse.amin()).clamp_min(1e-6)
        fov = o.fov_degrees if o.fov_degrees is not None else estimate_fov
    else:
        shown, fov = stable, None
    frames = frame.to(device)
    convergence, screen_distance = numeric_convergence(o), o.screen_distance
    if o.convergence == "subject":
        convergence, screen_distance = _subject_plane(o, frames, stable, kind, convergence, screen_distance)
    common = {
        "depth": stable, "depth_kind": kind, "divergence": o.divergence, "convergence": convergence,
        "max_shift": o.max_shift, "ipd_mm": o.ipd_mm, "fov_degrees": fov,
        "screen_distance": screen_distance, "edge_dilation": o.edge_dilation,
        "synthetic_view": o.synthetic_view,
    }
    packed = stereo.render(frames, layout=o.layout, eye_size=o.eye_size, keep_aspect=o.keep_aspect, **common)
    anaglyph = stereo.render(frames, layout="anaglyph", **common)
    if keep is not None:
        # the field of view: the option, else the model's estimate, else 60 degrees
        fov = o.fov_degrees
        if fov is None and estimate_fov is not None:
            fov = float(estimate_fov.reshape(-1)[0])
        keep.update(depth=stable[0, 0].cpu(), kind=kind,
                    fov=DEFAULT_FOV_DEGREES if fov is None else fov)
    return name, _core.colorize_depth(shown).cpu()[0], packed.cpu()[0], anaglyph.cpu()[0]


def _depth_panels(frame: torch.Tensor, kept: dict, point_cloud: bool,
                  histogram: bool) -> list[Panel]:
    """The optional panels showing the depth as a product: the point cloud seen from the side
    and the distribution of the depth values (`kept`: what _render keeps)."""
    depth, relative, fov = kept["depth"], kept["kind"] == "relative", float(kept["fov"])
    panels = []
    if point_cloud:
        _, _, height, width = frame.shape
        stride = max(1, math.ceil(max(height, width) / POINT_CLOUD_SIDE))
        cloud = pointcloud.point_cloud(frame[0], depth, fov, relative=relative,
                                       scale=1.0 if relative else None, stride=stride)
        view = pointcloud.render_point_cloud(cloud, width=max(1, width // stride),
                                             height=max(1, height // stride))
        unit = "relative depth at scale=1.0: nearest 1 m" if relative else "metric depth"
        panels.append(Panel(f"point cloud ({unit}, fov {fov:.3g}°)",
                            torch.from_numpy(view).permute(2, 0, 1).contiguous()))
    if histogram:
        chart = pointcloud.depth_histogram(depth, relative=relative)
        finite = depth[torch.isfinite(depth)]
        if relative:
            span = "relative inverse depth 0..1, near at the right"
        elif finite.numel():
            span = f"{float(finite.min()):.3g}..{float(finite.max()):.3g} m, near at the left"
        else:
            span = "no finite depth"
        panels.append(Panel(f"depth histogram ({span})",
                            torch.from_numpy(chart).permute(2, 0, 1).contiguous()))
    return panels


def preview(video: str | os.PathLike[str], at=None, options: ConvertOptions | None = None, *,
            point_cloud: bool = False, histogram: bool = False, **overrides) -> Preview:
    """For each time in ``at`` (seconds, one or a list; default the middle): the frame, its
    depth (colour-mapped, near is bright), the 3D frame in the chosen ``layout`` and a
    red-cyan anaglyph. Takes :func:`sbsconv.convert`'s options, as a
    :class:`~sbsconv.ConvertOptions` and/or keywords (model, divergence, ...).

    ``point_cloud=True`` adds the frame as a point cloud seen from the side (metric depth as
    is; relative depth at scale 1.0, the nearest points 1 m away; the field of view is the
    ``fov_degrees`` option, else the model's estimate, else 60 degrees) and
    ``histogram=True`` the distribution of the depth values (see
    :mod:`sbsconv.pointcloud`)."""
    video = check_path("video", video, "the path of a video")
    for name, value in (("point_cloud", point_cloud), ("histogram", histogram)):
        if not isinstance(value, bool):
            raise OptionError(f"{name} must be True or False, got {value!r}")
    o = _check_options(options, overrides)
    rows, captions = [], []
    try:
        for t in _times(video, at):
            frame = _frame_at(video, t)
            kept: dict = {}
            name, depth, packed, anaglyph = _render(frame, o, kept, video=video, seconds=t)
            rows.append([Panel(f"frame {t:g} s", frame[0].cpu()), Panel(f"depth ({name})", depth),
                         Panel(o.layout, packed), Panel("anaglyph", anaglyph)])
            rows[-1] += _depth_panels(frame.cpu(), kept, point_cloud, histogram)
            captions.append(f"{Path(video).name} at {t:g} s: divergence {o.divergence}, "
                            f"convergence {o.convergence}")
    finally:
        flush_log()
    return Preview(rows, captions)


def compare(video: str | os.PathLike[str], at=None, variants: list[dict] | None = None,
            options: ConvertOptions | None = None, **overrides) -> Preview:
    """Several models or settings side by side: for each time, the frame, then each
    variant's depth and anaglyph. Each variant is a dict of :func:`sbsconv.convert` options
    applied over the common ones (``options`` and/or keywords)."""
    video = check_path("video", video, "the path of a video")
    if not variants or not all(isinstance(v, dict) for v in variants):
        raise OptionError("variants must be a non-empty list of option dicts")
    base = _check_options(options, overrides)
    merged = [_check_options(base, v) for v in variants]
    rows, captions = [], []
    try:
        for t in _times(video, at):
            frame = _frame_at(video, t)
            row = [Panel(f"frame {t:g} s", frame[0].cpu())]
            for i, (variant, o) in enumerate(zip(variants, merged, strict=True)):
                _, depth, _, anaglyph = _render(frame, o, video=video, seconds=t)
                label = ", ".join(f"{k}={v}" for k, v in variant.items()) or f"variant {i + 1}"
                row += [Panel(f"{label}: depth", depth), Panel(f"{label}: anaglyph", anaglyph)]
            rows.append(row)
            captions.append(f"{Path(video).name} at {t:g} s")
    finally:
        flush_log()
    return Preview(rows, captions)
