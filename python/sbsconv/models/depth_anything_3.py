"""Depth Anything 3 (ByteDance Seed): monocular depth with a sky estimate (Mono-Large),
metric depth (Metric-Large), and any-view models (Small, Base) that give depth consistent
across a window of frames together with each frame's camera (C++:
cpp/sbsconv/depth/DepthAnything3.h, Note [Depth Anything 3 backbone], Note [Depth Anything 3
video windows]).

Checkpoints are the published Hugging Face repositories ``depth-anything/DA3*``: a
``model.safetensors`` whose keys are ``model.backbone.pretrained.*`` (DINOv2),
``model.head.*`` (DPT or DualDPT), ``model.cam_dec.*`` and ``model.cam_enc.*`` (any-view),
beside a ``config.json`` naming the preset (``{"model_name": "da3-small"}``). The sizes follow
from the tensor shapes; where attention alternates and which blocks the head reads follow from
the preset (or, without a config.json, from the encoder's size).

The monocular and any-view models predict depth, not inverse depth (kind "relative-depth"):
the engine takes its inverse for the stereo stage. DA3METRIC's output becomes metres with the
focal length: ``metres = focal_px * output / 300`` at the network's input size, the focal
length from ``fov_degrees`` (else 60 degrees horizontally, and a warning says so).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from sbsconv._native import _core
from sbsconv.errors import ModelError, OptionError
from sbsconv.models import hub, prepared
from sbsconv.models.depth_anything_v2 import PRESETS as _ENCODERS
from sbsconv.models.registry import Family, ModelSpec, register, register_family

FAMILY = "depth-anything-3"
DEFAULT_INPUT_SIZE = 504  # the reference's process_res: the longer side

# The reference's presets (src/depth_anything_3/configs/*.yaml): encoder, the blocks the head
# reads, where alternating attention / QK-norm / RoPE start, and the head's shape.
PRESETS: dict[str, dict[str, Any]] = {
    "da3-small": {"encoder": "vits", "layers": [5, 7, 9, 11], "alt_start": 4, "any_view": True},
    "da3-base": {"encoder": "vitb", "layers": [5, 7, 9, 11], "alt_start": 4, "any_view": True},
    "da3-large": {"encoder": "vitl", "layers": [11, 15, 19, 23], "alt_start": 8, "any_view": True},
    "da3-giant": {"encoder": "vitg", "layers": [19, 27, 33, 39], "alt_start": 13, "any_view": True},
    "da3mono-large": {"encoder": "vitl", "layers": [4, 11, 17, 23], "alt_start": -1, "any_view": False},
    "da3metric-large": {"encoder": "vitl", "layers": [4, 11, 17, 23], "alt_start": -1, "any_view": False,
                        "metric": True},
}

_MODELS = (
    # registry name, repository, preset, licence, description
    ("depth-anything-3-mono-large", "depth-anything/DA3MONO-LARGE", "da3mono-large", "Apache-2.0",
     "Depth Anything 3 Mono-Large: relative depth with sky at the far plane"),
    ("depth-anything-3-metric-large", "depth-anything/DA3METRIC-LARGE", "da3metric-large", "Apache-2.0",
     "Depth Anything 3 Metric-Large: depth in metres from the focal length"),
    ("depth-anything-3-small", "depth-anything/DA3-SMALL", "da3-small", "Apache-2.0",
     "Depth Anything 3 Small (any-view): windowed video depth with the camera's field of view and path"),
    ("depth-anything-3-base", "depth-anything/DA3-BASE", "da3-base", "Apache-2.0",
     "Depth Anything 3 Base (any-view): windowed video depth with the camera's field of view and path"),
    ("depth-anything-3-large", "depth-anything/DA3-LARGE", "da3-large", "CC-BY-NC-4.0",
     "Depth Anything 3 Large (any-view)"),
    ("depth-anything-3-giant", "depth-anything/DA3-GIANT", "da3-giant", "CC-BY-NC-4.0",
     "Depth Anything 3 Giant (any-view)"),
)

for _name, _repo, _preset, _licence, _description in _MODELS:
    register(ModelSpec(
        name=_name, family=FAMILY, repo_id=_repo, filename="model.safetensors", license=_licence,
        kind="metric" if PRESETS[_preset].get("metric") else "relative-depth",
        description=_description, options={"preset": _preset},
    ))

_BACKBONE = "model.backbone.pretrained."
_HEAD = "model.head."


def _preset_for(weights: dict[str, torch.Tensor], named: str | None, metric_hint: bool) -> str:
    if named is not None:
        if named not in PRESETS:
            raise ModelError(f"unknown Depth Anything 3 preset {named!r} (known: {', '.join(PRESETS)}); "
                             "the nested giant models are not supported", stage="load weights")
        return named
    # No config.json: the encoder's width and the camera decoder tell.
    width = int(weights[_BACKBONE + "cls_token"].shape[-1])
    any_view = any(k.startswith("model.cam_dec.") for k in weights)
    by_width = {384: "da3-small", 768: "da3-base", 1024: "da3-large", 1536: "da3-giant"}
    if not any_view:
        if width != 1024:
            raise ModelError(f"a monocular Depth Anything 3 checkpoint is ViT-L (1024 wide), not {width}",
                             stage="load weights")
        return "da3metric-large" if metric_hint else "da3mono-large"
    if width not in by_width:
        raise ModelError(f"no Depth Anything 3 preset has a {width}-wide encoder", stage="load weights")
    return by_width[width]


def config(weights: dict[str, torch.Tensor], preset: str | None = None, *, metric: bool = False,
           structure: dict[str, Any] | None = None) -> dict:
    """The C++ model's configuration: the sizes read off the tensors, the structure (which
    blocks the head reads, where alternating attention starts) from the preset, or from
    ``structure`` (``out_layers``, ``alt_start``: a config.json may carry them, as the
    reference's configs do, for encoders of other depths)."""
    try:
        name = _preset_for(weights, preset, metric)
        p = PRESETS[name]
        embed_dim = int(weights[_BACKBONE + "cls_token"].shape[-1])
        blocks = {int(m.group(1)) for k in weights if (m := re.match(re.escape(_BACKBONE) + r"blocks\.(\d+)\.", k))}
        depth = max(blocks) + 1
        swiglu = _BACKBONE + "blocks.0.mlp.w12.weight" in weights
        mlp_hidden = int(weights[_BACKBONE + "blocks.0.mlp.w3.weight"].shape[1]) if swiglu else int(
            weights[_BACKBONE + "blocks.0.mlp.fc1.weight"].shape[0])
        patch_size = int(weights[_BACKBONE + "patch_embed.proj.weight"].shape[-1])
        out_channels = [int(weights[f"{_HEAD}projects.{i}.weight"].shape[0]) for i in range(4)]
        features = int(weights[_HEAD + "scratch.layer1_rn.weight"].shape[0])
    except (KeyError, ValueError, IndexError) as exc:
        what = f"missing {exc}" if isinstance(exc, KeyError) else f"unexpected tensor shapes: {exc}"
        raise ModelError(f"not a Depth Anything 3 checkpoint in the published layout ({what})",
                         stage="load weights") from None
    if depth > 128:
        raise ModelError(f"the checkpoint names encoder block {depth - 1}; DINOv2 encoders have at most 128",
                         stage="load weights")
    structure = structure or {}
    layers = structure.get("out_layers", p["layers"])
    alt_start = structure.get("alt_start", p["alt_start"])
    if not structure and depth != _ENCODERS[p["encoder"]]["depth"]:
        raise ModelError(
            f"{name} has {_ENCODERS[p['encoder']]['depth']} blocks, the checkpoint {depth}: its config.json must"
            " name out_layers and alt_start", stage="load weights")
    try:
        layers = [int(v) for v in layers]
        alt_start = int(alt_start)
    except (TypeError, ValueError):
        raise ModelError("out_layers must be four block numbers and alt_start one", stage="load weights") from None
    return {
        "preset": name,
        "encoder": {
            "embed_dim": embed_dim, "depth": depth, "num_heads": max(1, embed_dim // 64),
            "mlp_hidden": mlp_hidden, "swiglu": swiglu, "patch_size": patch_size, "layer_norm_eps": 1e-6,
            "final_norm_eps": 1e-5, "pos_embed_resize": "scale_factor_with_offset",
            "alt_start": alt_start, "qknorm_start": alt_start, "rope_start": alt_start,
            "rope_frequency": 100.0, "cat_token": bool(p["any_view"]),
        },
        "layers": layers,
        "features": features,
        "out_channels": out_channels,
        "any_view": bool(p["any_view"]),
        "metric": bool(p.get("metric", False)),
    }


def video_window(device: str, any_view_config: dict, input_size: int) -> tuple[int, int]:
    """Frames per window and overlap for the any-view models (Note [Depth Anything 3 video
    windows]). Cross-view attention costs the square of the window's tokens, so on the CPU
    (where the model's time is the user's wait) windows stay short: 8 frames, 2 shared. On CUDA
    the window grows with free memory, up to 32 frames sharing 4: a longer window ties more
    frames together in one pass."""
    on_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if not on_cuda:
        return 8, 2
    try:
        index = torch.device(device if device != "auto" else "cuda").index or 0
        free, _ = torch.cuda.mem_get_info(index)
    except (RuntimeError, AssertionError):
        return 8, 2
    width = any_view_config["encoder"]["embed_dim"]
    # activations per frame at 504: about 60 MiB for ViT-S, growing with the width and the area
    per_frame = 60 * 2**20 * (width / 384) * (input_size / DEFAULT_INPUT_SIZE) ** 2
    window = int(max(8, min(32, free // 3 // per_frame)))
    return window, max(2, window // 8)


def build(spec: ModelSpec | None, path: Path, device: str, precision: str, input_size: int,
          window: int | None = None, overlap: int | None = None, reference_view: str = "saddle_balanced",
          **_: Any):
    """Builds the C++ model from ``model.safetensors`` (or the folder holding it with its
    config.json)."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    file = path if path.is_file() else folder / "model.safetensors"
    if not file.is_file():
        raise ModelError(f"{path} holds no model.safetensors (Depth Anything 3)", stage="load weights")
    named = spec.options["preset"] if spec is not None else None
    structure: dict[str, Any] = {}
    config_json = folder / "config.json"
    if config_json.is_file():
        try:
            published = json.loads(config_json.read_text())
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot read {config_json}: {exc}", stage="load weights") from None
        if not isinstance(published, dict):
            raise ModelError(f"{config_json} is not a JSON object", stage="load weights")
        named = named or published.get("model_name")
        structure = {k: published[k] for k in ("out_layers", "alt_start") if k in published}
    weights = hub.read_weights(file)
    c = config(weights, named, metric="metric" in str(path).lower(), structure=structure)
    if spec is not None and c["encoder"]["embed_dim"] != _ENCODERS[PRESETS[named]["encoder"]]["embed_dim"] \
            and not structure:
        raise ModelError(f"{path} holds a {c['encoder']['embed_dim']}-wide encoder, which is not {spec.name}",
                         stage="load weights")
    default_window, default_overlap = video_window(device, c, input_size)
    window = default_window if window is None else window
    overlap = (default_overlap if window > default_overlap else max(1, window // 4)) if overlap is None else overlap
    if reference_view not in ("first", "middle", "saddle_balanced"):
        raise OptionError(f"reference_view must be first, middle or saddle_balanced, not {reference_view!r}")
    name = spec.name if spec is not None else (folder.name if path.is_dir() else path.stem)
    return prepared.build(path, precision, weights, lambda w: _core.create_depth_anything_3(
        name, c, w, device, precision, input_size, int(window), int(overlap), reference_view))


def handles(path: Path) -> bool:
    path = Path(path)
    config_json = (path if path.is_dir() else path.parent) / "config.json"
    if config_json.is_file():
        try:
            if str(json.loads(config_json.read_text()).get("model_name", "")).startswith("da3"):
                return True
        except (OSError, ValueError):
            pass
    # the file's name or its folders' (a hub cache: models--depth-anything--DA3-SMALL/...)
    return any(re.search(r"da3|depth[_-]anything[_-]3", part.lower()) for part in path.parts[-4:])


def claims(keys: set[str]) -> bool:
    return any(k.startswith(_BACKBONE) for k in keys) and any(k.startswith(_HEAD) for k in keys)


def predict(model: Any, pixel_values: torch.Tensor, batch: int = 1) -> dict[str, torch.Tensor | None]:
    """Everything the network predicts (depth, confidence or sky, world-to-camera poses,
    intrinsics) for ``batch`` groups of views, on normalised input: for parity checks."""
    core = getattr(model, "_core", model)
    return dict(_core.depth_anything_3_predict(core, pixel_values, batch))


register_family(Family(name=FAMILY, builder=build, handles=handles, claims=claims,
                       default="depth-anything-3-small", input_size=DEFAULT_INPUT_SIZE))
