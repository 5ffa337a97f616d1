"""Everything sbsconv raises derives from :class:`SbsconvError`.

Classes also derive from the matching Python built-in, so ``except FileNotFoundError`` or
``except ValueError`` work as expected. Each exception carries where it happened:

- ``path``: the file involved (input or output), or None
- ``stage``: the part of the pipeline ("open", "decode", "encode", "mux", "depth" ...)
- ``reason``: what went wrong, in words
- ``ffmpeg_message``: FFmpeg's own message, when FFmpeg reported the problem

The C++ core raises these classes by name (cpp/sbsconv/common/Error.h, ErrorKind): keep the
two lists in step.
"""

from __future__ import annotations

import errno as _errno


class SbsconvError(Exception):
    """Base class of every error sbsconv raises."""

    def __init__(
        self,
        message: str,
        *,
        stage: str | None = None,
        reason: str | None = None,
        path: str | None = None,
        ffmpeg_message: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.stage = stage
        self.reason = reason if reason is not None else message
        self.path = path
        self.ffmpeg_message = ffmpeg_message

    def __str__(self) -> str:
        # the file it is about, where the message does not already name it
        if self.path and self.path not in self.message:
            return f"{self.message} [{self.path}]"
        return self.message

    def __reduce__(self):  # picklable across processes (multiprocessing, subprocess tests)
        return (
            _rebuild,
            (type(self), self.message, self.stage, self.reason, self.path, self.ffmpeg_message),
        )


def _rebuild(cls, message, stage, reason, path, ffmpeg_message):
    return cls(message, stage=stage, reason=reason, path=path, ffmpeg_message=ffmpeg_message)


class InputError(SbsconvError, ValueError):
    """The input cannot be used: not a media file, no video stream, unreadable data."""


class InputNotFoundError(InputError, FileNotFoundError):
    """The input file does not exist."""

    def __init__(self, message: str, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.errno = _errno.ENOENT
        self.strerror = "No such file or directory"
        self.filename = kwargs.get("path")


class DecodeError(InputError):
    """Decoding failed part-way (corrupt or truncated data, with ``strict=True``)."""


class EncoderError(SbsconvError):
    """No encoder could be opened, or encoding failed."""


class OutputError(SbsconvError, OSError):
    """The output cannot be written (missing folder, permissions, disk full)."""

    def __init__(self, message: str, **kwargs) -> None:
        SbsconvError.__init__(self, message, **kwargs)
        self.filename = kwargs.get("path")


class OptionError(SbsconvError, ValueError):
    """An option is out of range, of the wrong type, or inconsistent with another."""


class ModelError(SbsconvError):
    """A depth model or its checkpoint cannot be used."""


class DeviceError(SbsconvError, RuntimeError):
    """The requested device (cuda, mps) is not available."""


class CancelledError(SbsconvError):
    """The run was cancelled by the caller."""


class InternalError(SbsconvError, RuntimeError):
    """A bug in sbsconv: please report it with the message."""


class SbsconvWarning(UserWarning):
    """Problems that did not stop the work (a truncated input decoded as far as possible,
    a subtitle stream the output container cannot hold ...)."""


__all__ = [
    "CancelledError",
    "DecodeError",
    "DeviceError",
    "EncoderError",
    "InputError",
    "InputNotFoundError",
    "InternalError",
    "ModelError",
    "OptionError",
    "OutputError",
    "SbsconvError",
    "SbsconvWarning",
]
