// SPDX-License-Identifier: Apache-2.0
// Kernel lab: DiT-XL/2's four block GEMMs in FP8 (e4m3, per-tensor scales) against the bf16
// GEMMs the CUDA DiT runs. Off by default: nothing in the library changes.
//   y = bf16( act( X W^T + b ) )   X [rows, K] bf16, W [N, K] bf16, y [rows, N] bf16
//   qkv  K 1152 -> N 3456, bias          proj K 1152 -> N 1152, no epilogue (bias in the seam)
//   fc1  K 1152 -> N 4608, bias + GELU   fc2  K 4608 -> N 1152, no epilogue (bias in the seam)
// rows = images x 256 tokens, at 64 images (the goal, first) and 8. Host work (inputs, the fp64
// reference, W's quantisation) took 16 s at 64 images on a 2-core build machine: well inside the
// lab stage's 90 s per program.
//
// Versions:
//   1   what the CUDA DiT runs: the library's cuBLASLt bf16 GEMM (Blas::linear) with the epilogue
//       the model gives each layer (bias, none, bias+GELU, none), fp32 accumulation.
//   2   cuBLASLt FP8: W quantised once on the host (scale = amax / 448), X quantised per call on
//       the device (amax_kernel: a grid-wide max of |x|; quantise_kernel: x / scale rounded to
//       e4m3, satfinite, and the scale written for cuBLASLt), then cublasLtMatmul e4m3 x e4m3 with
//       CUBLASLT_MATMUL_DESC_A/B_SCALE_POINTER (dequantisation scales), fp32 compute, bf16 out,
//       the same epilogue with a bf16 bias. Its time includes the quantisation of X (a memset and
//       two kernels); "2g" times the cuBLASLt call alone on operands already quantised.
//   3   version 2 with CUBLASLT_MATMUL_DESC_FAST_ACCUM (no periodic promotion of the tensor-core
//       accumulators): faster, less accurate; checked against the same bound.
// cuBLASLt's FP8 rules (sm_89+): A transposed and B not ("TN": both K-major), which the row-major
// Y = X W^T already is (A = W [N, K], B = X [rows, K], both K-contiguous); K, N and the leading
// dimensions multiples of 16; 16-byte aligned operands (cudaMalloc's 256); bias of the output type
// (bf16). A missing algorithm (say, no GELU epilogue for FP8 in this cuBLASLt) is a FAIL with the
// reason, not a crash; a card older than sm_89 skips versions 2 and 3 with a message.
//
// Expected before any measurement (H100 SXM, ~650 TFLOP/s bf16, ~1000+ fp8 dense via cuBLASLt,
// ~3 TB/s): at 64 images the four GEMMs are 522 GFLOP, ~0.8 ms in bf16 and ~0.5 ms in fp8; the
// quantisation of X moves 2.5 bytes per element read twice (amax, then scale+cast) and 1 written:
// 94 MB for qkv/proj/fc1 each and 377 MB for fc2 (X is 16384 x 4608), ~0.2 ms in all. So "2g"
// alone may approach 1.5x, while version 2 with its quantisation is expected near 1.1x: the goal
// needs X produced in fp8 by the kernel before it (an amax and fp8 output in that epilogue).
//
// Error bound for versions 2 and 3 (relative L2 against the fp64 reference, FP8 bound 6e-2):
// e4m3 keeps 3 mantissa bits, so round-to-nearest leaves a value in [2^e, 2^(e+1)) an absolute
// error uniform within +-2^(e-4), rms 2^(e-3)/sqrt(12); over a binade with log-uniform mantissa m
// the relative rms is 2^-3/sqrt(12) * sqrt(E[1/m^2]) = 0.0361 * 0.736 = eps ~ 2.7e-2. Per-tensor
// scaling puts amax at 448; only values below amax * 2^-6/448 (~3.5e-5 amax) are subnormal, a
// negligible share of the energy. Each product x w carries dx + dw, rms sqrt(2) eps, independent
// over the K terms, and var(y) = sum x^2 w^2 for independent zero-mean w, so the error of X W^T
// relative to its rms is sqrt(2) eps ~ 3.8e-2; an unquantised bias lowers it (qkv, fc1); bf16
// output rounding adds ~1.6e-3 in quadrature. --emulate measures it on the CPU (the same
// quantisation, an fp64 GEMM of the dequantised values): eps 2.65e-2 for X and W, y 3.5e-2 (qkv),
// 3.8e-2 (proj), 3.7e-2 (fc1), 3.7e-2 (fc2) at 256 rows; with the scale left out of the
// dequantisation it reports 4e4 to 8e4. It checks the arithmetic, not cuBLASLt's reading of the
// scale pointers or its fp32 accumulation: only the device run does. 6e-2 is 1.6x the
// prediction; a scale applied wrongly (or not at all) costs O(1) or more. The fp8 - bf16 difference
// ("2vs1", "3vs1", the whole output) is checked against the same bound. Version 1: the lab's bf16
// bound 1e-2.
//
// Inputs (fixed seeds): X normal (fc2: GELU of a normal, as fc1's output is), every 64th column
// times 8 (the outlier channels per-tensor scaling must live with); W normal / sqrt(K); bias
// normal * 0.5; all rounded to bf16, the values both versions read. Checked: every row at 1 image,
// 16 blocks of 16 rows spread over the batch otherwise, all N columns; y pre-filled with NaN and
// no value may remain unwritten.
//
// Printed: each check, per shape the median of 21 samples (10 calls back to back, CUDA events)
// per version, and lines csv,gemm_fp8,<shape>,<version>,<us>,<max_err>,<ok> with max_err the
// relative L2 error against the reference (versions 1, 2, 2g, 3), or against version 1's output
// ("2vs1", "3vs1", us empty); shapes XL2_<layer>_i<images>.
//
// Build: cmake -S . -B build -DTSTITCH_ENABLE_CUDA=ON -DTSTITCH_BUILD_CUDA_LAB=ON
//        cmake --build build --target lab_gemm_fp8
// Run:   build/dev/cuda/lab_gemm_fp8 [version 1..3] [--quick] | --emulate
//        --quick: the check alone (no timing, heuristics' first algorithm) at 1 image, the four
//        layers: the run compute-sanitizer takes. --emulate: no device; versions 2's quantisation
//        and an fp64 GEMM of the dequantised operands at 256 rows, against the reference.
// Exit: 0 every check passed, 1 a mismatch or an FP8 GEMM cuBLASLt refuses, 2 bad arguments, 77
// no CUDA device (or only versions 2/3 asked for on a card older than sm_89).
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "common.cuh"
#include "gemm_fp8_quant.cuh"
#include "tstitch/cuda/device/gemm.cuh"

namespace {

using tstitch::cuda::Blas;
using tstitch::cuda::GemmEpilogue;

constexpr double kBf16Bound = 1e-2;         // see the header
constexpr double kFp8Bound = 6e-2;          // see the header
constexpr std::uint16_t kSentinel = 0x7fc1; // y's fill: a bf16 NaN

// ---- the problem --------------------------------------------------------------------------------

struct Shape {
  const char* layer;
  int k, n, images;
  GemmEpilogue epilogue;
  [[nodiscard]] std::int64_t rows() const { return std::int64_t{images} * 256; }
  [[nodiscard]] bool bias() const { return epilogue != GemmEpilogue::none; }
  [[nodiscard]] bool gelu() const { return epilogue == GemmEpilogue::bias_gelu; }
  [[nodiscard]] std::string name() const {
    return std::string("XL2_") + layer + "_i" + std::to_string(images);
  }
};

std::vector<Shape> xl2_gemms(int images) {
  return {{"qkv", 1152, 3456, images, GemmEpilogue::bias},
          {"proj", 1152, 1152, images, GemmEpilogue::none},
          {"fc1", 1152, 4608, images, GemmEpilogue::bias_gelu},
          {"fc2", 4608, 1152, images, GemmEpilogue::none}};
}

double gelu_tanh(double v) {
  return 0.5 * v * (1.0 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
}

struct Problem {
  Shape shape;
  std::int64_t rows;
  std::vector<std::uint16_t> x, w, bias; // bf16 bits; bias empty without an epilogue
};

Problem make_problem(const Shape& s, std::int64_t rows) {
  std::vector<float> x = lab::randn(static_cast<std::size_t>(rows) * s.k, 71);
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (std::strcmp(s.layer, "fc2") == 0)
      x[i] = static_cast<float>(gelu_tanh(x[i]));
    if (i % static_cast<std::size_t>(s.k) % 64 == 0)
      x[i] *= 8.0f;
  }
  const float w_scale = 1.0f / std::sqrt(static_cast<float>(s.k));
  Problem p{s,
            rows,
            lab::to_bf16(x),
            lab::to_bf16(lab::randn(static_cast<std::size_t>(s.n) * s.k, 72, w_scale)),
            {}};
  if (s.bias())
    p.bias = lab::to_bf16(lab::randn(static_cast<std::size_t>(s.n), 73, 0.5f));
  return p;
}

/// fp64 act(x w^T + b) for `rows` of x ([rows of the problem][K]) and w ([N][K]): [rows.size()][N].
std::vector<double> gemm_rows(const Shape& s, const std::vector<double>& x,
                              const std::vector<double>& w, const std::vector<double>& bias,
                              const std::vector<std::int64_t>& rows) {
  const auto k = static_cast<std::size_t>(s.k);
  std::vector<double> out;
  out.reserve(rows.size() * static_cast<std::size_t>(s.n));
  for (const std::int64_t r : rows) {
    const double* a = &x[static_cast<std::size_t>(r) * k];
    for (int j = 0; j < s.n; ++j) {
      const double* b = &w[static_cast<std::size_t>(j) * k];
      double s0 = 0, s1 = 0, s2 = 0, s3 = 0; // 4 chains: the CPU pipelines them
      for (std::size_t i = 0; i < k; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
      }
      double y = (s0 + s1) + (s2 + s3) + (bias.empty() ? 0.0 : bias[static_cast<std::size_t>(j)]);
      out.push_back(s.gelu() ? gelu_tanh(y) : y);
    }
  }
  return out;
}

std::vector<double> to_double(const std::vector<std::uint16_t>& bf16) {
  std::vector<double> out(bf16.size());
  std::transform(bf16.begin(), bf16.end(), out.begin(),
                 [](std::uint16_t b) { return static_cast<double>(tstitch::io::bf16_to_f32(b)); });
  return out;
}

/// The fp64 reference for `rows` (only those rows of X are converted: X is 600 MB in double for
/// fc2 at 64 images).
std::vector<double> reference(const Problem& p, const std::vector<std::int64_t>& rows) {
  const auto k = static_cast<std::size_t>(p.shape.k);
  std::vector<double> x;
  x.reserve(rows.size() * k);
  std::vector<std::int64_t> compact;
  for (const std::int64_t r : rows) {
    compact.push_back(static_cast<std::int64_t>(compact.size()));
    for (std::size_t i = 0; i < k; ++i)
      x.push_back(tstitch::io::bf16_to_f32(p.x[static_cast<std::size_t>(r) * k + i]));
  }
  return gemm_rows(p.shape, x, to_double(p.w), to_double(p.bias), compact);
}

// ---- version 2's quantisation of X on the device ------------------------------------------------

__device__ inline void load_bf16x8(const __nv_bfloat16* in, std::int64_t i, float (&v)[8]) {
  const uint4 bits = reinterpret_cast<const uint4*>(in)[i];
  __nv_bfloat162 pair[4];
  memcpy(pair, &bits, sizeof bits);
  for (int j = 0; j < 4; ++j) {
    const float2 f = __bfloat1622float2(pair[j]);
    v[2 * j] = f.x;
    v[2 * j + 1] = f.y;
  }
}

/// max |x| over n8 groups of 8 values into *amax_bits (a float's bits: for non-negative floats
/// the integer order is the float order, so atomicMax on the bits is a float max). *amax_bits
/// must be 0 before the launch.
__global__ void amax_kernel(const __nv_bfloat16* x, std::int64_t n8, unsigned* amax_bits) {
  float m = 0.0f;
  for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < n8;
       i += std::int64_t{gridDim.x} * blockDim.x) {
    float v[8];
    load_bf16x8(x, i, v);
    for (const float f : v)
      m = fmaxf(m, fabsf(f));
  }
  for (int offset = 16; offset > 0; offset /= 2)
    m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, offset));
  __shared__ float warp_max[32];
  if (threadIdx.x % 32 == 0)
    warp_max[threadIdx.x / 32] = m;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (unsigned w = 1; w < blockDim.x / 32; ++w)
      m = fmaxf(m, warp_max[w]);
    atomicMax(amax_bits, __float_as_uint(m));
  }
}

/// q = e4m3(x / scale) with scale = amax / 448 from amax_kernel's result (the same arithmetic as
/// fp8::quantise on the host); block 0 writes the scale cuBLASLt dequantises with.
__global__ void quantise_kernel(const __nv_bfloat16* x, std::int64_t n8, const unsigned* amax_bits,
                                std::uint8_t* q, float* scale) {
  const lab::fp8::Scale s = lab::fp8::scale_for(__uint_as_float(*amax_bits));
  if (blockIdx.x == 0 && threadIdx.x == 0)
    *scale = s.scale;
  for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < n8;
       i += std::int64_t{gridDim.x} * blockDim.x) {
    float v[8];
    load_bf16x8(x, i, v);
    std::uint8_t bytes[8];
    for (int j = 0; j < 8; ++j)
      bytes[j] = lab::fp8::to_e4m3(v[j], s.inverse);
    uint2 packed;
    memcpy(&packed, bytes, sizeof packed);
    reinterpret_cast<uint2*>(q)[i] = packed;
  }
}

/// The buffers of X's quantisation: the amax (float bits), the scale, the e4m3 values.
struct Fp8Activation {
  lab::DeviceBuffer<unsigned> amax;
  lab::DeviceBuffer<float> scale;
  lab::DeviceBuffer<std::uint8_t> q;
};

void quantise_on_device(const std::uint16_t* x, std::int64_t count, Fp8Activation& out, int sms) {
  const std::int64_t n8 = count / 8; // K is a multiple of 16
  const int threads = 256;
  const auto blocks =
      static_cast<unsigned>(std::min<std::int64_t>((n8 + threads - 1) / threads, 8ll * sms));
  TSTITCH_CUDA_CHECK(cudaMemsetAsync(out.amax.data(), 0, sizeof(unsigned)));
  const auto* xb = reinterpret_cast<const __nv_bfloat16*>(x);
  amax_kernel<<<blocks, threads>>>(xb, n8, out.amax.data());
  TSTITCH_CUDA_CHECK(cudaGetLastError());
  quantise_kernel<<<blocks, threads>>>(xb, n8, out.amax.data(), out.q.data(), out.scale.data());
  TSTITCH_CUDA_CHECK(cudaGetLastError());
}

// ---- version 2's cuBLASLt FP8 GEMM --------------------------------------------------------------

/// One cuBLASLt FP8 problem: Y^T [N, rows] = (W^T)^T X^T in cuBLASLt's column-major terms, with W
/// as A (transposed, K-major) and X as B (not transposed, K-major): the TN layout FP8 needs.
/// `why_not` is set instead of throwing when cuBLASLt refuses the problem.
class Fp8Gemm {
public:
  Fp8Gemm(cublasLtHandle_t lt, const Shape& s, std::int64_t rows, const float* w_scale,
          const float* x_scale, bool fast_accum, void* workspace, std::size_t workspace_bytes)
      : lt_(lt), workspace_(workspace), workspace_bytes_(workspace_bytes) {
    const cublasStatus_t status = create(s, rows, w_scale, x_scale, fast_accum);
    if (status != CUBLAS_STATUS_SUCCESS)
      why_not_ =
          std::string("cuBLASLt refused the FP8 descriptors: ") + cublasGetStatusName(status);
  }
  Fp8Gemm(const Fp8Gemm&) = delete;
  Fp8Gemm& operator=(const Fp8Gemm&) = delete;
  ~Fp8Gemm() {
    for (cublasLtMatrixLayout_t l : {y_, x_, w_})
      if (l != nullptr)
        (void)cublasLtMatrixLayoutDestroy(l);
    if (op_ != nullptr)
      (void)cublasLtMatmulDescDestroy(op_);
  }

  /// Picks the algorithm: the heuristics' first, or (autotune) the fastest of up to 8 on these
  /// operands. Returns false with why_not() set where cuBLASLt has none.
  bool choose(const std::uint8_t* x, const std::uint8_t* w, std::uint16_t* y,
              const std::uint16_t* bias, bool autotune) {
    if (!why_not_.empty())
      return false;
    cublasLtMatmulPreference_t preference = nullptr;
    cublasStatus_t status = cublasLtMatmulPreferenceCreate(&preference);
    const std::uint64_t bytes = workspace_bytes_;
    if (status == CUBLAS_STATUS_SUCCESS)
      status = cublasLtMatmulPreferenceSetAttribute(
          preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &bytes, sizeof bytes);
    cublasLtMatmulHeuristicResult_t results[8] = {};
    int found = 0;
    if (status == CUBLAS_STATUS_SUCCESS)
      status = cublasLtMatmulAlgoGetHeuristic(lt_, op_, w_, x_, y_, y_, preference,
                                              autotune ? 8 : 1, results, &found);
    if (preference != nullptr)
      (void)cublasLtMatmulPreferenceDestroy(preference);
    if (status != CUBLAS_STATUS_SUCCESS || found < 1) {
      why_not_ = std::string("cuBLASLt has no FP8 algorithm for this GEMM and epilogue (") +
                 (status != CUBLAS_STATUS_SUCCESS ? cublasGetStatusName(status) : "none found") +
                 ")";
      return false;
    }
    int best = -1;
    float best_ms = 0.0f;
    cudaEvent_t start = nullptr, stop = nullptr;
    TSTITCH_CUDA_CHECK(cudaEventCreate(&start));
    TSTITCH_CUDA_CHECK(cudaEventCreate(&stop));
    for (int i = 0; i < found; ++i) {
      if (launch(results[i].algo, x, w, y, bias) != CUBLAS_STATUS_SUCCESS)
        continue;
      if (!autotune || found == 1) {
        best = i;
        break;
      }
      TSTITCH_CUDA_CHECK(cudaEventRecord(start));
      bool ran = true;
      for (int r = 0; r < 3 && ran; ++r)
        ran = launch(results[i].algo, x, w, y, bias) == CUBLAS_STATUS_SUCCESS;
      TSTITCH_CUDA_CHECK(cudaEventRecord(stop));
      TSTITCH_CUDA_CHECK(cudaEventSynchronize(stop));
      float ms = 0.0f;
      TSTITCH_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
      if (ran && (best < 0 || ms < best_ms)) {
        best = i;
        best_ms = ms;
      }
    }
    TSTITCH_CUDA_CHECK(cudaEventDestroy(start));
    TSTITCH_CUDA_CHECK(cudaEventDestroy(stop));
    if (best < 0) {
      why_not_ = "cuBLASLt's FP8 algorithms all failed to launch on these operands";
      return false;
    }
    algo_ = results[best].algo;
    return true;
  }

  /// Y = act(X W^T * x_scale * w_scale + b) with the chosen algorithm.
  void run(const std::uint8_t* x, const std::uint8_t* w, std::uint16_t* y,
           const std::uint16_t* bias) const {
    TSTITCH_CUBLAS_CHECK(launch(algo_, x, w, y, bias));
  }

  [[nodiscard]] const std::string& why_not() const { return why_not_; }

private:
  cublasStatus_t create(const Shape& s, std::int64_t rows, const float* w_scale,
                        const float* x_scale, bool fast_accum) {
    cublasStatus_t st = cublasLtMatmulDescCreate(&op_, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    const cublasOperation_t transpose = CUBLAS_OP_T, keep = CUBLAS_OP_N;
    cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
    if (s.epilogue == GemmEpilogue::bias)
      epilogue = CUBLASLT_EPILOGUE_BIAS;
    else if (s.epilogue == GemmEpilogue::bias_gelu)
      epilogue = CUBLASLT_EPILOGUE_GELU_BIAS;
    const std::int32_t bias_type = CUDA_R_16BF;
    const std::int8_t fast = fast_accum ? 1 : 0;
    auto set = [&](cublasLtMatmulDescAttributes_t attribute, const void* value, std::size_t size) {
      if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulDescSetAttribute(op_, attribute, value, size);
    };
    set(CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof transpose);
    set(CUBLASLT_MATMUL_DESC_TRANSB, &keep, sizeof keep);
    set(CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue);
    if (s.bias())
      set(CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof bias_type);
    set(CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &w_scale, sizeof w_scale);
    set(CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &x_scale, sizeof x_scale);
    set(CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fast, sizeof fast);
    const auto k = static_cast<std::uint64_t>(s.k), n = static_cast<std::uint64_t>(s.n),
               m = static_cast<std::uint64_t>(rows);
    if (st == CUBLAS_STATUS_SUCCESS)
      st = cublasLtMatrixLayoutCreate(&w_, CUDA_R_8F_E4M3, k, n, s.k);
    if (st == CUBLAS_STATUS_SUCCESS)
      st = cublasLtMatrixLayoutCreate(&x_, CUDA_R_8F_E4M3, k, m, s.k);
    if (st == CUBLAS_STATUS_SUCCESS)
      st = cublasLtMatrixLayoutCreate(&y_, CUDA_R_16BF, n, m, s.n);
    return st;
  }

  cublasStatus_t launch(const cublasLtMatmulAlgo_t& algo, const std::uint8_t* x,
                        const std::uint8_t* w, std::uint16_t* y, const std::uint16_t* bias) const {
    if (bias != nullptr) {
      const cublasStatus_t st = cublasLtMatmulDescSetAttribute(
          op_, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias);
      if (st != CUBLAS_STATUS_SUCCESS)
        return st;
    }
    const float alpha = 1.0f, beta = 0.0f;
    return cublasLtMatmul(lt_, op_, &alpha, w, w_, x, x_, &beta, y, y_, y, y_, &algo, workspace_,
                          workspace_bytes_, nullptr);
  }

  cublasLtHandle_t lt_;
  void* workspace_;
  std::size_t workspace_bytes_;
  cublasLtMatmulDesc_t op_ = nullptr;
  cublasLtMatrixLayout_t w_ = nullptr, x_ = nullptr, y_ = nullptr;
  cublasLtMatmulAlgo_t algo_{};
  std::string why_not_;
};

// ---- on the device ------------------------------------------------------------------------------

/// Everything one shape needs on the device: the bf16 operands (version 1), W in e4m3 with its
/// scale (quantised once on the host), X's quantisation buffers, y.
struct Device {
  lab::DeviceBuffer<std::uint16_t> x, w, bias, y;
  lab::DeviceBuffer<std::uint8_t> w_q;
  lab::DeviceBuffer<float> w_scale;
  Fp8Activation x_q;
};

Device upload(const Problem& p, const lab::fp8::Quantised& w_q) {
  const auto count = static_cast<std::int64_t>(p.x.size());
  return {lab::to_device(p.x),
          lab::to_device(p.w),
          lab::to_device(p.bias.empty() ? std::vector<std::uint16_t>(8, 0) : p.bias),
          lab::to_device(
              std::vector<std::uint16_t>(static_cast<std::size_t>(p.rows * p.shape.n), kSentinel)),
          lab::to_device(w_q.bits),
          lab::to_device(std::vector<float>{w_q.scale}),
          {lab::DeviceBuffer<unsigned>(1, "lab amax"), lab::DeviceBuffer<float>(1, "lab scale"),
           lab::DeviceBuffer<std::uint8_t>(count, "lab x e4m3")}};
}

/// The versions' runs: "1", "2", "2g" (the FP8 GEMM alone, X already quantised), "3".
struct Runner {
  Blas& blas;
  cublasLtHandle_t lt;
  lab::DeviceBuffer<std::uint8_t>& workspace;
  int sms;
  bool autotune;

  /// Runs `label` once on `d` (for 2g: after one quantisation, which is not timed).
  /// Returns the FP8 plan's refusal, empty when it ran.
  std::string run_once(const std::string& label, const Problem& p, Device& d,
                       std::vector<std::uint16_t>* y_out, double* us) {
    const Shape& s = p.shape;
    const std::uint16_t* bias = s.bias() ? d.bias.data() : nullptr;
    auto time = [&](auto launch) {
      launch();
      if (us != nullptr)
        *us = lab::median_us(21, 10, launch);
    };
    if (label == "1") {
      time([&] {
        blas.linear(d.x.data(), s.k, d.w.data(), s.k, d.y.data(), CUDA_R_16BF, s.n, p.rows, s.n,
                    s.k, s.epilogue, bias);
      });
    } else {
      Fp8Gemm gemm(lt, s, p.rows, d.w_scale.data(), d.x_q.scale.data(), label == "3",
                   workspace.data(), static_cast<std::size_t>(workspace.size()));
      quantise_on_device(d.x.data(), static_cast<std::int64_t>(p.x.size()), d.x_q, sms);
      if (!gemm.choose(d.x_q.q.data(), d.w_q.data(), d.y.data(), bias, autotune))
        return gemm.why_not();
      // Autotuning wrote y: fill it again so that the check sees only the timed path's values.
      const std::vector<std::uint16_t> fill(static_cast<std::size_t>(p.rows * s.n), kSentinel);
      TSTITCH_CUDA_CHECK(
          cudaMemcpy(d.y.data(), fill.data(), fill.size() * 2, cudaMemcpyHostToDevice));
      if (label == "2g") {
        time([&] { gemm.run(d.x_q.q.data(), d.w_q.data(), d.y.data(), bias); });
      } else {
        time([&] {
          quantise_on_device(d.x.data(), static_cast<std::int64_t>(p.x.size()), d.x_q, sms);
          gemm.run(d.x_q.q.data(), d.w_q.data(), d.y.data(), bias);
        });
      }
    }
    if (y_out != nullptr)
      *y_out = lab::to_host(d.y);
    return {};
  }
};

/// Relative L2 difference of two bf16 outputs over every value, infinity where not finite.
double rel_diff(const std::vector<std::uint16_t>& got, const std::vector<std::uint16_t>& base) {
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < base.size(); ++i) {
    const double b = tstitch::io::bf16_to_f32(base[i]);
    const double e = static_cast<double>(tstitch::io::bf16_to_f32(got[i])) - b;
    diff += e * e;
    norm += b * b;
  }
  const double rel = std::sqrt(diff / std::max(norm, 1e-300));
  return std::isfinite(rel) ? rel : INFINITY;
}

int run_device(int only, bool quick) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0); // each line out before a timeout could cut it off
  lab::require_device("lab_gemm_fp8");
  cudaDeviceProp prop{};
  TSTITCH_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  lab::print_device(prop);
  const bool has_fp8 = prop.major * 10 + prop.minor >= 89;
  if (!has_fp8)
    std::printf("sm_%d%d has no FP8 tensor cores (sm_89+): versions 2 and 3 skipped\n", prop.major,
                prop.minor);
  Blas blas(nullptr);
  blas.set_autotune(!quick);
  cublasLtHandle_t lt = nullptr;
  TSTITCH_CUBLAS_CHECK(cublasLtCreate(&lt));
  lab::DeviceBuffer<std::uint8_t> workspace(32ll << 20, "lab workspace");
  Runner runner{blas, lt, workspace, prop.multiProcessorCount, !quick};

  std::vector<std::string> labels;
  if (only == 0 || only == 1)
    labels.emplace_back("1");
  if (has_fp8 && (only == 0 || only == 2)) {
    labels.emplace_back("2");
    if (!quick)
      labels.emplace_back("2g");
  }
  if (has_fp8 && (only == 0 || only == 3))
    labels.emplace_back("3");
  if (labels.empty()) { // only FP8 versions asked for, on a card without FP8
    (void)cublasLtDestroy(lt);
    std::printf("lab_gemm_fp8: nothing to run on sm_%d%d; skipped\n", prop.major, prop.minor);
    return 77;
  }

  bool ok = true;
  // The goal's batch first: a run stopped by run.sh's per-program limit still leaves its lines.
  for (const int images : quick ? std::vector<int>{1} : std::vector<int>{64, 8}) {
    double sum_us[4] = {}; // versions 1, 2, 2g, 3 over the four GEMMs
    for (const Shape& s : xl2_gemms(images)) {
      const Problem p = make_problem(s, s.rows());
      const std::vector<std::int64_t> rows = lab::checked_rows(p.rows);
      const std::vector<double> want = reference(p, rows);
      const lab::fp8::Quantised w_q = lab::fp8::quantise(lab::from_bf16(p.w));
      std::printf("%s: rows %lld, K %d, N %d, epilogue %s (checked rows %zu; W scale %.3e)\n",
                  s.name().c_str(), static_cast<long long>(p.rows), s.k, s.n,
                  s.gelu() ? "bias+GELU" : (s.bias() ? "bias" : "none"), rows.size(), w_q.scale);
      std::vector<std::uint16_t> y1;
      for (const std::string& label : labels) {
        Device d = upload(p, w_q);
        std::vector<std::uint16_t> y;
        double us = 0;
        const std::string why_not = runner.run_once(label, p, d, &y, quick ? nullptr : &us);
        if (!why_not.empty()) {
          std::printf("  v%-3s FAIL: %s\n", label.c_str(), why_not.c_str());
          lab::print_csv("gemm_fp8", s.name(), label, "", INFINITY, false);
          ok = false;
          continue;
        }
        std::vector<float> got;
        got.reserve(want.size());
        for (const std::int64_t r : rows)
          for (int c = 0; c < s.n; ++c)
            got.push_back(tstitch::io::bf16_to_f32(y[static_cast<std::size_t>(r * s.n + c)]));
        const auto unwritten = std::count(y.begin(), y.end(), kSentinel);
        const double bound = label == "1" ? kBf16Bound : kFp8Bound;
        const double err = lab::rel_l2(got, want);
        const bool good = err < bound && unwritten == 0;
        ok = ok && good;
        std::printf("  v%-3s rel L2 %.3e (bound %.0e), %lld values unwritten %s", label.c_str(),
                    err, bound, static_cast<long long>(unwritten), good ? "ok" : "FAIL");
        if (!quick)
          std::printf(", %10.2f us", us);
        std::printf("\n");
        const int slot = label == "1" ? 0 : label == "2" ? 1 : label == "2g" ? 2 : 3;
        sum_us[slot] += us;
        lab::print_csv("gemm_fp8", s.name(), label, quick ? "" : lab::csv_time(us), err, good);
        if (label == "1") {
          y1 = std::move(y);
        } else if (!y1.empty() && label != "2g") {
          const double diff = rel_diff(y, y1);
          const bool close = diff < kFp8Bound;
          ok = ok && close;
          std::printf("  v%-3s against v1 (every value): rel L2 %.3e (bound %.0e) %s\n",
                      label.c_str(), diff, kFp8Bound, close ? "ok" : "FAIL");
          lab::print_csv("gemm_fp8", s.name(), label + "vs1", "", diff, close);
        }
      }
    }
    if (!quick && sum_us[0] > 0) {
      std::printf("%d images, the four GEMMs: v1 %.1f us", images, sum_us[0]);
      const char* names[] = {"", "v2", "v2g", "v3"};
      for (int v = 1; v < 4; ++v)
        if (sum_us[v] > 0)
          std::printf(", %s %.1f us (v1/%s %.2f)", names[v], sum_us[v], names[v],
                      sum_us[0] / sum_us[v]);
      std::printf("\n");
    }
  }
  (void)cublasLtDestroy(lt);
  std::printf("%s\n", ok ? "all checks passed" : "MISMATCH");
  return ok ? 0 : 1;
}

// ---- --emulate: the FP8 error on the CPU --------------------------------------------------------

/// cuda_fp8.h's rounding against our decoding: all 256 codes decode as cuda_fp8.h decodes them,
/// and values (random, every midpoint between neighbours, beyond 448) round to the nearest code,
/// ties to the even one, saturating at +-448. Returns the number of violations.
int check_e4m3() {
  int bad = 0;
  std::vector<float> finite; // the non-negative finite values, ascending (codes 0x00..0x7e)
  for (int c = 0; c < 256; ++c) {
    const auto bits = static_cast<std::uint8_t>(c);
    const float ours = lab::fp8::e4m3_to_float(bits);
    const __half_raw h = __nv_cvt_fp8_to_halfraw(bits, __NV_E4M3);
    const float theirs = __half2float(__half(h));
    bad += !(ours == theirs || (std::isnan(ours) && std::isnan(theirs)));
    if (c < 0x7f)
      finite.push_back(ours);
  }
  std::vector<float> probes = lab::randn(20000, 79, 60.0f);
  for (std::size_t i = 0; i + 1 < finite.size(); ++i)
    probes.push_back(0.5f * (finite[i] + finite[i + 1])); // exact in float: a tie
  probes.insert(probes.end(), {448.0f, 460.0f, 500.0f, 1e6f, 0x1p-10f, 0x1p-11f, 0.0f});
  for (const float p : probes) {
    const float a = std::fabs(p);
    const float got = std::fabs(lab::fp8::e4m3_to_float(lab::fp8::to_e4m3(p, 1.0f)));
    // The nearest finite value, the one with the even code on a tie.
    std::size_t best = 0;
    for (std::size_t i = 1; i < finite.size(); ++i) {
      const float d = std::fabs(finite[i] - a), e = std::fabs(finite[best] - a);
      if (d < e || (d == e && i % 2 == 0))
        best = i;
    }
    bad += got != finite[best];
  }
  std::printf("e4m3: 256 codes decoded, %zu values rounded against the nearest code: %d "
              "violations %s\n",
              probes.size(), bad, bad == 0 ? "ok" : "FAIL");
  return bad;
}

int emulate_all() {
  bool ok = check_e4m3() == 0;
  constexpr std::int64_t kRows = 256;
  std::printf("FP8 error on the CPU (X quantised over its %lld rows, W once; fp64 GEMM of the "
              "dequantised values, output rounded to bf16; bound %.0e, predicted sqrt(2) eps "
              "~3.8e-2 before bias):\n",
              static_cast<long long>(kRows), kFp8Bound);
  for (const Shape& s : xl2_gemms(1)) {
    const Problem p = make_problem(s, kRows);
    std::vector<std::int64_t> rows(static_cast<std::size_t>(kRows));
    for (std::int64_t r = 0; r < kRows; ++r)
      rows[static_cast<std::size_t>(r)] = r;
    const std::vector<float> x = lab::from_bf16(p.x), w = lab::from_bf16(p.w);
    const lab::fp8::Quantised x_q = lab::fp8::quantise(x), w_q = lab::fp8::quantise(w);
    const std::vector<double> x_d = lab::fp8::dequantise(x_q), w_d = lab::fp8::dequantise(w_q);
    // The per-value rounding error of the operands (the header's eps).
    double e2 = 0, n2 = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      e2 += (x_d[i] - x[i]) * (x_d[i] - x[i]);
      n2 += static_cast<double>(x[i]) * x[i];
    }
    const double eps_x = std::sqrt(e2 / n2);
    e2 = n2 = 0;
    for (std::size_t i = 0; i < w.size(); ++i) {
      e2 += (w_d[i] - w[i]) * (w_d[i] - w[i]);
      n2 += static_cast<double>(w[i]) * w[i];
    }
    const double eps_w = std::sqrt(e2 / n2);
    const std::vector<double> bias = to_double(p.bias);
    const std::vector<double> want = reference(p, rows);
    const std::vector<double> fp8 = gemm_rows(s, x_d, w_d, bias, rows);
    std::vector<float> got(fp8.size());
    for (std::size_t i = 0; i < fp8.size(); ++i) // y leaves the GEMM in bf16
      got[i] = tstitch::io::bf16_to_f32(tstitch::io::f32_to_bf16_rne(static_cast<float>(fp8[i])));
    const double err = lab::rel_l2(got, want);
    const bool good = err < kFp8Bound;
    ok = ok && good;
    std::printf("  %-12s K %4d N %4d: eps X %.2e, eps W %.2e (scales %.3e, %.3e), y rel L2 %.3e "
                "(bound %.0e) %s\n",
                s.name().c_str(), s.k, s.n, eps_x, eps_w, static_cast<double>(x_q.scale),
                static_cast<double>(w_q.scale), err, kFp8Bound, good ? "ok" : "FAIL");
  }
  std::printf("%s\n", ok ? "emulation within the FP8 bound" : "EMULATION FAILED");
  return ok ? 0 : 1;
}

int lab_main(int argc, char** argv) {
  const lab::Arguments args = lab::parse_arguments(argc, argv, 3);
  if (args.bad)
    return lab::usage(argv[0], 3);
  if (args.emulate)
    return emulate_all();
  return run_device(args.only, args.quick);
}

} // namespace

int main(int argc, char** argv) { return lab::run_main(argc, argv, lab_main); }
