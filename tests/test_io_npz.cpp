// SPDX-License-Identifier: Apache-2.0
// The .npz evaluation-set writer (io/npz.hpp): CRC-32 and its combine, the layout that lets many
// writers fill one file at offsets, and the files themselves as numpy, Python's zipfile and
// Info-ZIP read them (those checks run /usr/bin/python3 and skip when it or numpy is missing).
#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tstitch/io/npz.hpp"

#include "support/scratch_dir.hpp"

namespace fs = std::filesystem;
using namespace tstitch;
using Catch::Contains;

namespace {

using test::ScratchDir;

/// The CRC-32 bit by bit, straight from the definition: the reference for the table-driven one.
std::uint32_t crc32_bitwise(const std::vector<std::uint8_t>& bytes) {
  std::uint32_t crc = 0xFFFFFFFFu;
  for (const std::uint8_t byte : bytes) {
    crc ^= byte;
    for (int bit = 0; bit < 8; ++bit)
      crc = (crc & 1u) != 0 ? (crc >> 1) ^ 0xEDB88320u : crc >> 1;
  }
  return ~crc;
}

std::vector<std::uint8_t> random_bytes(std::size_t size, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::uint8_t> bytes(size);
  for (auto& b : bytes)
    b = static_cast<std::uint8_t>(rng() >> 24);
  return bytes;
}

using test::read_all;

constexpr const char* python3 = "/usr/bin/python3";
constexpr int python_skip = 77; // the scripts' exit status when numpy is missing

/// Runs a Python script with arguments; returns its exit status and output (stdout and stderr).
std::pair<int, std::string> run_python(const fs::path& dir, const std::string& script,
                                       const std::vector<std::string>& args) {
  const fs::path file = dir / "check.py";
  std::ofstream(file) << script;
  std::string command = std::string(python3) + " '" + file.string() + "'";
  for (const auto& a : args)
    command += " '" + a + "'";
  command += " 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::string output;
  std::array<char, 4096> buffer{};
  for (std::size_t n; (n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0;)
    output.append(buffer.data(), n);
  const int status = ::pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

/// True when the checks that need Python and numpy can run; otherwise says why (a warning).
bool have_numpy() {
  if (::access(python3, X_OK) != 0) {
    WARN("skipped: " << python3 << " is missing");
    return false;
  }
  if (std::system((std::string(python3) + " -c 'import numpy' >/dev/null 2>&1").c_str()) != 0) {
    WARN("skipped: numpy is missing for " << python3);
    return false;
  }
  return true;
}

/// Writes `bytes` at `offset` of an open file, all of them.
void pwrite_all(int fd, const void* bytes, std::size_t size, std::uint64_t offset) {
  const auto* p = static_cast<const char*>(bytes);
  while (size > 0) {
    const ::ssize_t n = ::pwrite(fd, p, size, static_cast<off_t>(offset));
    REQUIRE(n > 0);
    p += n;
    size -= static_cast<std::size_t>(n);
    offset += static_cast<std::uint64_t>(n);
  }
}

/// The CRC-32 of `size` zero bytes from pieces of 2^k zeros combined (nothing is read): the
/// pieces are all zeros, so their order does not matter.
std::uint32_t crc32_of_zeros(std::uint64_t size) {
  const std::uint8_t zero = 0;
  std::uint32_t crc = 0;
  std::uint32_t piece = io::crc32(&zero, 1);
  for (std::uint64_t piece_size = 1; size != 0; size >>= 1, piece_size *= 2) {
    if ((size & 1u) != 0)
      crc = io::crc32_combine(crc, piece, piece_size);
    piece = io::crc32_combine(piece, piece, piece_size);
  }
  return crc;
}

} // namespace

TEST_CASE("crc32 matches the standard check values and the bitwise definition", "[npz]") {
  const auto crc_of = [](const std::string& s) { return io::crc32(s.data(), s.size()); };
  CHECK(crc_of("123456789") == 0xCBF43926u);
  CHECK(crc_of("") == 0u);
  CHECK(crc_of("a") == 0xE8B7BE43u);
  CHECK(crc_of("The quick brown fox jumps over the lazy dog") == 0x414FA339u);
  // Every length 0..40 (the 8-byte steps and every tail) and a long buffer, against the loop.
  for (std::size_t size = 0; size <= 40; ++size) {
    const auto bytes = random_bytes(size, static_cast<std::uint32_t>(size));
    CHECK(io::crc32(bytes) == crc32_bitwise(bytes));
  }
  const auto long_bytes = random_bytes(100003, 7);
  CHECK(io::crc32(long_bytes) == crc32_bitwise(long_bytes));
  // update continues a CRC: any split of the bytes gives the whole's CRC.
  const std::uint32_t head = io::crc32(long_bytes.data(), 12345);
  CHECK(io::crc32_update(head, long_bytes.data() + 12345, long_bytes.size() - 12345) ==
        io::crc32(long_bytes));
}

TEST_CASE("crc32_combine of the parts' CRCs is the CRC of the whole", "[npz]") {
  const auto bytes = random_bytes(300, 11);
  const std::uint32_t whole = io::crc32(bytes);
  // Every split point, empty parts included.
  for (std::size_t split = 0; split <= bytes.size(); ++split) {
    const std::uint32_t a = io::crc32(bytes.data(), split);
    const std::uint32_t b = io::crc32(bytes.data() + split, bytes.size() - split);
    INFO("split " << split);
    CHECK(io::crc32_combine(a, b, bytes.size() - split) == whole);
  }
  // Uneven blocks folded in order, as writers of sample blocks combine them.
  const auto big = random_bytes(1 << 20, 12);
  std::uint32_t folded = 0;
  std::size_t at = 0;
  for (const std::size_t block : {1u, 7u, 4096u, 65535u, 300000u}) {
    folded = io::crc32_combine(folded, io::crc32(big.data() + at, block), block);
    at += block;
  }
  folded = io::crc32_combine(folded, io::crc32(big.data() + at, big.size() - at), big.size() - at);
  CHECK(folded == io::crc32(big));
  // The combine of zeros agrees with reading them.
  const std::vector<std::uint8_t> zeros(1000003, 0);
  CHECK(crc32_of_zeros(zeros.size()) == io::crc32(zeros));
}

TEST_CASE("NpzLayout places the samples after the headers, in order", "[npz]") {
  const io::NpzLayout layout(5, 4, 3, 2);
  CHECK(layout.sample_bytes() == 24);
  CHECK(layout.data_bytes() == 120);
  CHECK(layout.npy_header_bytes().size() % 64 == 0);
  CHECK_THAT(layout.npy_header_bytes(), Contains("'descr': '|u1'"));
  CHECK_THAT(layout.npy_header_bytes(), Contains("'shape': (5, 4, 3, 2)"));
  CHECK(layout.data_offset() == 30 + 9 + layout.npy_header_bytes().size());
  CHECK(layout.header(0).size() == layout.data_offset());
  CHECK(layout.sample_offset(0) == layout.data_offset());
  CHECK(layout.sample_offset(3) == layout.data_offset() + 72);
  CHECK(layout.sample_offset(5) == layout.trailer_offset());
  CHECK(layout.trailer_offset() + layout.trailer(0).size() == layout.file_size());
  CHECK_FALSE(layout.zip64_entry());
  CHECK_FALSE(layout.zip64_end());
  // The CRC sits in both headers: the bytes change with it, their sizes do not.
  CHECK(layout.header(1) != layout.header(2));
  CHECK(layout.trailer(1).size() == layout.trailer(2).size());
}

TEST_CASE("NpzLayout refuses empty and oversized shapes, naming the value", "[npz]") {
  CHECK_THROWS_WITH(io::NpzLayout(0, 28, 28, 1), Contains("npz sample count = 0"));
  CHECK_THROWS_WITH(io::NpzLayout(2, 0, 28, 1), Contains("npz height = 0"));
  CHECK_THROWS_WITH(io::NpzLayout(2, 28, -3, 1), Contains("npz width = -3"));
  CHECK_THROWS_WITH(io::NpzLayout(2, 28, 28, 0), Contains("npz channels = 0"));
  constexpr std::int64_t big = std::int64_t{1} << 40;
  CHECK_THROWS_WITH(io::NpzLayout(big, big, 1, 1),
                    Contains("npz shape = [1099511627776, 1099511627776, 1, 1]"));
  CHECK_THROWS_AS(io::NpzLayout(big, big, 1, 1), tstitch::invalid_argument);
  const io::NpzLayout layout(2, 2, 2, 1);
  CHECK_THROWS_WITH(layout.sample_offset(3), Contains("npz sample index = 3"));
  CHECK_THROWS_WITH(layout.sample_offset(-1), Contains("npz sample index = -1"));
  ScratchDir dir("npz_refuse");
  const std::vector<std::uint8_t> short_data(7);
  CHECK_THROWS_WITH(io::write_npz_uint8(dir.path / "x.npz", short_data, 2, 2, 2, 1),
                    Contains("npz data size = 7") && Contains("N*H*W*C = 8"));
  CHECK_FALSE(fs::exists(dir.path / "x.npz"));
  // The file is written atomically: an unwritable place names the path and the OS reason.
  const std::vector<std::uint8_t> data(8);
  const fs::path missing = dir.path / "missing" / "x.npz";
  CHECK_THROWS_AS(io::write_npz_uint8(missing, data, 2, 2, 2, 1), tstitch::runtime_error);
  CHECK_THROWS_WITH(io::write_npz_uint8(missing, data, 2, 2, 2, 1),
                    Contains(missing.string()) && Contains("No such file or directory"));
}

TEST_CASE("dit_pixel_to_uint8 is DiT's clamp(127.5 x + 128, 0, 255) then truncation", "[npz]") {
  CHECK(io::dit_pixel_to_uint8(-1.0f) == 0);
  CHECK(io::dit_pixel_to_uint8(-2.0f) == 0);
  CHECK(io::dit_pixel_to_uint8(1.0f) == 255);
  CHECK(io::dit_pixel_to_uint8(3.0f) == 255);
  CHECK(io::dit_pixel_to_uint8(0.0f) == 128);
  // 127.5 x + 128 = 0.9 and 1.9: truncated, not rounded.
  CHECK(io::dit_pixel_to_uint8(-1.0f + 0.4f / 127.5f) == 0);
  CHECK(io::dit_pixel_to_uint8(-1.0f + 1.4f / 127.5f) == 1);
  CHECK_THROWS_WITH(io::dit_pixel_to_uint8(std::nanf("")), Contains("pixel value = nan"));

  // (N, C, H, W) = (2, 3, 1, 2) to [N, H, W, C]: channel last.
  std::vector<float> values(12);
  for (std::size_t i = 0; i < values.size(); ++i)
    values[i] = -1.0f + static_cast<float>(i) / 6.0f;
  const ConstView batch(values.data(), 2, Shape{3, 1, 2});
  std::vector<std::uint8_t> out{42}; // appended after what is there
  io::append_nhwc_uint8(batch, out);
  REQUIRE(out.size() == 13);
  CHECK(out[0] == 42);
  for (std::size_t n = 0; n < 2; ++n)
    for (std::size_t c = 0; c < 3; ++c)
      for (std::size_t p = 0; p < 2; ++p)
        CHECK(out[1 + n * 6 + p * 3 + c] == io::dit_pixel_to_uint8(values[n * 6 + c * 2 + p]));
  values[7] = std::nanf("");
  CHECK_THROWS_WITH(io::append_nhwc_uint8(batch, out), Contains("sample 1 channel 0 pixel 1"));
  CHECK(out.size() == 13); // nothing appended
}

TEST_CASE("append_nhwc_uint8 keeps a region: the centred 28x28 of a 32x32 image", "[npz]") {
  // Two 2-channel 32x32 images whose every value is distinct: pixel (n, c, y, x) holds a value
  // that converts to (y + x + 3 c + 5 n) mod 256, so a misplaced row, column or channel shows.
  const Shape shape{2, 32, 32};
  std::vector<float> values(static_cast<std::size_t>(shape.numel(2)));
  const auto expected = [](std::int64_t n, std::int64_t c, std::int64_t y, std::int64_t x) {
    return static_cast<std::uint8_t>((y + x + 3 * c + 5 * n) % 256);
  };
  for (std::int64_t n = 0; n < 2; ++n)
    for (std::int64_t c = 0; c < 2; ++c)
      for (std::int64_t y = 0; y < 32; ++y)
        for (std::int64_t x = 0; x < 32; ++x) // the middle of the uint8 step: exact both ways
          values[static_cast<std::size_t>(((n * 2 + c) * 32 + y) * 32 + x)] =
              (static_cast<float>(expected(n, c, y, x)) + 0.5f - 128.0f) / 127.5f;
  const ConstView batch(values.data(), 2, shape);
  const io::ImageRegion r = io::centred_region(shape, 28, 28);
  CHECK(r.top == 2);
  CHECK(r.left == 2);
  std::vector<std::uint8_t> out;
  io::append_nhwc_uint8(batch, out, r);
  REQUIRE(out.size() == 2u * 28 * 28 * 2);
  std::size_t wrong = 0;
  for (std::int64_t n = 0; n < 2; ++n)
    for (std::int64_t y = 0; y < 28; ++y)
      for (std::int64_t x = 0; x < 28; ++x)
        for (std::int64_t c = 0; c < 2; ++c)
          wrong += out[static_cast<std::size_t>(((n * 28 + y) * 28 + x) * 2 + c)] !=
                   expected(n, c, y + 2, x + 2);
  CHECK(wrong == 0);
  // The whole image by default, and an odd margin's extra row after the region.
  std::vector<std::uint8_t> whole;
  io::append_nhwc_uint8(batch, whole);
  CHECK(whole.size() == 2u * 32 * 32 * 2);
  const io::ImageRegion odd = io::centred_region(shape, 29, 32);
  CHECK(odd.top == 1);
  CHECK(odd.left == 0);
  CHECK_THROWS_WITH(io::centred_region(shape, 33, 28), Contains("image region = 33x28 in 32x32"));
  CHECK_THROWS_WITH(io::centred_region(shape, 0, 28), Contains("at least 1x1"));
  CHECK_THROWS_WITH(io::append_nhwc_uint8(batch, out, io::ImageRegion{5, 5, 28, 28}),
                    Contains("image region = 28x28 at (5, 5): must lie inside the 32x32 images"));
}

TEST_CASE("dit_pixel_to_uint8 agrees with torch bit for bit, the steps' edges included", "[npz]") {
  ScratchDir dir("npz_torch");
  if (::access(python3, X_OK) != 0 ||
      std::system((std::string(python3) + " -c 'import torch' >/dev/null 2>&1").c_str()) != 0) {
    WARN("skipped: torch is missing for " << python3);
    return;
  }
  // A fine grid over [-1.1, 1.1] and the floats next to every step of the output.
  std::vector<float> xs;
  for (int i = -110000; i <= 110000; ++i)
    xs.push_back(static_cast<float>(i) / 100000.0f);
  for (int k = -1; k <= 256; ++k) {
    float edge = (static_cast<float>(k) - 128.0f) / 127.5f;
    for (int j = 0; j < 3; ++j)
      edge = std::nextafter(edge, -2.0f);
    for (int j = 0; j < 7; ++j, edge = std::nextafter(edge, 2.0f))
      xs.push_back(edge);
  }
  const std::vector<std::int64_t> shape{static_cast<std::int64_t>(xs.size())};
  io::write_npy(dir.path / "x.npy", xs, shape);
  std::vector<std::uint8_t> ours;
  for (const float x : xs)
    ours.push_back(io::dit_pixel_to_uint8(x));
  {
    std::ofstream(dir.path / "ours.bin", std::ios::binary)
        .write(reinterpret_cast<const char*>(ours.data()),
               static_cast<std::streamsize>(ours.size()));
  }
  const auto [status, output] =
      run_python(dir.path, R"(
import sys, numpy as np, torch
x = torch.from_numpy(np.load(sys.argv[1]))
theirs = torch.clamp(127.5 * x + 128.0, 0, 255).to(torch.uint8).numpy()
ours = np.fromfile(sys.argv[2], dtype=np.uint8)
bad = np.nonzero(theirs != ours)[0]
print('mismatches', len(bad), [(float(x[i]), int(theirs[i]), int(ours[i])) for i in bad[:5]])
sys.exit(0 if len(bad) == 0 and len(ours) == len(theirs) else 1)
)",
                 {(dir.path / "x.npy").string(), (dir.path / "ours.bin").string()});
  INFO(output);
  CHECK(status == 0);
}

TEST_CASE("write_npz_uint8 writes what numpy, zipfile and unzip read back", "[npz]") {
  ScratchDir dir("npz_numpy");
  const fs::path path = dir.path / "samples.npz";
  const std::int64_t n = 6, h = 28, w = 28, c = 1;
  const auto data = random_bytes(static_cast<std::size_t>(n * h * w * c), 21);
  io::write_npz_uint8(path, data, n, h, w, c);
  CHECK(fs::file_size(path) == io::NpzLayout(n, h, w, c).file_size());
  {
    std::ofstream(dir.path / "expected.bin", std::ios::binary)
        .write(reinterpret_cast<const char*>(data.data()),
               static_cast<std::streamsize>(data.size()));
  }
  if (::access("/usr/bin/unzip", X_OK) == 0) {
    const std::string unzip = "/usr/bin/unzip -tq '" + path.string() + "' >/dev/null 2>&1";
    CHECK(std::system(unzip.c_str()) == 0);
  }
  if (!have_numpy())
    return;
  const auto [status, output] = run_python(dir.path, R"(
import sys, zipfile
try:
    import numpy as np
except ImportError:
    sys.exit(77)
path, expected = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(path) as z:
    assert z.testzip() is None, 'bad CRC'
    assert z.namelist() == ['arr_0.npy'], z.namelist()
    assert z.infolist()[0].compress_type == zipfile.ZIP_STORED
a = np.load(path)['arr_0']
assert a.shape == (6, 28, 28, 1), a.shape
assert a.dtype == np.uint8, a.dtype
assert (a.ravel() == np.fromfile(expected, dtype=np.uint8)).all(), 'values differ'
print('ok')
)",
                                           {path.string(), (dir.path / "expected.bin").string()});
  INFO(output);
  CHECK(status == 0);
  CHECK(status != python_skip);
  const auto [zstatus, zoutput] =
      run_python(dir.path,
                 "import sys, runpy; sys.argv = ['zipfile', '-t', sys.argv[1]]\n"
                 "runpy.run_module('zipfile', run_name='__main__')\n",
                 {path.string()});
  INFO(zoutput);
  CHECK(zstatus == 0);
  CHECK_THAT(zoutput, Contains("Done testing"));
}

TEST_CASE("Blocks written at their offsets in any order give the sequential writer's file",
          "[npz]") {
  ScratchDir dir("npz_blocks");
  const std::int64_t n = 23, h = 5, w = 4, c = 3;
  const auto data = random_bytes(static_cast<std::size_t>(n * h * w * c), 31);
  io::write_npz_uint8(dir.path / "sequential.npz", data, n, h, w, c);

  const io::NpzLayout layout(n, h, w, c);
  // Uneven blocks of samples, written in a shuffled order, each with its own CRC.
  std::vector<std::pair<std::int64_t, std::int64_t>> blocks; // [first, end)
  for (std::int64_t first = 0, size = 1; first < n; first += size, size = size % 5 + 1)
    blocks.emplace_back(first, std::min(n, first + size));
  std::vector<std::uint32_t> crcs(blocks.size());
  std::vector<std::size_t> order(blocks.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::shuffle(order.begin(), order.end(), std::mt19937(5));
  const fs::path path = dir.path / "blocks.npz";
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  REQUIRE(fd >= 0);
  for (const std::size_t b : order) {
    const auto [first, end] = blocks[b];
    const std::uint8_t* bytes =
        data.data() + static_cast<std::uint64_t>(first) * layout.sample_bytes();
    const auto size =
        static_cast<std::size_t>(static_cast<std::uint64_t>(end - first) * layout.sample_bytes());
    crcs[b] = io::crc32(bytes, size);
    pwrite_all(fd, bytes, size, layout.sample_offset(first));
  }
  // Combined in sample order, whatever order the blocks were written in.
  std::uint32_t samples_crc = 0;
  for (std::size_t b = 0; b < blocks.size(); ++b)
    samples_crc = io::crc32_combine(samples_crc, crcs[b],
                                    static_cast<std::uint64_t>(blocks[b].second - blocks[b].first) *
                                        layout.sample_bytes());
  CHECK(samples_crc == io::crc32(data));
  const std::string trailer = layout.trailer(samples_crc);
  const std::string header = layout.header(samples_crc);
  pwrite_all(fd, trailer.data(), trailer.size(), layout.trailer_offset());
  pwrite_all(fd, header.data(), header.size(), 0);
  REQUIRE(::close(fd) == 0);
  CHECK(read_all(path) == read_all(dir.path / "sequential.npz"));
}

namespace {

/// A sparse .npz of zeros with `layout`: only the header and trailer are written.
void write_sparse_npz(const fs::path& path, const io::NpzLayout& layout) {
  const std::uint32_t samples_crc = crc32_of_zeros(layout.data_bytes());
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(::ftruncate(fd, static_cast<off_t>(layout.file_size())) == 0);
  const std::string header = layout.header(samples_crc);
  const std::string trailer = layout.trailer(samples_crc);
  pwrite_all(fd, header.data(), header.size(), 0);
  pwrite_all(fd, trailer.data(), trailer.size(), layout.trailer_offset());
  REQUIRE(::close(fd) == 0);
}

/// Python's zipfile reads the central directory (sizes, CRC, offset) and the entry's first bytes
/// (the npy header, through the local header) without reading the data.
const char* const zip64_check = R"(
import sys, zipfile, zlib
try:
    import numpy as np
except ImportError:
    sys.exit(77)
path, size, crc, shape = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), eval(sys.argv[4])
with zipfile.ZipFile(path) as z:
    [info] = z.infolist()
    assert info.filename == 'arr_0.npy', info.filename
    assert info.file_size == size and info.compress_size == size, (info.file_size, size)
    assert info.header_offset == 0, info.header_offset
    assert info.CRC == crc, (info.CRC, crc)
    with z.open(info) as f:
        version = np.lib.format.read_magic(f)
        got, fortran, dtype = np.lib.format._read_array_header(f, version)
        assert got == shape and dtype == np.uint8 and not fortran, (got, dtype)
print('ok')
)";

} // namespace

TEST_CASE("A layout past 4 GiB uses ZIP64, and zipfile reads its directory", "[npz]") {
  ScratchDir dir("npz_zip64");
  if (!have_numpy())
    return;
  // Sparse files: a few KiB on disk whatever their size.
  struct Case {
    std::int64_t n, h, w, c;
    bool zip64_entry, zip64_end;
  };
  std::vector<Case> cases{{5, 1024, 1024, 1000, true, true}}; // 5.2e9 bytes of samples
  // Where the entry still fits 32 bits but the central directory starts beyond 0xFFFFFFFF, and
  // where the entry's size is exactly 0xFFFFFFFF (the escape value, so ZIP64).
  const std::uint64_t npy = io::NpzLayout(1, 1, 0xFFFFFF00, 1).npy_header_bytes().size();
  cases.push_back({1, 1, static_cast<std::int64_t>(0xFFFFFFFEu - npy), 1, false, true});
  cases.push_back({1, 1, static_cast<std::int64_t>(0xFFFFFFFFu - npy), 1, true, true});
  cases.push_back({1, 1, static_cast<std::int64_t>(0xFFFFFFFFu - npy - 40), 1, false, false});
  for (const Case& k : cases) {
    const io::NpzLayout layout(k.n, k.h, k.w, k.c);
    INFO("shape " << io::shape_string(layout.shape()));
    CHECK(layout.zip64_entry() == k.zip64_entry);
    CHECK(layout.zip64_end() == k.zip64_end);
    const fs::path path = dir.path / "big.npz";
    write_sparse_npz(path, layout);
    CHECK(fs::file_size(path) == layout.file_size());
    const std::uint64_t entry = layout.npy_header_bytes().size() + layout.data_bytes();
    std::string shape = "(";
    for (std::size_t d = 0; d < 4; ++d)
      shape += std::to_string(layout.shape()[d]) + (d == 3 ? ")" : ", ");
    const auto [status, output] =
        run_python(dir.path, zip64_check,
                   {path.string(), std::to_string(entry),
                    std::to_string(layout.entry_crc(crc32_of_zeros(layout.data_bytes()))), shape});
    INFO(output);
    CHECK(status == 0);
    fs::remove(path);
  }
}
