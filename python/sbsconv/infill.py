"""Merging an externally inpainted 3D video back into sbsconv's file: :func:`infill_merge`.

The way back of the infill round trip (README, "Inpainting with your own model"; Note [Infill
masks] in cpp/sbsconv/stereo/Stereo.h). ``convert(..., fill="none", infill_mask="mask.mkv")``
writes the 3D video with black holes where each eye sees what the source hid, and a mask that
marks them; a separate model (StereoCrafter-style diffusion, say) paints the holes and writes a
new video, usually without the audio, the subtitles or the stereo metadata, often re-encoded.
:func:`infill_merge` puts that picture back into a file like the one sbsconv wrote:

- the picture: the inpainted video's frames, encoded with sbsconv's usual defaults (the 3D
  video's codec and bit depth unless told otherwise, the encoder chosen as everywhere);
- the 3D video's frame timing: frame i of the inpainted video gets frame i's timestamp;
- its audio and subtitle streams, copied (:class:`~sbsconv.media.VideoWriter` with ``source=``);
- its stereo signalling: the layout tag (st3d in MP4/MOV, StereoMode in MKV), and Apple's
  vexu/hfov boxes when it has them and the output is MP4/MOV (added after muxing with the box
  editor, Note [Editing ISO-BMFF files]); and its comment.

Both videos are probed and checked against each other before anything is written (frame
size, frame rate, frame count: one frame more or fewer at the end is allowed, as encoders
drop or repeat the last one); the exact counts are checked again while merging. The output
appears under its name only when complete, written under a temporary name and renamed.

Not carried: VR180's projection (sv3d, Matroska's Projection), which the Python side cannot
write (infill masks are made for flat layouts only), and Apple spatial video (two MV-HEVC
views): both are refused before anything is written.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import time
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from sbsconv import media
from sbsconv._native import _core
from sbsconv.errors import InputError, OptionError, OutputError, SbsconvWarning
from sbsconv.media import MediaInfo
from sbsconv.options import CONTAINERS, ConvertOptions, check_path

__all__ = ["MERGE_OPTIONS", "InfillMergeResult", "infill_merge"]

# The encoding options infill_merge takes, checked as ConvertOptions checks them (codec's
# "auto" means the 3D video's codec here).
MERGE_OPTIONS = ("codec", "encoder", "crf", "cq", "quality", "preset", "audio", "subtitles")
# The layout words probe() reads (st3d, StereoMode) -> the tag VideoWriter writes.
_LAYOUT_TAGS = {"side-by-side": "sbs", "side-by-side (right eye first)": "sbs-rl",
                "top-bottom": "tb"}
_ISO_BMFF = (".mp4", ".m4v", ".mov")
# Frame rates closer than this (relative) are the same rate written with other time bases
# (30000/1001 and 29.97); 30 and 29.97 differ by 1e-3.
_FPS_TOLERANCE = 5e-4
_BATCH = 8


@dataclass(frozen=True)
class InfillMergeResult:
    output: str
    frames: int  # frames in the output: the 3D video's
    infilled_frames: int  # frames read from the inpainted video (one more or fewer is allowed)
    seconds: float  # wall time of this call
    fps: float  # frames merged per second
    width: int
    height: int
    codec: str  # of the output's video
    encoder: str
    skipped_encoders: tuple[str, ...]
    streams: tuple[str, ...]  # carried audio/subtitle streams and what happened to them
    stereo: dict  # the output's stereo signalling, as probe(output).stereo says it
    warnings: tuple[str, ...]


def infill_merge(
    sbs_video: str | os.PathLike[str],
    infilled_video: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    codec: str = "auto",
    encoder: str = "auto",
    crf: int | None = None,
    cq: int | None = None,
    quality: int | None = None,
    preset: str | None = None,
    audio: str = "copy",
    subtitles: str = "copy",
    progress: bool = True,
    **unknown: Any,
) -> InfillMergeResult:
    """Writes ``output``: the picture of ``infilled_video`` (``sbs_video``'s frames with the
    holes painted in by another model) with ``sbs_video``'s audio and subtitles, stereo
    metadata, frame timing and comment.

    Encoding: ``codec`` "auto" (default) is ``sbs_video``'s codec (H.264 or HEVC, and its bit
    depth), else "h264" or "hevc"; ``encoder``, ``crf``/``cq``/``quality``, ``preset``,
    ``audio`` and ``subtitles`` as in :func:`sbsconv.convert`. ``progress`` shows a progress bar.

    Refused before anything is written (nothing appears under ``output``): a missing input
    (:class:`~sbsconv.errors.InputNotFoundError`); an inpainted video of another frame size, frame
    rate, or frame count (beyond one frame at the end), a VR180 or MV-HEVC 3D video
    (:class:`~sbsconv.errors.InputError`); an ``output`` that is one of the inputs, an output
    extension other than .mp4, .m4v, .mov or .mkv, an unknown or bad option
    (:class:`~sbsconv.errors.OptionError`).
    """
    t0 = time.perf_counter()
    settings = _checked_settings(dict(codec=codec, encoder=encoder, crf=crf, cq=cq, quality=quality,
                                      preset=preset, audio=audio, subtitles=subtitles), unknown)
    if not isinstance(progress, bool):
        raise OptionError(f"progress must be True or False, got {progress!r}")
    sbs_path = check_path("sbs_video", sbs_video, "the path of the 3D video")
    infilled_path = check_path("infilled_video", infilled_video, "the path of the inpainted video")
    out_path = check_path("output", output, "the path of the video to write")
    suffix = Path(out_path).suffix.lower()
    if suffix not in CONTAINERS:
        raise OptionError(f"the output must end in {', '.join(CONTAINERS)}: {out_path!r}")
    sbs = media.probe(sbs_path)
    infilled = media.probe(infilled_path)
    for path in (sbs_path, infilled_path):
        if _same_file(out_path, path):
            raise OptionError(f"the output {out_path} is an input: write the merged video to "
                              "another file")
    _check_sbs_video(sbs)
    frames_total = _check_same_frames(sbs, infilled)

    tag, apple, notes = _stereo_signalling(sbs, suffix)
    codec_name, bit_depth = _video_codec(sbs, settings.pop("codec"))
    comment = sbs.tags.get("comment") or sbs.tags.get("COMMENT")
    metadata = ({"comment": f"{comment}; holes inpainted by another model (sbsconv infill-merge)"}
                if comment else {})

    timing = media.VideoReader(sbs_path, batch_size=_BATCH, width=16, height=16)  # its timestamps
    pictures = media.VideoReader(infilled_path, batch_size=_BATCH)
    # with Apple's boxes, the writer's file is a temporary that the box editor copies to the output
    target = out_path if apple is None else _temporary(out_path, "plain")
    writer = media.VideoWriter(
        target, width=sbs.width, height=sbs.height, fps=timing.info["frame_rate"],
        time_base=timing.info["time_base"], time_origin=timing.info["start_time"],
        container=None if apple is None else ("mov" if suffix == ".mov" else "mp4"),
        codec=codec_name, bit_depth=bit_depth, source=sbs_path, stereo=tag, metadata=metadata,
        **settings)
    bar = _progress_bar(progress, frames_total, Path(out_path).name)
    try:
        with writer:
            written, read = _merge_frames(timing, pictures, writer, bar, sbs, infilled)
        if apple is not None:
            _add_boxes(target, out_path, apple)
    finally:
        if bar is not None:
            bar.close()
        if apple is not None:
            with contextlib.suppress(OSError):
                os.remove(target)
    result = writer.result
    assert result is not None
    made = media.probe(out_path)
    seconds = time.perf_counter() - t0
    return InfillMergeResult(
        output=out_path, frames=written, infilled_frames=read, seconds=seconds,
        fps=written / seconds if seconds > 0 else 0.0, width=made.width, height=made.height,
        codec=made.codec, encoder=result.encoder, skipped_encoders=result.skipped_encoders,
        streams=result.streams, stereo=made.stereo, warnings=tuple(notes) + result.warnings)


# ---- checks, all before anything is written --------------------------------------------------


def _checked_settings(values: dict[str, Any], unknown: dict[str, Any]) -> dict[str, Any]:
    """The encoding options, each checked by its ConvertOptions field (OptionError)."""
    if unknown:
        parts = []
        for name in unknown:
            close = difflib.get_close_matches(str(name), (*MERGE_OPTIONS, "progress"), n=2,
                                              cutoff=0.6)
            hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
            parts.append(f"{name!r}{hint}")
        raise OptionError(f"infill_merge has no option {', '.join(parts)}; its options: "
                          f"{', '.join(MERGE_OPTIONS)}, progress")
    return {name: ConvertOptions.field_named(name).check(value) for name, value in values.items()}


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # the output does not exist yet
        return os.path.realpath(a) == os.path.realpath(b)


def _check_sbs_video(sbs: MediaInfo) -> None:
    """What the 3D video may be: frame-packed (or untagged), not VR180, not MV-HEVC."""
    if sbs.stereo.get("mv_hevc"):
        raise InputError(f"{sbs.path} is Apple spatial video (two MV-HEVC views), which cannot be "
                         "merged: convert with layout='apple-3d' (one side-by-side picture) for "
                         "inpainting", path=sbs.path, stage="open")
    if sbs.stereo.get("spherical"):
        raise InputError(f"{sbs.path} is {sbs.stereo['spherical']} (VR180): infill masks are made "
                         "for flat layouts, and infill-merge cannot write the VR180 projection",
                         path=sbs.path, stage="open")


def _fps_text(fps: Fraction) -> str:
    return f"{float(fps):.6g} frames/s"


def _frame_count(info: MediaInfo) -> tuple[int | None, bool]:
    """The frames the container states (exact), else duration x rate (an estimate)."""
    if info.num_frames is not None:
        return info.num_frames, True
    if info.duration and info.fps:
        return round(info.duration * float(info.fps)), False
    return None, False


def _check_same_frames(sbs: MediaInfo, infilled: MediaInfo) -> int | None:
    """Refuses an inpainted video that cannot be the 3D video's frames: another size, another
    rate, another length. Returns the 3D video's frame count (None when unknown)."""
    if (infilled.width, infilled.height) != (sbs.width, sbs.height):
        raise InputError(f"{infilled.path} is {infilled.width}x{infilled.height}, {sbs.path} is "
                         f"{sbs.width}x{sbs.height}: the inpainted video must have the 3D "
                         "video's frame size", path=infilled.path, stage="open")
    if sbs.fps and infilled.fps and abs(float(infilled.fps / sbs.fps) - 1) > _FPS_TOLERANCE:
        raise InputError(f"{infilled.path} runs at {_fps_text(infilled.fps)}, {sbs.path} at "
                         f"{_fps_text(sbs.fps)}: the inpainted video must keep the 3D video's "
                         "frame rate", path=infilled.path, stage="open")
    (n_sbs, exact_sbs), (n_in, exact_in) = _frame_count(sbs), _frame_count(infilled)
    if n_sbs is not None and n_in is not None:
        # one frame more or fewer at the end is allowed; an estimate may be one off itself
        slack = 1 + (not exact_sbs) + (not exact_in)
        if abs(n_sbs - n_in) > slack:
            raise _count_error(infilled.path, n_in, sbs.path, n_sbs, exact=exact_sbs and exact_in)
    return n_sbs


def _count_error(infilled: str, n_infilled: int, sbs: str, n_sbs: int, *,
                 exact: bool = True) -> InputError:
    about = "" if exact else "about "
    return InputError(f"{infilled} has {about}{n_infilled} frames, {sbs} has {about}{n_sbs}: the "
                      "inpainted video must have the 3D video's frames (one more or fewer at the "
                      "end is allowed)", path=infilled, stage="open")


def _stereo_signalling(sbs: MediaInfo, suffix: str) -> tuple[str, Any, list[str]]:
    """The layout tag and Apple's boxes (None: none) the output gets, and notes on what could
    not be carried (also given as warnings)."""
    notes = []
    layout = sbs.stereo.get("layout") or ""
    tag = _LAYOUT_TAGS.get(layout, "")
    if layout and layout != "2d" and not tag:
        notes.append(f"{sbs.path} says its layout is {layout!r}, which sbsconv does not write: the "
                     "output has no stereo tag")
    apple = sbs.stereo.get("apple")
    boxes = None
    if apple is not None and suffix not in _ISO_BMFF:
        notes.append(f"{sbs.path} has Apple's stereo boxes (vexu/hfov), which only MP4/MOV can "
                     f"hold: the {suffix} output has the layout tag only")
    elif apple is not None and None in (apple["baseline_um"], apple["disparity_adjustment"]):
        notes.append(f"{sbs.path} has Apple's vexu box without a baseline or disparity adjustment, "
                     "which sbsconv does not write: it is not carried over")
    elif apple is not None:
        boxes = _core.AppleStereo(packing=apple["packing"] or "",
                                  projection=apple["projection"] or "",
                                  baseline_um=apple["baseline_um"],
                                  disparity_adjustment=apple["disparity_adjustment"],
                                  hfov_degrees=apple["hfov_degrees"])
    for note in notes:
        warnings.warn(note, SbsconvWarning, stacklevel=3)
    return tag, boxes, notes


def _video_codec(sbs: MediaInfo, codec: str) -> tuple[str, int]:
    """The codec and bit depth to encode with: "auto" keeps the 3D video's (H.264 or HEVC, 8 or
    10 bits; an Apple layout's HEVC included), else the writer's own choice."""
    if codec == "auto" and sbs.codec in ("h264", "hevc"):
        codec = sbs.codec
    return codec, 10 if codec == "hevc" and sbs.bit_depth > 8 else 8


# ---- the merge ---------------------------------------------------------------------------------


def _merge_frames(timing: media.VideoReader, pictures: media.VideoReader, writer: media.VideoWriter,
                  bar: Any, sbs: MediaInfo, infilled: MediaInfo) -> tuple[int, int]:
    """Writes each inpainted frame with the 3D video's timestamp of the same frame; a last frame
    the inpainted video lacks is its last frame again, one it has beyond is dropped. Returns the
    frames written and read (InputError, the writer aborted, when the counts differ by more)."""
    written = read = 0
    last = None
    while (batch := pictures.read()) is not None:
        read += len(batch)
        stamps = timing.read(len(batch))
        n = 0 if stamps is None else len(stamps)
        if n:
            writer.write(batch.data[:n], stamps.pts_ticks, ticks=True)
            written += n
            last = batch.data[n - 1]
            if bar is not None:
                bar.update(n)
        if n < len(batch):  # the 3D video has ended
            read += _count_rest(pictures)
            if read - written > 1:
                raise _count_error(infilled.path, read, sbs.path, written)
            return written, read
    missing = []
    while (stamps := timing.read()) is not None:
        missing.extend(stamps.pts_ticks)
    if len(missing) > 1 or (missing and last is None):
        raise _count_error(infilled.path, read, sbs.path, written + len(missing))
    if missing:
        writer.write(last.unsqueeze(0), missing, ticks=True)
        written += 1
        if bar is not None:
            bar.update(1)
    return written, read


def _count_rest(reader: media.VideoReader) -> int:
    count = 0
    while (batch := reader.read()) is not None:
        count += len(batch)
    return count


def _temporary(path: str, what: str) -> str:
    """A temporary beside ``path``, named as every temporary of an output is (removed with
    abandoned ones: ".<name>.sbsconv-<pid>...part")."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.sbsconv-{os.getpid()}.{what}.part")


def _add_boxes(plain: str, output: str, apple: Any) -> None:
    """Copies the finished ``plain`` file to ``output`` with Apple's boxes in its video sample
    entry (and the moov first), under a temporary name, then renames it into place durably."""
    edited = _temporary(output, "boxes")
    try:
        _core.copy_with_sample_entry_boxes(plain, edited, _core.apple_stereo_boxes(apple),
                                           moov_first=True)
        with open(edited, "rb+") as file:
            os.fsync(file.fileno())
        os.replace(edited, output)
    except OSError as exc:
        raise OutputError(f"cannot write {output}: {exc.strerror or exc}", path=output,
                          stage="mux") from exc
    finally:
        with contextlib.suppress(OSError):
            os.remove(edited)
    folder = os.path.dirname(output) or "."
    with contextlib.suppress(OSError):
        handle = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def _progress_bar(show: bool, total: int | None, description: str) -> Any:
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="frame", desc=description, dynamic_ncols=True, leave=True)
