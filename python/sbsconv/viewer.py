"""Depth in 3D: a clip's depth as a moving, coloured point cloud in the browser, before
rendering a film from it. One self-contained HTML page (plain WebGL, no downloads): orbit by
dragging, zoom with the wheel, play/pause and a frame slider, the camera's path and frustum
when the depth file holds the camera's poses (Depth Anything 3's any-view models), the
subject mask on/off (a mask file from export_mask() or mask_out=), and the points on edges
between depth layers removed (on by default: they are the smeared pixels between a
foreground and its background, which would float in the air; a frame where most points
would be removed is noise, not layers, and keeps them).

    sbsconv.write_depth_view("clip.mp4", "clip_depth.mkv", "clip_depth.html")
    sbsconv view-depth clip.mp4 clip_depth.mkv                  # writes it and opens a browser

The web app (``sbsconv ui``) shows the same page for a depth export.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sbsconv._native import _core
from sbsconv.errors import InputError, OptionError
from sbsconv.options import check_path

__all__ = ["depth_view_html", "write_depth_view"]

_ASSET = Path(__file__).with_name("assets") / "depth_viewer.js"
EDGE_JUMP = 0.06  # a point whose 3x3 neighbourhood spans more than this share of its depth is on an edge
EDGE_MAJORITY = 0.5  # a frame with more of its points on edges than this has no layers: none are hidden
RELATIVE_NEAREST = 0.05  # relative depth d (1 = nearest) is shown at distance 1 / max(d, this)


def _frames_matched(video: str, times: list[float], size: tuple[int, int]) -> torch.Tensor:
    """The video's frames nearest each depth time (seconds from the source's start), at `size`."""
    from sbsconv import media

    info = media.probe(video)
    decoded, pts = [], []
    first = max(0.0, times[0] - 0.5)
    for batch in media.read_frames(video, batch_size=16, width=size[0], height=size[1],
                                   start=first if first > 0 else None):
        decoded.append(batch.data.cpu())
        pts += [float(t) - info.start_time for t in batch.pts.tolist()]
        if pts and pts[-1] > times[-1] + 1.0:
            break
    if not decoded:
        raise InputError("the video holds no frames", path=video, stage="view depth")
    frames = torch.cat(decoded)
    at = np.asarray(pts)
    return frames[[int(np.abs(at - t).argmin()) for t in times]]


def _read(path: str, limit: int, every: int) -> tuple[torch.Tensor, list[float], dict, object]:
    from sbsconv.depthio import open_depth

    spec, info = open_depth(path)
    reader = _core.DepthReader(_core.DepthSourceOptions(**spec))
    out, times, k = [], [], 0
    while len(out) < limit:
        depth, t, _ = reader.read(32)
        if depth is None or not t:
            break
        for i in range(len(t)):
            if k % every == 0 and len(out) < limit:
                out.append(depth[i : i + 1])
                times.append(float(t[i]))
            k += 1
    if not out:
        raise InputError("the depth file holds no frames", path=path, stage="view depth")
    return torch.cat(out), times, info.sidecar or {}, info


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def depth_view_html(
    video: str | os.PathLike[str],
    depth: str | os.PathLike[str],
    *,
    masks: str | os.PathLike[str] | None = None,
    points_wide: int = 160,
    max_frames: int = 120,
    every: int = 1,
    title: str | None = None,
) -> str:
    """The viewer page for ``video`` and its depth file ``depth`` (any sbsconv depth format),
    optionally with a mask file ``masks``: ``points_wide`` points across each frame (the rows
    follow the frame's aspect), at most ``max_frames`` frames, every ``every``-th one."""
    for name, value, low, high in (("points_wide", points_wide, 8, 1024), ("max_frames", max_frames, 1, 2000),
                                   ("every", every, 1, 10_000)):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise OptionError(f"{name} must be an integer within {low}..{high}, got {value!r}")
    video = check_path("video", video, "the path of a video")
    depth_path = check_path("depth", depth, "the path of a depth file")
    values, times, side, info = _read(depth_path, max_frames, every)
    n = values.shape[0]
    w = points_wide
    h = max(2, round(w * info.height / max(info.width, 1)))
    grid = F.interpolate(values.float(), size=(h, w), mode="area")[:, 0].numpy()
    if info.relative:
        z = 1.0 / np.maximum(grid, RELATIVE_NEAREST)
    else:
        z = np.where(np.isfinite(grid) & (grid > 0), grid, np.nan)
    finite = z[np.isfinite(z)]
    if finite.size == 0:
        raise InputError("the depth file holds no usable depth", path=depth_path, stage="view depth")
    near, far = float(max(finite.min(), 1e-3)), float(finite.max())
    far = max(far, near * 1.01)
    z = np.nan_to_num(z, nan=far, posinf=far)
    codes = np.round(np.log(np.clip(z, near, far) / near) / math.log(far / near) * 65535).astype(np.uint16)
    # edges between depth layers: a neighbourhood that spans a large share of the depth
    t = torch.from_numpy(z)[:, None]
    span = F.max_pool2d(t, 3, 1, 1) + F.max_pool2d(-t, 3, 1, 1)
    flags = (span[:, 0].numpy() > EDGE_JUMP * z).astype(np.uint8)
    # Edges are the few points between layers. A frame where most points "jump" is noise (a
    # flat frame's depth stretched to the full range, a model that failed on it): it has no
    # layers to separate, and hiding its edges would leave the frame empty. Show it as it is.
    flags[flags.reshape(n, -1).mean(1) > EDGE_MAJORITY] = 0
    has_mask = masks is not None
    if has_mask:
        from sbsconv.masks import read_masks

        m = read_masks(masks)
        if m.shape[-2:] != (info.height, info.width):
            raise InputError(f"the masks are {m.shape[-1]}x{m.shape[-2]}, the depth {info.width}x{info.height}",
                             path=os.fspath(masks), stage="view depth")
        picked = m[[min(int(round(tt * float(info.fps))), m.shape[0] - 1) for tt in times]] if info.fps else m[:n]
        subject = F.interpolate(picked.float(), size=(h, w), mode="area")[:, 0].numpy() >= 0.5
        flags = flags | (subject.astype(np.uint8) << 1)
    rgb = _frames_matched(video, times, (w, h)).permute(0, 2, 3, 1).numpy()
    frames = side.get("frames") or {}
    poses = frames.get("camera_to_world")
    poses = [list(map(float, p)) for p in poses[: n * every : every]] if poses and len(poses) >= n else None
    fov = frames.get("fov") or []
    fov_degrees = float(side.get("fov_degrees") or (fov[0] if fov else 60.0))
    # orbit about the middle distance of the first frame
    focus = float(np.median(z[0]))
    rate = float(info.fps or 25.0) / every
    data = {"grid": [w, h], "size": [info.width, info.height], "frames": n, "fov_degrees": fov_degrees,
            "near": near, "far": far, "focus": focus, "fps": min(rate, 60.0), "times": times,
            "has_mask": has_mask, "poses": poses, "relative": bool(info.relative),
            "depth": _b64(codes), "rgb": _b64(rgb.astype(np.uint8)), "flags": _b64(flags)}
    name = title or f"{Path(video).name}: depth in 3D"
    script = _ASSET.read_text()
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(name)}</title>
<style>
 body {{ margin: 0; background: #101217; color: #dde; font: 14px system-ui, sans-serif; }}
 #sbs-depth-canvas {{ width: 100%; max-width: 1280px; aspect-ratio: 16 / 9; display: block; cursor: grab; }}
 .bar {{ display: flex; gap: 14px; align-items: center; padding: 8px 10px; flex-wrap: wrap; }}
 input[type=range] {{ flex: 1; min-width: 160px; }}
</style></head><body>
<canvas id="sbs-depth-canvas" width="1280" height="720"></canvas>
<div class="bar">
 <button id="sbs-depth-play">Pause</button>
 <input id="sbs-depth-frame" type="range" min="0" value="0">
 <label><input id="sbs-depth-edges" type="checkbox"> edges between layers</label>
 <label><input id="sbs-depth-mask" type="checkbox"> subject mask</label>
 <label><input id="sbs-depth-path" type="checkbox"> camera path</label>
 <span id="sbs-depth-status"></span>
</div>
<div class="bar">{html.escape(name)}: {n} frames, {"relative depth (shown at 1/depth)" if info.relative else "metres"};
 drag to orbit, wheel to zoom.</div>
<script type="application/json" id="sbs-depth-data">{json.dumps(data)}</script>
<script>{script}</script>
</body></html>
"""


def write_depth_view(
    video: str | os.PathLike[str],
    depth: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    **options,
) -> str:
    """Writes :func:`depth_view_html`'s page to ``output`` (default: a new file in the temporary
    folder) and returns its path."""
    page = depth_view_html(video, depth, **options)
    if output is None:
        handle, out = tempfile.mkstemp(prefix="sbsconv_depth_", suffix=".html")
        os.close(handle)
    else:
        out = os.fspath(output)
        if Path(out).suffix.lower() not in (".html", ".htm"):
            raise OptionError(f"the viewer is a web page: name it .html, not {out!r}")
    from sbsconv.files import write_whole

    return write_whole(out, page.encode(), "view depth")
