// SPDX-License-Identifier: Apache-2.0
// 1. The card's bf16 GEMM peak in this run: cublasGemmEx n^3, bf16 in and out, fp32 accumulate.
// The yardstick for the forward's fraction of peak: a datasheet number would flatter nobody and
// hide clock and power limits of the machine at hand.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "dit/harness.hpp"
#include "dit/measurements.hpp"
#include "tstitch/cuda/device/gemm.cuh"
#include "tstitch/cuda/runtime.hpp"
#include "tstitch/io/half.hpp"

namespace bench {

GemmPeak measure_gemm_peak(int n, int repeats, cudaStream_t stream) {
  GemmPeak peak;
  peak.n = n;
  const std::int64_t count = static_cast<std::int64_t>(n) * n;
  tstitch::cuda::DeviceBuffer<std::uint16_t> a(count), b(count), c(count);
  {
    std::vector<std::uint16_t> host(static_cast<std::size_t>(count));
    XorShift rng(42);
    for (auto& v : host)
      v = tstitch::io::f32_to_bf16_rne(rng.next());
    TSTITCH_CUDA_CHECK(cudaMemcpy(a.data(), host.data(), host.size() * 2, cudaMemcpyHostToDevice));
    for (auto& v : host)
      v = tstitch::io::f32_to_bf16_rne(rng.next());
    TSTITCH_CUDA_CHECK(cudaMemcpy(b.data(), host.data(), host.size() * 2, cudaMemcpyHostToDevice));
    TSTITCH_CUDA_CHECK(cudaDeviceSynchronize()); // pageable copies may return before their DMA
  }
  cublasHandle_t handle = nullptr;
  TSTITCH_CUBLAS_CHECK(cublasCreate(&handle));
  // The handle is destroyed on every path out, also when a GEMM throws.
  const std::unique_ptr<cublasContext, void (*)(cublasHandle_t)> guard(
      handle, [](cublasHandle_t h) { (void)cublasDestroy(h); });
  TSTITCH_CUBLAS_CHECK(cublasSetStream(handle, stream));
  const float alpha = 1.0f, beta = 0.0f;
  auto gemm = [&] {
    TSTITCH_CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha, a.data(),
                                      CUDA_R_16BF, n, b.data(), CUDA_R_16BF, n, &beta, c.data(),
                                      CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  };
  EventTimer timer;
  for (int i = 0; i < 5; ++i) // warm-up: heuristics, clocks up
    gemm();
  TSTITCH_CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<double> times;
  for (int r = 0; r < std::max(repeats, 20); ++r)
    times.push_back(timer.time_ms(stream, gemm));
  peak.ms = median(times);
  peak.tflops = 2.0 * static_cast<double>(n) * n * n / (peak.ms * 1e9);
  return peak;
}

} // namespace bench
