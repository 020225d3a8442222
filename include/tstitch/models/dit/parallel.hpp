// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace tstitch::dit {

/// Runs body(i) for every i in [0, count), shared among OpenMP threads in static chunks, and
/// rethrows on the calling thread an exception that a body threw. An exception must not leave an
/// OpenMP region: the program would terminate, e.g. on std::bad_alloc from Eigen's packing
/// buffers. After the first exception the remaining bodies still run (OpenMP cannot break out of
/// a loop); when several throw, one of them is rethrown.
///
/// The team: omp_get_max_threads() of the calling thread when `threads` is 0, else `threads`.
/// A team of one is still a (serialised) parallel region, so inside a body omp_get_thread_num()
/// is always in [0, team size), never the calling thread's number in an outer team: the DiT's
/// attention indexes its per-thread scratch by it.
template <class Body>
void parallel_for(std::int64_t count, Body&& body, [[maybe_unused]] int threads = 0) {
  std::exception_ptr failure;
#ifdef _OPENMP
  const int team = threads > 0 ? threads : omp_get_max_threads();
#pragma omp parallel for schedule(static) if (team > 1) num_threads(team)
#endif
  for (std::int64_t i = 0; i < count; ++i) {
    try {
      body(i);
    } catch (...) {
#ifdef _OPENMP
#pragma omp critical(tstitch_parallel_for_failure)
#endif
      if (!failure)
        failure = std::current_exception();
    }
  }
  if (failure)
    std::rethrow_exception(failure);
}

/// A host application's thread pool, as the CPU DiT sees it: `executor(count, task)` must call
/// task(i) exactly once for every i in [0, count), on whichever of its threads it likes (the
/// calling thread too), and return when all have returned. Tasks never throw into it.
using ParallelFor =
    std::function<void(std::int64_t count, const std::function<void(std::int64_t)>& task)>;

/// Runs body(i) for i in [0, count) on `executor` when it is set, else with parallel_for on
/// `threads` OpenMP threads; rethrows a body's exception on the calling thread either way.
template <class Body>
void run_tasks(const ParallelFor& executor, std::int64_t count, Body&& body, int threads) {
  if (!executor) {
    parallel_for(count, body, threads);
    return;
  }
  std::exception_ptr failure;
  std::atomic_flag failed;
  executor(count, [&](std::int64_t i) {
    try {
      body(i);
    } catch (...) {
      if (!failed.test_and_set())
        failure = std::current_exception();
    }
  });
  if (failure)
    std::rethrow_exception(failure);
}

} // namespace tstitch::dit
