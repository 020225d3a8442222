// SPDX-License-Identifier: Apache-2.0
#pragma once

// PyTorch's random generators, so that `torch.randn` noise (and with it a diffusers pipeline's
// seed) can be reproduced outside Python. Written from PyTorch 1.13's ATen sources: the CPU
// generator (mt19937, CPUGeneratorImpl, DistributionsHelper, cpu/DistributionTemplates and the
// Cephes polynomials of cpu/avx_mathfun.h) and the CUDA generator's layout (Philox4x32-10 through
// curand_init / curand_normal4, cuda/DistributionTemplates' grid-stride kernel and offsets).
//
// Both generators are stateful like torch's: every randn() call advances them, so a sequence of
// calls gives the values the same sequence of torch.randn calls on one torch.Generator gives.

#include "tstitch/core/error.hpp"
#include "tstitch/core/philox.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

namespace tstitch::torch_rng {

/// The seed of a torch generator that was never seeded (c10's default_rng_seed_val).
inline constexpr std::uint64_t default_seed = 67280421310721ull;

/// MT19937 as at::mt19937: the reference twister, seeded with the low 32 bits of the seed.
class Mt19937 {
public:
  explicit Mt19937(std::uint64_t seed = 5489) { reseed(seed); }

  void reseed(std::uint64_t seed) {
    state_[0] = static_cast<std::uint32_t>(seed);
    for (std::uint32_t i = 1; i < n; ++i)
      state_[i] = 1812433253u * (state_[i - 1] ^ (state_[i - 1] >> 30)) + i;
    next_ = n;
  }

  std::uint32_t operator()() {
    if (next_ == n)
      twist();
    std::uint32_t y = state_[next_++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    return y ^ (y >> 18);
  }

private:
  static constexpr std::uint32_t n = 624;
  static constexpr std::uint32_t m = 397;

  void twist() {
    for (std::uint32_t i = 0; i < n; ++i) {
      const std::uint32_t y = (state_[i] & 0x80000000u) | (state_[(i + 1) % n] & 0x7fffffffu);
      state_[i] = state_[(i + m) % n] ^ (y >> 1) ^ ((y & 1u) != 0 ? 0x9908b0dfu : 0u);
    }
    next_ = 0;
  }

  std::array<std::uint32_t, n> state_{};
  std::uint32_t next_ = n;
};

/// Which of ATen's CPU normal kernels to reproduce for float tensors of 16 or more elements.
/// ATen picks one by the CPU capability it dispatches to (torch.__config__.show() names it).
enum class CpuKernel {
  avx2,   ///< capability AVX2 or AVX512 (x86-64): Cephes log/sincos, fused multiply-adds
  scalar, ///< capability DEFAULT (ATEN_CPU_CAPABILITY=default, other CPUs): libm logf/cosf/sinf
};

namespace detail {

// avx_mathfun.h's log256_ps for one lane, with the multiply-adds a GCC build with FMA contracts
// (each product feeding an addition is fused; which of two products is fused was settled
// against torch's own output).
inline float cephes_log(float x) {
  x = std::max(x, std::bit_cast<float>(0x00800000u));
  const auto bits = std::bit_cast<std::uint32_t>(x);
  float e = static_cast<float>(static_cast<std::int32_t>(bits >> 23) - 0x7f) + 1.0f;
  x = std::bit_cast<float>((bits & ~0x7f800000u) | std::bit_cast<std::uint32_t>(0.5f));
  const bool below = x < 0.707106781186547524f;
  const float keep = below ? x : 0.0f;
  x = x - 1.0f;
  e = e - (below ? 1.0f : 0.0f);
  x = x + keep;
  const float z = x * x;
  float y = std::fma(7.0376836292E-2f, x, -1.1514610310E-1f);
  y = std::fma(y, x, 1.1676998740E-1f);
  y = std::fma(y, x, -1.2420140846E-1f);
  y = std::fma(y, x, +1.4249322787E-1f);
  y = std::fma(y, x, -1.6668057665E-1f);
  y = std::fma(y, x, +2.0000714765E-1f);
  y = std::fma(y, x, -2.4999993993E-1f);
  y = std::fma(y, x, +3.3333331174E-1f);
  y = y * x;
  y = std::fma(y, z, e * -2.12194440e-4f);
  y = std::fma(-z, 0.5f, y);
  x = x + y;
  return std::fma(e, 0.693359375f, x);
}

struct SinCos {
  float sin, cos;
};

// avx_mathfun.h's sincos256_ps for one lane (the same contraction as cephes_log).
inline SinCos cephes_sincos(float theta) {
  std::uint32_t sign_sin = std::bit_cast<std::uint32_t>(theta) & 0x80000000u;
  float x = std::bit_cast<float>(std::bit_cast<std::uint32_t>(theta) & 0x7fffffffu);
  auto j = static_cast<std::int32_t>(x * 1.27323954473516f); // truncation, as cvttps
  j = (j + 1) & ~1;
  const auto y = static_cast<float>(j);
  sign_sin ^= static_cast<std::uint32_t>(j & 4) << 29;
  const bool sine_poly = (j & 2) == 0; // the polynomial that is the sine
  const std::uint32_t sign_cos = static_cast<std::uint32_t>(~(j - 2) & 4) << 29;
  x = std::fma(y, -0.78515625f, x);
  x = std::fma(y, -2.4187564849853515625e-4f, x);
  x = std::fma(y, -3.77489497744594108e-8f, x);
  const float z = x * x;
  float c = std::fma(2.443315711809948E-005f, z, -1.388731625493765E-003f);
  c = std::fma(c, z, 4.166664568298827E-002f);
  c = c * z;
  c = std::fma(c, z, -(z * 0.5f));
  c = c + 1.0f;
  float s = std::fma(-1.9515295891E-4f, z, 8.3321608736E-3f);
  s = std::fma(s, z, -1.6666654611E-1f);
  s = s * z;
  s = std::fma(s, x, x);
  // The blend as written there: one addend is +0, which decides the sign of a zero result.
  const float sin_part = (sine_poly ? 0.0f : c) + (sine_poly ? s : 0.0f);
  const float cos_part = (c - (sine_poly ? 0.0f : c)) + (s - (sine_poly ? s : 0.0f));
  return SinCos{std::bit_cast<float>(std::bit_cast<std::uint32_t>(sin_part) ^ sign_sin),
                std::bit_cast<float>(std::bit_cast<std::uint32_t>(cos_part) ^ sign_cos)};
}

// normal_fill_16 for one block of 16 uniforms in place: pairs (j, j + 8) become
// r cos(theta), r sin(theta) with r = sqrt(-2 log(1 - u_j)), theta = 2 pi u_{j+8}.
inline void normal_fill_16_avx2(float* data) {
  const auto two_pi = static_cast<float>(2.0f * 3.14159265358979323846);
  for (int j = 0; j < 8; ++j) {
    const float radius = std::sqrt(-2.0f * cephes_log(1.0f - data[j]));
    const SinCos sc = cephes_sincos(two_pi * data[j + 8]);
    data[j] = radius * sc.cos;
    data[j + 8] = radius * sc.sin;
  }
}

template <class T> void normal_fill_16_scalar(T* data) {
  for (int j = 0; j < 8; ++j) {
    const T radius = std::sqrt(T(-2) * std::log(T(1) - data[j]));
    const auto theta = static_cast<T>(2.0f * 3.14159265358979323846 * data[j + 8]);
    data[j] = radius * std::cos(theta);
    data[j + 8] = radius * std::sin(theta);
  }
}

} // namespace detail

/// torch's CPU generator (torch.Generator(), torch.manual_seed) and its randn.
class CpuGenerator {
public:
  explicit CpuGenerator(std::uint64_t seed = default_seed, CpuKernel kernel = CpuKernel::avx2)
      : kernel_(kernel) {
    manual_seed(seed);
  }

  /// As Generator.manual_seed: a fresh engine, and the cached Box-Muller partner dropped.
  void manual_seed(std::uint64_t seed) {
    seed_ = seed;
    engine_.reseed(seed);
    next_double_normal_.reset();
  }
  [[nodiscard]] std::uint64_t initial_seed() const { return seed_; }
  [[nodiscard]] CpuKernel kernel() const { return kernel_; }

  std::uint32_t random() { return engine_(); }
  /// Two draws, the first one the high word.
  std::uint64_t random64() {
    const std::uint64_t hi = engine_();
    const std::uint64_t lo = engine_();
    return (hi << 32) | lo;
  }

  /// uniform_real_distribution<float>(0, 1): the low 24 bits of one draw, times 2^-24.
  float uniform_float() { return static_cast<float>(random() & 0xffffffu) * 0x1p-24f; }
  /// uniform_real_distribution<double>(0, 1): the low 53 bits of random64(), times 2^-53.
  double uniform_double() {
    return static_cast<double>(random64() & ((std::uint64_t{1} << 53) - 1)) * 0x1p-53;
  }

  /// normal_distribution<double>: Box-Muller on two double uniforms, the second value (the sine)
  /// kept in the generator for the next call - also the next randn call's first element.
  double normal_double() {
    if (next_double_normal_) {
      const double cached = *next_double_normal_;
      next_double_normal_.reset();
      return cached;
    }
    const double u1 = uniform_double();
    const double u2 = uniform_double();
    const double r = std::sqrt(-2.0 * std::log(1.0 - u2));
    const double theta = 2.0 * 3.14159265358979323846 * u1;
    next_double_normal_ = r * std::sin(theta);
    return r * std::cos(theta);
  }

  /// torch.randn(count, generator=this) into dst (float32, contiguous).
  void randn(std::span<float> dst) {
    if (dst.size() < 16) {
      for (float& v : dst)
        v = static_cast<float>(normal_double());
      return;
    }
    fill_uniform(dst);
    normal_fill(dst, [&](float* block) { transform(block); });
  }

  /// torch.randn(count, dtype=torch.float64, generator=this) into dst.
  void randn(std::span<double> dst) {
    if (dst.size() < 16) {
      for (double& v : dst)
        v = normal_double();
      return;
    }
    fill_uniform(dst);
    normal_fill(dst, [](double* block) { detail::normal_fill_16_scalar(block); });
  }

private:
  void fill_uniform(std::span<float> dst) {
    for (float& v : dst)
      v = uniform_float();
  }
  void fill_uniform(std::span<double> dst) {
    for (double& v : dst)
      v = uniform_double();
  }

  void transform(float* block) const {
    if (kernel_ == CpuKernel::avx2)
      detail::normal_fill_16_avx2(block);
    else
      detail::normal_fill_16_scalar(block);
  }

  // ATen's normal_fill: uniforms for every element first, then blocks of 16; a size that is not
  // a multiple of 16 draws 16 fresh uniforms over the last 16 elements and transforms them again.
  template <class T, class F> void normal_fill(std::span<T> dst, F block) {
    const std::size_t size = dst.size();
    for (std::size_t i = 0; i + 16 <= size; i += 16)
      block(dst.data() + i);
    if (size % 16 != 0) {
      const std::span<T> tail = dst.subspan(size - 16);
      fill_uniform(tail);
      block(tail.data());
    }
  }

  Mt19937 engine_;
  std::uint64_t seed_ = default_seed;
  CpuKernel kernel_;
  std::optional<double> next_double_normal_;
};

/// The launch geometry torch's CUDA randn derives from the device: the grid is capped at
/// multiprocessors * (max threads per multiprocessor / 256) blocks of 256 threads, so tensors
/// larger than that many threads lay their values out differently on different GPUs.
struct CudaDevice {
  std::uint32_t multiprocessors = 132;                 // H100 SXM
  std::uint32_t max_threads_per_multiprocessor = 2048; // compute capability 7.0, 8.0, 9.0
};

/// Where one element of a CUDA randn comes from: thread `thread` of the grid, its `call`-th
/// curand_normal4, component `lane` of the four.
struct CudaSlot {
  std::uint64_t thread;
  std::uint64_t call;
  std::uint32_t lane;
};

/// torch's CUDA generator (torch.Generator('cuda'), torch.cuda.manual_seed) on the host: seed,
/// Philox offset and the per-thread layout of randn for float32. The Philox words are exactly the
/// GPU's; the Box-Muller uses the host's logf, sinf and cosf where the GPU uses logf and the
/// approximate __sincosf, so values agree to about 1e-6, not to the bit.
class CudaGenerator {
public:
  static constexpr std::uint32_t block_size = 256;
  static constexpr std::uint32_t engine_calls = 4; // values per curand_normal4

  explicit CudaGenerator(std::uint64_t seed = default_seed, CudaDevice device = {})
      : device_(device) {
    require(device.multiprocessors > 0, "CudaDevice::multiprocessors", device.multiprocessors,
            "must be positive");
    require(device.max_threads_per_multiprocessor >= block_size,
            "CudaDevice::max_threads_per_multiprocessor", device.max_threads_per_multiprocessor,
            "must be at least 256");
    manual_seed(seed);
  }

  void manual_seed(std::uint64_t seed) {
    seed_ = seed;
    offset_ = 0;
  }
  [[nodiscard]] std::uint64_t initial_seed() const { return seed_; }
  /// philox_offset_per_thread: advanced by every randn call.
  [[nodiscard]] std::uint64_t offset() const { return offset_; }

  /// Blocks of the grid torch launches for count elements.
  [[nodiscard]] std::uint64_t grid(std::uint64_t count) const {
    const std::uint64_t cap = std::uint64_t{device_.multiprocessors} *
                              (device_.max_threads_per_multiprocessor / block_size);
    return std::min(cap, (count + block_size - 1) / block_size);
  }

  /// The Philox offset a randn of count elements consumes (calc_execution_policy's
  /// counter_offset, rounded up to a multiple of 4 as philox_cuda_state does).
  [[nodiscard]] std::uint64_t offset_increment(std::uint64_t count) const {
    const std::uint64_t threads = grid(count) * block_size;
    const std::uint64_t calls = (count - 1) / (threads * engine_calls) + 1;
    return (calls * engine_calls + 3) / 4 * 4;
  }

  /// The thread, call and lane that produce element index of a randn of count elements.
  [[nodiscard]] CudaSlot slot(std::uint64_t index, std::uint64_t count) const {
    const std::uint64_t threads = grid(count) * block_size;
    const std::uint64_t round = threads * engine_calls;
    return CudaSlot{index % threads, index / round,
                    static_cast<std::uint32_t>(index % round / threads)};
  }

  /// The four Philox words of a thread's call-th curand4 after curand_init(seed, thread, offset)
  /// with an offset that is a multiple of 4: counter {offset / 4 + call, thread}, key = seed.
  [[nodiscard]] static Uint4 philox_words(std::uint64_t seed, std::uint64_t thread,
                                          std::uint64_t offset, std::uint64_t call) {
    const std::uint64_t low = offset / 4 + call;
    std::uint64_t high = thread;
    if (low < offset / 4) // the 128-bit counter's carry
      ++high;
    return philox4x32_10(
        Uint4{{static_cast<std::uint32_t>(low), static_cast<std::uint32_t>(low >> 32),
               static_cast<std::uint32_t>(high), static_cast<std::uint32_t>(high >> 32)}},
        static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32));
  }

  /// curand_normal4 of four Philox words: Box-Muller on (x, y) and (z, w), sine first.
  [[nodiscard]] static std::array<float, 4> normal4(Uint4 words) {
    std::array<float, 4> out{};
    for (int pair = 0; pair < 2; ++pair) {
      constexpr float inv = 2.3283064e-10f; // curand's 2^-32 (as its float literal rounds)
      constexpr float inv_2pi = 2.3283064e-10f * 6.2831855f;
      const float u = std::fma(static_cast<float>(words.v[2 * pair]), inv, inv / 2);
      const float v = std::fma(static_cast<float>(words.v[2 * pair + 1]), inv_2pi, inv_2pi / 2);
      const float s = std::sqrt(-2.0f * std::log(u));
      out[static_cast<std::size_t>(2 * pair)] = std::sin(v) * s;
      out[static_cast<std::size_t>(2 * pair + 1)] = std::cos(v) * s;
    }
    return out;
  }

  /// torch.randn(count, device='cuda', generator=this) for float32, computed on the host.
  void randn(std::span<float> dst) {
    const std::uint64_t count = dst.size();
    if (count == 0)
      return;
    const std::uint64_t threads = grid(count) * block_size;
    const std::uint64_t round = threads * engine_calls;
    const std::uint64_t offset = offset_;
    offset_ += offset_increment(count);
    for (std::uint64_t thread = 0; thread < std::min(threads, count); ++thread)
      for (std::uint64_t call = 0; call * round + thread < count; ++call) {
        const std::array<float, 4> n = normal4(philox_words(seed_, thread, offset, call));
        for (std::uint32_t lane = 0; lane < engine_calls; ++lane) {
          const std::uint64_t index = call * round + lane * threads + thread;
          if (index < count)
            dst[index] = n[lane];
        }
      }
  }

private:
  CudaDevice device_;
  std::uint64_t seed_ = default_seed;
  std::uint64_t offset_ = 0;
};

} // namespace tstitch::torch_rng
