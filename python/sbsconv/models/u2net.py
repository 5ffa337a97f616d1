"""U²-Net salient-object masks (C++: cpp/sbsconv/depth/U2Net.h, Note [U2-Net salient-object
masks]): the mask model of the metric-depth toolboxes' subject step, behind the depth models'
loading, precision and batching.

Two checkpoints of the reference (xuebinqin/U-2-Net, Apache-2.0), in its published layout (a
pickled state dict, ``stage1.rebnconvin.conv_s1.weight`` ...): ``u2net.pth`` (full, 176 MB)
and ``u2netp.pth`` (small, 4.7 MB). Which one a file holds is read off its shapes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from sbsconv._native import _core
from sbsconv.errors import ModelError
from sbsconv.models import hub
from sbsconv.models.registry import Family, ModelSpec, register, register_family

FAMILY = "u2net"
INPUT_SIZE = 320  # the reference's RescaleT(320)
# The reference publishes its weights on Google Drive; this Hugging Face repository mirrors
# both files unchanged (the layout above).
REPO_ID = "tomjackson2023/rembg"

register(ModelSpec(
    name="u2net",
    family=FAMILY,
    repo_id=REPO_ID,
    filename="u2net.pth",
    license="Apache-2.0",
    kind="mask",
    description="U²-Net: salient-object masks (the subject), full model",
))
register(ModelSpec(
    name="u2netp",
    family=FAMILY,
    repo_id=REPO_ID,
    filename="u2netp.pth",
    license="Apache-2.0",
    kind="mask",
    description="U²-Net small (u2netp): salient-object masks at a fraction of the cost",
))

_FIRST = "stage1.rebnconvin.conv_s1.weight"
_STAGE2 = "stage2.rebnconvin.conv_s1.weight"


def is_small(weights: dict[str, torch.Tensor]) -> bool:
    """u2netp (64 channels out of stage 2) or the full model (128)."""
    if _STAGE2 not in weights:
        raise ModelError(f"not a U²-Net checkpoint: it has no {_STAGE2}", stage="load weights")
    channels = int(weights[_STAGE2].shape[0])
    if channels not in (64, 128):
        raise ModelError(f"not a U²-Net checkpoint: stage 2 gives {channels} channels (u2netp 64, u2net 128)",
                         stage="load weights")
    return channels == 64


def build(spec: ModelSpec | None, path: Path, device: str, precision: str, input_size: int, **_: Any):
    path = Path(path)
    name = spec.name if spec else path.stem
    if path.is_dir():
        raise ModelError(f"{path} is a folder; U²-Net loads from its .pth file", stage="load weights")
    weights = hub.read_weights(path)
    # a checkpoint saved from nn.DataParallel names every key module.*
    if weights and all(k.startswith("module.") for k in weights):
        weights = {k[len("module."):]: v for k, v in weights.items()}
    return _core.create_u2net(name, is_small(weights), weights, device, precision, input_size)


def handles(path: Path) -> bool:
    return Path(path).is_file() and bool(re.match(r"u2netp?([_.-]|$)", Path(path).name.lower()))


def claims(keys: set[str]) -> bool:
    return _FIRST in keys


register_family(Family(name=FAMILY, builder=build, handles=handles, claims=claims, default="u2netp",
                       input_size=INPUT_SIZE, product="mask", int8=False))
