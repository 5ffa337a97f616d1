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
  for (int64_t start : {config.alt_start, config.qknorm_start, config.rope_start}) {
    SBSCONV_CHECK(
        start == -1 || (start >= 0 && start < config.depth),
        Model,
        "build model",
        "alt_start, qknorm_start and rope_start must be -1 (off) or a block of the encoder");
  }
  SBSCONV_CHECK(
      config.rope_start == -1 || ((config.embed_dim / config.num_heads) % 4 == 0 && config.rope_frequency > 0),
      Model,
      "build model",
      "the 2D rotary embedding needs a head size that is a multiple of 4 and a positive frequency");
}

DinoV2Encoder::DinoV2Encoder(const VitConfig& config, WeightReader& w, const std::string& prefix)
    : config_(config), prefix_(prefix) {
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
  if (config.alt_start >= 0) {
    camera_token_ = w.take(prefix + "camera_token", {1, 2, c});
  }
  const int64_t head_dim = c / config.num_heads;
  norm_w_ = w.take(prefix + "norm.weight", {c});
  norm_b_ = w.take(prefix + "norm.bias", {c});
  const int64_t hidden = config.mlp_hidden;
  for (int64_t i = 0; i < config.depth; ++i) {
    const std::string b = prefix + "blocks." + std::to_string(i) + ".";
    Block block;
    block.norm1_w = w.take(b + "norm1.weight", {c});
    block.norm1_b = w.take(b + "norm1.bias", {c});
    block.norm2_w = w.take(b + "norm2.weight", {c});
    block.norm2_b = w.take(b + "norm2.bias", {c});
    // [out, in] of qkv, projection, MLP in (SwiGLU: both halves) and out
    const std::array<std::array<int64_t, 2>, 4> shapes{
        {{3 * c, c}, {c, c}, {config.swiglu ? 2 * hidden : hidden, c}, {c, hidden}}};
    const std::array<std::string, 4> names = linear_names(i);
    // Note [Prepared int8 weights]
    const bool prepared = w.has(names[0] + ".int8_weight");
    SBSCONV_CHECK(
        !prepared || w.device().is_cpu(), Model, "build model", "prepared int8 weights run on the CPU");
    const std::array<Int8Linear*, 4> int8 = block.int8_linears();
    for (size_t k = 0; k < names.size(); ++k) {
      const int64_t out = shapes[k][0];
      const int64_t in = shapes[k][1];
      if (prepared) {
        const at::Tensor weight_t = w.take_as(names[k] + ".int8_weight", {in, out}, at::kChar);
        const at::Tensor scale = w.take_as(names[k] + ".int8_scale", {out}, at::kFloat);
        const at::Tensor bias = w.take_as(names[k] + ".bias", {out}, at::kFloat);
        // a missing key or a wrong shape or type is listed by check(); the layer is left empty
        if (weight_t.size(0) == in && weight_t.size(1) == out && scale.size(0) == out && bias.size(0) == out) {
          *int8[k] = Int8Linear::from_parts({weight_t, scale, bias});
        }
      } else {
        *block.linear_weights()[k] = w.take(names[k] + ".weight", {out, in});
        *block.linear_biases()[k] = w.take(names[k] + ".bias", {out});
      }
    }
    if (config.layer_scale) {
      block.ls1 = w.take(b + "ls1.gamma", {c});
      block.ls2 = w.take(b + "ls2.gamma", {c});
    }
    if (config.qknorm_start >= 0 && i >= config.qknorm_start) {
      block.q_norm_w = w.take(b + "attn.q_norm.weight", {head_dim});
      block.q_norm_b = w.take(b + "attn.q_norm.bias", {head_dim});
      block.k_norm_w = w.take(b + "attn.k_norm.weight", {head_dim});
      block.k_norm_b = w.take(b + "attn.k_norm.bias", {head_dim});
    }
    block.rope = config.rope_start >= 0 && i >= config.rope_start;
    blocks_.push_back(std::move(block));
  }
}

std::array<std::string, 4> DinoV2Encoder::linear_names(int64_t i) const {
  const std::string b = prefix_ + "blocks." + std::to_string(i) + ".";
  if (config_.swiglu) {
    return {b + "attn.qkv", b + "attn.proj", b + "mlp.w12", b + "mlp.w3"};
  }
  return {b + "attn.qkv", b + "attn.proj", b + "mlp.fc1", b + "mlp.fc2"};
}

void DinoV2Encoder::prepared_weights(std::map<std::string, at::Tensor>& out) const {
  for (int64_t i = 0; i < static_cast<int64_t>(blocks_.size()); ++i) {
    const Block& block = blocks_[i];
    if (!block.qkv_q.defined()) {
      continue;
    }
    const std::string b = prefix_ + "blocks." + std::to_string(i) + ".";
    out[b + "norm1.weight"] = block.norm1_w;
    out[b + "norm1.bias"] = block.norm1_b;
    out[b + "norm2.weight"] = block.norm2_w;
    out[b + "norm2.bias"] = block.norm2_b;
    const std::array<std::string, 4> names = linear_names(i);
    const std::array<const Int8Linear*, 4> layers = block.int8_linears();
    for (size_t k = 0; k < names.size(); ++k) {
      const Int8Linear::Parts parts = layers[k]->parts();
      out[names[k] + ".int8_weight"] = parts.weight_t;
      out[names[k] + ".int8_scale"] = parts.scale;
      out[names[k] + ".bias"] = parts.bias;
    }
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

namespace {

// One half of a head (F channels) rotated by its position's angles: x cos + rotate(x) sin,
// rotate(x) = [-x2, x1] for the halves x1, x2 of x.
at::Tensor rope_1d(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  auto halves = x.chunk(2, -1);
  return x * cos + at::cat({-halves[1], halves[0]}, -1) * sin;
}

// The epsilon of the per-head QK LayerNorm (PyTorch's default: the reference builds it
// without one).
constexpr double kQkNormEps = 1e-5;

} // namespace

DinoV2Encoder::Rope DinoV2Encoder::rope_tables(const at::Tensor& rows, const at::Tensor& cols, at::ScalarType dtype)
    const {
  // Each half of a head (F = head_dim / 2 channels) turns at F/2 frequencies
  // base^(-2j/F), each used for two channels (the angles repeated).
  const int64_t half = config_.embed_dim / config_.num_heads / 2;
  const auto f32 = rows.options().dtype(at::kFloat);
  at::Tensor exponents = at::arange(0, half, 2, f32).div_(static_cast<double>(half));
  at::Tensor inv_freq = at::pow(config_.rope_frequency, exponents).reciprocal_();
  auto angles = [&](const at::Tensor& pos) {
    at::Tensor a = pos.to(at::kFloat).unsqueeze(1) * inv_freq.unsqueeze(0);
    return at::cat({a, a}, 1);
  };
  at::Tensor ay = angles(rows);
  at::Tensor ax = angles(cols);
  return {ay.cos().to(dtype), ay.sin().to(dtype), ax.cos().to(dtype), ax.sin().to(dtype)};
}

at::Tensor DinoV2Encoder::run_block(const Block& b, at::Tensor x, const Rope* rope) const {
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
  at::Tensor q = qkv[0];
  at::Tensor k = qkv[1];
  if (b.q_norm_w.defined()) {
    q = at::layer_norm(q, {head_dim}, b.q_norm_w, b.q_norm_b, kQkNormEps);
    k = at::layer_norm(k, {head_dim}, b.k_norm_w, b.k_norm_b, kQkNormEps);
  }
  // a block trained with rotary positions never runs without them (multi_view_layers gives them)
  SBSCONV_CHECK(!b.rope || rope != nullptr, Internal, "depth", "a rotary block ran without its position tables");
  if (b.rope) {
    auto rotate = [&](const at::Tensor& v) {
      auto halves = v.chunk(2, -1); // vertical, horizontal
      return at::cat({rope_1d(halves[0], rope->cos_y, rope->sin_y), rope_1d(halves[1], rope->cos_x, rope->sin_x)}, -1);
    };
    q = rotate(q);
    k = rotate(k);
  }
  // Note [int8 attention]: quantized blocks wherever the linear layers are int8.
  at::Tensor attn = b.qkv_q.defined() ? int8_attention(q, k, qkv[2]) : at::scaled_dot_product_attention(q, k, qkv[2]);
  attn = attn.transpose(1, 2).reshape({n, t, c});
  attn = linear(attn, b.proj_w, b.proj_b, b.proj_q);
  if (b.ls1.defined()) {
    attn.mul_(b.ls1);
  }
  x.add_(attn);

  h = at::layer_norm(x, {c}, b.norm2_w, b.norm2_b, eps);
  if (!config_.swiglu && b.fc1_q.defined() && b.fc2_q.defined()) {
    h = b.fc1_q.gelu_then(b.fc2_q, h); // Note [int8 MLP]
  } else {
    h = linear(h, b.fc1_w, b.fc1_b, b.fc1_q);
    if (config_.swiglu) {
      auto halves = h.chunk(2, -1);
      h = at::silu(halves[0]).mul_(halves[1]);
    } else {
      at::gelu_(h); // exact (erf) GELU, as the reference; in place: h is the layer's own output
    }
    h = linear(h, b.fc2_w, b.fc2_b, b.fc2_q);
  }
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
  return at::layer_norm(x, {c}, norm_w_, norm_b_, final_eps());
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
      at::Tensor normed = at::layer_norm(x, {c}, norm_w_, norm_b_, final_eps());
      out.push_back(normed.narrow(1, 1, gh * gw));
    }
  }
  return out;
}

} // namespace sbsconv

namespace sbsconv {

namespace {

// The reference view of each item ([B] long, on the tokens' device): cls is [B,S,C], the
// class tokens entering the block before alternation starts.
at::Tensor select_reference(const at::Tensor& cls, ReferenceView reference) {
  const int64_t batch = cls.size(0);
  const int64_t views = cls.size(1);
  const auto longs = cls.options().dtype(at::kLong);
  if (reference == ReferenceView::First) {
    return at::zeros({batch}, longs);
  }
  if (reference == ReferenceView::Middle) {
    return at::full({batch}, views / 2, longs);
  }
  // The most typical view: each of three measures (mean cosine similarity to the other views,
  // token norm, spread of the unit token) is scaled to [0,1] over the views, and the view
  // nearest the middle of all three wins.
  const at::Tensor f = cls.to(at::kFloat);
  const at::Tensor unit = f / f.norm(2, -1, true);
  const at::Tensor sim = at::matmul(unit, unit.transpose(1, 2)) - at::eye(views, unit.options()).unsqueeze(0);
  const at::Tensor similarity = sim.sum(-1) / static_cast<double>(views - 1);
  auto unit_range = [](const at::Tensor& m) {
    const at::Tensor lo = std::get<0>(m.min(1, true));
    const at::Tensor hi = std::get<0>(m.max(1, true));
    return (m - lo) / (hi - lo + 1e-8);
  };
  const at::Tensor score = (unit_range(similarity) - 0.5).abs() + (unit_range(f.norm(2, -1)) - 0.5).abs() +
      (unit_range(unit.var(-1)) - 0.5).abs();
  return score.argmin(1);
}

} // namespace

MultiViewFeatures DinoV2Encoder::multi_view_layers(
    const at::Tensor& input,
    int64_t views,
    const std::vector<int64_t>& layers,
    ReferenceView reference) {
  SBSCONV_CHECK(
      views >= 1 && input.dim() == 4 && input.size(0) % views == 0,
      Option,
      "depth",
      "the encoder input must hold whole groups of views");
  at::Tensor x = embed(input);
  const int64_t p = config_.patch_size;
  const int64_t gh = input.size(2) / p;
  const int64_t gw = input.size(3) / p;
  const int64_t bs = x.size(0);
  const int64_t batch = bs / views;
  const int64_t t = x.size(1);
  const int64_t c = config_.embed_dim;
  const auto longs = x.options().dtype(at::kLong);

  // Positions (row, column) for the rotary embedding: patches count from 1, the class/camera
  // token sits at 0. Across views every patch is at (1, 1): global attention sees no position
  // differences between patches, only the token apart.
  Rope local_rope;
  Rope global_rope;
  const bool rope = config_.rope_start >= 0;
  if (rope) {
    const at::Tensor zero = at::zeros({1}, longs);
    const at::Tensor rows = at::cat({zero, at::arange(gh, longs).repeat_interleave(gw) + 1});
    const at::Tensor cols = at::cat({zero, at::arange(gw, longs).repeat({gh}) + 1});
    local_rope = rope_tables(rows, cols, x.scalar_type());
    const at::Tensor flat = at::cat({zero, at::ones({gh * gw}, longs)}).repeat({views});
    global_rope = rope_tables(flat, flat, x.scalar_type());
  }

  const bool alternating = config_.alt_start >= 0;
  at::Tensor restore; // [B*S] flat indices back to the caller's view order, when reordered
  at::Tensor local_x;
  MultiViewFeatures out;
  const int64_t last = layers.empty() ? -1 : *std::max_element(layers.begin(), layers.end());
  for (int64_t i = 0; i <= last; ++i) {
    if (alternating && i == config_.alt_start - 1 && views >= 3) {
      // The reference view goes first (the rest keep their order); outputs are put back.
      const at::Tensor ref = select_reference(x.view({batch, views, t, c}).select(2, 0), reference).unsqueeze(1);
      const at::Tensor pos = at::arange(views, longs).unsqueeze(0).expand({batch, views});
      at::Tensor order = at::where((pos > 0) & (pos <= ref), pos - 1, pos);
      order.select(1, 0).copy_(ref.squeeze(1));
      at::Tensor back = at::where(pos < ref, pos + 1, pos).scatter(1, ref, at::zeros_like(ref));
      const at::Tensor base = (at::arange(batch, longs) * views).unsqueeze(1);
      x = x.index_select(0, (order + base).flatten());
      restore = (back + base).flatten();
    }
    if (alternating && i == config_.alt_start) {
      at::Tensor first = x.view({batch, views, t, c}).select(2, 0); // [B,S,C] view into x
      first.narrow(1, 0, 1).copy_(camera_token_.narrow(1, 0, 1).expand({batch, 1, c}));
      if (views > 1) {
        first.narrow(1, 1, views - 1).copy_(camera_token_.narrow(1, 1, 1).expand({batch, views - 1, c}));
      }
    }
    const bool global = alternating && i >= config_.alt_start && i % 2 == 1;
    if (global) {
      x = run_block(blocks_[i], x.view({batch, views * t, c}), rope ? &global_rope : nullptr).view({bs, t, c});
    } else {
      x = run_block(blocks_[i], x, rope ? &local_rope : nullptr);
      if (config_.cat_token) {
        local_x = x.clone(); // the next (global) block updates x in place
      }
    }
    if (std::find(layers.begin(), layers.end(), i) == layers.end()) {
      continue;
    }
    at::Tensor normed = at::layer_norm(x, {c}, norm_w_, norm_b_, final_eps());
    at::Tensor token = x.select(1, 0);
    if (config_.cat_token) {
      token = at::cat({local_x.select(1, 0), token}, -1);
      normed = at::cat({local_x, normed}, -1);
    } else {
      token = token.clone();
    }
    normed = normed.narrow(1, 1, t - 1);
    if (restore.defined()) {
      normed = normed.index_select(0, restore);
      token = token.index_select(0, restore);
    }
    out.tokens.push_back(normed.contiguous());
    out.camera_tokens.push_back(token);
  }
  return out;
}

} // namespace sbsconv
