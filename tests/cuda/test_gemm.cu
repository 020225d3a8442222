// SPDX-License-Identifier: Apache-2.0
// cuda::Blas, the GEMMs of the CUDA DiT, against a double-precision loop over the same bf16
// inputs: cuBLAS (no epilogue) and cuBLASLt with each epilogue, bf16 and fp32 outputs, row strides
// wider than the rows. fp32 outputs: relative L2 < 1e-5; bf16 outputs: < 1e-2.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "tstitch/core/philox.hpp"
#include "tstitch/cuda/device/gemm.cuh"
#include "tstitch/io/half.hpp"

#include "device_buffers.hpp"

using namespace tstitch;
using cuda::GemmEpilogue;
using tstitch::test::to_device;
using tstitch::test::to_host;

namespace {

std::vector<std::uint16_t> random_bf16(std::size_t count, std::uint64_t seed, float scale) {
  std::vector<float> v(count);
  fill_normal(v.data(), v.size(), NoiseKey{seed, 7, 0, 0});
  std::vector<std::uint16_t> out(count);
  for (std::size_t i = 0; i < count; ++i)
    out[i] = io::f32_to_bf16_rne(scale * v[i]);
  return out;
}

double gelu_tanh(double v) {
  return 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
}

struct Problem {
  int m, n, k, ldx, ldw, ldy;
};

/// Relative L2 of got against want over the [m, n] block of a row-stride-ldy output; prints the
/// first entry off by more than 3 tol relative to the largest reference value.
double rel_l2(const std::vector<double>& got, const std::vector<double>& want, const Problem& p,
              double tol, const char* what) {
  double diff = 0, norm = 0, scale = 0;
  for (const double w : want)
    scale = std::max(scale, std::abs(w));
  bool reported = false;
  for (int r = 0; r < p.m; ++r)
    for (int c = 0; c < p.n; ++c) {
      const std::size_t i = static_cast<std::size_t>(r) * static_cast<std::size_t>(p.ldy) +
                            static_cast<std::size_t>(c);
      const double d = got[i] - want[i];
      diff += d * d;
      norm += want[i] * want[i];
      if (!reported && !(std::abs(d) <= 3 * tol * scale)) {
        std::printf("  %s: first mismatch at row %d, column %d: got %.7g, want %.7g\n", what, r, c,
                    got[i], want[i]);
        reported = true;
      }
    }
  const double rel = std::sqrt(diff / std::max(norm, 1e-300));
  std::printf("  %s: rel L2 %.3e\n", what, rel);
  return std::isfinite(rel) ? rel : INFINITY;
}

} // namespace

TEST_CASE("cuda::Blas GEMMs and their epilogues match a double loop", "[cuda][gemm]") {
  cuda::Blas blas(nullptr); // the legacy stream: ordered with the uploads
  for (const Problem p : {Problem{70, 48, 40, 48, 40, 56}, Problem{256, 96, 72, 80, 72, 96},
                          Problem{3, 24, 16, 16, 24, 24}}) {
    const auto x = random_bf16(static_cast<std::size_t>(p.m) * p.ldx, 1, 1.0f);
    const auto w = random_bf16(static_cast<std::size_t>(p.n) * p.ldw, 2, 0.3f);
    const auto b = random_bf16(static_cast<std::size_t>(p.n), 3, 1.0f);
    std::vector<float> b_float(b.size());
    for (std::size_t i = 0; i < b.size(); ++i)
      b_float[i] = io::bf16_to_f32(b[i]);
    auto dx = to_device(x);
    auto dw = to_device(w);
    auto db = to_device(b);
    auto db_float = to_device(b_float);
    // Reference products of the bf16 inputs (only the first k columns of x and w count).
    std::vector<double> product(static_cast<std::size_t>(p.m) * p.ldy, 0.0);
    for (int r = 0; r < p.m; ++r)
      for (int c = 0; c < p.n; ++c) {
        double acc = 0;
        for (int i = 0; i < p.k; ++i)
          acc += static_cast<double>(io::bf16_to_f32(x[static_cast<std::size_t>(r) * p.ldx + i])) *
                 io::bf16_to_f32(w[static_cast<std::size_t>(c) * p.ldw + i]);
        product[static_cast<std::size_t>(r) * p.ldy + c] = acc;
      }
    for (const GemmEpilogue epilogue :
         {GemmEpilogue::none, GemmEpilogue::bias, GemmEpilogue::bias_gelu}) {
      std::vector<double> want(product.size(), 0.0);
      for (int r = 0; r < p.m; ++r)
        for (int c = 0; c < p.n; ++c) {
          const std::size_t i = static_cast<std::size_t>(r) * p.ldy + c;
          const double v = product[i] + (epilogue == GemmEpilogue::none ? 0.0 : b_float[c]);
          want[i] = epilogue == GemmEpilogue::bias_gelu ? gelu_tanh(v) : v;
        }
      DYNAMIC_SECTION("m " << p.m << " n " << p.n << " k " << p.k << " epilogue "
                           << static_cast<int>(epilogue)) {
        // bf16 output through cuBLASLt.
        cuda::DeviceBuffer<std::uint16_t> y16(static_cast<std::int64_t>(p.m) * p.ldy);
        blas.linear(dx.data(), p.ldx, dw.data(), p.ldw, y16.data(), CUDA_R_16BF, p.ldy, p.m, p.n,
                    p.k, epilogue, epilogue == GemmEpilogue::none ? nullptr : db.data());
        const auto got16 = to_host(y16);
        std::vector<double> got(got16.size());
        for (std::size_t i = 0; i < got.size(); ++i)
          got[i] = io::bf16_to_f32(got16[i]);
        CHECK(rel_l2(got, want, p, 1e-2, "bf16 out") < 1e-2);
        // fp32 output through cuBLASLt (fp32 bias).
        if (epilogue != GemmEpilogue::bias_gelu) {
          cuda::DeviceBuffer<float> y32(static_cast<std::int64_t>(p.m) * p.ldy);
          blas.linear(dx.data(), p.ldx, dw.data(), p.ldw, y32.data(), CUDA_R_32F, p.ldy, p.m, p.n,
                      p.k, epilogue, epilogue == GemmEpilogue::none ? nullptr : db_float.data());
          const auto got32 = to_host(y32);
          std::vector<double> g(got32.begin(), got32.end());
          CHECK(rel_l2(g, want, p, 1e-5, "fp32 out") < 1e-5);
        }
        // The same plan again (cached) gives the same bits.
        blas.linear(dx.data(), p.ldx, dw.data(), p.ldw, y16.data(), CUDA_R_16BF, p.ldy, p.m, p.n,
                    p.k, epilogue, epilogue == GemmEpilogue::none ? nullptr : db.data());
        CHECK(to_host(y16) == got16);
      }
    }
    DYNAMIC_SECTION("cublasGemmEx path, m " << p.m) {
      cuda::DeviceBuffer<float> y32(static_cast<std::int64_t>(p.m) * p.ldy);
      blas.linear(dx.data(), p.ldx, dw.data(), p.ldw, y32.data(), CUDA_R_32F, p.ldy, p.m, p.n, p.k);
      const auto got32 = to_host(y32);
      std::vector<double> g(got32.begin(), got32.end());
      CHECK(rel_l2(g, product, p, 1e-5, "cublasGemmEx fp32 out") < 1e-5);
    }
  }
}

TEST_CASE("cuda::Blas rejects what cuBLASLt cannot be given, naming it", "[cuda][gemm]") {
  cuda::Blas blas(nullptr);
  cuda::DeviceBuffer<std::uint16_t> x(64 * 64), w(64 * 64), y(64 * 64), b(64);
  CHECK_THROWS_WITH(blas.linear(x.data(), 64, w.data(), 64, y.data(), CUDA_R_16BF, 64, 64, 64, 64,
                                GemmEpilogue::bias, nullptr),
                    Catch::Contains("GEMM bias"));
  CHECK_THROWS_WITH(blas.linear(x.data(), 64, w.data(), 64, y.data(), CUDA_R_16BF, 64, 64, 64, 64,
                                GemmEpilogue::bias, b.data() + 1),
                    Catch::Contains("16-byte aligned"));
  CHECK_THROWS_WITH(blas.linear(x.data(), 64, w.data(), 64, y.data(), CUDA_R_16F, 64, 64, 64, 64,
                                GemmEpilogue::none, nullptr),
                    Catch::Contains("GEMM output type"));
  CHECK_THROWS_WITH(blas.linear(x.data(), 64, w.data(), 64, y.data(), CUDA_R_16BF, 64, 0, 64, 64,
                                GemmEpilogue::none, nullptr),
                    Catch::Contains("GEMM shape"));
}

TEST_CASE("cuda::Blas with and without autotune agree", "[cuda][gemm]") {
  const Problem p{512, 384, 256, 256, 256, 384};
  const auto x = random_bf16(static_cast<std::size_t>(p.m) * p.ldx, 4, 1.0f);
  const auto w = random_bf16(static_cast<std::size_t>(p.n) * p.ldw, 5, 0.1f);
  const auto b = random_bf16(static_cast<std::size_t>(p.n), 6, 1.0f);
  auto dx = to_device(x);
  auto dw = to_device(w);
  auto db = to_device(b);
  std::vector<std::vector<double>> outputs;
  for (const bool autotune : {true, false}) {
    cuda::Blas blas(nullptr);
    blas.set_autotune(autotune);
    CHECK(blas.autotune() == autotune);
    cuda::DeviceBuffer<std::uint16_t> y(static_cast<std::int64_t>(p.m) * p.ldy);
    blas.linear(dx.data(), p.ldx, dw.data(), p.ldw, y.data(), CUDA_R_16BF, p.ldy, p.m, p.n, p.k,
                GemmEpilogue::bias_gelu, db.data());
    const auto bits = to_host(y);
    outputs.emplace_back(bits.size());
    for (std::size_t i = 0; i < bits.size(); ++i)
      outputs.back()[i] = io::bf16_to_f32(bits[i]);
  }
  // Different algorithms may round differently; both are bf16 roundings of the same product.
  CHECK(rel_l2(outputs[0], outputs[1], p, 1e-2, "autotuned vs heuristic choice") < 1e-2);
}
