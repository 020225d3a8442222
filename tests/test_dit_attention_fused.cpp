// SPDX-License-Identifier: Apache-2.0
#include <catch2/catch.hpp>

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <vector>

#include "tstitch/models/dit/attention_fused.hpp"

namespace {

using tstitch::dit::FusedAttentionPath;

struct Case {
  std::int64_t samples, tokens, heads, head_dim;
  float spread; // standard deviation of q, k and v: 3 makes the softmax sharp
};

std::vector<float> normal_floats(std::size_t count, float spread, unsigned seed) {
  std::mt19937 generator(seed);
  std::normal_distribution<float> normal(0.0f, spread);
  std::vector<float> values(count);
  for (float& v : values)
    v = normal(generator);
  return values;
}

/// The definition, in double.
std::vector<double> reference_attention(const std::vector<float>& qkv, const Case& c) {
  const std::int64_t d = c.heads * c.head_dim, t = c.tokens;
  const auto at = [&](std::int64_t n, std::int64_t token, std::int64_t column) {
    return static_cast<double>(qkv[static_cast<std::size_t>((n * t + token) * 3 * d + column)]);
  };
  std::vector<double> out(static_cast<std::size_t>(c.samples * t * d));
  std::vector<double> weights(static_cast<std::size_t>(t));
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
  for (std::int64_t n = 0; n < c.samples; ++n)
    for (std::int64_t h = 0; h < c.heads; ++h)
      for (std::int64_t i = 0; i < t; ++i) {
        double top = -std::numeric_limits<double>::infinity();
        for (std::int64_t j = 0; j < t; ++j) {
          double dot = 0.0;
          for (std::int64_t e = 0; e < c.head_dim; ++e)
            dot += at(n, i, h * c.head_dim + e) * at(n, j, d + h * c.head_dim + e);
          weights[static_cast<std::size_t>(j)] = scale * dot;
          top = std::max(top, scale * dot);
        }
        double sum = 0.0;
        for (double& w : weights) {
          w = std::exp(w - top);
          sum += w;
        }
        for (std::int64_t e = 0; e < c.head_dim; ++e) {
          double o = 0.0;
          for (std::int64_t j = 0; j < t; ++j)
            o += weights[static_cast<std::size_t>(j)] * at(n, j, 2 * d + h * c.head_dim + e);
          out[static_cast<std::size_t>((n * t + i) * d + h * c.head_dim + e)] = o / sum;
        }
      }
  return out;
}

template <class T> double relative_l2(const std::vector<float>& got, const std::vector<T>& want) {
  double error = 0.0, norm = 0.0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double difference = static_cast<double>(got[i]) - static_cast<double>(want[i]);
    error += difference * difference;
    norm += static_cast<double>(want[i]) * static_cast<double>(want[i]);
  }
  return std::sqrt(error / norm);
}

/// fused_attention_scratch_floats floats at a 64-byte boundary.
class Scratch {
public:
  explicit Scratch(std::int64_t floats)
      : storage_(static_cast<std::size_t>(floats) + 16), data_(storage_.data()) {
    void* start = storage_.data();
    std::size_t space = storage_.size() * sizeof(float);
    data_ = static_cast<float*>(std::align(64, sizeof(float), start, space));
  }
  float* data() { return data_; }

private:
  std::vector<float> storage_;
  float* data_;
};

std::vector<float> run(FusedAttentionPath path, const std::vector<float>& qkv, const Case& c,
                       std::int64_t first_sample, std::int64_t last_sample) {
  std::vector<float> out(static_cast<std::size_t>(c.samples * c.tokens * c.heads * c.head_dim),
                         std::numeric_limits<float>::quiet_NaN());
  Scratch scratch(tstitch::dit::fused_attention_scratch_floats(c.tokens, c.head_dim));
  tstitch::dit::fused_attention(path, qkv.data(), first_sample, last_sample, c.tokens, c.heads,
                                c.head_dim, out.data(), scratch.data());
  return out;
}

std::vector<FusedAttentionPath> paths_here() {
  std::vector<FusedAttentionPath> paths{FusedAttentionPath::scalar};
  if (tstitch::dit::fused_attention_avx2_supported())
    paths.push_back(FusedAttentionPath::avx2);
  else
    WARN("no AVX2 + FMA on this CPU: the avx2 path is not tested");
  return paths;
}

const char* name(FusedAttentionPath path) {
  return path == FusedAttentionPath::avx2 ? "avx2" : "scalar";
}

std::vector<float> qkv_for(const Case& c, unsigned seed) {
  return normal_floats(static_cast<std::size_t>(c.samples * c.tokens * 3 * c.heads * c.head_dim),
                       c.spread, seed);
}

} // namespace

TEST_CASE("fused attention matches a double-precision reference", "[dit][attention]") {
  const Case c = GENERATE(Case{2, 1, 1, 8, 1}, Case{2, 7, 2, 8, 1}, Case{3, 50, 2, 24, 1},
                          Case{2, 33, 1, 40, 3}, Case{2, 64, 3, 16, 1}, Case{1, 64, 4, 32, 3},
                          Case{2, 256, 2, 64, 1}, Case{2, 30, 2, 12, 1}, Case{1, 64, 3, 5, 1},
                          Case{1, 1024, 1, 16, 1}, Case{1, 64, 2, 48, 3}, Case{2, 9, 1, 1, 3});
  CAPTURE(c.samples, c.tokens, c.heads, c.head_dim, c.spread);
  const std::vector<float> qkv = qkv_for(c, 1234);
  const std::vector<double> want = reference_attention(qkv, c);
  for (const FusedAttentionPath path : paths_here()) {
    CAPTURE(name(path));
    const std::vector<float> got = run(path, qkv, c, 0, c.samples);
    CHECK(relative_l2(got, want) < 2e-6);
  }
}

TEST_CASE("fused attention writes only the samples it is given", "[dit][attention]") {
  const Case c{4, 19, 2, 12, 1}; // head_dim 12: partial registers at the edges
  const std::vector<float> qkv = qkv_for(c, 99);
  const std::vector<double> want = reference_attention(qkv, c);
  const std::size_t per_sample = static_cast<std::size_t>(c.tokens * c.heads * c.head_dim);
  for (const FusedAttentionPath path : paths_here()) {
    CAPTURE(name(path));
    const std::vector<float> got = run(path, qkv, c, 1, 3);
    for (std::size_t i = 0; i < got.size(); ++i) {
      const bool written = i >= per_sample && i < 3 * per_sample;
      if (written) {
        REQUIRE(std::abs(static_cast<double>(got[i]) - want[i]) < 1e-5);
      } else {
        REQUIRE(std::isnan(got[i]));
      }
    }
  }
}

TEST_CASE("fused attention's two paths agree", "[dit][attention]") {
  if (!tstitch::dit::fused_attention_avx2_supported()) {
    WARN("no AVX2 + FMA on this CPU: nothing to compare");
    return;
  }
  // Spread 1: with spread 3 each path's scores carry rounding errors of ~1e-6 (float scores of
  // size ~20), so two correct paths can differ by about that much; the reference test covers it.
  const Case c = GENERATE(Case{21, 64, 3, 16, 1}, Case{16, 64, 4, 32, 1}, Case{2, 100, 2, 40, 1},
                          Case{1, 300, 2, 24, 1}, Case{1, 17, 3, 7, 1});
  CAPTURE(c.samples, c.tokens, c.heads, c.head_dim, c.spread);
  const std::vector<float> qkv = qkv_for(c, 7);
  const std::vector<float> scalar = run(FusedAttentionPath::scalar, qkv, c, 0, c.samples);
  const std::vector<float> avx2 = run(FusedAttentionPath::avx2, qkv, c, 0, c.samples);
  CHECK(relative_l2(avx2, scalar) < 1e-6);
}

TEST_CASE("fused attention rejects bad arguments", "[dit][attention]") {
  std::vector<float> data(64), scratch(1024);
  const auto call = [&](std::int64_t first, std::int64_t last, std::int64_t tokens,
                        std::int64_t heads, std::int64_t head_dim) {
    tstitch::dit::fused_attention(FusedAttentionPath::scalar, data.data(), first, last, tokens,
                                  heads, head_dim, data.data(), scratch.data());
  };
  CHECK_THROWS_AS(call(0, 1, 0, 1, 8), std::invalid_argument);
  CHECK_THROWS_AS(call(0, 1, 1, 0, 8), std::invalid_argument);
  CHECK_THROWS_AS(call(0, 1, 1, 1, 0), std::invalid_argument);
  CHECK_THROWS_AS(call(-1, 1, 1, 1, 8), std::invalid_argument);
  CHECK_THROWS_AS(call(2, 1, 1, 1, 8), std::invalid_argument);
  CHECK_NOTHROW(call(1, 1, 1, 1, 8)); // an empty range does nothing
  if (!tstitch::dit::fused_attention_avx2_supported())
    CHECK_THROWS_AS(tstitch::dit::fused_attention(FusedAttentionPath::avx2, data.data(), 0, 1, 1, 1,
                                                  8, data.data(), scratch.data()),
                    std::invalid_argument);
}

#if defined(__x86_64__) || defined(__i386__)
TEST_CASE("fused attention's vectorised exp", "[dit][attention]") {
  if (!tstitch::dit::fused_attention_avx2_supported()) {
    WARN("no AVX2 + FMA on this CPU: the vectorised exp is not tested");
    return;
  }
  // A dense sweep of [-100, 0], the arguments' range ends, and the smallest magnitudes.
  std::vector<float> x;
  constexpr int steps = 2'000'000;
  for (int i = 0; i <= steps; ++i)
    x.push_back(-100.0f * static_cast<float>(i) / static_cast<float>(steps));
  for (float v = -1e-3f; v < -1e-38f; v *= 0.5f)
    x.push_back(v);
  for (const float v :
       {0.0f, -0.0f, -std::numeric_limits<float>::denorm_min(), -std::numeric_limits<float>::min(),
        -87.3365f, -87.33654f, -87.3366f, -88.0f, -88.7f, -103.9f, -1e30f,
        -std::numeric_limits<float>::max(), -std::numeric_limits<float>::infinity()})
    x.push_back(v);
  std::vector<float> y(x.size());
  tstitch::detail::fused_attention_kernels::exp_avx2_for_testing(
      x.data(), y.data(), static_cast<std::int64_t>(x.size()));
  // 2 ulp: a float's ulp is at most 2^-23 = 1.19e-7 of it. The polynomial is good to 4e-9, the
  // reduction's and Horner's roundings add about an ulp; 2^n scales exactly. Measured: 7.7e-8.
  double worst = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    CAPTURE(x[i]);
    if (x[i] < -87.3365f) {
      REQUIRE(y[i] == 0.0f); // no denormals: exactly 0 below ln(FLT_MIN)
      continue;
    }
    REQUIRE(y[i] >= std::numeric_limits<float>::min());
    const double exact = std::exp(static_cast<double>(x[i]));
    worst = std::max(worst, std::abs(static_cast<double>(y[i]) - exact) / exact);
  }
  CHECK(worst < 2.4e-7);
  // NaN stays NaN, whatever its payload, so that a NaN in the scores is not hidden.
  const float nans[3] = {std::numeric_limits<float>::quiet_NaN(), std::bit_cast<float>(0x7FC001FFu),
                         std::bit_cast<float>(0xFFFFFFFFu)};
  float nan_out[3] = {};
  tstitch::detail::fused_attention_kernels::exp_avx2_for_testing(nans, nan_out, 3);
  for (const float v : nan_out)
    CHECK(std::isnan(v));
}
#endif
