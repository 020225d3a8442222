// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <span>
#include <string>
#include <system_error>
#include <utility>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tstitch/core/error.hpp"

namespace tstitch::io {

/// A whole file mapped read-only into memory (POSIX mmap), unmapped on destruction.
///
/// Move-only. Moving keeps the mapping where it is, so spans into bytes() stay valid for as long
/// as some MappedFile owns the mapping. An empty file has no mapping (mmap rejects length 0):
/// bytes() is then empty.
///
/// Caveat of every mmap-based reader: if another process truncates the file while it is mapped,
/// touching the lost pages raises SIGBUS. Writers should replace files by rename (as
/// write_safetensors does), never rewrite them in place.
class MappedFile {
public:
  MappedFile() = default;

  /// Maps `path`; throws tstitch::runtime_error naming the path and the OS error.
  explicit MappedFile(const std::filesystem::path& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      fail(path, "cannot open");
    struct stat status {};
    if (::fstat(fd, &status) != 0) {
      const int saved = errno;
      ::close(fd);
      errno = saved;
      fail(path, "cannot stat");
    }
    if (!S_ISREG(status.st_mode)) {
      ::close(fd);
      throw runtime_error(
          tstitch::detail::concat("tstitch: ", path.string(), ": not a regular file"));
    }
    if (static_cast<std::uintmax_t>(status.st_size) > std::numeric_limits<std::size_t>::max()) {
      ::close(fd);
      throw runtime_error(tstitch::detail::concat("tstitch: ", path.string(), ": file of ",
                                                  status.st_size, " bytes does not fit in memory"));
    }
    const auto size = static_cast<std::size_t>(status.st_size);
    if (size > 0) {
      void* address = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
      if (address == MAP_FAILED) {
        const int saved = errno;
        ::close(fd);
        errno = saved;
        fail(path, "cannot map");
      }
      data_ = static_cast<const std::byte*>(address);
      size_ = size;
    }
    ::close(fd); // the mapping keeps its own reference to the file
  }

  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  MappedFile& operator=(MappedFile&& other) noexcept {
    if (this != &other) {
      unmap();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  ~MappedFile() { unmap(); }

  [[nodiscard]] std::span<const std::byte> bytes() const { return {data_, size_}; }
  [[nodiscard]] const std::byte* data() const { return data_; }
  [[nodiscard]] std::size_t size() const { return size_; }

private:
  [[noreturn]] static void fail(const std::filesystem::path& path, const char* what) {
    const std::string reason = std::generic_category().message(errno);
    throw runtime_error(
        tstitch::detail::concat("tstitch: ", path.string(), ": ", what, ": ", reason));
  }

  void unmap() noexcept {
    if (data_ != nullptr)
      ::munmap(const_cast<std::byte*>(data_), size_);
    data_ = nullptr;
    size_ = 0;
  }

  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

} // namespace tstitch::io
