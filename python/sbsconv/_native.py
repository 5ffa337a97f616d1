"""Loads the C++ core (``sbsconv._core``) and bridges its log into Python's ``logging``.

torch is imported first: the extension links LibTorch, whose libraries the torch package
loads, and it was compiled against one exact torch release.
"""

from __future__ import annotations

import logging

import torch

try:
    from sbsconv import _core
except ImportError as exc:  # pragma: no cover - exercised only on broken installs
    raise ImportError(
        "sbsconv's C++ extension (sbsconv._core) could not be loaded: "
        f"{exc}. Rebuild it in this environment with `uv sync --reinstall-package sbsconv`."
    ) from exc

if _core.torch_version != torch.__version__:  # pragma: no cover - broken installs only
    raise ImportError(
        f"sbsconv was built against torch {_core.torch_version} but torch {torch.__version__} "
        "is installed; rebuild with `uv sync --reinstall-package sbsconv`."
    )

logger = logging.getLogger("sbsconv")

# See Note [Deferred logging] in cpp/sbsconv/common/Logging.h: the core queues its records
# and Python drains them at safe points.
_core.set_log_deferred(True)
_core.set_log_level(logging.DEBUG)


def flush_log() -> None:
    """Moves the core's queued log records into the ``sbsconv`` logger."""
    for level, message in _core.drain_log():
        logger.log(level, message)


__all__ = ["_core", "flush_log", "logger"]
