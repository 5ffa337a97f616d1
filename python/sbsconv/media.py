"""Reading and writing video: probe, frame batches, the encoder/muxer.

Frames are uint8 RGB tensors ``[N, 3, H, W]`` with a batch dimension. Decoded batches come
in the channels-last memory layout (the decoder's packed RGB, without a reordering copy);
every torch operation accepts them, and ``.contiguous()`` gives the planar layout if needed.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import torch

from sbsconv._native import _core, flush_log
from sbsconv.errors import OptionError, SbsconvWarning
from sbsconv.options import check_device, check_path

__all__ = [
    "FrameBatch",
    "MediaInfo",
    "StreamInfo",
    "VideoReader",
    "VideoWriter",
    "WriteResult",
    "probe",
    "read_frames",
    "reencode",
]


# ---- probe -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamInfo:
    """One stream of a media file, as ffprobe describes it."""

    index: int
    type: str  # "video", "audio", "subtitle", "data", "attachment"
    codec: str
    codec_long_name: str
    language: str | None
    title: str | None
    is_default: bool
    attached_picture: bool
    profile: str | None
    bit_rate: int | None
    start_time: float
    duration: float | None
    num_frames: int | None
    time_base: Fraction | None
    # video
    width: int = 0
    height: int = 0
    coded_width: int = 0
    coded_height: int = 0
    rotation: float = 0.0
    avg_frame_rate: Fraction | None = None
    r_frame_rate: Fraction | None = None
    sample_aspect_ratio: Fraction | None = None
    pix_fmt: str = ""
    bit_depth: int = 0
    color_range: str = ""
    color_space: str = ""
    color_transfer: str = ""
    color_primaries: str = ""
    field_order: str = ""
    # audio
    sample_rate: int = 0
    channels: int = 0
    channel_layout: str = ""
    sample_fmt: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    # stereo and spherical signalling as FFmpeg reads it (st3d/sv3d, Matroska's StereoMode and
    # Projection): "side-by-side", "top-bottom" (+ " (right eye first)"); "equirectangular 180"
    stereo3d: str = ""
    spherical: str = ""


@dataclass(frozen=True)
class MediaInfo:
    """What :func:`probe` finds: the video stream sbsconv would decode, and every stream.

    ``width``/``height`` are the displayed size (after rotation); ``rotation`` is the display
    matrix angle in degrees counter-clockwise, as ffprobe reports it. ``color_space`` is the
    YUV matrix. ``num_frames`` is the container's frame count, None when it does not say.
    """

    path: str
    format_name: str
    video_stream: int
    width: int
    height: int
    rotation: float
    fps: Fraction
    duration: float | None
    num_frames: int | None
    pix_fmt: str
    bit_depth: int
    codec: str
    color_range: str
    color_space: str
    color_transfer: str
    color_primaries: str
    has_audio: bool
    has_subtitles: bool
    start_time: float
    bit_rate: int | None
    streams: tuple[StreamInfo, ...]
    tags: dict[str, str] = field(default_factory=dict)
    # The pixels' shape as displayed (after rotation): 1 for square pixels, 32/27 or 8/9 for
    # anamorphic DVD video; and the picture's displayed aspect ratio (width * sar / height).
    sample_aspect_ratio: Fraction = Fraction(1)
    display_aspect_ratio: Fraction = Fraction(1)
    # How the file says it is 3D (see stereo_description()): the layout and projection FFmpeg
    # reads, and in MP4/MOV Apple's boxes (vexu, hfov) and a second MV-HEVC layer.
    stereo: dict = field(default_factory=dict)

    @property
    def display_width(self) -> int:
        """The width at which the picture is shown (``width`` times the sample aspect ratio)."""
        return max(1, round(self.width * self.sample_aspect_ratio))

    @property
    def video(self) -> StreamInfo:
        return self.streams[self.video_stream]

    @property
    def audio_streams(self) -> tuple[StreamInfo, ...]:
        return tuple(s for s in self.streams if s.type == "audio")

    @property
    def subtitle_streams(self) -> tuple[StreamInfo, ...]:
        return tuple(s for s in self.streams if s.type == "subtitle")


def _fspath(path: str | os.PathLike[str], name: str = "path") -> str:
    return check_path(name, path, "the path of a media file")


def probe(path: str | os.PathLike[str]) -> MediaInfo:
    """Reads a file's streams and the properties of its best video stream.

    Raises :class:`~sbsconv.errors.InputNotFoundError` for a missing file and
    :class:`~sbsconv.errors.InputError` for anything that is not a usable video.
    """
    try:
        raw = _core.probe(_fspath(path))
    finally:
        flush_log()
    streams = tuple(StreamInfo(**s) for s in raw["streams"])
    video = streams[raw["video_stream"]]
    fps = video.avg_frame_rate or video.r_frame_rate or Fraction(0)
    duration = video.duration if video.duration is not None else raw["duration"]
    sar = video.sample_aspect_ratio if video.sample_aspect_ratio and video.sample_aspect_ratio > 0 else Fraction(1)
    if round(video.rotation / 90) % 2 == 1:
        sar = 1 / sar  # a quarter turn shows the pixels turned
    dar = Fraction(video.width, video.height) * sar if video.width and video.height else Fraction(1)
    return MediaInfo(
        path=raw["path"],
        format_name=raw["format_name"],
        video_stream=raw["video_stream"],
        width=video.width,
        height=video.height,
        rotation=video.rotation,
        fps=fps,
        duration=duration,
        num_frames=video.num_frames,
        pix_fmt=video.pix_fmt,
        bit_depth=video.bit_depth,
        codec=video.codec,
        color_range=video.color_range,
        color_space=video.color_space,
        color_transfer=video.color_transfer,
        color_primaries=video.color_primaries,
        has_audio=any(s.type == "audio" for s in streams),
        has_subtitles=any(s.type == "subtitle" for s in streams),
        start_time=raw["start_time"],
        bit_rate=raw["bit_rate"],
        streams=streams,
        tags=raw["tags"],
        sample_aspect_ratio=sar,
        display_aspect_ratio=dar,
        stereo=stereo_description(raw["path"], video),
    )


def stereo_description(path: str, video: StreamInfo) -> dict:
    """How a file signals 3D, for checking it before copying it to a headset: ``layout``
    (side-by-side / top-bottom, from st3d or Matroska's StereoMode), ``spherical`` (e.g.
    "equirectangular 180" for VR180), ``apple`` (Vision Pro: eyes present, hero eye, baseline in
    micrometres, disparity adjustment in 1/10000 of the width, projection and view packing
    codes, horizontal field of view in degrees; None without a vexu box) and ``mv_hevc``
    (Apple spatial video: a second HEVC layer)."""
    boxes = _core.read_stereo_boxes(path)
    apple = None
    if boxes["vexu"] or boxes["hfov_millidegrees"] is not None:
        apple = {"stri": boxes["stri"], "hero": {0: "none", 1: "left", 2: "right"}.get(boxes["hero"], boxes["hero"]),
                 "baseline_um": boxes["baseline_um"], "disparity_adjustment": boxes["disparity_adjustment"],
                 "projection": boxes["projection"] or None, "packing": boxes["packing"] or None,
                 "hfov_degrees": None if boxes["hfov_millidegrees"] is None else boxes["hfov_millidegrees"] / 1000}
    st3d = {1: "top-bottom", 2: "side-by-side", 4: "side-by-side (right eye first)", 0: "2d"}
    layout = video.stereo3d or (st3d.get(boxes["st3d"], "") if boxes["st3d"] is not None else "")
    return {"layout": layout, "spherical": video.spherical or boxes["spherical"], "apple": apple,
            "mv_hevc": bool(boxes["mv_hevc"])}


# ---- decoding ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameBatch:
    """Consecutive decoded frames.

    ``data``: uint8 RGB ``[N, 3, H, W]`` on the requested device (channels-last layout);
    ``pts``: float64 ``[N]`` presentation times in seconds on the stream's clock (as ffprobe's
    ``pts_time``); ``durations``: float64 ``[N]`` display durations in seconds;
    ``pts_ticks``/``time_base``: the exact timestamps.
    """

    data: torch.Tensor
    pts: torch.Tensor
    durations: torch.Tensor
    pts_ticks: tuple[int, ...]
    time_base: Fraction

    def __len__(self) -> int:
        return int(self.data.shape[0])


def _check_window(start: float | None, duration: float | None) -> None:
    if start is not None and (not isinstance(start, int | float) or not math.isfinite(start) or start < 0):
        raise OptionError(f"start must be a number of seconds >= 0, got {start!r}")
    if duration is not None and (
        not isinstance(duration, int | float) or not math.isfinite(duration) or duration <= 0
    ):
        raise OptionError(f"duration must be a number of seconds > 0, got {duration!r}")


def _check_device(device: str | torch.device) -> str:
    """A reader's device: one sbsconv runs on, named (no "auto": the frames go where asked)."""
    refused = OptionError(f"device must be cpu, cuda, cuda:N or mps, got {device!r}")
    try:
        text = check_device("device", device)
    except OptionError:
        raise refused from None
    if text == "auto":
        raise refused
    return str(torch.device(text))


class VideoReader:
    """Decodes one video stream of a file in batches (see :func:`read_frames`).

    Usable as an iterator of :class:`FrameBatch` and as a context manager. ``info`` describes
    the stream as decoded (displayed size, time base, frame rate). Not thread-safe.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        batch_size: int = 8,
        start: float | None = None,
        duration: float | None = None,
        device: str | torch.device = "cpu",
        stream: int | None = None,
        hwaccel: str = "auto",
        threads: int = 0,
        strict: bool = False,
        width: int | None = None,
        height: int | None = None,
    ) -> None:
        for name, value in (("width", width), ("height", height)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 16384):
                raise OptionError(f"{name} must be an integer within 2..16384, got {value!r}")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise OptionError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if not isinstance(threads, int) or threads < 0:
            raise OptionError(f"threads must be an integer >= 0, got {threads!r}")
        _check_window(start, duration)
        self.path = _fspath(path)
        self.batch_size = batch_size
        self.strict = strict
        try:
            self._reader = _core.VideoReader(
                self.path,
                stream=-1 if stream is None else int(stream),
                start=None if start is None else float(start),
                duration=None if duration is None else float(duration),
                threads=threads,
                hwaccel=str(hwaccel),
                device=_check_device(device),
                strict=bool(strict),
                width=width or 0,
                height=height or 0,
            )
        finally:
            flush_log()
        self.info: dict[str, Any] = self._reader.stream_info()
        self._time_base: Fraction = self.info["time_base"]

    @property
    def hardware_decoder(self) -> str | None:
        """The hardware decoder in use ("cuda", "videotoolbox" ...), None in software."""
        return self._reader.hardware_decoder or None

    @property
    def hardware_fallback_reason(self) -> str | None:
        """Why a requested hardware decoder is not used, None when it is (or none was asked)."""
        return self._reader.hardware_fallback_reason or None

    @property
    def frames_read(self) -> int:
        return self._reader.frames_read

    def read(self, max_frames: int | None = None) -> FrameBatch | None:
        """The next batch (up to ``max_frames``, default ``batch_size``), None at the end."""
        n = self.batch_size if max_frames is None else max_frames
        try:
            data, pts, durations = self._reader.read(n)
        finally:
            flush_log()
            self._emit_warnings()
        if len(pts) == 0:
            return None
        tb = float(self._time_base)
        return FrameBatch(
            data=data,
            pts=torch.tensor(pts, dtype=torch.float64) * tb,
            durations=torch.tensor(durations, dtype=torch.float64) * tb,
            pts_ticks=tuple(pts),
            time_base=self._time_base,
        )

    def _emit_warnings(self) -> None:
        for message in self._reader.take_warnings():
            warnings.warn(f"{self.path}: {message}", SbsconvWarning, stacklevel=4)

    def __iter__(self) -> Iterator[FrameBatch]:
        while True:
            batch = self.read()
            if batch is None:
                return
            yield batch

    def close(self) -> None:
        self._reader = None  # type: ignore[assignment]

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_frames(
    path: str | os.PathLike[str],
    *,
    batch_size: int = 8,
    start: float | None = None,
    duration: float | None = None,
    device: str | torch.device = "cpu",
    stream: int | None = None,
    hwaccel: str = "auto",
    threads: int = 0,
    strict: bool = False,
    width: int | None = None,
    height: int | None = None,
) -> Iterator[FrameBatch]:
    """Yields the frames of a video in batches of up to ``batch_size``.

    Every frame of the window exactly once, in presentation order, upright (rotation
    metadata applied), converted to RGB as FFmpeg converts it (BT.601/709/2020 matrices,
    limited/full range, 8 to 12 bits, 4:2:0 to 4:4:4).

    - ``start``/``duration``: a window in seconds from the beginning of the file, as
      ``ffmpeg -ss/-t``; the returned ``pts`` stay on the stream's own clock.
    - ``stream``: a stream index; by default the best video stream (largest picture).
    - ``hwaccel``: "auto" (NVDEC for CUDA devices, VideoToolbox on macOS), "none", or an
      FFmpeg hardware type; falls back to software with the reason logged.
    - ``strict``: raise :class:`~sbsconv.errors.DecodeError` on corrupt or truncated data
      instead of warning (:class:`~sbsconv.errors.SbsconvWarning`) and decoding what can be.
    - ``width``/``height``: scale the frames (one side alone keeps the aspect ratio), during
      the colour conversion, which makes small frames cheap.
    """
    reader = VideoReader(
        path,
        batch_size=batch_size,
        start=start,
        duration=duration,
        device=device,
        stream=stream,
        hwaccel=hwaccel,
        threads=threads,
        strict=strict,
        width=width,
        height=height,
    )
    yield from reader


# ---- encoding ----------------------------------------------------------------------------


@dataclass(frozen=True)
class WriteResult:
    path: str
    encoder: str
    skipped_encoders: tuple[str, ...]
    frames: int
    streams: tuple[str, ...]
    warnings: tuple[str, ...]


def _as_fraction(value: Fraction | float | int | str, name: str) -> Fraction:
    try:
        f = Fraction(value).limit_denominator(1_000_000) if isinstance(value, float) else Fraction(value)
    except (TypeError, ValueError, ZeroDivisionError):
        raise OptionError(f"{name} must be a positive number or fraction, got {value!r}") from None
    if f <= 0:
        raise OptionError(f"{name} must be positive, got {value!r}")
    return f


class VideoWriter:
    """Encodes RGB frames to H.264/HEVC in MP4, MOV or MKV, carrying over audio and subtitles.

    ``fps`` is the nominal frame rate; timestamps passed to :meth:`write` are seconds (or
    ticks of ``time_base`` with ``ticks=True``). ``source`` names the file whose audio and
    subtitle streams are carried over: stream copy where the container accepts the codec,
    AAC (audio) or mov_text/SubRip (text subtitles) otherwise. ``time_origin`` is the
    source-clock time that becomes zero in the output (default: the source's start).

    The output appears under its name only when :meth:`close` completes; an exception inside
    the ``with`` block, or :meth:`abort`, leaves nothing behind.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        width: int,
        height: int,
        fps: Fraction | float | int | str,
        time_base: Fraction | None = None,
        codec: str = "h264",
        encoder: str = "auto",
        crf: int | None = None,
        cq: int | None = None,
        quality: int | None = None,
        preset: str | None = None,
        bit_depth: int = 8,
        container: str | None = None,
        source: str | os.PathLike[str] | None = None,
        audio: str = "copy",
        subtitles: str = "copy",
        time_origin: float | None = None,
        time_end: float | None = None,
        stereo: str | None = None,
        metadata: dict[str, str] | None = None,
        device: str | torch.device = "cpu",
        threads: int = 0,
    ) -> None:
        self.path = _fspath(path)
        self.fps = _as_fraction(fps, "fps")
        self.time_base = _as_fraction(time_base, "time_base") if time_base is not None else 1 / self.fps
        for name, value in (("width", width), ("height", height)):
            if not isinstance(value, int) or value <= 0:
                raise OptionError(f"{name} must be a positive integer, got {value!r}")
        source_path = _fspath(source) if source is not None else ""
        if time_origin is None:
            time_origin = probe(source_path).start_time if source_path else 0.0
        try:
            self._writer = _core.MediaWriter(
                self.path,
                width,
                height,
                self.time_base,
                self.fps,
                container=container or "",
                codec=codec,
                encoder=encoder,
                crf=crf,
                cq=cq,
                quality=quality,
                preset=preset or "",
                bit_depth=bit_depth,
                device=_check_device(device),
                threads=threads,
                source=source_path,
                audio=audio,
                subtitles=subtitles,
                time_origin=float(time_origin),
                time_end=time_end,
                stereo=stereo or "",
                metadata=dict(metadata or {}),
            )
        finally:
            flush_log()
        self._time_origin = float(time_origin)
        self._next_index = 0
        self.result: WriteResult | None = None

    @property
    def encoder(self) -> str:
        return self._writer.encoder

    def write(
        self,
        frames: torch.Tensor,
        pts: Sequence[float] | torch.Tensor | None = None,
        *,
        ticks: bool = False,
    ) -> None:
        """Appends frames (uint8 ``[N,3,H,W]`` or one ``[3,H,W]``). ``pts`` in seconds (or
        time_base ticks with ``ticks=True``); by default frames follow each other at ``fps``
        from the output's start."""
        if not isinstance(frames, torch.Tensor):
            raise OptionError(f"frames must be a torch.Tensor, got {type(frames).__name__}")
        if frames.dim() == 3:
            frames = frames.unsqueeze(0)
        if frames.dtype != torch.uint8:
            raise OptionError(f"frames must be uint8, got {frames.dtype}")
        n = int(frames.shape[0])
        if pts is None:
            step = 1 / (self.fps * self.time_base)
            origin_ticks = round(Fraction(self._time_origin).limit_denominator(10**9) / self.time_base)
            ticks_list = [origin_ticks + round((self._next_index + i) * step) for i in range(n)]
        else:
            values = pts.tolist() if isinstance(pts, torch.Tensor) else list(pts)
            if len(values) != n:
                raise OptionError(f"{n} frames but {len(values)} timestamps")
            ticks_list = (
                [int(v) for v in values]
                if ticks
                else [round(Fraction(v).limit_denominator(10**9) / self.time_base) for v in values]
            )
        self._next_index += n
        try:
            self._writer.write(frames, ticks_list)
        finally:
            flush_log()

    def close(self) -> WriteResult:
        """Finishes the file and renames it into place."""
        if self.result is not None:
            return self.result
        try:
            raw = self._writer.finish()
        finally:
            flush_log()
        self.result = WriteResult(
            path=raw["path"],
            encoder=raw["encoder"],
            skipped_encoders=tuple(raw["skipped_encoders"]),
            frames=raw["frames"],
            streams=tuple(raw["streams"]),
            warnings=tuple(raw["warnings"]),
        )
        for message in self.result.warnings:
            warnings.warn(f"{self.path}: {message}", SbsconvWarning, stacklevel=2)
        return self.result

    def abort(self) -> None:
        """Discards the output; nothing is left under its name."""
        self._writer.abort()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def reencode(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    start: float | None = None,
    duration: float | None = None,
    batch_size: int = 8,
    **writer_options: Any,
) -> WriteResult:
    """Decodes ``src`` and encodes it again into ``dst`` with its audio and subtitles: the
    media layer end to end (the conversion engine adds depth and stereo in between)."""
    reader = VideoReader(src, batch_size=batch_size, start=start, duration=duration)
    info = reader.info
    origin = info["start_time"] + (start or 0.0)
    end = origin + duration if duration is not None else None
    writer = VideoWriter(
        dst,
        width=info["width"],
        height=info["height"],
        fps=info["frame_rate"],
        time_base=info["time_base"],
        source=src,
        time_origin=origin,
        time_end=end,
        **writer_options,
    )
    with writer:
        for batch in reader:
            writer.write(batch.data, batch.pts_ticks, ticks=True)
    assert writer.result is not None
    return writer.result
