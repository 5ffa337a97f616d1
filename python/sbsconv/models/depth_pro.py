"""Apple Depth Pro: sharp metric depth and the camera's field of view (C++:
cpp/sbsconv/depth/DepthPro.h, Note [Depth Pro]).

Two on-disk layouts load into the same C++ model:

- the original ``depth_pro.pt`` (apple/DepthPro; fp16; ``encoder.*``, ``decoder.*``,
  ``head.*``, ``fov.*``), the released configuration, its ViT sizes read off the shapes;
- the transformers layout (apple/DepthPro-hf or any DepthProConfig: ``config.json`` +
  safetensors), built from its own config.

The C++ model takes transformers' names, with DINOv2's original names inside the ViTs.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import torch

from sbsconv._native import _core
from sbsconv.errors import ModelError
from sbsconv.models import hub, prepared
from sbsconv.models.depth_anything_v2 import original_keys_from_transformers
from sbsconv.models.registry import Family, ModelSpec, register, register_family

FAMILY = "depth-pro"

register(ModelSpec(
    name="depth-pro",
    family=FAMILY,
    repo_id="apple/DepthPro",
    filename="depth_pro.pt",
    license="apple-amlr",
    kind="metric",
    description="Apple Depth Pro: sharp metric depth at 1536 px and a field-of-view estimate",
    commercial=False,  # Apple's machine-learning research licence: research use only
    alternative_repo="apple/DepthPro-hf",
))

VIT_PREFIXES = {  # transformers prefix of each ViT -> its prefix in the original checkpoint
    "depth_pro.encoder.patch_encoder.model.": "encoder.patch_encoder.",
    "depth_pro.encoder.image_encoder.model.": "encoder.image_encoder.",
    "fov_model.fov_encoder.model.": "fov.encoder.0.",
}


# ---- the original layout ----------------------------------------------------------------------

def _original_rules() -> list[tuple[str, str]]:
    """Original -> transformers names outside the ViTs, for the released configuration
    (pyramid levels 0.25, 0.5, 1; hooks on blocks 11 and 5)."""
    up = "depth_pro.neck.feature_upsample."
    rules = [
        (r"encoder\.upsample_lowres\.(weight|bias)", up + r"image_block.layers.0.\1"),
        # upsample2/1/0 are the 0.25/0.5/1 levels; upsample_latent1/0 the hooks on 11/5
        (r"encoder\.upsample2\.(\d)\.weight", up + r"scaled_images.0.layers.\1.weight"),
        (r"encoder\.upsample1\.(\d)\.weight", up + r"scaled_images.1.layers.\1.weight"),
        (r"encoder\.upsample0\.(\d)\.weight", up + r"scaled_images.2.layers.\1.weight"),
        (r"encoder\.upsample_latent1\.(\d)\.weight", up + r"intermediate.0.layers.\1.weight"),
        (r"encoder\.upsample_latent0\.(\d)\.weight", up + r"intermediate.1.layers.\1.weight"),
        (r"encoder\.fuse_lowres\.(weight|bias)", r"depth_pro.neck.fuse_image_with_low_res.\1"),
        (r"head\.(\d)\.(weight|bias)", r"head.layers.\1.\2"),
        (r"fov\.encoder\.1\.(weight|bias)", r"fov_model.fov_encoder.neck.\1"),
        (r"fov\.downsample\.0\.(weight|bias)", r"fov_model.conv.\1"),
        (r"fov\.head\.(\d)\.(weight|bias)", r"fov_model.head.layers.\1.\2"),
    ]
    for i in range(1, 5):  # decoder.convs[0] is the identity
        rules.append((rf"decoder\.convs\.{i}\.weight", f"depth_pro.neck.feature_projection.projections.{4 - i}.weight"))
    for i in range(5):
        target = "fusion_stage.final." if i == 0 else f"fusion_stage.intermediate.{4 - i}."
        rules += [
            (rf"decoder\.fusions\.{i}\.resnet([12])\.residual\.1\.(weight|bias)", target + r"residual_layer\1.convolution1.\2"),
            (rf"decoder\.fusions\.{i}\.resnet([12])\.residual\.3\.(weight|bias)", target + r"residual_layer\1.convolution2.\2"),
            (rf"decoder\.fusions\.{i}\.deconv\.weight", target + "deconv.weight"),
            (rf"decoder\.fusions\.{i}\.out_conv\.(weight|bias)", target + r"projection.\1"),
        ]
    return rules


_ORIGINAL = [(re.compile(p + "$"), r) for p, r in _original_rules()]


def keys_from_original(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The original checkpoint's tensors under the C++ model's names."""
    out: dict[str, torch.Tensor] = {}
    for key, value in weights.items():
        for ours, theirs in VIT_PREFIXES.items():
            if key.startswith(theirs):
                out[ours + key[len(theirs):]] = value
                break
        else:
            for pattern, replacement in _ORIGINAL:
                if pattern.match(key):
                    out[pattern.sub(replacement, key)] = value
                    break
            else:
                out[key] = value  # reported as unexpected by the model
    return out


def _vit_from_original(weights: dict[str, torch.Tensor], prefix: str) -> dict:
    try:
        dim = int(weights[prefix + "cls_token"].shape[-1])
        depth = 1 + max(int(m.group(1)) for k in weights if (m := re.match(re.escape(prefix) + r"blocks\.(\d+)\.", k)))
        return {"embed_dim": dim, "depth": depth, "num_heads": max(1, dim // 64),
                "mlp_hidden": int(weights[prefix + "blocks.0.mlp.fc1.weight"].shape[0]),
                "patch_size": int(weights[prefix + "patch_embed.proj.weight"].shape[-1]),
                "layer_norm_eps": 1e-6, "pos_embed_resize": "exact_size"}
    except (KeyError, ValueError) as exc:
        raise ModelError(f"not a Depth Pro checkpoint in the original layout (missing {exc})",
                         stage="load weights") from None


def config_from_original(weights: dict[str, torch.Tensor]) -> dict:
    """The configuration of an original checkpoint. The original code fixes the pyramid
    (0.25, 0.5, 1 with overlaps 0, 0.5, 0.25), the hooks (blocks 11 and 5), the merge padding
    and an input of four tiles; the widths are read off the shapes."""
    patch = _vit_from_original(weights, "encoder.patch_encoder.")
    use_fov = any(k.startswith("fov.") for k in weights)
    try:
        positions = int(weights["encoder.patch_encoder.pos_embed"].shape[1]) - 1
        tile = round(math.sqrt(positions)) * patch["patch_size"]
        scaled = [int(weights[f"encoder.upsample{i}.0.weight"].shape[0]) for i in (2, 1, 0)]
        latent1 = sorted(k for k in weights if k.startswith("encoder.upsample_latent1."))
        latent0 = sorted(k for k in weights if k.startswith("encoder.upsample_latent0."))
        hooks = [int(weights[latent1[-1]].shape[1]), int(weights[latent0[-1]].shape[1])]
        fusion = int(weights["decoder.convs.1.weight"].shape[0])
    except (KeyError, IndexError) as exc:
        raise ModelError(f"not a Depth Pro checkpoint in the original layout (missing {exc})",
                         stage="load weights") from None
    return {
        "patch_vit": patch, "image_vit": _vit_from_original(weights, "encoder.image_encoder."),
        "fov_vit": _vit_from_original(weights, "fov.encoder.0.") if use_fov else None, "use_fov": use_fov,
        "tile": tile, "image_size": 4 * tile, "ratios": [0.25, 0.5, 1.0], "overlaps": [0.0, 0.5, 0.25],
        "scaled_dims": scaled, "hook_ids": [11, 5], "hook_dims": hooks, "merge_padding": 3,
        "fusion": fusion, "fov_head_layers": 2, "fusion_bias": True,
    }


# ---- the transformers layout -----------------------------------------------------------------

def _vit_from_transformers(c: dict[str, Any]) -> dict:
    if c.get("model_type", "dinov2") != "dinov2":
        raise ModelError(f"Depth Pro with a {c.get('model_type')!r} encoder is not supported (DINOv2 only)",
                         stage="load weights")
    hidden = int(c.get("hidden_size", 768))
    mlp = int(hidden * float(c.get("mlp_ratio", 4)))
    swiglu = bool(c.get("use_swiglu_ffn", False))
    if swiglu:
        mlp = (int(mlp * 2 / 3) + 7) // 8 * 8
    return {"embed_dim": hidden, "depth": int(c.get("num_hidden_layers", 12)),
            "num_heads": int(c.get("num_attention_heads", 12)), "mlp_hidden": mlp, "swiglu": swiglu,
            "patch_size": int(c.get("patch_size", 14)), "layer_norm_eps": float(c.get("layer_norm_eps", 1e-6)),
            "pos_embed_resize": "exact_size"}


def config_from_transformers(config: dict[str, Any], weights: dict[str, torch.Tensor], image_size: int) -> dict:
    if config.get("model_type") != "depth_pro":
        raise ModelError(f"config.json describes a {config.get('model_type')!r} model, not Depth Pro",
                         stage="load weights")
    if config.get("use_batch_norm_in_fusion_residual"):
        raise ModelError("Depth Pro with batch norm in the fusion blocks is not supported", stage="load weights")
    bias = config.get("use_bias_in_fusion_residual")
    use_fov = any(k.startswith("fov_model.") for k in weights)
    return {
        "patch_vit": _vit_from_transformers(config.get("patch_model_config") or {}),
        "image_vit": _vit_from_transformers(config.get("image_model_config") or {}),
        "fov_vit": _vit_from_transformers(config.get("fov_model_config") or {}) if use_fov else None,
        "use_fov": use_fov,
        "tile": int(config.get("patch_size", 384)), "image_size": int(image_size),
        "ratios": [float(r) for r in config.get("scaled_images_ratios", [0.25, 0.5, 1])],
        "overlaps": [float(r) for r in config.get("scaled_images_overlap_ratios", [0.0, 0.5, 0.25])],
        "scaled_dims": [int(d) for d in config.get("scaled_images_feature_dims", [1024, 1024, 512])],
        "hook_ids": [int(i) for i in config.get("intermediate_hook_ids", [11, 5])],
        "hook_dims": [int(d) for d in config.get("intermediate_feature_dims", [256, 256])],
        "merge_padding": int(config.get("merge_padding_value", 3)),
        "fusion": int(config.get("fusion_hidden_size", 256)),
        "fov_head_layers": int(config.get("num_fov_head_layers", 2)),
        "fusion_bias": True if bias is None else bool(bias),
    }


def keys_from_transformers(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers names, with each ViT's parameters renamed to DINOv2's original names."""
    out: dict[str, torch.Tensor] = {}
    vits: dict[str, dict[str, torch.Tensor]] = {p: {} for p in VIT_PREFIXES}
    for key, value in weights.items():
        for prefix in VIT_PREFIXES:
            if key.startswith(prefix):
                vits[prefix]["backbone." + key[len(prefix):]] = value
                break
        else:
            out[key] = value
    for prefix, part in vits.items():
        for key, value in original_keys_from_transformers(part).items():
            out[prefix + key.removeprefix("pretrained.").removeprefix("backbone.")] = value
    return out


def _image_size(folder: Path) -> int:
    processor = folder / "preprocessor_config.json"
    if processor.is_file():
        try:
            size = json.loads(processor.read_text()).get("size") or {}
            if int(size.get("height", 1536)) != int(size.get("width", 1536)):
                raise ModelError("Depth Pro's input must be square", stage="load weights")
            return int(size.get("height", 1536))
        except (ValueError, TypeError, AttributeError):
            pass
    return 1536


# ---- building ---------------------------------------------------------------------------------

def build(spec: ModelSpec | None, path: Path, device: str, precision: str, input_size: int, **_: Any):
    """Builds the C++ model (Depth Pro runs at its native input size; ``input_size`` is for
    the other families)."""
    path = Path(path)
    name = spec.name if spec else path.stem if path.is_file() else path.name
    if path.is_dir():
        config_path = path / "config.json"
        if not config_path.is_file():
            raise ModelError(f"{path} has no config.json (transformers layout)", stage="load weights")
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise ModelError(f"{path} holds no model weights (*.safetensors)", stage="load weights")
        weights: dict[str, torch.Tensor] = {}
        for f in files:
            weights.update(hub.read_weights(f))
        config = config_from_transformers(json.loads(config_path.read_text()), weights, _image_size(path))
        weights = keys_from_transformers(weights)
    else:
        weights = hub.read_weights(path)
        if any(k.startswith("depth_pro.") for k in weights):
            raise ModelError(f"{path} is in the transformers layout: pass the folder that holds it with its"
                             " config.json", stage="load weights")
        config = config_from_original(weights)
        weights = keys_from_original(weights)
    return prepared.build(path, precision, weights,
                          lambda w: _core.create_depth_pro(name, config, w, device, precision))


def handles(path: Path) -> bool:
    path = Path(path)
    if path.is_dir():
        config = path / "config.json"
        try:
            return config.is_file() and json.loads(config.read_text()).get("model_type") == "depth_pro"
        except (OSError, ValueError):
            return False
    return bool(re.search(r"depth[_-]?pro", path.name.lower()))


def claims(keys: set[str]) -> bool:
    return any(k.startswith(("encoder.patch_encoder.", "depth_pro.encoder.")) for k in keys)


register_family(Family(name=FAMILY, builder=build, handles=handles, claims=claims,
                       default="depth-pro"))
