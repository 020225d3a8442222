// SPDX-License-Identifier: Apache-2.0
// Hostile inputs and faults for the file readers: deep JSON, special files, files truncated or
// rewritten while loaded, overflowing extents, and parsing straight from memory. The rule: a
// clear exception naming the file, never a crash, hang or silently wrong answer.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "support/bytes.hpp"
#include "support/scratch_dir.hpp"
#include "tstitch/core/tensor.hpp"
#include "tstitch/io/mapped_file.hpp"
#include "tstitch/io/npy.hpp"
#include "tstitch/io/safetensors.hpp"
#include "tstitch/io/shape.hpp"
#include "tstitch/models/dit/weights.hpp"

namespace {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using tstitch::io::LoadMode;
using tstitch::io::SafetensorsFile;

using tstitch::test::ScratchDir;

using tstitch::test::le64;
using tstitch::test::st_file;

std::span<const std::byte> as_bytes(std::string_view text) {
  return std::as_bytes(std::span<const char>(text.data(), text.size()));
}

/// The message of the format_error that opening `path` throws (FAILs if it opens).
std::string format_error_of(const fs::path& path) {
  try {
    const SafetensorsFile opened(path);
  } catch (const tstitch::io::format_error& e) {
    return e.what();
  }
  FAIL("opened " << path << " without an error");
  return {};
}

// -------------------------------------------------------------------------------------------------
// 1. Deeply nested JSON
// -------------------------------------------------------------------------------------------------

std::string nested(std::size_t depth, std::string_view inner = "1") {
  return std::string(depth, '[') + std::string(inner) + std::string(depth, ']');
}

TEST_CASE("a header nested 100,000 deep is refused before any recursive JSON code runs",
          "[io][hostile][safetensors]") {
  const ScratchDir dir("io_hostile_nesting");
  constexpr std::size_t deep = 100'000;
  const std::vector<std::pair<std::string, std::string>> headers = {
      {"shape", R"({"w":{"dtype":"F32","shape":)" + nested(deep) + R"(,"data_offsets":[0,4]}})"},
      {"offsets", R"({"w":{"dtype":"F32","shape":[1],"data_offsets":)" + nested(deep) + "}}"},
      {"metadata", R"({"__metadata__":{"k":)" + nested(deep) + "}}"},
      {"unknown_field",
       R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":)" + nested(deep) + "}}"},
      {"unterminated", "{\"w\":" + std::string(deep, '[')},
      {"objects", "{\"w\":" + std::string(deep, '{')},
  };
  for (const auto& [name, header] : headers) {
    DYNAMIC_SECTION(name) {
      const fs::path file = dir.write(name + ".safetensors", st_file(header, std::string(4, '\0')));
      const std::string what = format_error_of(file);
      CHECK_THAT(what, Contains(file.string()) && Contains("deeper than 64 levels"));
      CHECK(what.size() < 1000);
    }
  }
}

TEST_CASE("nesting up to 64 levels is accepted, 65 refused, brackets in strings do not count",
          "[io][hostile][safetensors]") {
  const ScratchDir dir("io_hostile_nesting_limit");
  // The header object is level 1, the tensor entry level 2, so "x" may nest 62 more levels.
  const auto header = [](std::size_t extra_levels) {
    return R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"s":"[[[{{{\"[[[","x":)" +
           nested(extra_levels) + "}}";
  };
  const std::string four_bytes(4, '\0');
  CHECK(SafetensorsFile(dir.write("ok.safetensors", st_file(header(62), four_bytes))).size() == 1);
  const fs::path deep = dir.write("deep.safetensors", st_file(header(63), four_bytes));
  CHECK_THAT(format_error_of(deep), Contains("deeper than 64 levels"));
}

TEST_CASE("error messages quote a short prefix of a huge offending value",
          "[io][hostile][safetensors]") {
  const ScratchDir dir("io_hostile_preview");
  std::string shape = "[";
  for (int i = 0; i < 100'000; ++i)
    shape += "1,";
  shape += "\"" + std::string(10'000, 'x') + "\"]";
  const fs::path long_shape =
      dir.write("long.safetensors",
                st_file(R"({"w":{"dtype":"F32","shape":)" + shape + R"(,"data_offsets":[0,4]}})",
                        std::string(4, '\0')));
  const std::string what = format_error_of(long_shape);
  CHECK_THAT(what, Contains("tensor 'w'") && Contains("[1,1,1,1,1,1,1,1,...]") &&
                       Contains("not a non-negative integer"));
  CHECK(what.size() < 300);

  const fs::path nested_offsets = dir.write(
      "nested.safetensors",
      st_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[[0],{"a":1},"a\u0001"]}})",
              std::string(4, '\0')));
  CHECK_THAT(format_error_of(nested_offsets), Contains(R"([[...],{...},"a\x01"])"));
}

// -------------------------------------------------------------------------------------------------
// 2. Special files
// -------------------------------------------------------------------------------------------------

/// Fails the test (SIGALRM ends the process) instead of hanging when a reader blocks.
struct HangGuard {
  explicit HangGuard(unsigned seconds) { ::alarm(seconds); }
  HangGuard(const HangGuard&) = delete;
  HangGuard& operator=(const HangGuard&) = delete;
  ~HangGuard() { ::alarm(0); }
};

TEST_CASE("a FIFO or device given as a file is refused without blocking",
          "[io][hostile][safetensors]") {
  const ScratchDir dir("io_hostile_fifo");
  const fs::path fifo = dir.path / "model.safetensors";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  const HangGuard guard(20);
  for (const LoadMode mode : {LoadMode::mmap, LoadMode::read}) {
    CHECK_THROWS_AS(SafetensorsFile(fifo, mode), tstitch::runtime_error);
    CHECK_THROWS_WITH(SafetensorsFile(fifo, mode),
                      Contains(fifo.string()) && Contains("not a regular file (a FIFO)"));
    CHECK_THROWS_WITH(tstitch::io::MappedFile(fifo, mode), Contains("a FIFO"));
    CHECK_THROWS_WITH(tstitch::dit::Weights::load(fifo, mode),
                      Contains(fifo.string()) && Contains("a FIFO"));
  }
  if (fs::exists("/dev/zero"))
    CHECK_THROWS_WITH(SafetensorsFile("/dev/zero"),
                      Contains("/dev/zero") && Contains("a character device"));
}

// -------------------------------------------------------------------------------------------------
// 3 and 4. Files truncated or rewritten while loaded
// -------------------------------------------------------------------------------------------------

/// A valid file with one F32 tensor "w" of `count` values 0, 1, 2, ... (several pages).
std::vector<float> write_ramp(const fs::path& path, std::size_t count) {
  std::vector<float> values(count);
  for (std::size_t i = 0; i < count; ++i)
    values[i] = static_cast<float>(i);
  const std::vector<tstitch::io::TensorData> tensors{
      tstitch::io::f32_tensor("w", {static_cast<std::int64_t>(count)}, values)};
  tstitch::io::write_safetensors(path, tensors);
  return values;
}

void truncate_file(const fs::path& path) { REQUIRE(::truncate(path.c_str(), 0) == 0); }

TEST_CASE("LoadMode::read is immune to truncation; mmap's check_unchanged reports it",
          "[io][hostile][safetensors]") {
  const ScratchDir dir("io_hostile_truncate");
  const fs::path path = dir.path / "ramp.safetensors";
  const std::vector<float> values = write_ramp(path, 1 << 16);

  SECTION("read mode: the bytes stay readable and intact") {
    const SafetensorsFile file(path, LoadMode::read);
    CHECK_NOTHROW(file.check_unchanged());
    truncate_file(path);
    const std::span<const float> w = file.f32("w"); // 4-byte aligned: a view into the buffer
    CHECK(std::equal(w.begin(), w.end(), values.begin(), values.end()));
    CHECK_THROWS_WITH(file.check_unchanged(),
                      Contains("file changed during the run: " + path.string()) &&
                          Contains("size ") && Contains(" -> 0 bytes"));
  }
  SECTION("mmap mode: check_unchanged reports the truncation (the pages are not touched)") {
    const SafetensorsFile file(path, LoadMode::mmap);
    CHECK_NOTHROW(file.check_unchanged());
    truncate_file(path);
    CHECK_THROWS_AS(file.check_unchanged(), tstitch::runtime_error);
    CHECK_THROWS_WITH(file.check_unchanged("model file"),
                      Contains("model file changed during the run: " + path.string()));
  }
  SECTION("mmap mode really is exposed: touching truncated pages kills a child process") {
    // The hazard LoadMode documents, shown in a child so that this process survives it.
    for (const LoadMode mode : {LoadMode::mmap, LoadMode::read}) {
      write_ramp(path, 1 << 16);
      const pid_t child = ::fork();
      REQUIRE(child >= 0);
      if (child == 0) {
        // Quiet: a sanitizer would report the SIGBUS at length before the child dies.
        const int null = ::open("/dev/null", O_WRONLY);
        if (null >= 0)
          ::dup2(null, STDERR_FILENO);
        bool intact = false;
        try {
          const SafetensorsFile file(path, mode);
          if (::truncate(path.c_str(), 0) != 0)
            ::_exit(3);
          const std::span<const float> w = file.f32("w");
          intact = std::equal(w.begin(), w.end(), values.begin(), values.end());
        } catch (...) {
          ::_exit(4);
        }
        ::_exit(intact ? 0 : 5);
      }
      int status = 0;
      REQUIRE(::waitpid(child, &status, 0) == child);
      const bool clean_exit = WIFEXITED(status) && WEXITSTATUS(status) == 0;
      INFO("mode " << (mode == LoadMode::mmap ? "mmap" : "read") << ", wait status " << status);
      CHECK(clean_exit == (mode == LoadMode::read));
    }
  }
}

TEST_CASE("check_unchanged detects a rewrite in place and a replacement", "[io][hostile]") {
  const ScratchDir dir("io_hostile_rewrite");
  const fs::path path = dir.path / "ramp.safetensors";
  write_ramp(path, 1024);

  SECTION("same size, rewritten in place") {
    const SafetensorsFile file(path);
    struct stat before {};
    REQUIRE(::stat(path.c_str(), &before) == 0);
    // Rewrite one byte in place, then make sure the mtime moves even on a coarse clock.
    {
      std::fstream out(path, std::ios::binary | std::ios::in | std::ios::out);
      out.seekp(-1, std::ios::end);
      out.put('\x7f');
    }
    const auto changed = fs::last_write_time(path) + std::chrono::seconds(1);
    fs::last_write_time(path, changed);
    CHECK_THROWS_WITH(file.check_unchanged(), Contains("modified in place"));
  }
  SECTION("replaced by another file (rename)") {
    const SafetensorsFile file(path);
    write_ramp(path, 1024); // write_safetensors renames a new file over the old one
    CHECK_THROWS_WITH(file.check_unchanged(), Contains("another file replaced it"));
  }
  SECTION("removed") {
    const SafetensorsFile file(path);
    fs::remove(path);
    CHECK_THROWS_WITH(file.check_unchanged(),
                      Contains(path.string()) && Contains("cannot be read any more"));
  }
  SECTION("from memory: nothing to check") {
    const std::string bytes = st_file("{}");
    CHECK_NOTHROW(SafetensorsFile::from_bytes(as_bytes(bytes)).check_unchanged());
  }
}

TEST_CASE("dit::Weights loads in either mode and reports a changed model file", "[io][hostile]") {
  const ScratchDir dir("io_hostile_weights");
  const fs::path source = fs::path(TSTITCH_TEST_DATA_DIR) / "dit" / "tiny_dit.safetensors";
  const fs::path path = dir.path / "tiny_dit.safetensors";
  fs::copy_file(source, path);

  const tstitch::dit::Weights mapped = tstitch::dit::Weights::load(path);
  const tstitch::dit::Weights read = tstitch::dit::Weights::load(path, LoadMode::read);
  const tstitch::dit::Weights read_checked =
      tstitch::dit::Weights::load(path, read.config(), LoadMode::read);
  REQUIRE(mapped.named().size() == read.named().size());
  for (std::size_t i = 0; i < mapped.named().size(); ++i) {
    const auto& [name, a] = mapped.named()[i];
    const tstitch::dit::Param b = read.named()[i].second;
    INFO(name);
    REQUIRE((a.rows == b.rows && a.cols == b.cols));
    CHECK(std::memcmp(a.data, b.data, static_cast<std::size_t>(a.rows * a.cols) * 4) == 0);
  }
  CHECK(read_checked.parameter_count() == read.parameter_count());
  CHECK_NOTHROW(mapped.check_unchanged());
  const tstitch::io::FileStamp stamp = mapped.stamp();

  truncate_file(path);
  CHECK_THROWS_WITH(read.check_unchanged(),
                    Contains("model file changed during the run: " + path.string()));
  CHECK_THROWS_WITH(stamp.check_unchanged("model file"),
                    Contains("model file changed during the run: " + path.string()));
  // The read-mode weights are still whole after the truncation.
  const tstitch::dit::Param last = read.named().back().second;
  CHECK(std::isfinite(last.data[last.rows * last.cols - 1]));
  // Random weights come from no file.
  CHECK_NOTHROW(tstitch::dit::Weights::random(read.config(), 1).check_unchanged());
}

// -------------------------------------------------------------------------------------------------
// 5. Overflow-checked extent arithmetic
// -------------------------------------------------------------------------------------------------

constexpr std::int64_t two_62 = std::int64_t{1} << 62;

static_assert(tstitch::detail::checked_extent_product({2, 3, 4}) == 24);
static_assert(tstitch::detail::checked_extent_product({}) == 1);
static_assert(tstitch::detail::checked_extent_product({0, two_62, 4}) == std::nullopt);
static_assert(tstitch::detail::checked_extent_product({two_62, 2, 0}) == std::nullopt);
static_assert(tstitch::detail::checked_extent_product({two_62, 1, 0}) == 0);
static_assert(tstitch::detail::checked_extent_product({-3, 5}) == -15);
static_assert(tstitch::detail::checked_extent_product({std::numeric_limits<std::int64_t>::min()}) ==
              std::nullopt);
static_assert(tstitch::Shape{2, 3, 4}.numel() == 24);
static_assert(tstitch::Shape{2, 3, 4}.numel(5) == 120);

constexpr std::int64_t extents_0_2_62_4_1[] = {0, two_62, 4, 1};
static_assert(tstitch::io::detail::element_count(extents_0_2_62_4_1) == std::nullopt);
constexpr std::int64_t extents_empty[] = {two_62, 1, 0};
static_assert(tstitch::io::detail::element_count(extents_empty) == 0);

TEST_CASE("Shape::numel and tensors refuse extents whose product overflows int64",
          "[io][hostile][tensor]") {
  using tstitch::Shape;
  CHECK_THROWS_AS(Shape({two_62, 4, 1}).numel(), tstitch::invalid_argument);
  CHECK_THROWS_WITH(Shape({0, two_62, 4}).numel(),
                    Contains("[0, 4611686018427387904, 4]") && Contains("int64"));
  CHECK_THROWS_WITH(Shape({two_62, 4, 1}).numel(0), Contains("0 x [4611686018427387904, 4, 1]"));
  CHECK_THROWS_WITH(Shape({1, two_62, 4}).plane(), Contains("4611686018427387904"));
  CHECK_THROWS_AS(tstitch::Tensor(0, Shape{two_62, 4, 1}), tstitch::invalid_argument);
  CHECK_THROWS_AS(tstitch::ConstView(nullptr, two_62, Shape{0, 4, 1}).numel(),
                  tstitch::invalid_argument);
  const tstitch::ConstView view(nullptr, 4, Shape{1, 1, 1});
  CHECK_THROWS_AS(view.samples(2, std::numeric_limits<std::int64_t>::max()),
                  tstitch::invalid_argument);
  CHECK_THROWS_AS(view.channels(1, std::numeric_limits<std::int64_t>::max()),
                  tstitch::invalid_argument);
}

/// A .npy header (format 1.0) with the given shape tuple text and no data.
std::string npy_with_shape(std::string_view tuple) {
  std::string dict =
      "{'descr': '<f4', 'fortran_order': False, 'shape': " + std::string(tuple) + ", }";
  dict.append(64 - (10 + dict.size() + 1) % 64, ' ');
  dict += '\n';
  std::string bytes = "\x93NUMPY\x01";
  bytes += '\0';
  bytes += static_cast<char>(dict.size() & 0xFF);
  bytes += static_cast<char>(dict.size() >> 8);
  return bytes + dict;
}

TEST_CASE("an empty .npy batch whose other extents overflow is refused, naming the shape",
          "[io][hostile][npy]") {
  const ScratchDir dir("io_hostile_npy");
  const fs::path path = dir.write("overflow.npy", npy_with_shape("(0, 4611686018427387904, 4, 1)"));
  CHECK_THROWS_AS(tstitch::io::read_npy_batch(path), tstitch::error);
  CHECK_THROWS_WITH(tstitch::io::read_npy_batch(path), Contains("4611686018427387904"));
}

TEST_CASE("safetensors shapes: TensorInfo::numel is checked too", "[io][hostile][safetensors]") {
  tstitch::io::TensorInfo info;
  info.shape = {0, two_62, 4};
  CHECK_THROWS_WITH(info.numel(), Contains("[0, 4611686018427387904, 4]"));
  info.shape = {2, 3};
  CHECK(info.numel() == 6);
  // The reader refuses such a shape even though the tensor is empty.
  const std::string header =
      R"({"w":{"dtype":"F32","shape":[0,4611686018427387904,4],"data_offsets":[0,0]}})";
  const std::string bytes = st_file(header);
  CHECK_THROWS_WITH(SafetensorsFile::from_bytes(as_bytes(bytes)),
                    Contains("[0,4611686018427387904,4]") && Contains("overflows int64"));
}

// -------------------------------------------------------------------------------------------------
// 6. Parsing from memory
// -------------------------------------------------------------------------------------------------

TEST_CASE("SafetensorsFile::from_bytes parses memory without a file",
          "[io][hostile][safetensors]") {
  const std::string data = tstitch::test::float_bytes({1.5f, -2.0f});
  const std::string bytes = st_file(
      R"({"__metadata__":{"k":"v"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", data);
  // A vector's buffer is aligned for floats, so f32() can view it in place.
  std::vector<std::byte> buffer(bytes.size());
  std::memcpy(buffer.data(), bytes.data(), bytes.size());
  const SafetensorsFile file = SafetensorsFile::from_bytes(buffer, "resource:w");
  CHECK(file.path() == "resource:w");
  CHECK(file.metadata().at("k") == "v");
  CHECK(file.read_f32("w") == std::vector<float>{1.5f, -2.0f});
  CHECK(file.stamp().path.empty());

  const std::string bad =
      st_file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", data);
  CHECK_THROWS_AS(SafetensorsFile::from_bytes(as_bytes(bad)), tstitch::io::format_error);
  CHECK_THROWS_WITH(SafetensorsFile::from_bytes(as_bytes(bad), "pack:entry"),
                    Contains("pack:entry") && Contains("tensor 'w'"));
  CHECK_THROWS_WITH(SafetensorsFile::from_bytes({}), Contains("<memory>") && Contains("too short"));
}

TEST_CASE("random mutations of a valid file either parse or throw format_error",
          "[io][hostile][safetensors]") {
  // A tiny fuzzer over from_bytes: every outcome must be a parse or a format_error.
  const std::string valid =
      st_file(R"({"__metadata__":{"a":"b"},"w":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]},)"
              R"("z":{"dtype":"U8","shape":[0],"data_offsets":[8,8]}})",
              std::string(8, '\x3c'));
  std::mt19937 rng(12345);
  int parsed = 0;
  int refused = 0;
  for (int round = 0; round < 3000; ++round) {
    std::string bytes = valid;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const std::size_t at = rng() % bytes.size();
      switch (rng() % 4) {
      case 0:
        bytes[at] = static_cast<char>(rng());
        break;
      case 1:
        bytes.erase(at, 1);
        break;
      case 2:
        bytes.insert(at, 1, "[]{}\",:0-9e"[rng() % 11]);
        break;
      default:
        bytes.resize(at);
        break;
      }
      if (bytes.empty())
        break;
    }
    try {
      const SafetensorsFile file = SafetensorsFile::from_bytes(as_bytes(bytes), "fuzz");
      for (const std::string& name : file.names())
        (void)file.info(name).numel();
      ++parsed;
    } catch (const tstitch::io::format_error&) {
      ++refused;
    }
  }
  CHECK(parsed + refused == 3000);
  CHECK(refused > 0);
}

/// The bytes of a file, in a vector (whose buffer is aligned for floats).
std::vector<std::byte> file_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<std::byte> bytes(fs::file_size(path));
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(in.good());
  return bytes;
}

TEST_CASE("dit::Weights::from_bytes loads a DiT from memory as load() loads the file",
          "[io][hostile][dit]") {
  const fs::path path = fs::path(TSTITCH_TEST_DATA_DIR) / "dit" / "tiny_dit.safetensors";
  const std::vector<std::byte> bytes = file_bytes(path);
  const tstitch::dit::Weights loaded = tstitch::dit::Weights::load(path, LoadMode::read);
  const tstitch::dit::Weights memory = tstitch::dit::Weights::from_bytes(bytes, "pack:tiny_dit");
  CHECK(memory.config() == loaded.config());
  CHECK(memory.parameter_count() == loaded.parameter_count());
  CHECK(memory.copied_parameters() == 0); // F32 and aligned: viewed in place, not copied
  CHECK(memory.stamp().path.empty());
  REQUIRE(memory.named().size() == loaded.named().size());
  for (std::size_t i = 0; i < memory.named().size(); ++i) {
    const auto& [name, a] = memory.named()[i];
    const tstitch::dit::Param b = loaded.named()[i].second;
    INFO(name);
    REQUIRE(name == loaded.named()[i].first);
    REQUIRE((a.rows == b.rows && a.cols == b.cols));
    // In place: the parameter points into the caller's bytes.
    CHECK(reinterpret_cast<const std::byte*>(a.data) >= bytes.data());
    CHECK(reinterpret_cast<const std::byte*>(a.data) < bytes.data() + bytes.size());
    CHECK(std::memcmp(a.data, b.data, static_cast<std::size_t>(a.rows * a.cols) * 4) == 0);
  }
  const tstitch::dit::Weights checked =
      tstitch::dit::Weights::from_bytes(bytes, loaded.config(), "pack:tiny_dit");
  CHECK(checked.parameter_count() == loaded.parameter_count());

  // Each kind of bad input gives its documented exception, naming the bytes.
  tstitch::dit::Config other = loaded.config();
  other.depth += 1;
  CHECK_THROWS_WITH(tstitch::dit::Weights::from_bytes(bytes, other, "pack:tiny_dit"),
                    Contains("pack:tiny_dit") && Contains("blocks."));
  const std::span<const std::byte> truncated(bytes.data(), bytes.size() - 1);
  CHECK_THROWS_AS(tstitch::dit::Weights::from_bytes(truncated), tstitch::io::format_error);
  CHECK_THROWS_WITH(tstitch::dit::Weights::from_bytes(truncated, "pack:cut"), Contains("pack:cut"));
  const std::string no_config = st_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                                        tstitch::test::float_bytes({1.0f}));
  CHECK_THROWS_AS(tstitch::dit::Weights::from_bytes(as_bytes(no_config)),
                  tstitch::invalid_argument);
  CHECK_THROWS_WITH(tstitch::dit::Weights::from_bytes(as_bytes(no_config), "pack:bare"),
                    Contains("pack:bare") && Contains("lacks 'depth'"));
}

TEST_CASE("dit::Weights::parameter_count leaves out a pos_embed the file carries",
          "[io][hostile][dit]") {
  // tiny_dit.safetensors carries the optional (fixed, not learned) pos_embed; the count must be
  // the model's, as for random weights and files without it, and the sum of the named views.
  const fs::path path = fs::path(TSTITCH_TEST_DATA_DIR) / "dit" / "tiny_dit.safetensors";
  const tstitch::dit::Weights loaded = tstitch::dit::Weights::load(path);
  REQUIRE(tstitch::io::SafetensorsFile(path).contains("pos_embed"));
  std::int64_t viewed = 0;
  for (const auto& [name, param] : loaded.named())
    viewed += param.rows * param.cols;
  CHECK(loaded.parameter_count() == viewed);
  CHECK(loaded.parameter_count() ==
        tstitch::dit::Weights::random(loaded.config(), 1).parameter_count());
  CHECK(loaded.copied_parameters() == 0);
}

TEST_CASE("parse_npy reads .npy bytes from memory; read_npy refuses a FIFO", "[io][hostile][npy]") {
  const std::vector<float> values{1.5f, -2.0f, 3.0f};
  const std::string header = tstitch::io::npy_header(std::vector<std::int64_t>{3});
  std::vector<std::byte> bytes(header.size() + 12);
  std::memcpy(bytes.data(), header.data(), header.size());
  std::memcpy(bytes.data() + header.size(), values.data(), 12);
  const tstitch::io::NpyArray array = tstitch::io::parse_npy(bytes);
  CHECK(array.shape == std::vector<std::int64_t>{3});
  CHECK(array.values == values);
  bytes.pop_back();
  CHECK_THROWS_WITH(tstitch::io::parse_npy(bytes, "pack:x.npy"),
                    Contains("pack:x.npy") && Contains("truncated"));
  CHECK_THROWS_WITH(tstitch::io::parse_npy({}), Contains("<memory>") && Contains("magic"));

  const ScratchDir dir("io_hostile_npy_fifo");
  const fs::path fifo = dir.path / "x.npy";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  const HangGuard guard(20);
  CHECK_THROWS_WITH(tstitch::io::read_npy(fifo), Contains(fifo.string()) && Contains("a FIFO"));
  // The reader's element count is the strict one too.
  const fs::path overflow =
      dir.write("overflow.npy", npy_with_shape("(0, 4611686018427387904, 4, 1)"));
  CHECK_THROWS_WITH(tstitch::io::read_npy(overflow),
                    Contains("overflow.npy") && Contains("[0, 4611686018427387904, 4, 1]"));
}

} // namespace
