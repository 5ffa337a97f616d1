#include "sbsconv/pipeline/FrameSelector.h"

#include <algorithm>
#include <cmath>

#include "sbsconv/common/Error.h"

namespace sbsconv {

namespace {
double seconds_of(Rational r) {
  return static_cast<double>(r.num) / static_cast<double>(r.den);
}
} // namespace

FrameSelector::FrameSelector(Options options) : o_(std::move(options)) {
  SBSCONV_CHECK(
      o_.source_time_base.num > 0 && o_.source_time_base.den > 0, Option, "decode", "invalid source time base");
  SBSCONV_CHECK(
      !o_.fps || (o_.fps->num > 0 && o_.fps->den > 0), Option, "decode", "fps must be a positive fraction");
  SBSCONV_CHECK(o_.preview_every >= 0 && std::isfinite(o_.preview_every), Option, "decode", "preview_every must be >= 0");
  tb_ = seconds_of(o_.source_time_base);
  out_tb_ = seconds_of(time_base());
  origin_ticks_ = static_cast<int64_t>(std::llround(o_.origin / out_tb_));
}

Rational FrameSelector::time_base() const {
  if (o_.preview_every > 0) {
    return Rational{1, 1};
  }
  if (o_.fps) {
    return Rational{o_.fps->den, o_.fps->num};
  }
  return o_.source_time_base;
}

Rational FrameSelector::frame_rate() const {
  if (o_.preview_every > 0) {
    return Rational{1, 1};
  }
  if (o_.fps) {
    return *o_.fps;
  }
  return o_.source_frame_rate;
}

void FrameSelector::push(const at::Tensor& frame, int64_t source_pts, std::vector<SelectedFrame>& out) {
  const double t = static_cast<double>(source_pts) * tb_;
  if (o_.preview_every > 0) {
    // The first frame at or after each slot time, shown for one second.
    if (t + 0.5 * tb_ >= o_.origin + static_cast<double>(slot_) * o_.preview_every) {
      out.push_back(SelectedFrame{frame, origin_ticks_ + slot_, source_pts});
      slot_ = static_cast<int64_t>(std::floor((t - o_.origin) / o_.preview_every + 1e-9)) + 1;
    }
  } else if (o_.fps) {
    // Each output slot shows the frame on screen at its time.
    if (held_) {
      while (o_.origin + static_cast<double>(slot_) * out_tb_ < t - 0.5 * tb_) {
        out.push_back(SelectedFrame{held_->frame, origin_ticks_ + slot_, held_->source_pts});
        ++slot_;
      }
    }
    held_ = SelectedFrame{frame, 0, source_pts};
  } else {
    out.push_back(SelectedFrame{frame, source_pts, source_pts});
  }
}

void FrameSelector::finish(std::vector<SelectedFrame>& out) {
  if (!held_) {
    return;
  }
  // The last frame lasts its duration, up to the window's end.
  const double rate = o_.source_frame_rate.num > 0 && o_.source_frame_rate.den > 0 ? seconds_of(o_.source_frame_rate) : 25.0;
  double end = static_cast<double>(held_->source_pts) * tb_ + 1.0 / rate;
  if (o_.end_time) {
    end = std::min(end, *o_.end_time);
  }
  while (o_.origin + static_cast<double>(slot_) * out_tb_ < end - 0.5 * tb_) {
    out.push_back(SelectedFrame{held_->frame, origin_ticks_ + slot_, held_->source_pts});
    ++slot_;
  }
  held_.reset();
}

FrameCountEstimate::FrameCountEstimate(double span, int64_t nominal, int64_t before)
    : span_(span), nominal_(nominal), before_(before) {}

int64_t FrameCountEstimate::observe(double seconds) {
  if (seen_ == 0) {
    first_ = seconds;
  }
  last_ = std::max(last_, seconds);
  ++seen_;
  return current();
}

int64_t FrameCountEstimate::current() const {
  // Trust the frames once they cover a second and a dozen frames; before that, the container.
  const double covered = last_ - first_;
  if (span_ > 0 && seen_ >= 12 && covered >= 1.0) {
    const double rate = static_cast<double>(seen_ - 1) / covered;
    const double remaining = std::max(0.0, span_ - last_ - 0.5 / rate);
    return before_ + seen_ + static_cast<int64_t>(std::llround(remaining * rate));
  }
  if (nominal_ < 0) {
    return -1;
  }
  return std::max(nominal_, before_ + seen_);
}

} // namespace sbsconv
