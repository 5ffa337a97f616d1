"""What a run will do, decided once: the plan between the user's options and the engine.

    options (ConvertOptions: what the user asked, checked)
      -> build_plan(): the probed source, the depth source, every ``auto`` resolved
      -> ConversionPlan.engine (the engine's options) -> sbsconv.engine.run_engine -> result

Note [Conversion plan]
Every entry point that runs the engine (``convert``, ``export_depth``, the parts of
``convert_split`` and through them ``convert_many``, the web app, the notebook and the bench)
builds its run here, with :func:`build_plan`, so that they cannot disagree about what the same
options mean. The plan holds:

- the input and the output as given (what the user sees in results and messages), and their
  resolved real paths (what identifies the run for resume: ``clip.mp4`` and
  ``/home/me/clip.mp4`` are one run);
- the probed source;
- the depth source, a tagged union told apart by type (:data:`DepthSource`): a loaded
  :class:`~sbsconv.models.DepthModel` or an exported depth file
  (:class:`~sbsconv.depthio.DepthFromFile`). :func:`depth_source_for` is the one place that
  turns ``model=`` / ``checkpoint=`` / ``depth=`` into it;
- every automatic choice that Python can make before the run, with the reason: the batch size
  (from the device's free memory on CUDA, else the model's preferred batch), the model's
  precision and input size (resolved by the loader and kept on the model). The choices that
  need the running engine (the encoder's preset, measured from the model's own speed, Note
  [Encoder preset chosen to keep pace]; the batch size of a resumed run) are recorded by the engine in
  the resume journal and reused by a resumed run (Note [Journal integrity]);
- the engine's options and the resume fingerprint;
- what the user is told about the input before the work starts (``notes``: Note [3D input]).

Note [3D input]
sbsconv makes 3D from 2D. A video whose own signalling says its picture holds two views
(side-by-side or top-bottom in its st3d box or Matroska's StereoMode) is still converted, since
a tag can be wrong, but the plan says so in ``notes``, which the entry points give as warnings
before the work (Python's warnings, the command line's stderr) and in the result's warnings (a
batch's file outcomes): such a picture is converted whole, both eyes in one depth map, which
makes no usable 3D. The usual way there is converting an output again, so ``convert_many`` does
not take its own outputs as inputs (:func:`sbsconv.batch.find_inputs`, and outputs beside their
inputs). An Apple spatial video's picture is its first view (the left eye), an ordinary 2D
picture: it converts as any video, and the log says which view it was (info).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeAlias

from sbsconv import depthio, media, stereo
from sbsconv._native import _core
from sbsconv.depthio import DepthFromFile
from sbsconv.engine import core_options
from sbsconv.errors import OptionError, OutputError
from sbsconv.masks import MASK_SMOOTHING, PLANE_SMOOTHING, mask_file_options
from sbsconv.media import MediaInfo
from sbsconv.models import DepthModel
from sbsconv.options import (
    APPLE_LAYOUTS,
    APPLE_PACKING,
    CONTAINERS,
    HEADSET_LAYOUTS,
    STEREO_TAG,
    ConvertOptions,
    numeric_convergence,
)

__all__ = ["ConversionPlan", "DepthSource", "PartWindow", "build_plan", "depth_source_for",
           "resolve_output"]

logger = logging.getLogger("sbsconv")

# The depth of a run: a model, or an exported depth file. Consumers switch on the type.
DepthSource: TypeAlias = DepthModel | DepthFromFile

Purpose = Literal["convert", "export", "part"]

# The names headset players (DeoVR, Skybox, Pico's and Quest's own) recognise.
HEADSET_SUFFIXES = {
    "full-sbs": "_LR", "half-sbs": "_3dh", "full-tb": "_TB", "half-tb": "_3dv",
    "cross-eyed": "_RL", "anaglyph": "_anaglyph", "anaglyph-color": "_anaglyph",
    "anaglyph-gray": "_anaglyph", "apple-3d": "_LR", "vr180": "_180_LR", "vr180-tb": "_180_TB",
}


@dataclass(frozen=True)
class PartWindow:
    """One part of a split conversion (Note [Parts of one video]): the window it decodes
    (``start`` and ``duration``, seconds after the source's start), the time from which its
    frames are kept (``output_start``), the whole conversion's ``timeline_start``, and the
    file the parts are joined into (``final_output``: its container decides the stereo
    boxes)."""

    start: float
    duration: float | None
    output_start: float
    timeline_start: float
    final_output: str


@dataclass(frozen=True)
class ConversionPlan:
    """What one run of the engine will do (Note [Conversion plan])."""

    purpose: Purpose
    input: str  # as given
    output: str  # the file the run writes, as given (with the headset suffix when asked)
    input_real: str  # resolved: what identifies the run for resume
    output_real: str
    options: ConvertOptions
    source: MediaInfo
    depth: DepthSource
    batch_size: int
    batch_size_auto: bool  # chosen, not given (a resumed run reuses the first run's)
    batch_size_reason: str
    engine: dict[str, Any]  # the engine's options, fingerprint included
    images_dir: Path | None = None
    notes: tuple[str, ...] = ()  # what to tell the user before the work (Note [3D input])

    @property
    def model(self) -> DepthModel | None:
        return self.depth if isinstance(self.depth, DepthModel) else None

    @property
    def depth_name(self) -> str:
        return self.depth.name

    @property
    def precision(self) -> str:
        """The model's precision as it runs ("auto" resolved); "" for a depth file."""
        return self.depth.precision if isinstance(self.depth, DepthModel) else ""


# ---- paths -------------------------------------------------------------------------------------


def output_name(output: str | os.PathLike[str], layout: str) -> str:
    """The output path with the headset suffix for ``layout`` (``clip.mp4`` ->
    ``clip_LR.mp4``), unless it already ends with it."""
    path = Path(output)
    suffix = HEADSET_SUFFIXES.get(layout, "")
    if not suffix or path.stem.endswith(suffix):
        return str(path)
    return str(path.with_name(path.stem + suffix + path.suffix))


def resolve_output(input_path: str, output: str | os.PathLike[str], options: ConvertOptions) -> str:
    """The path a conversion of ``input_path`` writes (convert(), convert_split()): ``output``
    with the headset suffix when asked for, checked: a container sbsconv writes, MP4/MOV for
    Apple's layouts, not the input itself. Raises OptionError."""
    output_path = os.fspath(output)
    if options.headset_suffix:
        output_path = output_name(output_path, options.layout)
    suffix = Path(output_path).suffix.lower()
    if suffix not in CONTAINERS and os.path.isdir(output_path):
        example = Path(output_path) / (Path(input_path).stem + "_3d.mp4")
        raise OptionError(f"the output {output_path!r} is a folder: name the 3D video to write in it (such as "
                          f"{str(example)!r}), or convert into a folder with convert_many")
    if suffix not in CONTAINERS:
        raise OptionError(f"the output must end in {', '.join(CONTAINERS)}: {output_path!r}")
    if options.layout in APPLE_LAYOUTS and suffix == ".mkv":
        raise OptionError(f"{options.layout} is an MP4/MOV format (Vision Pro reads its boxes there): "
                          f"name the output .mov or .mp4, not {output_path!r}")
    if real_path(output_path) == real_path(input_path):
        raise OptionError("the output would overwrite the input")
    return output_path


def real_path(path: str | os.PathLike[str]) -> str:
    """The canonical absolute form of a path (symbolic links and ``..`` resolved), whether or
    not the file exists yet: how a run is identified whatever the spelling of its paths."""
    return os.path.realpath(os.path.abspath(os.fspath(path)))


# ---- the depth source --------------------------------------------------------------------------


def depth_source_for(options: ConvertOptions, video: MediaInfo) -> DepthSource:
    """The one place where ``model=`` / ``checkpoint=`` / ``depth=`` become a run's depth: the
    exported file of ``options.depth`` checked against the video, else the model, loaded (by
    registry name, path or Hugging Face repo id) with the given field of view. The point
    clouds' scale is checked here too, before any work."""
    from sbsconv import models

    source: DepthSource
    if options.depth is not None:
        source = depthio.depth_source(options, video)
    else:
        source = models.load(options.model, checkpoint=options.checkpoint, device=options.device,
                             precision=options.precision, input_size=options.input_size,
                             temporal_mode=options.temporal_mode)
        if isinstance(source, models.MaskModel):
            raise OptionError(
                f"model={options.model!r} makes subject masks, not depth: give a depth model as model="
                " (sbsconv.models.approaches()), and the mask model to export_mask() or as mask_model=")
        if options.fov_degrees is not None:
            # a model whose metric depth depends on the field of view (Depth Pro) uses the given one
            source._core.set_field_of_view(float(options.fov_degrees))
    if options.depth_out is not None:
        depthio.check_point_cloud_scale(options, source)
    return source


def _batch_size(options: ConvertOptions, depth: DepthSource, source: MediaInfo) -> tuple[int, str]:
    """The frames per batch and why (given, or chosen once here)."""
    if options.batch_size is not None:
        return int(options.batch_size), f"batch_size {options.batch_size}: given"
    match depth:
        case DepthFromFile():
            return 8, "batch_size 8: depth read from a file"
        case DepthModel() if depth.device.type == "cuda":
            # chosen from the device's free memory, and said (ConversionResult.batch_size too)
            return depth.fitting_batch(source.height, source.display_width)
        case DepthModel():
            batch = int(depth._core.preferred_batch(depth.device.type != "cpu"))
            return batch, f"batch_size {batch}: the model's preferred batch on {depth.device}"
    raise TypeError(f"not a depth source: {type(depth).__name__}")


# ---- the plan ----------------------------------------------------------------------------------


def build_plan(input: str | os.PathLike[str], output: str | os.PathLike[str], options: ConvertOptions, *,
               purpose: Purpose = "convert", images_dir: Path | None = None,
               part: PartWindow | None = None, source: MediaInfo | None = None,
               depth: DepthSource | None = None) -> ConversionPlan:
    """The plan of one engine run (Note [Conversion plan]). ``purpose``: "convert" (a 3D video
    at ``output``, already resolved with :func:`resolve_output`), "export" (depth products
    only: ``output`` is the depth file), "part" (one part of a split conversion, ``output`` its
    NUT piece, ``part`` its window). ``source`` and ``depth``: an already probed source and
    loaded depth source to reuse (a batch of previews, the bench)."""
    if purpose == "part" and part is None:
        raise TypeError("a part's plan needs its window")
    if part is not None:
        options = options.replace(start=part.start, duration=part.duration, resume=False)
    input_path = os.fspath(input)
    output_path = os.fspath(output)
    if source is None:
        source = media.probe(input_path)
    check_window(options, source)
    parent = Path(output_path).parent
    if purpose == "convert" and str(parent) not in ("", ".") and not parent.is_dir():
        raise OutputError(f"the output folder does not exist [{output_path}]", path=output_path,
                          stage="open output")
    if depth is None:
        depth = depth_source_for(options, source)
    mask = mask_model_for(options, depth, purpose)
    batch, reason = _batch_size(options, depth, source)
    if options.batch_size is None and isinstance(depth, DepthModel) and depth.device.type == "cuda":
        logger.info(reason)
    engine = _engine_options(options, input_path, output_path, depth, source, batch,
                             images_dir=images_dir, purpose=purpose, part=part, mask=mask)
    plan_args = dict(purpose=purpose, input=input_path, output=output_path, input_real=real_path(input_path),
                     output_real=real_path(output_path), options=options, source=source, depth=depth,
                     batch_size=batch, batch_size_auto=options.batch_size is None, batch_size_reason=reason,
                     images_dir=images_dir, notes=source_notes(source))
    engine["fingerprint"] = _fingerprint(engine, depth, options, input_path) if purpose == "convert" else ""
    return ConversionPlan(engine=engine, **plan_args)


# FFmpeg's and st3d's names for a picture that holds one view (Note [3D input])
_ONE_VIEW = ("", "2d", "mono", "unspecified")


def source_notes(source: MediaInfo) -> tuple[str, ...]:
    """What the run tells the user about its input before the work: a video that already is
    3D (Note [3D input])."""
    layout = str(source.stereo.get("layout", "") or "")
    if layout.lower().split(" (")[0] not in _ONE_VIEW:  # (a flag such as "(right eye first)")
        return (f"the video is already 3D ({layout}, as the file itself says): it is converted as one "
                "picture, both eyes in one depth map, which makes no usable 3D; to make 3D from one of "
                "its eyes, crop that eye out first",)
    if source.stereo.get("mv_hevc"):
        logger.info("%s is an Apple spatial video (two views): its first view, the left eye, is converted",
                    source.path)
    return ()


def check_window(options: ConvertOptions, source: MediaInfo) -> None:
    """A ``start`` at or past the end of a video whose length is known selects no frame: said
    before a model is loaded or anything written (the engine would find the window empty)."""
    if options.start is None or not source.duration or source.duration <= 0:
        return
    if float(options.start) >= source.duration:
        raise OptionError(f"start={float(options.start):g} s is at or past the end of the video, which is "
                          f"{source.duration:g} s long [{source.path}]")


def mask_model_for(options: ConvertOptions, depth: DepthSource, purpose: Purpose):
    """The subject-mask model a run needs (convergence="subject", mask_out), loaded on the
    depth's device; None when it needs none. A depth model named as the mask model is refused."""
    if options.masks is not None and options.convergence != "subject":
        raise OptionError('masks= gives the subject for convergence="subject"; without it they are not used')
    wanted = purpose != "export" and (options.convergence == "subject" or options.mask_out is not None)
    if not wanted:
        return None
    if options.masks is not None:
        if options.mask_out is not None:
            raise OptionError("masks= reads the subject's masks from a file; mask_out= would write them again")
        return None  # read from the file (_subject_options)
    from sbsconv import models

    precision = options.precision if options.precision != "int8" else "auto"  # no int8 path for masks
    mask = models.load(options.mask_model, device=str(depth.device), precision=precision)
    if not isinstance(mask, models.MaskModel):
        raise OptionError(f"mask_model={options.mask_model!r} estimates depth, not subject masks: give a mask "
                          "model (u2netp, u2net)")
    return mask


def _subject_options(o: ConvertOptions, mask, input_path: str, metric: bool) -> dict[str, Any] | None:
    """The engine's subject options (Note [Subject on the screen plane]), or None."""
    source = None
    if o.masks is not None and o.convergence == "subject":
        from sbsconv.masks import mask_source

        source = mask_source(o.masks, input_path)
    elif mask is None:
        return None
    export = None
    if o.mask_out is not None:
        export = mask_file_options(os.fspath(o.mask_out), model=mask.name, license=mask.license,
                                   smoothing=MASK_SMOOTHING, source=input_path)
    return {
        "mask_model": None if mask is None else mask._core,
        "mask_source": source,
        "mask_smoothing": 0.0 if source is not None else MASK_SMOOTHING,  # a file's masks as they are
        "convergence": o.convergence == "subject",
        "relative": not metric,
        "plane_smoothing": PLANE_SMOOTHING,
        # the plane a shot starts from until its subject appears: the convergence, or the
        # inverse screen distance
        "fallback": 1.0 / float(o.screen_distance) if metric else numeric_convergence(o),
        "mask_export": export,
    }


def _engine_options(o: ConvertOptions, input_path: str, output_path: str, depth: DepthSource,
                    info: MediaInfo, batch: int, *, images_dir: Path | None, purpose: Purpose,
                    part: PartWindow | None, mask=None) -> dict[str, Any]:
    """The C++ engine's options (``_core.Engine``) for this run. ``SBSCONV_CHECK_FLOAT64``,
    ``SBSCONV_CHECK_SYNCS`` and ``SBSCONV_TEST_FAULT`` in the environment set the engine's
    debugging switches (they stay out of the fingerprint)."""
    # Anamorphic sources (non-square pixels): each eye is made of square pixels at the
    # source's display aspect ratio (headset players ignore a file's pixel aspect ratio).
    pixel_aspect = float(info.sample_aspect_ratio)
    eye_w, eye_h = (0, 0)
    vr180 = o.layout.startswith("vr180")
    canvas = 0
    if vr180:
        # one square canvas per eye: eye_size's height, else the size that keeps the source's
        # centre resolution (Note [VR180 projection])
        canvas = (stereo.eye_size_for(o.eye_size, info.height, info.display_width)[1]
                  if o.eye_size is not None else
                  int(_core.vr180_default_canvas(info.height, info.display_width,
                                                 float(o.fov_degrees or stereo.DEFAULT_FOV_DEGREES))))
    elif o.eye_size is not None:
        eye_w, eye_h = stereo.eye_size_for(o.eye_size, info.height, info.display_width)
    match depth:
        case DepthModel():
            core_model, depth_file = depth._core, None
        case DepthFromFile():
            # Note [Depth products]: depth from an exported file instead of a model
            core_model, depth_file = None, depth.reader_spec
    rate = o.fps
    preview = o.preview_every is not None
    resume = o.resume and not preview and rate is None and purpose == "convert"
    audio, subtitles = ("none", "none") if preview else (o.audio, o.subtitles)
    source_fps = float(info.fps) if info.fps else 25.0
    frame_rate = float(rate) if rate else source_fps
    layout = o.layout
    engine_layout = HEADSET_LAYOUTS.get(layout, layout)
    codec = "hevc" if layout in APPLE_LAYOUTS else o.codec  # what Vision Pro plays is HEVC
    comment = f"3D ({layout}) by sbsconv {_core.__version__}, depth: {depth.name}"
    metric = depth.kind == "metric"
    # the stereo boxes follow the file the user gets (a part's is the joined file)
    boxes_for = part.final_output if part is not None else output_path
    # Note [Engine options at the boundary] (cpp/bindings/Module.cpp): every field, always; the
    # binding refuses a missing or an unknown one
    options: dict[str, Any] = {
        "input": input_path,
        "start": None if o.start is None else float(o.start),
        "duration": None if o.duration is None else float(o.duration),
        "stream": -1 if o.stream is None else int(o.stream),
        "hwaccel": o.hwaccel,
        "threads": 0,  # FFmpeg's decoder threads: its own choice
        "strict": False,  # damaged input decodes as far as it can, with a warning
        "device": str(depth.device),
        "batch_size": int(batch),
        "batch_size_auto": o.batch_size is None,
        "model": core_model,
        "depth_source": depth_file,
        "depth_export": None,
        "render_stereo": purpose != "export",
        "infill_mask": None,
        "subject": _subject_options(o, mask, input_path, metric),
        "detect_cuts": bool(o.scene_cuts),
        "cut_sensitivity": float(o.cut_sensitivity),
        "min_scene_length": int(o.min_scene_length),
        "stabilizer": {
            "relative": not metric,
            "low_percentile": float(o.percentiles[0]),
            "high_percentile": float(o.percentiles[1]),
            "range_decay": float(o.range_decay),
            "align": bool(o.align),
            "alpha": float(o.smoothing),
            "motion_threshold": float(o.motion_threshold),
        },
        "comfort": {"limit_percent": float(o.comfort_limit), "auto_strength": bool(o.auto_strength)},
        "disparity": {
            "divergence": float(o.divergence),
            "max_shift": None if o.max_shift is None else float(o.max_shift),
            "convergence": numeric_convergence(o),
            "ipd_metres": float(o.ipd_mm) / 1000.0,
            "fov_degrees": None if o.fov_degrees is None else float(o.fov_degrees),
            "screen_distance": float(o.screen_distance),
        },
        "stereo": {
            "layout": engine_layout, "synthetic_view": o.synthetic_view, "fill": o.fill,
            "vr180": vr180, "vr180_canvas": canvas,
            # the eyes' field of view for the VR180 projection: the engine sets it per batch
            "vr180_fov": float(o.fov_degrees or stereo.DEFAULT_FOV_DEGREES),
            "edge_dilation": int(o.edge_dilation), "eye_width": eye_w, "eye_height": eye_h,
            "keep_aspect": bool(o.keep_aspect), "pixel_aspect": pixel_aspect,
        },
        "writer": {
            "path": output_path, "container": "", "threads": 0, "codec": codec, "encoder": o.encoder,
            "crf": o.crf, "cq": o.cq, "quality": o.quality,
            "preset": o.preset or "", "bit_depth": int(o.bit_depth),
            "audio": audio, "subtitles": subtitles, "stereo": STEREO_TAG.get(layout, ""),
            "metadata": {"comment": comment},
            "vr180": vr180,
            # Note [Spatial video through x265]: the two halves as two MV-HEVC views
            "spatial": layout == "spatial",
            "apple": apple_boxes(o, boxes_for, eye_w or info.display_width, metric=metric),
        },
        "fps": rate,
        "preview_every": float(o.preview_every) if preview else 0.0,
        "image_dir": None if images_dir is None else os.fspath(images_dir),
        "depth_video": None,
        "resume": bool(resume),
        # Note [Parts of one video]: a part's window on the whole video's timeline
        "part": purpose == "part",
        "output_start": None if part is None else float(part.output_start),
        "timeline_start": 0.0 if part is None else float(part.timeline_start),
        "fingerprint": "",  # build_plan sets it
        "segment_frames": max(1, round(o.segment_seconds * frame_rate)),
        # Note [Chunk-parallel encoding]: 0 lets the engine choose, with the preset
        "encoder_instances": int(o.encoders or 0),
        # Debugging and the fault tests (Note [No float64 on devices], EngineOptions::fault).
        "check_float64": os.environ.get("SBSCONV_CHECK_FLOAT64", "") not in ("", "0"),
        # Note [Host synchronisation]: count every operation that would wait for the device
        "check_syncs": os.environ.get("SBSCONV_CHECK_SYNCS", "") not in ("", "0"),
        "fault": os.environ.get("SBSCONV_TEST_FAULT", ""),
    }
    if o.depth_video is not None:
        options["depth_video"] = os.fspath(o.depth_video)
        options["resume"] = False  # the depth video is written in one piece
    if o.depth_out is not None:
        options.update(depthio.export_engine_options(o, input_path, depth))
        options["resume"] = False  # depth products are written in one piece
    if o.infill_mask is not None:
        options["infill_mask"] = os.fspath(o.infill_mask)
        options["resume"] = False
    if o.mask_out is not None and options["subject"] is not None:
        options["resume"] = False  # the masks are written in one piece, as depth products are
    return options


def apple_boxes(o: ConvertOptions, output_path: str, eye_width: int, *, metric: bool) -> dict | None:
    """Apple's stereo boxes for this output (apple-3d always; other frame-packed layouts in
    MP4/MOV when apple_metadata): the view packing, the projection, the baseline from ipd_mm
    and the horizontal disparity adjustment: the far plane's disparity that the rendering
    gave, in 1/10000 of the eye width (relative depth: divergence x convergence; metric depth:
    the ipd over the screen's width at screen_distance; max_shift: in pixels over the width).
    The field of view (hfov) is fov_degrees, else the model's estimate, set by the engine at
    the end; VR180 canvases span 180 degrees."""
    layout = o.layout
    if layout not in APPLE_PACKING or Path(output_path).suffix.lower() not in (".mp4", ".m4v", ".mov"):
        return None
    if layout not in APPLE_LAYOUTS and not o.apple_metadata:
        return None
    if metric:
        fov = math.radians(o.fov_degrees or stereo.DEFAULT_FOV_DEGREES)
        far = o.ipd_mm / 1000.0 / (2.0 * math.tan(fov / 2.0) * o.screen_distance)
    elif o.max_shift is not None:
        far = o.max_shift * numeric_convergence(o) / max(eye_width, 1)
    else:
        far = o.divergence / 100.0 * numeric_convergence(o)
    projection = "hequ" if layout.startswith("vr180") else "" if layout == "spatial" else "rect"
    boxes = {"packing": APPLE_PACKING[layout], "projection": projection,
             "baseline_um": round(o.ipd_mm * 1000), "disparity_adjustment": round(far * 10000),
             "hfov_degrees": 180.0 if layout.startswith("vr180")
             else None if o.fov_degrees is None else float(o.fov_degrees)}
    return boxes


# ---- resume ------------------------------------------------------------------------------------

# The engine options that name files: in the fingerprint by their resolved form, so that the
# same run spelled with other paths (relative, absolute, through a link) is the same run.
_PATH_KEYS = ("input", "depth_video", "infill_mask", "image_dir", "path")
# What does not change a run's output: the model object (its identity is added below), the
# debugging switches, and the automatic batch size (the engine records the first run's and
# reuses it, Note [Journal integrity]).
_NOT_IN_FINGERPRINT = ("model", "check_float64", "check_syncs", "fault", "fingerprint", "batch_size_auto",
                       # segments are independent streams however many encoders made them
                       "encoder_instances")


def _resolved_paths(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _resolved_paths(v, k) for k, v in value.items()}
    if key in _PATH_KEYS and isinstance(value, str) and value:
        return real_path(value)
    return value


def _fingerprint(engine: dict[str, Any], depth: DepthSource, options: ConvertOptions, input_path: str) -> str:
    """What identifies a run's output for resuming (Note [Resumable runs]): the input file (its
    resolved path, size and modification time), the engine's options with resolved paths, and
    the depth source's identity (the model: name, checkpoint, input size, precision as run)."""
    payload = {k: v for k, v in engine.items() if k not in _NOT_IN_FINGERPRINT}
    if engine.get("subject") is not None:
        # the mask model by what it is, not by the object
        subject = dict(engine["subject"])
        mask = subject.pop("mask_model")
        if mask is not None:
            subject["mask"] = {"model": mask.name, "dtype": mask.dtype, "device": mask.device}
        payload["subject"] = subject
    if engine.get("batch_size_auto"):
        payload.pop("batch_size", None)
    payload = _resolved_paths(payload)
    match depth:
        case DepthModel():
            payload["depth"] = {"model": depth.name, "checkpoint": real_path(depth.source)
                                if os.path.exists(depth.source) else depth.source,
                                "input_size": depth.input_size, "precision": depth.precision,
                                "dtype": depth.dtype,
                                "temporal_mode": options.temporal_mode if depth.temporal else None}
        case DepthFromFile():
            payload["depth"] = {"file": real_path(depth.source)}
    stat = os.stat(input_path)
    payload.update(size=stat.st_size, mtime=stat.st_mtime_ns, version=_core.__version__)
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


# ---- split conversions -------------------------------------------------------------------------


def output_size(options: ConvertOptions, source: MediaInfo) -> tuple[int, int]:
    """The (width, height) of the frames a conversion of ``source`` encodes (the packed eyes)."""
    layout = HEADSET_LAYOUTS.get(options.layout, options.layout)
    if options.layout.startswith("vr180"):
        side = (stereo.eye_size_for(options.eye_size, source.height, source.display_width)[1]
                if options.eye_size is not None else
                int(_core.vr180_default_canvas(source.height, source.display_width,
                                               float(options.fov_degrees or stereo.DEFAULT_FOV_DEGREES))))
        eye_w, eye_h = side, side
    elif options.eye_size is not None:
        eye_w, eye_h = stereo.eye_size_for(options.eye_size, source.height, source.display_width)
    else:
        eye_w, eye_h = source.display_width, source.height
    height, width = _core.packed_size(layout, int(eye_h), int(eye_w))
    return int(width), int(height)


def assembly_options(part_engine: dict[str, Any], options: ConvertOptions, output_path: str,
                     timeline_start: float) -> dict[str, Any]:
    """The engine options that join a split conversion's parts (``_core.assemble_parts``) into
    ``output_path``: a part's (the encoder, the stereo boxes of the joined file), for the whole
    window, as one output rather than a part."""
    joined = dict(part_engine)
    joined.update(start=None if options.start is None else float(options.start),
                  duration=None if options.duration is None else float(options.duration),
                  timeline_start=float(timeline_start), part=False, output_start=None)
    joined["writer"] = dict(joined["writer"], path=output_path)
    joined["model"] = None  # joining runs no model (a part's result carries none across)
    return joined


def settle_split_options(input_path: str, options: ConvertOptions) -> tuple[ConvertOptions, str]:
    """The options every part of a split conversion runs with, with what the engine would
    choose for itself per part decided once, before the parts start (the parts are joined with
    the first part's stream headers, so they must encode alike): the software encoder's preset,
    from the model's speed on one frame of this video measured here, for the encoder a part's
    writer opens (the engine's own rule and predicate, Note [Encoder preset chosen to keep
    pace]: ``_core.choose_encoder_preset``, ``_core.preset_chosen_for``). Returns the options
    and the reason ("" when nothing was left to choose)."""
    import time

    import torch

    if options.preset is not None or options.depth is not None:
        return options, ""
    source = media.probe(input_path)
    width, height = output_size(options, source)
    depth = depth_source_for(options, source)  # (split conversions take no depth products)
    if not isinstance(depth, DepthModel) or depth.device.type != "cpu":
        return options, ""
    output = resolve_output(input_path, os.path.join(os.path.dirname(os.path.abspath(input_path)), "part.mp4"),
                            options)
    engine = _engine_options(options, input_path, output, depth, source, 1, images_dir=None, purpose="part",
                             part=None)
    encoder = _core.preset_chosen_for(core_options(engine).writer, width, height)
    if not encoder:
        return options, ""
    frame = torch.zeros(1, 3, source.height, source.display_width, dtype=torch.uint8)
    for batch in media.read_frames(input_path, start=float(options.start or 0.0), duration=5.0,
                                           batch_size=1):
        frame = batch.data
        break
    depth.estimate_clip(frame)  # the first call pays for start-up (int8 packing, allocation)
    t0 = time.perf_counter()
    depth.estimate_clip(frame)
    seconds = time.perf_counter() - t0
    preset, reason, _, _ = _core.choose_encoder_preset(encoder, width, height, seconds, max(1, torch.get_num_threads()),
                                                    True, _core.usable_cores())
    logger.info("split conversion: %s (one preset for every part)", reason)
    return options.replace(preset=preset), reason
