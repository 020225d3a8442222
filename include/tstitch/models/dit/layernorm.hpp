// SPDX-License-Identifier: Apache-2.0
#pragma once

// DiT's modulated LayerNorm of one row, out = (x - mean) / sqrt(var + eps) * (1 + scale) + shift
// (no affine parameters; eps 1e-6), in float32 with two passes as PyTorch computes it, so that the
// variance is of centred values. Two paths chosen at run time: AVX2 + FMA (functions carrying
// target("avx2,fma"), so a baseline x86-64 build has them) and portable scalar code, both summing
// in eight interleaved partial sums reduced in the same order. They agree to float rounding (the
// compiler may contract either's scalar tails into FMAs), and neither depends on the row's
// alignment, so a row's bits depend only on the path.

#include <cmath>
#include <cstdint>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include "tstitch/core/cpu_isa.hpp"

namespace tstitch::dit {

namespace layernorm_detail {

inline constexpr float epsilon = 1e-6f;

/// The eight partial sums added pairwise, in the order the AVX2 path reduces its register.
inline float reduce8(const float (&lane)[8]) {
  return ((lane[0] + lane[4]) + (lane[2] + lane[6])) + ((lane[1] + lane[5]) + (lane[3] + lane[7]));
}

inline void modulate_scalar(const float* x, const float* shift, const float* scale, std::int64_t d,
                            float* out) {
  float lane[8] = {};
  std::int64_t k = 0;
  for (; k + 8 <= d; k += 8)
    for (int l = 0; l < 8; ++l)
      lane[l] += x[k + l];
  float sum = reduce8(lane);
  for (; k < d; ++k)
    sum += x[k];
  const float mean = sum / static_cast<float>(d);
  float square[8] = {};
  for (k = 0; k + 8 <= d; k += 8)
    for (int l = 0; l < 8; ++l)
      square[l] += (x[k + l] - mean) * (x[k + l] - mean);
  float squares = reduce8(square);
  for (; k < d; ++k)
    squares += (x[k] - mean) * (x[k] - mean);
  const float inv = 1.0f / std::sqrt(squares / static_cast<float>(d) + epsilon);
  for (k = 0; k < d; ++k)
    out[k] = (x[k] - mean) * inv * (1.0f + scale[k]) + shift[k];
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2,fma"))) inline float reduce8_avx2(__m256 v) {
  // (l0 + l4, l1 + l5, l2 + l6, l3 + l7), then pairs (0, 2) and (1, 3), then the two: reduce8.
  const __m128 half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 quarter = _mm_add_ps(half, _mm_movehl_ps(half, half));
  return _mm_cvtss_f32(_mm_add_ss(quarter, _mm_shuffle_ps(quarter, quarter, 1)));
}

__attribute__((target("avx2,fma"))) inline void
modulate_avx2(const float* x, const float* shift, const float* scale, std::int64_t d, float* out) {
  __m256 lanes = _mm256_setzero_ps();
  std::int64_t k = 0;
  for (; k + 8 <= d; k += 8)
    lanes = _mm256_add_ps(lanes, _mm256_loadu_ps(x + k));
  float sum = reduce8_avx2(lanes);
  for (; k < d; ++k)
    sum += x[k];
  const float mean = sum / static_cast<float>(d);
  const __m256 centre = _mm256_set1_ps(mean);
  __m256 squares8 = _mm256_setzero_ps();
  for (k = 0; k + 8 <= d; k += 8) {
    const __m256 c = _mm256_sub_ps(_mm256_loadu_ps(x + k), centre);
    squares8 = _mm256_add_ps(squares8, _mm256_mul_ps(c, c));
  }
  float squares = reduce8_avx2(squares8);
  for (; k < d; ++k)
    squares += (x[k] - mean) * (x[k] - mean);
  const float inv = 1.0f / std::sqrt(squares / static_cast<float>(d) + epsilon);
  const __m256 inv8 = _mm256_set1_ps(inv), one = _mm256_set1_ps(1.0f);
  for (k = 0; k + 8 <= d; k += 8) {
    const __m256 normed = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + k), centre), inv8);
    const __m256 gain = _mm256_add_ps(one, _mm256_loadu_ps(scale + k));
    _mm256_storeu_ps(out + k,
                     _mm256_add_ps(_mm256_mul_ps(normed, gain), _mm256_loadu_ps(shift + k)));
  }
  for (; k < d; ++k)
    out[k] = (x[k] - mean) * inv * (1.0f + scale[k]) + shift[k];
}
#endif

} // namespace layernorm_detail

/// One row of d floats; `isa` picks the path (CpuIsa::avx2 needs a CPU with AVX2 and FMA: pass
/// cpu_isa()).
inline void layernorm_modulate(CpuIsa isa, const float* x, const float* shift, const float* scale,
                               std::int64_t d, float* out) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (isa == CpuIsa::avx2) {
    layernorm_detail::modulate_avx2(x, shift, scale, d, out);
    return;
  }
#endif
  static_cast<void>(isa);
  layernorm_detail::modulate_scalar(x, shift, scale, d, out);
}

} // namespace tstitch::dit
