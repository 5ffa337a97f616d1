"""Stereo synthesis: depth to disparity, occlusion-correct eye rendering, headset layouts.

    packed = sbsconv.stereo.render(frames, depth=depth, layout="full-sbs")

``frames``: uint8 RGB ``[N,3,H,W]``; ``depth``: float ``[N,1,H,W]`` -- relative inverse depth
normalised to [0, 1] (1 = nearest), or metres with ``depth_kind="metric"``; or ``disparity``
in pixels directly (a point at x in the left view is at x - d in the right view). Everything
runs on the frames' device; on the CPU a native multi-threaded kernel renders the eyes.
See Note [Occlusion-correct eye rendering] in cpp/sbsconv/stereo/Warp.h for the method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from sbsconv._native import _core
from sbsconv.errors import OptionError

__all__ = ["LAYOUTS", "EYE_SIZE_PRESETS", "StereoResult", "disparity_from_depth", "eye_size_for", "render"]

# The vocabulary of layouts, eye sizes and defaults is the options' (what a user may ask for):
# sbsconv.options, re-exported here for the rendering code and its callers.
from sbsconv.options import (  # noqa: E402
    DEFAULT_CONVERGENCE,
    DEFAULT_DIVERGENCE,
    DEFAULT_FOV_DEGREES,
    DEFAULT_IPD_MM,
    DEFAULT_SCREEN_DISTANCE,
    EYE_SIZE_PRESETS,
    HEADSET_LAYOUTS,
    LAYOUTS,
    eye_size_for,
)


@dataclass(frozen=True)
class StereoResult:
    """The packed frames (None for ``layout="separate"``), each eye, and the masks of the
    pixels each eye filled from the background side (bool ``[N,1,H,W]``)."""

    packed: torch.Tensor | None
    left: torch.Tensor
    right: torch.Tensor
    left_holes: torch.Tensor
    right_holes: torch.Tensor


def _number(value, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise OptionError(f"{name} must be a number, got {value!r}")
    if not low <= value <= high:
        raise OptionError(f"{name} must be within {low:g}..{high:g}, got {value!r}")
    return float(value)


def disparity_from_depth(
    depth: torch.Tensor,
    *,
    depth_kind: str = "relative",
    eye_width: int | None = None,
    divergence: float = DEFAULT_DIVERGENCE,
    convergence: float = DEFAULT_CONVERGENCE,
    max_shift: float | None = None,
    ipd_mm: float = DEFAULT_IPD_MM,
    fov_degrees: float | torch.Tensor | None = None,
    screen_distance: float = DEFAULT_SCREEN_DISTANCE,
) -> torch.Tensor:
    """Depth ``[N,1,H,W]`` -> disparity in pixels ``[N,1,H,W]``.

    Relative (inverse depth in [0,1], 1 = nearest): ``d = m * (depth - convergence)`` with
    ``m = divergence`` percent of the eye width (or ``max_shift`` pixels); convergence 0
    puts everything in front of the screen, 1 everything behind it.
    Metric (metres): ``d = f * ipd * (1/Z - 1/screen_distance)`` with the focal length
    ``f = (W/2) / tan(fov/2)`` pixels from the horizontal field of view (per frame or one).
    """
    if not isinstance(depth, torch.Tensor) or depth.dim() != 4 or depth.shape[1] != 1:
        raise OptionError("depth must be a tensor [N, 1, H, W]")
    width = int(eye_width or depth.shape[-1])
    if depth_kind == "relative":
        _number(convergence, "convergence", 0.0, 1.0)
        if max_shift is not None:
            _number(max_shift, "max_shift", 0.0, 10_000.0)
        else:
            _number(divergence, "divergence", 0.0, 20.0)
        return _core.disparity_from_relative(depth, width, float(divergence), float(convergence),
                                             None if max_shift is None else float(max_shift))
    if depth_kind == "metric":
        _number(ipd_mm, "ipd_mm", 1.0, 999.0)
        _number(screen_distance, "screen_distance", 1e-3, 1e6)
        if fov_degrees is None:
            fov = torch.tensor([DEFAULT_FOV_DEGREES])
        elif isinstance(fov_degrees, torch.Tensor):
            fov = fov_degrees.detach().float().flatten()
        else:
            fov = torch.tensor([_number(fov_degrees, "fov_degrees", 1.0, 179.0)])
        return _core.disparity_from_metric(depth, width, float(ipd_mm) / 1000.0, fov, float(screen_distance))
    raise OptionError(f"depth_kind must be 'relative' or 'metric', not {depth_kind!r}")


def render(
    frames: torch.Tensor,
    *,
    depth: torch.Tensor | None = None,
    disparity: torch.Tensor | None = None,
    depth_kind: str = "relative",
    layout: str = "full-sbs",
    synthetic_view: str = "both",
    divergence: float = DEFAULT_DIVERGENCE,
    convergence: float = DEFAULT_CONVERGENCE,
    max_shift: float | None = None,
    ipd_mm: float = DEFAULT_IPD_MM,
    fov_degrees: float | torch.Tensor | None = None,
    screen_distance: float = DEFAULT_SCREEN_DISTANCE,
    infill: str = "background",
    edge_dilation: int = 0,
    eye_size=None,
    keep_aspect: bool = True,
    full_result: bool = False,
):
    """Renders the two eyes of every frame and packs them in ``layout``.

    Returns the packed frames (uint8 ``[N,3,H',W']``), or ``(left, right)`` for
    ``layout="separate"``, (the headset layouts ``apple-3d``, ``vr180`` and ``vr180-tb`` too:
    VR180 eyes are square 180-degree canvases, ``eye_size``'s height a side, from a view
    ``fov_degrees`` wide), or a :class:`StereoResult` with ``full_result=True``. With
    ``synthetic_view="right"`` the left eye is the input frame unchanged (and vice versa).
    ``infill="background"`` fills revealed regions from the background side;
    ``infill="mask"`` leaves them black and reports them in the result's masks, for an
    external inpainting step. ``edge_dilation`` grows nearer regions by that many pixels
    against halos at object edges.
    """
    if not isinstance(frames, torch.Tensor) or frames.dim() != 4 or frames.shape[1] != 3 or frames.dtype != torch.uint8:
        raise OptionError("frames must be a uint8 tensor [N, 3, H, W]")
    if (depth is None) == (disparity is None):
        raise OptionError("give exactly one of depth= and disparity=")
    if layout not in LAYOUTS and layout not in HEADSET_LAYOUTS:
        raise OptionError(f"layout must be one of {', '.join(LAYOUTS + tuple(HEADSET_LAYOUTS))}; got {layout!r}")
    if synthetic_view not in ("both", "left", "right"):
        raise OptionError(f"synthetic_view must be 'both', 'left' or 'right', not {synthetic_view!r}")
    if infill not in ("background", "mask"):
        raise OptionError(f"infill must be 'background' or 'mask', not {infill!r}")
    if isinstance(edge_dilation, bool) or not isinstance(edge_dilation, int) or not 0 <= edge_dilation <= 32:
        raise OptionError(f"edge_dilation must be an integer within 0..32, got {edge_dilation!r}")
    n, _, h, w = frames.shape
    field = depth if depth is not None else disparity
    if not isinstance(field, torch.Tensor) or tuple(field.shape) != (n, 1, h, w):
        raise OptionError(f"{'depth' if depth is not None else 'disparity'} must be [N,1,H,W] = {(n, 1, h, w)}")
    if field.device != frames.device:
        raise OptionError(f"frames are on {frames.device} but the depth is on {field.device}")
    if not torch.isfinite(field).all():
        raise OptionError("depth/disparity contains NaN or infinite values")
    if depth is not None:
        disparity = disparity_from_depth(
            depth, depth_kind=depth_kind, eye_width=w, divergence=divergence, convergence=convergence,
            max_shift=max_shift, ipd_mm=ipd_mm, fov_degrees=fov_degrees, screen_distance=screen_distance)
    eye_w, eye_h = eye_size_for(eye_size, h, w) if eye_size is not None else (0, 0)
    canvas, fov = 0, DEFAULT_FOV_DEGREES
    if layout.startswith("vr180"):
        if fov_degrees is not None:
            fov = float(fov_degrees.float().mean()) if isinstance(fov_degrees, torch.Tensor) else float(fov_degrees)
        canvas = eye_h if eye_size is not None else _core.vr180_default_canvas(h, w, fov)
        eye_w, eye_h = 0, 0
    out = _core.render_stereo(
        frames, disparity.float(), layout=HEADSET_LAYOUTS.get(layout, layout), synthetic_view=synthetic_view,
        fill_holes=infill == "background", edge_dilation=edge_dilation, eye_width=eye_w,
        eye_height=eye_h, keep_aspect=keep_aspect, vr180_canvas=canvas, vr180_fov=fov)
    result = StereoResult(out["packed"], out["left"], out["right"], out["left_holes"], out["right_holes"])
    if full_result:
        return result
    if layout == "separate":
        return result.left, result.right
    return result.packed
