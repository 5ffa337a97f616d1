"""The prepared-weights cache (Note [Prepared int8 weights], sbsconv.models.prepared): int8
weights quantized once, kept beside the checkpoint and read back by later loads."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

import sbsconv
from sbsconv import models
from sbsconv.models import prepared

FAST = {"progress": False, "preset": "ultrafast", "crf": 0, "resume": False}


@pytest.fixture(scope="module")
def frames():
    g = torch.Generator().manual_seed(3)
    return torch.randint(0, 256, (2, 3, 84, 126), dtype=torch.uint8, generator=g)


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    """A small Depth-Anything-V2 checkpoint in the original layout (one .pth file)."""
    import hubcache

    path = tmp_path / "models" / "depth_anything_v2_vits.pth"
    path.parent.mkdir()
    torch.save(hubcache.dinov2_dpt(width=64, depth=4, seed=1), path)
    return path


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch) -> Path:
    """The user's cache folder (the fallback) in this test's folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("SBSCONV_PREPARED_CACHE", raising=False)
    return tmp_path / "xdg" / "sbsconv" / "prepared"


def depth(path, frames, precision="int8") -> torch.Tensor:
    return models.load(str(path), device="cpu", precision=precision, input_size=70).infer(frames)


def uncached(path, frames, monkeypatch) -> torch.Tensor:
    with monkeypatch.context() as m:
        m.setenv("SBSCONV_PREPARED_CACHE", "0")
        return depth(path, frames)


def beside(path: Path) -> Path:
    return prepared.cache_paths(path, "int8")[0]


def read_cache(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    return load_file(str(path)), meta


def test_the_first_int8_load_caches_what_it_prepared_and_the_second_reads_it(checkpoint, frames, monkeypatch,
                                                                            caplog):
    reference = uncached(checkpoint, frames, monkeypatch)
    assert not beside(checkpoint).exists()  # SBSCONV_PREPARED_CACHE=0: nothing written

    with caplog.at_level(logging.INFO, logger="sbsconv"):
        first = depth(checkpoint, frames)
    cache = beside(checkpoint)
    assert cache.is_file() and cache.parent.name == ".sbsconv-prepared"
    assert "cached at" in caplog.text
    torch.testing.assert_close(first, reference, rtol=0, atol=0)

    tensors, meta = read_cache(cache)
    assert meta["checkpoint_sha256"] == prepared._sha256(checkpoint)
    assert meta["precision"] == "int8" and meta["sbsconv_version"] == sbsconv.__version__
    # the linear layers as int8, their float weights gone; the head as it was
    assert tensors["pretrained.blocks.0.attn.qkv.int8_weight"].dtype == torch.int8
    assert tensors["pretrained.blocks.0.attn.qkv.int8_weight"].shape == (64, 192)  # [in, out]
    assert "pretrained.blocks.0.attn.qkv.weight" not in tensors
    assert "pretrained.blocks.3.mlp.fc2.int8_scale" in tensors
    assert "depth_head.scratch.output_conv2.2.weight" in tensors

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sbsconv"):
        second = depth(checkpoint, frames)
    assert "read from" in caplog.text
    torch.testing.assert_close(second, reference, rtol=0, atol=0)


def test_a_second_load_computes_with_the_cached_weights(checkpoint, frames, monkeypatch):
    """What the cache holds is what the second load runs: a cache whose scales are changed
    (its key left as it was) changes the depth."""
    from safetensors.torch import save_file

    reference = depth(checkpoint, frames)
    tensors, meta = read_cache(beside(checkpoint))
    for name in [n for n in tensors if n.endswith(".int8_scale")]:
        tensors[name] = tensors[name] * 1.5
    save_file(tensors, str(beside(checkpoint)), metadata=meta)
    assert not torch.equal(depth(checkpoint, frames), reference)


def test_a_changed_checkpoint_is_prepared_again(checkpoint, frames, monkeypatch):
    import hubcache

    old = depth(checkpoint, frames)
    old_meta = read_cache(beside(checkpoint))[1]
    torch.save(hubcache.dinov2_dpt(width=64, depth=4, seed=2), checkpoint)
    new = depth(checkpoint, frames)
    assert not torch.equal(new, old)
    torch.testing.assert_close(new, uncached(checkpoint, frames, monkeypatch), rtol=0, atol=0)
    meta = read_cache(beside(checkpoint))[1]
    assert meta["checkpoint_sha256"] == prepared._sha256(checkpoint) != old_meta["checkpoint_sha256"]


def test_the_hash_is_trusted_while_size_and_time_stay_and_checked_when_they_change(checkpoint, frames,
                                                                                  monkeypatch):
    reference = depth(checkpoint, frames)
    calls = []
    real = prepared._sha256
    monkeypatch.setattr(prepared, "_sha256", lambda p: calls.append(p) or real(p))
    depth(checkpoint, frames)
    assert calls == []  # the stat matched: the file was not read to be hashed
    checkpoint.touch()  # same content, a new time: hashed again, and the cache still holds
    torch.testing.assert_close(depth(checkpoint, frames), reference, rtol=0, atol=0)
    assert calls == [checkpoint]
    depth(checkpoint, frames)  # the cache now records the new time: not hashed again
    assert calls == [checkpoint]


@pytest.mark.parametrize("change", ["cpu", "version"])
def test_another_cpu_or_version_prepares_again(checkpoint, frames, monkeypatch, change, caplog):
    depth(checkpoint, frames)
    first = beside(checkpoint)
    if change == "cpu":
        monkeypatch.setattr(prepared, "_cpu_key", lambda: "another-cpu")
    else:
        monkeypatch.setattr(prepared, "_version", lambda: "0.0.0-another")
    with caplog.at_level(logging.INFO, logger="sbsconv"):
        depth(checkpoint, frames)
    assert "cached at" in caplog.text and "read from" not in caplog.text
    second = beside(checkpoint)
    assert second != first and second.is_file()
    meta = read_cache(second)[1]
    assert (meta["cpu"] == "another-cpu") if change == "cpu" else (meta["sbsconv_version"] == "0.0.0-another")
    # machines of two CPUs sharing the folder keep a file each; another version's file is stale
    assert first.is_file() == (change == "cpu")


def test_an_error_that_is_not_the_caches_keeps_the_cache(checkpoint, frames):
    from sbsconv.errors import OptionError

    depth(checkpoint, frames)
    cache = beside(checkpoint)
    written = cache.stat().st_mtime_ns

    def create(weights):
        raise OptionError("input_size too small")  # refused whatever the weights

    with pytest.raises(OptionError, match="input_size"):
        prepared.build(checkpoint, "int8", {}, create)
    assert cache.is_file() and cache.stat().st_mtime_ns == written


@pytest.mark.parametrize("damage", ["truncated", "not safetensors", "a key missing"])
def test_a_damaged_cache_is_reported_and_rebuilt(checkpoint, frames, monkeypatch, caplog, damage):
    from safetensors.torch import save_file

    reference = depth(checkpoint, frames)
    cache = beside(checkpoint)
    if damage == "truncated":
        data = cache.read_bytes()
        cache.write_bytes(data[: len(data) // 2])
    elif damage == "not safetensors":
        cache.write_bytes(b"\x00" * 100)
    else:
        tensors, meta = read_cache(cache)
        del tensors["pretrained.blocks.2.mlp.fc1.int8_weight"]
        save_file(tensors, str(cache), metadata=meta)
    with caplog.at_level(logging.INFO, logger="sbsconv"):
        again = depth(checkpoint, frames)
    torch.testing.assert_close(again, reference, rtol=0, atol=0)
    if damage == "a key missing":  # readable, and refused by the model while the checkpoint builds
        assert "could not be used" in caplog.text and "fc1.int8_weight" in caplog.text
    else:
        assert "cannot be read" in caplog.text
    assert "cached at" in caplog.text
    tensors, _ = read_cache(cache)  # rewritten whole
    assert "pretrained.blocks.2.mlp.fc1.int8_weight" in tensors


def test_where_the_folder_beside_cannot_be_written_the_users_cache_folder_is_used(checkpoint, frames, user_cache):
    (checkpoint.parent / ".sbsconv-prepared").write_text("a file where the folder would be")
    reference = depth(checkpoint, frames)
    cached = list(user_cache.glob("*.int8.*.safetensors"))
    assert [p.name.split(".")[0] for p in cached] == ["depth_anything_v2_vits"]
    torch.testing.assert_close(depth(checkpoint, frames), reference, rtol=0, atol=0)
    other = checkpoint.parent.parent / "elsewhere" / checkpoint.name  # the same name, another file
    other.parent.mkdir()
    torch.save(__import__("hubcache").dinov2_dpt(width=64, depth=4, seed=5), other)
    (other.parent / ".sbsconv-prepared").write_text("")
    depth(other, frames)
    assert len(list(user_cache.glob("*.int8.*.safetensors"))) == 2  # the path is in the name


def test_where_nothing_can_be_written_the_checkpoint_is_not_even_hashed(checkpoint, frames, user_cache,
                                                                        monkeypatch):
    (checkpoint.parent / ".sbsconv-prepared").write_text("")
    user_cache.parent.parent.mkdir(parents=True)
    user_cache.parent.write_text("")  # xdg/sbsconv is a file
    monkeypatch.setattr(prepared, "_sha256", lambda p: pytest.fail(f"{p} was hashed for nothing"))
    out = depth(checkpoint, frames)
    assert out.shape[0] == 2 and torch.isfinite(out).all()
    assert not list(checkpoint.parent.glob("**/*.part"))


def test_a_failing_write_is_a_warning_and_leaves_no_temporary_file(checkpoint, frames, monkeypatch, caplog):
    import os
    import time

    import safetensors.torch

    folder = checkpoint.parent / ".sbsconv-prepared"
    folder.mkdir()
    stale = folder / "left.by.a.killed.process.part"
    stale.write_bytes(b"x")
    hour_ago = time.time() - 7200
    os.utime(stale, (hour_ago, hour_ago))

    def full_disk(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise RuntimeError("No space left on device")  # safetensors' own error type, not OSError

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    with caplog.at_level(logging.WARNING, logger="sbsconv"):
        out = depth(checkpoint, frames)
    assert "could not be cached" in caplog.text and "No space left" in caplog.text
    assert torch.isfinite(out).all()
    assert not stale.exists()  # an hour old: removed
    assert not list(folder.glob("*.part")) and not beside(checkpoint).exists()


def test_other_precisions_write_nothing(checkpoint, frames):
    depth(checkpoint, frames, "fp32")
    depth(checkpoint, frames, "bf16")
    assert not beside(checkpoint).exists()


def _da3(tmp_path):
    import da3_weights

    return da3_weights.write(tmp_path / "da3", "da3-small")


def _depth_pro(tmp_path):
    from test_depth_pro import save, tiny_reference

    save(tiny_reference(), tmp_path / "depth_pro", 128)
    return tmp_path / "depth_pro"


@pytest.mark.parametrize("family", ["depth-anything-v2 (transformers folder)", "video-depth-anything",
                                    "depth-anything-3", "depth-pro"])
def test_every_int8_family_reads_back_what_it_cached(family, tmp_path, tiny_model, tiny_vda, frames, caplog):
    if family.startswith("depth-anything-v2"):
        path = shutil.copytree(tiny_model, tmp_path / "tiny")
    elif family == "video-depth-anything":
        path = shutil.copy(tiny_vda, tmp_path / Path(tiny_vda).name)
    elif family == "depth-anything-3":
        path = _da3(tmp_path)
    else:
        path = _depth_pro(tmp_path)
    path = Path(path)

    def run():
        m = models.load(str(path), device="cpu", precision="int8", input_size=70)
        return m.estimate_clip(frames.repeat(2, 1, 1, 1)).depth

    first = run()
    cache = beside(path)
    assert cache.is_file()
    tensors, _ = read_cache(cache)
    assert any(t.dtype == torch.int8 for t in tensors.values())
    with caplog.at_level(logging.INFO, logger="sbsconv"):
        second = run()
    assert "read from" in caplog.text and "could not be used" not in caplog.text  # the cache built it
    torch.testing.assert_close(second, first, rtol=0, atol=0)


def test_a_registry_model_in_the_hub_cache_is_keyed_by_its_blob_without_reading_it(offline_hub, frames,
                                                                                   monkeypatch):
    """A checkpoint reached by registry name through the hub cache (laid out as `hf download`
    leaves it): the blob's name is its SHA-256, so nothing is hashed; the cache sits beside the
    snapshot's file."""
    monkeypatch.setattr(prepared, "_sha256", lambda p: pytest.fail(f"{p} was hashed"))
    name = sbsconv.ConvertOptions().model
    m = models.load(name, device="cpu", precision="int8", input_size=70)
    reference = m.infer(frames)
    snapshot_file = Path(models.hub.download(models.spec(name).repo_id, models.spec(name).filename))
    cache = beside(snapshot_file)
    meta = read_cache(cache)[1]
    assert meta["checkpoint_sha256"] == snapshot_file.resolve().name
    torch.testing.assert_close(models.load(name, device="cpu", precision="int8", input_size=70).infer(frames),
                               reference, rtol=0, atol=0)


def test_the_cache_in_a_hub_snapshot_is_not_one_of_the_repositorys_files(offline_hub, frames):
    # offline, a repository's files are listed from its snapshot folder, where the cache lives
    name = sbsconv.ConvertOptions().model
    spec = models.spec(name)
    reference = models.load(name, device="cpu", precision="int8", input_size=70).infer(frames)
    snapshot_file = Path(models.hub.download(spec.repo_id, spec.filename))
    cache = beside(snapshot_file)
    assert cache.is_file()
    assert "snapshots" not in cache.parts and cache.parent.parent.name.startswith("models--")  # the repo's folder
    files = models.hub.list_repo_files(spec.repo_id)
    assert spec.filename in files and not any(".sbsconv-prepared" in f for f in files)
    by_repo = models.load(spec.repo_id, device="cpu", precision="int8", input_size=70)  # one checkpoint
    torch.testing.assert_close(by_repo.infer(frames), reference, rtol=0, atol=0)


def test_the_default_conversion_twice_reads_the_prepared_weights_the_second_time(offline_hub, sample_clip_short,
                                                                                tmp_path, caplog):
    """sbsconv.convert(IN, OUT) with every option left alone, twice: where the CPU's auto
    precision is int8 the second run reads the weights the first prepared; elsewhere nothing is
    cached (fp32 and bf16 need no preparing)."""
    name = sbsconv.ConvertOptions().model
    auto, _ = models.auto_cpu_precision_for(models.families()[models.spec(name).family])
    for run in ("first", "second"):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="sbsconv"):
            result = sbsconv.convert(sample_clip_short, tmp_path / f"{run}.mp4")
        assert result.frames == 6
    snapshot_file = Path(models.hub.download(models.spec(name).repo_id, models.spec(name).filename))
    if auto == "int8":
        assert "read from" in caplog.text
        assert json.loads(read_cache(beside(snapshot_file))[1]["checkpoint_stat"])[0][1] > 0
    else:
        assert not beside(snapshot_file).exists()
