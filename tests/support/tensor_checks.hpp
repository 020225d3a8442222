// SPDX-License-Identifier: Apache-2.0
// Small helpers shared by the solver and DiT tests: comparing and inspecting host tensors, and a
// host backend that counts its allocations (for the "allocates in begin() only" tests).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "tstitch/core/host_backend.hpp"
#include "tstitch/core/tensor.hpp"

namespace tstitch::testing {

/// Whether a and b hold the same floats, bit for bit.
inline bool bit_identical(const Tensor& a, const Tensor& b) {
  return a.numel() == b.numel() &&
         std::memcmp(a.data(), b.data(), sizeof(float) * static_cast<std::size_t>(a.numel())) == 0;
}

/// ||a - b|| / ||b|| over n floats, in double.
inline double relative_l2(const float* a, const float* b, std::int64_t n) {
  double diff = 0, norm = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    diff += d * d;
    norm += static_cast<double>(b[i]) * static_cast<double>(b[i]);
  }
  return std::sqrt(diff / norm);
}

/// ||a - b|| / ||b||, in double.
inline double relative_l2(const Tensor& a, const Tensor& b) {
  return relative_l2(a.data(), b.data(), a.numel());
}

/// Whether no element of x is NaN or infinite.
inline bool all_finite(const Tensor& x) {
  for (std::int64_t i = 0; i < x.numel(); ++i)
    if (!std::isfinite(x[i]))
      return false;
  return true;
}

/// The sum of |a - b| over all elements, in double.
inline double abs_difference(const Tensor& a, const Tensor& b) {
  double sum = 0;
  for (std::int64_t i = 0; i < a.numel(); ++i)
    sum += std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i]));
  return sum;
}

/// The largest |a - b| over all elements, in double.
inline double max_abs_difference(const Tensor& a, const Tensor& b) {
  double largest = 0;
  for (std::int64_t i = 0; i < a.numel(); ++i)
    largest = std::max(largest, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
  return largest;
}

/// A copy of samples [first, first + count) of t.
inline Tensor copy_samples(const Tensor& t, std::int64_t first, std::int64_t count) {
  const ConstView part = t.view().samples(first, count);
  Tensor copy(count, t.shape());
  std::memcpy(copy.data(), part.data(), sizeof(float) * static_cast<std::size_t>(copy.numel()));
  return copy;
}

/// The host backend, counting allocations in *allocations.
struct CountingBackend : HostBackend {
  int* allocations;
  [[nodiscard]] Tensor allocate(std::int64_t batch, Shape s) const {
    ++*allocations;
    return HostBackend::allocate(batch, s);
  }
};

} // namespace tstitch::testing
