"""Depth-Anything-V2 in C++: parity with transformers, the original checkpoint layout, the
Hugging Face cache, errors, and inference on frames. Every model here is a tiny random one
made by the test, written in the real on-disk formats and loaded through the real code."""

from __future__ import annotations

import json
import logging
import math
import shutil
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import sbsconv.models as models
from sbsconv.errors import ModelError, OptionError
from sbsconv.models import depth_anything_v2 as dav2

from helpers import HAS_CUDA, HAS_MPS, data, run_python

transformers = pytest.importorskip("transformers")
from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config  # noqa: E402


def tiny_reference(metric: bool = False, *, hidden=128, layers=4, heads=2, seed=0,
                   swiglu=False) -> DepthAnythingForDepthEstimation:
    torch.manual_seed(seed)
    # 64-dimensional attention heads, as in every DINOv2 preset (the original layout does not
    # record the head count; sbsconv reads it off the width).
    backbone = Dinov2Config(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, image_size=70,
        patch_size=14, out_indices=list(range(layers - 3, layers + 1)), apply_layernorm=True,
        reshape_hidden_states=False, use_swiglu_ffn=swiglu,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone, neck_hidden_sizes=[16, 32, 64, 64], fusion_hidden_size=32,
        head_hidden_size=16, reassemble_hidden_size=hidden,
        depth_estimation_type="metric" if metric else "relative", max_depth=20 if metric else 1,
    )
    model = DepthAnythingForDepthEstimation(config).eval()
    with torch.no_grad():  # move every parameter off its initial value (layer scale = 1 ...)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        model.head.conv3.bias.add_(0.5)  # keep the final ReLU mostly open: a non-trivial output
    return model


def max_rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    assert float(ref.abs().max()) > 0 and float(ref.std()) > 0, "degenerate reference output"
    return float((ours - ref).abs().max() / ref.abs().max())


@pytest.fixture(scope="module", params=[False, True], ids=["relative", "metric"])
def hf_pair(request, tmp_path_factory):
    """A tiny transformers model and the same weights loaded by sbsconv from a folder (fp32:
    precision auto on the CPU may be int8, whose budget is tests/python/test_cpu_precision.py's)."""
    ref = tiny_reference(metric=request.param)
    folder = tmp_path_factory.mktemp("hf")
    ref.save_pretrained(folder)
    return ref, models.load(str(folder), device="cpu", precision="fp32"), folder


SHAPES = [(1, 70, 70), (3, 70, 70), (1, 126, 224), (3, 126, 224)]


@pytest.mark.parametrize(("batch", "height", "width"), SHAPES)
def test_forward_matches_transformers(hf_pair, batch, height, width):
    ref, ours, _ = hf_pair
    x = torch.randn(batch, 3, height, width)
    with torch.no_grad():
        expected = ref(pixel_values=x).predicted_depth
    got = ours.forward(x)
    assert got.shape == (batch, 1, height, width)
    assert max_rel_err(got[:, 0], expected) <= 1e-4
    assert ours.kind == ref.config.depth_estimation_type


def test_swiglu_encoder_as_in_the_giant_model(tmp_path):
    ref = tiny_reference(swiglu=True)
    ref.save_pretrained(tmp_path)
    ours = models.load(str(tmp_path), device="cpu", precision="fp32")
    x = torch.randn(2, 3, 98, 168)
    with torch.no_grad():
        expected = ref(pixel_values=x).predicted_depth
    assert max_rel_err(ours.forward(x)[:, 0], expected) <= 1e-4


def original_pos_embed(self, embeddings, height, width):
    """The original DINOv2 position-table resize (scale factor with the 0.1 offset), patched
    into transformers to show that it is the one difference between the two layouts."""
    n = self.position_embeddings.shape[1] - 1
    grid = int(math.sqrt(n))
    h0, w0 = height // 14, width // 14
    if h0 * w0 == n and height == width:
        return self.position_embeddings
    table = self.position_embeddings[:, 1:].reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
    resized = F.interpolate(table.float(), scale_factor=((h0 + 0.1) / grid, (w0 + 0.1) / grid),
                            mode="bicubic", align_corners=False)
    assert resized.shape[-2:] == (h0, w0)
    resized = resized.permute(0, 2, 3, 1).reshape(1, h0 * w0, -1)
    return torch.cat([self.position_embeddings[:, :1], resized], dim=1)


def test_original_layout_differs_only_by_the_position_table_resize(hf_pair, tmp_path, monkeypatch):
    ref, _, _ = hf_pair
    original = dav2.original_keys_from_transformers(ref.state_dict())
    assert "pretrained.blocks.0.attn.qkv.weight" in original
    metric = ref.config.depth_estimation_type == "metric"
    path = tmp_path / ("depth_anything_v2_metric_hypersim_tiny.pth" if metric else "depth_anything_v2_tiny.pth")
    torch.save(original, path)
    ours = models.load(str(path), device="cpu", precision="fp32")
    assert ours.kind == ("metric" if metric else "relative")

    square = torch.randn(2, 3, 70, 70)  # the table's own grid: no resize, identical
    with torch.no_grad():
        assert max_rel_err(ours.forward(square)[:, 0], ref(pixel_values=square).predicted_depth) <= 1e-4

    wide = torch.randn(2, 3, 126, 224)
    with torch.no_grad():
        exact = ref(pixel_values=wide).predicted_depth
    got = ours.forward(wide)[:, 0]
    assert max_rel_err(got, exact) > 1e-6  # the resize differs ...
    from transformers.models.dinov2 import modeling_dinov2

    monkeypatch.setattr(modeling_dinov2.Dinov2Embeddings, "interpolate_pos_encoding", original_pos_embed)
    with torch.no_grad():
        patched = ref(pixel_values=wide).predicted_depth
    assert max_rel_err(got, patched) <= 1e-4  # ... and nothing else does


def test_key_renaming_round_trips(hf_pair):
    from safetensors.torch import load_file

    _, _, folder = hf_pair
    state = load_file(folder / "model.safetensors")  # the names checkpoints use on disk
    back = dav2.transformers_keys_from_original(dav2.original_keys_from_transformers(state))
    assert set(back) == set(state)
    assert all(torch.equal(back[k], state[k]) for k in state)


# ---- inference on frames -----------------------------------------------------------------


def reference_infer(ref, frame_rgb_uint8: np.ndarray, input_size: int) -> torch.Tensor:
    """Depth-Anything-V2's infer_image: OpenCV bicubic to the lower-bound size (multiples of
    14), ImageNet normalisation, the network, bilinear (align_corners) back to frame size."""
    cv2 = pytest.importorskip("cv2")
    h, w = frame_rgb_uint8.shape[:2]
    scale = max(input_size / h, input_size / w)

    def constrain(x):
        y = int(np.round(x / 14) * 14)
        return int(np.ceil(x / 14) * 14) if y < input_size else y

    nh, nw = constrain(scale * h), constrain(scale * w)
    image = cv2.resize(frame_rgb_uint8 / 255.0, (nw, nh), interpolation=cv2.INTER_CUBIC)
    image = (image - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    x = torch.from_numpy(image.transpose(2, 0, 1)).float()[None]
    with torch.no_grad():
        depth = ref(pixel_values=x).predicted_depth
    return F.interpolate(depth[:, None], (h, w), mode="bilinear", align_corners=True)[0, 0]


def test_infer_matches_the_reference_pipeline_on_a_real_frame(hf_pair):
    from sbsconv import media

    ref, _, folder = hf_pair
    ours = models.load(str(folder), device="cpu", precision="fp32", input_size=98)
    frames = next(iter(media.read_frames(data("davis_rollercoaster.mp4"), batch_size=2))).data
    depth = ours.infer(frames)
    assert depth.shape == (2, 1, 540, 960) and depth.dtype == torch.float32
    for i in range(2):
        expected = reference_infer(ref, frames[i].permute(1, 2, 0).numpy(), 98)
        assert max_rel_err(depth[i, 0], expected) <= 1e-4
    assert torch.equal(depth, ours.infer(frames))  # deterministic


@pytest.mark.parametrize(
    ("size", "expected"),
    [((1080, 1920), (518, 924)), ((720, 1280), (518, 924)), ((540, 960), (518, 924)),
     ((1920, 1080), (924, 518)), ((518, 518), (518, 518)), ((241, 321), (518, 686))],
)
def test_input_size_rule(size, expected):
    from sbsconv._native import _core

    assert _core.lower_bound_size(*size, 518) == expected


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_cuda_infer_agrees_with_cpu(hf_pair):
    _, cpu, folder = hf_pair
    gpu = models.load(str(folder), device="cuda", precision="fp32")
    frames = torch.randint(0, 255, (2, 3, 90, 160), dtype=torch.uint8)
    assert max_rel_err(gpu.infer(frames.cuda()).cpu(), cpu.infer(frames)) <= 1e-3
    half = models.load(str(folder), device="cuda")  # auto: fp16
    assert half.dtype == "Half"
    assert max_rel_err(half.infer(frames.cuda()).float().cpu(), cpu.infer(frames)) <= 5e-2


@pytest.mark.mps
@pytest.mark.skipif(not HAS_MPS, reason="needs an Apple Silicon GPU (MPS)")
def test_mps_infer_agrees_with_cpu(hf_pair):
    _, cpu, folder = hf_pair
    mps = models.load(str(folder), device="mps", precision="fp32")
    frames = torch.randint(0, 255, (1, 3, 90, 160), dtype=torch.uint8)
    assert max_rel_err(mps.infer(frames.to("mps")).cpu(), cpu.infer(frames)) <= 1e-3


# ---- errors ----------------------------------------------------------------------------------


def test_unknown_name_lists_the_registry():
    with pytest.raises(ModelError, match="depth-anything-v2-small") as info:
        models.load("depth-anything-v9-colossal")
    assert "depth-anything-v2-metric-outdoor-large" in str(info.value)


def test_missing_and_unexpected_keys_are_listed(hf_pair, tmp_path):
    ref, _, _ = hf_pair
    state = dav2.original_keys_from_transformers(ref.state_dict())
    del state["pretrained.blocks.1.norm2.bias"]
    state["depth_head.extra.weight"] = torch.zeros(3)
    path = tmp_path / "depth_anything_v2_broken.pth"
    torch.save(state, path)
    with pytest.raises(ModelError) as info:
        models.load(str(path), device="cpu")
    message = str(info.value)
    assert "Missing keys (1): pretrained.blocks.1.norm2.bias" in message
    assert "Unexpected keys (1): depth_head.extra.weight" in message


def test_shape_mismatch_names_the_tensor_and_both_shapes(hf_pair, tmp_path):
    ref, _, _ = hf_pair
    state = dav2.original_keys_from_transformers(ref.state_dict())
    state["pretrained.blocks.2.attn.proj.weight"] = torch.zeros(128, 32)
    path = tmp_path / "depth_anything_v2_bad_shape.pth"
    torch.save(state, path)
    with pytest.raises(ModelError, match=r"pretrained\.blocks\.2\.attn\.proj\.weight: expected \(128, 128\), found \(128, 32\)"):
        models.load(str(path), device="cpu")


def test_registry_checkpoint_of_the_wrong_size_is_refused(hf_pair, tmp_path):
    ref, _, _ = hf_pair
    path = tmp_path / "tiny.pth"
    torch.save(dav2.original_keys_from_transformers(ref.state_dict()), path)
    with pytest.raises(ModelError, match="128-wide encoder"):
        models.load("depth-anything-v2-small", checkpoint=str(path), device="cpu")


def test_unreadable_and_code_carrying_checkpoints_are_refused(tmp_path):
    junk = tmp_path / "depth_anything_v2_junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot read checkpoint"):
        models.load(str(junk), device="cpu")
    pickled = tmp_path / "depth_anything_v2_code.pth"
    torch.save({"weights": torch.zeros(1), "callback": print}, pickled)  # a pickled function
    with pytest.raises(ModelError, match="cannot read checkpoint"):
        models.load(str(pickled), device="cpu")


def test_bad_options_are_option_errors(hf_pair):
    _, _, folder = hf_pair
    with pytest.raises(OptionError, match="input_size"):
        models.load(str(folder), input_size=7)
    with pytest.raises(OptionError, match="precision"):
        models.load(str(folder), precision="fp8")
    with pytest.raises(OptionError, match="checkpoint= replaces"):
        models.load(str(folder), checkpoint=str(folder))


def test_non_commercial_checkpoints_are_announced(caplog, tmp_path):
    caplog.set_level(logging.INFO, logger="sbsconv")
    with pytest.raises(ModelError):
        models.load("depth-anything-v2-large", checkpoint=str(tmp_path / "missing.pth"))
    assert any("CC-BY-NC-4.0" in r.getMessage() and "non-commercial" in r.getMessage()
               for r in caplog.records)
    assert models.spec("depth-anything-v2-small").commercial_use
    assert not models.spec("depth-anything-v2-base").commercial_use


# ---- the Hugging Face cache, offline -------------------------------------------------------


def write_cache_entry(cache, repo_id, files: dict[str, object]) -> None:
    """Lays out ``repo_id`` in a hub cache as huggingface_hub does: blobs, a snapshot, refs."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for name, source in files.items():
        target = snapshot / name
        if isinstance(source, dict):
            torch.save(source, target)
        else:
            shutil.copy(source, target)


OFFLINE_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    import sbsconv.models as models
    from sbsconv.errors import ModelError
    out = {}
    x = torch.load(sys.argv[1])
    small = models.load("depth-anything-v2-small", device="cpu")
    out["small"] = [small.name, small.kind, small.source]
    hf = models.load("depth-anything/Depth-Anything-V2-Small-hf", device="cpu")
    out["hf"] = hf.forward(x).flatten().tolist()[:50]
    out["precision"] = hf.precision
    try:
        models.load("depth-anything-v2-metric-outdoor-small", device="cpu")
    except ModelError as exc:
        out["missing"] = str(exc)
    print(json.dumps(out))
    """
)


def test_loading_through_an_offline_hugging_face_cache(hf_pair, tmp_path):
    ref, _, folder = hf_pair
    home = tmp_path / "hf_home"
    cache = home / "hub"
    # A full-size Depth-Anything-V2-Small architecture with random weights, original layout.
    small_ref = tiny_reference(hidden=384, layers=12, heads=6)
    small_config = small_ref.config
    small_config.neck_hidden_sizes = [48, 96, 192, 384]
    small_config.fusion_hidden_size = 64
    small_config.head_hidden_size = 32
    small_config.backbone_config.out_indices = [3, 6, 9, 12]
    small = DepthAnythingForDepthEstimation(small_config).eval()
    write_cache_entry(cache, "depth-anything/Depth-Anything-V2-Small",
                      {"depth_anything_v2_vits.pth": dav2.original_keys_from_transformers(small.state_dict())})
    write_cache_entry(cache, "depth-anything/Depth-Anything-V2-Small-hf",
                      {"config.json": folder / "config.json", "model.safetensors": folder / "model.safetensors"})
    x = torch.randn(1, 3, 70, 126)
    torch.save(x, tmp_path / "x.pt")
    env = {"HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    proc = run_python(OFFLINE_SCRIPT, str(tmp_path / "x.pt"), env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["small"][:2] == ["depth-anything-v2-small", "relative"]
    assert out["small"][2].startswith(str(cache))
    with torch.no_grad():
        expected = ref(pixel_values=x).predicted_depth.flatten()[:50]
    # precision auto, as a user loads it: int8 or fp32 within 1e-4 of the reference; bf16 (auto
    # with AMX-BF16) carries bfloat16's rounding through the encoder
    assert max_rel_err(torch.tensor(out["hf"]), expected) <= (1e-2 if out["precision"] == "bf16" else 1e-4)
    assert "Depth-Anything-V2-Metric-VKITTI-Small/depth_anything_v2_metric_vkitti_vits.pth" in out["missing"]
    assert "`hf download " in out["missing"] and "checkpoint=" in out["missing"]
