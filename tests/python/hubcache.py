"""A Hugging Face hub cache on disk, filled as ``hf download REPO FILE`` leaves it, with random
weights in each registry model's published file layout: the tests load registry names through
the real download path (``sbsconv.models.hub.download`` -> ``hf_hub_download``) offline.

The layout (huggingface_hub's ``file_download.py``; what ``try_to_load_from_cache``,
``hf_hub_download(local_files_only=True)`` and ``snapshot_download(local_files_only=True)``
read)::

    <cache>/models--{org}--{name}/
        blobs/<etag>                        the bytes
        snapshots/<commit>/<filename>       a relative symlink: ../../blobs/<etag>
        refs/main                           the 40-hex commit (no newline)

The etag is the file's sha256 for files the hub keeps in LFS (weights: .pth, .pt,
.safetensors ..., and anything over 10 MiB), else the git blob sha1 (config.json), as the hub
reports them. Nothing else is needed offline: ``.no_exist/`` only records misses, ``.locks/``
only serialises downloads, and without ``trees/<commit>.json`` (which only ``snapshot_download``
writes online) ``snapshot_download(local_files_only=True)`` returns the snapshot as it is.

Use in a test module (the fixture factory is session-scoped by its caller)::

    import hubcache

    @pytest.fixture(scope="session")
    def hub_cache(tmp_path_factory):
        return hubcache.hub_cache_fixture(tmp_path_factory)  # every registry name

    @pytest.fixture
    def offline_hub(hub_cache, monkeypatch):
        hubcache.use_hub_cache(monkeypatch, hub_cache)  # this process, undone after the test
        return hub_cache

    def test_x(offline_hub):
        sbsconv.models.load("depth-anything-v2-small", device="cpu")

In this process ``use_hub_cache`` sets ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE=1`` and also
patches ``huggingface_hub.constants`` (read once, at huggingface_hub's import: sbsconv calls
``hf_hub_download`` without ``cache_dir``) and gives ``sbsconv.models.hub.hub_reachable`` (a
per-process cache) a fresh cache for the test. A subprocess needs only the environment:
``env=hub_env(cache)``.

Weights: which layouts are tiny and which are full-width (the loaders' checks decide):

- Depth-Anything-V2 and Video-Depth-Anything (original ``.pth``, float32): the builder reads
  depth, MLP and head sizes off the tensor shapes but insists that the encoder's width is the
  registry entry's preset (384, 768, 1024). The cache therefore holds full-width encoders with
  4 blocks (the fewest whose four head taps are distinct blocks), narrow MLPs and a narrow DPT
  head, generated with ``torch.randn`` in float32 (vits 15 MB, vitb 47 MB, vitl 79 MB).
  Video-Depth-Anything adds the four motion modules of ``conftest.tiny_vda_state_dict``.
- Depth Anything 3 (``model.safetensors`` + ``config.json`` beside it, as ``hf download REPO``
  leaves them): tiny (``da3_weights.TINY``; the giant with its SwiGLU feed-forward and
  Gaussian-splatting keys). Its loader takes any width and depth when the config.json names
  ``out_layers`` and ``alt_start``, which ``da3_weights`` adds to the preset's name; without
  them it insists on the preset's width and depth (DA3-GIANT: 40 blocks, 1536 wide).
- Depth Pro (``depth_pro.pt``, float16 as released): tiny (``test_depth_pro.tiny_reference``
  in the original layout: 12 blocks, as the hooks on blocks 11 and 5 need, 64 wide, 64 px
  tiles, so 256 px input; the last layers of its heads scaled down so that the depth and the
  field of view stay plausible for any input); the loader reads every size off the shapes.
- U²-Net (``u2net.pth``, ``u2netp.pth``: the reference's pickled state dict, float32): the
  reference's own layout at full size (it has no size to read off), random weights.
- ``fill_transformers_repo``: the transformers layout (config.json, model.safetensors,
  preprocessor_config.json) of a spec's ``alternative_repo``, tiny.

API: :func:`write_repo_file` (one file), :func:`fill_hub_cache` (registry names),
:func:`fill_transformers_repo` (a spec's alternative repository), :func:`published_files` (the
bytes, e.g. for a local ``checkpoint=`` copy), :func:`snapshot_path`, :func:`hub_cache_fixture`,
:func:`use_hub_cache`, :func:`hub_env`.

Generated files are kept per layout and seed for the process (the metric and relative entries
of one size share bytes), so filling several caches costs little more than one.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path

import torch

LFS_SUFFIXES = (".bin", ".ckpt", ".h5", ".msgpack", ".npy", ".npz", ".onnx", ".pickle", ".pkl",
                ".pt", ".pth", ".safetensors", ".tar", ".gz", ".zip")
LFS_THRESHOLD = 10 * 2**20  # the hub keeps larger files in LFS whatever their name


def repo_folder(cache_dir: str | os.PathLike[str], repo_id: str) -> Path:
    """``<cache>/models--{org}--{name}`` (huggingface_hub's ``repo_folder_name``)."""
    return Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))


def default_commit(repo_id: str) -> str:
    """A fixed 40-hex commit per repository (the same in every run)."""
    return hashlib.sha1(f"sbsconv-tests/{repo_id}".encode()).hexdigest()


def etag(filename: str, data: bytes) -> str:
    """The name the hub gives the file's blob: sha256 for LFS files, else the git blob sha1."""
    if filename.endswith(LFS_SUFFIXES) or len(data) > LFS_THRESHOLD:
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def write_repo_file(cache_dir: str | os.PathLike[str], repo_id: str, filename: str, data: bytes,
                    commit: str | None = None) -> Path:
    """Adds ``filename`` (may name subfolders: ``a/b.json``) with ``data`` to ``repo_id``'s
    snapshot in the hub cache ``cache_dir``; returns the snapshot path (the symlink).

    All files of a repository share one commit: ``commit`` if given (``refs/main`` then points
    to it), else the one ``refs/main`` names, else :func:`default_commit`."""
    repo = repo_folder(cache_dir, repo_id)
    ref = repo / "refs" / "main"
    if commit is None:
        commit = ref.read_text() if ref.is_file() else default_commit(repo_id)
    if len(commit) != 40 or any(c not in "0123456789abcdef" for c in commit):
        raise ValueError(f"a commit is 40 lowercase hex digits, not {commit!r}")
    blob = repo / "blobs" / etag(filename, data)
    blob.parent.mkdir(parents=True, exist_ok=True)
    if not blob.is_file() or blob.stat().st_size != len(data):
        tmp = blob.with_name(blob.name + ".incomplete")  # as huggingface_hub, then renamed
        tmp.write_bytes(data)
        os.replace(tmp, blob)
    pointer = repo / "snapshots" / commit / filename
    pointer.parent.mkdir(parents=True, exist_ok=True)
    if pointer.is_symlink() or pointer.exists():
        pointer.unlink()
    pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit)
    return pointer


def snapshot_path(cache_dir: str | os.PathLike[str], repo_id: str, filename: str) -> Path:
    """Where ``repo_id/filename`` lies in the cache's current snapshot (whether or not it does)."""
    repo = repo_folder(cache_dir, repo_id)
    ref = repo / "refs" / "main"
    commit = ref.read_text() if ref.is_file() else default_commit(repo_id)
    return repo / "snapshots" / commit / filename


# ---- weights ----------------------------------------------------------------------------------


def _random(gen: torch.Generator):
    """Random tensors that keep activations in range: small weights scaled to the fan-in."""

    def rand(*shape: int) -> torch.Tensor:
        fan_in = 1
        for s in shape[1:]:
            fan_in *= s
        std = 0.05 if len(shape) < 2 else min(0.05, 0.4 / fan_in**0.5)
        return torch.randn(*shape, generator=gen) * std

    return rand


def dinov2_dpt(*, width: int, depth: int = 4, mlp_hidden: int = 64, out_channels=(16, 32, 32, 64),
               features: int = 32, head_hidden: int = 32, head: str = "depth_head", seed: int = 0,
               grid: int = 37) -> dict[str, torch.Tensor]:
    """A DINOv2 encoder (``pretrained.*``) and DPT head (``{head}.*``) in the original
    Depth-Anything-V2 layout (its ``dpt.py``: no class token in the head, every refinenet with
    both residual units), random float32 values. ``grid``: the position table's side (37: the
    published 518 px)."""
    gen = torch.Generator().manual_seed(seed)
    rand = _random(gen)
    sd: dict[str, torch.Tensor] = {}
    c = width

    def norm(name: str, size: int) -> None:
        sd[name + ".weight"] = 1 + 0.2 * torch.randn(size, generator=gen)
        sd[name + ".bias"] = rand(size)

    def layer(name: str, *shape: int, bias: bool = True) -> None:
        sd[name + ".weight"] = rand(*shape)
        if bias:
            sd[name + ".bias"] = rand(shape[0])

    p = "pretrained."
    sd[p + "cls_token"] = rand(1, 1, c) * 20
    sd[p + "pos_embed"] = rand(1, 1 + grid * grid, c) * 10
    sd[p + "mask_token"] = torch.zeros(1, c)
    layer(p + "patch_embed.proj", c, 3, 14, 14)
    for i in range(depth):
        b = f"{p}blocks.{i}."
        norm(b + "norm1", c)
        layer(b + "attn.qkv", 3 * c, c)
        layer(b + "attn.proj", c, c)
        sd[b + "ls1.gamma"] = 0.5 + 0.5 * torch.rand(c, generator=gen)
        norm(b + "norm2", c)
        layer(b + "mlp.fc1", mlp_hidden, c)
        layer(b + "mlp.fc2", c, mlp_hidden)
        sd[b + "ls2.gamma"] = 0.5 + 0.5 * torch.rand(c, generator=gen)
    norm(p + "norm", c)

    h, oc, f = head + ".", list(out_channels), features
    for i in range(4):
        layer(f"{h}projects.{i}", oc[i], c, 1, 1)
        layer(f"{h}scratch.layer{i + 1}_rn", f, oc[i], 3, 3, bias=False)
    sd[h + "resize_layers.0.weight"] = rand(oc[0], oc[0], 4, 4)  # transposed: [in, out, k, k]
    sd[h + "resize_layers.0.bias"] = rand(oc[0])
    sd[h + "resize_layers.1.weight"] = rand(oc[1], oc[1], 2, 2)
    sd[h + "resize_layers.1.bias"] = rand(oc[1])
    layer(h + "resize_layers.3", oc[3], oc[3], 3, 3)
    for k in range(1, 5):
        r = f"{h}scratch.refinenet{k}."
        for u in (1, 2):
            layer(f"{r}resConfUnit{u}.conv1", f, f, 3, 3)
            layer(f"{r}resConfUnit{u}.conv2", f, f, 3, 3)
        layer(r + "out_conv", f, f, 1, 1)
    layer(h + "scratch.output_conv1", f // 2, f, 3, 3)
    layer(h + "scratch.output_conv2.0", head_hidden, f // 2, 3, 3)
    layer(h + "scratch.output_conv2.2", 1, head_hidden, 1, 1)
    sd[h + "scratch.output_conv2.2.bias"] += 0.5  # keep the final ReLU open: non-zero depth
    return sd


def _torch_bytes(state: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _encoder_width(encoder: str) -> int:
    from sbsconv.models.depth_anything_v2 import PRESETS

    return PRESETS[encoder]["embed_dim"]


@functools.cache
def _depth_anything_v2(encoder: str, seed: int) -> bytes:
    return _torch_bytes(dinov2_dpt(width=_encoder_width(encoder), seed=seed))


@functools.cache
def _video_depth_anything(encoder: str, seed: int) -> bytes:
    from conftest import tiny_vda_state_dict

    # The head's sizes are tiny_vda_state_dict's (its motion modules work on out_channels[2:]
    # and the features); the encoder is the preset's width.
    sd = dinov2_dpt(width=_encoder_width(encoder), out_channels=(16, 32, 32, 64), features=32,
                    head="head", seed=seed)
    with torch.random.fork_rng(devices=[]):
        tiny = tiny_vda_state_dict(seed)
    motion = {k: v for k, v in tiny.items() if k.startswith("head.motion_modules.")}
    return _torch_bytes({**sd, **motion})


@functools.cache
def _depth_anything_3(preset: str, seed: int) -> tuple[tuple[str, bytes], ...]:
    import da3_weights
    from safetensors.torch import save

    any_view = not preset.startswith(("da3mono", "da3metric"))
    shape = dict(da3_weights.TINY.get(preset)
                 or da3_weights.TINY["da3-small" if any_view else "da3mono-large"])
    giant = preset == "da3-giant"  # its SwiGLU feed-forward and Gaussian-splatting head
    weights = da3_weights.state_dict(preset, seed=seed, swiglu=giant, gs_head=giant, **shape)
    config = {"model_name": preset, "out_layers": shape["out_layers"],
              "alt_start": shape["alt_start"]}
    return (("model.safetensors", save(weights)), ("config.json", json.dumps(config).encode()))


DEPTH_PRO_TINY = dict(tile=64, vit_patch=16, hidden=64, fusion=16)  # test_depth_pro.tiny_reference


def _tiny_depth_pro(seed: int):
    """test_depth_pro's tiny reference, its outputs kept in range for any input: the last layers
    of the depth and field-of-view heads scaled down, so that their biases (an open final ReLU,
    55 degrees) dominate (else the random network may give a negative field of view, and every
    depth clamped)."""
    from test_depth_pro import tiny_reference

    with torch.random.fork_rng(devices=[]):
        ref = tiny_reference(seed=seed, **DEPTH_PRO_TINY)
    with torch.no_grad():
        ref.head.layers[4].weight.mul_(0.1)
        ref.fov_model.head.layers[-1].weight.mul_(0.01)
    return ref


@functools.cache
def _depth_pro(seed: int) -> bytes:
    from test_depth_pro import original_layout

    ref = _tiny_depth_pro(seed)
    # the release is fp16
    return _torch_bytes({k: v.half() for k, v in original_layout(ref).items()})


def u2net_reference(small: bool, seed: int = 0):
    """U²-Net's reference network (backgroundremover's copy of xuebinqin/U-2-Net's
    model/u2net.py) with random weights, its batch norms given random statistics so that
    folding them is tested, in eval mode."""
    from backgroundremover.u2net import u2net as reference

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = (reference.U2NETP if small else reference.U2NET)(3, 1).eval()
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.2, 0.2)
    return net


@functools.cache
def _u2net(filename: str, seed: int) -> bytes:
    # the published u2net.pth / u2netp.pth: the reference's state dict, float32 (full size:
    # the layout is fixed, 176 MB for u2net)
    return _torch_bytes(u2net_reference(filename == "u2netp.pth", seed).state_dict())


def published_files(name: str, *, seed: int = 0) -> dict[str, bytes]:
    """The files of registry model ``name``'s repository that its loader reads, random weights
    in the published layout: ``{spec.filename: bytes}``, and ``config.json`` for Depth
    Anything 3 (see the module docstring for the sizes)."""
    from sbsconv.models import spec as get_spec

    s = get_spec(name)
    if s.family == "depth-anything-v2":
        return {s.filename: _depth_anything_v2(s.options["encoder"], seed)}
    if s.family == "video-depth-anything":
        return {s.filename: _video_depth_anything(s.options["encoder"], seed)}
    if s.family == "depth-anything-3":
        return dict(_depth_anything_3(s.options["preset"], seed))
    if s.family == "depth-pro":
        return {s.filename: _depth_pro(seed)}
    if s.family == "u2net":
        return {s.filename: _u2net(s.filename, seed)}
    raise NotImplementedError(
        f"hubcache has no weights for the {s.family!r} family ({name}): add them here")


def fill_hub_cache(cache_dir: str | os.PathLike[str], names=None, *,
                   seed: int = 0) -> dict[str, Path]:
    """Writes every registry model's (or only ``names``') published files into the hub cache
    ``cache_dir``; returns ``{name: snapshot path of spec.filename}``."""
    import sbsconv.models as models

    out: dict[str, Path] = {}
    for name in models.available() if names is None else names:
        s = models.spec(name)
        for filename, data in published_files(name, seed=seed).items():
            path = write_repo_file(cache_dir, s.repo_id, filename, data)
            if filename == s.filename:
                out[name] = path
    return out


@functools.cache
def _transformers_files(family: str, seed: int) -> tuple[tuple[str, bytes], ...]:
    with tempfile.TemporaryDirectory() as tmp, torch.random.fork_rng(devices=[]):
        folder = Path(tmp)
        if family == "depth-pro":
            from test_depth_pro import save

            save(_tiny_depth_pro(seed), folder, 4 * DEPTH_PRO_TINY["tile"])
        elif family == "depth-anything-v2":
            from conftest import tiny_depth_anything

            tiny_depth_anything(seed=seed).save_pretrained(folder)
        else:
            raise NotImplementedError(
                f"hubcache has no transformers layout for the {family!r} family")
        return tuple(sorted((p.name, p.read_bytes()) for p in folder.iterdir() if p.is_file()))


def fill_transformers_repo(cache_dir: str | os.PathLike[str], name: str, *, seed: int = 0) -> Path:
    """Writes a tiny random model in the transformers layout (config.json, model.safetensors
    and, for Depth Pro, preprocessor_config.json with its input size) as registry model
    ``name``'s ``alternative_repo``; returns the snapshot folder."""
    from sbsconv.models import spec as get_spec

    s = get_spec(name)
    if s.alternative_repo is None:
        raise ValueError(f"{name} has no alternative repository")
    paths = [write_repo_file(cache_dir, s.alternative_repo, filename, data)
             for filename, data in _transformers_files(s.family, seed)]
    return paths[0].parent


# ---- fixtures ---------------------------------------------------------------------------------


def hub_cache_fixture(tmp_path_factory, names=None, *, seed: int = 0) -> Path:
    """The body of a session-scoped fixture: a new hub cache folder filled by
    :func:`fill_hub_cache` (every registry name, or ``names``); returns its path."""
    cache = tmp_path_factory.mktemp("hf_hub_cache")
    fill_hub_cache(cache, names, seed=seed)
    return cache


def hub_env(cache_dir: str | os.PathLike[str]) -> dict[str, str]:
    """The environment that points huggingface_hub at ``cache_dir``, offline (for subprocesses:
    huggingface_hub reads it at import)."""
    return {"HF_HUB_CACHE": str(cache_dir), "HF_HUB_OFFLINE": "1"}


def use_hub_cache(monkeypatch, cache_dir: str | os.PathLike[str]) -> None:
    """Points this process's huggingface_hub at ``cache_dir``, offline, for one test (undone
    with ``monkeypatch``): the environment, huggingface_hub's constants read at its import,
    and a fresh ``sbsconv.models.hub.hub_reachable`` (its answer is cached per process)."""
    import huggingface_hub.constants as constants
    from sbsconv.models import hub

    for key, value in hub_env(cache_dir).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache_dir))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "hub_reachable", functools.cache(hub.hub_reachable.__wrapped__))
