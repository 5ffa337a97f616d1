"""Sample clips shipped with sbsconv (see README.md in this folder for their provenance)."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def path(name: str = "tokyo_walk_4s.mp4") -> Path:
    """The path of a bundled sample clip."""
    p = _HERE / name
    if not p.is_file():
        available = sorted(q.name for q in _HERE.glob("*.mp4"))
        raise FileNotFoundError(f"no bundled sample {name!r}; available: {', '.join(available)}")
    return p


__all__ = ["path"]
