"""Depth Anything 3 checkpoints with random weights in the published layout (the inverse of
sbsconv.models.depth_anything_3's loader): ``model.safetensors`` with the reference module's
key names and shapes, beside a ``config.json`` naming the preset. Used by the tests (tiny
configurations) and the benchmarks (the full-size architectures)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

# The full-size architectures of the four Apache-2.0 models.
FULL = {
    "da3-small": dict(embed_dim=384, depth=12, out_layers=[5, 7, 9, 11], alt_start=4, features=64,
                      out_channels=[48, 96, 192, 384]),
    "da3-base": dict(embed_dim=768, depth=12, out_layers=[5, 7, 9, 11], alt_start=4, features=128,
                     out_channels=[96, 192, 384, 768]),
    "da3mono-large": dict(embed_dim=1024, depth=24, out_layers=[4, 11, 17, 23], alt_start=-1, features=256,
                          out_channels=[256, 512, 1024, 1024]),
    "da3metric-large": dict(embed_dim=1024, depth=24, out_layers=[4, 11, 17, 23], alt_start=-1, features=256,
                            out_channels=[256, 512, 1024, 1024]),
}
# Tiny configurations: 64-wide heads as every DINOv2, alternation from block 2.
TINY = {
    "da3-small": dict(embed_dim=128, depth=6, out_layers=[2, 3, 4, 5], alt_start=2, features=32,
                      out_channels=[16, 32, 64, 64]),
    "da3mono-large": dict(embed_dim=128, depth=4, out_layers=[0, 1, 2, 3], alt_start=-1, features=32,
                          out_channels=[16, 32, 64, 64]),
    "da3metric-large": dict(embed_dim=128, depth=4, out_layers=[0, 1, 2, 3], alt_start=-1, features=32,
                            out_channels=[16, 32, 64, 64]),
}


def state_dict(preset: str, *, embed_dim: int, depth: int, out_layers: list[int], alt_start: int, features: int,
               out_channels: list[int], seed: int = 0, sky_from_depth: float | None = None,
               swiglu: bool = False, gs_head: bool = False) -> dict[str, torch.Tensor]:
    """The reference module's state dict (``model.*``) with random weights. ``sky_from_depth``
    (monocular models): the sky branch copies the depth branch, its logit offset by this value,
    so that sky >= 0.3 exactly where log(depth) >= 0.3 - offset (the farthest pixels are sky).
    ``swiglu`` and ``gs_head``: the giant model's feed-forward (w12, w3) and its
    Gaussian-splatting head (a few of its keys)."""
    g = torch.Generator().manual_seed(seed)
    any_view = alt_start >= 0
    c = embed_dim
    head_dim = 64
    dim_in = 2 * c if any_view else c
    sd: dict[str, torch.Tensor] = {}

    def rand(*shape: int, scale: float = 1.0) -> torch.Tensor:
        fan_in = 1
        for s in shape[1:]:
            fan_in *= s
        std = 0.05 if len(shape) < 2 else min(0.05, 0.4 / fan_in ** 0.5)
        return torch.randn(*shape, generator=g) * std * scale

    def norm(name: str, size: int) -> None:
        sd[name + ".weight"] = 1 + 0.2 * torch.randn(size, generator=g)
        sd[name + ".bias"] = rand(size)

    def linear(name: str, out: int, inp: int) -> None:
        sd[name + ".weight"] = rand(out, inp)
        sd[name + ".bias"] = rand(out)

    def conv(name: str, out: int, inp: int, k: int, bias: bool = True, transposed: bool = False) -> None:
        sd[name + ".weight"] = rand(inp, out, k, k) if transposed else rand(out, inp, k, k)
        if bias:
            sd[name + ".bias"] = rand(out)

    b = "model.backbone.pretrained."
    conv(b + "patch_embed.proj", c, 3, 14)
    sd[b + "cls_token"] = rand(1, 1, c, scale=20)
    if any_view:
        sd[b + "camera_token"] = torch.randn(1, 2, c, generator=g)
    sd[b + "pos_embed"] = rand(1, 1 + 37 * 37, c, scale=10)
    for i in range(depth):
        p = f"{b}blocks.{i}."
        norm(p + "norm1", c)
        linear(p + "attn.qkv", 3 * c, c)
        if any_view and i >= alt_start:
            norm(p + "attn.q_norm", head_dim)
            norm(p + "attn.k_norm", head_dim)
        linear(p + "attn.proj", c, c)
        sd[p + "ls1.gamma"] = 0.5 + 0.5 * torch.rand(c, generator=g)
        norm(p + "norm2", c)
        if swiglu:
            hidden = (int(4 * c * 2 / 3) + 7) // 8 * 8
            linear(p + "mlp.w12", 2 * hidden, c)
            linear(p + "mlp.w3", c, hidden)
        else:
            linear(p + "mlp.fc1", 4 * c, c)
            linear(p + "mlp.fc2", c, 4 * c)
        sd[p + "ls2.gamma"] = 0.5 + 0.5 * torch.rand(c, generator=g)
    norm(b + "norm", c)

    h = "model.head."
    f = features
    oc = out_channels
    if any_view:
        norm(h + "norm", dim_in)
    for i in range(4):
        conv(f"{h}projects.{i}", oc[i], dim_in, 1)
        conv(f"{h}scratch.layer{i + 1}_rn", f, oc[i], 3, bias=False)
    conv(h + "resize_layers.0", oc[0], oc[0], 4, transposed=True)
    conv(h + "resize_layers.1", oc[1], oc[1], 2, transposed=True)
    conv(h + "resize_layers.3", oc[3], oc[3], 3)
    branches = ["refinenet{}", "refinenet{}_aux"] if any_view else ["refinenet{}"]
    for pattern in branches:
        for k in range(1, 5):
            r = h + "scratch." + pattern.format(k) + "."
            units = (2,) if k == 4 else (1, 2)
            for u in units:
                conv(f"{r}resConfUnit{u}.conv1", f, f, 3)
                conv(f"{r}resConfUnit{u}.conv2", f, f, 3)
            conv(r + "out_conv", f, f, 1)
    conv(h + "scratch.output_conv1", f // 2, f, 3)
    conv(h + "scratch.output_conv2.0", 32, f // 2, 3)
    conv(h + "scratch.output_conv2.2", 2 if any_view else 1, 32, 1)
    if any_view:
        # the auxiliary (ray) branch: computed and dropped by the reference, ignored by sbsconv
        for level in range(4):
            for j, (o, i_) in enumerate([(f // 2, f), (f, f // 2), (f // 2, f), (f, f // 2), (f // 2, f)]):
                conv(f"{h}scratch.output_conv1_aux.{level}.{j}", o, i_, 3)
            conv(f"{h}scratch.output_conv2_aux.{level}.0", 32, f // 2, 3)
            norm(f"{h}scratch.output_conv2_aux.{level}.2", 32)
            conv(f"{h}scratch.output_conv2_aux.{level}.5", 7, 32, 1)
        d = "model.cam_dec."
        linear(d + "backbone.0", dim_in, dim_in)
        linear(d + "backbone.2", dim_in, dim_in)
        linear(d + "fc_t", 3, dim_in)
        linear(d + "fc_qvec", 4, dim_in)
        linear(d + "fc_fov.0", 2, dim_in)
        sd["model.cam_dec.fc_fov.0.bias"] = torch.full((2,), 1.0)  # a plausible field of view (radians)
        if gs_head:  # the giant's Gaussian-splatting branch (novel views, not depth)
            conv(h.replace("head.", "gs_head.") + "projects.0", oc[0], dim_in, 1)
            linear("model.gs_adapter.proj", 8, 8)
        # the camera encoder (conditioning on known cameras; unused for video)
        norm("model.cam_enc.token_norm", c)
        norm("model.cam_enc.trunk_norm", c)
    else:
        conv(h + "scratch.sky_output_conv2.0", 32, f // 2, 3)
        conv(h + "scratch.sky_output_conv2.2", 1, 32, 1)
        if sky_from_depth is not None:
            for part in ("0.weight", "0.bias", "2.weight"):
                sd[h + "scratch.sky_output_conv2." + part] = sd[h + "scratch.output_conv2." + part].clone()
            sd[h + "scratch.sky_output_conv2.2.bias"] = sd[h + "scratch.output_conv2.2.bias"] + sky_from_depth
    return sd


def write(folder: Path | str, preset: str, *, tiny: bool = True, seed: int = 0, config_json: bool = True,
          **overrides) -> Path:
    """Writes ``model.safetensors`` (and ``config.json``) into ``folder``; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shape = dict((TINY if tiny else FULL)[preset])
    sky = overrides.pop("sky_from_depth", None)
    shape.update(overrides)
    save_file(state_dict(preset, seed=seed, sky_from_depth=sky, **shape), str(folder / "model.safetensors"))
    if config_json:
        config = {"model_name": preset}
        if tiny or overrides:
            config.update(out_layers=shape["out_layers"], alt_start=shape["alt_start"])
        (folder / "config.json").write_text(json.dumps(config))
    return folder
