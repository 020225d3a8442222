// SPDX-License-Identifier: Apache-2.0
// The CPU DiT's modulated LayerNorm (models/dit/layernorm.hpp): both instruction-set paths against
// a double-precision two-pass reference, against each other, and at every alignment.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "tstitch/models/dit/layernorm.hpp"

using namespace tstitch;

namespace {

std::vector<float> normal(std::size_t n, float mean, float spread, unsigned seed) {
  std::mt19937 engine(seed);
  std::normal_distribution<float> draw(mean, spread);
  std::vector<float> v(n);
  for (float& x : v)
    x = draw(engine);
  return v;
}

std::vector<CpuIsa> paths() {
  std::vector<CpuIsa> all{CpuIsa::scalar};
  if (detected_cpu_isa() == CpuIsa::avx2)
    all.push_back(CpuIsa::avx2);
  else
    WARN("this CPU has no AVX2 + FMA: only the scalar LayerNorm is tested");
  return all;
}

} // namespace

TEST_CASE("DiT LayerNorm-modulate: each path against a double-precision reference",
          "[dit][layernorm]") {
  // Widths below, at and off a register, DiT's hidden sizes, and rows far from zero mean (the
  // variance must be of centred values).
  for (const std::int64_t d : {1, 3, 8, 13, 40, 48, 64, 128, 384, 1152, 1155}) {
    for (const float offset : {0.0f, 100.0f}) {
      const auto n = static_cast<std::size_t>(d);
      const std::vector<float> x = normal(n, offset, 2.0f, 1), shift = normal(n, 0.0f, 1.0f, 2),
                               scale = normal(n, 0.0f, 0.5f, 3);
      double mean = 0, variance = 0;
      for (float v : x)
        mean += v;
      mean /= static_cast<double>(d);
      for (float v : x)
        variance += (v - mean) * (v - mean);
      variance /= static_cast<double>(d);
      for (const CpuIsa isa : paths()) {
        INFO("d = " << d << ", offset " << offset << ", path " << to_string(isa));
        std::vector<float> out(n);
        dit::layernorm_modulate(isa, x.data(), shift.data(), scale.data(), d, out.data());
        double worst = 0;
        for (std::size_t k = 0; k < n; ++k) {
          const double want =
              (x[k] - mean) / std::sqrt(variance + 1e-6) * (1.0 + scale[k]) + shift[k];
          worst = std::max(worst, std::abs(out[k] - want) / (1.0 + std::abs(want)));
        }
        // float32 sums of d terms around a mean of 100: a few ulp of the mean, relative to
        // a spread of 2.
        CHECK(worst < (offset == 0 ? 2e-6 : 2e-5));
      }
    }
  }
}

TEST_CASE("DiT LayerNorm-modulate: the AVX2 path agrees with the scalar one, at every alignment",
          "[dit][layernorm]") {
  if (detected_cpu_isa() != CpuIsa::avx2) {
    WARN("this CPU has no AVX2 + FMA: nothing to compare");
    return;
  }
  for (const std::int64_t d : {5, 48, 130, 384}) {
    const auto n = static_cast<std::size_t>(d);
    const std::vector<float> x = normal(n + 16, 1.0f, 3.0f, 7), shift = normal(n, 0, 1, 8),
                             scale = normal(n, 0, 1, 9);
    std::vector<float> copy(n + 16), first(n), out(n), scalar(n);
    dit::layernorm_modulate(CpuIsa::avx2, x.data(), shift.data(), scale.data(), d, first.data());
    // The same row at every offset from a 64-byte boundary: the same bits.
    for (std::size_t offset = 0; offset < 16; ++offset) {
      std::memcpy(copy.data() + offset, x.data(), n * sizeof(float));
      dit::layernorm_modulate(CpuIsa::avx2, copy.data() + offset, shift.data(), scale.data(), d,
                              out.data());
      INFO("d = " << d << ", offset " << offset);
      CHECK(std::memcmp(out.data(), first.data(), n * sizeof(float)) == 0);
    }
    dit::layernorm_modulate(CpuIsa::scalar, x.data(), shift.data(), scale.data(), d,
                            scalar.data());
    double worst = 0;
    for (std::size_t k = 0; k < n; ++k)
      worst = std::max(worst, static_cast<double>(std::abs(scalar[k] - first[k])) /
                                  (1.0 + std::abs(first[k])));
    INFO("d = " << d);
    CHECK(worst < 1e-6);
  }
}
