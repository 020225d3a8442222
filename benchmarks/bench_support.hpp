// SPDX-License-Identifier: Apache-2.0
#pragma once

// Shared by the benchmarks: a heap-allocation counter (each benchmark program replaces the
// global operator new with TSTITCH_BENCH_COUNT_ALLOCATIONS() once) and a denoiser that costs
// nothing, so timings measure the loop, the solver and the stitcher only.

#include <atomic>
#include <cstdlib>
#include <new>

#include "tstitch/core/denoiser.hpp"

namespace tstitch::bench {

inline std::atomic<long> allocations{0};

/// Leaves its output buffer as it is (zeros): no model cost at all.
struct FreeDenoiser {
  using condition_type = NoCondition;
  Shape shape;
  Prediction kind = Prediction::epsilon;
  [[nodiscard]] Prediction prediction() const { return kind; }
  [[nodiscard]] Shape latent_shape() const { return shape; }
  void predict(ConstView, const StepContext&, const NoCondition&, View) const {}
};

} // namespace tstitch::bench

// g++ cannot see that the replaced operator new allocates with malloc and flags the free.
#if defined(__GNUC__) && !defined(__clang__)
#define TSTITCH_BENCH_IGNORE_MISMATCH _Pragma("GCC diagnostic ignored \"-Wmismatched-new-delete\"")
#else
#define TSTITCH_BENCH_IGNORE_MISMATCH
#endif

#define TSTITCH_BENCH_COUNT_ALLOCATIONS()                                                          \
  TSTITCH_BENCH_IGNORE_MISMATCH                                                                    \
  void* operator new(std::size_t size) {                                                           \
    tstitch::bench::allocations.fetch_add(1, std::memory_order_relaxed);                           \
    if (void* p = std::malloc(size == 0 ? 1 : size))                                               \
      return p;                                                                                    \
    throw std::bad_alloc();                                                                        \
  }                                                                                                \
  void operator delete(void* p) noexcept { std::free(p); }                                         \
  void operator delete(void* p, std::size_t) noexcept { std::free(p); }
