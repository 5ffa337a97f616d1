#include "sbsconv/media/MvHevcEncoder.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "sbsconv/media/EncoderSelection.h"
#include "sbsconv/media/HevcBitstream.h"
#include "sbsconv/media/StreamParams.h"

extern char** environ;

namespace fs = std::filesystem;

namespace sbsconv {

namespace {

constexpr const char* kStage = "encode";

bool executable(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec) && ::access(p.c_str(), X_OK) == 0;
}

std::string describe_exit(int status) {
  return WIFEXITED(status) ? "exit status " + std::to_string(WEXITSTATUS(status))
                           : "signal " + std::to_string(WTERMSIG(status));
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  const auto e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

// The last `lines` lines of a text file (x265's log), for error messages.
std::string tail_of(const std::string& path, int lines) {
  std::ifstream in(path);
  std::vector<std::string> all;
  for (std::string line; std::getline(in, line);) {
    if (!trim(line).empty()) {
      all.push_back(trim(line));
    }
  }
  std::string out;
  for (size_t i = all.size() > static_cast<size_t>(lines) ? all.size() - lines : 0; i < all.size(); ++i) {
    out += (out.empty() ? "" : " | ") + all[i];
  }
  return out;
}

struct SpawnFiles {
  posix_spawn_file_actions_t actions{};
  SpawnFiles() {
    posix_spawn_file_actions_init(&actions);
  }
  ~SpawnFiles() {
    posix_spawn_file_actions_destroy(&actions);
  }
};

pid_t spawn(const std::vector<std::string>& args, SpawnFiles& files) {
  std::vector<char*> argv;
  for (const std::string& a : args) {
    argv.push_back(const_cast<char*>(a.c_str()));
  }
  argv.push_back(nullptr);
  pid_t pid = -1;
  const int status = posix_spawn(&pid, argv[0], &files.actions, nullptr, argv.data(), environ);
  if (status != 0) {
    throw Error(
        ErrorKind::Encode, kStage, "cannot run " + args[0] + ": " + std::strerror(status));
  }
  return pid;
}

// Runs `args` with no input and returns what it printed (stdout and stderr together), or
// nullopt if it did not finish within `timeout`.
std::optional<std::string> run_capture(const std::vector<std::string>& args, std::chrono::seconds timeout) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    return std::nullopt;
  }
  SpawnFiles files;
  posix_spawn_file_actions_addopen(&files.actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&files.actions, fds[1], 1);
  posix_spawn_file_actions_adddup2(&files.actions, fds[1], 2);
  pid_t pid = -1;
  try {
    pid = spawn(args, files);
  } catch (const Error&) {
    ::close(fds[0]);
    ::close(fds[1]);
    return std::nullopt;
  }
  ::close(fds[1]);
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  bool finished = false;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fds[0], POLLIN, 0};
    if (::poll(&p, 1, 100) > 0) {
      char buf[4096];
      const ssize_t n = ::read(fds[0], buf, sizeof buf);
      if (n <= 0) {
        finished = true;
        break;
      }
      if (out.size() < (1u << 20)) {
        out.append(buf, static_cast<size_t>(n));
      }
    }
  }
  ::close(fds[0]);
  if (!finished) {
    ::kill(pid, SIGKILL);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!finished) {
    return std::nullopt;
  }
  return out;
}

// How x265 names its version in --help: the first line with "version".
std::string version_line(const std::string& help) {
  std::istringstream in(help);
  for (std::string line; std::getline(in, line);) {
    if (line.find("version") != std::string::npos) {
      return trim(line);
    }
  }
  return "x265 (version unknown)";
}

void write_text_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out.good()) {
    throw Error(ErrorKind::Output, kStage, "cannot write x265's configuration", path);
  }
}

} // namespace

std::optional<MvHevcTool> find_mvhevc_encoder(std::string* why) {
  std::vector<fs::path> candidates;
  if (const char* env = std::getenv("SBSCONV_X265"); env != nullptr && *env != '\0') {
    if (!executable(env)) {
      *why = std::string("SBSCONV_X265 names ") + env + ", which is not an executable file";
      return std::nullopt;
    }
    candidates.emplace_back(env);
  } else if (const char* path = std::getenv("PATH"); path != nullptr) {
    std::istringstream dirs(path);
    for (std::string dir; std::getline(dirs, dir, ':');) {
      const fs::path p = fs::path(dir.empty() ? "." : dir) / "x265";
      if (executable(p)) {
        candidates.push_back(p);
      }
    }
  }
  if (candidates.empty()) {
    *why = "no x265 command was found on PATH";
    return std::nullopt;
  }
  std::string reasons;
  for (const fs::path& p : candidates) {
    const std::optional<std::string> help = run_capture({p.string(), "--help"}, std::chrono::seconds(20));
    if (!help) {
      reasons += (reasons.empty() ? "" : "; ") + p.string() + " did not answer --help";
      continue;
    }
    if (help->find("multiview-config") != std::string::npos) {
      return MvHevcTool{p.string(), version_line(*help)};
    }
    reasons += (reasons.empty() ? "" : "; ") + p.string() + " (" + version_line(*help) +
        ") was built without multiview support";
  }
  *why = reasons;
  return std::nullopt;
}

std::string mvhevc_missing_message(const std::string& why) {
  return "layout 'spatial' (Apple spatial video, MV-HEVC) needs an x265 that can encode two "
         "views, and " +
      why +
      ". Install x265 4.0 or later built with multiview support (cmake -DENABLE_MULTIVIEW=ON; "
      "Debian's and Ubuntu's x265 packages have none) and put it on PATH or name it in "
      "SBSCONV_X265; or use layout='apple-3d', side-by-side HEVC with Apple's stereo boxes, "
      "which Apple Vision Pro plays as 3D (visionOS 26 and later)";
}

SpatialHeaders split_spatial_headers(const uint8_t* data, size_t size) {
  if (data == nullptr || size == 0) {
    throw Error(ErrorKind::Encode, kStage, "a spatial video stream without parameter sets");
  }
  const hevc::Stream sets = hevc::read_parameter_sets(data, size);
  if (sets.layer1_parameter_sets.empty()) {
    throw Error(ErrorKind::Encode, kStage, "a spatial video stream without the second view's parameter sets");
  }
  return SpatialHeaders{hevc::base_extradata(sets), hevc::lhvc_box(sets)};
}

StreamParams probe_mvhevc_encoder(const WriterOptions& options) {
  std::string why;
  const std::optional<MvHevcTool> tool = find_mvhevc_encoder(&why);
  if (!tool) {
    throw Error(ErrorKind::Encode, "open output", mvhevc_missing_message(why), options.path);
  }
  std::string folder = (fs::temp_directory_path() / "sbsconv-x265-probe-XXXXXX").string();
  if (::mkdtemp(folder.data()) == nullptr) {
    throw Error(ErrorKind::Output, kStage, "cannot make a temporary folder to try x265", folder);
  }
  WriterOptions probe = options;
  probe.cancel = nullptr;
  probe.time_origin = 0.0;
  std::string headers;
  std::string name;
  int width = 0;
  int height = 0;
  try {
    MvHevcEncoder encoder(probe, *tool, (fs::path(folder) / "probe").string());
    encoder.write(at::zeros({1, 3, options.height, options.width}, at::kByte), {0});
    headers = encoder.finish();
    name = encoder.name();
    width = encoder.eye_width();
    height = encoder.eye_height();
  } catch (...) {
    std::error_code ec;
    fs::remove_all(folder, ec);
    throw;
  }
  std::error_code ec;
  fs::remove_all(folder, ec);
  AVCodecParameters* par = avcodec_parameters_alloc();
  SBSCONV_CHECK(par != nullptr, Internal, kStage, "out of memory");
  par->codec_type = AVMEDIA_TYPE_VIDEO;
  par->codec_id = AV_CODEC_ID_HEVC;
  par->width = width;
  par->height = height;
  par->format = AV_PIX_FMT_YUV420P;
  par->extradata = static_cast<uint8_t*>(av_mallocz(headers.size() + AV_INPUT_BUFFER_PADDING_SIZE));
  if (par->extradata == nullptr) {
    avcodec_parameters_free(&par);
    throw Error(ErrorKind::Internal, kStage, "out of memory");
  }
  std::memcpy(par->extradata, headers.data(), headers.size());
  par->extradata_size = static_cast<int>(headers.size());
  const StreamParams params = stream_params_of(par, name);
  avcodec_parameters_free(&par);
  return params;
}

// ---- MvHevcEncoder --------------------------------------------------------------------------

struct MvHevcEncoder::Mapped {
  void* data = MAP_FAILED;
  size_t size = 0;
  hevc::Stream stream;
  ~Mapped() {
    if (data != MAP_FAILED) {
      ::munmap(data, size);
    }
  }
};

MvHevcEncoder::MvHevcEncoder(const WriterOptions& options, MvHevcTool tool, const std::string& scratch)
    : options_(options),
      tool_(std::move(tool)),
      bitstream_path_(scratch + ".hevc.part"),
      config_path_(scratch + ".x265.part"),
      log_path_(scratch + ".log.part") {
  const WriterOptions& o = options_;
  if (o.bit_depth != 8) {
    throw Error(ErrorKind::Option, "open output", "spatial video through x265 is 8-bit only: bit_depth must be 8", o.path);
  }
  if (o.width % 2 != 0) {
    throw Error(ErrorKind::Option, "open output", "spatial video needs a side-by-side frame of two equal eyes", o.path);
  }
  eye_width_ = (o.width / 2) & ~1;
  eye_height_ = o.height & ~1;
  if (eye_width_ < 16 || eye_height_ < 16) {
    throw Error(ErrorKind::Option, "open output", "each eye must be at least 16x16 for x265", o.path);
  }
  yuv_ = std::make_unique<YuvConverter>(2 * eye_width_, eye_height_, AV_PIX_FMT_YUV420P);
  picture_.resize(static_cast<size_t>(2 * eye_width_) * eye_height_ * 3 / 2);
  origin_ = av_rescale_q(
      static_cast<int64_t>(std::llround(o.time_origin * AV_TIME_BASE)), AV_TIME_BASE_Q, time_base());
  nominal_ = std::max<int64_t>(1, av_rescale_q(1, AVRational{o.frame_rate.den, o.frame_rate.num}, time_base()));

  // x265's multiview configuration: two views, one side-by-side picture each, from stdin
  write_text_file(config_path_, "--num-views 2\n--format 1\n--input -\n");
  std::vector<std::string> args = {
      tool_.path,
      "--multiview-config", config_path_,
      "--input-res", std::to_string(eye_width_) + "x" + std::to_string(eye_height_),
      "--fps", std::to_string(o.frame_rate.num) + "/" + std::to_string(o.frame_rate.den),
      "--input-csp", "i420",
      "--input-depth", "8",
      "--preset", o.preset.empty() ? "medium" : o.preset,
      "--crf", std::to_string(o.crf.value_or(18)),
      "--colorprim", "bt709",
      "--transfer", "bt709",
      "--colormatrix", "bt709",
      "--range", "limited",
      "--log-level", "error",
      "--no-progress",
  };
  if (o.threads > 0) {
    args.insert(args.end(), {"--pools", std::to_string(o.threads)});
  }
  const AVRational sar = encoded_sample_aspect(o);
  if (sar.num > 0 && sar.num != sar.den) {
    args.insert(args.end(), {"--sar", std::to_string(sar.num) + ":" + std::to_string(sar.den)});
  }
  args.insert(args.end(), {"--output", bitstream_path_});

  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    throw Error(ErrorKind::Encode, kStage, std::string("cannot connect to x265: ") + std::strerror(errno), o.path);
  }
  SpawnFiles files;
  posix_spawn_file_actions_adddup2(&files.actions, fds[1], 0);
  posix_spawn_file_actions_addopen(&files.actions, 1, log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&files.actions, 1, 2);
  try {
    pid_ = spawn(args, files);
  } catch (...) {
    ::close(fds[0]);
    ::close(fds[1]);
    throw;
  }
  ::close(fds[1]);
  input_ = fds[0];
}

MvHevcEncoder::~MvHevcEncoder() {
  stop();
  mapped_.reset();
  std::error_code ec;
  for (const std::string& p : {bitstream_path_, config_path_, log_path_}) {
    fs::remove(p, ec);
  }
}

AVRational MvHevcEncoder::time_base() const {
  return AVRational{options_.time_base.num, options_.time_base.den};
}

void MvHevcEncoder::stop() {
  if (input_ >= 0) {
    ::close(input_);
    input_ = -1;
  }
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }
}

void MvHevcEncoder::fail_with_log(const std::string& reason) {
  stop();
  const std::string log = tail_of(log_path_, 4);
  throw Error(ErrorKind::Encode, kStage, reason + (log.empty() ? "" : " (x265: " + log + ")"), options_.path);
}

void MvHevcEncoder::send(const uint8_t* data, size_t size) {
  while (size > 0) {
    pollfd p{input_, POLLOUT, 0};
    const int ready = ::poll(&p, 1, 200);
    if (ready == 0) {
      // x265 is busy; make sure it is still there
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        fail_with_log("x265 stopped (" + describe_exit(status) + ") before it had all the frames");
      }
      if (options_.cancel != nullptr && options_.cancel->load()) {
        stop();
        throw Error(ErrorKind::Cancelled, kStage, "cancelled");
      }
      continue;
    }
    const ssize_t n = ::send(input_, data, size, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) {
        continue;
      }
      // x265 closed its input: it is ending; give it a moment to say how
      std::string how = "x265 stopped";
      for (int waited = 0; waited < 100 && pid_ > 0; ++waited) {
        int status = 0;
        if (::waitpid(pid_, &status, WNOHANG) == pid_) {
          pid_ = -1;
          how += " (" + describe_exit(status) + ")";
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      fail_with_log(how + " before it had all the frames");
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
}

void MvHevcEncoder::write(const at::Tensor& frames_in, const std::vector<int64_t>& pts) {
  const WriterOptions& o = options_;
  SBSCONV_CHECK(
      frames_in.dim() == 4 && frames_in.size(1) == 3 && frames_in.scalar_type() == at::kByte,
      Option, kStage, "frames must be a uint8 tensor [N,3,H,W]");
  SBSCONV_CHECK(
      frames_in.size(2) == o.height && frames_in.size(3) == o.width,
      Option, kStage, "frames do not have the size the writer was opened for");
  SBSCONV_CHECK(static_cast<int64_t>(pts.size()) == frames_in.size(0), Option, kStage, "one pts per frame is needed");
  SBSCONV_CHECK(input_ >= 0, Option, kStage, "the spatial encoder is already finished");
  const at::Tensor frames = frames_in.to(at::kCPU);
  const int64_t half = o.width / 2;
  AVFrame* f = frame_.get();
  if (f->data[0] == nullptr) {
    f->format = AV_PIX_FMT_YUV420P;
    f->width = 2 * eye_width_;
    f->height = eye_height_;
    SBSCONV_CHECK_AV(av_frame_get_buffer(f, 0), Encode, kStage, "frame allocation", o.path);
  }
  for (int64_t i = 0; i < frames.size(0); ++i) {
    int64_t t = pts[static_cast<size_t>(i)] - origin_;
    if (!pts_.empty() && t <= pts_.back()) {
      t = pts_.back() + 1;
    }
    pts_.push_back(t);
    end_ = std::max(end_, t + nominal_);
    // the two eyes, each cropped to even sizes, side by side
    const at::Tensor frame = frames[i];
    const at::Tensor sbs = at::cat(
        {frame.slice(1, 0, eye_height_).slice(2, 0, eye_width_),
         frame.slice(1, 0, eye_height_).slice(2, half, half + eye_width_)},
        2).contiguous();
    SBSCONV_CHECK_AV(av_frame_make_writable(f), Encode, kStage, "frame allocation", o.path);
    yuv_->convert(sbs, f);
    uint8_t* out = picture_.data();
    for (int plane = 0; plane < 3; ++plane) {
      const int w = plane == 0 ? 2 * eye_width_ : eye_width_;
      const int h = plane == 0 ? eye_height_ : eye_height_ / 2;
      for (int y = 0; y < h; ++y) {
        std::memcpy(out, f->data[plane] + static_cast<ptrdiff_t>(y) * f->linesize[plane], static_cast<size_t>(w));
        out += w;
      }
    }
    send(picture_.data(), picture_.size());
  }
}

std::string MvHevcEncoder::finish() {
  SBSCONV_CHECK(input_ >= 0, Option, kStage, "the spatial encoder is already finished");
  ::close(input_);
  input_ = -1;
  int status = 0;
  while (true) {
    const pid_t done = ::waitpid(pid_, &status, WNOHANG);
    if (done == pid_) {
      pid_ = -1;
      break;
    }
    if (options_.cancel != nullptr && options_.cancel->load()) {
      stop();
      throw Error(ErrorKind::Cancelled, kStage, "cancelled");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fail_with_log("x265 failed (" + describe_exit(status) + ")");
  }
  auto mapped = std::make_unique<Mapped>();
  const int fd = ::open(bitstream_path_.c_str(), O_RDONLY | O_CLOEXEC);
  struct stat st {};
  if (fd < 0 || ::fstat(fd, &st) != 0 || st.st_size == 0) {
    if (fd >= 0) {
      ::close(fd);
    }
    fail_with_log("x265 wrote no bitstream");
  }
  mapped->size = static_cast<size_t>(st.st_size);
  mapped->data = ::mmap(nullptr, mapped->size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (mapped->data == MAP_FAILED) {
    throw Error(ErrorKind::Encode, kStage, "cannot read x265's bitstream", bitstream_path_);
  }
  mapped->stream = hevc::parse_stream(static_cast<const uint8_t*>(mapped->data), mapped->size);
  const hevc::Stream& s = mapped->stream;
  if (static_cast<int64_t>(s.units.size()) != frames()) {
    throw Error(
        ErrorKind::Encode, kStage,
        "x265 made " + std::to_string(s.units.size()) + " pictures of " + std::to_string(frames()) + " frames",
        options_.path);
  }
  if (s.max_layers != 2 || s.layer1_parameter_sets.empty()) {
    throw Error(ErrorKind::Encode, kStage, "x265 made a stream without a second view", options_.path);
  }
  mapped_ = std::move(mapped);
  return hevc::all_parameter_sets(s);
}

void MvHevcEncoder::emit(const PacketSink& sink) {
  SBSCONV_CHECK(mapped_ != nullptr, Option, kStage, "emit() needs finish() first");
  const hevc::Stream& s = mapped_->stream;
  const int64_t delay = s.reorder_delay;
  UniqueAVPacket packet = make_packet();
  for (size_t i = 0; i < s.units.size(); ++i) {
    const hevc::AccessUnit& unit = s.units[i];
    const std::string data = hevc::sample_annexb(unit);
    SBSCONV_CHECK_AV(av_new_packet(packet.get(), static_cast<int>(data.size())), Encode, kStage, "packet allocation", options_.path);
    PacketUnref unref(packet.get());
    std::memcpy(packet->data, data.data(), data.size());
    packet->pts = pts_[static_cast<size_t>(unit.display_index)];
    // the display times delayed by the reorder delay: never after this unit's own pts
    const int64_t k = static_cast<int64_t>(i) - delay;
    packet->dts = k >= 0 ? pts_[static_cast<size_t>(k)] : pts_.front() - (-k) * nominal_;
    packet->duration = nominal_;
    if (unit.keyframe) {
      packet->flags |= AV_PKT_FLAG_KEY;
    }
    sink(packet.get(), time_base());
  }
  mapped_.reset();
  std::error_code ec;
  fs::remove(bitstream_path_, ec); // (as big as the video: not kept until the writer goes)
}

} // namespace sbsconv
