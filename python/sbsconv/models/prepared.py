"""The prepared-weights cache: int8 weights quantized once and kept beside the checkpoint.

Note [Prepared int8 weights] (cpp/sbsconv/depth/DinoV2.h) says what the C++ models hand out
and take back. Quantizing a DINOv2 encoder at load costs more than reading it (Depth-Anything-V2-
Large on two cores: 1.5 s of a 2.5 s load), so the first int8 load of a checkpoint writes what it
prepared, and later loads read that instead of the float weights:

- **Where**: a folder ``.sbsconv-prepared`` beside the checkpoint (for a folder checkpoint,
  inside it; in a Hugging Face cache, in the repository's folder beside ``snapshots``, outside
  every revision). Where that folder cannot be written (a read-only model store),
  ``$XDG_CACHE_HOME/sbsconv/prepared`` (``~/.cache``), the file's name carrying the checkpoint's
  full path. Deleting either folder is always safe. ``SBSCONV_PREPARED_CACHE=0`` turns the cache
  off.
- **Key**: the checkpoint's content hash (SHA-256; a Hugging Face cache's blob name where the
  file is one, so nothing is read), the format of the prepared tensors (the C++ quantizer's
  ``PREPARED_INT8_FORMAT`` and this module's), the sbsconv version and this CPU's instruction
  sets that precision depends on. The prepared tensors do not depend on the CPU today; keying on
  it keeps a preparation that some day does from crossing machines that share a model store.
  Every key but the hash is in the file's name, so machines of different CPUs sharing a folder
  keep a file each; a file of another sbsconv version or format is removed when a new one is
  written. The hash of a file that is not a hub blob is computed once and trusted while the
  file's size and modification time stay the same (as git and make trust them); after either
  changes it is computed again, and recorded again where it still matches.
- **What**: every tensor the C++ model is built from, the prepared ones in place of the float
  weights they replace: for a .pth checkpoint a hit reads about a third of its bytes (the
  transformers layout still assembles its attention weights from the checkpoint each load). The
  configuration is still read off the checkpoint (shapes only: it is opened memory-mapped).
- **Failures**: a cache file that cannot be read, or that the model refuses while the
  checkpoint builds, is reported, removed and rebuilt from the checkpoint; one that cannot be
  written is reported and the model is used as built. Where no cache folder can be written the
  checkpoint is not hashed at all. A load never fails for the cache's sake.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger("sbsconv")

FORMAT = "2"
FOLDER = ".sbsconv-prepared"
_SUFFIX = ".int8_weight"
_HEX = re.compile(r"^[0-9a-f]{40}$|^[0-9a-f]{64}$")
# The files of a folder checkpoint that its families read (weights, configuration).
_CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".json")
# The flags int8 and bf16 depend on (sbsconv.models.precision).
_KEY_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def enabled() -> bool:
    return os.environ.get("SBSCONV_PREPARED_CACHE", "1").strip().lower() not in ("0", "off", "false", "no")


def _user_folder() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sbsconv" / "prepared"


def _files(checkpoint: Path) -> list[Path]:
    """The files a checkpoint is made of: the file itself, or a folder's weight and
    configuration files (not its sub-folders, so not the cache)."""
    if checkpoint.is_dir():
        return sorted(p for p in checkpoint.iterdir() if p.is_file() and p.suffix in _CHECKPOINT_SUFFIXES)
    return [checkpoint]


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


def _format() -> str:
    from sbsconv._native import _core

    return f"{FORMAT}.{_core.PREPARED_INT8_FORMAT}"


def _key(precision: str) -> dict[str, str]:
    """Everything the cache is keyed by but the checkpoint's hash."""
    return {"format": _format(), "precision": precision, "sbsconv_version": _version(), "cpu": _cpu_key()}


def _tag(key: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def _beside(checkpoint: Path) -> tuple[Path, str]:
    """The folder beside a checkpoint that holds its prepared weights, and their file's name
    there. In a Hugging Face cache (``models--org--name/snapshots/<revision>/...``) it is the
    repository's folder, outside every revision: nothing that lists a revision's files sees it,
    and deleting the repository from the cache deletes it too."""
    parts = checkpoint.parts
    if "snapshots" in parts:
        i = len(parts) - 1 - parts[::-1].index("snapshots")
        if parts[i - 1].startswith("models--") and i + 1 < len(parts):
            inside = "_".join(parts[i + 2:]) or "model"
            return Path(*parts[:i]) / FOLDER, f"{parts[i + 1][:12]}_{inside}"
    if checkpoint.is_dir():
        return checkpoint / FOLDER, "model"
    return checkpoint.parent / FOLDER, checkpoint.name


def cache_paths(checkpoint: Path, precision: str) -> list[Path]:
    """Where a checkpoint's prepared weights are looked for, in order: beside it, then the
    user's cache folder (its name carries the checkpoint's full path)."""
    checkpoint = Path(checkpoint).absolute()
    folder, name = _beside(checkpoint)
    where = hashlib.sha256(str(checkpoint).encode()).hexdigest()[:16]
    tag = _tag(_key(precision))
    return [folder / f"{name}.{precision}.{tag}.safetensors",
            _user_folder() / f"{name}.{where}.{precision}.{tag}.safetensors"]


class _Identity:
    """The checkpoint's content hash, computed at most once per load, and only where no cache
    file vouches for it: a cache file's recorded hash is trusted while every file's size and
    modification time match what it recorded."""

    def __init__(self, checkpoint: Path):
        self.files = _files(checkpoint)
        self.stat = json.dumps([[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in self.files])
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


def _matches(meta: dict[str, str], key: dict[str, str]) -> bool:
    return all(meta.get(k) == v for k, v in key.items())


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _writable(folder: Path) -> bool:
    """Whether a file could be created in ``folder`` (made where it does not exist yet)."""
    while not folder.exists():
        if folder.parent == folder:
            return False
        folder = folder.parent
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


def _remove_stale(folder: Path, keep: Path, age_s: float = 3600.0) -> None:
    """Temporary files a killed process left (a write in progress is younger than an hour), and
    this checkpoint's files of another sbsconv version or format."""
    now = time.time()
    stem = keep.name.split(".")[0]
    for path in folder.iterdir():
        try:
            if path.name.endswith(".part"):
                if now - path.stat().st_mtime > age_s:
                    path.unlink()
            elif path != keep and path.name.startswith(stem + ".") and path.name.endswith(".safetensors"):
                meta = _metadata(path) or {}
                if meta.get("sbsconv_version") != _version() or meta.get("format") != _format():
                    path.unlink()
        except OSError:
            pass


def _metadata(path: Path) -> dict[str, str] | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception:  # noqa: BLE001 (unreadable)
        return None


def _write(paths: list[Path], tensors: dict[str, torch.Tensor], meta: dict[str, str], *,
           quiet: bool = False) -> Path | None:
    """Writes the cache file atomically (a temporary file renamed into place) at the first of
    ``paths`` that can be written; None where none can (reported unless ``quiet``)."""
    from safetensors.torch import save_file

    seen: set[int] = set()
    plain: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        t = t.detach().contiguous()
        if t.untyped_storage().data_ptr() in seen:  # safetensors stores each storage once
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        plain[name] = t
    problems = []
    for path in paths:
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale(path.parent, path)
            tmp = path.parent / f"{path.name}.{secrets.token_hex(6)}.part"
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # the umask applies
            save_file(plain, str(tmp), metadata=meta)
            os.replace(tmp, path)
            return path
        except Exception as exc:  # noqa: BLE001 (a full disk is safetensors' own error, not OSError)
            problems.append(f"{path.parent}: {getattr(exc, 'strerror', None) or exc}")
            if tmp is not None:
                _remove(tmp)
    (logger.debug if quiet else logger.warning)(
        "the prepared int8 weights could not be cached (%s); later loads prepare them again", "; ".join(problems))
    return None


def _cached(path: Path, precision: str, identity: _Identity) -> tuple[dict[str, torch.Tensor], dict[str, str]] | None:
    """The cache file's tensors and metadata where it is this checkpoint's; None where it is
    another's (or absent). An unreadable file is reported and removed."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:  # one opening: the metadata checked is the tensors'
            meta = dict(f.metadata() or {})
            if not _matches(meta, {**_key(precision), "checkpoint_sha256": identity.digest(meta)}):
                return None
            return {name: f.get_tensor(name) for name in f.keys()}, meta
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 (not a safetensors file, truncated ...)
        logger.warning("the prepared int8 weights at %s cannot be read (%s); preparing them again", path,
                       str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        _remove(path)
        return None


def build(checkpoint: Path, precision: str, weights: dict[str, torch.Tensor],
          create: Callable[[dict[str, torch.Tensor]], Any]) -> Any:
    """``create(weights)`` (a family's C++ model constructor), through the cache: with the
    cached prepared weights where they match this checkpoint, else with ``weights``, caching
    what the model prepared."""
    if precision != "int8" or not enabled():
        return create(weights)
    checkpoint = Path(checkpoint)
    try:
        paths = cache_paths(checkpoint, precision)
        identity = _Identity(checkpoint)
        for path in paths:
            found = _cached(path, precision, identity)
            if found is None:
                continue
            cached, meta = found
            start = time.perf_counter()
            try:
                model = create(cached)
            except Exception as refused:  # noqa: BLE001 (the cache's fault only if the checkpoint builds)
                start = time.perf_counter()
                model = create(weights)
                logger.warning("the prepared int8 weights at %s could not be used (%s); preparing them again",
                               path, str(refused).splitlines()[0] if str(refused) else type(refused).__name__)
                _remove(path)
                return _store(model, weights, paths, identity, precision, checkpoint, time.perf_counter() - start)
            logger.info("int8 weights prepared earlier read from %s (%.2f s)", path, time.perf_counter() - start)
            if meta.get("checkpoint_stat") != identity.stat:  # the same content, touched or copied
                _write([path], cached, {**meta, "checkpoint_stat": identity.stat}, quiet=True)  # hashed once
            return model
        if not any(_writable(p.parent) for p in paths):
            logger.debug("no folder can hold the prepared int8 weights of %s: not cached", checkpoint)
            return create(weights)
    except OSError as exc:  # the checkpoint's or the cache's folder unreadable ...
        logger.warning("the prepared-weights cache is skipped (%s)", exc)
        return create(weights)
    start = time.perf_counter()
    model = create(weights)
    return _store(model, weights, paths, identity, precision, checkpoint, time.perf_counter() - start)


def _store(model: Any, weights: dict[str, torch.Tensor], paths: list[Path], identity: _Identity, precision: str,
           checkpoint: Path, built: float) -> Any:
    """Caches what ``model`` prepared from ``weights``; never raises."""
    try:
        prepared = model.prepared_weights()
        if not prepared:
            return model
        replaced = {name[: -len(_SUFFIX)] + ".weight" for name in prepared if name.endswith(_SUFFIX)}
        tensors = {k: v for k, v in weights.items() if k not in replaced}
        tensors.update(prepared)
        meta = {**_key(precision), "checkpoint_sha256": identity.digest(), "checkpoint_stat": identity.stat,
                "checkpoint": str(checkpoint.absolute())}
    except Exception as exc:  # noqa: BLE001
        logger.warning("the prepared int8 weights could not be cached (%s); later loads prepare them again", exc)
        return model
    written = _write(paths, tensors, meta)
    if written is not None:
        logger.info("int8 weights prepared in %.2f s and cached at %s for later loads", built, written)
    return model
