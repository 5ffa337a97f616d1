#pragma once

#include <ATen/core/Tensor.h>

#include "sbsconv/depth/Int8Linear.h"

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "sbsconv/depth/Weights.h"

namespace sbsconv {

// How the position table (a square grid learnt at one image size) is resized to another
// patch grid. The two references differ, and each checkpoint layout is matched to its own.
enum class PosEmbedResize {
  // The original DINOv2 code (Depth-Anything-V2's .pth checkpoints): bicubic with
  // scale_factor = (grid + 0.1) / sqrt(N), the scale factors themselves used for sampling.
  ScaleFactorWithOffset,
  // transformers' Dinov2: bicubic to exactly the target grid size.
  ExactSize,
};

struct VitConfig {
  int64_t embed_dim = 384;
  int64_t depth = 12;
  int64_t num_heads = 6;
  int64_t mlp_hidden = 1536; // MLP hidden size (SwiGLU: the hidden size of each half)
  bool swiglu = false; // vitg uses a SwiGLU feed-forward (w12, w3)
  int64_t patch_size = 14;
  double layer_norm_eps = 1e-6;
  bool layer_scale = true;
  PosEmbedResize pos_embed_resize = PosEmbedResize::ScaleFactorWithOffset;
  double interpolate_offset = 0.1;
};

// The deepest encoder a checkpoint may describe (ViT-g has 40 blocks).
constexpr int64_t kMaxVitDepth = 128;

// Throws a Model error unless every size is usable (all at least 1, embed_dim a multiple of
// num_heads, nothing beyond any real DINOv2).
void check_vit_config(const VitConfig& config);

// The DINOv2 vision transformer encoder as Depth-Anything uses it: patch embedding, class
// token, interpolated position table, pre-norm blocks with layer scale, and the shared final
// norm applied to the intermediate layers the head reads. Parameters are read with the
// original key names under `prefix` ("pretrained.").
//
// Threading: not thread-safe (caches the resized position table); one owner.
class DinoV2Encoder {
 public:
  DinoV2Encoder(const VitConfig& config, WeightReader& weights, const std::string& prefix);

  // x: normalised [N,3,h,w], h and w multiples of the patch size. Returns, for each index in
  // `layers` (0-based block indices), the final-normed tokens without the class token:
  // [N, (h/p)*(w/p), C].
  std::vector<at::Tensor> intermediate_layers(const at::Tensor& x, const std::vector<int64_t>& layers);

  // The timm/transformers forward: x [N,3,h,w] -> the final-normed tokens with the class token
  // ([N, 1+(h/p)*(w/p), C]); `hooks` (0-based block indices) receive the raw outputs of those
  // blocks (before the final norm, with the class token), in the order asked.
  at::Tensor forward_features(const at::Tensor& x, const std::vector<int64_t>& hooks, std::vector<at::Tensor>* hooked);

  const VitConfig& config() const {
    return config_;
  }

  // Note [int8 linear layers]: from now on every block's qkv, projection and MLP layers run
  // as int8 GEMMs (their float weights are dropped). CPU, float32 weights only.
  void quantize_linears();

 private:
  struct Block {
    at::Tensor norm1_w, norm1_b, qkv_w, qkv_b, proj_w, proj_b, ls1;
    at::Tensor norm2_w, norm2_b, fc1_w, fc1_b, fc2_w, fc2_b, ls2;
    Int8Linear qkv_q, proj_q, fc1_q, fc2_q; // defined after quantize_linears()
  };
  at::Tensor position_table(int64_t grid_h, int64_t grid_w, at::ScalarType dtype);
  at::Tensor run_block(const Block& block, at::Tensor x) const;
  // Patch embedding, class token and position table: the tokens entering block 0.
  at::Tensor embed(const at::Tensor& input);

  VitConfig config_;
  at::Tensor patch_w_, patch_b_, cls_token_, pos_embed_, norm_w_, norm_b_;
  std::vector<Block> blocks_;
  int64_t pos_grid_ = 0;
  std::map<std::pair<int64_t, int64_t>, at::Tensor> pos_cache_;
};

} // namespace sbsconv
