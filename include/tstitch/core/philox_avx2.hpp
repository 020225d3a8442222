// SPDX-License-Identifier: Apache-2.0
#pragma once

// fill_normal eight Philox blocks (32 normals) at a time with AVX2 + FMA, bit-identical to the
// scalar normal4 of philox.hpp. Included by philox.hpp on x86-64 host builds (g++/clang++); the
// functions carry target("avx2,fma"), so a baseline x86-64 build compiles them and calls them only
// when the CPU has both (fill_normal asks at run time).
//
// Why the bits agree: every floating-point step of the scalar transform is one IEEE operation
// (+, -, *, /, sqrt, fma, exact int<->float conversions), and each maps to the AVX instruction
// that performs the same correctly rounded operation: vdivps, vsqrtps, vfmadd/vfnmadd (one
// rounding, like fma), vcvtdq2ps (exact below 2^24), vcvttps2dq (truncation, like the cast).
// Branches become selects and sign flips become xor of the sign bit, which is what unary minus
// does. tests/test_philox.cpp compares the two on every input the uniform maps can produce.

#include <immintrin.h>

#include "tstitch/core/cpu_isa.hpp"

#include <cstddef>
#include <cstdint>

namespace tstitch::detail::avx2 {

#define TSTITCH_AVX2_FMA __attribute__((target("avx2,fma"), always_inline)) inline

// Eight 32x32 -> 64-bit products split into their high and low words, lane by lane (vpmuludq
// multiplies the even lanes; the odd lanes are shifted down first).
struct HiLo {
  __m256i hi, lo;
};

TSTITCH_AVX2_FMA HiLo mul_hi_lo(__m256i a, std::uint32_t m) {
  const __m256i mv = _mm256_set1_epi32(static_cast<int>(m));
  const __m256i even = _mm256_mul_epu32(a, mv);                       // lanes 0 2 4 6, 64-bit
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), mv); // lanes 1 3 5 7, 64-bit
  const __m256i hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
  const __m256i lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  return {hi, lo};
}

// philox4x32_10 of eight counters at once: c[w] holds word w of the eight counters.
TSTITCH_AVX2_FMA void philox4x32_10(__m256i c[4], std::uint32_t key0, std::uint32_t key1) {
  for (int round = 0; round < 10; ++round) {
    if (round != 0) {
      key0 += 0x9E3779B9u;
      key1 += 0xBB67AE85u;
    }
    const HiLo p0 = mul_hi_lo(c[0], 0xD2511F53u);
    const HiLo p1 = mul_hi_lo(c[2], 0xCD9E8D57u);
    const __m256i k0 = _mm256_set1_epi32(static_cast<int>(key0));
    const __m256i k1 = _mm256_set1_epi32(static_cast<int>(key1));
    const __m256i n0 = _mm256_xor_si256(_mm256_xor_si256(p1.hi, c[1]), k0);
    const __m256i n2 = _mm256_xor_si256(_mm256_xor_si256(p0.hi, c[3]), k1);
    c[0] = n0;
    c[1] = p1.lo;
    c[2] = n2;
    c[3] = p0.lo;
  }
}

TSTITCH_AVX2_FMA __m256 uniform_open_closed(__m256i x) { // (0, 1], as the scalar one
  const __m256i k = _mm256_add_epi32(_mm256_srli_epi32(x, 8), _mm256_set1_epi32(1));
  return _mm256_mul_ps(_mm256_cvtepi32_ps(k), _mm256_set1_ps(0x1p-24f));
}

TSTITCH_AVX2_FMA __m256 uniform_closed_open(__m256i x) { // [0, 1)
  return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(x, 8)), _mm256_set1_ps(0x1p-24f));
}

// detail::log_unit, lane by lane.
TSTITCH_AVX2_FMA __m256 log_unit(__m256 u) {
  const __m256i ix = _mm256_castps_si256(u);
  __m256i e = _mm256_sub_epi32(_mm256_srli_epi32(ix, 23), _mm256_set1_epi32(127));
  __m256i mbits = _mm256_or_si256(_mm256_and_si256(ix, _mm256_set1_epi32(0x007FFFFF)),
                                  _mm256_set1_epi32(0x3F800000));
  // m > sqrt(2): halve it (both sides are below 2^31, so the signed compare is the unsigned one).
  const __m256i halve = _mm256_cmpgt_epi32(mbits, _mm256_set1_epi32(0x3FB504F3));
  mbits = _mm256_sub_epi32(mbits, _mm256_and_si256(halve, _mm256_set1_epi32(0x00800000)));
  e = _mm256_sub_epi32(e, halve); // halve is -1 where true
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 f = _mm256_sub_ps(_mm256_castsi256_ps(mbits), one);
  const __m256 s = _mm256_div_ps(f, _mm256_add_ps(_mm256_set1_ps(2.0f), f));
  const __m256 z = _mm256_mul_ps(s, s);
  __m256 p = _mm256_fmadd_ps(z, _mm256_set1_ps(0x1.c71c72p-3f), _mm256_set1_ps(0x1.24924ap-2f));
  p = _mm256_fmadd_ps(z, p, _mm256_set1_ps(0x1.99999ap-2f));
  p = _mm256_fmadd_ps(z, p, _mm256_set1_ps(0x1.555556p-1f));
  const __m256 f_minus_r = _mm256_fnmadd_ps(z, p, f); // fma(-z, p, f)
  const __m256 log_m = _mm256_fnmadd_ps(s, f_minus_r, f);
  const __m256 ef = _mm256_cvtepi32_ps(e);
  return _mm256_fmadd_ps(ef, _mm256_set1_ps(0x1.62e400p-1f),
                         _mm256_fmadd_ps(ef, _mm256_set1_ps(0x1.7f7d1cp-20f), log_m));
}

struct SinCos {
  __m256 sin, cos;
};

// detail::sincos_2pi, lane by lane; the quadrant switch becomes a swap and two sign flips.
TSTITCH_AVX2_FMA SinCos sincos_2pi(__m256 u) {
  const __m256 t = _mm256_mul_ps(_mm256_set1_ps(4.0f), u);
  __m256i j = _mm256_cvttps_epi32(t);
  __m256 r = _mm256_sub_ps(t, _mm256_cvtepi32_ps(j));
  const __m256 up = _mm256_cmp_ps(r, _mm256_set1_ps(0.5f), _CMP_GT_OQ);
  r = _mm256_blendv_ps(r, _mm256_sub_ps(r, _mm256_set1_ps(1.0f)), up);
  j = _mm256_sub_epi32(j, _mm256_castps_si256(up)); // +1 where r was above 1/2
  const __m256 r2 = _mm256_mul_ps(r, r);
  __m256 ps = _mm256_fmadd_ps(r2, _mm256_set1_ps(0x1.507834p-13f), _mm256_set1_ps(-0x1.32d2ccp-8f));
  ps = _mm256_fmadd_ps(r2, ps, _mm256_set1_ps(0x1.466bc6p-4f));
  ps = _mm256_fmadd_ps(r2, ps, _mm256_set1_ps(-0x1.4abbcep-1f));
  ps = _mm256_fmadd_ps(r2, ps, _mm256_set1_ps(0x1.921fb6p+0f));
  const __m256 sn = _mm256_mul_ps(r, ps); // the scalar fma(r, ps, -0) is this product exactly
  __m256 pc =
      _mm256_fmadd_ps(r2, _mm256_set1_ps(-0x1.a6d1f2p-16f), _mm256_set1_ps(0x1.e1f506p-11f));
  pc = _mm256_fmadd_ps(r2, pc, _mm256_set1_ps(-0x1.55d3c8p-6f));
  pc = _mm256_fmadd_ps(r2, pc, _mm256_set1_ps(0x1.03c1f0p-2f));
  pc = _mm256_fmadd_ps(r2, pc, _mm256_set1_ps(-0x1.3bd3ccp+0f));
  const __m256 cs = _mm256_fmadd_ps(r2, pc, _mm256_set1_ps(1.0f));
  // Quadrant q = j & 3: (sin, cos) = (sn, cs), (cs, -sn), (-sn, -cs), (-cs, sn) for q = 0..3.
  const __m256i q = _mm256_and_si256(j, _mm256_set1_epi32(3));
  const __m256 odd = _mm256_castsi256_ps(
      _mm256_cmpeq_epi32(_mm256_and_si256(q, _mm256_set1_epi32(1)), _mm256_set1_epi32(1)));
  const __m256 sin_sign = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_srli_epi32(q, 1), 31));
  const __m256 cos_sign = _mm256_castsi256_ps(_mm256_slli_epi32(
      _mm256_xor_si256(q, _mm256_srli_epi32(q, 1)), 31)); // q = 1 or 2 (bit 0 of q ^ q/2)
  return {_mm256_xor_ps(_mm256_blendv_ps(sn, cs, odd), sin_sign),
          _mm256_xor_ps(_mm256_blendv_ps(cs, sn, odd), cos_sign)};
}

// detail::box_muller of eight word pairs: {r cos, r sin}.
TSTITCH_AVX2_FMA void box_muller(__m256i a, __m256i b, __m256& first, __m256& second) {
  const __m256 radius =
      _mm256_sqrt_ps(_mm256_mul_ps(_mm256_set1_ps(-2.0f), log_unit(uniform_open_closed(a))));
  const SinCos sc = sincos_2pi(uniform_closed_open(b));
  first = _mm256_mul_ps(radius, sc.cos);
  second = _mm256_mul_ps(radius, sc.sin);
}

// normal4(key, block0 + i) for i = 0..7, stored as 32 consecutive floats at dst.
TSTITCH_AVX2_FMA void normal4x8(float* dst, std::uint32_t block0, std::uint32_t sample,
                                std::uint32_t step, std::uint32_t stream, std::uint32_t key0,
                                std::uint32_t key1) {
  __m256i c[4] = {_mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(block0)),
                                   _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)),
                  _mm256_set1_epi32(static_cast<int>(sample)),
                  _mm256_set1_epi32(static_cast<int>(step)),
                  _mm256_set1_epi32(static_cast<int>(stream))};
  philox4x32_10(c, key0, key1);
  __m256 n0, n1, n2, n3; // n_k lane i = normal4(key, block0 + i).v[k]
  box_muller(c[0], c[1], n0, n1);
  box_muller(c[2], c[3], n2, n3);
  // Transpose 4 x 8 -> 8 x 4: block i's four values side by side.
  const __m256 t0 = _mm256_unpacklo_ps(n0, n1); // 0 0 1 1 | 4 4 5 5  (n0 n1 interleaved)
  const __m256 t1 = _mm256_unpackhi_ps(n0, n1); // 2 2 3 3 | 6 6 7 7
  const __m256 t2 = _mm256_unpacklo_ps(n2, n3);
  const __m256 t3 = _mm256_unpackhi_ps(n2, n3);
  const __m256 b04 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0)); // blocks 0 | 4
  const __m256 b15 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2)); // blocks 1 | 5
  const __m256 b26 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0)); // blocks 2 | 6
  const __m256 b37 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2)); // blocks 3 | 7
  _mm256_storeu_ps(dst, _mm256_permute2f128_ps(b04, b15, 0x20));         // blocks 0 1
  _mm256_storeu_ps(dst + 8, _mm256_permute2f128_ps(b26, b37, 0x20));     // blocks 2 3
  _mm256_storeu_ps(dst + 16, _mm256_permute2f128_ps(b04, b15, 0x31));    // blocks 4 5
  _mm256_storeu_ps(dst + 24, _mm256_permute2f128_ps(b26, b37, 0x31));    // blocks 6 7
}

#undef TSTITCH_AVX2_FMA

/// Whether this CPU runs the functions above (whatever the cap on tstitch's dispatch).
inline bool supported() { return detected_cpu_isa() == CpuIsa::avx2; }

/// The whole groups of 32 of fill_normal (elements [0, 32 * (count / 32))); returns how many
/// elements it wrote. Blocks are 32-bit, as in the scalar path.
__attribute__((target("avx2,fma"))) inline std::size_t
fill_normal_groups(float* dst, std::size_t count, std::uint64_t seed, std::uint32_t sample,
                   std::uint32_t step, std::uint32_t stream) {
  const auto key0 = static_cast<std::uint32_t>(seed);
  const auto key1 = static_cast<std::uint32_t>(seed >> 32);
  const std::size_t whole = count / 32 * 32;
  for (std::size_t e = 0; e < whole; e += 32)
    normal4x8(dst + e, static_cast<std::uint32_t>(e / 4), sample, step, stream, key0, key1);
  return whole;
}

} // namespace tstitch::detail::avx2
