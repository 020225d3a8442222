// SPDX-License-Identifier: Apache-2.0
#pragma once

// Row-major GEMMs of the DiT forward through cuBLAS and cuBLASLt: bf16 inputs, fp32 accumulation,
// fp32 or bf16 output. Y[M, N] = X[M, K] W[N, K]^T (+ bias, GELU), the shape of every nn.Linear.
// cuBLASLt carries the epilogues (bias; bias then tanh-GELU) that keep the MLP's widest activation
// from making a second round trip through memory.
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <cstdint>
#include <map>
#include <tuple>
#include <utility>

#include "tstitch/cuda/runtime.hpp"

namespace tstitch::cuda {

inline void check_cublas(cublasStatus_t status, const char* what, const char* file, int line) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw runtime_error(tstitch::detail::concat("tstitch: cuBLAS error in ", what, " (", file, ":",
                                                line, "): ", cublasGetStatusName(status), ": ",
                                                cublasGetStatusString(status)));
}

#define TSTITCH_CUBLAS_CHECK(call) ::tstitch::cuda::check_cublas((call), #call, __FILE__, __LINE__)

/// What a cuBLASLt GEMM applies to its fp32 accumulator before rounding to the output type.
enum class GemmEpilogue {
  none,      ///< Y = X W^T
  bias,      ///< Y = X W^T + b (b of the output's type, one per output column)
  bias_gelu, ///< Y = GELU_tanh(X W^T + b)
};

namespace detail {

/// Largest power of two (at most 256) dividing the address: cuBLASLt's heuristics assume
/// 256-byte-aligned operands unless told otherwise.
inline std::uint32_t alignment_of(const void* p) {
  const auto address = reinterpret_cast<std::uintptr_t>(p);
  std::uint32_t a = 256;
  while (a > 1 && address % a != 0)
    a >>= 1;
  return a;
}

/// One cuBLASLt problem: its descriptors and the algorithm the heuristics chose, built on first
/// use of a shape and reused (host-side setup only; nothing allocates on the device).
struct LtPlan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t w = nullptr, x = nullptr, y = nullptr;
  cublasLtMatmulAlgo_t algo{};

  LtPlan() = default;
  LtPlan(const LtPlan&) = delete;
  LtPlan& operator=(const LtPlan&) = delete;
  ~LtPlan() {
    if (y != nullptr)
      (void)cublasLtMatrixLayoutDestroy(y);
    if (x != nullptr)
      (void)cublasLtMatrixLayoutDestroy(x);
    if (w != nullptr)
      (void)cublasLtMatrixLayoutDestroy(w);
    if (op != nullptr)
      (void)cublasLtMatmulDescDestroy(op);
  }
};

/// A CUDA event that is destroyed with its scope (timing the autotune candidates).
struct Event {
  cudaEvent_t event = nullptr;
  Event() { TSTITCH_CUDA_CHECK(cudaEventCreate(&event)); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  ~Event() { (void)cudaEventDestroy(event); }
};

} // namespace detail

/// cuBLAS and cuBLASLt handles bound to a stream, with one workspace of their own: cuBLAS must
/// not allocate while a CUDA graph is being captured, so the workspace is given up front (both
/// libraries run on the same stream, so they can share it).
class Blas {
public:
  explicit Blas(cudaStream_t stream, std::int64_t workspace_bytes = 32ll << 20)
      : stream_(stream), workspace_(workspace_bytes) {
    try {
      TSTITCH_CUBLAS_CHECK(cublasCreate(&handle_));
      TSTITCH_CUBLAS_CHECK(cublasSetStream(handle_, stream));
      TSTITCH_CUBLAS_CHECK(cublasSetWorkspace(handle_, workspace_.data(),
                                              static_cast<std::size_t>(workspace_.bytes())));
      TSTITCH_CUBLAS_CHECK(cublasSetMathMode(handle_, CUBLAS_DEFAULT_MATH));
      TSTITCH_CUBLAS_CHECK(cublasLtCreate(&lt_));
    } catch (...) { // no destructor runs for a constructor that throws
      release();
      throw;
    }
  }
  Blas(Blas&& other) noexcept
      : handle_(std::exchange(other.handle_, nullptr)), lt_(std::exchange(other.lt_, nullptr)),
        stream_(other.stream_), workspace_(std::move(other.workspace_)),
        plans_(std::move(other.plans_)), autotune_(other.autotune_) {}
  Blas& operator=(Blas&&) = delete;
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;
  ~Blas() { release(); }

  [[nodiscard]] std::int64_t workspace_bytes() const { return workspace_.bytes(); }

  /// Y[M, N] (row stride ldy, fp32 or bf16) = X[M, K] (bf16 bits, row stride ldx) W[N, K]^T
  /// (bf16 bits, row stride ldw). In cuBLAS's column-major terms: Y^T = op_T(W^T) X^T.
  void linear(const std::uint16_t* x, int ldx, const std::uint16_t* w, int ldw, void* y,
              cudaDataType_t y_type, int ldy, std::int64_t m, int n, int k) const {
    const float alpha = 1.0f, beta = 0.0f;
    TSTITCH_CUBLAS_CHECK(cublasGemmEx(handle_, CUBLAS_OP_T, CUBLAS_OP_N, n, static_cast<int>(m), k,
                                      &alpha, w, CUDA_R_16BF, ldw, x, CUDA_R_16BF, ldx, &beta, y,
                                      y_type, ldy, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }

  /// The same product through cuBLASLt with an epilogue. `bias` (N values of y_type: bf16 bits
  /// for a bf16 output, floats for fp32) is read when the epilogue has one. The first call of a
  /// shape picks the algorithm: cuBLASLt's heuristics propose up to 8, and unless the stream is
  /// being captured into a graph (or autotune is off) each is run on these operands and timed,
  /// and the fastest is kept (this first call waits for the GPU); under capture the heuristics'
  /// first choice is taken. Later calls reuse the choice.
  void linear(const std::uint16_t* x, int ldx, const std::uint16_t* w, int ldw, void* y,
              cudaDataType_t y_type, int ldy, std::int64_t m, int n, int k, GemmEpilogue epilogue,
              const void* bias) {
    require(y_type == CUDA_R_16BF || y_type == CUDA_R_32F, "GEMM output type",
            static_cast<int>(y_type), "must be CUDA_R_16BF or CUDA_R_32F");
    require(m >= 1 && n >= 1 && k >= 1, "GEMM shape m", m,
            tstitch::detail::concat("n = ", n, ", k = ", k, ": must be positive"));
    if (epilogue != GemmEpilogue::none) {
      require(bias != nullptr, "GEMM bias", "nullptr", "an epilogue with a bias needs one");
      // cuBLASLt's heuristics take no alignment for the bias and assume a vector-friendly one.
      require(detail::alignment_of(bias) >= 16, "GEMM bias address",
              reinterpret_cast<std::uintptr_t>(bias), "must be 16-byte aligned");
    }
    const detail::LtPlan& plan =
        plan_for({m, n, k, ldx, ldw, ldy, static_cast<int>(y_type), static_cast<int>(epilogue),
                  detail::alignment_of(x), detail::alignment_of(w), detail::alignment_of(y)},
                 {x, w, y, bias});
    if (epilogue != GemmEpilogue::none)
      TSTITCH_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(
          plan.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    TSTITCH_CUBLAS_CHECK(run(plan, plan.algo, {x, w, y, bias}));
  }

  /// Whether the first call of a shape times the heuristics' candidates (default on).
  void set_autotune(bool enabled) { autotune_ = enabled; }
  [[nodiscard]] bool autotune() const { return autotune_; }

private:
  void release() noexcept {
    plans_.clear(); // descriptors before the handle
    if (lt_ != nullptr)
      (void)cublasLtDestroy(std::exchange(lt_, nullptr));
    if (handle_ != nullptr)
      (void)cublasDestroy(std::exchange(handle_, nullptr));
  }

  struct Operands {
    const void* x;
    const void* w;
    void* y;
    const void* bias;
  };

  cublasStatus_t run(const detail::LtPlan& plan, const cublasLtMatmulAlgo_t& algo,
                     const Operands& o) const {
    const float alpha = 1.0f, beta = 0.0f;
    return cublasLtMatmul(lt_, plan.op, &alpha, o.w, plan.w, o.x, plan.x, &beta, o.y, plan.y, o.y,
                          plan.y, &algo, workspace_.data(),
                          static_cast<std::size_t>(workspace_.bytes()), stream_);
  }

  /// Index of the fastest candidate on these operands: each runs once to warm up, then three
  /// times back to back (as the forward issues GEMMs) between two events. Candidates cuBLASLt
  /// refuses for these operands are skipped; if all are, the first is returned (and its call
  /// then reports the error).
  int fastest(const detail::LtPlan& plan, const cublasLtMatmulHeuristicResult_t* candidates,
              int count, const Operands& o) const {
    if (o.bias != nullptr)
      TSTITCH_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(
          plan.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &o.bias, sizeof o.bias));
    const detail::Event start, stop;
    int best = -1;
    float best_ms = 0.0f;
    for (int i = 0; i < count; ++i) {
      if (run(plan, candidates[i].algo, o) != CUBLAS_STATUS_SUCCESS)
        continue;
      TSTITCH_CUDA_CHECK(cudaEventRecord(start.event, stream_));
      bool ran = true;
      for (int r = 0; r < 3 && ran; ++r)
        ran = run(plan, candidates[i].algo, o) == CUBLAS_STATUS_SUCCESS;
      TSTITCH_CUDA_CHECK(cudaEventRecord(stop.event, stream_));
      TSTITCH_CUDA_CHECK(cudaEventSynchronize(stop.event));
      float ms = 0.0f;
      TSTITCH_CUDA_CHECK(cudaEventElapsedTime(&ms, start.event, stop.event));
      if (ran && (best < 0 || ms < best_ms)) {
        best = i;
        best_ms = ms;
      }
    }
    return best < 0 ? 0 : best;
  }

  // m, n, k, ldx, ldw, ldy, output type, epilogue, alignments of x, w, y.
  using PlanKey = std::tuple<std::int64_t, int, int, int, int, int, int, int, std::uint32_t,
                             std::uint32_t, std::uint32_t>;

  const detail::LtPlan& plan_for(const PlanKey& key, const Operands& operands) {
    if (auto it = plans_.find(key); it != plans_.end())
      return it->second;
    const auto [m, n, k, ldx, ldw, ldy, y_type_int, epilogue_int, align_x, align_w, align_y] = key;
    const auto y_type = static_cast<cudaDataType_t>(y_type_int);
    detail::LtPlan& plan = plans_[key];
    try {
      TSTITCH_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
      const cublasOperation_t transpose = CUBLAS_OP_T, keep = CUBLAS_OP_N;
      TSTITCH_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSA,
                                                          &transpose, sizeof transpose));
      TSTITCH_CUBLAS_CHECK(
          cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSB, &keep, sizeof keep));
      cublasLtEpilogue_t lt_epilogue = CUBLASLT_EPILOGUE_DEFAULT;
      if (epilogue_int == static_cast<int>(GemmEpilogue::bias))
        lt_epilogue = CUBLASLT_EPILOGUE_BIAS;
      else if (epilogue_int == static_cast<int>(GemmEpilogue::bias_gelu))
        lt_epilogue = CUBLASLT_EPILOGUE_GELU_BIAS;
      TSTITCH_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_EPILOGUE,
                                                          &lt_epilogue, sizeof lt_epilogue));
      // Column-major views: W^T is [k, n] (ld ldw), X^T is [k, m] (ld ldx), Y^T is [n, m].
      TSTITCH_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(
          &plan.w, CUDA_R_16BF, static_cast<std::uint64_t>(k), static_cast<std::uint64_t>(n), ldw));
      TSTITCH_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(
          &plan.x, CUDA_R_16BF, static_cast<std::uint64_t>(k), static_cast<std::uint64_t>(m), ldx));
      TSTITCH_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(
          &plan.y, y_type, static_cast<std::uint64_t>(n), static_cast<std::uint64_t>(m), ldy));

      cublasLtMatmulPreference_t preference = nullptr;
      TSTITCH_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&preference));
      const std::uint64_t workspace = static_cast<std::uint64_t>(workspace_.bytes());
      cublasStatus_t status = cublasLtMatmulPreferenceSetAttribute(
          preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof workspace);
      const std::pair<cublasLtMatmulPreferenceAttributes_t, std::uint32_t> alignments[] = {
          {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, align_w},
          {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, align_x},
          {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, align_y},
          {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, align_y}};
      for (const auto& [attribute, value] : alignments)
        if (status == CUBLAS_STATUS_SUCCESS)
          status =
              cublasLtMatmulPreferenceSetAttribute(preference, attribute, &value, sizeof value);
      constexpr int max_candidates = 8;
      cublasLtMatmulHeuristicResult_t results[max_candidates] = {};
      int found = 0;
      if (status == CUBLAS_STATUS_SUCCESS)
        status =
            cublasLtMatmulAlgoGetHeuristic(lt_, plan.op, plan.w, plan.x, plan.y, plan.y, preference,
                                           autotune_ ? max_candidates : 1, results, &found);
      (void)cublasLtMatmulPreferenceDestroy(preference);
      TSTITCH_CUBLAS_CHECK(status);
      if (found < 1)
        throw runtime_error(tstitch::detail::concat(
            "tstitch: cuBLASLt has no algorithm for the GEMM m = ", m, ", n = ", n, ", k = ", k,
            ", ldx = ", ldx, ", ldw = ", ldw, ", ldy = ", ldy, ", epilogue ", epilogue_int));
      cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
      TSTITCH_CUDA_CHECK(cudaStreamIsCapturing(stream_, &capture));
      const bool time_them = autotune_ && found > 1 && capture == cudaStreamCaptureStatusNone;
      plan.algo = results[time_them ? fastest(plan, results, found, operands) : 0].algo;
    } catch (...) {
      plans_.erase(key);
      throw;
    }
    return plan;
  }

  cublasHandle_t handle_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  cudaStream_t stream_ = nullptr;
  DeviceBuffer<std::uint8_t> workspace_;
  std::map<PlanKey, detail::LtPlan> plans_;
  bool autotune_ = true;
};

} // namespace tstitch::cuda
