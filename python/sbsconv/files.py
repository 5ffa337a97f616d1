"""Writing a whole file safely: under a temporary name beside it, flushed to the disk, renamed
into place (Note [Durable files] in cpp/sbsconv/common/DurableFile.h is the C++ side's), so
that the final name only ever holds a complete file. Used by every Python writer of small
products (point clouds, the depth viewer's page, a sidecar's additions)."""

from __future__ import annotations

import contextlib
import os

from sbsconv.errors import OptionError, OutputError

__all__ = ["write_whole"]


def write_whole(path, data: bytes, stage: str) -> str:
    """Writes `data` to `path` under a temporary name beside it (".<name>.sbsconv-<pid>.part",
    the name every sbsconv writer uses), flushed to the disk and renamed into place, so that
    the final name only ever holds a complete file. Failures raise OutputError."""
    if not isinstance(path, str | os.PathLike):
        raise OptionError(f"the output path must be a str or path, got {type(path).__name__}")
    path = os.fspath(path)
    folder, name = os.path.split(path)
    if not name:
        raise OutputError(f"the output path names a folder, not a file [{path}]", path=path,
                          stage=stage)
    if folder and not os.path.isdir(folder):
        raise OutputError(f"the output folder does not exist [{path}]", path=path, stage=stage)
    temporary = os.path.join(folder, f".{name}.sbsconv-{os.getpid()}.part")
    try:
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}", path=path,
                              stage=stage) from exc
        raise
    _sync_folder(folder or ".")
    return path


def _sync_folder(folder: str) -> None:
    """Flushes the rename to the disk where the system allows opening a folder."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(handle)
    finally:
        os.close(handle)
