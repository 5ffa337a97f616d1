"""The one door into the C++ engine (Note [Engine] in cpp/sbsconv/pipeline/Engine.h): runs it
to the end with a progress bar, turns Ctrl-C or a cancel event into a prompt stop, and reports
the run's problems that did not stop it as warnings. Every entry point that converts
(``convert``, ``export_depth``, the parts of ``convert_split``) goes through :func:`run_engine`
with the engine options of a :class:`~sbsconv.plan.ConversionPlan`."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
import warnings
from typing import Any

from dataclasses import dataclass, fields

from sbsconv._native import _core, flush_log
from sbsconv.errors import CancelledError, InternalError, SbsconvWarning

__all__ = ["EngineRun", "StageFigures", "core_options", "run_engine", "warn_all"]


def core_options(engine: Mapping[str, Any]) -> Any:
    """The engine's typed options (``_core.EngineOptions``) from a plan's ``engine`` mapping:
    each nested mapping becomes its option class, each class takes every one of its fields as
    a required keyword (Note [Engine options at the boundary] in cpp/bindings/EngineOptions.cpp),
    so a field the plan leaves out or one the engine does not have is an InternalError here,
    before anything runs."""
    def typed(cls: Any, values: Mapping[str, Any] | None) -> Any:
        if values is None:
            return None
        try:
            return cls(**values)
        except TypeError as e:
            raise InternalError(f"the plan's engine options do not match the engine's {cls.__name__}: "
                                f"{_difference(cls, values) or e}") from e

    try:
        writer = dict(engine["writer"], apple=typed(_core.AppleStereo, engine["writer"]["apple"]))
        return typed(_core.EngineOptions, {
            **engine,
            "stabilizer": typed(_core.StabilizerOptions, engine["stabilizer"]),
            "comfort": typed(_core.ComfortOptions, engine["comfort"]),
            "disparity": typed(_core.DisparityOptions, engine["disparity"]),
            "stereo": typed(_core.StereoOptions, engine["stereo"]),
            "writer": typed(_core.WriterOptions, writer),
            "depth_export": typed(_core.DepthExportOptions, engine["depth_export"]),
            "depth_source": typed(_core.DepthSourceOptions, engine["depth_source"]),
            "subject": None if engine["subject"] is None else typed(_core.SubjectOptions, dict(
                engine["subject"], mask_export=typed(_core.DepthExportOptions, engine["subject"]["mask_export"]),
                mask_source=typed(_core.DepthSourceOptions, engine["subject"]["mask_source"]))),
        })
    except KeyError as e:
        raise InternalError(f"the plan's engine options have no {e}") from e


def _difference(cls: Any, values: Mapping[str, Any]) -> str:
    """What a typed option class's constructor (its signature as the binding documents it)
    missed and did not know among ``values``; "" when its signature cannot be read."""
    import re

    signature = re.search(r"\*, (.*?)\) -> None", cls.__init__.__doc__ or "")
    if signature is None:
        return ""
    wanted = set(re.findall(r"(\w+): ", signature.group(1)))
    missing, unknown = sorted(wanted - set(values)), sorted(set(values) - wanted)
    return "; ".join(part for part in (missing and f"missing {', '.join(missing)}",
                                       unknown and f"unknown {', '.join(unknown)}") if part)


@dataclass(frozen=True)
class StageFigures:
    """One stage of a run (Note [Host synchronisation], Note [Sharing the cores])."""

    name: str
    frames: int
    busy_seconds: float  # time spent working, not waiting on its queues
    batches: int
    host_syncs: int  # times the stage made the host wait for the device
    threads: int  # LibTorch intra-op threads it computed with
    threads_after_model: int  # those it took once the model was done (0: it kept its share)

    @property
    def fps(self) -> float:
        return self.frames / self.busy_seconds if self.busy_seconds > 0 else float("inf")

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class EngineRun:
    """What the C++ engine reports at the end of a run (its EngineResult), field by field: a
    field the engine stops sending fails here, at the boundary, naming it."""

    output: str  # the file written ("" when only depth products were)
    frames: int  # frames in the output
    resumed_from: int  # the first frame this call processed
    batch_size: int  # frames per depth batch as run (a resumed run's: the first run's)
    seconds: float
    width: int
    height: int
    stages: tuple[StageFigures, ...]
    encoder: str
    skipped_encoders: tuple[str, ...]
    encoder_preset: str  # the libx264/libx265 preset the engine chose ("" when it chose none)
    encoder_preset_reason: str
    # Note [Chunk-parallel encoding]: encoder instances that encoded segments at once, and each
    # segment's frames then (0 when one instance encoded)
    encoder_instances: int
    chunk_frames: int
    streams: tuple[str, ...]
    warnings: tuple[str, ...]
    cuts: tuple[int, ...]
    comfort: tuple[dict, ...]  # per scene: disparity statistics against the comfort limit
    fov_degrees: float | None
    damaged_frames: int
    truncated: bool
    depth_export: dict | None  # path, sidecar, frames, warnings of a depth export
    mask_export: dict | None  # the same, of the subject's masks (mask_out)
    # convergence="subject": each output frame's screen plane (relative: the convergence in
    # [0,1]; metric: the screen distance in metres)
    screen_plane: tuple[float, ...]

    @classmethod
    def from_core(cls, raw: dict) -> EngineRun:
        try:
            values = {f.name: raw[f.name] for f in fields(cls)}
            values["stages"] = tuple(StageFigures(**dict(s)) for s in raw["stages"])
        except (KeyError, TypeError) as exc:
            raise InternalError(f"the engine's result does not match sbsconv.engine.EngineRun: {exc!r}",
                                stage="engine") from None
        for name in ("skipped_encoders", "streams", "warnings", "cuts", "screen_plane"):
            values[name] = tuple(values[name])
        values["comfort"] = tuple(dict(c) for c in values["comfort"])
        return cls(**values)

    def stage(self, name: str) -> StageFigures | None:
        return next((s for s in self.stages if s.name == name), None)


class _Progress:
    """A progress bar (tqdm: in notebooks the widget, in terminals the text bar) with fps and
    ETA, plus the caller's callback. Values only grow."""

    def __init__(self, show: bool, callback: Callable[[dict], Any] | None, description: str) -> None:
        self.callback = callback
        self.bar = None
        self.last = 0
        if show:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=None, unit="frame", desc=description, dynamic_ncols=True, leave=True)

    def update(self, info: dict, *, final: bool = False) -> None:
        done = max(self.last, int(info["frames_done"]))
        total = info.get("frames_total")
        if final:
            total = done
        if total is not None:
            total = max(total, done)
        fraction = None if not total else min(1.0, done / total)
        elapsed = float(info.get("elapsed", 0.0))
        processed = done - int(info.get("resumed_from", 0))
        rate = processed / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if (total and rate > 0) else None
        if self.bar is not None:
            if total is not None and self.bar.total != total:
                self.bar.total = total
            self.bar.n = done
            self.bar.set_postfix_str(info.get("phase", ""), refresh=False)
            self.bar.refresh()
        self.last = done
        if self.callback is not None:
            self.callback({"frames_done": done, "frames_total": total, "fraction": fraction, "fps": rate,
                           "eta_seconds": eta, "phase": info.get("phase"), "elapsed": elapsed})

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_engine(engine_options: dict, description: str, progress: bool,
               on_progress: Callable[[dict], Any] | None, cancel: threading.Event | None = None) -> EngineRun:
    """Runs the C++ engine to the end with a progress bar; Ctrl-C or ``cancel`` (an Event set
    from another thread) stops it within about a second, nothing left under the output names
    (CancelledError for ``cancel``). Returns the engine's result."""
    engine = _core.Engine(core_options(engine_options))
    bar = _Progress(progress, on_progress, description)
    engine.start()
    cancelled = False
    try:
        while not engine.wait(0.2):
            flush_log()
            if cancel is not None and cancel.is_set():
                cancelled = True
                break
            bar.update(engine.progress())
    except BaseException:
        # Ctrl-C, or anything raised by the progress bar or the caller's on_progress: the engine
        # stops before the exception leaves (nothing keeps running, nothing half-written stays)
        _stop(engine, bar)
        raise
    if cancelled:
        _stop(engine, bar)
        raise CancelledError("cancelled: the conversion stopped and left nothing under the output name")
    try:
        raw = EngineRun.from_core(engine.result())
    except BaseException:
        flush_log()
        bar.close()
        raise
    flush_log()
    try:
        bar.update(engine.progress(), final=True)
    finally:
        bar.close()
    return raw


def _stop(engine: Any, bar: _Progress) -> None:
    engine.cancel()
    engine.wait(30.0)
    flush_log()
    bar.close()


def warn_all(where: str, messages: Any) -> None:
    """Each of a run's problems that did not stop it, as an SbsconvWarning."""
    for message in messages:
        warnings.warn(f"{where}: {message}", SbsconvWarning, stacklevel=3)
