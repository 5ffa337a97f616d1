"""Every registry model loads by name through the real download path (``hub.download`` ->
``hf_hub_download``) from a Hugging Face cache laid out as ``hf download`` leaves it, offline,
with random weights in the published file layouts (tests/python/hubcache.py); a missing file
says which ``hf download`` command fetches it, and its ``checkpoint=`` advice works; a spec's
alternative transformers repository stands in for its file."""

from __future__ import annotations

import hashlib
import json
import os
import re
import textwrap

import hubcache
import huggingface_hub
import pytest
import sbsconv.models as models
import torch
from helpers import run_python
from sbsconv.errors import ModelError

NAMES = models.available()
SMALL_INPUT = 56  # input_size for the DINOv2 families (Depth Pro runs at its checkpoint's size)


@pytest.fixture(scope="session")
def registry_cache(hub_cache_all):
    """Every registry model's published files (conftest's hub_cache_all)."""
    return hub_cache_all


@pytest.fixture
def offline_registry(registry_cache, monkeypatch):
    """This process reads models from ``registry_cache`` only, offline."""
    hubcache.use_hub_cache(monkeypatch, registry_cache)
    return registry_cache


@pytest.fixture
def downloads(monkeypatch):
    """The calls sbsconv makes to huggingface_hub.hf_hub_download: (repo, file, local only)."""
    calls = []
    real = huggingface_hub.hf_hub_download

    def spy(repo_id, filename, **kwargs):
        calls.append((repo_id, filename, kwargs.get("local_files_only")))
        return real(repo_id, filename, **kwargs)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", spy)
    return calls


def frames(h: int = 48, w: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (1, 3, h, w), dtype=torch.uint8, generator=g)


def depth_of(model: models.DepthModel, x: torch.Tensor) -> torch.Tensor:
    """Depth for every frame of ``x``: a temporal model (a video model) holds frames back until
    its window is complete, so it runs the frames as one clip."""
    return model.estimate_clip(x).depth if model.temporal else model.infer(x)


def assert_depth(depth: torch.Tensor, x: torch.Tensor) -> None:
    assert depth.shape == (x.shape[0], 1, *x.shape[-2:])
    assert torch.isfinite(depth).all() and float(depth.std()) > 0


# ---- the layout ---------------------------------------------------------------------------------


def test_the_cache_is_laid_out_as_hf_download_leaves_it(registry_cache):
    from huggingface_hub import scan_cache_dir, snapshot_download, try_to_load_from_cache

    for name in NAMES:
        s = models.spec(name)
        repo = hubcache.repo_folder(registry_cache, s.repo_id)
        commit = (repo / "refs" / "main").read_text()
        assert re.fullmatch(r"[0-9a-f]{40}", commit)
        assert [p.name for p in (repo / "snapshots").iterdir()] == [commit]
        files = hubcache.published_files(name)
        assert s.filename in files
        for filename, data in files.items():
            pointer = repo / "snapshots" / commit / filename
            if filename.endswith((".pth", ".pt", ".safetensors")):  # LFS: the sha256
                digest = hashlib.sha256(data).hexdigest()
            else:  # in git: the blob's sha1
                digest = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
            assert pointer.is_symlink() and os.readlink(pointer) == f"../../blobs/{digest}"
            blob = repo / "blobs" / digest
            assert blob.is_file() and not blob.is_symlink() and blob.read_bytes() == data
            # huggingface_hub's own readers, with the cache named and offline
            found = try_to_load_from_cache(s.repo_id, filename, cache_dir=registry_cache)
            assert found == str(pointer)
            assert huggingface_hub.hf_hub_download(s.repo_id, filename, cache_dir=registry_cache,
                                                   local_files_only=True) == str(pointer)
        snapshot = snapshot_download(s.repo_id, cache_dir=registry_cache, local_files_only=True)
        assert snapshot == str(pointer.parent)
    info = scan_cache_dir(registry_cache)  # huggingface_hub's cache checker: no complaints
    assert not info.warnings
    assert {r.repo_id for r in info.repos} == {models.spec(n).repo_id for n in NAMES}


# ---- every registry name ------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_every_registry_model_loads_offline_by_name(offline_registry, downloads, name):
    s = models.spec(name)
    model = models.load(name, device="cpu", input_size=SMALL_INPUT)
    assert model.spec.name == name and model.name == name and model.kind == s.kind
    assert downloads == [(s.repo_id, s.filename, True)]  # the cache only, at once: offline
    assert model.source == str(hubcache.snapshot_path(offline_registry, s.repo_id, s.filename))
    x = frames()
    assert_depth(depth_of(model, x), x)


def test_the_default_model_at_its_default_input_size(offline_registry, downloads):
    model = models.load(device="cpu")
    assert model.spec.name == "depth-anything-v2-small" and model.input_size == 518
    s = models.spec("depth-anything-v2-small")
    assert downloads == [(s.repo_id, s.filename, True)]
    x = frames(60, 90)
    assert_depth(model.infer(x), x)


SUBPROCESS = textwrap.dedent(
    """
    import json, torch
    import sbsconv.models as models
    m = models.load("depth-anything-v2-small", device="cpu", input_size=56)
    d = m.infer(torch.full((1, 3, 40, 50), 128, dtype=torch.uint8))
    print(json.dumps([m.name, m.source, list(d.shape), bool(torch.isfinite(d).all())]))
    """
)


def test_a_subprocess_needs_only_the_environment(registry_cache):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    proc = run_python(SUBPROCESS, env={**env, **hubcache.hub_env(registry_cache)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    name, source, shape, finite = json.loads(proc.stdout.strip().splitlines()[-1])
    s = models.spec("depth-anything-v2-small")
    assert (name, shape, finite) == (s.name, [1, 1, 40, 50], True)
    assert source == str(hubcache.snapshot_path(registry_cache, s.repo_id, s.filename))


# ---- a missing file -----------------------------------------------------------------------------


@pytest.mark.parametrize("cached", ["nothing", "another file"])
@pytest.mark.parametrize("name", models.approaches())
def test_a_missing_file_names_its_download_and_checkpoint_loads(tmp_path, monkeypatch, name,
                                                                 cached):
    s = models.spec(name)
    cache = tmp_path / "hub"
    cache.mkdir()
    if cached == "another file":  # the repository is cached, the checkpoint is not
        hubcache.write_repo_file(cache, s.repo_id, "README.md", b"# a model card\n")
    hubcache.use_hub_cache(monkeypatch, cache)
    with pytest.raises(ModelError) as caught:
        models.load(name, device="cpu")
    message = str(caught.value)
    command = re.search(r"`hf download (\S+) (\S+)`", message)
    assert command is not None, message
    assert command.groups() == (s.repo_id, s.filename)
    assert "checkpoint=" in message
    # The advice, followed: a local copy of the file, passed as checkpoint= (the files a Depth
    # Anything 3 checkpoint reads beside it come with it, as in its repository).
    local = tmp_path / "downloaded"
    local.mkdir()
    for filename, data in hubcache.published_files(name).items():
        (local / filename).write_bytes(data)
    path = local / command.group(2)
    model = models.load(name, checkpoint=path, device="cpu", input_size=SMALL_INPUT)
    assert model.spec.name == name and model.source == str(path)
    x = frames()
    assert_depth(depth_of(model, x), x)


# ---- the alternative transformers repository ----------------------------------------------------

ALTERNATIVES = [n for n in NAMES if models.spec(n).alternative_repo]


def test_some_registry_model_has_an_alternative_repository():
    assert ALTERNATIVES  # else the test below would have no cases


@pytest.mark.parametrize("name", ALTERNATIVES)
def test_the_alternative_transformers_repository_stands_in(tmp_path, monkeypatch, downloads, name):
    s = models.spec(name)
    cache = tmp_path / "hub"
    folder = hubcache.fill_transformers_repo(cache, name)  # only the alternative is cached
    assert not hubcache.repo_folder(cache, s.repo_id).exists()
    hubcache.use_hub_cache(monkeypatch, cache)
    model = models.load(name, device="cpu", input_size=SMALL_INPUT)
    assert model.spec.name == name and model.name == name and model.source == str(folder)
    assert downloads[0] == (s.repo_id, s.filename, True)
    alternative = {f for repo, f, _ in downloads[1:] if repo == s.alternative_repo}
    assert alternative >= {"config.json", "model.safetensors"}
    x = frames()
    assert_depth(depth_of(model, x), x)
