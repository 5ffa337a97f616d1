"""The prepared-weights cache: int8 weights quantized once and kept beside the checkpoint.

Note [Prepared int8 weights] (cpp/sbsconv/depth/DinoV2.h) says what the C++ models hand out
and take back. Quantizing a DINOv2 encoder at load costs more than reading it (Depth-Anything-V2-
Large on two cores: 1.5 s of a 2.5 s load), so the first int8 load of a checkpoint writes what it
prepared, and later loads read that instead of the float weights:

- **Where**: a folder ``.sbsconv-prepared`` beside the checkpoint (for a folder checkpoint,
  inside it), one safetensors file per checkpoint and precision. Where that folder cannot be
  written (a read-only model store), ``$XDG_CACHE_HOME/sbsconv/prepared`` (``~/.cache``).
  Deleting either folder is always safe. ``SBSCONV_PREPARED_CACHE=0`` turns the cache off.
- **Key**: the checkpoint's content hash (SHA-256; a Hugging Face cache's blob name where the
  file is one, so nothing is read), this CPU's instruction sets that precision depends on, the
  sbsconv version and the cache's format. A cache file whose key differs is rewritten. The hash
  of a file that is not a hub blob is computed once and trusted while the file's size and
  modification time stay the same (as git and make trust them); after either changes it is
  computed again.
- **What**: every tensor the C++ model is built from, the prepared ones in place of the float
  weights they replace, so that a hit reads about a quarter of the checkpoint's bytes. The
  configuration is still read off the checkpoint (shapes only: it is opened memory-mapped).
- **Failures**: a cache that cannot be read or does not build is reported, removed and
  rebuilt from the checkpoint; one that cannot be written is reported and the model is used
  as built. A conversion never fails for the cache's sake.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger("sbsconv")

FORMAT = "1"
FOLDER = ".sbsconv-prepared"
_SUFFIX = ".int8_weight"
_HEX = re.compile(r"^[0-9a-f]{40}$|^[0-9a-f]{64}$")
# The flags int8 and bf16 depend on (sbsconv.models.precision); others do not change the weights.
_KEY_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def enabled() -> bool:
    return os.environ.get("SBSCONV_PREPARED_CACHE", "1").strip().lower() not in ("0", "off", "false", "no")


def _user_folder() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sbsconv" / "prepared"


def _files(checkpoint: Path) -> list[Path]:
    """The files a checkpoint is made of: the file itself, or a folder's files (not its
    sub-folders, so not the cache)."""
    if checkpoint.is_dir():
        return sorted(p for p in checkpoint.iterdir() if p.is_file())
    return [checkpoint]


def _stat(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _hub_blob_hash(path: Path) -> str | None:
    """A Hugging Face cache names each blob by its content hash (SHA-256 for stored weights)."""
    real = path.resolve()
    if real.parent.name == "blobs" and _HEX.match(real.name):
        return real.name
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def _cpu_key() -> str:
    from sbsconv.models.precision import cpu_flags

    flags = cpu_flags()
    return ",".join(f for f in _KEY_FLAGS if f in flags) or "none"


def _version() -> str:
    from sbsconv._native import _core

    return str(_core.__version__)


def cache_paths(checkpoint: Path, precision: str) -> list[Path]:
    """Where a checkpoint's prepared weights are looked for, in order: beside it, then the
    user's cache folder (its name carries the checkpoint's full path)."""
    checkpoint = Path(checkpoint).absolute()
    folder = checkpoint if checkpoint.is_dir() else checkpoint.parent
    name = "model" if checkpoint.is_dir() else checkpoint.name
    tag = hashlib.sha256(str(checkpoint).encode()).hexdigest()[:16]
    return [folder / FOLDER / f"{name}.{precision}.safetensors",
            _user_folder() / f"{name}.{tag}.{precision}.safetensors"]


def _metadata(path: Path) -> dict[str, str] | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception:  # noqa: BLE001 (unreadable: treated as absent, then replaced)
        return None


class _Identity:
    """The checkpoint's content hash, computed at most once per load, and only where no cache
    file vouches for it: a cache file's recorded hash is trusted while every file's size and
    modification time match what it recorded."""

    def __init__(self, checkpoint: Path):
        self.files = _files(checkpoint)
        self.stat = json.dumps([[p.name, *_stat(p)] for p in self.files])
        self._digest: str | None = None

    def digest(self, meta: dict[str, str] | None = None) -> str:
        if meta is not None and meta.get("checkpoint_stat") == self.stat:
            return meta.get("checkpoint_sha256", "")
        if self._digest is None:
            if len(self.files) == 1:
                self._digest = _hub_blob_hash(self.files[0]) or _sha256(self.files[0])
            else:
                h = hashlib.sha256()
                for p in self.files:
                    h.update(f"{p.name}\0{_hub_blob_hash(p) or _sha256(p)}\0".encode())
                self._digest = h.hexdigest()
        return self._digest


def _key(precision: str, digest: str) -> dict[str, str]:
    return {"format": FORMAT, "precision": precision, "sbsconv_version": _version(), "cpu": _cpu_key(),
            "checkpoint_sha256": digest}


def _matches(meta: dict[str, str], key: dict[str, str]) -> bool:
    return all(meta.get(k) == v for k, v in key.items())


def _read(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path), device="cpu")


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _remove_stale_parts(folder: Path, age_s: float = 3600.0) -> None:
    """Temporary files a killed process left (a write in progress is younger than an hour)."""
    now = time.time()
    for part in folder.glob("*.part"):
        try:
            if now - part.stat().st_mtime > age_s:
                part.unlink()
        except OSError:
            pass


def _write(paths: list[Path], tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> Path | None:
    """Writes the cache file atomically (a temporary file renamed into place) at the first of
    ``paths`` that can be written; None where none can (reported, not raised)."""
    from safetensors.torch import save_file

    seen: set[int] = set()
    plain: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        t = t.detach().contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen:  # safetensors stores each storage once: tensors sharing one are copied
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        plain[name] = t
    problems = []
    for path in paths:
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale_parts(path.parent)
            fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
            os.close(fd)
            save_file(plain, tmp, metadata=meta)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # as any file written here (mkstemp's is private)
            os.replace(tmp, path)
            return path
        except Exception as exc:  # noqa: BLE001 (a full disk is safetensors' own error, not OSError)
            problems.append(f"{path.parent}: {getattr(exc, 'strerror', None) or exc}")
            if tmp is not None:
                _remove(Path(tmp))
    logger.warning("the prepared int8 weights could not be cached (%s); later loads prepare them again",
                   "; ".join(problems))
    return None


def build(checkpoint: Path, precision: str, weights: dict[str, torch.Tensor],
          create: Callable[[dict[str, torch.Tensor]], Any]) -> Any:
    """``create(weights)`` (a family's C++ model constructor), through the cache: with the
    cached prepared weights where they match this checkpoint, else with ``weights``, caching
    what the model prepared."""
    if precision != "int8" or not enabled():
        return create(weights)
    checkpoint = Path(checkpoint)
    paths = cache_paths(checkpoint, precision)
    identity = _Identity(checkpoint)
    for path in paths:
        if not path.is_file():
            continue
        meta = _metadata(path)
        if meta is None or not _matches(meta, _key(precision, identity.digest(meta))):
            continue  # another checkpoint's, version's or CPU's: rewritten below
        start = time.perf_counter()
        try:
            cached = _read(path)
            model = create(cached)
        except Exception as exc:  # noqa: BLE001 (a damaged cache: rebuilt from the checkpoint)
            logger.warning("the prepared int8 weights at %s could not be used (%s); preparing them again",
                           path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            _remove(path)
            break
        logger.info("int8 weights prepared earlier read from %s (%.2f s)", path, time.perf_counter() - start)
        if meta.get("checkpoint_stat") != identity.stat:  # the same content, touched or copied: hashed
            _write([path], cached, {**meta, "checkpoint_stat": identity.stat})  # once, not on every load
        return model
    start = time.perf_counter()
    model = create(weights)
    prepared = model.prepared_weights()
    if not prepared:
        return model
    built = time.perf_counter() - start
    replaced = {name[: -len(_SUFFIX)] + ".weight" for name in prepared if name.endswith(_SUFFIX)}
    tensors = {k: v for k, v in weights.items() if k not in replaced}
    tensors.update(prepared)
    meta = {**_key(precision, identity.digest()), "checkpoint_stat": identity.stat,
            "checkpoint": str(checkpoint.absolute())}
    written = _write(paths, tensors, meta)
    if written is not None:
        logger.info("int8 weights prepared in %.2f s and cached at %s for later loads", built, written)
    return model
