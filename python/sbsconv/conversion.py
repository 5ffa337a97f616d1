"""``sbsconv.convert()``: a 2D video in, a stereoscopic 3D video out.

The work runs in the C++ engine (Note [Engine] in cpp/sbsconv/pipeline/Engine.h): decoding,
depth, stabilisation, warping and encoding overlap on their own threads, with the GIL
released. This module takes the options (a :class:`~sbsconv.options.ConvertOptions`, checked
before any work), resolves the model, shows progress, turns Ctrl-C into a prompt stop, and
makes long runs resumable.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sbsconv import plan as planning
from sbsconv._native import _core
from sbsconv.engine import run_engine, warn_all
from sbsconv.errors import EncoderError, OptionError
from sbsconv.options import CALL_KEYWORDS, ConvertOptions, check_path
from sbsconv.plan import HEADSET_SUFFIXES, output_name, resolve_output

logger = logging.getLogger("sbsconv")

__all__ = ["ConversionResult", "ConvertOptions", "HEADSET_SUFFIXES", "OPTION_HELP", "convert",
           "output_name"]

# One line per option, derived from ConvertOptions' fields (where the help text lives).
OPTION_HELP = {f.name: f.help for f in ConvertOptions.fields()}

@dataclass(frozen=True)
class ConversionResult:
    output: str
    frames: int  # frames in the output
    seconds: float  # wall time of this call
    fps: float  # frames this call processed per second
    resumed_from: int  # the first frame this call processed (0 for a fresh run)
    width: int
    height: int
    layout: str
    model: str
    encoder: str
    skipped_encoders: tuple[str, ...]
    streams: tuple[str, ...]  # carried audio/subtitle streams and what happened to them
    stage_fps: dict[str, float]  # frames per second of busy time, per stage
    cuts: tuple[int, ...]  # frames that start a new shot
    comfort: tuple[dict, ...]  # per scene: disparity statistics against the comfort limit
    fov_degrees: float | None  # the model's field-of-view estimate, when it makes one
    warnings: tuple[str, ...]
    damaged_frames: int = 0  # frames decoded with errors (or corrupt packets skipped)
    truncated: bool = False  # the input ended before the end its container declares
    images: tuple[str, ...] = field(default_factory=tuple)  # preview mode: the PNG files
    options: ConvertOptions | None = None  # the options of the run
    depth_out: str | None = None  # the depth export (depth_out=), when written
    depth_sidecar: str | None = None  # its sidecar
    point_clouds: tuple[str, ...] = ()  # point_clouds_every: the PLY files
    # per stage: name, frames, busy_seconds, batches, host_syncs (Note [Host synchronisation]),
    # threads and threads_after_model (Note [Sharing the cores])
    stages: tuple[dict, ...] = ()
    # the encoder preset: the caller's, or the one the engine chose for libx264/libx265 (Note
    # [Encoder preset chosen to keep pace]); "" for the encoder's default
    encoder_preset: str = ""
    encoder_preset_reason: str = ""  # why the engine chose it ("" when the caller named one)
    encoders: int = 1  # encoder instances that encoded segments at once (Note [Chunk-parallel encoding])
    batch_size: int = 0  # frames per batch (chosen from the device's free memory when not given)
    precision: str = ""  # the model's precision as run ("auto" resolved on the CPU: int8 or fp32)
    mask_out: str | None = None  # the subject's masks (mask_out=), when written
    # convergence="subject": each frame's screen plane, for the frames this call processed
    # (relative depth: the convergence in [0, 1]; metric: the screen distance in metres)
    screen_plane: tuple[float, ...] = ()


def check_spatial_encoder() -> str:
    """The x265 that ``layout="spatial"`` encodes with (Note [Spatial video through x265]);
    raises EncoderError saying what to install (and suggesting ``apple-3d``) when there is
    none, before anything is loaded or written."""
    found = _core.find_mvhevc_encoder()
    if "error" in found:
        raise EncoderError(found["error"])
    return f"{found['path']} ({found['version']})"


def convert(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    options: ConvertOptions | None = None,
    *,
    progress: bool = True,
    on_progress: Callable[[dict], Any] | None = None,
    cancel: threading.Event | None = None,
    **overrides: Any,
) -> ConversionResult:
    """Converts a 2D video into a stereoscopic 3D video.

    The options: a :class:`~sbsconv.options.ConvertOptions` (``sbsconv.ConvertOptions``),
    keywords, or both (the keywords change the given options, as ``options.replace(...)``);
    ``convert(a, b, divergence=2.5)`` is ``convert(a, b, ConvertOptions(divergence=2.5))``.
    Every option, its default, help and constraint: ``ConvertOptions.fields()``.

    Depth (``model``, ``checkpoint``, ``device``, ``precision``, ``batch_size``,
    ``input_size``, ``temporal_mode``): see :func:`sbsconv.models.load`. Stereo (``layout``, ``eye_size``,
    ``divergence``, ``convergence``, ``max_shift``, ``synthetic_view``, ``ipd_mm``,
    ``fov_degrees``, ``screen_distance``, ``edge_dilation``): see
    :func:`sbsconv.stereo.render`. Stability: the depth stabiliser (``percentiles``,
    ``range_decay``, ``align``, ``smoothing`` = its alpha, ``motion_threshold``), scene cuts
    (``scene_cuts``, ``cut_sensitivity``, ``min_scene_length``), the comfort budget
    (``comfort_limit`` in % of the eye width, ``auto_strength``). Encoding: ``encoder``,
    ``codec``, ``crf``/``cq``/``quality``, ``preset``, ``bit_depth``; ``audio`` and
    ``subtitles`` carry the source's streams over. Timing: every source frame once with its
    timestamp, unless ``fps`` resamples; ``start``/``duration`` select a window (seconds).

    ``preview_every=N``: one frame every N seconds, into a short clip (one second per frame)
    and PNG images beside it, for tuning settings. ``depth_video``: also write the depth,
    colour-mapped, as a video (no resume then). ``resume``: the run keeps a journal beside
    the output and a later identical call continues after the last finished segment
    (``segment_seconds`` long). ``headset_suffix`` names the output the way headset players
    expect (``_LR``, ``_3dh``, ``_TB``, ``_3dv``, ``_180_LR``).

    ``progress`` shows a progress bar; ``on_progress`` receives a dict (frames_done,
    frames_total, fraction, fps, eta_seconds, phase) several times a second; frames_total,
    fraction and eta_seconds are None while the video's length is not known yet (eta_seconds
    also until a rate is measured). ``cancel``: a
    ``threading.Event`` that, once set (from another thread: a web page's Cancel), stops the
    run as Ctrl-C does and raises :class:`~sbsconv.errors.CancelledError`.

    Every option is checked before any work; problems, unknown option names included, raise
    :class:`~sbsconv.errors.OptionError` (a ValueError). Ctrl-C stops the run within about a
    second (after the current depth batch) and leaves nothing under the output name. The
    result's ``options`` are the options the run used.
    """

    # ---- options, all checked before any work --------------------------------------------
    ConvertOptions.check_names(overrides, also=CALL_KEYWORDS)
    options = ConvertOptions.merged(options, overrides)
    input_path = check_path("input", input, "the path of a video")
    output = check_path("output", output, "the path of the 3D video to write")
    output_path = resolve_output(input_path, output, options)
    if options.layout == "spatial":
        check_spatial_encoder()
    if options.point_clouds_every is not None and options.depth_out is None:
        raise OptionError("point_clouds_every writes beside the depth export: give depth_out too")
    images_dir = None
    if options.preview_every is not None:
        images_dir = Path(output_path).with_name(Path(output_path).stem + "_frames")
    # the input probed (it must be a video before anything is loaded or written), the depth
    # source, every automatic choice: Note [Conversion plan]
    plan = planning.build_plan(input_path, output_path, options, images_dir=images_dir)
    warn_all(input_path, plan.notes)  # before the work (Note [3D input])
    if images_dir is not None:
        images_dir.mkdir(parents=True, exist_ok=True)
        for old in images_dir.glob("frame_*.png"):
            old.unlink()

    # ---- the run ---------------------------------------------------------------------------
    t0 = time.perf_counter()
    run = run_engine(plan.engine, Path(input_path).name, progress, on_progress, cancel)
    seconds = time.perf_counter() - t0
    processed = run.frames - run.resumed_from
    stage_fps = {s.name: s.fps for s in run.stages}
    warn_all(input_path, run.warnings)
    exported = run.depth_export
    if exported and exported["sidecar"] and run.screen_plane:
        from sbsconv.depthio import record_screen_plane

        record_screen_plane(exported["sidecar"], run.screen_plane, relative=plan.depth.kind != "metric")
    clouds: list[str] = []
    if exported and options.point_clouds_every is not None:
        from sbsconv import pointcloud

        clouds = pointcloud.export_point_clouds(
            exported["path"], every=options.point_clouds_every, video=input_path,
            fov_degrees=options.fov_degrees, scale=options.point_cloud_scale)
    images = tuple(sorted(str(p) for p in images_dir.glob("frame_*.png"))) if images_dir else ()
    return ConversionResult(
        output=run.output or output_path,
        frames=run.frames,
        seconds=seconds,
        fps=processed / seconds if seconds > 0 else 0.0,
        resumed_from=run.resumed_from,
        width=run.width,
        height=run.height,
        layout=options.layout,
        model=plan.depth_name,
        encoder=run.encoder,
        encoder_preset=run.encoder_preset or (options.preset or ""),
        encoder_preset_reason=run.encoder_preset_reason,
        encoders=run.encoder_instances,
        skipped_encoders=run.skipped_encoders,
        streams=run.streams,
        stage_fps=stage_fps,
        cuts=run.cuts,
        comfort=run.comfort,
        fov_degrees=run.fov_degrees,
        warnings=plan.notes + run.warnings,
        images=images,
        damaged_frames=run.damaged_frames,
        truncated=run.truncated,
        options=options,
        depth_out=(exported["path"] if exported else plan.engine.get("depth_video")
                   if options.depth_out is not None else None),
        depth_sidecar=exported["sidecar"] if exported else None,
        mask_out=run.mask_export["path"] if run.mask_export else None,
        screen_plane=run.screen_plane,
        point_clouds=tuple(clouds),
        stages=tuple(s.as_dict() for s in run.stages),
        batch_size=run.batch_size or plan.batch_size,
        precision=plan.precision,
    )


def convert_part(input_path: str, part_path: str, options: ConvertOptions, *, start: float,
                 duration: float | None, output_start: float, timeline_start: float,
                 final_output: str | None = None,
                 on_progress: Callable[[dict], Any] | None = None) -> dict:
    """One part of a split conversion (Note [Parts of one video] in cpp/sbsconv/pipeline/Engine.h):
    converts the window [start, start + duration) of ``input_path`` (seconds after the source's
    start), where the frames before ``output_start`` only warm up the temporal state, into the
    video-only NUT piece ``part_path`` on the timeline that starts at ``timeline_start``;
    ``final_output`` is the file the parts are joined into (its container decides the stereo
    boxes that assembling adds).
    Returns the frames written, the model's mean field of view, the warnings and the engine
    options (without the model) that assembling the parts needs, and how many frames went
    through the depth model only to warm up (those before ``output_start``)."""
    window = planning.PartWindow(start=start, duration=duration, output_start=output_start,
                                 timeline_start=timeline_start, final_output=final_output or part_path)
    plan = planning.build_plan(input_path, part_path, options, purpose="part", part=window)
    engine_options = plan.engine
    run = run_engine(engine_options, Path(input_path).name, False, on_progress)
    depth = run.stage("depth")
    depth_frames = depth.frames if depth is not None else run.frames
    return {"frames": run.frames, "warm_up_frames": depth_frames - run.frames,
            "fov_degrees": run.fov_degrees, "warnings": [*plan.notes, *run.warnings], "encoder": run.encoder,
            "engine_options": {k: v for k, v in engine_options.items() if k != "model"}}
