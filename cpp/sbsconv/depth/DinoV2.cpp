#include "sbsconv/depth/DinoV2.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "sbsconv/common/Error.h"

namespace sbsconv {

void check_vit_config(const VitConfig& config) {
  // Every size is at least 1: a checkpoint's configuration is data, and a zero or negative
  // size would divide by zero or match any shape (WeightReader reads -1 as "any").
  SBSCONV_CHECK(
      config.embed_dim >= 1 && config.depth >= 1 && config.num_heads >= 1 && config.mlp_hidden >= 1 &&
          config.patch_size >= 1,
      Model,
      "build model",
      "the encoder's sizes (embed_dim, depth, num_heads, mlp_hidden, patch_size) must all be at least 1");
  SBSCONV_CHECK(
      config.depth <= kMaxVitDepth && config.embed_dim <= 16384 && config.patch_size <= 64,
      Model,
      "build model",
      "the encoder's configuration is larger than any DINOv2 (depth <= 128, embed_dim <= 16384, patch <= 64)");
  SBSCONV_CHECK(
      config.embed_dim % config.num_heads == 0, Model, "build model", "embed_dim must be a multiple of num_heads");
  SBSCONV_CHECK(
      std::isfinite(config.layer_norm_eps) && config.layer_norm_eps > 0, Model, "build model", "layer_norm_eps must be > 0");
}

DinoV2Encoder::DinoV2Encoder(const VitConfig& config, WeightReader& w, const std::string& prefix)
    : config_(config) {
  check_vit_config(config);
  const int64_t c = config.embed_dim;
  const int64_t p = config.patch_size;
  patch_w_ = w.take(prefix + "patch_embed.proj.weight", {c, 3, p, p});
  patch_b_ = w.take(prefix + "patch_embed.proj.bias", {c});
  cls_token_ = w.take(prefix + "cls_token", {1, 1, c});
  // Kept in float32: the reference resizes the table in float32 and casts afterwards.
  const bool has_pos_embed = w.has(prefix + "pos_embed"); // a missing key is listed by check()
  pos_embed_ = w.take_fp32(prefix + "pos_embed", {1, -1, c});
  SBSCONV_CHECK(
      !has_pos_embed || pos_embed_.size(1) >= 2,
      Model,
      "build model",
      "pos_embed must hold the class token and at least one position");
  const int64_t positions = has_pos_embed ? pos_embed_.size(1) - 1 : 1;
  pos_grid_ = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(positions))));
  SBSCONV_CHECK(
      pos_grid_ * pos_grid_ == positions,
      Model,
      "build model",
      "pos_embed must hold a square grid of positions plus the class token");
  w.ignore(prefix + "mask_token"); // training only
  norm_w_ = w.take(prefix + "norm.weight", {c});
  norm_b_ = w.take(prefix + "norm.bias", {c});
  const int64_t hidden = config.mlp_hidden;
  for (int64_t i = 0; i < config.depth; ++i) {
    const std::string b = prefix + "blocks." + std::to_string(i) + ".";
    Block block;
    block.norm1_w = w.take(b + "norm1.weight", {c});
    block.norm1_b = w.take(b + "norm1.bias", {c});
    block.qkv_w = w.take(b + "attn.qkv.weight", {3 * c, c});
    block.qkv_b = w.take(b + "attn.qkv.bias", {3 * c});
    block.proj_w = w.take(b + "attn.proj.weight", {c, c});
    block.proj_b = w.take(b + "attn.proj.bias", {c});
    block.norm2_w = w.take(b + "norm2.weight", {c});
    block.norm2_b = w.take(b + "norm2.bias", {c});
    if (config.swiglu) {
      block.fc1_w = w.take(b + "mlp.w12.weight", {2 * hidden, c});
      block.fc1_b = w.take(b + "mlp.w12.bias", {2 * hidden});
      block.fc2_w = w.take(b + "mlp.w3.weight", {c, hidden});
      block.fc2_b = w.take(b + "mlp.w3.bias", {c});
    } else {
      block.fc1_w = w.take(b + "mlp.fc1.weight", {hidden, c});
      block.fc1_b = w.take(b + "mlp.fc1.bias", {hidden});
      block.fc2_w = w.take(b + "mlp.fc2.weight", {c, hidden});
      block.fc2_b = w.take(b + "mlp.fc2.bias", {c});
    }
    if (config.layer_scale) {
      block.ls1 = w.take(b + "ls1.gamma", {c});
      block.ls2 = w.take(b + "ls2.gamma", {c});
    }
    blocks_.push_back(std::move(block));
  }
}

at::Tensor DinoV2Encoder::position_table(int64_t grid_h, int64_t grid_w, at::ScalarType dtype) {
  const auto key = std::make_pair(grid_h, grid_w);
  auto it = pos_cache_.find(key);
  if (it != pos_cache_.end()) {
    return it->second;
  }
  const int64_t c = config_.embed_dim;
  at::Tensor table;
  if (grid_h == pos_grid_ && grid_w == pos_grid_) {
    table = pos_embed_; // the reference returns the table itself for its own square grid
  } else {
    at::Tensor cls = pos_embed_.narrow(1, 0, 1);
    at::Tensor grid = pos_embed_.narrow(1, 1, pos_grid_ * pos_grid_)
                          .reshape({1, pos_grid_, pos_grid_, c})
                          .permute({0, 3, 1, 2});
    at::Tensor resized;
    if (config_.pos_embed_resize == PosEmbedResize::ScaleFactorWithOffset) {
      // Reproduces F.interpolate(scale_factor=(sx, sy)) with recompute_scale_factor unset:
      // the output size is floor(in * s) and the sampling uses the scale factors as given.
      const double sqrt_n = std::sqrt(static_cast<double>(pos_grid_ * pos_grid_));
      const double sx = (static_cast<double>(grid_h) + config_.interpolate_offset) / sqrt_n;
      const double sy = (static_cast<double>(grid_w) + config_.interpolate_offset) / sqrt_n;
      const auto out_h = static_cast<int64_t>(std::floor(static_cast<double>(pos_grid_) * sx));
      const auto out_w = static_cast<int64_t>(std::floor(static_cast<double>(pos_grid_) * sy));
      SBSCONV_CHECK(
          out_h == grid_h && out_w == grid_w,
          Internal,
          "depth",
          "position table resize produced the wrong grid");
      resized = at::upsample_bicubic2d(grid, {out_h, out_w}, false, sx, sy);
    } else {
      resized = at::upsample_bicubic2d(grid, {grid_h, grid_w}, false);
    }
    resized = resized.permute({0, 2, 3, 1}).reshape({1, grid_h * grid_w, c});
    table = at::cat({cls, resized}, 1);
  }
  table = table.to(dtype);
  pos_cache_.emplace(key, table);
  return table;
}

at::Tensor DinoV2Encoder::run_block(const Block& b, at::Tensor x) const {
  const int64_t n = x.size(0);
  const int64_t t = x.size(1);
  const int64_t c = config_.embed_dim;
  const int64_t heads = config_.num_heads;
  const int64_t head_dim = c / heads;
  const double eps = config_.layer_norm_eps;

  at::Tensor h = at::layer_norm(x, {c}, b.norm1_w, b.norm1_b, eps);
  // One GEMM for q, k and v (the transformers port runs three).
  auto linear = [](const at::Tensor& in, const at::Tensor& w, const at::Tensor& bias, const Int8Linear& q) {
    return q.defined() ? q(in) : at::linear(in, w, bias);
  };
  at::Tensor qkv = linear(h, b.qkv_w, b.qkv_b, b.qkv_q).view({n, t, 3, heads, head_dim}).permute({2, 0, 3, 1, 4});
  // Note [int8 attention]: quantized blocks wherever the linear layers are int8.
  at::Tensor attn = b.qkv_q.defined() ? int8_attention(qkv[0], qkv[1], qkv[2])
                                      : at::scaled_dot_product_attention(qkv[0], qkv[1], qkv[2]);
  attn = attn.transpose(1, 2).reshape({n, t, c});
  attn = linear(attn, b.proj_w, b.proj_b, b.proj_q);
  if (b.ls1.defined()) {
    attn.mul_(b.ls1);
  }
  x.add_(attn);

  h = at::layer_norm(x, {c}, b.norm2_w, b.norm2_b, eps);
  h = linear(h, b.fc1_w, b.fc1_b, b.fc1_q);
  if (config_.swiglu) {
    auto halves = h.chunk(2, -1);
    h = at::silu(halves[0]).mul_(halves[1]);
  } else {
    h = at::gelu(h); // exact (erf) GELU, as the reference
  }
  h = linear(h, b.fc2_w, b.fc2_b, b.fc2_q);
  if (b.ls2.defined()) {
    h.mul_(b.ls2);
  }
  x.add_(h);
  return x;
}

namespace {

// Note [int8 linear layers]: a LayerNorm's output varies from channel to channel as its learned
// scale and shift do (trained ViTs have channels tens of times wider than the rest), and one
// per-token int8 scale would spend its range on those few channels. Each channel c is divided
// by s_c = sqrt(range_c / wmax_c) (range_c = |gamma_c| + |beta_c|, the channel's width up to a
// common factor; wmax_c the largest weight reading it) in the LayerNorm and multiplied back into
// the weights that read it, so that activations and weights share the spread (the balance
// SmoothQuant chooses, estimated here from the weights alone). In exact arithmetic nothing
// changes. Channels with nothing to balance keep s_c = 1.
void balance_layer_norm(at::Tensor& gamma, at::Tensor& beta, at::Tensor& weight) {
  const at::Tensor g = gamma.to(at::kFloat);
  const at::Tensor bt = beta.defined() ? beta.to(at::kFloat) : at::zeros_like(g);
  const at::Tensor w = weight.to(at::kFloat);
  const at::Tensor range = g.abs() + bt.abs();
  const at::Tensor wmax = w.abs().amax(0);
  at::Tensor s = (range / wmax).sqrt();
  s = at::where((range > 0) & (wmax > 0) & s.isfinite(), s, at::ones_like(s));
  s = s / s.log().mean().exp(); // geometric mean 1: the layers' magnitudes stay where they were
  gamma = (g / s).to(gamma.scalar_type());
  if (beta.defined()) {
    beta = (bt / s).to(beta.scalar_type());
  }
  weight = (w * s.unsqueeze(0)).to(weight.scalar_type());
}

} // namespace

void DinoV2Encoder::quantize_linears() {
  for (Block& b : blocks_) {
    if (b.qkv_q.defined()) {
      continue;
    }
    SBSCONV_CHECK(b.qkv_w.device().is_cpu(), Option, "precision", "int8 layers run on the CPU");
    balance_layer_norm(b.norm1_w, b.norm1_b, b.qkv_w);
    balance_layer_norm(b.norm2_w, b.norm2_b, b.fc1_w);
    b.qkv_q = Int8Linear(b.qkv_w, b.qkv_b);
    b.proj_q = Int8Linear(b.proj_w, b.proj_b);
    b.fc1_q = Int8Linear(b.fc1_w, b.fc1_b);
    b.fc2_q = Int8Linear(b.fc2_w, b.fc2_b);
    for (at::Tensor* t : {&b.qkv_w, &b.qkv_b, &b.proj_w, &b.proj_b, &b.fc1_w, &b.fc1_b, &b.fc2_w, &b.fc2_b}) {
      *t = at::Tensor();
    }
  }
}

at::Tensor DinoV2Encoder::embed(const at::Tensor& input) {
  const int64_t p = config_.patch_size;
  SBSCONV_CHECK(
      input.dim() == 4 && input.size(1) == 3 && input.size(2) % p == 0 && input.size(3) % p == 0,
      Option,
      "depth",
      "the encoder input must be [N,3,h,w] with h and w multiples of " + std::to_string(p));
  const int64_t n = input.size(0);
  const int64_t c = config_.embed_dim;
  at::Tensor tokens = at::conv2d(input, patch_w_, patch_b_, {p, p}).flatten(2).transpose(1, 2);
  at::Tensor x = at::cat({cls_token_.expand({n, 1, c}), tokens}, 1);
  x.add_(position_table(input.size(2) / p, input.size(3) / p, x.scalar_type()));
  return x;
}

at::Tensor DinoV2Encoder::forward_features(
    const at::Tensor& input,
    const std::vector<int64_t>& hooks,
    std::vector<at::Tensor>* hooked) {
  const int64_t c = config_.embed_dim;
  at::Tensor x = embed(input);
  std::vector<at::Tensor> captured(hooks.size());
  for (int64_t i = 0; i < config_.depth; ++i) {
    x = run_block(blocks_[i], x);
    for (size_t k = 0; k < hooks.size(); ++k) {
      if (hooks[k] == i) {
        captured[k] = x.clone(); // run_block updates x in place
      }
    }
  }
  if (hooked != nullptr) {
    *hooked = std::move(captured);
  }
  return at::layer_norm(x, {c}, norm_w_, norm_b_, config_.layer_norm_eps);
}

std::vector<at::Tensor> DinoV2Encoder::intermediate_layers(
    const at::Tensor& input,
    const std::vector<int64_t>& layers) {
  at::Tensor x = embed(input);
  const int64_t gh = input.size(2) / config_.patch_size;
  const int64_t gw = input.size(3) / config_.patch_size;
  const int64_t c = config_.embed_dim;

  std::vector<at::Tensor> out;
  out.reserve(layers.size());
  const int64_t last = layers.empty() ? -1 : *std::max_element(layers.begin(), layers.end());
  for (int64_t i = 0; i <= last; ++i) {
    x = run_block(blocks_[i], x);
    if (std::find(layers.begin(), layers.end(), i) != layers.end()) {
      at::Tensor normed = at::layer_norm(x, {c}, norm_w_, norm_b_, config_.layer_norm_eps);
      out.push_back(normed.narrow(1, 1, gh * gw));
    }
  }
  return out;
}

} // namespace sbsconv
