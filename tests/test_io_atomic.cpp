// SPDX-License-Identifier: Apache-2.0
// Atomic file writes (io/atomic_write.hpp) through every writer: a write that fails part way (a
// file size limit stands in for a full disk: both make write(2) fail after some bytes) leaves the
// old file byte for byte, names the path and the OS reason, and leaves no temporary behind.
#include <catch2/catch.hpp>

#include "tstitch/io/png.hpp" // first: it compiles stb_image_write's implementation

#include <csignal>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tstitch/io/atomic_write.hpp"
#include "tstitch/io/npy.hpp"
#include "tstitch/io/safetensors.hpp"

#include "support/scratch_dir.hpp"

namespace fs = std::filesystem;
using namespace tstitch;
using Catch::Contains;

namespace {

using test::read_all;
using test::ScratchDir;
using test::write_all;

/// Limits the size of files this process writes (RLIMIT_FSIZE), so that write(2) fails with EFBIG
/// past `bytes`, as it fails with ENOSPC on a full disk; SIGXFSZ is ignored meanwhile (its default
/// action kills the process). Both are restored on destruction.
struct FileSizeLimit {
  rlimit saved{};
  void (*saved_handler)(int) = nullptr;
  explicit FileSizeLimit(rlim_t bytes) {
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &saved) == 0);
    saved_handler = std::signal(SIGXFSZ, SIG_IGN);
    rlimit limited = saved;
    limited.rlim_cur = bytes;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &limited) == 0);
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &saved);
    std::signal(SIGXFSZ, saved_handler);
  }
};

constexpr const char* old_contents = "the old file, which must survive";

} // namespace

TEST_CASE("A writer that fails part way keeps the old file and names the path and reason",
          "[io][atomic]") {
  const ScratchDir dir("atomic_partial");
  const Tensor big(64, Shape{3, 16, 16}); // 196 KiB of latents
  const std::vector<float> values(50000, 1.0f);

  const auto check = [&](const std::string& name, const auto& write) {
    const fs::path target = dir.path / name;
    write_all(target, old_contents);
    {
      const FileSizeLimit limit(4096);
      CHECK_THROWS_WITH(write(target), Contains(target.string()) && Contains("File too large"));
    }
    CHECK(read_all(target) == old_contents);
    CHECK(dir.entries() == std::vector<std::string>{name}); // no temporary left
    fs::remove(target);
  };
  SECTION("npy from a batch") {
    check("batch.npy", [&](const fs::path& p) { io::write_npy(p, big); });
  }
  SECTION("npy from values") {
    const std::vector<std::int64_t> shape{50000};
    check("values.npy", [&](const fs::path& p) { io::write_npy(p, values, shape); });
  }
  SECTION("png") {
    Tensor noise(64, Shape{3, 16, 16});
    std::uint32_t state = 12345; // xorshift noise: incompressible, so the PNG is > 4 KiB
    for (std::int64_t i = 0; i < noise.view().numel(); ++i) {
      state ^= state << 13;
      state ^= state >> 17;
      state ^= state << 5;
      noise.data()[i] = static_cast<float>(state % 256) / 128.0f - 1.0f;
    }
    check("grid.png", [&](const fs::path& p) { io::write_png_grid(p, noise); });
  }
  SECTION("safetensors") {
    check("model.safetensors", [&](const fs::path& p) {
      io::write_safetensors(p, std::vector<io::TensorData>{io::f32_tensor("w", {50000}, values)});
    });
  }
}

TEST_CASE("A successful write replaces the file, keeps its permissions and leaves no temporary",
          "[io][atomic]") {
  const ScratchDir dir("atomic_replace");
  const fs::path target = dir.path / "out.npy";
  write_all(target, old_contents);
  fs::permissions(target, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read);
  const Tensor x(2, Shape{1, 2, 2});
  io::write_npy(target, x);
  CHECK(io::read_npy(target).shape == std::vector<std::int64_t>{2, 1, 2, 2});
  CHECK((fs::status(target).permissions() & fs::perms::all) ==
        (fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read));
  CHECK(dir.entries() == std::vector<std::string>{"out.npy"});

  SECTION("through a symlink: the file it names is replaced, the link stays a link") {
    const fs::path link = dir.path / "link.npy";
    fs::create_symlink(target, link);
    const Tensor y(3, Shape{1, 2, 2});
    io::write_npy(link, y);
    CHECK(fs::is_symlink(link));
    CHECK(io::read_npy(target).shape == std::vector<std::int64_t>{3, 1, 2, 2});
  }
}

TEST_CASE("An exception from the fill function keeps the old file", "[io][atomic]") {
  const ScratchDir dir("atomic_throw");
  const fs::path target = dir.path / "x.bin";
  write_all(target, old_contents);
  CHECK_THROWS_WITH(io::write_file_atomically(target,
                                              [](io::AtomicWriter& out) {
                                                out.write("new", 3);
                                                throw std::runtime_error("encoder failed");
                                              }),
                    "encoder failed");
  CHECK(read_all(target) == old_contents);
  CHECK(dir.entries() == std::vector<std::string>{"x.bin"});
}

TEST_CASE("Unwritable targets are errors naming the path and the OS reason", "[io][atomic]") {
  const ScratchDir dir("atomic_unwritable");
  const Tensor x(1, Shape{1, 2, 2});
  const fs::path missing = dir.path / "no_such_dir" / "x.npy";
  CHECK_THROWS_WITH(io::write_npy(missing, x),
                    Contains(missing.string()) && Contains("No such file or directory"));
  fs::create_directory(dir.path / "a_dir");
  CHECK_THROWS_WITH(io::write_npy(dir.path / "a_dir", x),
                    Contains("a_dir") && Contains("Is a directory"));
  CHECK(fs::is_directory(dir.path / "a_dir"));
  if (::geteuid() != 0) { // root writes into read-only directories
    fs::permissions(dir.path, fs::perms::owner_write, fs::perm_options::remove);
    CHECK_THROWS_WITH(io::write_npy(dir.path / "x.npy", x), Contains("Permission denied"));
    fs::permissions(dir.path, fs::perms::owner_write, fs::perm_options::add);
  }
}

TEST_CASE("A FIFO is written directly, not replaced by a file", "[io][atomic]") {
  const ScratchDir dir("atomic_fifo");
  const fs::path fifo = dir.path / "pipe";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  std::string received;
  std::thread reader([&] { received = read_all(fifo); });
  io::write_file_atomically(fifo, [](io::AtomicWriter& out) { out.write("through the pipe"); });
  reader.join();
  CHECK(received == "through the pipe");
  CHECK(fs::is_fifo(fifo));
}
