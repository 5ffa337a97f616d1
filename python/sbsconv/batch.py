"""Many videos: ``sbsconv.convert_many()`` converts files, folders and globs into an output
folder, one file at a time per worker, and reports what happened to each.

    summary = sbsconv.convert_many(["season1/", "extra.mkv"], "season1_3d/", recursive=True,
                                   layout="half-sbs")
    print(summary)              # done, skipped, failed (with reasons), total time
    summary.failed              # the FileOutcome of each failure

Each file is an ordinary :func:`sbsconv.convert` with the same options (one checked
``ConvertOptions`` for all), so each keeps its own resume journal: running the same command
again skips finished files and continues interrupted ones. ``devices=["cuda:0", "cuda:1"]`` (or
``"all"``) runs one worker process per device, each converting whole files. The scheduling of
many conversions lives here and only here: the engine stays one process converting one video.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import fnmatch
import glob
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sbsconv.errors import InternalError, OptionError, OutputError, SbsconvError
from sbsconv.options import CALL_KEYWORDS, CONTAINERS, ConvertOptions, check_device, check_path

__all__ = ["BatchSummary", "FileOutcome", "SplitResult", "convert_many", "convert_split", "find_inputs", "output_for",
           "plan_parts"]

logger = logging.getLogger("sbsconv")

# what a folder's files are taken as when no pattern is given
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".m2ts", ".mts", ".mpg", ".mpeg",
                    ".wmv", ".flv", ".3gp")


@dataclass(frozen=True)
class FileOutcome:
    input: str
    output: str
    status: str  # "done", "skipped" (already converted), "failed", "not started" (stopped earlier)
    reason: str = ""  # why it failed or was skipped
    seconds: float = 0.0
    frames: int = 0
    device: str = ""
    resumed_from: int = 0  # the first frame this run converted (> 0: continued from a journal)
    # a failure's full report (the traceback, where there was one); also logged at debug level
    details: str = dataclasses.field(default="", repr=False, compare=False)


@dataclass(frozen=True)
class BatchSummary:
    files: tuple[FileOutcome, ...]
    seconds: float

    def _with(self, status: str) -> tuple[FileOutcome, ...]:
        return tuple(f for f in self.files if f.status == status)

    @property
    def done(self) -> tuple[FileOutcome, ...]:
        return self._with("done")

    @property
    def skipped(self) -> tuple[FileOutcome, ...]:
        return self._with("skipped")

    @property
    def failed(self) -> tuple[FileOutcome, ...]:
        return self._with("failed")

    def __str__(self) -> str:
        lines = [f"{len(self.done)} done, {len(self.skipped)} skipped, {len(self.failed)} failed"
                 + (f", {len(self._with('not started'))} not started" if self._with("not started") else "")
                 + f" in {self.seconds:.1f} s"]
        for f in self.files:
            detail = f" ({f.frames} frames, {f.seconds:.1f} s{', ' + f.device if f.device else ''})" \
                if f.status == "done" else (f": {f.reason}" if f.reason else "")
            lines.append(f"  {f.status:11s} {f.input} -> {f.output}{detail}")
        return "\n".join(lines)


def find_inputs(inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *, recursive: bool = False,
                pattern: str | None = None, output_dir: str | os.PathLike[str] | None = None
                ) -> list[tuple[Path, Path]]:
    """The files to convert, each with the folder its output path is relative to: files as
    given, the videos of folders (``recursive``: their subfolders too; ``pattern``: a file-name
    glob such as ``"*.mkv"`` instead of the video extensions), and globs. In order, once each.
    A folder's walk does not enter ``output_dir`` where it lies inside that folder: the batch's
    outputs are not its inputs (Note [3D input] in sbsconv.plan)."""
    outputs = Path(output_dir).resolve() if output_dir is not None else None
    if isinstance(inputs, str | os.PathLike):
        inputs = [inputs]
    found: list[tuple[Path, Path]] = []
    seen: set[Path] = set()

    def take(path: Path, base: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            found.append((path, base))

    def wanted(path: Path) -> bool:
        if pattern is not None:
            return fnmatch.fnmatch(path.name, pattern)
        return path.suffix.lower() in VIDEO_EXTENSIONS

    empty_folders: list[str] = []
    for item in inputs:
        text = os.fspath(item)
        path = Path(text)
        if path.is_dir():
            files = path.rglob("*") if recursive else path.iterdir()
            before = len(found)
            # the outputs' folder, where it lies inside this one
            skip = outputs if outputs is not None and outputs != path.resolve() and outputs.is_relative_to(
                path.resolve()) else None
            for f in sorted(p for p in files if p.is_file() and not p.name.startswith(".")):
                if wanted(f) and not (skip is not None and f.resolve().is_relative_to(skip)):
                    take(f, path)
            if len(found) == before:
                empty_folders.append(text)
        elif path.is_file():
            take(path, path.parent)
        elif any(c in text for c in "*?["):
            matches = sorted(glob.glob(text, recursive=recursive))
            if not matches:
                raise OptionError(f"no file matches {text!r}")
            for m in matches:
                if Path(m).is_file():
                    take(Path(m), Path(m).parent)
        else:
            raise OptionError(f"no such file or folder: {text!r}")
    if empty_folders:
        looked_for = (f"files matching {pattern!r}" if pattern is not None
                      else "videos (" + ", ".join(VIDEO_EXTENSIONS) + "; --pattern / pattern= for others)")
        nested = not recursive and any(p.is_dir() for f in empty_folders for p in Path(f).iterdir())
        where = ", ".join(map(repr, empty_folders)) + (" (their subfolders too: --recursive / recursive=True)"
                                                       if nested else "")
        if not found:
            raise OptionError(f"no {looked_for} in {where}")
        logger.warning("no %s in %s", looked_for, where)
    return found


def output_for(path: Path, base: Path, output_dir: Path, options: ConvertOptions) -> Path:
    """A file's output: the same relative path under ``output_dir``, in the input's container
    when convert() writes it (else MP4), named for headsets when ``headset_suffix`` says so."""
    from sbsconv.conversion import output_name

    relative = path.relative_to(base) if path.is_relative_to(base) else Path(path.name)
    suffix = path.suffix.lower() if path.suffix.lower() in CONTAINERS else ".mp4"
    if options.layout in ("apple-3d", "spatial") and suffix == ".mkv":
        suffix = ".mov"  # Vision Pro reads its boxes in QuickTime files
    out = output_dir / relative.with_suffix(suffix)
    return Path(output_name(out, options.layout) if options.headset_suffix else out)


def _finished(output: Path) -> bool:
    """An output that a run completed: it exists and no resume journal beside it says that a
    run is still under way."""
    journal = output.with_name("." + output.name + ".sbsconv-resume")
    return output.is_file() and not journal.exists()


def _failure_text(exc: BaseException) -> str:
    """A failure in one line: an sbsconv error's own first line, anything else's type and
    message (an unexpected exception is a bug, and says what it was)."""
    if isinstance(exc, SbsconvError):
        return str(exc).split("\n")[0]
    message = str(exc).split("\n")[0]
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _convert_one(job: tuple[str, str, ConvertOptions, bool],
                 on_progress: Callable[[dict], Any] | None = None) -> FileOutcome:
    """One file of a batch: its outcome, whatever happened (every exception is reported as the
    file's failure, with its traceback in ``details``; only Ctrl-C goes through)."""
    from sbsconv.conversion import convert

    source, target, options, progress = job
    t0 = time.perf_counter()
    try:
        folder = Path(target).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot make the output folder {folder}: {exc.strerror or exc}",
                              stage="open", path=str(folder)) from exc
        result = convert(source, target, options, progress=progress, on_progress=on_progress)
    except Exception as exc:  # noqa: BLE001 (one file's failure must not stop or hang the batch)
        details = traceback.format_exc()
        logger.debug("%s failed:\n%s", source, details)
        return FileOutcome(source, target, "failed", _failure_text(exc), time.perf_counter() - t0,
                           device=options.device, details=details)
    return FileOutcome(source, result.output, "done", "", time.perf_counter() - t0, result.frames,
                       device=options.device, resumed_from=result.resumed_from)


def _worker(run: Callable[[Any, str], Any], device: str, jobs: Any, results: Any) -> None:
    """One device's worker process: ``run(payload, device)`` for each job received until the
    pipe says stop (None) or closes; each result goes back as ``(index, result, None)``, each
    exception as ``(index, exception, traceback)``: an SbsconvError as itself, anything else as
    an InternalError naming it (so that it always crosses the pipe)."""
    import warnings

    from sbsconv.errors import SbsconvWarning

    warnings.simplefilter("ignore", SbsconvWarning)  # reported in the caller's results instead
    while True:
        try:
            job = jobs.recv()
        except (EOFError, OSError):  # the caller went away
            return
        if job is None:
            return
        index, payload = job
        try:
            reply = (index, run(payload, device), None)
        except Exception as exc:  # noqa: BLE001 (reported to the caller, who decides)
            details = traceback.format_exc()
            logger.debug("worker on %s: job %s failed:\n%s", device, index, details)
            if not isinstance(exc, SbsconvError):
                exc = InternalError(f"{_failure_text(exc)} (in the worker process on {device})",
                                    stage="worker")
            reply = (index, exc, details)
        try:
            results.send(reply)
        except (BrokenPipeError, EOFError):  # the caller went away
            return
        except Exception as exc:  # noqa: BLE001 (cannot cross the pipe: pickled before it is sent)
            error = InternalError(f"the result of job {index} could not be sent back: "
                                  f"{_failure_text(exc)}", stage="worker")
            results.send((index, error, traceback.format_exc()))


def _exit_text(code: int | None) -> str:
    """How a process ended, in words: its exit code, or the signal that killed it."""
    if code is None:
        return "it stopped answering"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}, exit code {code}"
    return f"exit code {code}"


@dataclass
class _Slot:
    """One worker process of the pool, its pipes, and the job it is working on."""

    device: str
    process: Any = None
    jobs: Any = None  # the caller's end of the job pipe (send)
    results: Any = None  # the caller's end of the result pipe (recv)
    job: int | None = None  # the index of the job in flight
    dead: bool = False


class _WorkerPool:
    """One spawned worker process per device (CUDA and threads do not survive fork), each
    running ``run(payload, device)`` for the jobs submitted, one job at a time; stopped (and
    joined) on exit. Each worker has its own pipes, so the caller always knows which job a
    worker holds: a worker that dies (killed, crashed, ``os._exit``) fails that job with its
    exit code instead of leaving :meth:`result` waiting, and is started again when a job
    needs it."""

    POLL_SECONDS = 1.0

    def __init__(self, devices: list[str], run: Callable[[Any, str], Any]) -> None:
        self.context = multiprocessing.get_context("spawn")
        self.run = run
        self.slots = [_Slot(d) for d in devices]
        self.pending: collections.deque[tuple[int, Any]] = collections.deque()
        self.done: collections.deque[tuple[int, Any]] = collections.deque()

    def _start(self, slot: _Slot) -> None:
        jobs_out, jobs_in = self.context.Pipe(duplex=False)  # (receiving end, sending end)
        results_out, results_in = self.context.Pipe(duplex=False)
        slot.process = self.context.Process(target=_worker, daemon=True,
                                            args=(self.run, slot.device, jobs_out, results_in))
        slot.process.start()
        jobs_out.close()  # the worker's ends: closed here, so that its death shows as EOF
        results_in.close()
        slot.jobs, slot.results, slot.job, slot.dead = jobs_in, results_out, None, False

    def __enter__(self) -> _WorkerPool:
        for slot in self.slots:
            self._start(slot)
        return self

    def submit(self, index: int, payload: Any) -> None:
        """Queues a job; it goes to the first idle worker."""
        self.pending.append((index, payload))
        self._dispatch()

    def _dispatch(self) -> None:
        for slot in self.slots:
            if not self.pending:
                return
            if slot.job is not None:
                continue
            if slot.dead or not slot.process.is_alive():  # a job needs it: a fresh process
                self._close(slot)
                self._start(slot)
            index, payload = self.pending.popleft()
            slot.job = index
            with contextlib.suppress(OSError, EOFError):  # it died since: failed on the next look
                slot.jobs.send((index, payload))

    def _died(self, slot: _Slot) -> tuple[int, Any]:
        """A worker that died with a job: the job's failure, naming how the process ended."""
        slot.process.join(timeout=5)
        if slot.process.is_alive():  # its pipe broke but it runs on: not to be trusted with more
            slot.process.kill()
        index, slot.job, slot.dead = slot.job, None, True
        how = _exit_text(slot.process.exitcode)
        error = InternalError(f"the worker process on {slot.device} died ({how}) before finishing "
                              "its job", stage="worker")
        logger.debug("worker on %s died: %s", slot.device, error)
        return index, error

    def result(self) -> tuple[int, Any]:
        """The next finished job: (index, result or the exception it raised: an SbsconvError,
        or an InternalError for anything else and for a worker that died on it). Never waits
        on a dead worker; raises InternalError when no job is in flight."""
        while True:
            if self.done:
                return self.done.popleft()
            busy = [slot for slot in self.slots if slot.job is not None]
            if not busy:
                raise InternalError("the worker pool was asked for a result with no job in flight",
                                    stage="worker")
            waiting = [slot.results for slot in busy] + [slot.process.sentinel for slot in busy]
            ready = multiprocessing.connection.wait(waiting, timeout=self.POLL_SECONDS)
            for slot in busy:
                if slot.results in ready or slot.results.poll():
                    try:
                        index, value, details = slot.results.recv()
                    except (EOFError, OSError):  # closed: the process ended
                        self.done.append(self._died(slot))
                        continue
                    except Exception as exc:  # noqa: BLE001 (a reply that cannot be read back)
                        reason = _failure_text(exc)
                        index, details = slot.job, traceback.format_exc()
                        value = InternalError(f"the reply of the worker on {slot.device} could not "
                                              f"be read: {reason}", stage="worker")
                    if details is not None and isinstance(value, BaseException):
                        value.details = details  # the worker's traceback, for whoever reports it
                    slot.job = None
                    self.done.append((index, value))
                elif slot.process.sentinel in ready or not slot.process.is_alive():
                    self.done.append(self._died(slot))
            self._dispatch()

    def _close(self, slot: _Slot) -> None:
        for end in (slot.jobs, slot.results):
            with contextlib.suppress(OSError):
                end.close()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        # normally: each worker is told to stop and finishes its job; after an error (a part
        # failed, Ctrl-C) the workers still converting are stopped at once
        for slot in self.slots:
            if exc_type is None:
                with contextlib.suppress(OSError):
                    slot.jobs.send(None)
            elif slot.process.is_alive():
                slot.process.terminate()
        for slot in self.slots:
            slot.process.join(timeout=30 if exc_type is None else 10)
            if slot.process.is_alive():
                slot.process.kill()
                slot.process.join(timeout=5)
            self._close(slot)


def _file_on(payload: tuple[str, str, ConvertOptions], device: str) -> FileOutcome:
    source, target, options = payload
    return _convert_one((source, target, options.replace(device=device), False))


def _devices(devices: str | Iterable[str] | None) -> list[str] | None:
    if devices is None:
        return None
    if devices == "all":
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return [f"cuda:{i}" for i in range(count)] or ["cpu"]
    if isinstance(devices, str):
        devices = [devices]
    out = [check_device(f"devices[{i}]", d) for i, d in enumerate(devices)]
    if not out:
        raise OptionError("devices must name at least one device, or be 'all'")
    return out


def convert_many(
    inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    options: ConvertOptions | None = None,
    *,
    recursive: bool = False,
    pattern: str | None = None,
    skip_existing: bool = True,
    devices: str | Iterable[str] | None = None,
    on_error: str = "continue",
    backend: str = "local",
    address: str | None = None,
    retries: int = 3,
    progress: bool = True,
    on_progress: Callable[[dict], Any] | None = None,
    **overrides: Any,
) -> BatchSummary:
    """Converts every file of ``inputs`` (files, folders, globs; see :func:`find_inputs`) into
    ``output_dir`` with the same options (a ConvertOptions and/or keywords, as
    :func:`sbsconv.convert`). A file that fails is reported and the others continue
    (``on_error="stop"``: nothing more starts after a failure); finished outputs are skipped
    (``skip_existing``), interrupted ones continue from their journals. ``devices``: one worker
    process per device (``"all"``: every CUDA device, or the CPU); None converts in this
    process. ``on_progress`` receives {"files_done", "files_total", "current"} after each file.

    ``backend="ray"`` runs each file as a Ray task (the ``ray`` extra) on the cluster at
    ``address`` ("auto", "ray://host:10001"; None starts a local one for this call): one GPU
    per task where the cluster has GPUs, else one CPU. Inputs and outputs must be on paths
    every worker sees (a shared filesystem). A task lost with its worker is run again (up to
    ``retries`` times) and continues from the file's resume journal; ``on_progress`` also
    receives {"running": {input: fraction}, "pids": {input: worker pid}} while tasks run; Ctrl-C (or a raising callback, or
    ``on_error="stop"`` after a failure) cancels every task still queued or running.
    Returns a :class:`BatchSummary` (also what the command line prints)."""
    ConvertOptions.check_names(overrides, also=CALL_KEYWORDS)
    options = ConvertOptions.merged(options, overrides)
    if on_error not in ("continue", "stop"):
        raise OptionError(f"on_error must be 'continue' or 'stop', got {on_error!r}")
    if backend not in ("local", "ray"):
        raise OptionError(f"backend must be 'local' or 'ray', got {backend!r}")
    if backend == "ray" and devices is not None:
        raise OptionError("backend='ray' places each file on a GPU of the cluster itself: leave devices out")
    if address is not None and backend != "ray":
        raise OptionError("address names a Ray cluster: it needs backend='ray'")
    if not isinstance(retries, int) or retries < 0:
        raise OptionError(f"retries must be a whole number >= 0, got {retries!r}")
    if options.depth is not None or options.depth_out is not None or options.infill_mask is not None:
        raise OptionError("depth, depth_out and infill_mask name one file each: use convert() per file for them")
    workers = _devices(devices)
    out_dir = Path(output_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"the output folder {out_dir} is a file: name a folder (or a new name) "
                          "for the outputs", stage="open", path=str(out_dir))
    files = find_inputs(inputs, recursive=recursive, pattern=pattern, output_dir=out_dir)  # (before it is made)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot make the output folder {out_dir}: {exc.strerror or exc}",
                          stage="open", path=str(out_dir)) from exc
    t0 = time.perf_counter()
    outcomes: list[FileOutcome | None] = [None] * len(files)
    jobs: list[tuple[int, str, str]] = []
    targets = [output_for(path, base, out_dir, options) for path, base in files]
    # an input that is another input's output (outputs beside their inputs: headset_suffix)
    output_of: dict[Path, Path] = {}
    for (path, _), target in zip(files, targets, strict=True):
        if target.resolve() != path.resolve():
            output_of.setdefault(target.resolve(), path)
    for i, (path, _) in enumerate(files):
        target = targets[i]
        made_by = output_of.get(path.resolve())
        if made_by is not None:
            outcomes[i] = FileOutcome(str(path), str(target), "skipped", f"it is this batch's output for {made_by}")
        elif path.resolve() == target.resolve():
            outcomes[i] = FileOutcome(str(path), str(target), "failed", "the output would overwrite the input")
        elif skip_existing and _finished(target):
            outcomes[i] = FileOutcome(str(path), str(target), "skipped", "already converted")
        else:
            jobs.append((i, str(path), str(target)))

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(files), unit="file", desc="files", position=0, leave=True,
                   initial=sum(o is not None for o in outcomes))

    def record(i: int, outcome: FileOutcome) -> None:
        outcomes[i] = outcome
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"{Path(outcome.input).name}: {outcome.status}")
        if on_progress is not None:
            on_progress({"files_done": sum(o is not None for o in outcomes), "files_total": len(files),
                         "current": outcome.input, "status": outcome.status})

    stopped = False
    try:
        if backend == "ray":
            def running(tasks: dict[int, tuple[float, int]]) -> None:
                live = {i: t for i, t in tasks.items() if outcomes[i] is None}
                fractions = {files[i][0].as_posix(): f for i, (f, _) in live.items()}
                if bar is not None and fractions:
                    bar.set_postfix_str(", ".join(f"{Path(k).name} {v:.0%}" for k, v in fractions.items()))
                if on_progress is not None:
                    on_progress({"files_done": sum(o is not None for o in outcomes), "files_total": len(files),
                                 "running": fractions,
                                 "pids": {files[i][0].as_posix(): pid for i, (_, pid) in live.items()}})

            _run_on_ray(jobs, options, address=address, retries=retries, record=record,
                        stop_on_failure=on_error == "stop", on_tasks=running)
        elif workers is None:
            for i, source, target in jobs:
                if stopped:
                    break
                outcome = _convert_one((source, target, options, progress))
                record(i, outcome)
                stopped = on_error == "stop" and outcome.status == "failed"
        else:
            with _WorkerPool(workers, _file_on) as pool:
                pending = list(jobs)
                running = 0
                while pending and running < len(workers):  # one file per worker at a time
                    i, source, target = pending.pop(0)
                    pool.submit(i, (source, target, options))
                    running += 1
                while running:
                    i, outcome = pool.result()
                    running -= 1
                    if isinstance(outcome, BaseException):  # its worker died (or failed outside it)
                        source = str(files[i][0])
                        target = str(output_for(*files[i], out_dir, options))
                        outcome = FileOutcome(source, target, "failed", _failure_text(outcome),
                                              details=getattr(outcome, "details", "") or "")
                    record(i, outcome)
                    stopped = stopped or (on_error == "stop" and outcome.status == "failed")
                    if pending and not stopped:
                        j, source, target = pending.pop(0)
                        pool.submit(j, (source, target, options))
                        running += 1
    finally:
        if bar is not None:
            bar.close()
    final = tuple(o if o is not None else FileOutcome(files[i][0].as_posix(), "", "not started",
                                                      "stopped after a failure (on_error='stop')")
                  for i, o in enumerate(outcomes))
    return BatchSummary(files=final, seconds=time.perf_counter() - t0)


# ---- Ray: files as tasks on a cluster -----------------------------------------------------------


def _ray_convert(index: int, source: str, target: str, options: ConvertOptions, reporter: Any) -> FileOutcome:
    """One file as a Ray task. Ray gives the task its GPU (CUDA_VISIBLE_DEVICES), so the device
    is cuda:0 inside it; progress goes to the caller's reporter actor twice a second at most.
    A task lost with its worker is run again by Ray and continues from the file's journal."""
    import warnings

    import ray

    from sbsconv.errors import SbsconvWarning

    warnings.simplefilter("ignore", SbsconvWarning)  # reported in the file's result instead
    device = options.device
    if ray.get_gpu_ids():
        device = "cuda:0"
    where = f"{device} on {ray.util.get_node_ip_address()}"
    report = _task_reporter(reporter, index)
    reporter.update.remote(index, 0.0, os.getpid())
    try:
        outcome = _convert_one((source, target, options.replace(device=device), False), on_progress=report)
    finally:
        # the conversion has stopped and cleaned up (a cancel waits for this, not for Ray's
        # word that the task was cancelled)
        ray.get(reporter.end.remote(index))
    return dataclasses.replace(outcome, device=where)


def _fraction(event: dict) -> float:
    """A progress event's fraction done, 0 while the run does not know its length yet (convert()
    reports ``fraction`` None until the frame count is known)."""
    fraction = event.get("fraction")
    return 0.0 if fraction is None else float(fraction)


def _task_reporter(reporter: Any, index: int, interval: float = 0.5,
                   clock: Callable[[], float] = time.monotonic) -> Callable[[dict], None]:
    """A Ray task's on_progress: each ``interval`` seconds at most (by ``clock``), and on reaching
    the end, the file's fraction and the worker's pid go to the caller's reporter actor."""
    last = [0.0]

    def report(event: dict) -> None:
        now = clock()
        fraction = _fraction(event)
        if now - last[0] >= interval or fraction >= 1.0:
            last[0] = now
            reporter.update.remote(index, fraction, os.getpid())

    return report


class _Reporter:
    """The caller's view of the tasks' progress: each file's latest fraction and worker pid."""

    def __init__(self) -> None:
        self.files: dict[int, tuple[float, int]] = {}
        self.ended: set[int] = set()

    def update(self, index: int, fraction: float, pid: int) -> None:
        self.files[index] = (fraction, pid)

    def end(self, index: int) -> None:
        self.ended.add(index)

    def still_running(self) -> list[int]:
        return sorted(set(self.files) - self.ended)

    def snapshot(self) -> dict[int, tuple[float, int]]:
        return dict(self.files)


@contextlib.contextmanager
def _ray_session(address: str | None) -> Iterator[Any]:
    """Ray, connected: to the cluster at ``address`` ("auto", "ray://host:10001"), the one this
    process already joined, or (None) a local cluster started here and stopped on exit."""
    if address is None:
        # A local cluster runs its workers with this very interpreter: Ray's "uv run" hook
        # (read when Ray is imported) would build them another environment, one without
        # sbsconv's extension.
        os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    try:
        import ray
    except ImportError as exc:
        raise OptionError("backend='ray' needs Ray: pip install 'sbsconv[ray]' (or uv sync --extra ray)") from exc
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def _gpus_per_task(ray: Any, options: ConvertOptions) -> int:
    """One GPU per task where the cluster has GPUs (and the options allow one), else none."""
    return 1 if ray.cluster_resources().get("GPU", 0) >= 1 and options.device != "cpu" else 0


def _cancel_all(ray: Any, refs: Iterable[Any], reporter: Any = None,
                targets: dict[int, str] | None = None) -> None:
    """Cancels tasks and lets each running conversion stop and clean up. Ray delivers a cancel
    as a KeyboardInterrupt in the task's thread, which a task can miss (one raised inside
    Ray's own code while the task reports its progress is not the conversion's to see): the
    tasks still running are cancelled again every two seconds, for up to 20 s. Ray may call a
    task cancelled before its conversion has stopped; with the tasks' ``reporter``, this also
    waits (within the 20 s) until every conversion that started has ended, and with their
    ``targets`` (output path by index) ends the workers of those that did not and removes the
    temporaries they were writing."""
    refs = list(refs)
    pending = refs
    deadline = time.monotonic() + 20.0
    while pending and time.monotonic() < deadline:
        for ref in pending:
            ray.cancel(ref, force=False)
        _, pending = ray.wait(pending, num_returns=len(pending), timeout=2.0)
    for ref in refs:
        with contextlib.suppress(Exception):  # (cancelled, or failed while stopping)
            ray.get(ref, timeout=1.0)
    while reporter is not None and time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if not ray.get(reporter.still_running.remote(), timeout=2.0):
                return
        time.sleep(0.2)
    if reporter is not None and targets is not None:
        # a conversion that did not stop: its worker is ended, and the temporaries it was
        # writing (a live writer's ".part" files beside its output and in its resume folder)
        # go with it; the journal keeps what was finished, for a later run to resume
        with contextlib.suppress(Exception):
            running = ray.get(reporter.still_running.remote(), timeout=2.0)
            for ref in refs:
                ray.cancel(ref, force=True)
            time.sleep(1.0)
            for index in running:
                target = Path(targets[index])
                logger.warning("%s: the conversion did not stop when cancelled; its worker was ended", target)
                for folder in (target.parent, target.with_name("." + target.name + ".sbsconv-resume")):
                    for part in folder.glob(f".{target.name}*.part") if folder == target.parent else folder.glob(".*.part"):
                        part.unlink(missing_ok=True)


def _run_on_ray(jobs: list[tuple[int, str, str]], options: ConvertOptions, *, address: str | None,
                retries: int, record: Callable[[int, FileOutcome], None],
                stop_on_failure: bool, on_tasks: Callable[[dict[int, tuple[float, int]]], Any] | None) -> None:
    """Runs ``jobs`` as Ray tasks and records each outcome as it arrives. Ctrl-C, a raising
    callback or ``on_error="stop"`` cancels every task still queued or running."""
    with _ray_session(address) as ray:
        reporter = ray.remote(_Reporter).options(num_cpus=0).remote()
        task = ray.remote(_ray_convert).options(num_cpus=1, num_gpus=_gpus_per_task(ray, options),
                                                max_retries=retries)
        refs = {task.remote(i, source, target, options, reporter): (i, source, target) for i, source, target in jobs}
        targets = {i: target for i, _, target in jobs}
        try:
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1, timeout=0.5)
                if on_tasks is not None:
                    on_tasks(ray.get(reporter.snapshot.remote()))
                for ref in ready:
                    i, source, target = refs.pop(ref)
                    try:
                        outcome = ray.get(ref)
                    except ray.exceptions.RayError as exc:  # the task failed outside convert()
                        outcome = FileOutcome(source, target, "failed", str(exc).strip().splitlines()[-1][:300],
                                              device="ray")
                    record(i, outcome)
                    if stop_on_failure and outcome.status == "failed":
                        _cancel_all(ray, refs, reporter, targets)  # on_error="stop": nothing more runs
                        return
        except BaseException:  # Ctrl-C, a raising callback
            _cancel_all(ray, refs, reporter, targets)
            raise


# ---- one long video in parts (Note [Parts of one video]) ---------------------------------------


@dataclass(frozen=True)
class SplitResult:
    output: str
    frames: int  # frames in the output (each part's, without its warm-up)
    parts: tuple[tuple[float, float | None], ...]  # each part's (start, end) in seconds after the source's start
    part_frames: tuple[int, ...]
    warm_up_frames: tuple[int, ...]  # each part's frames converted only to settle the temporal state
    seconds: float
    encoder: str
    streams: tuple[str, ...]
    warnings: tuple[str, ...]


def plan_parts(keyframes: list[float], start: float, end: float | None, parts: int) -> list[float]:
    """Where a split conversion cuts [start, end): ``parts - 1`` keyframe times (seconds after
    the source's start) nearest the even division, each inside the window and distinct, in
    order, with ``start`` first. Fewer parts when the video has fewer keyframes."""
    inside = [k for k in keyframes if k > start + 1e-6 and (end is None or k < end - 1e-6)]
    cuts = [start]
    if not inside or parts < 2:
        return cuts
    span = (end if end is not None else inside[-1]) - start
    for i in range(1, parts):
        target = start + span * i / parts
        best = min(inside, key=lambda k: abs(k - target))
        if best > cuts[-1] + 1e-6:
            cuts.append(best)
    return cuts


def _part_on(job: tuple, device: str | None = None) -> dict:
    """One part of a split conversion (on ``device`` when given), in a worker or a Ray task."""
    from sbsconv.conversion import convert_part

    index, source, part_path, options, window = job
    if device is not None:
        options = options.replace(device=device)
    return {"index": index, **convert_part(source, part_path, options, **window)}


def convert_split(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    options: ConvertOptions | None = None,
    *,
    split: int | str = "auto",
    warm_up: float = 3.0,
    backend: str = "local",
    devices: str | Iterable[str] | None = None,
    address: str | None = None,
    retries: int = 3,
    **overrides: Any,
) -> SplitResult:
    """Converts one long video as ``split`` parts side by side (Note [Parts of one video]): the
    timeline is cut at keyframes into parts, each converted by its own worker (``devices``:
    one process per device; ``backend="ray"``: Ray tasks, see :func:`convert_many`) after
    ``warm_up`` seconds before its start that only settle the temporal state (depth range and
    alignment, scene cuts, the comfort budget), then the parts are joined by stream copy with
    the source's audio and subtitles. ``split``: the number of parts, or "auto" (one per worker,
    at least a minute each). ``retries``: how often Ray runs a part again whose worker was lost.
    A part that fails fails the conversion with an SbsconvError (a worker process that dies:
    an InternalError naming its exit code); nothing is left under the output name.
    The output has every frame once with the source's timing, and matches a single run's
    frames (the tests hold it to 40 dB at every frame, the seams included)."""
    from sbsconv import _core
    from sbsconv.conversion import resolve_output, warn_all
    from sbsconv.engine import core_options

    ConvertOptions.check_names(overrides, also=CALL_KEYWORDS)
    overrides.pop("progress", None)  # (parts run without bars; on_progress: parts run here in turn)
    on_progress = overrides.pop("on_progress", None)
    options = ConvertOptions.merged(options, overrides)
    if (options.depth is not None or options.depth_out is not None or options.infill_mask is not None
            or options.depth_video is not None):
        raise OptionError("a split conversion writes the 3D video only: use convert() for depth products "
                          "(depth, depth_out, depth_video, infill_mask)")
    if options.preview_every is not None or options.fps is not None:
        raise OptionError("a split conversion keeps the source's frames: preview_every and fps need convert()")
    if options.layout == "spatial":
        raise OptionError("spatial video is one x265 stream: convert() it in one piece")
    if backend not in ("local", "ray"):
        raise OptionError(f"backend must be 'local' or 'ray', got {backend!r}")
    if backend == "ray" and devices is not None:
        raise OptionError("backend='ray' places each part on a GPU of the cluster itself: "
                          "leave devices out")
    if address is not None and backend != "ray":
        raise OptionError("address names a Ray cluster: it needs backend='ray'")
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise OptionError(f"retries must be a whole number >= 0, got {retries!r}")
    if not (split == "auto" or (isinstance(split, int) and not isinstance(split, bool) and split >= 1)):
        raise OptionError(f"split must be 'auto' or a whole number of parts >= 1, got {split!r}")
    if not (isinstance(warm_up, int | float) and 0 <= warm_up <= 600):
        raise OptionError(f"warm_up must be within 0..600 seconds, got {warm_up!r}")
    input_path = check_path("input", input, "the path of a video")
    output = check_path("output", output, "the path of the 3D video to write")
    output_path = resolve_output(input_path, output, options)
    from sbsconv.media import probe

    info = probe(input_path)
    from sbsconv.plan import source_notes

    notes = source_notes(info)
    warn_all(input_path, notes)  # before the work (Note [3D input]); each part's result has them too
    workers = _devices(devices) if backend == "local" else None
    t0 = time.perf_counter()
    start = float(options.start or 0.0)
    end = start + float(options.duration) if options.duration is not None else info.duration
    count = split
    if split == "auto":
        width = len(workers) if workers else (2 if backend == "ray" else 1)
        count = max(1, min(width, int(((end or start) - start) // 60)))
    keyframes = [t - info.start_time for t in _core.keyframe_times(input_path, -1 if options.stream is None
                                                                        else int(options.stream))]
    cuts = plan_parts(keyframes, start, end, int(count))
    windows = []
    for k, cut in enumerate(cuts):
        stop = cuts[k + 1] if k + 1 < len(cuts) else end
        begin = max(start, cut - warm_up) if k > 0 else start
        windows.append({"start": begin, "duration": None if stop is None else stop - begin,
                        "output_start": cut, "timeline_start": start, "final_output": output_path})
    # What the engine would choose per run (the libx264 preset on the CPU) is chosen once, here,
    # for every part: the parts are joined with the first part's stream headers (Note
    # [Conversion plan] in sbsconv/plan.py).
    part_devices = workers if workers else [options.device]
    if all(d == "cpu" or (d == "auto" and backend == "local") for d in part_devices):
        from sbsconv import plan as planning

        settled, _ = planning.settle_split_options(
            input_path, options if workers is None else options.replace(device=part_devices[0]))
        options = options.replace(preset=settled.preset)
    folder = Path(output_path).with_name("." + Path(output_path).name + ".sbsconv-parts")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot make the parts folder {folder}: {exc.strerror or exc}",
                          stage="open", path=str(folder)) from exc
    jobs = [(k, input_path, str(folder / f"part_{k:03d}.nut"), options, w) for k, w in enumerate(windows)]
    results: list[dict | None] = [None] * len(jobs)
    try:
        if backend == "ray":
            _parts_on_ray(jobs, results, address=address, retries=retries)
        elif workers is None:
            from sbsconv.conversion import convert_part

            for k, source, part_path, part_options, window in jobs:
                def report(p: dict, k: int = k) -> None:  # the whole video's fraction, part by part
                    if on_progress is not None:
                        on_progress({"part": k, "parts": len(jobs),
                                     "fraction": (k + _fraction(p)) / len(jobs)})

                try:
                    results[k] = {"index": k, **convert_part(source, part_path, part_options,
                                                             **window, on_progress=report)}
                except SbsconvError:
                    raise
                except Exception as exc:  # a bug: said as one, with the part
                    raise InternalError(f"part {k + 1} of {len(jobs)} failed: {_failure_text(exc)}",
                                        stage="split") from exc
        else:
            with _WorkerPool(workers, _part_on) as pool:
                for job in jobs:
                    pool.submit(job[0], job)
                for _ in jobs:
                    index, result = pool.result()
                    if isinstance(result, InternalError):  # a bug or a dead worker: which part
                        raise InternalError(f"part {index + 1} of {len(jobs)} failed: {result}",
                                            stage=result.stage) from result
                    if isinstance(result, BaseException):
                        raise result
                    results[index] = result
        finished = [r for r in results if r is not None]
        from sbsconv import plan as planning

        assemble = planning.assembly_options(finished[0]["engine_options"], options, output_path, start)
        fovs = [r["fov_degrees"] for r in finished if r["fov_degrees"] is not None]
        fov = options.fov_degrees or (sum(fovs) / len(fovs) if fovs else 60.0)
        joined = _core.assemble_parts(core_options(assemble), [j[2] for j in jobs], float(fov))
    finally:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
    warnings_seen = [*notes] + [w for r in finished for w in r["warnings"]] + list(joined["warnings"])
    warn_all(input_path, [w for w in dict.fromkeys(warnings_seen) if w not in notes])
    return SplitResult(output=joined["path"], frames=int(joined["frames"]),
                       parts=tuple((w["output_start"], cuts[k + 1] if k + 1 < len(cuts) else end)
                                   for k, w in enumerate(windows)),
                       part_frames=tuple(int(r["frames"]) for r in finished),
                       warm_up_frames=tuple(int(r["warm_up_frames"]) for r in finished),
                       seconds=time.perf_counter() - t0,
                       encoder=finished[0]["encoder"], streams=tuple(joined["streams"]),
                       warnings=tuple(dict.fromkeys(warnings_seen)))


def _parts_on_ray(jobs: list[tuple], results: list[dict | None], *, address: str | None,
                  retries: int = 3) -> None:
    with _ray_session(address) as ray:
        task = ray.remote(_part_on).options(num_cpus=1, num_gpus=_gpus_per_task(ray, jobs[0][3]),
                                            max_retries=retries)
        refs = [task.remote(job) for job in jobs]
        try:
            for result in ray.get(refs):
                results[result["index"]] = result
        except ray.exceptions.RayError as exc:  # a part raised, or its worker was lost for good
            _cancel_all(ray, refs)
            if isinstance(exc, ray.exceptions.RayTaskError):
                cause = exc.as_instanceof_cause()
                if isinstance(cause, SbsconvError):
                    raise cause from None
            lines = str(exc).strip().splitlines()
            last = (lines[-1] if lines else type(exc).__name__)[:300]
            raise InternalError(f"a part failed on Ray: {last}", stage="split") from exc
        except BaseException:
            _cancel_all(ray, refs)
            raise
