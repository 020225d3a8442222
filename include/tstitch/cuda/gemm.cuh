// SPDX-License-Identifier: Apache-2.0
#pragma once

// Row-major GEMMs of the DiT forward through cuBLAS: bf16 inputs, fp32 accumulation, fp32 or
// bf16 output. Y[M, N] = X[M, K] W[N, K]^T, the shape of every nn.Linear.
#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <cstdint>
#include <utility>

#include "tstitch/cuda/runtime.hpp"

namespace tstitch::cuda {

inline void check_cublas(cublasStatus_t status, const char* what, const char* file, int line) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw runtime_error(detail::concat("tstitch: cuBLAS error in ", what, " (", file, ":", line,
                                       "): ", cublasGetStatusName(status), ": ",
                                       cublasGetStatusString(status)));
}

#define TSTITCH_CUBLAS_CHECK(call) ::tstitch::cuda::check_cublas((call), #call, __FILE__, __LINE__)

/// A cuBLAS handle bound to a stream, with a workspace of its own: cuBLAS must not allocate while
/// a CUDA graph is being captured, so the workspace is given up front.
class Blas {
public:
  explicit Blas(cudaStream_t stream, std::int64_t workspace_bytes = 32ll << 20)
      : workspace_(workspace_bytes) {
    TSTITCH_CUBLAS_CHECK(cublasCreate(&handle_));
    TSTITCH_CUBLAS_CHECK(cublasSetStream(handle_, stream));
    TSTITCH_CUBLAS_CHECK(cublasSetWorkspace(handle_, workspace_.data(),
                                            static_cast<std::size_t>(workspace_.bytes())));
    TSTITCH_CUBLAS_CHECK(cublasSetMathMode(handle_, CUBLAS_DEFAULT_MATH));
  }
  Blas(Blas&& other) noexcept
      : handle_(std::exchange(other.handle_, nullptr)), workspace_(std::move(other.workspace_)) {}
  Blas& operator=(Blas&&) = delete;
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;
  ~Blas() {
    if (handle_ != nullptr)
      (void)cublasDestroy(handle_);
  }

  [[nodiscard]] std::int64_t workspace_bytes() const { return workspace_.bytes(); }

  /// Y[M, N] (row stride ldy, fp32 or bf16) = X[M, K] (bf16 bits, row stride ldx) W[N, K]^T
  /// (bf16 bits, row stride ldw). In cuBLAS's column-major terms: Y^T = op_T(W^T) X^T.
  void linear(const std::uint16_t* x, int ldx, const std::uint16_t* w, int ldw, void* y,
              cudaDataType_t y_type, int ldy, std::int64_t m, int n, int k) const {
    const float alpha = 1.0f, beta = 0.0f;
    TSTITCH_CUBLAS_CHECK(cublasGemmEx(handle_, CUBLAS_OP_T, CUBLAS_OP_N, n, static_cast<int>(m),
                                      k, &alpha, w, CUDA_R_16BF, ldw, x, CUDA_R_16BF, ldx, &beta,
                                      y, y_type, ldy, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }

private:
  cublasHandle_t handle_ = nullptr;
  DeviceBuffer<std::uint8_t> workspace_;
};

} // namespace tstitch::cuda
