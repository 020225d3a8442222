// SPDX-License-Identifier: Apache-2.0
#pragma once

// Counter-based Gaussian noise: Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel random
// numbers: as easy as 1, 2, 3", SC'11; reference implementation Random123) followed by a
// Box-Muller transform written so that the SAME header yields BIT-IDENTICAL floats on the CPU
// (g++/clang++) and on NVIDIA GPUs (nvcc).
//
// Why no libm: logf/sinf/cosf are not correctly rounded and differ by ulps between glibc and
// CUDA's libdevice. The transform below uses only operations IEEE 754 defines exactly - integer
// bit manipulation, exact conversions, correctly rounded +, -, *, /, sqrt and fused multiply-add -
// so every platform computes every intermediate to the same bits.
//
// Why explicit fma: compilers may contract a*b + c into one fma (g++ with -ffp-contract=fast,
// the GNU default even in -std=c++20, once FMA instructions are enabled; nvcc by default) and they
// do it across statements, so the result of a*b + c depends on compiler and flags. Every
// multiply-add below is therefore an explicit fma, and every remaining plain product is either
// exact (a power-of-two scale, so fusing it could not change the result) or never reaches an
// addition. On the device the remaining +,*,/,sqrt use the __f*_rn intrinsics, which are IEEE
// round-to-nearest even under --use_fast_math and are never fused. Host code must not be built
// with -ffast-math (it licenses reassociation, which no source-level care can undo).

#include "tstitch/core/config.hpp"

#include <cstddef>
#include <cstdint>

#ifndef __CUDA_ARCH__
#include <bit>
#include <cmath>
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__CUDACC__)
#define TSTITCH_PHILOX_AVX2 1
#include "tstitch/core/cpu_isa.hpp" // host dispatch only: nvcc's translation units never see it
#include "tstitch/core/philox_avx2.hpp"
#endif

namespace tstitch {

struct Uint4 {
  std::uint32_t v[4];
};

struct Float4 {
  float v[4];
};

// Philox4x32 with 10 rounds, exactly as Random123's philox4x32_R(10, ctr, key): each round is
// two 32x32->64 multiplies whose high halves are xor-ed with the other lanes and the round key;
// the key is bumped by the Weyl constants (golden ratio, sqrt(3)-1) before rounds 2..10.
TSTITCH_HOST_DEVICE constexpr Uint4 philox4x32_10(Uint4 counter, std::uint32_t key0,
                                                  std::uint32_t key1) {
  constexpr std::uint32_t m0 = 0xD2511F53u;
  constexpr std::uint32_t m1 = 0xCD9E8D57u;
  constexpr std::uint32_t w0 = 0x9E3779B9u;
  constexpr std::uint32_t w1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    if (round != 0) {
      key0 += w0;
      key1 += w1;
    }
    const std::uint64_t p0 = static_cast<std::uint64_t>(m0) * counter.v[0];
    const std::uint64_t p1 = static_cast<std::uint64_t>(m1) * counter.v[2];
    const auto hi0 = static_cast<std::uint32_t>(p0 >> 32);
    const auto lo0 = static_cast<std::uint32_t>(p0);
    const auto hi1 = static_cast<std::uint32_t>(p1 >> 32);
    const auto lo1 = static_cast<std::uint32_t>(p1);
    counter = Uint4{{hi1 ^ counter.v[1] ^ key0, lo1, hi0 ^ counter.v[3] ^ key1, lo0}};
  }
  return counter;
}

// Identifies one stream of Gaussian noise. Sample k's noise at a given step is a pure function
// of this key and the element index, so it does not depend on batch size, batch position,
// thread count or device.
struct NoiseKey {
  std::uint64_t seed;
  std::uint32_t sample;
  std::uint32_t step;
  std::uint32_t stream;
};

// Reserved stream ids.
inline constexpr std::uint32_t stream_initial_latents = 0; // the starting x_T
inline constexpr std::uint32_t stream_solver = 1; // noise drawn by stochastic solvers at a step

namespace detail {

struct Float2 {
  float v[2];
};

struct SinCos {
  float sin;
  float cos;
};

// The only floating-point primitives used below; each is IEEE-exact on host and device.
TSTITCH_HOST_DEVICE TSTITCH_INLINE std::uint32_t float_bits(float x) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(x);
#else
  return std::bit_cast<std::uint32_t>(x);
#endif
}

TSTITCH_HOST_DEVICE TSTITCH_INLINE float bits_float(std::uint32_t x) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(x);
#else
  return std::bit_cast<float>(x);
#endif
}

TSTITCH_HOST_DEVICE TSTITCH_INLINE float fma_rn(float a, float b, float c) {
#ifdef __CUDA_ARCH__
  return __fmaf_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

// A product meant to stay unfused with whatever the caller adds to it after inlining:
// fma(a, b, -0) is exactly round(a*b), including the sign of a zero product. __fmul_rn and g++
// honour that; clang folds it back to a*b, so only under clang -ffp-contract=fast may a caller's
// own `normal4(...).v[i] + c` fuse (values stored first, as fill_normal does, are unaffected).
TSTITCH_HOST_DEVICE TSTITCH_INLINE float mul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return std::fma(a, b, -0.0f);
#endif
}

TSTITCH_HOST_DEVICE TSTITCH_INLINE float div_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

TSTITCH_HOST_DEVICE TSTITCH_INLINE float sqrt_rn(float x) {
#ifdef __CUDA_ARCH__
  return __fsqrt_rn(x);
#else
  return std::sqrt(x);
#endif
}

// Uniforms from the top 24 bits of a Philox word. k = x >> 8 < 2^24 and k + 1 <= 2^24 convert to
// float exactly, and the 2^-24 scale is exact, so both maps are exact and identical everywhere
// (float cannot hold (x + 1) * 2^-32 for large x). The (0, 1] variant never yields 0, so log() is
// finite; the smallest value 2^-24 caps |z| at sqrt(2 * 24 * ln 2) ~= 5.77, a tail of
// probability ~8e-9 per draw.
TSTITCH_HOST_DEVICE TSTITCH_INLINE float uniform_open_closed(std::uint32_t x) {
  return static_cast<float>((x >> 8) + 1u) * 0x1p-24f; // (0, 1]
}

TSTITCH_HOST_DEVICE TSTITCH_INLINE float uniform_closed_open(std::uint32_t x) {
  return static_cast<float>(x >> 8) * 0x1p-24f; // [0, 1)
}

// Natural log for positive normal floats (used on (0, 1]). Write u = 2^e * m with
// m in (sqrt(2)/2, sqrt(2)], f = m - 1 (exact by Sterbenz), s = f / (2 + f). Then
// log(m) = 2 atanh(s) = 2s + s*R with R = 2z/3 + 2z^2/5 + ... (z = s^2), and since 2s = f - s*f,
// log(m) = f - s*(f - R): the rounding error of s only touches the small correction term.
// |s| <= 0.1716 so z <= 0.0295 and the Taylor series of R cut after z^4 is off by < 3e-9 relative.
// ln 2 is split so that e * ln2_hi is exact for |e| <= 2^8.
TSTITCH_HOST_DEVICE TSTITCH_INLINE float log_unit(float u) {
  const std::uint32_t ix = float_bits(u);
  int e = static_cast<int>(ix >> 23) - 127;
  std::uint32_t mbits = (ix & 0x007FFFFFu) | 0x3F800000u; // m in [1, 2)
  if (mbits > 0x3FB504F3u) {                              // m > sqrt(2): halve it
    mbits -= 0x00800000u;
    ++e;
  }
  const float f = bits_float(mbits) - 1.0f; // exact
  const float s = div_rn(f, 2.0f + f);
  const float z = s * s; // only ever a multiplicand below, so never fused
  float p = fma_rn(z, 0x1.c71c72p-3f, 0x1.24924ap-2f); // 2/9, 2/7
  p = fma_rn(z, p, 0x1.99999ap-2f);                    // 2/5
  p = fma_rn(z, p, 0x1.555556p-1f);                    // 2/3
  const float f_minus_r = fma_rn(-z, p, f);            // f - R
  const float log_m = fma_rn(-s, f_minus_r, f);
  const auto ef = static_cast<float>(e);
  return fma_rn(ef, 0x1.62e400p-1f, fma_rn(ef, 0x1.7f7d1cp-20f, log_m));
}

// sin and cos of 2*pi*u for u in [0, 1). Quadrant reduction is exact: t = 4u is a power-of-two
// scale, t - j and r - 1 are exact by Sterbenz, leaving 2*pi*u = j*pi/2 + r*pi/2 with
// r in [-1/2, 1/2]. Polynomials in r (coefficients absorb the pi/2) are the Taylor series of
// sin(pi/2 r) to degree 9 and cos(pi/2 r) to degree 10, truncation error < 2e-9 on the interval.
TSTITCH_HOST_DEVICE TSTITCH_INLINE SinCos sincos_2pi(float u) {
  const float t = 4.0f * u; // exact; in [0, 4)
  int j = static_cast<int>(t);
  float r = t - static_cast<float>(j);
  if (r > 0.5f) {
    r = r - 1.0f;
    ++j;
  }
  const float r2 = r * r; // only ever a multiplicand below
  float ps = fma_rn(r2, 0x1.507834p-13f, -0x1.32d2ccp-8f);
  ps = fma_rn(r2, ps, 0x1.466bc6p-4f);
  ps = fma_rn(r2, ps, -0x1.4abbcep-1f);
  ps = fma_rn(r2, ps, 0x1.921fb6p+0f);
  const float sn = mul_rn(r, ps); // sin(pi/2 r)
  float pc = fma_rn(r2, -0x1.a6d1f2p-16f, 0x1.e1f506p-11f);
  pc = fma_rn(r2, pc, -0x1.55d3c8p-6f);
  pc = fma_rn(r2, pc, 0x1.03c1f0p-2f);
  pc = fma_rn(r2, pc, -0x1.3bd3ccp+0f);
  const float cs = fma_rn(r2, pc, 1.0f); // cos(pi/2 r)
  switch (j & 3) {
  case 0:
    return SinCos{sn, cs};
  case 1:
    return SinCos{cs, -sn};
  case 2:
    return SinCos{-sn, -cs};
  default:
    return SinCos{-cs, sn};
  }
}

// One Box-Muller pair: word a gives the radius sqrt(-2 log u), u in (0, 1]; word b the angle
// 2*pi*u, u in [0, 1). Returns {r cos, r sin}. Always finite: |result| <= 5.78.
TSTITCH_HOST_DEVICE TSTITCH_INLINE Float2 box_muller(std::uint32_t a, std::uint32_t b) {
  const float radius = sqrt_rn(-2.0f * log_unit(uniform_open_closed(a))); // exact scale
  const SinCos sc = sincos_2pi(uniform_closed_open(b));
  return Float2{{mul_rn(radius, sc.cos), mul_rn(radius, sc.sin)}};
}

} // namespace detail

// Four standard normals for elements 4*block .. 4*block+3 of one sample.
// counter = {block, sample, step, stream}, key = {low, high 32 bits of seed};
// Box-Muller pairs (u0, u1) -> v[0], v[1] and (u2, u3) -> v[2], v[3].
TSTITCH_HOST_DEVICE TSTITCH_INLINE Float4 normal4(const NoiseKey& key, std::uint32_t block) {
  const Uint4 u = philox4x32_10(Uint4{{block, key.sample, key.step, key.stream}},
                                static_cast<std::uint32_t>(key.seed),
                                static_cast<std::uint32_t>(key.seed >> 32));
  const detail::Float2 p = detail::box_muller(u.v[0], u.v[1]);
  const detail::Float2 q = detail::box_muller(u.v[2], u.v[3]);
  return Float4{{p.v[0], p.v[1], q.v[0], q.v[1]}};
}

// fill_normal and fill_normal_scalar differ by build: host compilers dispatch to AVX2 (and to an
// FMA copy when built without -mfma), nvcc compiles the portable loop only. Each build's pair
// lives in its own inline namespace, so that a program mixing them (the CUDA tests link g++ and
// nvcc objects) holds distinct functions, not one inline function with two definitions (an ODR
// violation: the linker would keep either). Callers name them as before.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__FMA__) && !defined(__CUDACC__)
#define TSTITCH_PHILOX_FMA_DISPATCH 1
#endif
#if defined(TSTITCH_PHILOX_AVX2) && defined(TSTITCH_PHILOX_FMA_DISPATCH)
#define TSTITCH_PHILOX_BUILD philox_avx2_fma_dispatch
#elif defined(TSTITCH_PHILOX_AVX2)
#define TSTITCH_PHILOX_BUILD philox_avx2
#else
#define TSTITCH_PHILOX_BUILD philox_portable
#endif

namespace detail {

// Elements [first, count) of fill_normal; first is a multiple of 4.
TSTITCH_INLINE void fill_normal_portable(float* dst, std::size_t count, const NoiseKey& key,
                                         std::size_t first = 0) {
  std::size_t e = first;
  for (; e + 4 <= count; e += 4) {
    const Float4 n = normal4(key, static_cast<std::uint32_t>(e / 4));
    for (int i = 0; i < 4; ++i)
      dst[e + static_cast<std::size_t>(i)] = n.v[i];
  }
  if (e < count) {
    const Float4 n = normal4(key, static_cast<std::uint32_t>(e / 4));
    for (std::size_t i = 0; e + i < count; ++i)
      dst[e + i] = n.v[i];
  }
}

// x86-64 builds without -mfma turn every explicit fma into a call to libm's fmaf. The same loop
// compiled for FMA hardware (and flattened, so the fmas inline as instructions) is about twice
// as fast and, fma being exactly rounded either way, gives bit-identical values.
inline namespace TSTITCH_PHILOX_BUILD {

#ifdef TSTITCH_PHILOX_FMA_DISPATCH
__attribute__((target("fma"), flatten)) inline void
fill_normal_fma(float* dst, std::size_t count, const NoiseKey& key, std::size_t first = 0) {
  fill_normal_portable(dst, count, key, first);
}
#endif

/// Elements [first, count) of fill_normal, one block at a time (the FMA-compiled copy where the
/// build lacks -mfma and the CPU has FMA): the AVX2 path's tail, and its peer in benchmarks.
TSTITCH_INLINE void fill_normal_scalar(float* dst, std::size_t count, const NoiseKey& key,
                                       std::size_t first = 0) {
#ifdef TSTITCH_PHILOX_FMA_DISPATCH
  if (cpu_isa() != CpuIsa::scalar && __builtin_cpu_supports("fma")) {
    fill_normal_fma(dst, count, key, first);
    return;
  }
#endif
  fill_normal_portable(dst, count, key, first);
}

} // namespace TSTITCH_PHILOX_BUILD
} // namespace detail

inline namespace TSTITCH_PHILOX_BUILD {

// dst[e] = normal4(key, e / 4).v[e % 4] for e < count, so any prefix is independent of count.
// Host only. Blocks are 32-bit, so a sample holds at most 2^34 elements.
// On x86-64 CPUs with AVX2 and FMA, eight blocks at a time (philox_avx2.hpp, the same bits);
// set_max_cpu_isa(CpuIsa::scalar) or TSTITCH_MAX_CPU_ISA=SSE41 selects the portable loop.
TSTITCH_INLINE void fill_normal(float* dst, std::size_t count, const NoiseKey& key) {
  std::size_t first = 0;
#ifdef TSTITCH_PHILOX_AVX2
  if (cpu_isa() == CpuIsa::avx2)
    first =
        detail::avx2::fill_normal_groups(dst, count, key.seed, key.sample, key.step, key.stream);
#endif
  detail::fill_normal_scalar(dst, count, key, first);
}

} // namespace TSTITCH_PHILOX_BUILD

} // namespace tstitch
