"""Video-Depth-Anything: temporally consistent depth (DINOv2 + a DPT head with four temporal
attention modules), relative and metric, run windowed or streaming (C++:
cpp/sbsconv/depth/VideoDepthAnything.h, Note [Video-Depth-Anything drivers]).

Checkpoints are the original repositories' ``.pth`` state dicts (``pretrained.*``,
``head.*``, with the motion modules' sinusoidal tables as buffers); the configuration
follows from the tensor shapes. There is no transformers port.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from sbsconv._native import _core
from sbsconv.errors import ModelError
from sbsconv.models import hub, prepared
from sbsconv.models.depth_anything_v2 import PRESETS, config_from_original
from sbsconv.models.registry import Family, ModelSpec, register, register_family

FAMILY = "video-depth-anything"

_SIZES = {"small": "vits", "base": "vitb", "large": "vitl"}
_LICENSE = {"small": "Apache-2.0", "base": "CC-BY-NC-4.0", "large": "CC-BY-NC-4.0"}

for _size, _enc in _SIZES.items():
    register(ModelSpec(
        name=f"video-depth-anything-{_size}",
        family=FAMILY,
        repo_id=f"depth-anything/Video-Depth-Anything-{_size.capitalize()}",
        filename=f"video_depth_anything_{_enc}.pth",
        license=_LICENSE[_size],
        kind="relative",
        description=f"Video-Depth-Anything {_size.capitalize()}: temporally consistent relative inverse depth",
        options={"encoder": _enc},
    ))
    register(ModelSpec(
        name=f"video-depth-anything-metric-{_size}",
        family=FAMILY,
        repo_id=f"depth-anything/Metric-Video-Depth-Anything-{_size.capitalize()}",
        filename=f"metric_video_depth_anything_{_enc}.pth",
        license=_LICENSE[_size],
        kind="metric",
        description=f"Video-Depth-Anything {_size.capitalize()} metric: temporally consistent depth in metres",
        options={"encoder": _enc},
    ))


def config(weights: dict[str, torch.Tensor], *, metric: bool) -> dict:
    """The configuration of an original-layout checkpoint, read off its tensor shapes."""
    if not any(k.startswith("head.motion_modules.") for k in weights):
        raise ModelError(
            "not a Video-Depth-Anything checkpoint: no head.motion_modules.* (a Depth-Anything-V2"
            " checkpoint loads with a depth-anything-v2 model name)", stage="load weights")
    c = config_from_original(weights, metric=False, max_depth=1.0, head="head")
    c["metric"] = metric
    return c


def _metric_from_filename(path: Path) -> bool:
    return "metric" in path.name.lower()


def build(spec: ModelSpec | None, path: Path, device: str, precision: str, input_size: int,
          temporal_mode: str = "windowed", **_: Any):
    """Builds the C++ model from an original-layout checkpoint file."""
    path = Path(path)
    if path.is_dir():
        raise ModelError(f"{path} is a folder: Video-Depth-Anything loads from its .pth file", stage="load weights")
    weights = hub.read_weights(path)
    metric = spec.kind == "metric" if spec is not None else _metric_from_filename(path)
    c = config(weights, metric=metric)
    if spec is not None:
        preset = PRESETS[spec.options["encoder"]]
        if c["encoder"]["embed_dim"] != preset["embed_dim"]:
            raise ModelError(
                f"{path} holds a {c['encoder']['embed_dim']}-wide encoder, but {spec.name}"
                f" is {spec.options['encoder']} ({preset['embed_dim']} wide)", stage="load weights")
    name = spec.name if spec else path.stem
    window_batch = _window_batch(device, c, input_size)
    return prepared.build(path, precision, weights, lambda w: _core.create_video_depth_anything(
        name, c, w, device, precision, input_size, temporal_mode, window_batch))


def _window_batch(device: str, c: dict, input_size: int) -> int:
    """Windows per network call: one on the CPU and MPS (no gain, more memory); on CUDA as
    many as a third of the free memory holds (activations of one 32-frame window scale with
    the encoder width and the input area)."""
    if not device.startswith("cuda") and not (device == "auto" and torch.cuda.is_available()):
        return 1
    try:
        index = torch.device(device if device != "auto" else "cuda").index or 0
        free, _ = torch.cuda.mem_get_info(index)
    except (RuntimeError, AssertionError):
        return 1
    width = c["encoder"]["embed_dim"]
    per_window = (1.5 if width <= 384 else 2.5 if width <= 768 else 4.0) * 2**30 * (input_size / 518) ** 2 * 1.8
    return int(max(1, min(8, free // 3 // per_window)))


def handles(path: Path) -> bool:
    name = Path(path).name.lower()
    return bool(re.search(r"video[_-]depth[_-]anything", name))


def claims(keys: set[str]) -> bool:
    return any(k.startswith("head.motion_modules.") for k in keys)


register_family(Family(name=FAMILY, builder=build, handles=handles, claims=claims,
                       default="video-depth-anything-small"))
