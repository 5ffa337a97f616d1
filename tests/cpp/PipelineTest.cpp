#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "sbsconv/common/DurableFile.h"
#include "sbsconv/common/Error.h"
#include "sbsconv/pipeline/BoundedQueue.h"
#include "sbsconv/pipeline/Journal.h"
#include "sbsconv/pipeline/RunLock.h"
#include "sbsconv/pipeline/StateFile.h"

using namespace sbsconv;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

// A fresh folder under the system's temporary folder, removed at the end of the test.
class TempFolder {
 public:
  TempFolder() {
    static std::atomic<int> counter{0};
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() /
        ("sbsconv-" + std::string(test->name()) + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempFolder() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string operator/(const std::string& name) const {
    return (path_ / name).string();
  }
  std::string str() const {
    return path_.string();
  }

 private:
  fs::path path_;
};

void write_bytes(const std::string& path, std::string_view bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

std::string host_name() {
  char buffer[256] = {};
  ::gethostname(buffer, sizeof(buffer) - 1);
  return buffer;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

std::string joined(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) {
    out += l + "\n";
  }
  return out;
}

} // namespace

// ---- BoundedQueue ------------------------------------------------------------------------------

TEST(BoundedQueue, KeepsFifoOrder) {
  BoundedQueue<int> q(4);
  for (int i = 1; i <= 4; ++i) {
    EXPECT_TRUE(q.push(i));
  }
  EXPECT_EQ(q.size(), 4u);
  for (int i = 1; i <= 4; ++i) {
    EXPECT_EQ(q.pop(), i);
  }
  EXPECT_EQ(q.size(), 0u);
}

TEST(BoundedQueue, CapacityBlocksTheProducerUntilAPop) {
  BoundedQueue<int> q(2);
  q.push(1);
  q.push(2);
  std::atomic<bool> pushed{false};
  std::thread producer([&] {
    q.push(3);
    pushed = true;
  });
  std::this_thread::sleep_for(50ms);
  EXPECT_FALSE(pushed) << "the producer went past a full queue";
  EXPECT_EQ(q.size(), 2u);
  EXPECT_EQ(q.pop(), 1);
  producer.join();
  EXPECT_TRUE(pushed);
  EXPECT_EQ(q.pop(), 2);
  EXPECT_EQ(q.pop(), 3);
}

TEST(BoundedQueue, CloseLetsTheConsumerDrainThenEnds) {
  BoundedQueue<int> q(4);
  q.push(1);
  q.push(2);
  q.close();
  EXPECT_FALSE(q.push(3));
  EXPECT_EQ(q.pop(), 1);
  EXPECT_EQ(q.pop(), 2);
  EXPECT_EQ(q.pop(), std::nullopt);

  // A consumer waiting on an empty queue is released by close().
  BoundedQueue<int> empty(4);
  std::atomic<bool> returned{false};
  std::optional<int> got = 0;
  std::thread consumer([&] {
    got = empty.pop();
    returned = true;
  });
  std::this_thread::sleep_for(30ms);
  EXPECT_FALSE(returned);
  empty.close();
  consumer.join();
  EXPECT_EQ(got, std::nullopt);
}

TEST(BoundedQueue, AbortWakesABlockedProducerAndConsumerAtOnce) {
  BoundedQueue<int> full(1);
  BoundedQueue<int> empty(1);
  full.push(1);
  std::atomic<int> returned{0};
  bool push_result = true;
  std::optional<int> pop_result = 0;
  std::thread producer([&] {
    push_result = full.push(2);
    ++returned;
  });
  std::thread consumer([&] {
    pop_result = empty.pop();
    ++returned;
  });
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(returned, 0) << "a waiter returned before abort()";
  const auto start = std::chrono::steady_clock::now();
  full.abort();
  empty.abort();
  producer.join();
  consumer.join();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 500ms);
  EXPECT_FALSE(push_result);
  EXPECT_EQ(pop_result, std::nullopt);
  // What was queued is dropped, and both sides stay refused.
  EXPECT_EQ(full.pop(), std::nullopt);
  EXPECT_FALSE(full.push(3));
}

TEST(BoundedQueue, MovesTenThousandItemsBetweenThreadsInOrder) {
  BoundedQueue<int> q(8);
  constexpr int kCount = 10000;
  std::thread producer([&] {
    for (int i = 0; i < kCount; ++i) {
      ASSERT_TRUE(q.push(i));
    }
    q.close();
  });
  int expected = 0;
  bool in_order = true;
  while (auto item = q.pop()) {
    in_order = in_order && *item == expected;
    ++expected;
  }
  producer.join();
  EXPECT_TRUE(in_order);
  EXPECT_EQ(expected, kCount);
}

// ---- Journal -----------------------------------------------------------------------------------

namespace {

// Writes a segment's video and state files into the journal's folder; returns its record
// (bytes and state checksum left for append() to fill in).
SegmentRecord make_segment(const Journal& journal, int64_t index, int64_t first_frame, int64_t frames) {
  SegmentRecord r;
  r.index = index;
  r.first_frame = first_frame;
  r.frames = frames;
  r.next_pts = (first_frame + frames) * 512;
  r.file = "segment_0000" + std::to_string(index) + ".nut";
  r.state = "segment_0000" + std::to_string(index) + ".state";
  r.encoder = "libx264";
  r.stream_params = "libx264|h264|100|640|360|yuv420p|ab12";
  r.packets = frames;
  const std::string video(static_cast<size_t>(100 + 10 * index), static_cast<char>('a' + index));
  write_bytes(journal.path_of(r.file), video);
  save_tensors(journal.path_of(r.state), {{"stabilizer.low", at::full({1}, static_cast<double>(index))}});
  return r;
}

// A journal with three complete segments of 30 frames; returns their records.
std::vector<SegmentRecord> write_three(const std::string& folder, const std::string& fingerprint) {
  Journal j(folder, fingerprint);
  j.load();
  for (int64_t i = 0; i < 3; ++i) {
    j.append(make_segment(j, i, 30 * i, 30));
  }
  return j.records();
}

} // namespace

TEST(Journal, RoundTripsEveryField) {
  TempFolder dir;
  const std::string folder = dir / "resume";
  std::vector<SegmentRecord> written;
  {
    Journal j(folder, "fp with spaces\nand a newline");
    EXPECT_TRUE(j.load().empty());
    SegmentRecord a = make_segment(j, 0, 0, 30);
    a.encoder = "-";
    a.stream_params = "libx264|h264 with space|100%|\t\xc3\xa9|-";
    SegmentRecord b = make_segment(j, 1, 30, 12);
    b.encoder = "";
    b.stream_params = "";
    b.next_pts = -1;
    b.packets = 0;
    j.append(a);
    j.append(b);
    written = j.records();
  }
  ASSERT_EQ(written.size(), 2u);
  EXPECT_EQ(written[0].bytes, 100);
  EXPECT_EQ(written[1].bytes, 110);
  EXPECT_EQ(written[0].state_checksum, fnv1a64(read_bytes(folder + "/segment_00000.state")));
  EXPECT_EQ(written[0].stream_params, "libx264|h264 with space|100%|\t\xc3\xa9|-");

  Journal again(folder, "fp with spaces\nand a newline");
  bool discarded = true;
  std::vector<std::string> warnings;
  const auto loaded = again.load(&discarded, &warnings);
  EXPECT_FALSE(discarded);
  EXPECT_TRUE(warnings.empty()) << joined(warnings);
  EXPECT_EQ(loaded, written);

  // The text format is exactly invertible, and every line is one checked token list.
  const std::string text = read_bytes(folder + "/journal.txt");
  const ParsedJournal parsed = parse_journal(text);
  EXPECT_EQ(parsed.version, 2);
  EXPECT_EQ(parsed.fingerprint, "fp with spaces\nand a newline");
  EXPECT_EQ(parsed.records, written);
  EXPECT_TRUE(parsed.problem.empty()) << parsed.problem;
  EXPECT_EQ(format_journal(*parsed.fingerprint, parsed.records), text);
}

// Note [Automatic choices in the journal]: a choice recorded before the first segment survives
// a reload under the same fingerprint (and the run's unlisted-file cleanup), round-trips through
// the text, is dropped with a journal of other settings, and survives truncate().
TEST(Journal, AutomaticChoicesSurviveAReloadUnderTheSameFingerprint) {
  TempFolder dir;
  const std::string folder = dir / "resume";
  {
    Journal j(folder, "fp");
    j.load();
    EXPECT_EQ(j.choice("x264_preset"), std::nullopt);
    j.record_choice("x264_preset", "veryfast");
    j.record_choice("batch_size", "6");
    j.append(make_segment(j, 0, 0, 30));
  }
  {
    Journal j(folder, "fp");
    ASSERT_EQ(j.load().size(), 1u);
    EXPECT_EQ(j.choice("x264_preset"), "veryfast");
    EXPECT_EQ(j.choice("batch_size"), "6");
    j.truncate(0);
    EXPECT_EQ(j.choice("x264_preset"), "veryfast");
  }
  const std::string text = read_bytes(folder + "/journal.txt");
  const ParsedJournal parsed = parse_journal(text);
  EXPECT_TRUE(parsed.problem.empty()) << parsed.problem;
  EXPECT_EQ(parsed.choices.at("x264_preset"), "veryfast");
  EXPECT_EQ(format_journal(*parsed.fingerprint, parsed.records, parsed.choices), text);
  {
    Journal other(folder, "other settings");
    bool discarded = false;
    other.load(&discarded);
    EXPECT_TRUE(discarded);
    EXPECT_EQ(other.choice("x264_preset"), std::nullopt);
  }
}

TEST(Journal, AppendRefusesARecordThatDoesNotContinue) {
  TempFolder dir;
  Journal j(dir / "resume", "fp");
  j.load();
  j.append(make_segment(j, 0, 0, 30));
  auto expect_internal = [&](SegmentRecord r) {
    try {
      j.append(r);
      ADD_FAILURE() << "accepted segment " << r.index;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Internal) << e.what();
    }
  };
  expect_internal(make_segment(j, 2, 30, 30)); // index gap
  expect_internal(make_segment(j, 1, 31, 30)); // frame gap
  SegmentRecord escaping = make_segment(j, 1, 30, 30);
  escaping.file = "../outside.nut";
  expect_internal(escaping);
  SegmentRecord wrong_size = make_segment(j, 1, 30, 30);
  wrong_size.bytes = 5;
  expect_internal(wrong_size);
  EXPECT_EQ(j.records().size(), 1u);
}

TEST(Journal, ASegmentOfTheWrongSizeEndsThePrefix) {
  TempFolder dir;
  const std::string folder = dir / "resume";
  const auto written = write_three(folder, "fp");
  fs::resize_file(folder + "/segment_00001.nut", 50);

  Journal j(folder, "fp");
  std::vector<std::string> warnings;
  const auto loaded = j.load(nullptr, &warnings);
  ASSERT_EQ(loaded.size(), 1u);
  EXPECT_EQ(loaded[0], written[0]);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_EQ(warnings[0], "segment 1 is damaged (size 50, journal says 110); continuing after segment 0");
  // The dropped segments' files are gone; the kept ones and the journal stay.
  EXPECT_TRUE(fs::exists(folder + "/segment_00000.nut"));
  EXPECT_TRUE(fs::exists(folder + "/segment_00000.state"));
  for (const char* gone : {"segment_00001.nut", "segment_00001.state", "segment_00002.nut", "segment_00002.state"}) {
    EXPECT_FALSE(fs::exists(folder + "/" + gone)) << gone;
  }
  EXPECT_EQ(parse_journal(read_bytes(folder + "/journal.txt")).records.size(), 1u);
}

TEST(Journal, ADamagedStateFileOrAFailedVerifierEndsThePrefix) {
  TempFolder dir;
  const std::string folder = dir / "resume";
  write_three(folder, "fp");
  {
    // The verifier (the engine's packet count) rejects segment 2.
    Journal j(folder, "fp");
    std::vector<std::string> warnings;
    auto verify = [](const SegmentRecord& r, const std::string& path, std::string* why) {
      EXPECT_TRUE(fs::exists(path));
      if (r.index == 2) {
        *why = "3 packets, journal says 30";
        return false;
      }
      return true;
    };
    EXPECT_EQ(j.load(nullptr, &warnings, verify).size(), 2u);
    ASSERT_EQ(warnings.size(), 1u);
    EXPECT_EQ(warnings[0], "segment 2 is damaged (3 packets, journal says 30); continuing after segment 1");
  }
  {
    // A verifier that throws counts as a rejection, not as a failure of the run.
    Journal j(folder, "fp");
    std::vector<std::string> warnings;
    auto verify = [](const SegmentRecord& r, const std::string&, std::string*) -> bool {
      if (r.index == 1) {
        throw Error(ErrorKind::Input, "resume", "cannot open the segment");
      }
      return true;
    };
    EXPECT_EQ(j.load(nullptr, &warnings, verify).size(), 1u);
    ASSERT_EQ(warnings.size(), 1u);
    EXPECT_TRUE(contains(warnings[0], "cannot open the segment")) << warnings[0];
  }
  {
    std::string state = read_bytes(folder + "/segment_00000.state");
    state[state.size() / 2] ^= 0x40;
    write_bytes(folder + "/segment_00000.state", state);
    Journal j(folder, "fp");
    std::vector<std::string> warnings;
    EXPECT_TRUE(j.load(nullptr, &warnings).empty());
    ASSERT_EQ(warnings.size(), 1u);
    EXPECT_TRUE(contains(warnings[0], "segment 0 is damaged (the state file")) << warnings[0];
    EXPECT_TRUE(contains(warnings[0], "starting from the beginning")) << warnings[0];
  }
}

TEST(Journal, AFlippedByteDropsItsLineAndEveryLaterOne) {
  TempFolder dir;
  const std::string folder = dir / "resume";
  const auto written = write_three(folder, "fp");
  const std::string text = read_bytes(folder + "/journal.txt");
  const size_t line_start = text.find("segment 1 ");
  const size_t line_end = text.find('\n', line_start);
  ASSERT_NE(line_start, std::string::npos);
  // Every byte of segment 1's line, its newline included.
  for (size_t i = line_start; i <= line_end; ++i) {
    std::string damaged = text;
    damaged[i] ^= 0x01;
    const ParsedJournal parsed = parse_journal(damaged);
    ASSERT_EQ(parsed.records.size(), 1u) << "byte " << i;
    EXPECT_EQ(parsed.records[0], written[0]);
    EXPECT_FALSE(parsed.problem.empty());
  }
  // And through load(): the later segment is dropped with its files.
  std::string damaged = text;
  damaged[line_start + 10] ^= 0x01;
  write_bytes(folder + "/journal.txt", damaged);
  Journal j(folder, "fp");
  std::vector<std::string> warnings;
  EXPECT_EQ(j.load(nullptr, &warnings).size(), 1u);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_EQ(warnings[0], "the resume journal is damaged (line 4: checksum mismatch); continuing after segment 0");
  EXPECT_FALSE(fs::exists(folder + "/segment_00002.nut"));
}

TEST(Journal, GarbageEmptyOrHalfWrittenJournalsNeverStopARun) {
  TempFolder dir;
  const std::string folder = dir / "resume";
  const auto written = write_three(folder, "fp");
  const std::string text = read_bytes(folder + "/journal.txt");

  // Every prefix of a valid journal parses to a prefix of its segments.
  size_t previous = 0;
  for (size_t n = 0; n <= text.size(); ++n) {
    const ParsedJournal parsed = parse_journal(std::string_view(text).substr(0, n));
    ASSERT_GE(parsed.records.size(), previous) << n;
    ASSERT_LE(parsed.records.size(), 3u);
    for (size_t i = 0; i < parsed.records.size(); ++i) {
      ASSERT_EQ(parsed.records[i], written[i]) << n;
    }
    previous = parsed.records.size();
  }
  EXPECT_EQ(previous, 3u);

  // Half of the last line: the first two segments remain.
  write_bytes(folder + "/journal.txt", text.substr(0, text.size() - 20));
  {
    Journal j(folder, "fp");
    std::vector<std::string> warnings;
    EXPECT_EQ(j.load(nullptr, &warnings).size(), 2u);
    ASSERT_EQ(warnings.size(), 1u);
    EXPECT_TRUE(contains(warnings[0], "continuing after segment 1")) << warnings[0];
  }

  const std::string cases[] = {
      std::string("\x00\xff\x13garbage\nmore garbage", 23),
      "",
      "sbsconv-journal 2\n",
      "sbsconv-journal 2\nfingerprint fp 0123456789abcdef\n",
      "sbsconv-journal 1\nfingerprint fp\nsegment 0 0 30 15360 segment_00000.nut segment_00000.state\n",
      "sbsconv-journal 99999999999999999999999\n",
  };
  for (const std::string& bad : cases) {
    write_bytes(folder + "/journal.txt", bad);
    Journal j(folder, "fp");
    bool discarded = true;
    std::vector<std::string> warnings;
    std::vector<SegmentRecord> loaded;
    EXPECT_NO_THROW(loaded = j.load(&discarded, &warnings)) << bad;
    EXPECT_TRUE(loaded.empty());
    EXPECT_FALSE(discarded);
    ASSERT_EQ(warnings.size(), 1u) << bad;
    EXPECT_TRUE(contains(warnings[0], "starting from the beginning")) << warnings[0];
    // The journal is usable again at once.
    EXPECT_TRUE(parse_journal(read_bytes(folder + "/journal.txt")).problem.empty());
    EXPECT_EQ(std::distance(fs::directory_iterator(folder), fs::directory_iterator()), 1);
  }
}

TEST(Journal, AnotherFingerprintDiscardsTheEarlierRun) {
  TempFolder dir;
  const std::string folder = dir / "resume";
  write_three(folder, "settings A");
  Journal j(folder, "settings B");
  bool discarded = false;
  std::vector<std::string> warnings;
  EXPECT_TRUE(j.load(&discarded, &warnings).empty());
  EXPECT_TRUE(discarded);
  EXPECT_TRUE(warnings.empty()) << joined(warnings);
  EXPECT_FALSE(fs::exists(folder + "/segment_00000.nut"));
  EXPECT_EQ(parse_journal(read_bytes(folder + "/journal.txt")).fingerprint, "settings B");
}

TEST(Journal, TruncateDropsLaterSegmentsAndTheirFiles) {
  TempFolder dir;
  const std::string folder = dir / "resume";
  write_three(folder, "fp");
  {
    Journal j(folder, "fp");
    ASSERT_EQ(j.load().size(), 3u);
    j.truncate(5); // nothing to drop
    EXPECT_EQ(j.records().size(), 3u);
    j.truncate(1);
    EXPECT_EQ(j.records().size(), 1u);
    EXPECT_TRUE(fs::exists(folder + "/segment_00000.nut"));
    EXPECT_FALSE(fs::exists(folder + "/segment_00001.nut"));
    EXPECT_FALSE(fs::exists(folder + "/segment_00002.state"));
    // The engine encodes segment 1 again, with other parameters.
    SegmentRecord again = make_segment(j, 1, 30, 30);
    again.encoder = "libx265";
    j.append(again);
  }
  Journal j(folder, "fp");
  const auto loaded = j.load();
  ASSERT_EQ(loaded.size(), 2u);
  EXPECT_EQ(loaded[1].encoder, "libx265");
}

// ---- RunLock -----------------------------------------------------------------------------------

namespace {

std::string lock_text(int64_t pid, const std::string& host) {
  return "sbsconv-lock 1\npid " + std::to_string(pid) + "\nhost " + host + "\n";
}

// The PID of a process that has exited (and been reaped).
pid_t dead_pid() {
  const pid_t child = ::fork();
  if (child == 0) {
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  return child;
}

} // namespace

TEST(RunLock, TakesOverAStaleLockOfADeadProcess) {
  TempFolder dir;
  const std::string path = dir / "out.lock";
  write_bytes(path, lock_text(dead_pid(), host_name()));
  RunLock lock(path, "out.mp4");
  EXPECT_TRUE(lock.held());
  EXPECT_TRUE(contains(read_bytes(path), "pid " + std::to_string(::getpid()) + "\n"));
}

TEST(RunLock, TakesOverAnOldUnreadableLock) {
  TempFolder dir;
  const std::string path = dir / "out.lock";
  write_bytes(path, "");
  fs::last_write_time(path, fs::file_time_type::clock::now() - std::chrono::hours(1));
  RunLock lock(path, "out.mp4");
  EXPECT_TRUE(contains(read_bytes(path), "pid " + std::to_string(::getpid()) + "\n"));
}

TEST(RunLock, RefusesALiveLock) {
  TempFolder dir;
  const std::string path = dir / "out.lock";
  RunLock first(path, "out.mp4");
  try {
    RunLock second(path, "out.mp4");
    FAIL() << "a second lock was taken";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Output);
    EXPECT_EQ(e.stage(), "resume");
    EXPECT_EQ(e.reason(), "another sbsconv run (PID " + std::to_string(::getpid()) + ") is writing this output");
    EXPECT_EQ(e.file(), "out.mp4");
  }
  EXPECT_TRUE(first.held());
  EXPECT_TRUE(fs::exists(path));

  // Another host's lock cannot be judged from here: refused, saying what to delete.
  write_bytes(dir / "other.lock", lock_text(1, "another-host.invalid"));
  try {
    RunLock other(dir / "other.lock", "out.mp4");
    FAIL() << "another host's lock was taken";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Output);
    EXPECT_TRUE(contains(e.reason(), "delete " + (dir / "other.lock"))) << e.reason();
  }
}

TEST(RunLock, IsReleasedAtDestructionAndByRelease) {
  TempFolder dir;
  const std::string path = dir / "out.lock";
  {
    RunLock lock(path, "out.mp4");
    EXPECT_TRUE(fs::exists(path));
  }
  EXPECT_FALSE(fs::exists(path));
  RunLock again(path, "out.mp4");
  again.release();
  again.release();
  EXPECT_FALSE(again.held());
  EXPECT_FALSE(fs::exists(path));
  // A lock file that another run has put in place since is not ours to remove.
  RunLock third(path, "out.mp4");
  fs::remove(path);
  write_bytes(path, lock_text(1, "another-host.invalid"));
  third.release();
  EXPECT_TRUE(fs::exists(path));
}

TEST(RunLock, GuardsAJournalFolder) {
  TempFolder dir;
  const std::string folder = dir / "resume";
  write_three(folder, "fp");
  Journal first(folder, "fp");
  first.lock("out.mp4");
  EXPECT_TRUE(first.locked());
  Journal second(folder, "fp");
  EXPECT_THROW(second.lock("out.mp4"), Error);
  // load() and a discarding load keep the lock in place.
  EXPECT_EQ(first.load().size(), 3u);
  Journal other_settings(folder, "other");
  other_settings.load();
  EXPECT_TRUE(fs::exists(first.lock_path()));
  EXPECT_THROW(second.lock("out.mp4"), Error);
  first.remove();
  EXPECT_FALSE(first.locked());
  EXPECT_FALSE(fs::exists(folder));
  second.lock("out.mp4");
  EXPECT_TRUE(second.locked());
  second.unlock();
  EXPECT_FALSE(fs::exists(second.lock_path()));
}

// ---- StateFile ---------------------------------------------------------------------------------

namespace {

TensorMap sample_state() {
  TensorMap m;
  m["a.float"] = at::randn({2, 3});
  m["b.double"] = at::randn({4}, at::kDouble);
  m["c.half"] = at::randn({1, 2, 2}).to(at::kHalf);
  m["d.bfloat16"] = at::randn({3}).to(at::kBFloat16);
  m["e.int64_scalar"] = at::scalar_tensor(-7, at::kLong);
  m["f.int32_empty"] = at::empty({0, 5}, at::kInt);
  m["g.uint8"] = at::arange(4, at::kByte).reshape({2, 2});
  m["h.bool"] = at::tensor({1, 0, 1}, at::kInt).to(at::kBool);
  m["i.transposed"] = at::arange(6, at::kFloat).reshape({2, 3}).t();
  m["j.float_empty"] = at::empty({0});
  return m;
}

::testing::AssertionResult refused_as_damaged(std::string_view bytes) {
  try {
    load_tensors_from_bytes(bytes, "state.bin");
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::Input || e.stage() != "resume" || e.file() != "state.bin" ||
        e.reason().rfind("the state file is damaged: ", 0) != 0) {
      return ::testing::AssertionFailure() << "wrong error: " << e.what();
    }
    return ::testing::AssertionSuccess() << e.reason();
  }
  return ::testing::AssertionFailure() << "accepted";
}

void put_u64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) {
    out += static_cast<char>((v >> (8 * i)) & 0xff);
  }
}

// A state file written by hand: the magic, `body`, then a correct checksum, so that the loader
// gets past the checksum to the check under test.
std::string state_bytes(const std::string& body) {
  std::string out = "SBSCONV-STATE-2\n" + body;
  put_u64(out, fnv1a64(out));
  return out;
}

// One tensor's header: name, dtype code, shape, declared byte count.
std::string tensor_header(const std::string& name, uint64_t dtype, const std::vector<uint64_t>& shape, uint64_t bytes) {
  std::string out;
  put_u64(out, name.size());
  out += name;
  put_u64(out, dtype);
  put_u64(out, shape.size());
  for (uint64_t d : shape) {
    put_u64(out, d);
  }
  put_u64(out, bytes);
  return out;
}

std::string one_tensor(const std::string& header_and_data) {
  std::string body;
  put_u64(body, 1);
  return body + header_and_data;
}

} // namespace

TEST(StateFile, RoundTripsDtypesAndShapes) {
  TempFolder dir;
  const TensorMap saved = sample_state();
  save_tensors(dir / "s.state", saved);
  EXPECT_FALSE(fs::exists(dir / "s.state.part"));
  const TensorMap loaded = load_tensors(dir / "s.state");
  ASSERT_EQ(loaded.size(), saved.size());
  for (const auto& [name, t] : saved) {
    ASSERT_TRUE(loaded.count(name)) << name;
    const at::Tensor& l = loaded.at(name);
    EXPECT_EQ(l.scalar_type(), t.scalar_type()) << name;
    EXPECT_EQ(l.sizes(), t.sizes()) << name;
    EXPECT_TRUE(l.is_contiguous()) << name;
    EXPECT_TRUE(at::equal(l, t)) << name;
  }
  EXPECT_EQ(load_tensors_from_bytes(serialize_tensors({}), "empty").size(), 0u);
}

TEST(StateFile, RefusesWhatItCannotHold) {
  EXPECT_THROW(serialize_tensors({{"complex", at::zeros({2}, at::kComplexFloat)}}), Error);
  EXPECT_THROW(serialize_tensors({{"undefined", at::Tensor()}}), Error);
  EXPECT_THROW(serialize_tensors({{std::string(5000, 'n'), at::zeros({1})}}), Error);
}

TEST(StateFile, EveryTruncationAndEveryFlippedByteIsRefused) {
  TensorMap small;
  small["x"] = at::arange(3, at::kFloat);
  small["y"] = at::tensor({1, 0}, at::kInt).to(at::kBool);
  const std::string bytes = serialize_tensors(small);
  for (size_t n = 0; n < bytes.size(); ++n) {
    ASSERT_TRUE(refused_as_damaged(std::string_view(bytes).substr(0, n))) << "length " << n;
  }
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string flipped = bytes;
    flipped[i] ^= 0x10;
    ASSERT_TRUE(refused_as_damaged(flipped)) << "byte " << i;
  }
  // Through the file as well.
  TempFolder dir;
  write_bytes(dir / "cut.state", bytes.substr(0, bytes.size() - 1));
  EXPECT_THROW(load_tensors(dir / "cut.state"), Error);
  try {
    load_tensors(dir / "missing.state");
    FAIL() << "a missing file loaded";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Input);
  }
}

TEST(StateFile, RefusesHugeOrInvalidDeclarationsWithoutAllocating) {
  const uint64_t kFloat32 = 1;
  // Shapes whose data would be far larger than the file: 256 GiB, and an element count
  // that overflows 64 bits.
  EXPECT_TRUE(
      refused_as_damaged(state_bytes(one_tensor(tensor_header("x", kFloat32, {1 << 20, 1 << 16}, 1ULL << 38)))));
  EXPECT_TRUE(refused_as_damaged(
      state_bytes(one_tensor(tensor_header("x", kFloat32, {1ULL << 31, 1ULL << 31, 1ULL << 31}, 0)))));
  EXPECT_TRUE(refused_as_damaged(
      state_bytes(one_tensor(tensor_header("x", kFloat32, {1ULL << 62, 0, 1ULL << 62}, 0)))));
  // A negative size, too many dims, an unknown dtype, a byte count that does not match.
  EXPECT_TRUE(refused_as_damaged(state_bytes(one_tensor(tensor_header("x", kFloat32, {~0ULL}, 0)))));
  const std::vector<uint64_t> nine_dims(9, 1);
  EXPECT_TRUE(refused_as_damaged(state_bytes(one_tensor(tensor_header("x", kFloat32, nine_dims, 4) + "abcd"))));
  EXPECT_TRUE(refused_as_damaged(state_bytes(one_tensor(tensor_header("x", 99, {1}, 4) + "abcd"))));
  EXPECT_TRUE(refused_as_damaged(state_bytes(one_tensor(tensor_header("x", kFloat32, {2}, 4) + "abcd"))));
  // Counts and lengths far beyond the file.
  std::string many;
  put_u64(many, 1ULL << 40);
  EXPECT_TRUE(refused_as_damaged(state_bytes(many)));
  std::string long_name;
  put_u64(long_name, 1);
  put_u64(long_name, 1ULL << 62);
  EXPECT_TRUE(refused_as_damaged(state_bytes(long_name)));
  // Stray bytes, a bool that is neither 0 nor 1, a name twice.
  EXPECT_TRUE(refused_as_damaged(state_bytes(one_tensor(tensor_header("x", kFloat32, {1}, 4) + "abcd" + "zz"))));
  EXPECT_TRUE(refused_as_damaged(state_bytes(one_tensor(tensor_header("b", 8, {2}, 2) + std::string("\x01\x02", 2)))));
  std::string twice;
  put_u64(twice, 2);
  twice += tensor_header("x", 7, {1}, 1) + "a" + tensor_header("x", 7, {1}, 1) + "b";
  EXPECT_TRUE(refused_as_damaged(state_bytes(twice)));
  // Another format, another file.
  std::string v1 = state_bytes(one_tensor(tensor_header("x", 7, {1}, 1) + "a"));
  v1[14] = '1';
  EXPECT_TRUE(refused_as_damaged(v1));
  EXPECT_TRUE(refused_as_damaged("PK\x03\x04 not a state file at all"));
  // The same hand-made file, valid, loads: the refusals above are for their one defect.
  const TensorMap ok = load_tensors_from_bytes(state_bytes(one_tensor(tensor_header("x", 7, {1}, 1) + "a")), "ok");
  ASSERT_EQ(ok.size(), 1u);
  EXPECT_EQ(ok.at("x").item<uint8_t>(), 'a');
}
