#include "sbsconv/media/ImageFile.h"

#include <ATen/ATen.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "sbsconv/common/FFmpeg.h"

namespace sbsconv {

std::string encode_picture(
    AVCodecID id,
    AVPixelFormat format,
    int width,
    int height,
    const std::function<void(AVFrame* picture)>& fill,
    const std::map<std::string, std::string>& options,
    const char* stage,
    const std::string& path) {
  install_ffmpeg_log_handler();
  const AVCodec* codec = avcodec_find_encoder(id);
  SBSCONV_CHECK(codec != nullptr, Encode, stage, std::string("this FFmpeg has no ") + avcodec_get_name(id) + " encoder");
  UniqueAVCodecContext context(avcodec_alloc_context3(codec));
  SBSCONV_CHECK(context != nullptr, Internal, stage, "avcodec_alloc_context3 failed");
  context->width = width;
  context->height = height;
  context->pix_fmt = format;
  context->time_base = AVRational{1, 1};
  AVDictionary* raw = nullptr;
  for (const auto& [key, value] : options) {
    av_dict_set(&raw, key.c_str(), value.c_str(), 0);
  }
  const int opened = avcodec_open2(context.get(), codec, &raw);
  av_dict_free(&raw);
  SBSCONV_CHECK_AV(opened, Encode, stage, std::string("cannot open the ") + avcodec_get_name(id) + " encoder", path);
  UniqueAVFrame picture = make_frame();
  picture->format = format;
  picture->width = width;
  picture->height = height;
  SBSCONV_CHECK_AV(av_frame_get_buffer(picture.get(), 0), Encode, stage, "frame allocation", path);
  fill(picture.get());
  picture->pts = 0;
  SBSCONV_CHECK_AV(avcodec_send_frame(context.get(), picture.get()), Encode, stage, "image encoding failed", path);
  SBSCONV_CHECK_AV(avcodec_send_frame(context.get(), nullptr), Encode, stage, "image encoding failed", path);
  UniqueAVPacket packet = make_packet();
  SBSCONV_CHECK_AV(avcodec_receive_packet(context.get(), packet.get()), Encode, stage, "image encoding failed", path);
  return std::string(reinterpret_cast<const char*>(packet->data), static_cast<size_t>(packet->size));
}

std::string encode_png(const at::Tensor& rgb_in) {
  constexpr const char* kStage = "write image";
  SBSCONV_CHECK(
      rgb_in.dim() == 3 && rgb_in.size(0) == 3 && rgb_in.scalar_type() == at::kByte,
      Option,
      kStage,
      "an image must be uint8 RGB [3,H,W]");
  const int height = static_cast<int>(rgb_in.size(1));
  const int width = static_cast<int>(rgb_in.size(2));
  const at::Tensor packed = rgb_in.to(at::kCPU).permute({1, 2, 0}).contiguous();
  const uint8_t* src = packed.data_ptr<uint8_t>();
  return encode_picture(
      AV_CODEC_ID_PNG, AV_PIX_FMT_RGB24, width, height,
      [&](AVFrame* frame) {
        for (int y = 0; y < height; ++y) {
          std::memcpy(frame->data[0] + static_cast<ptrdiff_t>(y) * frame->linesize[0],
                      src + static_cast<ptrdiff_t>(y) * width * 3, static_cast<size_t>(width) * 3);
        }
      },
      {}, kStage, "(PNG)");
}

void write_png(const std::string& path, const at::Tensor& rgb) {
  constexpr const char* kStage = "write image";
  const std::string bytes = encode_png(rgb);
  const std::filesystem::path final_path(path);
  std::filesystem::path temp = final_path;
  temp += ".part";
  {
    std::ofstream file(temp, std::ios::binary);
    file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!file) {
      std::error_code ec;
      std::filesystem::remove(temp, ec);
      throw Error(ErrorKind::Output, kStage, "cannot write the image", path);
    }
  }
  std::error_code ec;
  std::filesystem::rename(temp, final_path, ec);
  if (ec) {
    std::filesystem::remove(temp, ec);
    throw Error(ErrorKind::Output, kStage, "cannot write the image: " + ec.message(), path);
  }
}

} // namespace sbsconv
