"""The registry of depth approaches: every model module registers its named checkpoints here,
so that ``sbsconv.models.load`` and ``sbsconv-bench`` can iterate them and a new approach is
one new module."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ModelSpec:
    """One named checkpoint of a model family."""

    name: str  # registry name, e.g. "depth-anything-v2-small"
    family: str  # the module that builds it, e.g. "depth-anything-v2"
    repo_id: str  # Hugging Face repository
    filename: str  # file in that repository
    license: str  # SPDX-style identifier of the checkpoint's licence
    kind: str  # "relative", "relative-depth", "metric", or "mask" (not depth: a subject mask)
    description: str = ""
    options: dict[str, Any] = field(default_factory=dict)  # family-specific (encoder size ...)
    commercial: bool | None = None  # None: read off the licence name (NC = non-commercial)
    # Another repository holding the same weights in the transformers layout, tried when
    # ``repo_id`` cannot be fetched (its files: config.json and safetensors).
    alternative_repo: str | None = None

    @property
    def commercial_use(self) -> bool:
        if self.commercial is not None:
            return self.commercial
        return "NC" not in self.license.upper()


@dataclass(frozen=True)
class Family:
    """How to build a family's models from a checkpoint file, a transformers folder, or a
    registry entry. ``builder(spec, path, device, precision, input_size, **options)`` returns
    the core model (options a family does not use are ignored); ``handles(path)`` says from
    its name whether an unnamed local checkpoint belongs to the family, ``claims(keys)`` from
    its state dict's keys."""

    name: str
    builder: Callable[..., Any]
    handles: Callable[[Path], bool]
    claims: Callable[[set[str]], bool] | None = None
    default: str | None = None  # the registry name that stands for the family (sbsconv-bench)
    # input_size when the caller gives none: the side the family's reference resizes to
    input_size: int = 518
    # what its models make: "depth", or "mask" (salient-object masks: sbsconv.models.MaskModel)
    product: str = "depth"
    # whether it has an int8 path on the CPU (precision="auto" there picks int8 only if so)
    int8: bool = True
    # whether precision="auto" picks bf16 on a CPU with AMX-BF16, where its bf16 path was measured
    # faster than int8 (sbsconv.models.precision)
    bf16_on_amx: bool = False


_SPECS: dict[str, ModelSpec] = {}
_FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> None:
    _FAMILIES[family.name] = family


def register(spec: ModelSpec) -> None:
    if spec.name in _SPECS:
        raise ValueError(f"model {spec.name!r} is registered twice")
    _SPECS[spec.name] = spec


def specs() -> dict[str, ModelSpec]:
    return dict(_SPECS)


def families() -> dict[str, Family]:
    return dict(_FAMILIES)
