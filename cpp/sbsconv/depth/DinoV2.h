#pragma once

#include <ATen/core/Tensor.h>

#include "sbsconv/depth/Int8Linear.h"

#include <array>
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
  // Depth Anything 3's additions (Note [Depth Anything 3 backbone]); all off, the encoder is
  // the plain DINOv2 of Depth-Anything-V2.
  int64_t alt_start = -1; // from this block on, odd blocks attend across all views at once
  int64_t qknorm_start = -1; // from this block on, q and k are LayerNormed per head
  int64_t rope_start = -1; // from this block on, q and k carry a 2D rotary position embedding
  double rope_frequency = 100.0;
  bool cat_token = false; // outputs are [last per-view tokens, normed tokens] (2C wide)
  double final_norm_eps = -1.0; // the final norm's epsilon; < 0: layer_norm_eps
};

// How Depth Anything 3 picks the view whose camera token is the reference (the others are
// posed relative to it), when three or more views are given.
enum class ReferenceView {
  First,
  Middle,
  SaddleBalanced, // the view whose class token is most typical by similarity, norm and spread
};

// Depth Anything 3's backbone output: for each layer asked, the tokens without the class token
// ([B*S, N, C'], C' = 2C with cat_token) and the class/camera token ([B*S, C'], not normed).
struct MultiViewFeatures {
  std::vector<at::Tensor> tokens;
  std::vector<at::Tensor> camera_tokens;
};

// Note [Prepared int8 weights]: the version of what prepared_weights() holds.
constexpr int64_t kPreparedInt8Format = 1;

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

  // Note [Depth Anything 3 backbone]
  // x is [B*S,3,h,w]: B items of S views each, consecutive. The DINOv2 blocks run as usual
  // until alt_start; from there odd blocks attend across the S views of an item at once (one
  // sequence of S*(1+N) tokens), even blocks within each view. At alt_start the class token of
  // every view is replaced by a learnt camera token: one for the reference view, another for
  // all others. With three or more views the reference view is chosen first (the block before
  // alt_start: by the class tokens, ReferenceView) and moved to the front, the others keeping
  // their order; the outputs are put back in the caller's order. From qknorm_start q and k are
  // LayerNormed per head; from rope_start they carry a 2D rotary embedding: the first half of
  // each head turns with the token's row, the second with its column (patches counted from 1,
  // the camera token at 0); across views every patch sits at (1, 1), so that global attention
  // sees no position differences between patches, only the camera token apart. Each output is
  // [tokens of the last per-view block, final-normed tokens] (cat_token), its camera token
  // unnormed. Exchanging two views other than the reference exchanges their outputs.
  MultiViewFeatures multi_view_layers(
      const at::Tensor& x,
      int64_t views,
      const std::vector<int64_t>& layers,
      ReferenceView reference);

  const VitConfig& config() const {
    return config_;
  }

  // Note [int8 linear layers]: from now on every block's qkv, projection and MLP layers run
  // as int8 GEMMs (their float weights are dropped). CPU, float32 weights only.
  void quantize_linears();

  // Note [Prepared int8 weights]
  // Quantizing a large encoder at load takes longer than reading it (DINOv2-L: about 1.4 s on
  // two cores), so the loader keeps what quantize_linears() made (python/sbsconv/models/
  // prepared.py). prepared_weights() adds to `out`, under the checkpoint's own names, every
  // quantized block's balanced norms (norm1/norm2 .weight/.bias) and, for each linear layer L,
  // L.int8_weight (int8 [in, out]), L.int8_scale and L.bias (float32 [out]). A checkpoint that
  // holds these keys in place of L.weight builds those blocks already quantized (a block is
  // prepared whole or not at all), and quantize_linears() leaves them as they are; the result
  // computes exactly what the quantized model that wrote them computes. CPU only.
  // kPreparedInt8Format names what they hold: bump it whenever quantize_linears(),
  // balance_layer_norm or Int8Linear's quantization changes, so that no cache made by the old
  // code is read (the loader's key carries it).
  void prepared_weights(std::map<std::string, at::Tensor>& out) const;

 private:
  struct Block {
    at::Tensor norm1_w, norm1_b, qkv_w, qkv_b, proj_w, proj_b, ls1;
    at::Tensor norm2_w, norm2_b, fc1_w, fc1_b, fc2_w, fc2_b, ls2;
    Int8Linear qkv_q, proj_q, fc1_q, fc2_q; // defined after quantize_linears()
    std::array<at::Tensor*, 4> linear_weights() {
      return {&qkv_w, &proj_w, &fc1_w, &fc2_w};
    }
    std::array<at::Tensor*, 4> linear_biases() {
      return {&qkv_b, &proj_b, &fc1_b, &fc2_b};
    }
    std::array<const Int8Linear*, 4> int8_linears() const {
      return {&qkv_q, &proj_q, &fc1_q, &fc2_q};
    }
    std::array<Int8Linear*, 4> int8_linears() {
      return {&qkv_q, &proj_q, &fc1_q, &fc2_q};
    }
    at::Tensor q_norm_w, q_norm_b, k_norm_w, k_norm_b; // QK-norm (Depth Anything 3)
    bool rope = false;
  };
  // Rotary tables per token: cos and sin for the vertical and the horizontal half of each head.
  struct Rope {
    at::Tensor cos_y, sin_y, cos_x, sin_x; // [T, head_dim / 2]
  };
  Rope rope_tables(const at::Tensor& rows, const at::Tensor& cols, at::ScalarType dtype) const;
  at::Tensor position_table(int64_t grid_h, int64_t grid_w, at::ScalarType dtype);
  at::Tensor run_block(const Block& block, at::Tensor x, const Rope* rope = nullptr) const;
  // Patch embedding, class token and position table: the tokens entering block 0.
  at::Tensor embed(const at::Tensor& input);

  double final_eps() const {
    return config_.final_norm_eps > 0 ? config_.final_norm_eps : config_.layer_norm_eps;
  }

  // Block i's four linear layers' checkpoint names (qkv, projection, MLP in and out), without
  // ".weight" / ".bias".
  std::array<std::string, 4> linear_names(int64_t i) const;

  VitConfig config_;
  std::string prefix_;
  at::Tensor patch_w_, patch_b_, cls_token_, pos_embed_, norm_w_, norm_b_;
  at::Tensor camera_token_; // [1,2,C]: the reference view's and the others' (alt_start >= 0)
  std::vector<Block> blocks_;
  int64_t pos_grid_ = 0;
  std::map<std::pair<int64_t, int64_t>, at::Tensor> pos_cache_;
};

} // namespace sbsconv
