// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "tstitch/core/error.hpp"
#include "tstitch/core/noise_source.hpp"
#include "tstitch/core/philox.hpp"
#include "tstitch/core/tensor.hpp"

namespace tstitch {

/// One term `coeff * x` of a linear combination.
struct Term {
  float coeff;
  ConstView x;
};

/// The element-wise operations every solver is written against, on host memory.
///
/// Solvers never loop over elements themselves: they call these, so a device backend that offers
/// the same members (with kernels, on device pointers) runs every solver unchanged and latents
/// never leave the GPU. All operations are element-wise, so `out` may alias any input.
struct HostBackend {
  using tensor_type = Tensor;

  /// fill_normal's noise: Philox by NoiseKey (the default) or a PyTorch generator's sequence.
  NoiseSource noise{};

  [[nodiscard]] Tensor allocate(std::int64_t batch, Shape shape) const { return {batch, shape}; }

  /// out = sum_k coeff_k * x_k, evaluated left to right in float32, for one to four terms.
  template <class... Terms>
  requires(sizeof...(Terms) >= 1 && sizeof...(Terms) <= 4 &&
           (std::is_same_v<Terms, Term> && ...)) void combine(View out,
                                                              const Terms&... terms) const {
    (check_same_extent(out, terms.x, "combine"), ...);
    const bool flat = out.contiguous() && (terms.x.contiguous() && ...);
    for_each_row(out, flat, [&](std::int64_t n, float* dst, std::int64_t count) {
      // One pointer and one coefficient per term, unrolled by the pack expansion, so the loop
      // body is a plain sum the compiler vectorises (after checking `dst` against the inputs).
      combine_row(dst, count, std::make_pair(terms.coeff, row(terms.x, n))...);
    });
  }

  /// out[e] = f(in_0[e], in_1[e], ...): element-wise non-linear updates (clipping, learned-range
  /// variance). `f` must be a TSTITCH_HOST_DEVICE callable so device backends can run it too.
  template <class F, class... Inputs>
  requires(std::is_same_v<Inputs, ConstView>&&...) void map(View out, F f,
                                                            const Inputs&... in) const {
    (check_same_extent(out, in, "map"), ...);
    const bool flat = out.contiguous() && (in.contiguous() && ...);
    for_each_row(out, flat, [&](std::int64_t n, float* dst, std::int64_t count) {
      map_row(dst, count, f, row(in, n)...);
    });
  }

  void copy(View out, ConstView in) const {
    check_same_extent(out, in, "copy");
    for_each_row(out, out.contiguous() && in.contiguous(),
                 [&](std::int64_t n, float* dst, std::int64_t count) {
                   std::memmove(dst, row(in, n), static_cast<std::size_t>(count) * sizeof(float));
                 });
  }

  void fill(View out, float value) const {
    for_each_row(out, out.contiguous(), [&](std::int64_t, float* dst, std::int64_t count) {
      for (std::int64_t e = 0; e < count; ++e)
        dst[e] = value;
    });
  }

  /// Standard normal noise: batch row b gets the stream of sample `key.sample + b`, so a sample's
  /// noise does not depend on the batch it is drawn in. With a torch `noise` source: the
  /// generator's next torch.randn of the whole batch instead (the key is not used).
  void fill_normal(View out, NoiseKey key) const {
    if (!noise.counter_based()) {
      fill_normal_in_sequence(out);
      return;
    }
    for_each_row(out, /*flat=*/false, [&](std::int64_t n, float* dst, std::int64_t count) {
      NoiseKey row_key = key;
      row_key.sample = key.sample + static_cast<std::uint32_t>(n);
      tstitch::fill_normal(dst, static_cast<std::size_t>(count), row_key);
    });
  }

  /// Flat index (n * C*H*W + offset in the sample) of the first NaN or Inf, or -1.
  [[nodiscard]] std::int64_t find_nonfinite(ConstView x) const {
    const std::int64_t per_sample = x.sample_numel();
    for (std::int64_t n = 0; n < x.batch(); ++n) {
      const float* src = row(x, n);
      if (count_nonfinite(src, per_sample) == 0) // the common case: one vectorised pass
        continue;
      for (std::int64_t e = 0; e < per_sample; ++e)
        if (!std::isfinite(src[e]))
          return n * per_sample + e;
    }
    return -1;
  }

  /// Host memory is directly readable: the view itself (used by preview callbacks and tests).
  [[nodiscard]] ConstView host_view(ConstView x) const { return x; }

private:
  /// One torch.randn of the whole batch, rows in order (a strided batch goes through a buffer).
  void fill_normal_in_sequence(View out) const {
    const auto count = static_cast<std::size_t>(out.numel());
    if (out.contiguous()) {
      noise.randn(std::span<float>(out.data(), count));
      return;
    }
    std::vector<float> values(count);
    noise.randn(values);
    const auto per_sample = static_cast<std::size_t>(out.sample_numel());
    for_each_row(out, false, [&](std::int64_t n, float* dst, std::int64_t) {
      std::memcpy(dst, values.data() + static_cast<std::size_t>(n) * per_sample,
                  per_sample * sizeof(float));
    });
  }

  static const float* row(ConstView x, std::int64_t n) { return x.data() + n * x.batch_stride(); }

  template <class F, class... Rows>
  static void map_row(float* dst, std::int64_t count, const F& f, const Rows*... rows) {
    for (std::int64_t e = 0; e < count; ++e)
      dst[e] = f(rows[e]...);
  }

  template <class... Pairs>
  static void combine_row(float* dst, std::int64_t count, const Pairs&... terms) {
    for (std::int64_t e = 0; e < count; ++e)
      dst[e] = sum_terms(e, terms...);
  }
  // Left to right: ((c0 x0 + c1 x1) + c2 x2) + c3 x3, the order the documentation promises.
  template <class First, class... Rest>
  static float sum_terms(std::int64_t e, const First& first, const Rest&... rest) {
    float acc = first.first * first.second[e];
    ((acc += rest.first * rest.second[e]), ...);
    return acc;
  }

  /// NaN and Inf are the floats whose exponent bits are all ones. Testing the bits with integer
  /// arithmetic and no early exit lets the compiler vectorise the scan.
  static std::int64_t count_nonfinite(const float* values, std::int64_t count) {
    std::int32_t found = 0;
    for (std::int64_t e = 0; e < count; ++e) {
      std::uint32_t bits;
      std::memcpy(&bits, values + e, sizeof bits);
      found += static_cast<std::int32_t>((bits & 0x7f800000u) == 0x7f800000u);
    }
    return found;
  }

  /// Calls body(n, row pointer, count) for every sample row, or once for the whole batch when
  /// every operand is contiguous (`flat`), which lets the compiler vectorise one long loop.
  template <class F> static void for_each_row(View out, bool flat, F&& body) {
    const std::int64_t per_sample = out.sample_numel();
    if (flat) {
      body(0, out.data(), out.numel());
      return;
    }
    for (std::int64_t n = 0; n < out.batch(); ++n)
      body(n, out.data() + n * out.batch_stride(), per_sample);
  }

  static void check_same_extent(View out, ConstView in, const char* operation) {
    if (in.batch() != out.batch() || in.shape() != out.shape())
      throw_invalid_argument(detail::concat(operation, " input shape"), shape_string(in),
                             detail::concat("must equal the output shape ", shape_string(out)));
  }
};

} // namespace tstitch
