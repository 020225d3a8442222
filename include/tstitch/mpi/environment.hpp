// SPDX-License-Identifier: Apache-2.0
#pragma once

// The MPI session of a program: MPI_Init on construction and MPI_Finalize on destruction, the
// process's rank, the job's size, the rank among the processes of its node (for picking a GPU),
// and the one way a rank ends the job on an error: print the cause with its rank, then MPI_Abort,
// so that no other rank waits forever in a collective call.

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "tstitch/mpi/mpi_c.hpp"

#include "tstitch/core/error.hpp"

namespace tstitch::mpi {

/// Throws tstitch::runtime_error naming the MPI call and MPI's own message when `code` is an error.
inline void check(int code, std::string_view call) {
  if (code == MPI_SUCCESS)
    return;
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  MPI_Error_string(code, text, &length);
  throw runtime_error(tstitch::detail::concat(call, " failed: ", std::string(text, length)));
}

class Environment {
public:
  /// Initialises MPI (funneled threads: OpenMP workers make no MPI calls). Errors on the world
  /// communicator are returned, not fatal, so they become exceptions naming the call.
  Environment(int* argc, char*** argv) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
      owns_ = true;
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    MPI_Comm node = MPI_COMM_NULL;
    check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node),
          "MPI_Comm_split_type");
    MPI_Comm_rank(node, &local_rank_);
    MPI_Comm_size(node, &local_size_);
    MPI_Comm_free(&node);
    char name[MPI_MAX_PROCESSOR_NAME] = {};
    int length = 0;
    MPI_Get_processor_name(name, &length);
    host_.assign(name, static_cast<std::size_t>(length));
  }
  Environment(const Environment&) = delete;
  Environment& operator=(const Environment&) = delete;
  ~Environment() {
    if (owns_)
      MPI_Finalize();
  }

  [[nodiscard]] int rank() const { return rank_; }
  [[nodiscard]] int size() const { return size_; }
  /// The rank among this node's processes (MPI_COMM_TYPE_SHARED): GPU local_rank() % GPUs.
  [[nodiscard]] int local_rank() const { return local_rank_; }
  [[nodiscard]] int local_size() const { return local_size_; }
  [[nodiscard]] const std::string& host() const { return host_; }

  /// "rank 2 of 4 (node7)", for messages.
  [[nodiscard]] std::string where() const {
    return tstitch::detail::concat("rank ", rank_, " of ", size_, " (", host_, ")");
  }

  /// Prints "<program>: error: rank R of K (host): <message>" and ends every rank of the job.
  [[noreturn]] void abort(std::string_view program, std::string_view message) const {
    std::fprintf(stderr, "%.*s: error: %s: %.*s\n", static_cast<int>(program.size()),
                 program.data(), where().c_str(), static_cast<int>(message.size()), message.data());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    std::abort(); // MPI_Abort does not return; this satisfies [[noreturn]] if it ever did
  }

private:
  bool owns_ = false;
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
  std::string host_;
};

} // namespace tstitch::mpi
