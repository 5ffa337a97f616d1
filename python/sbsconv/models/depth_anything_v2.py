"""Depth-Anything-V2 (DINOv2 encoder + DPT head), relative and metric.

Two on-disk layouts load into the same C++ model (cpp/sbsconv/depth/DepthAnythingV2.h):

- the original repositories' ``.pth`` state dicts (``pretrained.*``, ``depth_head.*``), whose
  configuration follows from the tensor shapes, and which resize the position table the way
  the original DINOv2 code does (scale factor with a 0.1 offset);
- the transformers layout (``config.json`` + safetensors, ``backbone.*``, ``neck.*``,
  ``head.*``), built from its own config, resizing the position table to the exact grid as
  transformers does. Its keys are renamed to the original ones here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from sbsconv._native import _core
from sbsconv.errors import ModelError
from sbsconv.models import hub, prepared
from sbsconv.models.registry import Family, ModelSpec, register, register_family

FAMILY = "depth-anything-v2"

# Encoder presets of the original code (run.py / dpt.py).
PRESETS = {
    "vits": {"embed_dim": 384, "depth": 12, "num_heads": 6, "features": 64,
             "out_channels": [48, 96, 192, 384], "layers": [2, 5, 8, 11]},
    "vitb": {"embed_dim": 768, "depth": 12, "num_heads": 12, "features": 128,
             "out_channels": [96, 192, 384, 768], "layers": [2, 5, 8, 11]},
    "vitl": {"embed_dim": 1024, "depth": 24, "num_heads": 16, "features": 256,
             "out_channels": [256, 512, 1024, 1024], "layers": [4, 11, 17, 23]},
    "vitg": {"embed_dim": 1536, "depth": 40, "num_heads": 24, "features": 384,
             "out_channels": [1536, 1536, 1536, 1536], "layers": [9, 19, 29, 39]},
}
_LAYERS_BY_DEPTH = {p["depth"]: p["layers"] for p in PRESETS.values()}

_SIZES = {"small": "vits", "base": "vitb", "large": "vitl"}
_LICENSE = {"small": "Apache-2.0", "base": "CC-BY-NC-4.0", "large": "CC-BY-NC-4.0"}

for _size, _enc in _SIZES.items():
    register(ModelSpec(
        name=f"depth-anything-v2-{_size}",
        family=FAMILY,
        repo_id=f"depth-anything/Depth-Anything-V2-{_size.capitalize()}",
        filename=f"depth_anything_v2_{_enc}.pth",
        license=_LICENSE[_size],
        kind="relative",
        description=f"Depth-Anything-V2 {_size.capitalize()}: relative inverse depth",
        options={"encoder": _enc},
    ))
    for _scene, _data, _max_depth in (("indoor", "Hypersim", 20.0), ("outdoor", "VKITTI", 80.0)):
        register(ModelSpec(
            name=f"depth-anything-v2-metric-{_scene}-{_size}",
            family=FAMILY,
            repo_id=f"depth-anything/Depth-Anything-V2-Metric-{_data}-{_size.capitalize()}",
            filename=f"depth_anything_v2_metric_{_data.lower()}_{_enc}.pth",
            license=_LICENSE[_size],
            kind="metric",
            description=f"Depth-Anything-V2 {_size.capitalize()} metric ({_scene}, {_data},"
            f" up to {_max_depth:g} m)",
            options={"encoder": _enc, "max_depth": _max_depth},
        ))


# ---- configuration ---------------------------------------------------------------------------


_MAX_DEPTH = 128  # the C++ encoder's bound (kMaxVitDepth); ViT-g has 40 blocks


def config_from_original(weights: dict[str, torch.Tensor], *, metric: bool, max_depth: float,
                         head: str = "depth_head") -> dict:
    """The configuration of an original-layout checkpoint, read off its tensor shapes (``head``
    is the head's key prefix: Video-Depth-Anything names it ``head``)."""
    try:
        embed_dim = int(weights["pretrained.cls_token"].shape[-1])
        blocks = {int(m.group(1)) for k in weights if (m := re.match(r"pretrained\.blocks\.(\d+)\.", k))}
        depth = max(blocks) + 1
        swiglu = "pretrained.blocks.0.mlp.w12.weight" in weights
        mlp_hidden = int(weights["pretrained.blocks.0.mlp.w3.weight"].shape[1]) if swiglu else int(
            weights["pretrained.blocks.0.mlp.fc1.weight"].shape[0])
        out_channels = [int(weights[f"{head}.projects.{i}.weight"].shape[0]) for i in range(4)]
        features = int(weights[f"{head}.scratch.layer1_rn.weight"].shape[0])
        head_hidden = int(weights[f"{head}.scratch.output_conv2.0.weight"].shape[0])
        patch_size = int(weights["pretrained.patch_embed.proj.weight"].shape[-1])
    except (KeyError, ValueError, IndexError) as exc:
        # a key that is not there, no block at all, or a tensor of another rank (0-d)
        family = "Depth-Anything-V2" if head == "depth_head" else "Video-Depth-Anything"
        what = f"missing {exc}" if isinstance(exc, KeyError) else f"unexpected tensor shapes: {exc}"
        raise ModelError(
            f"not a {family} checkpoint in the original layout ({what})",
            stage="load weights",
        ) from None
    if depth > _MAX_DEPTH:
        # block numbers come from key names: a damaged checkpoint must not ask for 100 000 blocks
        raise ModelError(f"the checkpoint names encoder block {depth - 1}; DINOv2 encoders have at most "
                         f"{_MAX_DEPTH} blocks", stage="load weights")
    layers = _LAYERS_BY_DEPTH.get(depth, [depth // 4 - 1, depth // 2 - 1, 3 * depth // 4 - 1, depth - 1])
    return {
        "encoder": {
            "embed_dim": embed_dim,
            "depth": depth,
            # Every DINOv2 preset uses 64-dimensional heads.
            "num_heads": max(1, embed_dim // 64),
            "mlp_hidden": mlp_hidden,
            "swiglu": swiglu,
            "patch_size": patch_size,
            "layer_norm_eps": 1e-6,
            "pos_embed_resize": "scale_factor_with_offset",
        },
        "head": {"features": features, "out_channels": out_channels, "head_hidden": head_hidden,
                 "metric": metric, "max_depth": max_depth if metric else 1.0},
        "layers": layers,
    }


def config_from_transformers(config: dict[str, Any]) -> dict:
    """The configuration of a transformers-layout folder (DepthAnythingConfig as JSON)."""
    backbone = config.get("backbone_config") or {}
    if config.get("model_type") != "depth_anything" or backbone.get("model_type", "dinov2") != "dinov2":
        raise ModelError(
            f"config.json describes a {config.get('model_type')!r} model, not Depth-Anything"
            " with a DINOv2 backbone",
            stage="load weights",
        )
    if [float(f) for f in config.get("reassemble_factors", [4, 2, 1, 0.5])] != [4, 2, 1, 0.5]:
        raise ModelError("only reassemble_factors [4, 2, 1, 0.5] are supported", stage="load weights")
    hidden = int(backbone.get("hidden_size", 768))
    mlp_hidden = int(hidden * float(backbone.get("mlp_ratio", 4)))
    swiglu = bool(backbone.get("use_swiglu_ffn", False))
    if swiglu:
        mlp_hidden = (int(mlp_hidden * 2 / 3) + 7) // 8 * 8
    if "out_indices" in backbone and backbone["out_indices"]:
        indices = [int(i) for i in backbone["out_indices"]]
    else:
        indices = [int(s.replace("stage", "")) for s in backbone.get("out_features", [])]
    if len(indices) != 4:
        raise ModelError("the backbone must expose four stages to the neck", stage="load weights")
    metric = config.get("depth_estimation_type", "relative") == "metric"
    return {
        "encoder": {
            "embed_dim": hidden,
            "depth": int(backbone.get("num_hidden_layers", 12)),
            "num_heads": int(backbone.get("num_attention_heads", 12)),
            "mlp_hidden": mlp_hidden,
            "swiglu": swiglu,
            "patch_size": int(backbone.get("patch_size", 14)),
            "layer_norm_eps": float(backbone.get("layer_norm_eps", 1e-6)),
            "pos_embed_resize": "exact_size",
        },
        "head": {
            "features": int(config.get("fusion_hidden_size", 64)),
            "out_channels": [int(c) for c in config.get("neck_hidden_sizes", [48, 96, 192, 384])],
            "head_hidden": int(config.get("head_hidden_size", 32)),
            "metric": metric,
            "max_depth": float(config.get("max_depth", 1.0)) if metric else 1.0,
        },
        # stage k is the output of block k (1-based); stage 0 is the embeddings.
        "layers": [i - 1 for i in indices],
    }


# ---- key names -------------------------------------------------------------------------------

_HF_RULES = [
    (r"backbone\.embeddings\.cls_token", "pretrained.cls_token"),
    (r"backbone\.embeddings\.mask_token", "pretrained.mask_token"),
    (r"backbone\.embeddings\.position_embeddings", "pretrained.pos_embed"),
    (r"backbone\.embeddings\.patch_embeddings\.projection\.(\w+)", r"pretrained.patch_embed.proj.\1"),
    (r"backbone\.encoder\.layer\.(\d+)\.norm([12])\.(\w+)", r"pretrained.blocks.\1.norm\2.\3"),
    (r"backbone\.encoder\.layer\.(\d+)\.attention\.output\.dense\.(\w+)", r"pretrained.blocks.\1.attn.proj.\2"),
    # transformers 5 names modules q/k/v/o_proj in memory (checkpoints keep the names above)
    (r"backbone\.encoder\.layer\.(\d+)\.attention\.o_proj\.(\w+)", r"pretrained.blocks.\1.attn.proj.\2"),
    (r"backbone\.encoder\.layer\.(\d+)\.layer_scale([12])\.lambda1", r"pretrained.blocks.\1.ls\2.gamma"),
    (r"backbone\.encoder\.layer\.(\d+)\.mlp\.fc([12])\.(\w+)", r"pretrained.blocks.\1.mlp.fc\2.\3"),
    (r"backbone\.encoder\.layer\.(\d+)\.mlp\.weights_in\.(\w+)", r"pretrained.blocks.\1.mlp.w12.\2"),
    (r"backbone\.encoder\.layer\.(\d+)\.mlp\.weights_out\.(\w+)", r"pretrained.blocks.\1.mlp.w3.\2"),
    (r"backbone\.layernorm\.(\w+)", r"pretrained.norm.\1"),
    (r"neck\.reassemble_stage\.layers\.(\d)\.projection\.(\w+)", r"depth_head.projects.\1.\2"),
    (r"neck\.reassemble_stage\.layers\.(\d)\.resize\.(\w+)", r"depth_head.resize_layers.\1.\2"),
    (r"head\.conv1\.(\w+)", r"depth_head.scratch.output_conv1.\1"),
    (r"head\.conv2\.(\w+)", r"depth_head.scratch.output_conv2.0.\1"),
    (r"head\.conv3\.(\w+)", r"depth_head.scratch.output_conv2.2.\1"),
]
_HF_COMPILED = [(re.compile(p + "$"), r) for p, r in _HF_RULES]
_QKV = re.compile(
    r"backbone\.encoder\.layer\.(\d+)\.attention\.(?:attention\.(query|key|value)|([qkv])_proj)\.(\w+)$")
_QKV_NAMES = {"q": "query", "k": "key", "v": "value"}


def original_keys_from_transformers(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Renames a transformers-layout state dict to the original names (q, k and v merged into
    one qkv projection). Keys that match no rule are kept, so that the model reports them."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in weights.items():
        m = _QKV.match(key)
        if m:
            part = m.group(2) or _QKV_NAMES[m.group(3)]
            qkv.setdefault((m.group(1), m.group(4)), {})[part] = value
            continue
        if m := re.match(r"neck\.convs\.(\d)\.(\w+)$", key):
            out[f"depth_head.scratch.layer{int(m.group(1)) + 1}_rn.{m.group(2)}"] = value
            continue
        if m := re.match(r"neck\.fusion_stage\.layers\.(\d)\.(.+)$", key):
            refinenet = f"depth_head.scratch.refinenet{4 - int(m.group(1))}"
            rest = m.group(2)
            rest = re.sub(r"^projection\.", "out_conv.", rest)
            rest = re.sub(r"^residual_layer([12])\.convolution([12])\.", r"resConfUnit\1.conv\2.", rest)
            out[f"{refinenet}.{rest}"] = value
            continue
        for pattern, replacement in _HF_COMPILED:
            if pattern.match(key):
                out[pattern.sub(replacement, key)] = value
                break
        else:
            out[key] = value
    for (layer, param), parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            for name, value in parts.items():
                out[f"backbone.encoder.layer.{layer}.attention.attention.{name}.{param}"] = value
            continue
        out[f"pretrained.blocks.{layer}.attn.qkv.{param}"] = torch.cat(
            [parts["query"], parts["key"], parts["value"]], dim=0)
    return out


def transformers_keys_from_original(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse renaming, for writing original-layout weights in the transformers layout
    (used by the tests to build matching checkpoints)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in weights.items():
        if m := re.match(r"pretrained\.blocks\.(\d+)\.attn\.qkv\.(\w+)$", key):
            q, k, v = value.chunk(3, dim=0)
            for name, part in (("query", q), ("key", k), ("value", v)):
                out[f"backbone.encoder.layer.{m.group(1)}.attention.attention.{name}.{m.group(2)}"] = part
            continue
        if m := re.match(r"depth_head\.scratch\.layer(\d)_rn\.(\w+)$", key):
            out[f"neck.convs.{int(m.group(1)) - 1}.{m.group(2)}"] = value
            continue
        if m := re.match(r"depth_head\.scratch\.refinenet(\d)\.(.+)$", key):
            rest = re.sub(r"^out_conv\.", "projection.", m.group(2))
            rest = re.sub(r"^resConfUnit([12])\.conv([12])\.", r"residual_layer\1.convolution\2.", rest)
            out[f"neck.fusion_stage.layers.{4 - int(m.group(1))}.{rest}"] = value
            continue
        inverse = {
            "pretrained.cls_token": "backbone.embeddings.cls_token",
            "pretrained.mask_token": "backbone.embeddings.mask_token",
            "pretrained.pos_embed": "backbone.embeddings.position_embeddings",
        }
        if key in inverse:
            out[inverse[key]] = value
            continue
        rules = [
            (r"pretrained\.patch_embed\.proj\.(\w+)", r"backbone.embeddings.patch_embeddings.projection.\1"),
            (r"pretrained\.blocks\.(\d+)\.norm([12])\.(\w+)", r"backbone.encoder.layer.\1.norm\2.\3"),
            (r"pretrained\.blocks\.(\d+)\.attn\.proj\.(\w+)", r"backbone.encoder.layer.\1.attention.output.dense.\2"),
            (r"pretrained\.blocks\.(\d+)\.ls([12])\.gamma", r"backbone.encoder.layer.\1.layer_scale\2.lambda1"),
            (r"pretrained\.blocks\.(\d+)\.mlp\.fc([12])\.(\w+)", r"backbone.encoder.layer.\1.mlp.fc\2.\3"),
            (r"pretrained\.norm\.(\w+)", r"backbone.layernorm.\1"),
            (r"depth_head\.projects\.(\d)\.(\w+)", r"neck.reassemble_stage.layers.\1.projection.\2"),
            (r"depth_head\.resize_layers\.(\d)\.(\w+)", r"neck.reassemble_stage.layers.\1.resize.\2"),
            (r"depth_head\.scratch\.output_conv1\.(\w+)", r"head.conv1.\1"),
            (r"depth_head\.scratch\.output_conv2\.0\.(\w+)", r"head.conv2.\1"),
            (r"depth_head\.scratch\.output_conv2\.2\.(\w+)", r"head.conv3.\1"),
        ]
        for pattern, replacement in rules:
            if re.match(pattern + "$", key):
                out[re.sub(pattern + "$", replacement, key)] = value
                break
        else:
            out[key] = value
    return out


# ---- building ---------------------------------------------------------------------------------


def _metric_from_filename(path: Path) -> tuple[bool, float]:
    name = path.name.lower()
    if "metric" in name or "hypersim" in name or "vkitti" in name:
        return True, 80.0 if ("vkitti" in name or "outdoor" in name) else 20.0
    return False, 1.0


def _create(path: Path, name: str, config: dict, weights: dict[str, torch.Tensor], device: str, precision: str,
            input_size: int):
    return prepared.build(path, precision, weights, lambda w: _core.create_depth_anything_v2(
        name, config, w, device, precision, input_size))


def build(spec: ModelSpec | None, path: Path, device: str, precision: str, input_size: int, **_: Any):
    """Builds the C++ model from a checkpoint file (original layout, either format) or a
    transformers-layout folder."""
    path = Path(path)
    if path.is_dir():
        config_path = path / "config.json"
        if not config_path.is_file():
            raise ModelError(f"{path} has no config.json (transformers layout)", stage="load weights")
        config = config_from_transformers(json.loads(config_path.read_text()))
        files = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
        if not files:
            raise ModelError(f"{path} holds no model weights (*.safetensors)", stage="load weights")
        weights: dict[str, torch.Tensor] = {}
        for f in files:
            weights.update(hub.read_weights(f))
        weights = original_keys_from_transformers(weights)
        name = spec.name if spec else path.name
        return _create(path, name, config, weights, device, precision, input_size)

    weights = hub.read_weights(path)
    if any(k.startswith("backbone.") for k in weights):
        raise ModelError(
            f"{path} is in the transformers layout: pass the folder that holds it with its"
            " config.json", stage="load weights")
    if spec is not None:
        metric = spec.kind == "metric"
        max_depth = float(spec.options.get("max_depth", 1.0))
    else:
        metric, max_depth = _metric_from_filename(path)
    config = config_from_original(weights, metric=metric, max_depth=max_depth)
    if spec is not None:
        preset = PRESETS[spec.options["encoder"]]
        if config["encoder"]["embed_dim"] != preset["embed_dim"]:
            raise ModelError(
                f"{path} holds a {config['encoder']['embed_dim']}-wide encoder, but {spec.name}"
                f" is {spec.options['encoder']} ({preset['embed_dim']} wide)", stage="load weights")
    return _create(path, spec.name if spec else path.stem, config, weights, device, precision, input_size)


def handles(path: Path) -> bool:
    """Whether a local checkpoint (file or transformers folder) belongs to this family."""
    path = Path(path)
    if path.is_dir():
        config = path / "config.json"
        try:
            return config.is_file() and json.loads(config.read_text()).get("model_type") == "depth_anything"
        except (OSError, ValueError):
            return False
    return "depth_anything_v2" in path.name or "depth-anything-v2" in path.name.lower()


def claims(keys: set[str]) -> bool:
    """Whether a state dict's keys are this family's (original or transformers layout)."""
    return any(k.startswith("depth_head.") for k in keys) or any(k.startswith("neck.fusion_stage.") for k in keys)


register_family(Family(name=FAMILY, builder=build, handles=handles, claims=claims,
                       default="depth-anything-v2-small", bf16_on_amx=True))
