"""Checkpoint files: downloads through huggingface_hub (its cache, HF_HOME, HF_HUB_OFFLINE,
a progress bar) and reading weights without executing code."""

from __future__ import annotations

import functools
import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch

from sbsconv.errors import ModelError

logger = logging.getLogger("sbsconv")
REACH_TIMEOUT = 2.0  # seconds: a hub that does not answer a connection this fast is unreachable


def offline() -> bool:
    """HF_HUB_OFFLINE is set."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


@functools.cache
def hub_reachable() -> bool:
    """Whether the Hugging Face hub (HF_ENDPOINT) answers a connection within two seconds:
    checked once per process, so that an offline machine is told at once, once, instead of
    after huggingface_hub's retries."""
    if offline():
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=REACH_TIMEOUT):
            return True
    except OSError as exc:
        logger.warning("the Hugging Face hub (%s) cannot be reached (%s): using the local cache only", host, exc)
        return False


def _offline_hint(repo_id: str, filename: str) -> str:
    return (
        f"{repo_id}/{filename} is not in the Hugging Face cache and cannot be downloaded"
        " (offline, HF_HUB_OFFLINE=1, or the hub is unreachable). On a connected machine run"
        f" `hf download {repo_id} {filename}` (huggingface_hub's command line; the cache is"
        " HF_HOME, ~/.cache/huggingface by default), or pass checkpoint=PATH to a local copy of"
        " the file."
    )


def cached_path(repo_id: str, filename: str) -> Path | None:
    """The cached copy of ``repo_id/filename``, or None (no network)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id=repo_id, filename=filename)
    return Path(found) if isinstance(found, str) else None


def download(repo_id: str, filename: str) -> Path:
    """The local path of ``repo_id/filename``, from the cache or downloaded into it."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        # unreachable: the cache only, at once (no retries)
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, local_files_only=not hub_reachable()))
    except LocalEntryNotFoundError:
        raise ModelError(_offline_hint(repo_id, filename), stage="download") from None
    except RepositoryNotFoundError:
        raise ModelError(f"Hugging Face has no repository {repo_id!r}", stage="download") from None
    except EntryNotFoundError:
        raise ModelError(f"{repo_id} has no file {filename!r}", stage="download") from None
    except OSError as exc:  # network errors, permissions in the cache
        raise ModelError(f"cannot download {repo_id}/{filename}: {exc}", stage="download") from None


def list_repo_files(repo_id: str) -> list[str]:
    """Files of a repository: from the hub, or from the cached snapshot when offline."""
    from huggingface_hub import list_repo_files as remote_list
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        if hub_reachable():
            return remote_list(repo_id)
    except RepositoryNotFoundError:
        raise ModelError(f"Hugging Face has no repository {repo_id!r}", stage="download") from None
    except OSError:
        pass  # unreachable: fall back to the cache
    try:
        root = Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, OSError):
        raise ModelError(
            f"{repo_id} is not in the Hugging Face cache and the hub cannot be reached: download"
            f" it on a connected machine (`hf download {repo_id}`) or pass a local"
            " path instead",
            stage="download",
        ) from None
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _torch_load(path: Path):
    """A pickled checkpoint, memory-mapped where it is in torch's zip format (pages are read as
    the model is built, and the configuration, read off the shapes, costs nothing): the copy it
    saves is most of a large model's load (Depth-Anything-V2-Large: 0.75 s on two cores)."""
    import zipfile

    mmap = zipfile.is_zipfile(path)
    return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors by name: safetensors, or a pickled state dict read with
    ``torch.load(weights_only=True)`` (no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"checkpoint {path} does not exist", stage="load weights", path=str(path))
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = _torch_load(path)
    except Exception as exc:  # corrupt file, a pickle that is not plain weights ...
        raise ModelError(
            f"cannot read checkpoint {path}: {exc}", stage="load weights", path=str(path)
        ) from None
    for wrapper in ("model", "state_dict", "module"):
        if isinstance(state, dict) and wrapper in state and isinstance(state[wrapper], dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(
            f"checkpoint {path} is not a state dict of tensors", stage="load weights", path=str(path)
        )
    return {str(k): v for k, v in state.items()}
