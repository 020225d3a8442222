// SPDX-License-Identifier: Apache-2.0
#pragma once

// A dynamic work queue over the ranks of a communicator: tasks 0, 1, ..., n-1 go out one at a time
// to whichever rank asks next, so fast and slow ranks finish together. The queue is a counter in
// an RMA window on rank 0, advanced with MPI_Fetch_and_op under a passive-target lock: no rank
// serves the others or polls for requests. A second counter sums the work done (e.g. samples), for
// one progress bar over the whole job.

#include <cstdint>
#include <exception>
#include <optional>

#include "tstitch/mpi/mpi_c.hpp"

#include "tstitch/core/error.hpp"
#include "tstitch/mpi/environment.hpp"

namespace tstitch::mpi {

class BlockQueue {
public:
  /// Collective over `comm`: a queue of `tasks` tasks.
  BlockQueue(MPI_Comm comm, std::int64_t tasks) : tasks_(tasks) {
    if (tasks < 0)
      throw_invalid_argument("BlockQueue tasks", tasks, "must be >= 0");
    int rank = 0;
    MPI_Comm_rank(comm, &rank);
    const MPI_Aint bytes = rank == 0 ? 2 * static_cast<MPI_Aint>(sizeof(std::int64_t)) : 0;
    check(MPI_Win_allocate(bytes, sizeof(std::int64_t), MPI_INFO_NULL, comm, &counters_, &window_),
          "MPI_Win_allocate (block queue)");
    if (rank == 0)
      counters_[0] = counters_[1] = 0; // before any rank can reach the window (barrier below)
    MPI_Win_lock_all(MPI_MODE_NOCHECK, window_);
    check(MPI_Barrier(comm), "MPI_Barrier (block queue)");
  }
  BlockQueue(const BlockQueue&) = delete;
  BlockQueue& operator=(const BlockQueue&) = delete;
  /// Collective. While an exception unwinds, the window is left to MPI_Abort/MPI_Finalize: freeing
  /// it would wait for ranks that may never come.
  ~BlockQueue() {
    if (std::uncaught_exceptions() > 0)
      return;
    MPI_Win_unlock_all(window_);
    MPI_Win_free(&window_);
  }

  /// The next task for this rank, or nothing once all are taken.
  [[nodiscard]] std::optional<std::int64_t> next() {
    const std::int64_t ticket = fetch_add(0, 1);
    if (ticket >= tasks_)
      return std::nullopt;
    return ticket;
  }

  /// Adds `amount` to the job-wide work-done counter.
  void add_done(std::int64_t amount) { (void)fetch_add(1, amount); }

  /// The job-wide work done so far (as added by every rank).
  [[nodiscard]] std::int64_t done() { return fetch_add(1, 0); }

  [[nodiscard]] std::int64_t tasks() const { return tasks_; }

private:
  std::int64_t fetch_add(MPI_Aint slot, std::int64_t amount) {
    std::int64_t old = 0;
    check(MPI_Fetch_and_op(&amount, &old, MPI_INT64_T, 0, slot, amount == 0 ? MPI_NO_OP : MPI_SUM,
                           window_),
          "MPI_Fetch_and_op (block queue)");
    check(MPI_Win_flush(0, window_), "MPI_Win_flush (block queue)");
    return old;
  }

  std::int64_t tasks_;
  std::int64_t* counters_ = nullptr;
  MPI_Win window_ = MPI_WIN_NULL;
};

} // namespace tstitch::mpi
