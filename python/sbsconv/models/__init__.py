"""Depth models: the registry of approaches, checkpoint resolution and download, and the
Python face of the C++ models.

    model = sbsconv.models.load("depth-anything-v2-small")
    depth = model.infer(frames)          # uint8 [N,3,H,W] -> float [N,1,H,W]

``model`` is a registry name (``sbsconv.models.available()``), a Hugging Face repository id
(transformers layout: config.json + safetensors), or a local path (a checkpoint file or a
transformers-layout folder). ``checkpoint`` replaces the download for a registry name.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sbsconv._native import _core, flush_log
from sbsconv.errors import ModelError, OptionError
from sbsconv.options import check_device
from sbsconv.models import hub
from sbsconv.models.registry import ModelSpec, families, specs

# Model families register themselves on import.
from sbsconv.models import depth_anything_v2  # noqa: E402,F401  (registration)
from sbsconv.models import video_depth_anything  # noqa: E402,F401  (registration)
from sbsconv.models import depth_pro  # noqa: E402,F401  (registration)
from sbsconv.models import depth_anything_3  # noqa: E402,F401  (registration)
from sbsconv.models import u2net  # noqa: E402,F401  (registration)

logger = logging.getLogger("sbsconv")

__all__ = ["DepthEstimate", "DepthModel", "MaskModel", "ModelSpec", "approaches", "auto_cpu_precision_for",
           "available", "depth_models", "load", "spec"]

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class DepthEstimate:
    depth: torch.Tensor  # float [N,1,H,W]
    fov_degrees: torch.Tensor | None  # [N] for models that estimate the field of view
    # [N,3,4] camera-to-world poses (OpenCV axes, the sequence's first frame at the origin) for
    # models that estimate the camera's motion (Depth Anything 3 any-view)
    camera_to_world: torch.Tensor | None = None


# What the engine holds per pixel of each frame in flight (frames, depth, disparity, the packed
# output, their queues): kBytesInFlightPerPixel in cpp/sbsconv/pipeline/Engine.cpp.
ENGINE_BYTES_PER_PIXEL = 120

# fitting_batch's measurements, by what they depend on: the checkpoint, its precision and
# input size, the device and the frame size -> (bytes per frame, fixed bytes) of inference.
# Measured once per process (each measurement runs the model twice), then only the device's
# free memory is asked again.
_MEMORY_PER_FRAME: dict[tuple, tuple[int, int]] = {}


class DepthModel:
    """A loaded depth model (the C++ implementation), ready for inference.

    ``forward(pixel_values)`` runs the network on normalised input (as the reference
    network does); ``infer(frames)`` takes uint8 RGB frames ``[N,3,H,W]`` and returns depth
    ``[N,1,H,W]`` at frame size with the reference pre/post-processing on the device.
    ``kind`` is "relative" (inverse depth, larger is nearer), "relative-depth" (depth up to a
    scale, larger is farther: Depth Anything 3; the engine inverts it) or "metric" (metres).
    """

    def __init__(self, core: Any, spec: ModelSpec | None, source: str, input_size: int,
                 precision: str = "auto") -> None:
        self._core = core
        self.spec = spec
        self.source = source
        self.input_size = input_size
        self.precision = precision  # as asked, "auto" resolved on the CPU (int8, bf16, fp32)

    @property
    def name(self) -> str:
        return self._core.name

    @property
    def kind(self) -> str:
        return self._core.kind

    @property
    def device(self) -> torch.device:
        return torch.device(self._core.device)

    @property
    def dtype(self) -> str:
        return self._core.dtype

    @property
    def head_dtype(self) -> str:
        """The type the depth head computes in: ``dtype``, but BFloat16 under int8 on a CPU with
        bf16 dot products (Note [int8 with the head in bfloat16])."""
        return self._core.head_dtype

    @property
    def license(self) -> str | None:
        return self.spec.license if self.spec else None

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        try:
            return self._core.forward(pixel_values)
        finally:
            flush_log()

    def fitting_batch(self, height: int, width: int, *, limit: int = 32, share: float = 0.5) -> tuple[int, str]:
        """On a CUDA device: the batch size whose depth inference and frames in flight fit in
        ``share`` of the device's free memory for frames of ``height`` x ``width``. The model's
        cost per frame is measured, not guessed: it runs on one and on two blank frames of that
        size and the difference in peak memory is one frame's share (the rest is fixed), once per
        checkpoint, precision, input size, device and frame size in a process. The
        engine's buffers add about ``ENGINE_BYTES_PER_PIXEL`` per pixel of each frame in flight.
        Returns ``(batch, reason)``; a model that keeps state between calls (a video model) is
        not probed and keeps its preferred batch."""
        device = self.device
        if device.type != "cuda" or self.temporal:
            batch = int(self._core.preferred_batch(device.type != "cpu"))
            return batch, f"batch_size {batch}: the model's preferred batch"
        key = (self.source, self.name, self.dtype, self.input_size, str(device), height, width)
        if key not in _MEMORY_PER_FRAME:
            torch.cuda.synchronize(device)
            peaks = []
            for n in (1, 2):
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
                self.infer(torch.zeros(n, 3, height, width, dtype=torch.uint8, device=device))
                torch.cuda.synchronize(device)
                peaks.append(torch.cuda.max_memory_allocated(device) - base)
            torch.cuda.empty_cache()
            per_frame_measured = max(peaks[1] - peaks[0], 1)
            _MEMORY_PER_FRAME[key] = (per_frame_measured, max(peaks[0] - per_frame_measured, 0))
        model_per_frame, fixed = _MEMORY_PER_FRAME[key]
        free, _ = torch.cuda.mem_get_info(device)
        per_frame = model_per_frame + height * width * ENGINE_BYTES_PER_PIXEL
        batch = int(max(1, min(limit, (free * share - fixed) // per_frame)))
        return batch, (f"batch_size {batch}: {free / 2**30:.1f} GiB free on {device}, about "
                       f"{per_frame / 2**20:.0f} MiB per {width}x{height} frame (half the free memory, at most {limit})")

    def estimate(self, frames: torch.Tensor) -> DepthEstimate:
        if not isinstance(frames, torch.Tensor) or frames.dtype != torch.uint8 or frames.dim() != 4:
            raise OptionError("frames must be a uint8 tensor [N, 3, H, W]")
        try:
            out = self._core.infer(frames)
        finally:
            flush_log()
        return DepthEstimate(depth=out["depth"], fov_degrees=out["fov_degrees"],
                             camera_to_world=out["camera_to_world"])

    @property
    def relative(self) -> bool:
        """Whether the depth has no unit (relative or relative-depth): the pipeline then works
        with normalised inverse depth (:meth:`pipeline_depth`)."""
        return self.kind != "metric"

    def pipeline_depth(self, depth: torch.Tensor) -> torch.Tensor:
        """The model's depth as the pipeline takes it: inverse depth for "relative-depth",
        as it is otherwise (the engine's own conversion)."""
        return self._core.pipeline_depth(depth)

    def infer(self, frames: torch.Tensor) -> torch.Tensor:
        return self.estimate(frames).depth

    @property
    def temporal(self) -> bool:
        """Whether the model keeps state across calls (a video model): ``estimate`` may then
        hold frames back until their window is complete; ``flush`` releases them."""
        return bool(self._core.temporal)

    def flush(self) -> DepthEstimate:
        """Releases the depth a temporal model still holds (the end of a sequence)."""
        try:
            out = self._core.flush()
        finally:
            flush_log()
        depth = out["depth"]
        if depth is None:
            depth = torch.empty(0, 1, 0, 0)
        return DepthEstimate(depth=depth, fov_degrees=out["fov_degrees"], camera_to_world=out["camera_to_world"])

    def reset(self) -> None:
        """Starts a new sequence (a temporal model forgets the frames before)."""
        self._core.reset()

    def state(self) -> dict[str, torch.Tensor]:
        return dict(self._core.state())

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self._core.load_state(state)

    def estimate_clip(self, frames: torch.Tensor) -> DepthEstimate:
        """Depth for every frame of ``frames`` as one sequence (a temporal model is reset
        before and flushed after); for image models the same as ``estimate``."""
        if not self.temporal:
            return self.estimate(frames)
        self.reset()
        try:
            first = self.estimate(frames)
            rest = self.flush()
        finally:
            self.reset()
        parts = [d for d in (first.depth, rest.depth) if d.numel()]

        def joined(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
            both = [t for t in (a, b) if t is not None and t.numel()]
            return torch.cat(both) if both else None

        return DepthEstimate(depth=torch.cat(parts) if parts else first.depth,
                             fov_degrees=joined(first.fov_degrees, rest.fov_degrees),
                             camera_to_world=joined(first.camera_to_world, rest.camera_to_world))

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        return self.infer(frames)

    def __repr__(self) -> str:
        return (f"DepthModel({self.name!r}, kind={self.kind!r}, device={self._core.device!r},"
                f" dtype={self.dtype!r}, input_size={self.input_size})")


class MaskModel(DepthModel):
    """A loaded salient-object mask model (U²-Net; the C++ implementation), with the depth
    models' loading, precision and batching. ``infer(frames)`` / ``masks(frames)`` take uint8
    RGB frames ``[N,3,H,W]`` and return float ``[N,1,H,W]`` in [0, 1], 1 on the subject, with
    the reference's pre- and post-processing on the device. It is not depth: the engine's
    ``model=`` refuses it; ``mask_model=`` takes it."""

    def masks(self, frames: torch.Tensor) -> torch.Tensor:
        return self.infer(frames)

    @property
    def relative(self) -> bool:
        return False

    def __repr__(self) -> str:
        return (f"MaskModel({self.name!r}, device={self._core.device!r}, dtype={self.dtype!r},"
                f" input_size={self.input_size})")


def _wrap(family, core: Any, spec: ModelSpec | None, source: str, input_size: int, precision: str) -> DepthModel:
    """The Python face of a built model: its family says what it makes."""
    cls = MaskModel if family.product == "mask" else DepthModel
    return cls(core, spec, source, input_size, precision)


def available() -> list[str]:
    """The registry names, sorted."""
    return sorted(specs())


def depth_models() -> list[str]:
    """The registry names of depth models (not the mask models), sorted: what model= takes."""
    return sorted(n for n, s in specs().items() if families()[s.family].product == "depth")


def approaches() -> list[str]:
    """One registry name per depth-model family, at its defaults: what sbsconv-bench compares."""
    return [f.default for f in families().values() if f.default and f.product == "depth"]


def spec(name: str) -> ModelSpec:
    try:
        return specs()[name]
    except KeyError:
        raise ModelError(
            f"unknown model {name!r}; known models: {', '.join(available())}"
            " (or pass a Hugging Face repo id or a local path)", stage="load model") from None


def _validate(device: str, precision: str, input_size: int | None) -> None:
    if input_size is None:
        pass
    elif not isinstance(input_size, int) or isinstance(input_size, bool) or not 14 <= input_size <= 4096:
        raise OptionError(f"input_size must be an integer within 14..4096, got {input_size!r}")
    if precision not in ("auto", "fp32", "fp16", "bf16", "int8"):
        raise OptionError(f"precision must be auto, fp32, fp16, bf16 or int8 (CPU), not {precision!r}")
    check_device("device", device)


def _announce(s: ModelSpec) -> None:
    if not s.commercial_use:
        logger.warning(
            "%s is licensed %s: non-commercial use only (%s)", s.name, s.license,
            f"https://huggingface.co/{s.repo_id}")
    else:
        logger.info("%s: licence %s", s.name, s.license)


def _family_for_path(path: Path):
    # Most specific first: a Video-Depth-Anything file name also says "depth_anything".
    ordered = sorted(families().values(), key=lambda f: f.name != video_depth_anything.FAMILY)
    for family in ordered:
        if family.handles(path):
            return family
    # No name hint: the state dict's keys tell.
    errors = [family.name for family in ordered]
    if path.is_file():
        keys = set(hub.read_weights(path))
        for family in ordered:
            if family.claims is not None and family.claims(keys):
                return family
    raise ModelError(
        f"cannot tell which model family {path} belongs to (known: {', '.join(errors)});"
        " pass a registry name with checkpoint=PATH", stage="load model")


def load(
    model: str | os.PathLike[str] = "depth-anything-v2-small",
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    device: str = "auto",
    precision: str = "auto",
    input_size: int | None = None,
    temporal_mode: str = "windowed",
) -> DepthModel:
    """Loads a depth model (see the module docstring for what ``model`` may be).

    ``device``: "auto" (cuda, then mps, then cpu), "cpu", "cuda", "cuda:N", "mps".
    ``precision``: "auto" (fp16 on GPUs; on the CPU int8 where it has int8 dot products, bf16 for
    Depth-Anything-V2 where it has AMX-BF16, else fp32: sbsconv.models.precision), "fp32",
    "fp16", "bf16", "int8" (CPU: the encoder's linear layers as int8 GEMMs, Note [int8 linear
    layers]).
    ``input_size``: the side the frames are resized to before the network; None: the family's
    default (518 for the shorter side of Depth-Anything-V2 and Video-Depth-Anything, 504 for
    the longer side of Depth Anything 3, as their references).
    ``temporal_mode``: how a video model (Video-Depth-Anything) runs: "windowed" (the
    reference's overlapping 32-frame windows, most accurate) or "streaming" (one frame at a
    time against cached attention, lower latency and memory); image models ignore it.
    """
    _validate(device, precision, input_size)
    if temporal_mode not in ("windowed", "streaming"):
        raise OptionError(f"temporal_mode must be 'windowed' or 'streaming', not {temporal_mode!r}")
    extra = {"temporal_mode": temporal_mode}
    device = str(device)
    model_str = os.fspath(model)
    try:
        if model_str in specs():
            s = specs()[model_str]
            _announce(s)
            path = Path(checkpoint) if checkpoint is not None else _download_spec(s)
            return _build(families()[s.family], s, path, str(path), device, precision, input_size, extra)
        if checkpoint is not None:
            raise OptionError(
                f"checkpoint= replaces the download of a registry model; {model_str!r} is not one"
                f" (known: {', '.join(available())})")
        path = Path(model_str).expanduser()
        if path.exists():
            return _build(_family_for_path(path), None, path, str(path), device, precision, input_size, extra)
        if _REPO_ID.match(model_str) and not model_str.startswith((".", "/")):
            return _load_repo(model_str, device, precision, input_size, extra)
        raise ModelError(
            f"unknown model {model_str!r}: not a registry name ({', '.join(available())}),"
            " not an existing path, not a Hugging Face repo id", stage="load model")
    finally:
        flush_log()


def _build(family, s: ModelSpec | None, path: Path, source: str, device: str, precision: str,
           input_size: int | None, extra: dict) -> DepthModel:
    """Builds a family's model from a checkpoint path, with its defaults for what is not given."""
    precision = _cpu_precision(device, precision, family)
    input_size = input_size or family.input_size
    core = family.builder(s, path, device, precision, input_size, **extra)
    return _wrap(family, core, s, source, input_size, precision)


def _on_cpu(device: str) -> bool:
    if device == "auto":
        mps = getattr(torch.backends, "mps", None)
        return not torch.cuda.is_available() and not (mps is not None and mps.is_available())
    return torch.device(device).type == "cpu"


def auto_cpu_precision_for(family) -> tuple[str, str]:
    """(precision, why): what precision="auto" is on this CPU for a model of ``family`` (the one
    place it is decided; the loader and sbsconv.doctor() ask here)."""
    if not family.int8:
        return "fp32", f"fp32: {family.name} has no int8 path"
    from sbsconv.models.precision import auto_cpu_precision

    return auto_cpu_precision(bf16_on_amx=family.bf16_on_amx)


def _cpu_precision(device: str, precision: str, family) -> str:
    """precision="auto" on the CPU: chosen for this processor and the family, and said."""
    if precision != "auto" or not _on_cpu(device):
        return precision
    chosen, why = auto_cpu_precision_for(family)
    logger.info("precision auto on the CPU: %s", why)
    return chosen



def _download_spec(s: ModelSpec) -> Path:
    """A registry model's checkpoint: its file, or else the transformers-layout copy in its
    alternative repository (a folder)."""
    try:
        return hub.download(s.repo_id, s.filename)
    except ModelError as first:
        if s.alternative_repo is None:
            raise
        try:
            files = hub.list_repo_files(s.alternative_repo)
            wanted = [f for f in files if f == "config.json" or f.endswith(".safetensors")
                      or f == "preprocessor_config.json"]
            if "config.json" not in wanted:
                raise first
            paths = [hub.download(s.alternative_repo, f) for f in wanted]
        except ModelError:
            raise first from None
        logger.info("%s: using %s (transformers layout)", s.name, s.alternative_repo)
        return paths[0].parent


def _load_repo(repo_id: str, device: str, precision: str, input_size: int | None, extra: dict) -> DepthModel:
    """A Hugging Face repository: the transformers layout, or a single original checkpoint."""
    files = hub.list_repo_files(repo_id)
    # A registry entry for the same repository knows its file and family.
    for s in specs().values():
        if s.repo_id == repo_id and s.filename in files:
            _announce(s)
            path = hub.download(repo_id, s.filename)
            return _build(families()[s.family], s, path, str(path), device, precision, input_size, extra)
    if "config.json" in files:
        weight_files = [f for f in files if f.endswith(".safetensors")]
        if not weight_files:
            raise ModelError(f"{repo_id} has a config.json but no safetensors weights", stage="load model")
        config_path = hub.download(repo_id, "config.json")
        for f in weight_files:
            hub.download(repo_id, f)
        folder = config_path.parent
        return _build(_family_for_path(folder), None, folder, repo_id, device, precision, input_size, extra)
    checkpoints = [f for f in files if f.endswith((".pth", ".pt", ".safetensors"))]
    if len(checkpoints) == 1:
        path = hub.download(repo_id, checkpoints[0])
        return _build(_family_for_path(path), None, path, f"{repo_id}/{checkpoints[0]}", device, precision,
                      input_size, extra)
    raise ModelError(
        f"{repo_id} holds no single checkpoint sbsconv can load (files: {', '.join(files[:20])})",
        stage="load model")
