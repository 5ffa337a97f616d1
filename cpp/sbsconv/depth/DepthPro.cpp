#include "sbsconv/depth/DepthPro.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "sbsconv/common/Error.h"

namespace sbsconv {

namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr double kDefaultFov = 60.0;

// Bilinear resize by a scale factor as F.interpolate(scale_factor=r) does: output
// floor(size * r), sampling with the factor as given.
at::Tensor rescale(const at::Tensor& x, double ratio) {
  const auto h = static_cast<int64_t>(std::floor(static_cast<double>(x.size(2)) * ratio));
  const auto w = static_cast<int64_t>(std::floor(static_cast<double>(x.size(3)) * ratio));
  return at::upsample_bilinear2d(x, {h, w}, false, ratio, ratio);
}

at::Tensor resize(const at::Tensor& x, int64_t h, int64_t w) {
  if (x.size(2) == h && x.size(3) == w) {
    return x;
  }
  return at::upsample_bilinear2d(x, {h, w}, false);
}

// Tiles of `tile` pixels with the given overlap, tile-major then batch ([L*B,3,t,t]), as
// F.unfold enumerates them.
at::Tensor split_tiles(const at::Tensor& x, int64_t tile, double overlap) {
  if (x.size(2) == tile && x.size(3) == tile) {
    return x;
  }
  const auto stride = static_cast<int64_t>(static_cast<double>(tile) * (1.0 - overlap));
  SBSCONV_CHECK(stride > 0 && x.size(2) >= tile && x.size(3) >= tile, Option, "depth",
                "the image is too small for Depth Pro's tiles");
  const int64_t rows = (x.size(2) - tile) / stride + 1;
  const int64_t cols = (x.size(3) - tile) / stride + 1;
  std::vector<at::Tensor> tiles;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      tiles.push_back(x.narrow(2, r * stride, tile).narrow(3, c * stride, tile));
    }
  }
  return at::cat(tiles);
}

} // namespace

DepthPro::DepthPro(std::string name, const DepthProConfig& config, const WeightMap& weights, const ModelOptions& options)
    : name_(std::move(name)), config_(config), options_(options) {
  const auto levels = config.ratios.size();
  SBSCONV_CHECK(levels >= 1 && config.overlaps.size() == levels && config.scaled_dims.size() == levels, Model,
                "build model", "Depth Pro's pyramid ratios, overlaps and feature sizes must match");
  SBSCONV_CHECK(config.hook_ids.size() == config.hook_dims.size(), Model, "build model",
                "Depth Pro's hook ids and hook feature sizes must match");
  for (int64_t id : config.hook_ids) {
    SBSCONV_CHECK(id >= 0 && id < config.patch_vit.depth, Model, "build model", "a Depth Pro hook is outside the encoder");
  }
  WeightReader w(weights, options.device, options.dtype, name_);
  auto take = [&](const std::string& key, std::vector<int64_t> shape, bool bias) {
    Conv c;
    // Convolutions run channels-last (what oneDNN and cuDNN run fastest); same results.
    c.weight = w.take(key + ".weight", shape).contiguous(at::MemoryFormat::ChannelsLast);
    if (bias) {
      c.bias = w.take(key + ".bias", {shape[0]});
    }
    return c;
  };
  auto take_t = [&](const std::string& key, int64_t in, int64_t out, bool bias) {
    Conv c;
    c.weight = w.take(key + ".weight", {in, out, 2, 2}); // ConvTranspose2d: [in, out, k, k]
    if (bias) {
      c.bias = w.take(key + ".bias", {out});
    }
    return c;
  };
  patch_vit_ = std::make_unique<DinoV2Encoder>(config.patch_vit, w, "depth_pro.encoder.patch_encoder.model.");
  image_vit_ = std::make_unique<DinoV2Encoder>(config.image_vit, w, "depth_pro.encoder.image_encoder.model.");
  if (options.int8) { // Note [int8 linear layers]
    patch_vit_->quantize_linears();
    image_vit_->quantize_linears();
  }
  const int64_t hidden = config.patch_vit.embed_dim;
  const int64_t image_hidden = config.image_vit.embed_dim;
  const std::string up = "depth_pro.neck.feature_upsample.";
  image_up_ = take_t(up + "image_block.layers.0", image_hidden, config.scaled_dims[0], true);
  for (size_t i = 0; i < levels; ++i) {
    const int64_t d = config.scaled_dims[i];
    const std::string k = up + "scaled_images." + std::to_string(i) + ".layers.";
    scaled_up_.push_back({take(k + "0", {d, hidden, 1, 1}, false), take_t(k + "1", d, d, false)});
  }
  for (size_t i = 0; i < config.hook_ids.size(); ++i) {
    const int64_t d = config.hook_dims[i];
    const int64_t mid = i == 0 ? config.fusion : d;
    const std::string k = up + "intermediate." + std::to_string(i) + ".layers.";
    std::vector<Conv> block{take(k + "0", {mid, hidden, 1, 1}, false)};
    for (size_t j = 0; j < 2 + i; ++j) {
      block.push_back(take_t(k + std::to_string(j + 1), j == 0 ? mid : d, d, false));
    }
    hook_up_.push_back(std::move(block));
  }
  const int64_t d0 = config.scaled_dims[0];
  fuse_lowres_ = take("depth_pro.neck.fuse_image_with_low_res", {d0, 2 * d0, 1, 1}, true);
  std::vector<int64_t> combined = config.scaled_dims;
  combined.insert(combined.end(), config.hook_dims.begin(), config.hook_dims.end());
  const int64_t f = config.fusion;
  for (size_t i = 0; i < combined.size(); ++i) {
    if (i == combined.size() - 1 && combined[i] == f) {
      projections_.emplace_back(); // identity
    } else {
      projections_.push_back(
          take("depth_pro.neck.feature_projection.projections." + std::to_string(i), {f, combined[i], 3, 3}, false));
    }
  }
  for (size_t i = 0; i < combined.size(); ++i) {
    const bool last = i + 1 == combined.size();
    const std::string k = last ? std::string("fusion_stage.final.") : "fusion_stage.intermediate." + std::to_string(i) + ".";
    Fusion fusion;
    for (int r = 1; r <= 2; ++r) {
      Residual& res = r == 1 ? fusion.res1 : fusion.res2;
      const std::string rk = k + "residual_layer" + std::to_string(r) + ".";
      res.conv1 = take(rk + "convolution1", {f, f, 3, 3}, config.fusion_bias);
      res.conv2 = take(rk + "convolution2", {f, f, 3, 3}, config.fusion_bias);
    }
    if (!last) {
      fusion.deconv = take_t(k + "deconv", f, f, false);
    }
    fusion.projection = take(k + "projection", {f, f, 1, 1}, true);
    fusions_.push_back(std::move(fusion));
  }
  head_.push_back(take("head.layers.0", {f / 2, f, 3, 3}, true));
  head_.push_back(take_t("head.layers.1", f / 2, f / 2, true));
  head_.push_back(take("head.layers.2", {32, f / 2, 3, 3}, true));
  head_.push_back(take("head.layers.4", {1, 32, 1, 1}, true));
  if (config.use_fov) {
    fov_vit_ = std::make_unique<DinoV2Encoder>(config.fov_vit, w, "fov_model.fov_encoder.model.");
    if (options.int8) {
      fov_vit_->quantize_linears();
    }
    fov_neck_.weight = w.take("fov_model.fov_encoder.neck.weight", {f / 2, config.fov_vit.embed_dim});
    fov_neck_.bias = w.take("fov_model.fov_encoder.neck.bias", {f / 2});
    fov_conv_ = take("fov_model.conv", {f / 2, f, 3, 3}, true);
    const int64_t out_size = config.tile / config.image_vit.patch_size;
    for (int64_t i = 0; i < config.fov_head_layers; ++i) {
      const auto in = static_cast<int64_t>(std::ceil(static_cast<double>(f) / std::pow(2.0, i + 1)));
      const auto out = static_cast<int64_t>(std::ceil(static_cast<double>(f) / std::pow(2.0, i + 2)));
      fov_head_.push_back(take("fov_model.head.layers." + std::to_string(2 * i), {out, in, 3, 3}, true));
    }
    const auto in = static_cast<int64_t>(std::ceil(static_cast<double>(f) / std::pow(2.0, config.fov_head_layers + 1)));
    const auto kernel = static_cast<int64_t>(
        static_cast<double>(out_size - 1) / std::pow(2.0, config.fov_head_layers) + 1);
    fov_head_.push_back(
        take("fov_model.head.layers." + std::to_string(2 * config.fov_head_layers), {1, in, kernel, kernel}, true));
  } else {
    w.ignore_prefix("fov_model.");
  }
  // The first fusion layer has no skip input: its first residual unit is stored but unused.
  w.ignore_prefix("fusion_stage.intermediate.0.residual_layer1.");
  w.check();
}

at::Tensor DepthPro::reconstruct(const at::Tensor& tokens, int64_t batch, int64_t padding, int64_t out_h, int64_t out_w)
    const {
  // Drop the class token, tokens to a square grid, tiles back into one map (trimming the
  // overlap on interior edges), then to the level's size.
  const int64_t n = tokens.size(0), seq = tokens.size(1), c = tokens.size(2);
  const auto s = static_cast<int64_t>(std::sqrt(static_cast<double>(seq)));
  at::Tensor maps = tokens.narrow(1, seq - s * s, s * s).reshape({n, s, s, c}).permute({0, 3, 1, 2});
  at::Tensor merged;
  if (n == batch) {
    merged = maps;
  } else {
    const int64_t per = n / batch;
    const auto side = static_cast<int64_t>(std::sqrt(static_cast<double>(per)));
    if (per < 4) {
      padding = 0;
    }
    padding = std::min(s / 4, padding);
    if (padding == 0) {
      merged = maps.reshape({per, batch, c, s, s})
                   .permute({1, 2, 0, 3, 4})
                   .narrow(2, 0, side * side)
                   .reshape({batch, c, side, side, s, s})
                   .permute({0, 1, 2, 4, 3, 5})
                   .reshape({batch, c, side * s, side * s});
    } else {
      std::vector<at::Tensor> rows;
      for (int64_t r = 0; r < side; ++r) {
        std::vector<at::Tensor> row;
        for (int64_t col = 0; col < side; ++col) {
          at::Tensor box = maps.narrow(0, batch * (r * side + col), batch);
          const int64_t top = r != 0 ? padding : 0;
          const int64_t bottom = r != side - 1 ? padding : 0;
          const int64_t left = col != 0 ? padding : 0;
          const int64_t right = col != side - 1 ? padding : 0;
          row.push_back(box.narrow(2, top, s - top - bottom).narrow(3, left, s - left - right));
        }
        rows.push_back(at::cat(row, 3));
      }
      merged = at::cat(rows, 2);
    }
  }
  return resize(merged.contiguous(at::MemoryFormat::ChannelsLast), out_h, out_w);
}

at::Tensor DepthPro::fuse(const Fusion& f, at::Tensor x, const at::Tensor* skip) const {
  auto residual = [](const Residual& r, const at::Tensor& in) {
    at::Tensor h = at::conv2d(at::relu(in), r.conv1.weight, r.conv1.bias, 1, 1);
    h = at::conv2d(h.relu_(), r.conv2.weight, r.conv2.bias, 1, 1);
    return h.add_(in);
  };
  if (skip != nullptr) {
    x = x + residual(f.res1, *skip);
  }
  x = residual(f.res2, x);
  if (f.deconv.weight.defined()) {
    x = at::conv_transpose2d(x, f.deconv.weight, {}, 2);
  }
  return at::conv2d(x, f.projection.weight, f.projection.bias);
}

std::pair<at::Tensor, at::Tensor> DepthPro::forward_with_fov(const at::Tensor& pixel_values) {
  at::InferenceMode guard;
  SBSCONV_CHECK(pixel_values.dim() == 4 && pixel_values.size(1) == 3, Option, "depth", "pixel_values must be [N,3,h,w]");
  at::Tensor x = pixel_values.to(options_.device, options_.dtype);
  const int64_t batch = x.size(0), h = x.size(2), w = x.size(3);
  const auto& c = config_;
  const auto levels = static_cast<int64_t>(c.ratios.size());
  double smallest = c.ratios[0];
  for (double r : c.ratios) {
    smallest = std::min(smallest, r);
  }
  SBSCONV_CHECK(smallest * static_cast<double>(std::min(h, w)) >= static_cast<double>(c.tile), Option, "depth",
                "the input is too small for Depth Pro's pyramid");
  // ---- encoder: all tiles of all levels through the patch ViT as one batch, high-res first
  std::vector<at::Tensor> tiles(levels);
  std::vector<int64_t> counts(levels);
  for (int64_t i = 0; i < levels; ++i) {
    at::Tensor level = c.ratios[i] == 1.0 ? x : rescale(x, c.ratios[i]);
    tiles[i] = split_tiles(level, c.tile, c.overlaps[i]);
    counts[i] = tiles[i].size(0);
  }
  std::vector<at::Tensor> reversed(tiles.rbegin(), tiles.rend());
  std::vector<at::Tensor> hooked;
  at::Tensor encoded = patch_vit_->forward_features(at::cat(reversed), c.hook_ids, &hooked);
  const int64_t out_size = c.tile / c.patch_vit.patch_size;
  const auto exponent = static_cast<int64_t>(std::log2(static_cast<double>(w) / static_cast<double>(out_size)));
  const int64_t base_h = h / (int64_t{1} << exponent), base_w = w / (int64_t{1} << exponent);
  std::vector<at::Tensor> features; // [image, level 0..n-1, hooks...]
  {
    at::Tensor resized = resize(x, c.tile, c.tile);
    at::Tensor image = image_vit_->forward_features(resized, {}, nullptr);
    features.push_back(reconstruct(image, batch, 0, base_h, base_w));
  }
  std::vector<at::Tensor> level_features(levels);
  for (int64_t i = levels - 1, start = 0; i >= 0; --i) {
    level_features[i] = encoded.narrow(0, start, counts[i]);
    start += counts[i];
  }
  for (int64_t i = 0; i < levels; ++i) {
    const auto padding = static_cast<int64_t>(static_cast<double>(c.merge_padding) * (1.0 / c.ratios[i]));
    features.push_back(reconstruct(level_features[i], batch, padding, base_h << i, base_w << i));
  }
  for (size_t k = 0; k < c.hook_ids.size(); ++k) {
    const auto padding = static_cast<int64_t>(static_cast<double>(c.merge_padding) * (1.0 / c.ratios.back()));
    features.push_back(reconstruct(hooked[k], batch, padding, base_h << (levels - 1), base_w << (levels - 1)));
  }
  // ---- neck: upsample each, fuse the global features with the lowest level, project
  features[0] = at::conv_transpose2d(features[0], image_up_.weight, image_up_.bias, 2);
  for (int64_t i = 0; i < levels; ++i) {
    at::Tensor& f = features[1 + i];
    f = at::conv2d(f, scaled_up_[i][0].weight);
    f = at::conv_transpose2d(f, scaled_up_[i][1].weight, {}, 2);
  }
  for (size_t k = 0; k < hook_up_.size(); ++k) {
    at::Tensor& f = features[1 + levels + k];
    f = at::conv2d(f, hook_up_[k][0].weight);
    for (size_t j = 1; j < hook_up_[k].size(); ++j) {
      f = at::conv_transpose2d(f, hook_up_[k][j].weight, {}, 2);
    }
  }
  std::vector<at::Tensor> pyramid;
  pyramid.push_back(at::conv2d(at::cat({features[1], features[0]}, 1), fuse_lowres_.weight, fuse_lowres_.bias));
  pyramid.insert(pyramid.end(), features.begin() + 2, features.end());
  for (size_t i = 0; i < pyramid.size(); ++i) {
    if (projections_[i].weight.defined()) {
      pyramid[i] = at::conv2d(pyramid[i], projections_[i].weight, {}, 1, 1);
    }
  }
  // ---- decoder and head
  at::Tensor fused = fuse(fusions_[0], pyramid[0], nullptr);
  for (size_t i = 1; i < pyramid.size(); ++i) {
    fused = fuse(fusions_[i], fused, &pyramid[i]);
  }
  at::Tensor out = at::conv2d(fused, head_[0].weight, head_[0].bias, 1, 1);
  out = at::conv_transpose2d(out, head_[1].weight, head_[1].bias, 2);
  out = at::conv2d(out, head_[2].weight, head_[2].bias, 1, 1).relu_();
  out = at::conv2d(out, head_[3].weight, head_[3].bias).relu_();
  // ---- field of view
  at::Tensor fov;
  if (fov_vit_) {
    at::Tensor tokens = fov_vit_->forward_features(resize(x, c.tile, c.tile), {}, nullptr);
    tokens = at::linear(tokens, fov_neck_.weight, fov_neck_.bias);
    at::Tensor f = reconstruct(tokens, batch, 0, base_h, base_w);
    f = f + at::conv2d(pyramid[0], fov_conv_.weight, fov_conv_.bias, 2, 1).relu_();
    f = resize(f, out_size, out_size);
    for (size_t i = 0; i + 1 < fov_head_.size(); ++i) {
      f = at::conv2d(f, fov_head_[i].weight, fov_head_[i].bias, 2, 1).relu_();
    }
    fov = at::conv2d(f, fov_head_.back().weight, fov_head_.back().bias).flatten();
  }
  return {out, fov};
}

at::Tensor DepthPro::forward(const at::Tensor& pixel_values) {
  return forward_with_fov(pixel_values).first;
}

DepthOutput DepthPro::infer(const at::Tensor& frames) {
  at::InferenceMode guard;
  SBSCONV_CHECK(frames.dim() == 4 && frames.size(1) == 3 && frames.scalar_type() == at::kByte, Option, "depth",
                "frames must be uint8 RGB [N,3,H,W]");
  const int64_t n = frames.size(0), fh = frames.size(2), fw = frames.size(3);
  // [0,1] -> [-1,1], then the square input (bilinear, no antialiasing), in float32
  at::Tensor x = frames.to(options_.device).to(at::kFloat).div_(255.0).sub_(0.5).div_(0.5);
  x = resize(x.contiguous(), config_.image_size, config_.image_size);
  auto [canonical, fov] = forward_with_fov(x);
  at::Tensor degrees;
  if (fov_degrees_) {
    degrees = at::full({n}, *fov_degrees_, at::TensorOptions().dtype(at::kFloat).device(options_.device));
  } else if (fov.defined()) {
    degrees = fov.to(at::kFloat);
  } else {
    degrees = at::full({n}, kDefaultFov, at::TensorOptions().dtype(at::kFloat).device(options_.device));
  }
  // f_px = 0.5 W / tan(fov / 2); inverse depth = canonical * W / f_px
  at::Tensor focal = at::tan(degrees * (kPi / 360.0)).reciprocal_().mul_(0.5 * static_cast<double>(fw));
  at::Tensor inverse = canonical.to(at::kFloat) * (static_cast<double>(fw) / focal).view({n, 1, 1, 1});
  inverse = resize(inverse, fh, fw);
  DepthOutput out;
  out.depth = inverse.clamp(1e-4, 1e4).reciprocal_().contiguous();
  out.fov_degrees = degrees;
  return out;
}

std::map<std::string, at::Tensor> DepthPro::prepared_weights() const {
  std::map<std::string, at::Tensor> out;
  for (const auto* vit : {patch_vit_.get(), image_vit_.get(), fov_vit_.get()}) {
    if (vit != nullptr) {
      vit->prepared_weights(out);
    }
  }
  return out;
}

} // namespace sbsconv
