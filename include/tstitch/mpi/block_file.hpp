// SPDX-License-Identifier: Apache-2.0
#pragma once

// One output file shared by every rank: opened collectively with MPI-IO at its final size, each
// rank writes its blocks at their byte offsets (independent MPI_File_write_at: ranks finish
// different numbers of blocks), and the file is closed collectively. flush() makes this rank's
// blocks durable (fdatasync) before they are recorded as complete, so a journal never outlives
// the bytes it lists.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <limits>
#include <string>

#include <fcntl.h>
#include <unistd.h>

#include "tstitch/mpi/mpi_c.hpp"

#include "tstitch/core/error.hpp"
#include "tstitch/mpi/environment.hpp"

namespace tstitch::mpi {

class BlockFile {
public:
  /// Collective over `comm`. fresh: any old file at `path` is replaced by one of `size` bytes;
  /// otherwise (a resume) the existing file is opened as it is and must already have `size` bytes.
  BlockFile(MPI_Comm comm, const std::filesystem::path& path, std::uint64_t size, bool fresh)
      : path_(path) {
    int rank = 0;
    MPI_Comm_rank(comm, &rank);
    if (fresh && rank == 0) {
      std::error_code ignored;
      std::filesystem::remove(path, ignored);
    }
    check(MPI_Barrier(comm), "MPI_Barrier (output file)");
    const int mode = MPI_MODE_WRONLY | (fresh ? MPI_MODE_CREATE : 0);
    fail_if(MPI_File_open(comm, path.c_str(), mode, MPI_INFO_NULL, &file_), "cannot open");
    open_ = true;
    if (fresh) {
      fail_if(MPI_File_set_size(file_, static_cast<MPI_Offset>(size)), "cannot size");
    } else {
      MPI_Offset have = 0;
      fail_if(MPI_File_get_size(file_, &have), "cannot size");
      if (static_cast<std::uint64_t>(have) != size)
        throw runtime_error(detail::concat("'", path.string(), "' has ", have,
                                           " bytes; the run it resumes writes ", size));
    }
    fd_ = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd_ < 0)
      throw runtime_error(detail::concat("cannot open '", path.string(), "' for flushing"));
  }
  BlockFile(const BlockFile&) = delete;
  BlockFile& operator=(const BlockFile&) = delete;
  ~BlockFile() {
    if (fd_ >= 0)
      ::close(fd_);
    if (open_ && std::uncaught_exceptions() == 0) // collective; skipped while unwinding
      MPI_File_close(&file_);
  }

  /// Writes `bytes` bytes at `offset` (this rank alone).
  void write_at(std::uint64_t offset, const void* data, std::size_t bytes) {
    const auto* p = static_cast<const char*>(data);
    constexpr std::size_t piece = std::size_t{1} << 30; // a count is an int
    while (bytes > 0) {
      const std::size_t n = std::min(bytes, piece);
      MPI_Status status;
      fail_if(MPI_File_write_at(file_, static_cast<MPI_Offset>(offset), p, static_cast<int>(n),
                                MPI_BYTE, &status),
              "cannot write");
      int written = 0;
      MPI_Get_count(&status, MPI_BYTE, &written);
      if (written <= 0)
        throw runtime_error(detail::concat("cannot write '", path_.string(), "' at byte ", offset,
                                           ": no progress (a full disk?)"));
      p += written;
      offset += static_cast<std::uint64_t>(written);
      bytes -= static_cast<std::size_t>(written);
    }
  }

  /// Makes the bytes written so far durable (this rank alone).
  void flush() {
    if (::fdatasync(fd_) != 0)
      throw runtime_error(detail::concat("cannot flush '", path_.string(), "'"));
  }

  /// Collective: flushes and closes the file.
  void close() {
    flush();
    open_ = false;
    fail_if(MPI_File_close(&file_), "cannot close");
  }

  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

private:
  void fail_if(int code, const char* what) const {
    if (code == MPI_SUCCESS)
      return;
    char text[MPI_MAX_ERROR_STRING] = {};
    int length = 0;
    MPI_Error_string(code, text, &length);
    throw runtime_error(
        detail::concat(what, " '", path_.string(), "': ", std::string(text, length)));
  }

  std::filesystem::path path_;
  MPI_File file_ = MPI_FILE_NULL;
  bool open_ = false;
  int fd_ = -1;
};

} // namespace tstitch::mpi
