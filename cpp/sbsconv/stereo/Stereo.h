#pragma once

#include <ATen/core/Tensor.h>

#include <string>

namespace sbsconv {

// Output arrangements of the two eyes.
enum class StereoLayout {
  FullSbs, // [left | right], 2W x H
  HalfSbs, // each eye squeezed to W/2: W x H
  FullTb, // left over right, W x 2H
  HalfTb, // each eye squeezed to H/2: W x H
  CrossEyed, // [right | left], 2W x H (free-viewing)
  AnaglyphDubois, // red-cyan, Dubois least-squares matrices in linear light
  AnaglyphColor, // red from the left eye, green and blue from the right
  AnaglyphGray, // red: left luma, green and blue: right luma
  Separate, // no packing: the two eyes
};

StereoLayout parse_layout(const std::string& name);
const char* layout_name(StereoLayout layout);

// Which eyes are synthesised: both (the source is the centre view, each eye moves by half the
// disparity), or one (the other eye is the source frame unchanged).
enum class SyntheticView { Both, Left, Right };
SyntheticView parse_synthetic_view(const std::string& name);

// How an eye's disocclusions (pixels the source frame hides) are filled: from other frames
// that saw them, falling back to the background side of the frame (Temporal: Note [Temporal
// fill] in stereo/TemporalFill.h; it needs the engine's frame history, and render_stereo on
// its own fills as Spatial); from the background side only (Spatial: Note [Occlusion-correct
// eye rendering]); or not at all, black, for an external inpainting step (None).
enum class Fill { Temporal, Spatial, None };
Fill parse_fill(const std::string& name);
const char* fill_name(Fill fill);

struct StereoOptions {
  StereoLayout layout = StereoLayout::FullSbs;
  SyntheticView synthetic_view = SyntheticView::Both;
  Fill fill = Fill::Temporal; // None: holes stay black (and are reported in the masks)
  int64_t edge_dilation = 0; // pixels; Note [Depth edges snapped to colour edges]
  // Eye size of the output (0 = the source size). With keep_aspect the picture is scaled to
  // fit and padded with black; sizes are rounded to even numbers for 4:2:0 encoding.
  int64_t eye_width = 0;
  int64_t eye_height = 0;
  bool keep_aspect = true;
  // The source's sample aspect ratio (pixel width / pixel height; 32/27 for a widescreen
  // NTSC DVD). Eyes are made of square pixels: without an eye size the eye is the source
  // shown at its display aspect ratio (width * pixel_aspect x height), and keep_aspect fits
  // the displayed picture, since headset players ignore a file's pixel aspect ratio.
  double pixel_aspect = 1.0;
  // VR180 (Note [VR180 projection]): each eye, rendered at the source's displayed size, is
  // re-projected from its rectilinear view (vr180_fov degrees wide) onto a square 180-degree
  // half-equirectangular canvas of vr180_canvas pixels a side (the eye size); the layout packs
  // the two canvases (FullSbs or FullTb).
  bool vr180 = false;
  int64_t vr180_canvas = 0;
  double vr180_fov = 60.0;
};

class Vr180Projector;
class TemporalFill;

struct StereoFrames {
  at::Tensor packed; // uint8 [N,3,H',W'] (undefined for Separate)
  at::Tensor left; // uint8 [N,3,h,w] eye images at the output eye size
  at::Tensor right;
  at::Tensor left_holes; // bool [N,1,H,W] at the source size (all false for a source eye)
  at::Tensor right_holes;
};

// Renders both eyes of every frame (see Note [Occlusion-correct eye rendering]) from a
// disparity map in pixels, and packs them. Everything runs on the frames' device.
// `projector` (VR180 only) keeps the projection grid between calls; a temporary one when null.
// `temporal` (with Fill::Temporal): the window of frames around these, numbered from
// `first_index`, that fills their holes (Note [Temporal fill]); without it Temporal fills as
// Spatial.
StereoFrames render_stereo(
    const at::Tensor& frames,
    const at::Tensor& disparity,
    const StereoOptions& options,
    Vr180Projector* projector = nullptr,
    TemporalFill* temporal = nullptr,
    int64_t first_index = 0);

// The size of one packed frame for a layout and eye size, {height, width}.
std::pair<int64_t, int64_t> packed_size(StereoLayout layout, int64_t eye_height, int64_t eye_width);
// {height, width} of each eye for source frames of height x width under `o` (eye size,
// pixel aspect ratio); packed_size() of it is the output frame's size.
std::pair<int64_t, int64_t> eye_size(const StereoOptions& o, int64_t height, int64_t width);

// Note [Infill masks]
// For users who inpaint disocclusions with a separate model (the metric-depth toolboxes'
// infill step): a picture packed like the 3D frame, black where the eye shows the source and
// coloured where its pixels were hidden in the source (render_stereo's holes, which the eye
// fills from the background side). The colour says on which side the background lies, as a
// direction (n + 1) / 2 in red and green: a left eye's holes have the background on their
// left (n = (-1, 0): RGB 0,128,0), a right eye's on their right (n = (+1, 0): RGB 255,128,0),
// whatever the convergence. Masks are scaled to the eye size conservatively: a packed pixel
// that covers any hole is marked.
at::Tensor infill_mask(const StereoFrames& eyes, const StereoOptions& options);

// Packs two eye images of equal size.
at::Tensor pack_eyes(const at::Tensor& left, const at::Tensor& right, StereoLayout layout);

// Normalised depth [N,1,H,W] in [0,1] (1 = nearest) -> uint8 RGB [N,3,H,W] with a perceptual
// colour map (dark blue-violet far, through red and orange, to pale yellow near), for depth
// previews and depth videos.
at::Tensor colorize_depth(const at::Tensor& depth);

// Scales uint8 frames to width x height (area-weighted when shrinking), optionally keeping the
// aspect ratio with black padding.
at::Tensor resize_frames(
    const at::Tensor& frames,
    int64_t width,
    int64_t height,
    bool keep_aspect,
    double pixel_aspect = 1.0);

} // namespace sbsconv
