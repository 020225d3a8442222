// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <memory>
#include <new>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tstitch/core/error.hpp"

namespace tstitch::io {

/// How MappedFile brings a file into memory.
///
/// mmap (the default) maps the file: nothing is copied and pages load on demand. Its hazard is
/// that the pages stay tied to the file: if another process truncates the file while it is
/// mapped, touching a lost page raises SIGBUS (the process dies; no exception is possible), and
/// a rewrite in place silently changes the bytes under the reader. read copies the whole file
/// into memory of its own once, so later changes to the file cannot affect it.
enum class LoadMode : std::uint8_t { mmap, read };

/// What identifies a file's contents cheaply: device, inode, size and modification time (ns).
/// Recorded when a file is loaded so that a later check can tell whether it was rewritten in
/// place (size or mtime differ) or replaced (device or inode differ).
struct FileStamp {
  std::filesystem::path path; // empty: nothing to check (e.g. bytes that came from memory)
  std::uint64_t device = 0;
  std::uint64_t inode = 0;
  std::int64_t size = 0;
  std::int64_t mtime_ns = 0;

  [[nodiscard]] static FileStamp of(std::filesystem::path path, const struct stat& status) {
#ifdef __APPLE__
    const struct timespec& mtime = status.st_mtimespec;
#else
    const struct timespec& mtime = status.st_mtim;
#endif
    return {std::move(path), static_cast<std::uint64_t>(status.st_dev),
            static_cast<std::uint64_t>(status.st_ino), static_cast<std::int64_t>(status.st_size),
            static_cast<std::int64_t>(mtime.tv_sec) * 1'000'000'000 + mtime.tv_nsec};
  }

  /// Throws tstitch::runtime_error "tstitch: <what> changed during the run: <path> (<how>)" if
  /// the file at `path` is no longer the one recorded. Does nothing for an empty path.
  void check_unchanged(std::string_view what = "file") const {
    if (path.empty())
      return;
    struct stat status {};
    if (::stat(path.c_str(), &status) != 0) {
      const std::string reason = std::generic_category().message(errno);
      fail(what, tstitch::detail::concat("it cannot be read any more: ", reason));
    }
    const FileStamp now = of(path, status);
    if (now.device != device || now.inode != inode)
      fail(what, "another file replaced it");
    if (now.size != size)
      fail(what, tstitch::detail::concat("size ", size, " -> ", now.size, " bytes"));
    if (now.mtime_ns != mtime_ns)
      fail(what, "it was modified in place");
  }

private:
  [[noreturn]] void fail(std::string_view what, const std::string& how) const {
    throw runtime_error(tstitch::detail::concat(
        "tstitch: ", what, " changed during the run: ", path.string(), " (", how, ")"));
  }
};

/// A whole regular file in memory, read-only: mapped (POSIX mmap) or read into memory of its own,
/// see LoadMode. Released on destruction.
///
/// Move-only. Moving keeps the bytes where they are, so spans into bytes() stay valid for as long
/// as some MappedFile owns them. An empty file has no mapping (mmap rejects length 0): bytes() is
/// then empty.
///
/// Only regular files are accepted: a FIFO, socket or device is refused without blocking (the
/// file is opened non-blocking and checked before anything is read from it).
class MappedFile {
public:
  MappedFile() = default;

  /// Loads `path`; throws tstitch::runtime_error naming the path and the OS error.
  explicit MappedFile(const std::filesystem::path& path, LoadMode mode = LoadMode::mmap) {
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever. It has
    // no effect on the regular files that pass the check below.
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
      fail(path, "cannot open");
    try {
      load(path, fd, mode);
    } catch (...) {
      ::close(fd);
      throw;
    }
    ::close(fd); // a mapping keeps its own reference to the file
  }

  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& other) noexcept { take(other); }
  MappedFile& operator=(MappedFile&& other) noexcept {
    if (this != &other) {
      release();
      take(other);
    }
    return *this;
  }
  ~MappedFile() { release(); }

  [[nodiscard]] std::span<const std::byte> bytes() const { return {data_, size_}; }
  [[nodiscard]] const std::byte* data() const { return data_; }
  [[nodiscard]] std::size_t size() const { return size_; }
  [[nodiscard]] LoadMode mode() const { return mode_; }
  /// The file as it was when loaded (empty for a default-constructed MappedFile).
  [[nodiscard]] const FileStamp& stamp() const { return stamp_; }

  /// Throws tstitch::runtime_error naming the path if the file was rewritten or replaced since
  /// it was loaded. In read mode the bytes are a private copy and stay as loaded regardless; in
  /// mmap mode a change may already have altered them (a truncation may even raise SIGBUS).
  void check_unchanged(std::string_view what = "file") const { stamp_.check_unchanged(what); }

private:
  [[noreturn]] static void fail(const std::filesystem::path& path, const char* what) {
    const std::string reason = std::generic_category().message(errno);
    throw runtime_error(
        tstitch::detail::concat("tstitch: ", path.string(), ": ", what, ": ", reason));
  }
  [[noreturn]] static void fail_plain(const std::filesystem::path& path, const std::string& why) {
    throw runtime_error(tstitch::detail::concat("tstitch: ", path.string(), ": ", why));
  }

  [[nodiscard]] static const char* file_kind(mode_t mode) {
    if (S_ISDIR(mode))
      return "a directory";
    if (S_ISFIFO(mode))
      return "a FIFO";
    if (S_ISSOCK(mode))
      return "a socket";
    if (S_ISCHR(mode))
      return "a character device";
    if (S_ISBLK(mode))
      return "a block device";
    return "a special file";
  }

  void load(const std::filesystem::path& path, int fd, LoadMode mode) {
    struct stat status {};
    if (::fstat(fd, &status) != 0)
      fail(path, "cannot stat");
    if (!S_ISREG(status.st_mode))
      fail_plain(path,
                 tstitch::detail::concat("not a regular file (", file_kind(status.st_mode), ")"));
    if (static_cast<std::uintmax_t>(status.st_size) > std::numeric_limits<std::size_t>::max())
      fail_plain(path, tstitch::detail::concat("file of ", status.st_size,
                                               " bytes does not fit in memory"));
    const auto size = static_cast<std::size_t>(status.st_size);
    stamp_ = FileStamp::of(path, status);
    mode_ = mode;
    if (size == 0)
      return;
    if (mode == LoadMode::mmap) {
      void* address = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
      if (address == MAP_FAILED)
        fail(path, "cannot map");
      data_ = static_cast<const std::byte*>(address);
      size_ = size;
      return;
    }
    // operator new aligns the buffer for any fundamental type, so F32 data at 4-byte aligned
    // file offsets can still be viewed in place.
    std::unique_ptr<std::byte[]> buffer(new (std::nothrow) std::byte[size]);
    if (!buffer)
      fail_plain(path, tstitch::detail::concat("cannot allocate ", size, " bytes to read it"));
    for (std::size_t done = 0; done < size;) {
      const ::ssize_t got = ::read(fd, buffer.get() + done, size - done);
      if (got < 0 && errno == EINTR)
        continue;
      if (got < 0)
        fail(path, "cannot read");
      if (got == 0)
        fail_plain(path, tstitch::detail::concat("changed while being read (", done, " of ", size,
                                                 " bytes read)"));
      done += static_cast<std::size_t>(got);
    }
    // A rewrite during the read could leave a mix of old and new bytes: compare before/after.
    struct stat after {};
    if (::fstat(fd, &after) != 0)
      fail(path, "cannot stat");
    const FileStamp then = FileStamp::of(path, after);
    if (then.size != stamp_.size || then.mtime_ns != stamp_.mtime_ns)
      fail_plain(path, "changed while being read");
    owned_ = std::move(buffer);
    data_ = owned_.get();
    size_ = size;
  }

  void take(MappedFile& other) noexcept {
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    owned_ = std::move(other.owned_);
    mode_ = other.mode_;
    stamp_ = std::move(other.stamp_);
  }

  void release() noexcept {
    if (data_ != nullptr && !owned_)
      ::munmap(const_cast<std::byte*>(data_), size_);
    owned_.reset();
    data_ = nullptr;
    size_ = 0;
  }

  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  std::unique_ptr<std::byte[]> owned_; // read mode: the bytes; mmap mode: empty
  LoadMode mode_ = LoadMode::mmap;
  FileStamp stamp_;
};

} // namespace tstitch::io
