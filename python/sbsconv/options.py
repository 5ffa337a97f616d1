"""``sbsconv.ConvertOptions``: every option of a conversion, typed, described and checked once.

    options = sbsconv.ConvertOptions(layout="half-sbs", divergence=2.5)
    sbsconv.convert("clip.mp4", "clip_3d.mp4", options)
    sbsconv.convert("other.mp4", "other_3d.mp4", options, codec="hevc")   # options + changes

Each field carries its help text, its group ("model", "3d", "stability", "layout",
"encoding", "timing", "output", "advanced") and its constraint (:class:`Range`,
:class:`Choice` or :class:`Check`). ``convert()``, the command line, the notebook form,
previews and ``sbsconv-bench`` are all generated from :meth:`ConvertOptions.fields`, so they
offer the same options with the same names, defaults and checks. A ``ConvertOptions`` is
checked when it is made (and by :meth:`~ConvertOptions.replace`): everything that needs no
file is refused there with an :class:`~sbsconv.errors.OptionError`; what needs the input
(the eye size in pixels, the frame rate of segments) is worked out by the run's plan
(:func:`sbsconv.plan.build_plan`, Note [Conversion plan]) once the input has been probed.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import math
import numbers
import os
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from sbsconv.errors import OptionError

__all__ = ["CONTAINERS", "DEPTH_FORMATS", "GROUPS", "Check", "Choice", "ConvertOptions", "OptionField", "Range"]

GROUPS = ("model", "3d", "stability", "layout", "encoding", "timing", "output", "advanced")
CONTAINERS = (".mp4", ".m4v", ".mov", ".mkv")  # what convert() writes
# Note [Depth files] (cpp/sbsconv/media/DepthFile.h): the depth products' formats
DEPTH_FORMATS = ("gray16", "gray8", "rgb-packed", "png16", "exr", "npy", "colormap")
# the stereo tag written into the container for each layout (none for anaglyphs)
STEREO_TAG = {"full-sbs": "sbs", "half-sbs": "sbs", "cross-eyed": "sbs-rl", "full-tb": "tb",
              "half-tb": "tb", "apple-3d": "sbs", "vr180": "sbs", "vr180-tb": "tb"}
# Apple's view packing (vexu/pack/pkin) of each frame-packed layout; spatial video has two
# layers, not a packing ("": no pack box)
APPLE_PACKING = {"full-sbs": "side", "half-sbs": "side", "full-tb": "over", "half-tb": "over",
                 "apple-3d": "side", "spatial": "", "vr180": "side", "vr180-tb": "over"}
# Layouts that exist only as MP4/MOV files with Apple's boxes
APPLE_LAYOUTS = ("apple-3d", "spatial")
# convert()'s keywords that are not options (how the call reports, not what it makes)
CALL_KEYWORDS = ("progress", "on_progress", "cancel")


# ---- the vocabulary: layouts, eye sizes, the 3D defaults (sbsconv.stereo renders them) ----

LAYOUTS = (
    "full-sbs", "half-sbs", "full-tb", "half-tb", "cross-eyed",
    "anaglyph", "anaglyph-color", "anaglyph-gray", "separate",
)
# Output eye heights by name; widths follow the source's aspect ratio.
EYE_SIZE_PRESETS = {"720": 720, "1080": 1080, "1440": 1440, "2160": 2160, "720p": 720,
                    "1080p": 1080, "1440p": 1440, "2160p": 2160, "4k": 2160}
# Headset layouts on top of the frame packings (issue 15): apple-3d packs as full-sbs (its
# difference is the file's boxes); spatial renders full-sbs too and the writer encodes the two
# halves as two MV-HEVC views; vr180/vr180-tb re-project each eye onto a 180-degree canvas.
HEADSET_LAYOUTS = {"apple-3d": "full-sbs", "spatial": "full-sbs", "vr180": "full-sbs", "vr180-tb": "full-tb"}
DEFAULT_DIVERGENCE = 2.0  # percent of the eye width
DEFAULT_CONVERGENCE = 0.5
DEFAULT_IPD_MM = 63.0
DEFAULT_FOV_DEGREES = 60.0
DEFAULT_SCREEN_DISTANCE = 2.0  # metres


def eye_size_for(eye_size, height: int, width: int) -> tuple[int, int]:
    """(width, height) of an output eye: None keeps the source size; a preset ("1080", 1440 ...)
    sets the height and keeps the aspect ratio; a (width, height) pair is used as given. Both
    rounded up to even numbers."""
    if eye_size is None:
        w, h = width, height
    elif isinstance(eye_size, str | int) and not isinstance(eye_size, bool):
        key = str(eye_size).lower()
        if key not in EYE_SIZE_PRESETS:
            raise OptionError(
                f"eye_size {eye_size!r} is not a preset ({', '.join(sorted({'720', '1080', '1440', '2160'}))})"
                " or a (width, height) pair")
        h = EYE_SIZE_PRESETS[key]
        w = round(width * h / height)
    elif isinstance(eye_size, tuple | list) and len(eye_size) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and 2 <= v <= 16384 for v in eye_size):
        w, h = eye_size
    else:
        raise OptionError(f"eye_size must be None, a preset or a (width, height) pair, got {eye_size!r}")
    return w + (w & 1), h + (h & 1)


# ---- constraints -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Range:
    """A finite number within ``low``..``high``; an open end excludes its bound."""

    low: float
    high: float
    integer: bool = False
    low_open: bool = False
    high_open: bool = False

    def describe(self) -> str:
        if not (self.low_open or self.high_open):
            text = f"{self.low:g}..{self.high:g}"
        else:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            text = f"{left}{self.low:g}, {self.high:g}{right}"
        return ("an integer within " if self.integer else "") + text

    def check(self, name: str, value: Any) -> int | float:
        if (isinstance(value, bool) or not isinstance(value, numbers.Real)
                or not math.isfinite(value)):
            raise OptionError(f"{name} must be a number, got {value!r}")
        if self.integer and int(value) != value:
            raise OptionError(f"{name} must be an integer, got {value!r}")
        if (value < self.low or value > self.high or (self.low_open and value == self.low)
                or (self.high_open and value == self.high)):
            bounds = self.describe().removeprefix("an integer within ")
            raise OptionError(f"{name} must be within {bounds}, got {value!r}")
        return int(value) if self.integer else float(value)


@dataclass(frozen=True)
class Choice:
    """One of ``values``."""

    values: tuple

    def describe(self) -> str:
        return "one of " + ", ".join(map(str, self.values))

    def check(self, name: str, value: Any) -> Any:
        for choice in self.values:
            # True is not 1, "8" is not 8; 8.0 becomes 8 (the engine wants an int)
            if isinstance(value, bool) or isinstance(value, str) != isinstance(choice, str):
                continue
            try:
                equal = bool(value == choice)
            except (TypeError, ValueError):  # an array, say
                equal = False
            if equal:
                return choice
        choices = ", ".join(map(str, self.values))
        raise OptionError(f"{name} must be one of {choices}; got {value!r}")


@dataclass(frozen=True)
class Check:
    """A custom rule: ``function(name, value)`` returns the value as stored (normalised) or
    raises :class:`OptionError`; ``description`` says in words what it accepts."""

    description: str
    function: Callable[[str, Any], Any] = field(compare=False)

    def describe(self) -> str:
        return self.description

    def check(self, name: str, value: Any) -> Any:
        return self.function(name, value)


Constraint = Range | Choice | Check


def _flag(name: str, value: Any) -> bool:
    # True/False (also 0/1 and numpy's bools), never a string, where "no" would mean yes
    is_flag = isinstance(value, bool | numbers.Integral) or type(value).__name__ == "bool_"
    if is_flag and value in (0, 1):
        return bool(value)
    raise OptionError(f"{name} must be True or False, got {value!r}")


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise OptionError(f"{name} must be a string, got {value!r}")
    return value


# the device types sbsconv runs on; "auto" picks among them
DEVICE_TYPES = ("cpu", "cuda", "mps")


def check_device(name: str, value: Any) -> str:
    """A device option's value as text: "auto", or a torch device of a type sbsconv runs on;
    anything else is an OptionError naming ``name``."""
    text = str(value) if isinstance(value, torch.device) else _text(name, value)
    if text == "auto":
        return text
    try:
        kind = torch.device(text).type
    except (RuntimeError, ValueError):
        kind = None
    if kind not in DEVICE_TYPES:
        raise OptionError(f"{name} must be auto, cpu, cuda, cuda:N or mps, got {text!r}")
    return text


def check_path(name: str, value: Any, what: str = "the path of a file") -> str:
    """A path argument (an entry point's input or output, an option naming a file) as text;
    anything but a str or os.PathLike naming something is an OptionError that says ``what`` was
    expected and what was given. A list or tuple is pointed to convert_many, which takes many."""
    if isinstance(value, str | os.PathLike):
        path = os.fspath(value)
        if isinstance(path, str) and path:
            return path
    many = " (several videos: sbsconv.convert_many(inputs, output_dir))" if isinstance(value, list | tuple) else ""
    raise OptionError(f"{name}: expected {what}, got {value!r}{many}")


def _path(name: str, value: Any) -> str:
    return check_path(name, value, "a path or a name")


def _video_path(name: str, value: Any) -> str:
    path = _path(name, value)
    if Path(path).suffix.lower() not in CONTAINERS:
        raise OptionError(f"{name} must end in {', '.join(CONTAINERS)}: {path!r}")
    return path


def _ending(name: str, value: Any, endings: tuple[str, ...]) -> str:
    path = _path(name, value)
    if Path(path).suffix.lower() not in endings:
        raise OptionError(f"{name} must end in {', '.join(endings)}: {path!r}")
    return path


def _eye_size(name: str, value: Any) -> int | str | tuple[int, int]:
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*[xX]\s*\d+\s*", value):
        # "1920x1080", as on the command line
        value = tuple(int(v) for v in value.lower().split("x"))
    if isinstance(value, list):
        value = tuple(value)
    # the form alone (a preset or a pair); the pixels follow from the source's size later
    eye_size_for(value, 1080, 1920)
    return value


def _convergence(name: str, value: Any) -> float | str:
    if isinstance(value, str):
        if value.strip().lower() == "subject":
            return "subject"
        try:
            value = float(value)  # as typed on the command line or in a form
        except ValueError:
            raise OptionError(f'{name} must be a number within 0..1 or "subject", got {value!r}') from None
    return Range(0, 1).check(name, value)


def numeric_convergence(options: ConvertOptions) -> float:
    """The convergence as a number: the option's, or for "subject" the plane a shot starts from
    until its subject appears (and what Apple's disparity box states for the whole video)."""
    return DEFAULT_CONVERGENCE if options.convergence == "subject" else float(options.convergence)


def _percentiles(name: str, value: Any) -> tuple[float, float]:
    limits = Range(0, 100)
    if not isinstance(value, tuple | list) or len(value) != 2 or not (
            0 <= limits.check(f"{name}[0]", value[0]) < limits.check(f"{name}[1]", value[1])):
        raise OptionError(
            f"{name} must be an increasing (low, high) pair within 0..100, got {value!r}")
    return (float(value[0]), float(value[1]))


def _fps(name: str, value: Any) -> Fraction:
    if isinstance(value, bool):
        raise OptionError(f"{name} must be a positive number or fraction, got {value!r}")
    try:
        rate = Fraction(value)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        raise OptionError(f"{name} must be a positive number or fraction, got {value!r}") from None
    if not 0 < rate <= 1000:
        raise OptionError(f"{name} must be within (0, 1000], got {value!r}")
    # The engine keeps rates as 32-bit fractions: 30000/1001 stays exact, a fraction with a
    # huge numerator or denominator becomes the nearest one that fits.
    rate = rate.limit_denominator(100_000)
    if rate <= 0:
        raise OptionError(f"{name} must be within (0, 1000], got {value!r}")
    return rate


FLAG = Check("True or False", _flag)
TEXT = Check("a string", _text)
PATH = Check("a path or a name", _path)


def _option(default: Any, help: str, group: str, constraint: Constraint) -> Any:
    return field(default=default, metadata={"help": help, "group": group, "constraint": constraint})


# ---- the options -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ConvertOptions:
    """Every option of :func:`sbsconv.convert`, checked when made (see the module docstring).

    Values are stored normalised: paths as strings, ``fps`` as a :class:`~fractions.Fraction`
    (at most 100000 in the denominator), ``percentiles`` as a pair of floats, ``eye_size``
    "WIDTHxHEIGHT" as a ``(width, height)`` pair, integer options as ints, flags as bools.
    """

    # --- the depth model
    model: str | os.PathLike[str] = _option(
        "depth-anything-v2-small",
        "depth model: a registry name (sbsconv models), a Hugging Face repo id or a local path",
        "model", PATH)
    checkpoint: str | os.PathLike[str] | None = _option(
        None, "a local checkpoint file replacing the download of a registry model", "model", PATH)
    device: str = _option(
        "auto", "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps", "model",
        Check("a string such as auto, cpu, cuda, cuda:N or mps", check_device))
    precision: str = _option(
        "auto", "auto (fp16 on GPUs; on the CPU int8 where it has int8 dot products, bf16 for Depth-Anything-V2 "
        "where it has AMX-BF16, else fp32), fp32, fp16, "
        "bf16 or int8 (CPU)", "model",
        Choice(("auto", "fp32", "fp16", "bf16", "int8")))
    batch_size: int | None = _option(
        None, "frames per depth batch (default: on CUDA as many as fit in half the free GPU memory, at most "
        "32; on MPS 8 and on the CPU 2, Depth Pro 1; video models their window's: 8 for Video-Depth-Anything, "
        "6 for Depth Anything 3's any-view models); a resumed run keeps the first run's",
        "model", Range(1, 1024, integer=True))
    input_size: int | None = _option(
        None, "the depth model's input size (default: the model's own: frames are resized so their shorter "
        "side is 518 for Depth-Anything-V2 and Video-Depth-Anything, their longer side 504 for Depth Anything 3)",
        "model", Range(14, 4096, integer=True))
    temporal_mode: str = _option(
        "windowed",
        "video models (Video-Depth-Anything): windowed (32-frame windows, most accurate) or "
        "streaming (lower latency and memory)", "model", Choice(("windowed", "streaming")))
    # --- the output picture
    layout: str = _option(
        "full-sbs",
        "full-sbs, half-sbs, full-tb, half-tb, cross-eyed, anaglyph, anaglyph-color, anaglyph-gray; "
        "apple-3d (Vision Pro: side-by-side HEVC with Apple's stereo boxes), spatial (Apple "
        "spatial video: two MV-HEVC views; needs an x265 with multiview support), vr180, vr180-tb "
        "(180-degree half-equirectangular eyes with spherical metadata)",
        "layout", Choice(tuple(name for name in LAYOUTS if name != "separate") + tuple(HEADSET_LAYOUTS)))
    eye_size: int | str | tuple[int, int] | None = _option(
        None,
        "output eye size: 720, 1080, 1440, 2160 (lines) or WIDTHxHEIGHT; default: the source's",
        "layout", Check("a preset (720, 1080, 1440, 2160, 4k ...), WIDTHxHEIGHT or a "
                        "(width, height) pair", _eye_size))
    keep_aspect: bool = _option(
        True, "pad with black instead of stretching when eye_size changes the aspect ratio",
        "layout", FLAG)
    apple_metadata: bool = _option(
        True, "MP4/MOV side-by-side and top-bottom: also write Apple's stereo boxes (vexu, hfov), so "
        "the same file plays as 3D on Vision Pro as on Quest", "layout", FLAG)
    # --- which frames
    fps: Fraction | float | str | None = _option(
        None, "resample to this frame rate (default: keep every source frame and its timestamp)",
        "timing", Check("a frame rate within (0, 1000]: a number, or a fraction such as 30000/1001",
                        _fps))
    start: float | None = _option(
        None, "start of the part to convert, in seconds from the beginning", "timing",
        Range(0, 1e9))
    duration: float | None = _option(
        None, "length of the part to convert, in seconds", "timing",
        Range(0, 1e9, low_open=True))
    # --- the 3D effect
    divergence: float = _option(
        DEFAULT_DIVERGENCE,
        "3D strength: the largest disparity, in percent of the eye width", "3d", Range(0, 20))
    convergence: float | str = _option(
        DEFAULT_CONVERGENCE,
        "the depth on the screen plane: 0 = everything in front, 1 = everything behind; \"subject\": "
        "the subject's depth (its mask from mask_model), shot by shot", "3d",
        Check("a number within 0..1, or \"subject\"", _convergence))
    max_shift: float | None = _option(
        None, "the largest disparity in pixels (replaces divergence)", "3d", Range(0, 10_000))
    synthetic_view: str = _option(
        "both",
        "both (each eye half the shift), left or right (the other eye is the source frame)", "3d",
        Choice(("both", "left", "right")))
    ipd_mm: float = _option(
        DEFAULT_IPD_MM, "interpupillary distance for metric depth models, in millimetres",
        "3d", Range(1, 999))
    fov_degrees: float | None = _option(
        None, "horizontal field of view for metric depth (default: the model's estimate, else 60)",
        "3d", Range(1, 179))
    screen_distance: float = _option(
        DEFAULT_SCREEN_DISTANCE, "distance of the screen plane for metric depth, in metres",
        "3d", Range(0.001, 1e6, low_open=True))
    fill: str = _option(
        "temporal",
        "how pixels hidden in the source are filled in each eye: temporal (from the frames that "
        "saw them, else the background side, steadied from frame to frame), spatial (the "
        "background side of the frame) or none "
        "(black, for inpainting with a separate model: see infill_mask)", "3d",
        Choice(("temporal", "spatial", "none")))
    edge_dilation: int = _option(
        2, "grow nearer regions by this many pixels against halos at object edges", "3d",
        Range(0, 32, integer=True))
    # --- stability over time
    percentiles: tuple[float, float] = _option(
        (1.0, 99.0), "the robust depth range: low and high percentiles", "stability",
        Check("an increasing (low, high) pair within 0..100", _percentiles))
    range_decay: float = _option(
        0.9, "how slowly the depth range follows the scene (EMA decay, 0..1)", "stability",
        Range(0, 0.999))
    align: bool = _option(
        True, "fit each frame's depth scale and shift to the previous frame (less flicker)",
        "stability", FLAG)
    smoothing: float = _option(
        0.0, "temporal smoothing of depth (EMA alpha, 0 = off), weaker where the picture moves",
        "stability", Range(0, 0.99))
    motion_threshold: float = _option(
        0.08, "the picture change (0..1) at which temporal smoothing stops", "stability",
        Range(0.001, 1))
    scene_cuts: bool = _option(
        True, "detect scene cuts and restart depth stabilisation at each", "stability", FLAG)
    cut_sensitivity: float = _option(
        0.5, "scene-cut sensitivity, 0..1 (higher finds more cuts)", "stability", Range(0, 1))
    min_scene_length: int = _option(
        8, "the shortest scene, in frames", "stability", Range(1, 1_000_000, integer=True))
    comfort_limit: float = _option(
        3.0, "the comfortable disparity in percent of the eye width (reported per scene)", "3d",
        Range(0.1, 50))
    auto_strength: bool = _option(
        False, "scale the 3D strength down in scenes that exceed the comfort limit", "3d", FLAG)
    # --- encoding
    encoder: str = _option(
        "auto",
        "auto (NVENC, VideoToolbox, then libx264/libx265), nvenc, videotoolbox, software or an "
        "FFmpeg name", "encoding", TEXT)
    codec: str = _option(
        "auto", "auto (H.264; HEVC for 10-bit and for frames beyond H.264 level 5.2: wider or taller than 4096 or "
        "over 8.9 megapixels, as VR180 from HD), h264 or hevc",
        "encoding", Choice(("auto", "h264", "hevc")))
    crf: int | None = _option(
        None, "x264/x265 quality, 0-51, lower is better (default 16/18)", "encoding",
        Range(0, 51, integer=True))
    cq: int | None = _option(
        None, "NVENC constant quality, 0-51 (default 21)", "encoding", Range(0, 51, integer=True))
    quality: int | None = _option(
        None, "VideoToolbox quality, 1-100 (default 65)", "encoding", Range(1, 100, integer=True))
    preset: str | None = _option(
        None, "encoder preset (default: x264/x265 the slowest of medium..veryfast that keeps pace with the "
        "model, p5 for NVENC)", "encoding", TEXT)
    bit_depth: int = _option(8, "8, or 10 with HEVC", "encoding", Choice((8, 10)))
    encoders: int | None = _option(
        None, "encoder instances that encode a resumable run's segments at once, each on its share of the "
        "cores (default: one; on a GPU run with libx264/libx265 as many as keep pace with the model)",
        "encoding", Range(1, 64, integer=True))
    audio: str = _option(
        "copy", "copy (stream copy where the container allows, else AAC), aac or none",
        "encoding", Choice(("copy", "aac", "none")))
    subtitles: str = _option(
        "copy", "copy (converted to the container's text format where needed) or none",
        "encoding", Choice(("copy", "none")))
    # --- the input
    hwaccel: str = _option(
        "auto", "hardware decoding: auto, none, cuda, videotoolbox ...", "advanced", TEXT)
    stream: int | None = _option(
        None, "the video stream to convert (default: the largest picture)", "advanced",
        Range(0, 100_000, integer=True))
    # --- what is written, and how
    headset_suffix: bool = _option(
        False, "name the output as headset players expect (_LR, _3dh, _TB, _3dv, _180_LR, ...)", "output", FLAG)
    preview_every: float | None = _option(
        None,
        "preview mode: one frame every this many seconds, into a short clip and PNG images",
        "output", Range(0.01, 1e6))
    depth_video: str | os.PathLike[str] | None = _option(
        None,
        "also write the stabilised depth, colour-mapped (near is bright), as a video here",
        "output", Check(f"a video path ending in {', '.join(CONTAINERS)}", _video_path))
    depth_out: str | os.PathLike[str] | None = _option(
        None,
        "also write the depth here, in depth_format, with a JSON sidecar (a file; a folder for "
        "png16 and exr)", "output", Check("a path", _path))
    depth_format: str = _option(
        "gray16",
        "gray16 (16-bit FFV1 video), gray8 (8-bit FFV1 video), rgb-packed (the metric-depth toolboxes' RGB video), png16, "
        "exr, npy (one array), colormap (a preview video)", "output", Choice(DEPTH_FORMATS))
    max_depth: float | None = _option(
        None,
        "rgb-packed: metres at full scale (6 when writing); needed to read such a file that has "
        "no sidecar", "output", Range(0.001, 1e6, low_open=True))
    depth_precision: str = _option(
        "float32", "exr and npy: float32 or float16", "output", Choice(("float32", "float16")))
    point_clouds_every: int | None = _option(
        None, "with depth_out: also write a PLY point cloud of every N-th frame", "output",
        Range(1, 1e9, integer=True))
    point_cloud_scale: float | None = _option(
        None,
        "point clouds from relative depth: metres at the nearest depth (relative depth has no "
        "scale of its own)", "output", Range(0.0, 1e6, low_open=True))
    infill_mask: str | os.PathLike[str] | None = _option(
        None,
        "also write a lossless .mkv, packed like the 3D video, marking each eye's disoccluded "
        "pixels (for inpainting with a separate model)", "output",
        Check("a path ending in .mkv", lambda name, value: _ending(name, value, (".mkv",))))
    mask_out: str | os.PathLike[str] | None = _option(
        None,
        "also write the subject's masks (mask_model) here: a .mkv with a JSON sidecar, as "
        "export_mask() writes them", "output",
        Check("a path ending in .mkv", lambda name, value: _ending(name, value, (".mkv",))))
    masks: str | os.PathLike[str] | None = _option(
        None,
        "the subject's masks from this file (export_mask(), mask_out= or write_masks()) instead of "
        "mask_model, for convergence=\"subject\"", "model", Check("a path", _path))
    mask_model: str = _option(
        "u2netp",
        "the subject-mask model for convergence=\"subject\" and mask_out (u2netp, u2net, or a path)",
        "model", Check("a registry name or a path", _path))
    depth: str | os.PathLike[str] | None = _option(
        None,
        "take depth from this exported depth file (or its sidecar) instead of running a model: "
        "re-rendering with other settings", "model", Check("a path", _path))
    resume: bool = _option(
        True, "keep a journal beside the output so that an interrupted run can continue",
        "output", FLAG)
    segment_seconds: float = _option(
        10.0, "how much video a resumable run finishes at a time", "output", Range(0.1, 1e6))

    # ---- checking ------------------------------------------------------------------------------

    def __post_init__(self) -> None:
        for f in self.fields():
            object.__setattr__(self, f.name, f.check(getattr(self, f.name)))
        self._check_together()

    def _check_together(self) -> None:
        """The rules between options."""
        if self.bit_depth == 10 and self.codec == "h264":
            raise OptionError("bit_depth=10 needs codec='hevc'")
        if self.bit_depth == 10 and self.layout == "spatial":
            raise OptionError("spatial video is encoded by x265's multiview mode, which is 8-bit only: "
                              "use bit_depth=8, or layout='apple-3d' for 10-bit")
        if self.preview_every is not None and (self.depth_out is not None or self.infill_mask is not None):
            raise OptionError("preview_every shows a few frames: it does not write depth_out or infill_mask")
        if self.point_clouds_every is not None and self.depth_format == "colormap":
            raise OptionError("point clouds need depth values: depth_format='colormap' is a picture")
        if self.infill_mask is not None and self.layout.startswith("vr180"):
            raise OptionError("infill masks are made for flat layouts, not VR180")
        if self.infill_mask is not None and self.layout == "spatial":
            raise OptionError("an infill mask is packed like the 3D video, and spatial video holds the eyes as two "
                              "MV-HEVC views that inpainting tools do not read: use layout='apple-3d' (side by "
                              "side, with Apple's metadata) for the round trip through sbsconv.infill_merge")
        if self.infill_mask is not None and self.layout.startswith("anaglyph"):
            raise OptionError("an infill mask is packed like the 3D video: it needs a side-by-side "
                              "or top-bottom layout, not an anaglyph")

    def validate(self) -> ConvertOptions:
        """Checks every option again (they were checked when made); returns ``self``."""
        for f in self.fields():
            f.check(getattr(self, f.name))
        self._check_together()
        return self

    def replace(self, **changes: Any) -> ConvertOptions:
        """A copy with ``changes`` (checked: an unknown name or a bad value raises OptionError)."""
        self.check_names(changes)
        return dataclasses.replace(self, **changes)

    @classmethod
    def merged(cls, options: ConvertOptions | None = None,
               overrides: Mapping[str, Any] | None = None) -> ConvertOptions:
        """``options`` (default: the defaults) with ``overrides`` applied, checked."""
        overrides = dict(overrides or {})
        if options is None:
            cls.check_names(overrides)
            return cls(**overrides)
        if not isinstance(options, ConvertOptions):
            raise OptionError("options must be a sbsconv.ConvertOptions or None, got "
                              f"{type(options).__name__} (give single options as keywords)")
        return options.replace(**overrides) if overrides else options

    @classmethod
    def check_names(cls, names: Iterable[str], *, also: Iterable[str] = ()) -> None:
        """Raises OptionError naming each unknown option (with the closest known names)."""
        known = cls.names() + tuple(also)
        unknown = [name for name in names if name not in known]
        if not unknown:
            return
        parts = []
        for name in unknown:
            close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.6)
            hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
            parts.append(f"{name!r}{hint}")
        raise OptionError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(parts)};"
                          " sbsconv.ConvertOptions.names() lists them")

    # ---- introspection -------------------------------------------------------------------------

    @classmethod
    def fields(cls) -> tuple[OptionField, ...]:
        """Every option in order: name, type, default, help, group and constraint."""
        return _fields_of(cls)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in cls.fields())

    @classmethod
    def field_named(cls, name: str) -> OptionField:
        cls.check_names([name])
        return next(f for f in cls.fields() if f.name == name)

    def to_dict(self) -> dict[str, Any]:
        """Every option and its value, in order."""
        return {f.name: getattr(self, f.name) for f in self.fields()}

    def non_defaults(self) -> dict[str, Any]:
        """The options whose values differ from the defaults."""
        return {f.name: getattr(self, f.name) for f in self.fields()
                if getattr(self, f.name) != f.default}

    def __repr__(self) -> str:
        return f"ConvertOptions({', '.join(f'{k}={v!r}' for k, v in self.non_defaults().items())})"


def _init_checking_names(init: Callable[..., None]) -> Callable[..., None]:
    # An unknown name is an OptionError with the closest known names, not a TypeError.
    @functools.wraps(init)
    def __init__(self: ConvertOptions, **options: Any) -> None:
        ConvertOptions.check_names(options)
        init(self, **options)

    __init__.__signature__ = inspect.signature(init)  # help() and tooltips: every option
    return __init__


ConvertOptions.__init__ = _init_checking_names(ConvertOptions.__init__)  # type: ignore[method-assign]


# ---- field descriptions ------------------------------------------------------------------------


@dataclass(frozen=True)
class OptionField:
    """One option of :class:`ConvertOptions`, as the command line, forms and UIs see it."""

    name: str
    type: Any  # the annotation, e.g. ``float | None``
    default: Any
    help: str
    group: str
    constraint: Constraint

    @property
    def nullable(self) -> bool:
        """Whether None is a value (always meaning "the default behaviour")."""
        return type(None) in _members(self.type)

    @property
    def kind(self) -> type:
        """The Python type a value typed as text becomes before the check: bool, int, float,
        tuple (a pair of numbers) or str (the check parses the rest: fps, eye_size, paths)."""
        kinds = [t for t in _members(self.type) if t is not type(None)]
        origin = [typing.get_origin(t) or t for t in kinds]
        if origin == [tuple]:
            return tuple
        if len(kinds) == 1 and kinds[0] in (bool, int, float):
            return kinds[0]
        return str

    @property
    def flag(self) -> str:
        """The command-line flag: ``--divergence``, ``--eye-size``."""
        return "--" + self.name.replace("_", "-")

    def describe(self) -> str:
        """The constraint in words ("0..20", "one of h264, hevc", ...), "or None" if nullable."""
        return self.constraint.describe() + (", or None" if self.nullable else "")

    def check(self, value: Any) -> Any:
        """The value as :class:`ConvertOptions` stores it, or OptionError."""
        if value is None and self.nullable:
            return None
        return self.constraint.check(self.name, value)

    def parse(self, text: str) -> Any:
        """A value typed as text (command line, form, query string) as a Python value of
        :attr:`kind`; blank means the default. Not checked: :meth:`check` does that."""
        text = str(text).strip()
        if text == "" or (self.nullable and text.lower() in ("none", "default")):
            return self.default if text == "" else None
        kind = self.kind
        if kind is bool:
            words = {"true": True, "yes": True, "on": True, "1": True,
                     "false": False, "no": False, "off": False, "0": False}
            if text.lower() not in words:
                raise OptionError(f"{self.name} must be true or false, got {text!r}")
            return words[text.lower()]
        if kind is int:
            try:
                return int(text)
            except ValueError:
                raise OptionError(f"{self.name} must be an integer, got {text!r}") from None
        if kind is float:
            try:
                return float(text)
            except ValueError:
                raise OptionError(f"{self.name} must be a number, got {text!r}") from None
        if kind is tuple:
            try:
                return tuple(float(v) for v in re.split(r"[,\s]+", text.strip("()[] ")) if v)
            except ValueError:
                raise OptionError(
                    f"{self.name}: expected numbers separated by commas, got {text!r}") from None
        return text


def _members(annotation: Any) -> tuple:
    """The types of a union (``float | None``), or the one type."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


@functools.cache
def _fields_of(cls: type) -> tuple[OptionField, ...]:
    hints = typing.get_type_hints(cls)
    return tuple(OptionField(name=f.name, type=hints[f.name], default=f.default,
                             help=f.metadata["help"], group=f.metadata["group"],
                             constraint=f.metadata["constraint"])
                 for f in dataclasses.fields(cls))
