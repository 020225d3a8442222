// SPDX-License-Identifier: Apache-2.0
#pragma once

// Fused multi-head self-attention for small heads (head_dim <= 64 or so, up to ~1k tokens), one
// (sample, head) pair at a time on one thread: k^T, v and the scores of a few query rows sit in
// scratch of a few tens of KiB, so q k^T, the softmax and p v run from L1 with no T x T buffer.
// At the shipped Fashion-MNIST DiTs' sizes (64 tokens, heads of 16 and 32) SelfAttention's batched
// oneDNN matmuls do the same arithmetic with far more overhead per head.
//
// Two paths: a portable scalar one, written to be obviously right, and an AVX2 + FMA one whose
// functions carry target("avx2,fma"), so that a baseline x86-64 build compiles them and calls them
// only where the CPU has both (fused_attention_avx2_supported asks at run time).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "tstitch/core/cpu_isa.hpp"
#include "tstitch/core/error.hpp"

namespace tstitch::dit {

/// Which code path the fused kernel takes.
enum class FusedAttentionPath { scalar, avx2 };

} // namespace tstitch::dit

// Not tstitch::dit::detail: a namespace of that name would hide tstitch::detail from the
// unqualified `detail::` calls in the other DiT headers.
namespace tstitch::detail::fused_attention_kernels {

inline constexpr std::int64_t lanes = 8;      // floats in an AVX register
inline constexpr std::int64_t row_block = 6;  // query rows whose scores are in scratch at once
inline constexpr std::int64_t alignment = 16; // floats in 64 bytes: each scratch array starts there

constexpr std::int64_t round_up(std::int64_t value, std::int64_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}

/// Where the scratch arrays lie, in floats from its start. The AVX2 path pads the token and
/// head_dim axes to whole registers; the scalar path uses `scores` (T floats) only.
struct ScratchLayout {
  std::int64_t padded_tokens, padded_head_dim;
  std::int64_t keys_transposed; // [head_dim][padded_tokens], zero padded
  std::int64_t values;          // [tokens][padded_head_dim], zero padded
  std::int64_t scores;          // [row_block][padded_tokens]
  std::int64_t total;
};

constexpr ScratchLayout scratch_layout(std::int64_t tokens, std::int64_t head_dim) {
  const std::int64_t padded_tokens = round_up(tokens, lanes);
  const std::int64_t padded_head_dim = round_up(head_dim, lanes);
  const std::int64_t keys = round_up(head_dim * padded_tokens, alignment);
  const std::int64_t values = round_up(tokens * padded_head_dim, alignment);
  const std::int64_t scores = round_up(row_block * padded_tokens, alignment);
  return {padded_tokens, padded_head_dim, 0, keys, keys + values, keys + values + scores};
}

/// 1 / sqrt(head_dim) rounded once (in float arithmetic the sqrt and the division round twice).
inline float score_scale(std::int64_t head_dim) {
  return static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)));
}

/// One (sample, head) pair: q, k and v rows of head_dim floats `qkv_stride` apart at qkv,
/// qkv + model_dim and qkv + 2 model_dim; out rows `model_dim` apart.
inline void attend_scalar(const float* qkv, std::int64_t tokens, std::int64_t model_dim,
                          std::int64_t head_dim, float* out, float* scores) {
  const std::int64_t qkv_stride = 3 * model_dim;
  const float scale = score_scale(head_dim);
  for (std::int64_t i = 0; i < tokens; ++i) {
    const float* query = qkv + i * qkv_stride;
    float top = -std::numeric_limits<float>::infinity();
    for (std::int64_t j = 0; j < tokens; ++j) {
      const float* key = qkv + j * qkv_stride + model_dim;
      float dot = 0.0f;
      for (std::int64_t e = 0; e < head_dim; ++e)
        dot += query[e] * key[e];
      scores[j] = scale * dot;
      top = std::max(top, scores[j]);
    }
    float sum = 0.0f;
    for (std::int64_t j = 0; j < tokens; ++j) {
      scores[j] = std::exp(scores[j] - top);
      sum += scores[j];
    }
    float* row = out + i * model_dim;
    std::fill(row, row + head_dim, 0.0f);
    for (std::int64_t j = 0; j < tokens; ++j) {
      const float* value = qkv + j * qkv_stride + 2 * model_dim;
      for (std::int64_t e = 0; e < head_dim; ++e)
        row[e] += scores[j] * value[e];
    }
    for (std::int64_t e = 0; e < head_dim; ++e)
      row[e] /= sum;
  }
}

#if defined(__x86_64__) || defined(__i386__)

#define TSTITCH_FUSED_AVX2 __attribute__((target("avx2,fma"), always_inline)) inline
// The three steps of a row block stay separate functions: inlined into one, g++ keeps the exp's
// constants in registers throughout and spills the other steps' accumulators.
#define TSTITCH_FUSED_AVX2_STEP __attribute__((target("avx2,fma"), noinline)) inline

/// exp(x) for x <= 0, within 2 ulp, as exactly 0 where exp(x) < FLT_MIN: a denormal would be
/// slow in the products that follow and is far below the rounding of a softmax sum (>= 1). NaN
/// stays NaN. Cephes' range reduction x = n ln2 + r, |r| <= ln2 / 2; exp(r) by a degree-6
/// polynomial (relative error 4e-9, fitted by minimax on that interval with its first two
/// coefficients 1, so Horner's last two steps are exact FMAs); then times 2^n.
TSTITCH_FUSED_AVX2 __m256 exp_nonpositive(__m256 x) {
  // Just above ln(FLT_MIN) = -87.33654...: at and above it n >= -126 (2^n normal). Lanes below
  // compute garbage that the mask clears.
  const __m256 underflow = _mm256_cmp_ps(x, _mm256_set1_ps(-87.3365f), _CMP_LT_OQ);
  // Adding 1.5 * 2^23 rounds x log2(e) to the nearest integer n and leaves n in the low bits.
  const __m256 shifter = _mm256_set1_ps(0x1.8p23f);
  const __m256 shifted = _mm256_fmadd_ps(x, _mm256_set1_ps(0x1.715476p+0f), shifter);
  const __m256 n = _mm256_sub_ps(shifted, shifter);
  // ln2 in two parts; n times the first is exact, so r keeps its low bits.
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.63p-1f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-0x1.bd0106p-13f), r);
  __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(0x1.6a244cp-10f), r, _mm256_set1_ps(0x1.1239d4p-7f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0x1.5558f2p-5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0x1.555492p-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0x1.fffffcp-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  // Times 2^n by adding n to the exponent field: integer work, off the two ports that do all the
  // FMAs. Exact, as p is in [0.7, 1.42] and the result normal (n > -126, or n = -126 and r > 0,
  // so p >= 1). n from cvt, not from shifted's bits: a NaN converts to INT_MIN, whose shift is 0.
  const __m256i exponent_step = _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23);
  const __m256i bits = _mm256_add_epi32(_mm256_castps_si256(p), exponent_step);
  return _mm256_andnot_ps(underflow, _mm256_castsi256_ps(bits));
}

TSTITCH_FUSED_AVX2 float horizontal_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

TSTITCH_FUSED_AVX2 float horizontal_max(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/// Writes the 8 x 8 block at src (rows `src_stride` apart) transposed and times `scale` to dst
/// (rows `dst_stride` apart).
TSTITCH_FUSED_AVX2 void transpose_8x8(const float* src, std::int64_t src_stride, float* dst,
                                      std::int64_t dst_stride, __m256 scale) {
  __m256 row[lanes];
#pragma GCC unroll 8
  for (int r = 0; r < lanes; ++r)
    row[r] = _mm256_loadu_ps(src + r * src_stride);
  __m256 pair[lanes], quad[lanes];
#pragma GCC unroll 4
  for (int r = 0; r < lanes; r += 2) { // 2 x 2 blocks within each 128-bit half
    pair[r] = _mm256_unpacklo_ps(row[r], row[r + 1]);
    pair[r + 1] = _mm256_unpackhi_ps(row[r], row[r + 1]);
  }
#pragma GCC unroll 2
  for (int r = 0; r < lanes; r += 4) { // 4 x 4 blocks within each half
    quad[r] = _mm256_shuffle_ps(pair[r], pair[r + 2], 0x44);
    quad[r + 1] = _mm256_shuffle_ps(pair[r], pair[r + 2], 0xEE);
    quad[r + 2] = _mm256_shuffle_ps(pair[r + 1], pair[r + 3], 0x44);
    quad[r + 3] = _mm256_shuffle_ps(pair[r + 1], pair[r + 3], 0xEE);
  }
#pragma GCC unroll 4
  for (int c = 0; c < 4; ++c) { // then the halves
    const __m256 low = _mm256_permute2f128_ps(quad[c], quad[c + 4], 0x20);
    const __m256 high = _mm256_permute2f128_ps(quad[c], quad[c + 4], 0x31);
    _mm256_storeu_ps(dst + c * dst_stride, _mm256_mul_ps(low, scale));
    _mm256_storeu_ps(dst + (c + 4) * dst_stride, _mm256_mul_ps(high, scale));
  }
}

/// Copies k times `scale` transposed into [head_dim][padded_tokens], zero padded, so that 8 keys'
/// e-th elements are one load. Scaling k here rather than the T x T scores is half the multiplies
/// at 64 tokens and heads of 32, and fewer for smaller heads.
TSTITCH_FUSED_AVX2 void stage_keys(const float* keys, std::int64_t key_stride, std::int64_t tokens,
                                   std::int64_t head_dim, std::int64_t padded_tokens, float scale,
                                   float* keys_transposed) {
  const std::int64_t whole_tokens = tokens / lanes * lanes;
  const std::int64_t whole_dims = head_dim / lanes * lanes;
  for (std::int64_t j = 0; j < whole_tokens; j += lanes)
    for (std::int64_t e = 0; e < whole_dims; e += lanes)
      transpose_8x8(keys + j * key_stride + e, key_stride, keys_transposed + e * padded_tokens + j,
                    padded_tokens, _mm256_set1_ps(scale));
  for (std::int64_t j = 0; j < tokens; ++j) {
    const std::int64_t first_dim = j < whole_tokens ? whole_dims : 0; // the rest of the blocks
    for (std::int64_t e = first_dim; e < head_dim; ++e)
      keys_transposed[e * padded_tokens + j] = keys[j * key_stride + e] * scale;
  }
  for (std::int64_t e = 0; e < head_dim; ++e)
    std::fill(keys_transposed + e * padded_tokens + tokens,
              keys_transposed + (e + 1) * padded_tokens, 0.0f);
}

/// Copies v into [tokens][padded_head_dim], zero padded, so that whole registers of it can be
/// loaded; contiguous, its rows also stop competing for the same few cache sets (in qkv they lie
/// 3 D floats apart, a multiple of 512 bytes for heads of 32).
TSTITCH_FUSED_AVX2 void stage_values(const float* values, std::int64_t value_stride,
                                     std::int64_t tokens, std::int64_t head_dim,
                                     std::int64_t padded_head_dim, float* staged) {
  const std::int64_t whole_dims = head_dim / lanes * lanes;
  for (std::int64_t j = 0; j < tokens; ++j) {
    const float* value = values + j * value_stride;
    float* row = staged + j * padded_head_dim;
    for (std::int64_t e = 0; e < whole_dims; e += lanes)
      _mm256_storeu_ps(row + e, _mm256_loadu_ps(value + e));
    for (std::int64_t e = whole_dims; e < padded_head_dim; ++e)
      row[e] = e < head_dim ? value[e] : 0.0f;
  }
}

/// One (sample, head) pair's staged operands, and its scores' place.
struct StagedHead {
  std::int64_t tokens, padded_tokens, head_dim, padded_head_dim;
  const float* keys_transposed; // [head_dim][padded_tokens], times 1 / sqrt(head_dim)
  const float* values;          // [tokens][padded_head_dim]
  float* scores;                // [row_block][padded_tokens]
};

/// scores[r][j] = q_r . k_j / sqrt(hd) for `Rows` query rows, 16 keys (two registers per row) at
/// a time: each key load serves Rows rows and each broadcast q_r[e] two registers. Padding keys
/// get -inf, so that they drop out of the max and come out of exp as 0.
template <int Rows>
TSTITCH_FUSED_AVX2_STEP void score_rows(const float* query, std::int64_t qkv_stride,
                                        const StagedHead& head) {
  const float* keys_transposed = head.keys_transposed;
  const std::int64_t tokens = head.tokens, padded_tokens = head.padded_tokens;
  const std::int64_t head_dim = head.head_dim;
  float* scores = head.scores;
  std::int64_t j = 0;
  for (; j + 2 * lanes <= padded_tokens; j += 2 * lanes) {
    __m256 acc[static_cast<std::size_t>(Rows)][2];
#pragma GCC unroll 8
    for (int r = 0; r < Rows; ++r)
      acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (std::int64_t e = 0; e < head_dim; ++e) {
      const float* key_row = keys_transposed + e * padded_tokens + j;
      const __m256 k0 = _mm256_loadu_ps(key_row);
      const __m256 k1 = _mm256_loadu_ps(key_row + lanes);
#pragma GCC unroll 8
      for (int r = 0; r < Rows; ++r) {
        const __m256 q = _mm256_broadcast_ss(query + r * qkv_stride + e);
        acc[r][0] = _mm256_fmadd_ps(q, k0, acc[r][0]);
        acc[r][1] = _mm256_fmadd_ps(q, k1, acc[r][1]);
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < Rows; ++r) {
      _mm256_storeu_ps(scores + r * padded_tokens + j, acc[r][0]);
      _mm256_storeu_ps(scores + r * padded_tokens + j + lanes, acc[r][1]);
    }
  }
  if (j < padded_tokens) { // one register of keys left
    __m256 acc[static_cast<std::size_t>(Rows)];
#pragma GCC unroll 8
    for (int r = 0; r < Rows; ++r)
      acc[r] = _mm256_setzero_ps();
    for (std::int64_t e = 0; e < head_dim; ++e) {
      const __m256 k0 = _mm256_loadu_ps(keys_transposed + e * padded_tokens + j);
#pragma GCC unroll 8
      for (int r = 0; r < Rows; ++r)
        acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(query + r * qkv_stride + e), k0, acc[r]);
    }
#pragma GCC unroll 8
    for (int r = 0; r < Rows; ++r)
      _mm256_storeu_ps(scores + r * padded_tokens + j, acc[r]);
  }
  for (int r = 0; r < Rows; ++r)
    std::fill(scores + r * padded_tokens + tokens, scores + (r + 1) * padded_tokens,
              -std::numeric_limits<float>::infinity());
}

/// scores[r][j] = exp(scores[r][j] - max_j scores[r][j]) over `Rows` rows of padded_tokens;
/// inverse_sums[r] = 1 / their sum (a multiply per output then, not a divide). The rows go
/// through side by side so that their exps overlap.
template <int Rows>
TSTITCH_FUSED_AVX2_STEP void softmax_numerators(float* scores, std::int64_t padded_tokens,
                                                float* inverse_sums) {
  __m256 top[static_cast<std::size_t>(Rows)];
#pragma GCC unroll 8
  for (int r = 0; r < Rows; ++r)
    top[r] = _mm256_loadu_ps(scores + r * padded_tokens);
  for (std::int64_t j = lanes; j < padded_tokens; j += lanes) {
#pragma GCC unroll 8
    for (int r = 0; r < Rows; ++r)
      top[r] = _mm256_max_ps(top[r], _mm256_loadu_ps(scores + r * padded_tokens + j));
  }
  __m256 sum[static_cast<std::size_t>(Rows)];
#pragma GCC unroll 8
  for (int r = 0; r < Rows; ++r) {
    top[r] = _mm256_set1_ps(horizontal_max(top[r]));
    sum[r] = _mm256_setzero_ps();
  }
  for (std::int64_t j = 0; j < padded_tokens; j += lanes) {
#pragma GCC unroll 8
    for (int r = 0; r < Rows; ++r) {
      float* at = scores + r * padded_tokens + j;
      const __m256 p = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(at), top[r]));
      _mm256_storeu_ps(at, p);
      sum[r] = _mm256_add_ps(sum[r], p);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < Rows; ++r)
    inverse_sums[r] = 1.0f / horizontal_sum(sum[r]);
}

/// Stores the first `count` (1..8) floats of v.
TSTITCH_FUSED_AVX2 void store_first(float* dst, __m256 v, std::int64_t count) {
  if (count >= lanes) {
    _mm256_storeu_ps(dst, v);
    return;
  }
  alignas(32) float staged[lanes];
  _mm256_store_ps(staged, v);
  for (std::int64_t i = 0; i < count; ++i) // a loop: g++ cannot bound a std::copy's count here
    dst[i] = staged[i];
}

/// out[r][e] = sum_j p[r][j] v[j][e] * inverse_sums[r] for `Rows` rows, 16 elements of e (two
/// registers) at a time: each value load serves Rows rows and each broadcast p[r][j] two
/// registers.
template <int Rows>
TSTITCH_FUSED_AVX2_STEP void weigh_values(const StagedHead& head, const float* inverse_sums,
                                          float* out, std::int64_t out_stride) {
  const float* probabilities = head.scores;
  const float* values = head.values;
  const std::int64_t tokens = head.tokens, padded_tokens = head.padded_tokens;
  const std::int64_t head_dim = head.head_dim, padded_head_dim = head.padded_head_dim;
  std::int64_t e = 0;
  for (; e + 2 * lanes <= padded_head_dim; e += 2 * lanes) {
    __m256 acc[static_cast<std::size_t>(Rows)][2];
#pragma GCC unroll 8
    for (int r = 0; r < Rows; ++r)
      acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (std::int64_t j = 0; j < tokens; ++j) {
      const __m256 v0 = _mm256_loadu_ps(values + j * padded_head_dim + e);
      const __m256 v1 = _mm256_loadu_ps(values + j * padded_head_dim + e + lanes);
#pragma GCC unroll 8
      for (int r = 0; r < Rows; ++r) {
        const __m256 p = _mm256_broadcast_ss(probabilities + r * padded_tokens + j);
        acc[r][0] = _mm256_fmadd_ps(p, v0, acc[r][0]);
        acc[r][1] = _mm256_fmadd_ps(p, v1, acc[r][1]);
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < Rows; ++r) {
      const __m256 inverse_sum = _mm256_set1_ps(inverse_sums[r]);
      store_first(out + r * out_stride + e, _mm256_mul_ps(acc[r][0], inverse_sum), head_dim - e);
      if (head_dim > e + lanes)
        store_first(out + r * out_stride + e + lanes, _mm256_mul_ps(acc[r][1], inverse_sum),
                    head_dim - e - lanes);
    }
  }
  if (e < padded_head_dim) { // one register of elements left
    __m256 acc[static_cast<std::size_t>(Rows)];
#pragma GCC unroll 8
    for (int r = 0; r < Rows; ++r)
      acc[r] = _mm256_setzero_ps();
    for (std::int64_t j = 0; j < tokens; ++j) {
      const __m256 v0 = _mm256_loadu_ps(values + j * padded_head_dim + e);
#pragma GCC unroll 8
      for (int r = 0; r < Rows; ++r)
        acc[r] =
            _mm256_fmadd_ps(_mm256_broadcast_ss(probabilities + r * padded_tokens + j), v0, acc[r]);
    }
#pragma GCC unroll 8
    for (int r = 0; r < Rows; ++r)
      store_first(out + r * out_stride + e, _mm256_mul_ps(acc[r], _mm256_set1_ps(inverse_sums[r])),
                  head_dim - e);
  }
}

template <int Rows>
TSTITCH_FUSED_AVX2 void attend_rows(const float* query, std::int64_t qkv_stride,
                                    const StagedHead& head, float* out, std::int64_t out_stride) {
  score_rows<Rows>(query, qkv_stride, head);
  float inverse_sums[static_cast<std::size_t>(Rows)];
  softmax_numerators<Rows>(head.scores, head.padded_tokens, inverse_sums);
  weigh_values<Rows>(head, inverse_sums, out, out_stride);
}

/// attend_scalar's contract, with the scratch of scratch_layout.
__attribute__((target("avx2,fma"))) inline void attend_avx2(const float* qkv, std::int64_t tokens,
                                                            std::int64_t model_dim,
                                                            std::int64_t head_dim, float* out,
                                                            float* scratch) {
  const ScratchLayout layout = scratch_layout(tokens, head_dim);
  const std::int64_t qkv_stride = 3 * model_dim;
  float* keys_transposed = scratch + layout.keys_transposed;
  float* values = scratch + layout.values;
  stage_keys(qkv + model_dim, qkv_stride, tokens, head_dim, layout.padded_tokens,
             score_scale(head_dim), keys_transposed);
  stage_values(qkv + 2 * model_dim, qkv_stride, tokens, head_dim, layout.padded_head_dim, values);
  const StagedHead head{
      tokens, layout.padded_tokens,   head_dim, layout.padded_head_dim, keys_transposed,
      values, scratch + layout.scores};
  std::int64_t i = 0;
  for (; i + row_block <= tokens; i += row_block)
    attend_rows<row_block>(qkv + i * qkv_stride, qkv_stride, head, out + i * model_dim, model_dim);
  const float* query = qkv + i * qkv_stride;
  float* rest = out + i * model_dim;
  switch (tokens - i) {
  case 5:
    attend_rows<5>(query, qkv_stride, head, rest, model_dim);
    break;
  case 4:
    attend_rows<4>(query, qkv_stride, head, rest, model_dim);
    break;
  case 3:
    attend_rows<3>(query, qkv_stride, head, rest, model_dim);
    break;
  case 2:
    attend_rows<2>(query, qkv_stride, head, rest, model_dim);
    break;
  case 1:
    attend_rows<1>(query, qkv_stride, head, rest, model_dim);
    break;
  default:
    break;
  }
}

/// exp_nonpositive over x[0, count) into y, for the tests.
__attribute__((target("avx2,fma"))) inline void exp_avx2_for_testing(const float* x, float* y,
                                                                     std::int64_t count) {
  std::int64_t i = 0;
  for (; i + lanes <= count; i += lanes)
    _mm256_storeu_ps(y + i, exp_nonpositive(_mm256_loadu_ps(x + i)));
  if (i < count) {
    float staged[lanes] = {};
    std::copy(x + i, x + count, staged);
    store_first(y + i, exp_nonpositive(_mm256_loadu_ps(staged)), count - i);
  }
}

#undef TSTITCH_FUSED_AVX2
#undef TSTITCH_FUSED_AVX2_STEP

#endif // x86

} // namespace tstitch::detail::fused_attention_kernels

namespace tstitch::dit {

/// Whether this CPU can run the AVX2 path (AVX2 and FMA, checked at run time with
/// __builtin_cpu_supports; false on non-x86).
inline bool fused_attention_avx2_supported() {
#if defined(__x86_64__) || defined(__i386__)
  return detected_cpu_isa() == CpuIsa::avx2;
#else
  return false;
#endif
}

/// Floats of scratch that fused_attention needs for `tokens` tokens and heads of `head_dim`.
inline std::int64_t fused_attention_scratch_floats(std::int64_t tokens, std::int64_t head_dim) {
  return detail::fused_attention_kernels::scratch_layout(tokens, head_dim).total;
}

/// out[n, i, h*hd + e] = sum_j softmax_j(q_i . k_j / sqrt(hd)) v_j[e] for one (sample n, head h)
/// pair, where qkv is [samples, T, 3*D] laid out [q heads | k heads | v heads] per token
/// (D = heads*hd) and out is [samples, T, D].
/// Runs the pairs (n, h) for n in [first_sample, last_sample) and all heads, single-threaded.
/// `scratch` must hold at least fused_attention_scratch_floats(T, hd) floats, 64-byte aligned.
/// Throws tstitch::invalid_argument for a non-positive size, a bad sample range, or the avx2
/// path where fused_attention_avx2_supported() is false.
inline void fused_attention(FusedAttentionPath path, const float* qkv, std::int64_t first_sample,
                            std::int64_t last_sample, std::int64_t tokens, std::int64_t heads,
                            std::int64_t head_dim, float* out, float* scratch) {
  if (tokens < 1 || heads < 1 || head_dim < 1)
    throw invalid_argument(detail::concat("fused_attention: tokens ", tokens, ", heads ", heads,
                                          " and head_dim ", head_dim, " must be positive"));
  if (first_sample < 0 || last_sample < first_sample)
    throw invalid_argument(detail::concat("fused_attention: bad sample range [", first_sample, ", ",
                                          last_sample, ")"));
  if (path == FusedAttentionPath::avx2 && !fused_attention_avx2_supported())
    throw invalid_argument("fused_attention: this CPU has no AVX2 and FMA");
  const std::int64_t model_dim = heads * head_dim;
  for (std::int64_t n = first_sample; n < last_sample; ++n) {
    for (std::int64_t h = 0; h < heads; ++h) {
      const float* pair_qkv = qkv + n * tokens * 3 * model_dim + h * head_dim;
      float* pair_out = out + n * tokens * model_dim + h * head_dim;
#if defined(__x86_64__) || defined(__i386__)
      if (path == FusedAttentionPath::avx2) {
        detail::fused_attention_kernels::attend_avx2(pair_qkv, tokens, model_dim, head_dim,
                                                     pair_out, scratch);
        continue;
      }
#endif
      detail::fused_attention_kernels::attend_scalar(pair_qkv, tokens, model_dim, head_dim,
                                                     pair_out, scratch);
    }
  }
}

} // namespace tstitch::dit
