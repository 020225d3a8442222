// SPDX-License-Identifier: Apache-2.0
// Kernel lab: the fc1 layer of a DiT block's MLP with its bias and tanh-GELU,
//   Y = GELU_tanh(X W^T + b)        X [rows, K] bf16, W [N, K] bf16, Y [rows, N] bf16
//
// Versions:
//   1  cuBLASLt GEMM with the bias epilogue, then a separate bias_gelu kernel over Y in place
//      (one block per row, float4 accesses): the widest activation of the MLP makes a second
//      round trip through memory. The CUDA DiT's first MLP; superseded by 2.
//   2  cuBLASLt GEMM with the bias + GELU epilogue (GemmEpilogue::bias_gelu): what the CUDA DiT
//      runs.
// Version 1 rounds X W^T + b to bf16 before the GELU, version 2 does not; both stay within the
// bf16 bound of the reference.
//
// Build: cmake -S . -B build -DTSTITCH_ENABLE_CUDA=ON -DTSTITCH_BUILD_CUDA_LAB=ON
//        cmake --build build --target lab_bias_gelu
// Run:   build/dev/cuda/lab_bias_gelu [version] [--quick]   (default: every version; --quick:
//        the check alone, no timing)
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "common.cuh"
#include "tstitch/cuda/device/gemm.cuh"

namespace {

using bf16 = __nv_bfloat16;
using tstitch::cuda::Blas;
using tstitch::cuda::GemmEpilogue;

// ---- version 1's own kernel -------------------------------------------------------------------

__device__ inline float gelu_tanh(float v) {
  constexpr float k0 = 0.7978845608028654f; // sqrt(2 / pi)
  constexpr float k1 = 0.044715f;
  return 0.5f * v * (1.0f + tanhf(k0 * (v + k1 * v * v * v)));
}

__device__ inline float4 load_bf16x4(const bf16* in) {
  const uint2 bits = *reinterpret_cast<const uint2*>(in);
  __nv_bfloat162 lo, hi;
  memcpy(&lo, &bits.x, 4);
  memcpy(&hi, &bits.y, 4);
  const float2 a = __bfloat1622float2(lo), b = __bfloat1622float2(hi);
  return make_float4(a.x, a.y, b.x, b.y);
}

__device__ inline void store_bf16x4(bf16* out, float4 v) {
  __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y);
  __nv_bfloat162 hi = __floats2bfloat162_rn(v.z, v.w);
  uint2 bits;
  memcpy(&bits.x, &lo, 4);
  memcpy(&bits.y, &hi, 4);
  *reinterpret_cast<uint2*>(out) = bits;
}

// In place on the fc1 output (bias already added by the GEMM), or with a bias when given.
__global__ void bias_gelu_kernel(bf16* x, int ld, const float* bias, int cols) {
  bf16* r = x + static_cast<std::int64_t>(blockIdx.x) * ld;
  for (int c = static_cast<int>(threadIdx.x); c < cols / 4; c += static_cast<int>(blockDim.x)) {
    float4 v = load_bf16x4(r + 4 * c);
    if (bias != nullptr) {
      const float4 bb = reinterpret_cast<const float4*>(bias)[c];
      v.x += bb.x;
      v.y += bb.y;
      v.z += bb.z;
      v.w += bb.w;
    }
    store_bf16x4(r + 4 * c,
                 make_float4(gelu_tanh(v.x), gelu_tanh(v.y), gelu_tanh(v.z), gelu_tanh(v.w)));
  }
}

void bias_gelu(std::uint16_t* x, int ld, const float* bias, int cols, std::int64_t rows,
               cudaStream_t s) {
  const int threads = std::min(256, std::max(32, (cols / 4 + 31) / 32 * 32));
  bias_gelu_kernel<<<static_cast<unsigned>(rows), threads, 0, s>>>(reinterpret_cast<bf16*>(x), ld,
                                                                   bias, cols);
  TSTITCH_CUDA_CHECK(cudaGetLastError());
}

// ---- the problem --------------------------------------------------------------------------------

struct Problem {
  std::int64_t rows;
  int k, n;
  std::vector<std::uint16_t> x, w, bias; // bias as bf16 bits: the epilogue's type for bf16 Y
};

Problem make_problem(std::int64_t rows, int k, int n) {
  return {rows,
          k,
          n,
          lab::to_bf16(lab::randn(static_cast<std::size_t>(rows * k), 21)),
          lab::to_bf16(lab::randn(static_cast<std::size_t>(n) * k, 22, 0.03f)),
          lab::to_bf16(lab::randn(static_cast<std::size_t>(n), 23, 0.5f))};
}

std::vector<double> reference(const Problem& p) {
  const std::vector<float> x = lab::from_bf16(p.x), w = lab::from_bf16(p.w),
                           b = lab::from_bf16(p.bias);
  std::vector<double> y(static_cast<std::size_t>(p.rows * p.n));
  for (std::int64_t r = 0; r < p.rows; ++r)
    for (int j = 0; j < p.n; ++j) {
      double v = b[static_cast<std::size_t>(j)];
      for (int i = 0; i < p.k; ++i)
        v += static_cast<double>(x[static_cast<std::size_t>(r * p.k + i)]) *
             w[static_cast<std::size_t>(static_cast<std::int64_t>(j) * p.k + i)];
      y[static_cast<std::size_t>(r * p.n + j)] =
          0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
    }
  return y;
}

struct Device {
  lab::DeviceBuffer<std::uint16_t> x, w, bias, y;
};

void run(int version, const Problem& p, Device& d, Blas& blas) {
  const GemmEpilogue epilogue = version == 1 ? GemmEpilogue::bias : GemmEpilogue::bias_gelu;
  blas.linear(d.x.data(), p.k, d.w.data(), p.k, d.y.data(), CUDA_R_16BF, p.n, p.rows, p.n, p.k,
              epilogue, d.bias.data());
  if (version == 1)
    bias_gelu(d.y.data(), p.n, nullptr, p.n, p.rows, nullptr);
}

const char* const names[] = {"", "1 GEMM + bias, bias_gelu kernel", "2 GEMM, bias+GELU epilogue"};

} // namespace

int main(int argc, char** argv) {
  const bool quick = lab::take_flag(argc, argv, "--quick");
  lab::require_device(argv[0]);
  const int only = lab::version_argument(argc, argv, 2);
  Blas blas(nullptr);
  bool ok = true;
  // Checked on 64 rows (the fp64 reference is slow), timed at DiT-XL/2's fc1 for batch 8:
  // 8 x 256 tokens, K = 1152, N = 4 x 1152.
  for (const std::int64_t rows : {std::int64_t{64}, std::int64_t{2048}}) {
    if (quick && rows != 64)
      continue;
    const Problem p = make_problem(rows, 1152, 4608);
    const bool check = rows == 64;
    const std::vector<double> want = check ? reference(p) : std::vector<double>{};
    std::printf("rows %lld, K %d, N %d\n", static_cast<long long>(rows), p.k, p.n);
    for (int v = 1; v <= 2; ++v) {
      if (only != 0 && v != only)
        continue;
      Device d{lab::to_device(p.x), lab::to_device(p.w), lab::to_device(p.bias),
               lab::DeviceBuffer<std::uint16_t>(rows * p.n, "lab y")};
      if (check) {
        run(v, p, d, blas);
        ok = lab::validate(names[v], lab::from_bf16(lab::to_host(d.y)), want, 1e-2) && ok;
      } else {
        const double ms = lab::time_ms(100, [&] { run(v, p, d, blas); });
        std::printf("  %-32s %8.2f us\n", names[v], ms * 1e3);
      }
    }
  }
  return ok ? 0 : 1;
}
