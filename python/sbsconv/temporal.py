"""Temporal stability: the depth stabiliser, the scene-cut detector and the comfort budget.

The engine runs these between the depth model and the warp; they are also usable on their
own (see Note [Depth stabilisation] and Note [Scene cut detection] in cpp/sbsconv/temporal/).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from sbsconv._native import _core, flush_log
from sbsconv.errors import OptionError

__all__ = ["ComfortBudget", "ComfortReport", "DepthStabilizer", "SceneCutDetector", "detect_scene_cuts"]


def _range(value, name: str, low: float, high: float, *, low_open=False, high_open=False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise OptionError(f"{name} must be a number, got {value!r}")
    if value < low or value > high or (low_open and value == low) or (high_open and value == high):
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise OptionError(f"{name} must be within {lo}{low:g}, {high:g}{hi}, got {value!r}")
    return float(value)


def _starts(starts_shot: Sequence[bool] | None, n: int) -> list[bool]:
    if starts_shot is None:
        return [False] * n
    flags = [bool(v) for v in starts_shot]
    if len(flags) != n:
        raise OptionError(f"starts_shot has {len(flags)} flags for {n} frames")
    return flags


class DepthStabilizer:
    """Turns per-frame model depth into stable depth.

    Relative depth: each frame's scale and shift are fitted to the previous frame
    (``align``), its robust range (``percentiles``, default p1/p99) is smoothed with an EMA
    (``range_decay``) and mapped to [0, 1] (1 = nearest). ``alpha`` > 0 also blends each frame
    with the previous output, less where the picture moved (``motion_threshold``: the mean
    RGB change, 0..1, at which blending stops). Metric depth is only blended. A frame
    flagged in ``starts_shot`` starts afresh. Deterministic; ``state()``/``load_state()``
    save and restore it.
    """

    def __init__(
        self,
        *,
        kind: str = "relative",
        percentiles: tuple[float, float] = (1.0, 99.0),
        range_decay: float = 0.9,
        align: bool = True,
        alpha: float = 0.0,
        motion_threshold: float = 0.08,
    ) -> None:
        if kind not in ("relative", "metric"):
            raise OptionError(f"kind must be 'relative' or 'metric', not {kind!r}")
        if not isinstance(percentiles, tuple | list) or len(percentiles) != 2:
            raise OptionError(f"percentiles must be a (low, high) pair, got {percentiles!r}")
        low = _range(percentiles[0], "the low percentile", 0, 100)
        high = _range(percentiles[1], "the high percentile", 0, 100)
        if not low < high:
            raise OptionError(f"percentiles must be increasing, got {percentiles!r}")
        self.kind = kind
        self.alpha = _range(alpha, "alpha", 0, 1, high_open=True)
        self._core = _core.DepthStabilizer(
            relative=kind == "relative", low_percentile=low, high_percentile=high,
            range_decay=_range(range_decay, "range_decay", 0, 1, high_open=True), align=bool(align),
            alpha=self.alpha, motion_threshold=_range(motion_threshold, "motion_threshold", 0, 1, low_open=True))

    def process(self, depth: torch.Tensor, frames: torch.Tensor | None = None,
                starts_shot: Sequence[bool] | None = None) -> torch.Tensor:
        if not isinstance(depth, torch.Tensor) or depth.dim() != 4 or depth.shape[1] != 1:
            raise OptionError("depth must be a tensor [N, 1, H, W]")
        if self.alpha > 0 and frames is None:
            raise OptionError("alpha > 0 needs the frames (motion decides where to smooth)")
        try:
            return self._core.process(depth, frames, _starts(starts_shot, depth.shape[0]))
        finally:
            flush_log()

    def reset(self) -> None:
        self._core.reset()

    def state(self) -> dict[str, torch.Tensor]:
        return dict(self._core.state())

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self._core.load_state(dict(state))


class SceneCutDetector:
    """Finds hard cuts in a stream of frames (``push`` batches in order, then ``flush``).

    ``sensitivity`` (0..1): higher finds more cuts. Cuts closer than ``min_scene_length``
    frames to the previous one are not reported. Fast camera motion and flashes do not count.
    Returns indices counted from the first frame pushed; decisions lag by two frames.
    """

    def __init__(self, *, sensitivity: float = 0.5, min_scene_length: int = 8) -> None:
        _range(sensitivity, "sensitivity", 0, 1)
        if isinstance(min_scene_length, bool) or not isinstance(min_scene_length, int) or min_scene_length < 1:
            raise OptionError(f"min_scene_length must be an integer >= 1, got {min_scene_length!r}")
        self._core = _core.SceneCutDetector(sensitivity=float(sensitivity), min_scene_length=min_scene_length)

    def push(self, frames: torch.Tensor) -> list[int]:
        if not isinstance(frames, torch.Tensor) or frames.dim() != 4 or frames.dtype != torch.uint8:
            raise OptionError("frames must be a uint8 tensor [N, 3, H, W]")
        return list(self._core.push(frames))

    def flush(self) -> list[int]:
        return list(self._core.flush())

    @property
    def scores(self) -> list[float]:
        return list(self._core.scores)

    def reset(self) -> None:
        self._core.reset()

    def state(self) -> dict[str, torch.Tensor]:
        return dict(self._core.state())

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self._core.load_state(dict(state))


def detect_scene_cuts(
    source: str | os.PathLike[str] | torch.Tensor | Iterable[torch.Tensor],
    *,
    sensitivity: float = 0.5,
    min_scene_length: int = 8,
    batch_size: int = 32,
) -> list[int]:
    """Indices of the first frames of new shots (the first shot's frame 0 is not listed).

    ``source``: a video path (every frame decoded, as ``media.read_frames`` does), a uint8
    tensor ``[N,3,H,W]``, or an iterable of such batches.
    """
    from sbsconv import media

    detector = SceneCutDetector(sensitivity=sensitivity, min_scene_length=min_scene_length)
    cuts: list[int] = []
    if isinstance(source, torch.Tensor):
        batches: Iterable[torch.Tensor] = [source]
    elif isinstance(source, str | os.PathLike):
        # Small frames straight from the decoder's colour conversion: the detector looks at
        # 96x54 thumbnails anyway.
        batches = (b.data for b in media.read_frames(source, batch_size=batch_size, width=192))
    else:
        batches = source
    for batch in batches:
        cuts += detector.push(batch)
    return cuts + detector.flush()


@dataclass(frozen=True)
class ComfortReport:
    limit_percent: float
    max_percent: float  # the run's largest |disparity|, % of the eye width
    frames_over_limit: int
    scenes: tuple[dict, ...]  # per scene: first_frame, frames, max_percent, p99_percent, ...


class ComfortBudget:
    """Disparity statistics against a comfort limit (``limit_percent`` of the eye width), per
    scene; with ``auto_strength`` the disparity of scenes that would exceed it is scaled down
    smoothly (quickly down, gently back up)."""

    def __init__(self, *, limit_percent: float = 3.0, auto_strength: bool = False) -> None:
        self.limit_percent = _range(limit_percent, "limit_percent", 0, 50, low_open=True)
        self._core = _core.ComfortBudget(limit_percent=self.limit_percent, auto_strength=bool(auto_strength))

    def process(self, disparity: torch.Tensor, starts_shot: Sequence[bool] | None = None) -> torch.Tensor:
        if not isinstance(disparity, torch.Tensor) or disparity.dim() != 4 or disparity.shape[1] != 1:
            raise OptionError("disparity must be a tensor [N, 1, H, W]")
        return self._core.process(disparity, _starts(starts_shot, disparity.shape[0]))

    def report(self) -> ComfortReport:
        return ComfortReport(self.limit_percent, self._core.max_percent, self._core.frames_over_limit,
                             tuple(self._core.scenes()))
