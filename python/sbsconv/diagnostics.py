"""``sbsconv doctor`` / ``sbsconv.doctor()``: what this machine will actually run.

    report = sbsconv.doctor()            # shown as a table in notebooks, as text in terminals
    report.ok                            # False when something asked for cannot work
    report.choices                       # what convert() would pick, with the reasons

Devices (CUDA names, compute capability, memory; MPS), the versions that matter (torch and
its CUDA, FFmpeg and its hardware device types), every hardware and software video encoder
tried for real (a few tiny frames encoded into a temporary file, not just looked up), hardware
decoding tried on a real clip, the default model's cache status and whether the Hugging Face hub
answers, and the settings ``convert()`` would choose. Asking for something (``device="cuda"``,
``encoder="nvenc"``) makes the report fail when it cannot work.
"""

from __future__ import annotations

import html
import os
import platform
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sbsconv._native import _core

__all__ = ["Check", "DoctorReport", "doctor"]

# the encoders convert(encoder="auto") tries, in its order, per codec
ENCODERS = {"h264": ("h264_nvenc", "h264_videotoolbox", "libx264"),
            "hevc": ("hevc_nvenc", "hevc_videotoolbox", "libx265")}
ENCODER_FAMILIES = {"nvenc": ("h264_nvenc", "hevc_nvenc"), "videotoolbox": ("h264_videotoolbox", "hevc_videotoolbox"),
                    "software": ("libx264", "libx265")}


@dataclass(frozen=True)
class Check:
    area: str  # "device", "versions", "encoder", "decoder", "model"
    name: str
    status: str  # "ok", "unavailable" (fine unless asked for), "fail" (asked for and cannot work), "info"
    detail: str


@dataclass
class DoctorReport:
    checks: list[Check] = field(default_factory=list)
    choices: dict[str, str] = field(default_factory=dict)  # setting -> "value (why)"

    @property
    def ok(self) -> bool:
        return not any(c.status == "fail" for c in self.checks)

    def __str__(self) -> str:
        lines = []
        area = None
        for c in self.checks:
            if c.area != area:
                area = c.area
                lines.append(f"{area}:")
            mark = {"ok": "ok  ", "unavailable": "--  ", "fail": "FAIL", "info": "    "}[c.status]
            lines.append(f"  {mark} {c.name}: {c.detail}")
        lines.append("convert() would use:")
        lines.extend(f"  {k}: {v}" for k, v in self.choices.items())
        lines.append("everything asked for can work" if self.ok else "something asked for cannot work (FAIL above)")
        return "\n".join(lines)

    def _repr_html_(self) -> str:  # notebooks
        rows = "".join(
            f"<tr><td>{html.escape(c.area)}</td><td>{html.escape(c.name)}</td>"
            f"<td style='color:{ {'ok': 'green', 'fail': 'red'}.get(c.status, 'gray') }'>{c.status}</td>"
            f"<td>{html.escape(c.detail)}</td></tr>" for c in self.checks)
        choices = "".join(f"<tr><td>{html.escape(k)}</td><td colspan=3>{html.escape(v)}</td></tr>"
                          for k, v in self.choices.items())
        return (f"<table><tr><th>area</th><th>check</th><th>status</th><th>detail</th></tr>{rows}"
                f"<tr><th colspan=4>convert() would use</th></tr>{choices}</table>")


def _try_encoder(name: str, codec: str) -> str | None:
    """None when `name` encodes a few tiny frames into a temporary file, else the reason."""
    from sbsconv import media
    from sbsconv.errors import SbsconvError

    with tempfile.TemporaryDirectory() as tmp:
        try:
            with media.VideoWriter(Path(tmp) / "probe.mp4", width=256, height=144, fps=25, codec=codec,
                                   encoder=name) as writer:
                writer.write(torch.zeros(3, 3, 144, 256, dtype=torch.uint8))
                used = writer.encoder
            return None if used == name else f"{used} ran instead"
        except SbsconvError as exc:
            return str(exc).split("\n")[0]


def _try_decoder(hwaccel: str, clip: str) -> str | None:
    """None when the hardware decoder decodes a few frames of `clip`, else the reason."""
    from sbsconv.errors import SbsconvError

    try:
        reader = _core.VideoReader(clip, duration=0.2, hwaccel=hwaccel, device="cuda" if hwaccel == "cuda" else "cpu")
        reader.read(2)
        return None if reader.hardware_decoder else (reader.hardware_fallback_reason or "decoded in software")
    except SbsconvError as exc:
        return str(exc).split("\n")[0]


def doctor(*, device: str = "auto", encoder: str = "auto", codec: str = "h264",
           model: str = "depth-anything-v2-small", hub: bool = True) -> DoctorReport:
    """What this machine will run; ``device``, ``encoder`` and ``codec`` are what the caller
    intends to ask ``convert()`` for (checked: a request that cannot work is a failure).
    ``hub=False`` skips contacting the Hugging Face hub."""
    from sbsconv import models
    from sbsconv.errors import OptionError

    if codec == "auto":  # convert()'s default: H.264 (HEVC only where NVENC's H.264 cannot take the size)
        codec = "h264"
    if codec not in ENCODERS:
        raise OptionError(f"codec must be h264 or hevc, got {codec!r}")
    if encoder not in ("auto", *ENCODER_FAMILIES) and not any(encoder in names for names in ENCODERS.values()):
        raise OptionError(f"encoder must be auto, nvenc, videotoolbox, software or an FFmpeg encoder name, "
                          f"got {encoder!r}")
    report = DoctorReport()
    add = report.checks.append

    # ---- devices --------------------------------------------------------------------------------
    cuda = torch.cuda.is_available()
    if cuda:
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            free, total = torch.cuda.mem_get_info(i)
            add(Check("device", f"cuda:{i}", "ok", f"{p.name}, compute capability {p.major}.{p.minor}, "
                      f"{free / 2**30:.1f} of {total / 2**30:.1f} GiB free"))
    else:
        why = "this torch has no CUDA" if torch.version.cuda is None else "no NVIDIA GPU or driver is visible"
        asked = device.startswith("cuda")
        add(Check("device", "cuda", "fail" if asked else "unavailable", why))
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    add(Check("device", "mps", "ok" if mps else ("fail" if device == "mps" else "unavailable"),
              "Apple Silicon GPU" if mps else "not an Apple Silicon Mac"))
    flags = ""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            text = f.read()
        model_name = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                           if line.startswith("model name")), platform.processor())
        isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8") if f" {f}" in text]
        flags = f"{model_name}; {', '.join(isa) or 'no AVX2'}"
    add(Check("device", "cpu", "ok", f"{os.cpu_count()} cores, torch uses {torch.get_num_threads()} threads"
              + (f"; {flags}" if flags else "")))

    # ---- versions -------------------------------------------------------------------------------
    info = _core.ffmpeg_info()
    add(Check("versions", "sbsconv", "info", _core.__version__))
    add(Check("versions", "python", "info", platform.python_version()))
    add(Check("versions", "torch", "info", f"{torch.__version__} (built with CUDA {torch.version.cuda or 'none'})"))
    add(Check("versions", "ffmpeg", "info", f"{info['ffmpeg']} (libavcodec {info['libavcodec']}); hardware "
              f"device types: {info.get('hwaccels') or 'none'}"))

    # ---- encoders, tried for real -------------------------------------------------------------------
    wanted = set(ENCODER_FAMILIES.get(encoder, (encoder,))) if encoder != "auto" else set()
    chosen = None
    for name in ENCODERS[codec]:
        reason = _try_encoder(name, codec)
        if reason is None and chosen is None:
            chosen = name
        status = "ok" if reason is None else ("fail" if name in wanted else "unavailable")
        add(Check("encoder", name, status, "encodes" if reason is None else reason))
    if encoder != "auto" and not wanted & set(ENCODERS[codec]):
        add(Check("encoder", encoder, "fail", f"not an encoder for {codec}"))
    # layout="spatial" (Note [Spatial video through x265]): an external x265 with multiview
    mvhevc = _core.find_mvhevc_encoder()
    add(Check("encoder", "x265 MV-HEVC (layout='spatial')", "ok" if "path" in mvhevc else "unavailable",
              f"{mvhevc['path']} ({mvhevc['version']})" if "path" in mvhevc else mvhevc["error"]))

    # ---- decoders ---------------------------------------------------------------------------------
    clip = str(Path(__file__).parent / "samples" / "tokyo_walk_4s.mp4")
    for hw in ("cuda", "videotoolbox"):
        if hw not in (info.get("hwaccels") or "").split(","):
            add(Check("decoder", hw, "unavailable", "this FFmpeg was built without it"))
            continue
        if hw == "cuda" and not cuda:
            add(Check("decoder", "cuda (NVDEC)", "unavailable", "no CUDA device"))
            continue
        reason = _try_decoder(hw, clip)
        add(Check("decoder", hw, "ok" if reason is None else "unavailable", "decodes" if reason is None else reason))
    add(Check("decoder", "software", "ok", "FFmpeg's decoders with its threads"))

    # ---- the default model --------------------------------------------------------------------------
    spec = models.spec(model)
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(spec.repo_id, spec.filename)
    where = f"{spec.repo_id}/{spec.filename}"
    if isinstance(cached, str):
        add(Check("model", model, "ok", f"cached at {cached}"))
    else:
        from sbsconv.models import hub as hub_module

        reachable = hub and hub_module.hub_reachable()
        add(Check("model", model, "ok" if reachable else "unavailable",
                  f"{where} is not cached; " + ("it downloads on first use" if reachable else
                                                f"the hub cannot be reached: `hf download {spec.repo_id} "
                                                f"{spec.filename}` on a connected machine, or checkpoint=PATH")))

    # ---- what convert() would pick ------------------------------------------------------------------
    picked = ("cuda" if cuda else "mps" if mps else "cpu") if device == "auto" else device
    report.choices["device"] = picked + (" (auto: cuda, then mps, then cpu)" if device == "auto" else " (asked)")
    if picked.split(":")[0] == "cpu":  # what the loader picks
        precision, why = models.auto_cpu_precision_for(models.families()[spec.family])
        report.choices["precision"] = f"{precision} (auto on the CPU: {why.split(': ', 1)[-1]})"
    else:
        report.choices["precision"] = "fp16 (auto on a GPU)"
    report.choices["encoder"] = (f"{chosen} (the first of {', '.join(ENCODERS[codec])} that encodes)"
                                 if chosen else "none: no encoder for this codec works here")
    report.choices["decoder"] = ("NVDEC when the input allows, else software" if picked.startswith("cuda") and cuda
                                 else "software (FFmpeg's threads)")
    if chosen is None:
        add(Check("encoder", codec, "fail", "no encoder works for this codec"))
    return report
