// SPDX-License-Identifier: Apache-2.0
#include "tstitch/core/cpu_isa.hpp"
#include "tstitch/core/philox.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

using tstitch::NoiseKey;
using tstitch::Uint4;
using tstitch::CpuIsa;

namespace {

constexpr bool same(const Uint4& a, const Uint4& b) {
  return a.v[0] == b.v[0] && a.v[1] == b.v[1] && a.v[2] == b.v[2] && a.v[3] == b.v[3];
}

// Random123 tests/kat_vectors (DEShawResearch/random123 @ 9545ff64), "philox4x32 10" lines:
// counter[4] key[2] -> output[4].
struct Kat {
  Uint4 counter;
  std::uint32_t key0, key1;
  Uint4 expected;
};
constexpr Kat kats[] = {
    {{{0, 0, 0, 0}}, 0, 0, {{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}}},
    {{{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}},
     0xffffffffu,
     0xffffffffu,
     {{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}}},
    {{{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}},
     0xa4093822u,
     0x299f31d0u,
     {{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}}},
};

// The generator is usable in constant expressions.
static_assert(same(tstitch::philox4x32_10(kats[2].counter, kats[2].key0, kats[2].key1),
                   kats[2].expected));

std::vector<float> fill(std::size_t count, const NoiseKey& key) {
  std::vector<float> out(count);
  tstitch::fill_normal(out.data(), count, key);
  return out;
}

bool bit_equal(float a, float b) {
  return std::bit_cast<std::uint32_t>(a) == std::bit_cast<std::uint32_t>(b);
}

std::size_t count_bit_equal(const std::vector<float>& a, const std::vector<float>& b) {
  std::size_t n = 0;
  for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    n += bit_equal(a[i], b[i]) ? 1 : 0;
  return n;
}

#ifdef TSTITCH_PHILOX_AVX2
// Callers of the AVX2 functions must carry their target too (they inline into the caller).
__attribute__((target("avx2,fma"))) void
avx2_box_muller(const std::uint32_t* a, const std::uint32_t* b, float* first, float* second) {
  __m256 x, y;
  tstitch::detail::avx2::box_muller(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a)),
                                    _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b)), x, y);
  _mm256_storeu_ps(first, x);
  _mm256_storeu_ps(second, y);
}

__attribute__((target("avx2,fma"))) void avx2_normal4x8(float* dst, std::uint32_t block0,
                                                        const NoiseKey& key) {
  tstitch::detail::avx2::normal4x8(dst, block0, key.sample, key.step, key.stream,
                                   static_cast<std::uint32_t>(key.seed),
                                   static_cast<std::uint32_t>(key.seed >> 32));
}
#endif

} // namespace

TEST_CASE("philox4x32_10 reproduces Random123 known answers", "[philox]") {
  for (const Kat& k : kats) {
    const Uint4 out = tstitch::philox4x32_10(k.counter, k.key0, k.key1);
    for (int i = 0; i < 4; ++i)
      CHECK(out.v[i] == k.expected.v[i]);
  }
}

TEST_CASE("uniform maps are exact and stay inside their intervals", "[philox]") {
  using namespace tstitch::detail;
  CHECK(uniform_open_closed(0u) == 0x1p-24f);
  CHECK(uniform_open_closed(0xffu) == 0x1p-24f); // low 8 bits are dropped
  CHECK(uniform_open_closed(0x100u) == 0x1p-23f);
  CHECK(uniform_open_closed(0xffffffffu) == 1.0f);
  CHECK(uniform_closed_open(0u) == 0.0f);
  CHECK(uniform_closed_open(0x80000000u) == 0.5f);
  CHECK(uniform_closed_open(0xffffffffu) == 1.0f - 0x1p-24f);
}

// The log is checked on every input the generator can produce: the 2^24 values k * 2^-24,
// k = 1 .. 2^24 (bounds measured at max rel 8.3e-8, 0.94 ulp).
TEST_CASE("log_unit matches double-precision log on its whole (0, 1] grid", "[philox]") {
  double max_rel = 0.0;
  double max_ulp = 0.0;
  for (std::uint32_t k = 1; k <= (1u << 24); ++k) {
    const float u = static_cast<float>(k) * 0x1p-24f;
    const float got = tstitch::detail::log_unit(u);
    const double ref = std::log(static_cast<double>(u));
    if (k == (1u << 24)) {
      REQUIRE(got == 0.0f);
      continue;
    }
    const double err = std::fabs(static_cast<double>(got) - ref);
    int exponent = 0;
    std::frexp(ref, &exponent);
    max_rel = std::max(max_rel, err / std::fabs(ref));
    max_ulp = std::max(max_ulp, err / std::ldexp(1.0, exponent - 24));
  }
  INFO("max relative error " << max_rel << ", max ulp error " << max_ulp);
  CHECK(max_rel < 1.0e-7);
  CHECK(max_ulp < 1.0);
}

// sincos is checked on every angle input the generator can produce (k * 2^-24, k < 2^24) plus
// 10^6 arbitrary floats in [0, 1), where the exact reduction must hold as well
// (measured: 8.84e-8 absolute, 1.69 ulp where |value| > 1e-3).
TEST_CASE("sincos_2pi matches double-precision sin/cos", "[philox]") {
  double max_abs = 0.0;
  double max_ulp = 0.0;
  const auto check = [&](float u) {
    const tstitch::detail::SinCos sc = tstitch::detail::sincos_2pi(u);
    const double a = 2.0 * 3.14159265358979323846 * static_cast<double>(u);
    for (const auto& [got, ref] :
         {std::pair{sc.sin, std::sin(a)}, std::pair{sc.cos, std::cos(a)}}) {
      const double err = std::fabs(static_cast<double>(got) - ref);
      max_abs = std::max(max_abs, err);
      if (std::fabs(ref) > 1e-3) {
        int exponent = 0;
        std::frexp(ref, &exponent);
        max_ulp = std::max(max_ulp, err / std::ldexp(1.0, exponent - 24));
      }
    }
  };
  for (std::uint32_t k = 0; k < (1u << 24); ++k)
    check(static_cast<float>(k) * 0x1p-24f);
  std::mt19937 gen(12345);
  for (int i = 0; i < 1000000; ++i) {
    // Uniform bit patterns in [0, 1): exercises inputs with tiny exponents too.
    const float u = std::bit_cast<float>(static_cast<std::uint32_t>(gen() % 0x3F800000u));
    check(u);
  }
  INFO("max abs error " << max_abs << ", max ulp error " << max_ulp);
  CHECK(max_abs < 1.0e-7);
  CHECK(max_ulp < 1.8);
  CHECK(tstitch::detail::sincos_2pi(0.0f).sin == 0.0f);
  CHECK(tstitch::detail::sincos_2pi(0.0f).cos == 1.0f);
  CHECK(tstitch::detail::sincos_2pi(0.25f).sin == 1.0f);
  CHECK(tstitch::detail::sincos_2pi(0.5f).cos == -1.0f);
}

TEST_CASE("box_muller is finite at the extreme uniforms", "[philox]") {
  const std::uint32_t extremes[] = {0u,          0xffu,       0x100u,     0x7fffffffu,
                                    0x80000000u, 0xffffff00u, 0xffffffffu};
  for (std::uint32_t a : extremes) {
    for (std::uint32_t b : extremes) {
      const auto z = tstitch::detail::box_muller(a, b);
      for (float v : z.v) {
        CHECK(std::isfinite(v));
        CHECK(std::fabs(v) <= 5.78f);
      }
    }
  }
  // Smallest radius uniform 2^-24: radius sqrt(48 ln 2) = 5.7681; angle 0.
  const auto big = tstitch::detail::box_muller(0u, 0u);
  CHECK(big.v[0] == Approx(5.768107).epsilon(1e-6));
  CHECK(big.v[1] == 0.0f);
  // Largest radius uniform 1: radius exactly 0.
  const auto zero = tstitch::detail::box_muller(0xffffffffu, 0xffffffffu);
  CHECK(zero.v[0] == 0.0f);
  CHECK(zero.v[1] == 0.0f);
}

TEST_CASE("noise is keyed by (seed, sample, step, stream, element) only", "[philox]") {
  const NoiseKey key{0x0123456789abcdefull, 7, 3, tstitch::stream_solver};

  SECTION("fill_normal equals normal4 element by element") {
    const std::vector<float> v = fill(1001, key);
    for (std::size_t e = 0; e < v.size(); ++e) {
      const tstitch::Float4 n = tstitch::normal4(key, static_cast<std::uint32_t>(e / 4));
      REQUIRE(bit_equal(v[e], n.v[e % 4]));
    }
  }

  SECTION("a prefix does not depend on the element count") {
    const std::vector<float> full = fill(4099, key);
    for (std::size_t count : {0u, 1u, 2u, 3u, 4u, 5u, 37u, 1024u, 4098u}) {
      const std::vector<float> part = fill(count, key);
      REQUIRE(count_bit_equal(part, full) == count);
    }
  }

  SECTION("every key component selects a different stream") {
    const std::vector<float> base = fill(256, key);
    const NoiseKey others[] = {
        {key.seed + 1, key.sample, key.step, key.stream},
        {key.seed ^ (1ull << 40), key.sample, key.step, key.stream}, // high word of the seed
        {key.seed, key.sample + 1, key.step, key.stream},
        {key.seed, key.sample, key.step + 1, key.stream},
        {key.seed, key.sample, key.step, tstitch::stream_initial_latents},
    };
    for (const NoiseKey& other : others)
      CHECK(count_bit_equal(base, fill(256, other)) == 0);
    // Blocks within one stream differ too.
    const std::vector<float> shifted(base.begin() + 4, base.end());
    CHECK(count_bit_equal(base, shifted) == 0);
  }
}

#ifdef TSTITCH_PHILOX_AVX2
// fill_normal's AVX2 path (philox_avx2.hpp) against the portable scalar code it replaces.
TEST_CASE("the AVX2 generator is the scalar one, bit for bit", "[philox]") {
  namespace avx2 = tstitch::detail::avx2;
  if (!avx2::supported()) {
    WARN("this CPU has no AVX2 + FMA: fill_normal runs the scalar code, nothing to compare");
    return;
  }

  SECTION("box_muller on every radius and every angle uniform") {
    // k runs over all 2^24 uniforms of word a; word b takes them all too, in another order
    // (an odd multiplier permutes 0 .. 2^24 - 1); the low 8 bits, which the maps drop, vary.
    std::size_t mismatches = 0;
    std::uint32_t first_bad = 0;
    alignas(32) std::uint32_t a[8], b[8];
    alignas(32) float first[8], second[8];
    for (std::uint32_t k0 = 0; k0 < (1u << 24); k0 += 8) {
      for (std::uint32_t i = 0; i < 8; ++i) {
        const std::uint32_t k = k0 + i;
        a[i] = (k << 8) | (k & 0xffu);
        b[i] = (((k * 2654435761u) & 0xffffffu) << 8) | ((k >> 3) & 0xffu);
      }
      avx2_box_muller(a, b, first, second);
      for (std::uint32_t i = 0; i < 8; ++i) {
        const auto z = tstitch::detail::box_muller(a[i], b[i]);
        if (!bit_equal(first[i], z.v[0]) || !bit_equal(second[i], z.v[1])) {
          if (mismatches++ == 0)
            first_bad = k0 + i;
        }
      }
    }
    INFO("first mismatching k: " << first_bad);
    CHECK(mismatches == 0);
  }

  SECTION("whole groups and tails, for several keys and counts") {
    const NoiseKey keys[] = {{0, 0, 0, 0},
                             {0xffffffffffffffffull, 0xffffffffu, 0xffffffffu, 0xffffffffu},
                             {0x0123456789abcdefull, 7, 3, tstitch::stream_solver},
                             {42, 0, 0, tstitch::stream_initial_latents}};
    for (const NoiseKey& key : keys) {
      for (std::size_t count : {0u, 1u, 31u, 32u, 33u, 63u, 64u, 100u, 4096u, 4099u}) {
        std::vector<float> scalar(count), dispatched(count);
        tstitch::detail::fill_normal_portable(scalar.data(), count, key);
        tstitch::fill_normal(dispatched.data(), count, key);
        INFO("seed " << key.seed << ", count " << count);
        CHECK(count_bit_equal(scalar, dispatched) == count);
      }
    }
  }

  SECTION("block counters up to the last 32-bit block") {
    const NoiseKey key{2024, 5, 17, tstitch::stream_solver};
    alignas(32) float got[32];
    for (std::uint32_t block0 : {0u, 8u, 0x7ffffff8u, 0xfffffff0u, 0xfffffff8u}) {
      avx2_normal4x8(got, block0, key);
      for (std::uint32_t i = 0; i < 8; ++i) {
        const tstitch::Float4 n = tstitch::normal4(key, block0 + i);
        for (int v = 0; v < 4; ++v) {
          INFO("block " << block0 + i << ", value " << v);
          CHECK(bit_equal(got[4 * i + static_cast<std::uint32_t>(v)], n.v[v]));
        }
      }
    }
  }
}
#endif

// Pinned output: any change to the generator (or a platform that rounds differently) shows up
// here. The same numbers must come out of a CUDA build of normal4.
TEST_CASE("normal4 output is pinned bit for bit", "[philox]") {
  const NoiseKey key{42, 0, 0, tstitch::stream_initial_latents};
  const tstitch::Float4 n = tstitch::normal4(key, 0);
  const std::uint32_t expected[4] = {0xbf785e5au, 0x3e46acecu, 0xbf9e28cdu, 0x3ff6433eu};
  for (int i = 0; i < 4; ++i)
    CHECK(std::bit_cast<std::uint32_t>(n.v[i]) == expected[i]);

  // FNV-1a over the bits of 2^20 values of one sample.
  const std::vector<float> v = fill(1u << 20, NoiseKey{2024, 5, 17, tstitch::stream_solver});
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (float x : v) {
    h ^= std::bit_cast<std::uint32_t>(x);
    h *= 0x100000001b3ull;
  }
  CHECK(h == 0xc3327037ef8917c0ull);
}

// Moments and tail of 2^22 normals of one fixed key, each compared with its sampling standard
// error: mean (1/sqrt(N)), variance (sqrt(2/N)), kurtosis (sqrt(24/N)), P(|z| > 3) (binomial).
TEST_CASE("normals have standard-normal moments and tails", "[philox]") {
  const std::size_t n = std::size_t{1} << 22;
  const std::vector<float> v = fill(n, NoiseKey{20240601, 11, 0, tstitch::stream_initial_latents});
  double sum = 0.0;
  for (float x : v) {
    REQUIRE(std::isfinite(x));
    sum += x;
  }
  const double nd = static_cast<double>(n);
  const double mean = sum / nd;
  double m2 = 0.0;
  double m4 = 0.0;
  std::size_t tail = 0;
  for (float x : v) {
    const double d = static_cast<double>(x) - mean;
    m2 += d * d;
    m4 += d * d * d * d;
    tail += std::fabs(x) > 3.0f ? 1 : 0;
  }
  const double var = m2 / nd;
  const double kurt = m4 / nd / (var * var);
  const double p_tail = 0.0026997960632601866; // P(|Z| > 3)
  const double frac = static_cast<double>(tail) / nd;
  INFO("mean " << mean << " var " << var << " kurtosis " << kurt << " tail " << frac);
  CHECK(std::fabs(mean) < 3.0 / std::sqrt(nd));
  CHECK(std::fabs(var - 1.0) < 3.0 * std::sqrt(2.0 / nd));
  CHECK(std::fabs(kurt - 3.0) < 4.0 * std::sqrt(24.0 / nd));
  CHECK(std::fabs(frac - p_tail) < 4.0 * std::sqrt(p_tail * (1.0 - p_tail) / nd));
}

// tstitch's own dispatch capped to the portable code (set_max_cpu_isa, or TSTITCH_MAX_CPU_ISA for
// the whole process: ctest runs the suite again under it) gives the same noise as uncapped.
TEST_CASE("fill_normal gives the same bits with its dispatch capped to the scalar path",
          "[philox][isa]") {
  const CpuIsa previous = tstitch::max_cpu_isa();
  const auto fill = [](std::size_t n) {
    std::vector<float> v(n);
    tstitch::fill_normal(v.data(), v.size(), NoiseKey{0x5eedull, 3, 1, tstitch::stream_solver});
    return v;
  };
  tstitch::set_max_cpu_isa(CpuIsa::avx2);
  const CpuIsa uncapped = tstitch::cpu_isa();
  CHECK(uncapped == tstitch::detected_cpu_isa());
  const std::vector<float> fast = fill(1000 + 3);
  tstitch::set_max_cpu_isa(CpuIsa::scalar);
  CHECK(tstitch::cpu_isa() == CpuIsa::scalar);
  const std::vector<float> portable = fill(1000 + 3);
  tstitch::set_max_cpu_isa(previous);
  INFO("uncapped dispatch: " << tstitch::to_string(uncapped));
  CHECK(std::memcmp(fast.data(), portable.data(), fast.size() * sizeof(float)) == 0);
}
