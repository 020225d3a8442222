// SPDX-License-Identifier: Apache-2.0
#pragma once

// Every file tstitch writes is either the old file or the complete new one, never a mix: the bytes
// go to a temporary file in the target's directory (the same filesystem, so rename is atomic),
// are fsync'ed, and the temporary is renamed over the target. Any failure (a full disk, a file
// size limit, a vanished directory) removes the temporary and leaves the old file as it was.

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tstitch/core/error.hpp"

namespace tstitch::io {

/// The open file handed to write_file_atomically's fill function.
class AtomicWriter {
public:
  AtomicWriter(int fd, const std::filesystem::path& target) : fd_(fd), target_(target) {}

  /// Appends `size` bytes (retrying short writes); throws tstitch::runtime_error naming the target
  /// and the OS reason ("No space left on device", "File too large").
  void write(const void* data, std::size_t size) {
    const auto* bytes = static_cast<const char*>(data);
    while (size > 0) {
      const ::ssize_t written = ::write(fd_, bytes, size);
      if (written < 0 && errno == EINTR)
        continue;
      if (written <= 0) // 0 bytes for a non-empty write: no progress is possible
        fail("cannot write", written < 0 ? errno : ENOSPC);
      bytes += written;
      size -= static_cast<std::size_t>(written);
    }
  }
  void write(std::string_view text) { write(text.data(), text.size()); }

  [[noreturn]] void fail(std::string_view what, int error) const {
    throw runtime_error(tstitch::detail::concat("tstitch: ", what, " '", target_.string(),
                                                "': ", std::generic_category().message(error)));
  }

private:
  int fd_;
  const std::filesystem::path& target_;
};

namespace detail {

/// Closes a descriptor and removes the temporary file unless the write was committed.
struct PendingFile {
  int fd = -1;
  std::filesystem::path temporary; // empty: writing straight to a device or FIFO
  ~PendingFile() {
    if (fd >= 0)
      ::close(fd);
    if (!temporary.empty())
      ::unlink(temporary.c_str());
  }
};

/// A name for the temporary next to `target`: hidden, unique per process and call, and short
/// enough for NAME_MAX whatever the target's name.
[[nodiscard]] inline std::filesystem::path temporary_name(const std::filesystem::path& target) {
  static std::atomic<unsigned> counter{0};
  const std::string name = target.filename().string().substr(0, 200);
  return target.parent_path() /
         tstitch::detail::concat(".", name, ".", ::getpid(), "-", counter.fetch_add(1), ".tmp");
}

} // namespace detail

/// Writes `path` atomically: calls fill(AtomicWriter&) to write the new contents to a temporary
/// file in the same directory, fsyncs it and renames it over `path` (a symlink is followed, so
/// the file it names is replaced). An existing file's permission bits are kept. A character
/// device or FIFO (/dev/null, a pipe) has no old contents to keep: it is written directly.
/// Throws tstitch::runtime_error naming `path` and the OS reason; whatever fill throws propagates.
/// Either way the temporary is removed and `path` is unchanged.
template <class Fill> void write_file_atomically(const std::filesystem::path& path, Fill&& fill) {
  std::error_code ignored;
  std::filesystem::path target = path;
  if (std::filesystem::is_symlink(path, ignored)) {
    std::filesystem::path resolved = std::filesystem::weakly_canonical(path, ignored);
    if (!ignored && !resolved.empty())
      target = std::move(resolved);
  }
  const AtomicWriter reporter(-1, path);
  detail::PendingFile file;
  struct stat old {};
  const bool exists = ::stat(target.c_str(), &old) == 0;
  if (exists && S_ISDIR(old.st_mode))
    reporter.fail("cannot write", EISDIR);
  if (exists && (S_ISCHR(old.st_mode) || S_ISFIFO(old.st_mode))) {
    file.fd = ::open(target.c_str(), O_WRONLY | O_CLOEXEC);
    if (file.fd < 0)
      reporter.fail("cannot open for writing", errno);
    AtomicWriter out(file.fd, path);
    fill(out);
    const int fd = std::exchange(file.fd, -1);
    if (::close(fd) != 0)
      reporter.fail("cannot write", errno);
    return;
  }
  if (exists && !S_ISREG(old.st_mode))
    throw runtime_error(tstitch::detail::concat(
        "tstitch: cannot write '", path.string(),
        "': not a regular file (tstitch replaces files; it does not write into block devices "
        "or sockets)"));

  // Unique names, so concurrent writers of the same target never share a temporary.
  for (int attempt = 0; file.fd < 0; ++attempt) {
    const std::filesystem::path candidate = detail::temporary_name(target);
    file.fd = ::open(candidate.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (file.fd >= 0)
      file.temporary = candidate;
    else if (errno != EEXIST || attempt == 100)
      reporter.fail("cannot create a file next to", errno);
  }
  if (exists)
    (void)::fchmod(file.fd, old.st_mode & 07777); // best effort: the old file's permissions
  AtomicWriter out(file.fd, path);
  fill(out);
  if (::fsync(file.fd) != 0)
    reporter.fail("cannot write", errno);
  const int fd = std::exchange(file.fd, -1);
  if (::close(fd) != 0) // NFS and some filesystems report a failed write only here
    reporter.fail("cannot write", errno);
  if (std::rename(file.temporary.c_str(), target.c_str()) != 0)
    reporter.fail("cannot replace", errno);
  file.temporary.clear(); // committed: nothing to remove
  // Best effort: make the rename itself durable (the new file is in place either way).
  const std::filesystem::path parent = target.parent_path().empty() ? "." : target.parent_path();
  const int dir = ::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    (void)::fsync(dir);
    ::close(dir);
  }
}

} // namespace tstitch::io
