// SPDX-License-Identifier: Apache-2.0
// Every element-wise kernel of the CUDA DiT against a CPU reference written from the DiT
// equations (fp64 on the host from the same inputs). fp32 outputs: relative L2 < 1e-5; bf16
// outputs: < 1e-2. A failure prints the first mismatching index.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <utility>
#include <vector>

#include "tstitch/core/philox.hpp"
#include "tstitch/cuda/kernels.hpp"
#include "tstitch/cuda/runtime.hpp"
#include "tstitch/io/half.hpp"

#include "device_buffers.hpp"

using namespace tstitch;
using tstitch::test::to_device;
using tstitch::test::to_host;
namespace k = tstitch::cuda::kernels;

namespace {

std::vector<float> randn(std::size_t count, std::uint64_t seed, float scale = 1.0f) {
  std::vector<float> v(count);
  fill_normal(v.data(), v.size(), NoiseKey{seed, 0, 0, 0});
  for (float& x : v)
    x *= scale;
  return v;
}

std::vector<float> bf16_to_float(const std::vector<std::uint16_t>& v) {
  std::vector<float> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i)
    out[i] = io::bf16_to_f32(v[i]);
  return out;
}

/// Relative L2 over the entries where mask(i) is true; prints the first index off by more
/// than `tol` relative to the largest reference value.
template <class Mask>
double compare(const std::vector<float>& got, const std::vector<double>& want, double tol,
               const char* what, Mask mask) {
  double diff = 0, norm = 0, scale = 0;
  for (std::size_t i = 0; i < want.size(); ++i)
    if (mask(i))
      scale = std::max(scale, std::abs(want[i]));
  bool reported = false;
  for (std::size_t i = 0; i < want.size(); ++i) {
    if (!mask(i))
      continue;
    const double d = static_cast<double>(got[i]) - want[i];
    diff += d * d;
    norm += want[i] * want[i];
    if (!reported && !(std::abs(d) <= tol * scale)) {
      std::printf("  %s: first mismatch at index %zu: got %.7g, want %.7g\n", what, i,
                  static_cast<double>(got[i]), want[i]);
      reported = true;
    }
  }
  const double rel = std::sqrt(diff / std::max(norm, 1e-300));
  std::printf("  %s: rel L2 %.3e\n", what, rel);
  return std::isfinite(rel) ? rel : INFINITY;
}

double compare(const std::vector<float>& got, const std::vector<double>& want, double tol,
               const char* what) {
  return compare(got, want, tol, what, [](std::size_t) { return true; });
}

} // namespace

TEST_CASE("CUDA layernorm_modulate matches LayerNorm * (1 + scale) + shift", "[cuda][kernels]") {
  const int tokens = 5, dim = 72, batch = 3, mod_ld = 4 * dim, ld = dim + k::bias_columns;
  const std::int64_t rows = static_cast<std::int64_t>(batch) * tokens;
  std::vector<float> h = randn(static_cast<std::size_t>(rows * dim), 1);
  for (std::size_t i = 0; i < h.size(); ++i)
    h[i] += 30.0f; // a large mean: the two-pass variance must not cancel
  const std::vector<float> mod = randn(static_cast<std::size_t>(batch * mod_ld), 2, 0.3f);
  auto dh = to_device(h);
  auto dmod = to_device(mod);
  cuda::DeviceBuffer<std::uint16_t> out(rows * ld);
  k::fill_bias_columns(out.data(), ld, dim, rows, nullptr);
  k::layernorm_modulate(dh.data(), dmod.data(), mod_ld, dim, 3 * dim, out.data(), ld, tokens, dim,
                        rows, nullptr);
  const std::vector<float> got = bf16_to_float(to_host(out));
  std::vector<double> want(got.size());
  for (std::int64_t r = 0; r < rows; ++r) {
    double mean = 0, var = 0;
    for (int c = 0; c < dim; ++c)
      mean += h[static_cast<std::size_t>(r * dim + c)];
    mean /= dim;
    for (int c = 0; c < dim; ++c)
      var += std::pow(h[static_cast<std::size_t>(r * dim + c)] - mean, 2);
    var /= dim;
    const float* m = &mod[static_cast<std::size_t>((r / tokens) * mod_ld)];
    for (int c = 0; c < dim; ++c)
      want[static_cast<std::size_t>(r * ld + c)] =
          (h[static_cast<std::size_t>(r * dim + c)] - mean) / std::sqrt(var + 1e-6) *
              (1.0 + m[3 * dim + c]) +
          m[dim + c];
    want[static_cast<std::size_t>(r * ld + dim)] = 1.0; // the bias column
  }
  CHECK(compare(got, want, 2e-2, "layernorm_modulate",
                [&](std::size_t i) { return static_cast<int>(i % ld) <= dim; }) < 1e-2);
  for (std::int64_t r = 0; r < rows; ++r)
    for (int c = dim + 1; c < ld; ++c)
      REQUIRE(got[static_cast<std::size_t>(r * ld + c)] == 0.0f);
}

TEST_CASE("CUDA residual_layernorm_modulate: gated residual then LayerNorm-modulate",
          "[cuda][kernels]") {
  // Dims covering each register-cache size of the kernel (1, 3, 9 and 32 float4 per lane), the
  // last with a partial final group of lanes; row outputs written with a wider stride. 3 tokens:
  // blocks span samples, the parameters are read per warp; 16 tokens: each block's rows are one
  // sample's, the parameters are staged in shared memory (up to dim 3072), and forcing either
  // staging must give the same bits.
  for (const auto& [dim, tokens] :
       {std::pair{40, 3}, std::pair{384, 3}, std::pair{1152, 3}, std::pair{4092, 3},
        std::pair{40, 16}, std::pair{384, 16}, std::pair{1152, 16}, std::pair{3072, 16},
        std::pair{4092, 16}}) {
    DYNAMIC_SECTION("dim " << dim << ", tokens " << tokens) {
      const int batch = 3, mod_ld = 12 * dim, ld = dim + 8;
      const int gate = 2 * dim, shift = 7 * dim, scale = 8 * dim; // as for block i -> block i + 1
      const std::int64_t rows = static_cast<std::int64_t>(batch) * tokens;
      std::vector<float> h = randn(static_cast<std::size_t>(rows * dim), 11);
      for (float& v : h)
        v += 20.0f; // a large mean: the variance must be taken around it
      const std::vector<float> y = randn(h.size(), 12, 3.0f);
      std::vector<std::uint16_t> yb(y.size());
      std::transform(y.begin(), y.end(), yb.begin(), io::f32_to_bf16_rne);
      const std::vector<float> yr = bf16_to_float(yb); // the kernel's input, as rounded
      const std::vector<float> bias = randn(static_cast<std::size_t>(dim), 13);
      const std::vector<float> mod = randn(static_cast<std::size_t>(batch * mod_ld), 14, 0.5f);
      auto dh = to_device(h);
      auto dy = to_device(yb);
      auto db = to_device(bias);
      auto dm = to_device(mod);
      cuda::DeviceBuffer<std::uint16_t> out(rows * ld);
      TSTITCH_CUDA_CHECK(cudaMemset(out.data(), 0xff, static_cast<std::size_t>(out.bytes())));
      k::residual_layernorm_modulate(dh.data(), dy.data(), db.data(), dm.data(), mod_ld, gate,
                                     shift, scale, out.data(), ld, tokens, dim, rows, nullptr);
      const std::vector<float> got_h = to_host(dh);
      const std::vector<std::uint16_t> got_bits = to_host(out);
      const std::vector<float> got = bf16_to_float(got_bits);
      std::vector<double> want_h(h.size()), want(got.size(), 0.0);
      for (std::int64_t r = 0; r < rows; ++r) {
        const float* m = &mod[static_cast<std::size_t>((r / tokens) * mod_ld)];
        double mean = 0, var = 0;
        for (int c = 0; c < dim; ++c) {
          const std::size_t i = static_cast<std::size_t>(r * dim + c);
          want_h[i] = h[i] + static_cast<double>(m[gate + c]) *
                                 (static_cast<double>(yr[i]) + bias[static_cast<std::size_t>(c)]);
          mean += want_h[i];
        }
        mean /= dim;
        for (int c = 0; c < dim; ++c)
          var += std::pow(want_h[static_cast<std::size_t>(r * dim + c)] - mean, 2);
        var /= dim;
        for (int c = 0; c < dim; ++c)
          want[static_cast<std::size_t>(r * ld + c)] =
              (want_h[static_cast<std::size_t>(r * dim + c)] - mean) / std::sqrt(var + 1e-6) *
                  (1.0 + m[scale + c]) +
              m[shift + c];
      }
      CHECK(compare(got_h, want_h, 1e-5, "residual_layernorm_modulate h") < 1e-5);
      CHECK(compare(got, want, 2e-2, "residual_layernorm_modulate out",
                    [&](std::size_t i) { return static_cast<int>(i % ld) < dim; }) < 1e-2);
      for (std::int64_t r = 0; r < rows; ++r) // the columns past dim are left alone
        for (int c = dim; c < ld; ++c)
          REQUIRE(got_bits[static_cast<std::size_t>(r * ld + c)] == 0xffff);
      if (tokens % 8 == 0 && dim <= 3072) {
        // The other staging, from the same inputs: the same bits.
        for (const auto staging : {k::ParamStaging::global, k::ParamStaging::shared}) {
          auto h2 = to_device(h);
          TSTITCH_CUDA_CHECK(cudaMemset(out.data(), 0xff, static_cast<std::size_t>(out.bytes())));
          k::residual_layernorm_modulate(h2.data(), dy.data(), db.data(), dm.data(), mod_ld, gate,
                                         shift, scale, out.data(), ld, tokens, dim, rows, nullptr,
                                         1e-6f, staging);
          CHECK(to_host(h2) == got_h);
          CHECK(to_host(out) == got_bits);
        }
      }
    }
  }
  SECTION("bad dims are rejected, naming them") {
    cuda::DeviceBuffer<float> h(8 * 4100);
    cuda::DeviceBuffer<std::uint16_t> y(8 * 4100), out(8 * 4100);
    cuda::DeviceBuffer<float> bias(4100), mod(8 * 4100);
    CHECK_THROWS_WITH(k::residual_layernorm_modulate(h.data(), y.data(), bias.data(), mod.data(), 8,
                                                     0, 0, 0, out.data(), 8, 1, 6, 1, nullptr),
                      Catch::Contains("residual_layernorm_modulate dim"));
    CHECK_THROWS_WITH(k::residual_layernorm_modulate(h.data(), y.data(), bias.data(), mod.data(),
                                                     4100, 0, 0, 0, out.data(), 4100, 1, 4100, 1,
                                                     nullptr),
                      Catch::Contains("at most 4096"));
    // Staging in shared memory needs each block's 8 rows in one sample.
    CHECK_THROWS_WITH(k::residual_layernorm_modulate(h.data(), y.data(), bias.data(), mod.data(),
                                                     48, 0, 8, 16, out.data(), 8, 3, 8, 6, nullptr,
                                                     1e-6f, k::ParamStaging::shared),
                      Catch::Contains("residual_layernorm_modulate staging") &&
                          Catch::Contains("tokens % 8 == 0"));
  }
}

TEST_CASE("CUDA launchers reject geometry their kernels cannot address, naming it",
          "[cuda][kernels]") {
  // Each check runs before the launch, so no buffers are needed.
  CHECK_THROWS_WITH(k::patchify(nullptr, nullptr, 48, 3, 10, 4, 1, nullptr),
                    Catch::Contains("patchify size = 10"));
  CHECK_THROWS_WITH(k::patchify(nullptr, nullptr, 40, 3, 8, 4, 1, nullptr),
                    Catch::Contains("patchify ld = 40"));
  CHECK_THROWS_WITH(k::patchify(nullptr, nullptr, 48, 3, 8, 4, 0, nullptr),
                    Catch::Contains("patchify batch = 0"));
  CHECK_THROWS_WITH(k::unpatchify(nullptr, nullptr, 8, 6, 4, 1, nullptr),
                    Catch::Contains("unpatchify size = 6"));
  CHECK_THROWS_WITH(k::unpatchify(nullptr, nullptr, 8, 8, 0, 1, nullptr),
                    Catch::Contains("unpatchify patch = 0"));
  CHECK_THROWS_WITH(k::fill_bias_columns(nullptr, 36, 32, 4, nullptr),
                    Catch::Contains("fill_bias_columns ld = 36"));
  CHECK_THROWS_WITH(k::timestep_frequencies(nullptr, nullptr, 200, 2, nullptr),
                    Catch::Contains("timestep_frequencies ld = 200"));
  CHECK_THROWS_AS(k::timestep_frequencies(nullptr, nullptr, 264, 0, nullptr), invalid_argument);
}

TEST_CASE("CUDA patchify and unpatchify follow DiT's token and channel order", "[cuda][kernels]") {
  const int channels = 3, size = 8, patch = 4, batch = 2, grid = size / patch;
  const int kp = channels * patch * patch, ld = kp + k::bias_columns;
  const int tokens = grid * grid;
  const std::vector<float> x = randn(static_cast<std::size_t>(batch * channels * size * size), 9);
  auto dx = to_device(x);
  cuda::DeviceBuffer<std::uint16_t> patches(static_cast<std::int64_t>(batch) * tokens * ld);
  k::fill_bias_columns(patches.data(), ld, kp, static_cast<std::int64_t>(batch) * tokens, nullptr);
  k::patchify(dx.data(), patches.data(), ld, channels, size, patch, batch, nullptr);
  const std::vector<float> got = bf16_to_float(to_host(patches));
  std::vector<double> want(got.size(), 0.0);
  // The convolution's weight [D, C, p, p] meets patch values in (c, i, j) order.
  for (int n = 0; n < batch; ++n)
    for (int r = 0; r < grid; ++r)
      for (int q = 0; q < grid; ++q)
        for (int c = 0; c < channels; ++c)
          for (int i = 0; i < patch; ++i)
            for (int j = 0; j < patch; ++j) {
              const std::size_t token = static_cast<std::size_t>((n * grid + r) * grid + q);
              want[token * ld + static_cast<std::size_t>((c * patch + i) * patch + j)] =
                  x[static_cast<std::size_t>(((n * channels + c) * size + r * patch + i) * size +
                                             q * patch + j)];
            }
  for (std::size_t t = 0; t < static_cast<std::size_t>(batch * tokens); ++t)
    want[t * ld + static_cast<std::size_t>(kp)] = 1.0;
  CHECK(compare(got, want, 1e-2, "patchify") < 1e-2);

  // unpatchify: token (r, q), column (i*p + j)*Co + o -> out[n, o, r*p + i, q*p + j].
  const int co = 2, width = patch * patch * co;
  const std::vector<float> tok = randn(static_cast<std::size_t>(batch * tokens * width), 10);
  auto dtok = to_device(tok);
  cuda::DeviceBuffer<float> out(static_cast<std::int64_t>(batch) * co * size * size);
  k::unpatchify(dtok.data(), out.data(), co, size, patch, batch, nullptr);
  const std::vector<float> got_out = to_host(out);
  std::vector<double> want_out(got_out.size());
  for (int n = 0; n < batch; ++n)
    for (int r = 0; r < grid; ++r)
      for (int q = 0; q < grid; ++q)
        for (int i = 0; i < patch; ++i)
          for (int j = 0; j < patch; ++j)
            for (int o = 0; o < co; ++o)
              want_out[static_cast<std::size_t>(((n * co + o) * size + r * patch + i) * size +
                                                q * patch + j)] =
                  tok[static_cast<std::size_t>(((n * grid + r) * grid + q) * width +
                                               (i * patch + j) * co + o)];
  CHECK(compare(got_out, want_out, 0.0, "unpatchify") == 0.0);
}

TEST_CASE("CUDA conditioning kernels: timestep sinusoid, SiLU, class table", "[cuda][kernels]") {
  const int batch = 3, dim = 24, ld = 256 + k::bias_columns;
  const float t = 637.25f;
  cuda::DeviceBuffer<float> dt(1);
  TSTITCH_CUDA_CHECK(cudaMemcpy(dt.data(), &t, sizeof t, cudaMemcpyHostToDevice));
  cuda::DeviceBuffer<std::uint16_t> freq(static_cast<std::int64_t>(batch) * ld);
  k::fill_bias_columns(freq.data(), ld, 256, batch, nullptr);
  k::timestep_frequencies(dt.data(), freq.data(), ld, batch, nullptr);
  const std::vector<float> got = bf16_to_float(to_host(freq));
  std::vector<double> want(got.size(), 0.0);
  for (int n = 0; n < batch; ++n) {
    for (int i = 0; i < 128; ++i) {
      const double arg = t * std::exp(-std::log(10000.0) * i / 128.0);
      want[static_cast<std::size_t>(n * ld + i)] = std::cos(arg);
      want[static_cast<std::size_t>(n * ld + 128 + i)] = std::sin(arg);
    }
    want[static_cast<std::size_t>(n * ld + 256)] = 1.0;
  }
  // t * f is rounded to fp32 as DiT does; at t ~ 600 that moves the phase by up to ~3e-5.
  CHECK(compare(got, want, 2e-2, "timestep_frequencies") < 1e-2);

  const int classes = 5, cld = dim + k::bias_columns;
  const std::vector<float> temb = randn(static_cast<std::size_t>(batch * dim), 11);
  const std::vector<float> table = randn(static_cast<std::size_t>((classes + 1) * dim), 12);
  const std::vector<int> labels{4, 5, 0};
  auto dtemb = to_device(temb);
  auto dtable = to_device(table);
  auto dlabels = to_device(labels);
  cuda::DeviceBuffer<std::uint16_t> cond(static_cast<std::int64_t>(batch) * cld);
  k::fill_bias_columns(cond.data(), cld, dim, batch, nullptr);
  k::condition(dtemb.data(), dtable.data(), dlabels.data(), cond.data(), cld, dim, batch, nullptr);
  const std::vector<float> got_c = bf16_to_float(to_host(cond));
  std::vector<double> want_c(got_c.size(), 0.0);
  for (int n = 0; n < batch; ++n) {
    for (int c = 0; c < dim; ++c) {
      const double v =
          static_cast<double>(temb[static_cast<std::size_t>(n * dim + c)]) +
          table[static_cast<std::size_t>(labels[static_cast<std::size_t>(n)] * dim + c)];
      want_c[static_cast<std::size_t>(n * cld + c)] = v / (1 + std::exp(-v));
    }
    want_c[static_cast<std::size_t>(n * cld + dim)] = 1.0;
  }
  CHECK(compare(got_c, want_c, 2e-2, "condition (SiLU(temb + table[y]))") < 1e-2);

  const std::vector<float> hidden = randn(static_cast<std::size_t>(batch * dim), 13, 3.0f);
  auto dhidden = to_device(hidden);
  cuda::DeviceBuffer<std::uint16_t> silu(static_cast<std::int64_t>(batch) * cld);
  k::fill_bias_columns(silu.data(), cld, dim, batch, nullptr);
  k::silu_to_bf16(dhidden.data(), dim, silu.data(), cld, dim, batch, nullptr);
  const std::vector<float> got_s = bf16_to_float(to_host(silu));
  std::vector<double> want_s(got_s.size(), 0.0);
  for (int n = 0; n < batch; ++n) {
    for (int c = 0; c < dim; ++c) {
      const double v = hidden[static_cast<std::size_t>(n * dim + c)];
      want_s[static_cast<std::size_t>(n * cld + c)] = v / (1 + std::exp(-v));
    }
    want_s[static_cast<std::size_t>(n * cld + dim)] = 1.0;
  }
  CHECK(compare(got_s, want_s, 2e-2, "silu_to_bf16") < 1e-2);
}

TEST_CASE("CUDA prepare_inputs copies strided latents, timestep and labels", "[cuda][kernels]") {
  const Shape shape{2, 3, 3};
  const int batch = 3;
  const std::int64_t stride = 25; // a channel slice of a wider tensor
  const std::vector<float> wide = randn(static_cast<std::size_t>(batch * stride), 14);
  auto dwide = to_device(wide);
  const std::vector<int> labels{7, 8, 9};
  auto dlabels = to_device(labels);
  cuda::DeviceBuffer<float> x_in(batch * shape.numel()), t(1);
  cuda::DeviceBuffer<int> labels_out(batch);
  k::prepare_inputs(ConstView(dwide.data() + 3, batch, shape, stride), x_in.data(), 42.5f, t.data(),
                    dlabels.data(), labels_out.data(), nullptr);
  const std::vector<float> got = to_host(x_in);
  std::vector<double> want(got.size());
  for (int n = 0; n < batch; ++n)
    for (std::int64_t e = 0; e < shape.numel(); ++e)
      want[static_cast<std::size_t>(n * shape.numel() + e)] =
          wide[static_cast<std::size_t>(n * stride + 3 + e)];
  CHECK(compare(got, want, 0.0, "prepare_inputs latents") == 0.0);
  CHECK(to_host(t)[0] == 42.5f);
  CHECK(to_host(labels_out) == labels);
}
