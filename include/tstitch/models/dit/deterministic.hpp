// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

#include <Eigen/Core>

#ifdef _OPENMP
#include <omp.h>
#endif

/// What keeps the CPU DiT's bits independent of where its data lie in memory.
///
/// Eigen's vectorised loops start at the first packet-aligned element and treat the unaligned head
/// with scalar code: a sum adds the head apart, and exp or tanh evaluate it with the C library
/// instead of Eigen's packet approximations (a few ulp apart). So the bits of a row's result
/// depend on its address mod the packet size (16 bytes with SSE, 64 with AVX-512). Addresses
/// change with the allocator, with a model's history of batch sizes and with the OpenMP thread a
/// task lands on; outputs must not. So every buffer the DiT computes in starts aligned, and
/// per-thread slices are padded to whole packets: a row's alignment then depends only on its
/// place in the batch.
namespace tstitch::dit {

/// The alignment of the DiT's buffers: 64 bytes (the widest x86 packet, AVX-512, and a multiple of
/// every narrower one), the same in every translation unit whatever its -march, so that code
/// built for different CPUs agrees on it (EIGEN_MAX_ALIGN_BYTES differs between them).
inline constexpr std::size_t buffer_alignment = std::max<std::size_t>(64, EIGEN_MAX_ALIGN_BYTES);

/// Allocates through the aligned operator new (not Eigen's aligned_malloc, so that a program's
/// replacement of operator new, such as the tests' allocation counter, sees these buffers too).
template <class T> struct PacketAlignedAllocator {
  using value_type = T;
  static constexpr std::align_val_t alignment{buffer_alignment};

  PacketAlignedAllocator() = default;
  template <class U>
  PacketAlignedAllocator(const PacketAlignedAllocator<U>&) noexcept {} // NOLINT: rebinding
  [[nodiscard]] T* allocate(std::size_t n) {
    return static_cast<T*>(::operator new(n * sizeof(T), alignment));
  }
  void deallocate(T* p, std::size_t) noexcept { ::operator delete(p, alignment); }
  friend bool operator==(const PacketAlignedAllocator&, const PacketAlignedAllocator&) = default;
};

/// A buffer whose first element is aligned to buffer_alignment (at least Eigen's largest packet),
/// so that an element's alignment depends only on its index.
template <class T> using AlignedBuffer = std::vector<T, PacketAlignedAllocator<T>>;

/// The floats between rows of n that all start aligned in an AlignedBuffer: n rounded up to a
/// whole packet.
inline std::int64_t aligned_stride(std::int64_t n) {
  constexpr auto floats = static_cast<std::int64_t>(buffer_alignment / sizeof(float));
  return (n + floats - 1) / floats * floats;
}

/// Within its scope, parallel regions started by the calling thread run on `threads` threads:
/// OpenMP loops, and the libraries that size their teams from omp_get_max_threads() (Eigen's
/// GEMM, oneDNN). 0 leaves the count as it is.
class ThreadCountScope {
public:
  explicit ThreadCountScope([[maybe_unused]] int threads) {
#ifdef _OPENMP
    previous_ = omp_get_max_threads();
    if (threads > 0)
      omp_set_num_threads(threads);
#endif
  }
  ~ThreadCountScope() {
#ifdef _OPENMP
    omp_set_num_threads(previous_);
#endif
  }
  ThreadCountScope(const ThreadCountScope&) = delete;
  ThreadCountScope& operator=(const ThreadCountScope&) = delete;

private:
  [[maybe_unused]] int previous_ = 1;
};

/// Parallel regions started by the calling thread run on one thread within its scope. Eigen's
/// GEMM otherwise threads itself when called outside an active parallel region, with depth
/// blocks sized for the team, which changes the bits with the thread count.
class SingleThreadedScope : public ThreadCountScope {
public:
  SingleThreadedScope() : ThreadCountScope(1) {}
};

} // namespace tstitch::dit
