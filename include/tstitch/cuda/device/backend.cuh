// SPDX-License-Identifier: Apache-2.0
#pragma once

// The CUDA sampling backend: HostBackend's element-wise members as kernels on device views, so
// every solver runs unchanged and latents never leave the GPU while sampling. nvcc only; it is
// compiled in src/cuda/tstitch_cuda.cu (and in tests with device code of their own).
//
// Parity with HostBackend. combine adds its terms left to right in float32 with __fmul_rn /
// __fadd_rn, which nvcc never fuses, so it matches the host bit for bit wherever the host compiler
// does not contract a*b + c into an fma (x86-64 without -mfma: the project's default).
// fill_normal runs core/philox.hpp's own functions, which are exact on both sides: bit-identical.
// copy, fill and find_nonfinite are exact. map calls the caller's functor, and nvcc (with its
// default --fmad=true) may contract a*b + c inside it, so a functor such as ClippedCombination
// can differ from the host by about an ulp; functors without a product feeding a sum (clamps,
// single products) match bit for bit.
//
// Cost model. allocate and find_nonfinite (and host_view) are the only members that allocate or
// wait for the GPU; every other member enqueues one kernel or copy on the backend's stream and
// returns, so a sampling loop on this backend never synchronises unless SampleOptions::
// check_finite asks it to.
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "tstitch/core/error.hpp"
#include "tstitch/core/host_backend.hpp"
#include "tstitch/core/philox.hpp"
#include "tstitch/core/tensor.hpp"
#include "tstitch/cuda/runtime.hpp"

namespace tstitch::cuda {

namespace detail {

constexpr int threads = 256;
// Enough blocks to fill any current GPU several times over; the kernels stride over the rest.
constexpr std::int64_t max_blocks_x = 4096;
constexpr std::int64_t max_blocks_y = 65535; // gridDim.y's limit

/// Rows of an operation: `rows` sample rows of `row_len` values each, or one row holding the
/// whole batch when every operand is contiguous (as HostBackend's `flat` case).
struct Layout {
  std::int64_t rows;
  std::int64_t row_len;
};

inline Layout layout(ConstView out, bool flat) {
  if (flat)
    return {out.numel() > 0 ? 1 : 0, out.numel()};
  return {out.batch(), out.sample_numel()};
}

inline dim3 grid_for(Layout l, std::int64_t values_per_thread = 1) {
  const std::int64_t per_row = (l.row_len + values_per_thread - 1) / values_per_thread;
  std::int64_t bx = (per_row + threads - 1) / threads;
  bx = bx < 1 ? 1 : (bx > max_blocks_x ? max_blocks_x : bx);
  const std::int64_t by = l.rows > max_blocks_y ? max_blocks_y : l.rows;
  return dim3(static_cast<unsigned>(bx), static_cast<unsigned>(by < 1 ? 1 : by));
}

/// One input of a kernel: a device pointer and the distance between its sample rows (0 in the
/// flat case, where there is a single row).
struct Operand {
  const float* data;
  std::int64_t stride;
};

inline Operand operand(ConstView x, bool flat) { return {x.data(), flat ? 0 : x.batch_stride()}; }

template <int N> struct Terms {
  float coeff[N];
  Operand x[N];
};

// Left to right with IEEE round-to-nearest products and sums, never fused: the order and the
// roundings of HostBackend::sum_terms.
template <int N>
__global__ void combine_kernel(float* out, std::int64_t out_stride, Layout l, Terms<N> t) {
  for (std::int64_t n = blockIdx.y; n < l.rows; n += gridDim.y) {
    float* dst = out + n * out_stride;
    for (std::int64_t e = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
         e < l.row_len; e += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
      float acc = __fmul_rn(t.coeff[0], t.x[0].data[n * t.x[0].stride + e]);
#pragma unroll
      for (int k = 1; k < N; ++k)
        acc = __fadd_rn(acc, __fmul_rn(t.coeff[k], t.x[k].data[n * t.x[k].stride + e]));
      dst[e] = acc;
    }
  }
}

template <int N> struct Inputs { Operand x[N > 0 ? N : 1]; };

template <class F, int N, int... I>
__device__ __forceinline__ float apply(const F& f, const Inputs<N>& in, std::int64_t n,
                                       std::int64_t e, std::integer_sequence<int, I...>) {
  return f(in.x[I].data[n * in.x[I].stride + e]...);
}

template <class F, int N>
__global__ void map_kernel(float* out, std::int64_t out_stride, Layout l, F f, Inputs<N> in) {
  for (std::int64_t n = blockIdx.y; n < l.rows; n += gridDim.y) {
    float* dst = out + n * out_stride;
    for (std::int64_t e = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
         e < l.row_len; e += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
      dst[e] = apply(f, in, n, e, std::make_integer_sequence<int, N>{});
  }
}

// The non-template kernels are templates with a dummy parameter: nvcc ignores `inline` on
// __global__ functions, and a template may be defined in every translation unit that includes this.

template <int = 0>
__global__ void fill_kernel(float* out, std::int64_t out_stride, Layout l, float value) {
  for (std::int64_t n = blockIdx.y; n < l.rows; n += gridDim.y) {
    float* dst = out + n * out_stride;
    for (std::int64_t e = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
         e < l.row_len; e += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
      dst[e] = value;
  }
}

// One thread per block of four values of a row, exactly tstitch::fill_normal's blocks: row n
// uses sample key.sample + n, block b gives values 4b .. 4b+3 (a partial last block is cut).
template <int = 0>
__global__ void fill_normal_kernel(float* out, std::int64_t out_stride, Layout l, NoiseKey key) {
  const std::int64_t blocks = (l.row_len + 3) / 4;
  for (std::int64_t n = blockIdx.y; n < l.rows; n += gridDim.y) {
    NoiseKey row_key = key;
    row_key.sample = key.sample + static_cast<std::uint32_t>(n);
    float* dst = out + n * out_stride;
    for (std::int64_t b = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
         b < blocks; b += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
      const Float4 v = normal4(row_key, static_cast<std::uint32_t>(b));
      const std::int64_t e = 4 * b;
#pragma unroll
      for (int i = 0; i < 4; ++i)
        if (e + i < l.row_len)
          dst[e + i] = v.v[i];
    }
  }
}

// The smallest flat index (n * row_len + e) of a NaN or Inf, by atomicMin; *first starts at the
// largest value, meaning "none".
template <int = 0>
__global__ void find_nonfinite_kernel(const float* x, std::int64_t stride, Layout l,
                                      unsigned long long* first) {
  for (std::int64_t n = blockIdx.y; n < l.rows; n += gridDim.y) {
    const float* src = x + n * stride;
    for (std::int64_t e = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
         e < l.row_len; e += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
      if ((__float_as_uint(src[e]) & 0x7f800000u) == 0x7f800000u)
        atomicMin(first, static_cast<unsigned long long>(n * l.row_len + e));
  }
}

inline void check_same_extent(ConstView out, ConstView in, const char* operation) {
  if (in.batch() != out.batch() || in.shape() != out.shape())
    throw_invalid_argument(
        tstitch::detail::concat("cuda::Backend::", operation, " input shape"), shape_string(in),
        tstitch::detail::concat("must equal the output shape ", shape_string(out)));
}

} // namespace detail

/// HostBackend's interface on device memory (see the file comment for parity and cost). Cheap to
/// copy: copies share one stream and one small state (the find_nonfinite flag, the host_view
/// buffer, the allocation counter).
class Backend {
public:
  using tensor_type = DeviceTensor;

  /// Work is enqueued on `stream`; by default the stream the CUDA models run on, so model
  /// outputs and solver updates are ordered without events.
  explicit Backend(cudaStream_t stream) : stream_(stream), state_(std::make_shared<State>()) {}
  // Not explicit, so `const Backend& backend = {}` defaults (fill_initial_noise, Sampler) work.
  Backend() : Backend(default_stream()) {}

  [[nodiscard]] cudaStream_t stream() const { return stream_; }

  /// A zero-filled device tensor (zeroed on the stream, as Tensor is zero-initialised, so a
  /// zero-weighted term never multiplies uninitialised memory). Allocates.
  [[nodiscard]] DeviceTensor allocate(std::int64_t batch, Shape shape) const {
    DeviceTensor t(batch, shape);
    if (t.numel() > 0)
      TSTITCH_CUDA_CHECK(cudaMemsetAsync(
          t.data(), 0, static_cast<std::size_t>(t.numel()) * sizeof(float), stream_));
    ++state_->allocations;
    state_->allocated_bytes += t.numel() * static_cast<std::int64_t>(sizeof(float));
    return t;
  }

  /// out = sum_k coeff_k * x_k, left to right in float32, one to four terms; `out` may alias any
  /// input (each element is read before it is written, by the same thread).
  template <class... Ts>
  requires(sizeof...(Ts) >= 1 && sizeof...(Ts) <= 4 &&
           (std::is_same_v<Ts, Term> && ...)) void combine(View out, const Ts&... terms) const {
    using namespace detail;
    (check_same_extent(out, terms.x, "combine"), ...);
    if (out.empty())
      return;
    const bool flat = out.contiguous() && (terms.x.contiguous() && ...);
    const Layout l = layout(out, flat);
    constexpr int n = static_cast<int>(sizeof...(Ts));
    Terms<n> t{{terms.coeff...}, {operand(terms.x, flat)...}};
    combine_kernel<n>
        <<<grid_for(l), threads, 0, stream_>>>(out.data(), row_stride(out, flat), l, t);
    TSTITCH_CUDA_CHECK(cudaGetLastError());
  }

  /// out[e] = f(in_0[e], ...). `f` is copied to the device by value: a TSTITCH_HOST_DEVICE
  /// functor of plain values (no host pointers, no references). `out` may alias any input.
  template <class F, class... Inputs>
  requires(std::is_same_v<Inputs, ConstView>&&...) void map(View out, F f,
                                                            const Inputs&... in) const {
    using namespace detail;
    static_assert(std::is_trivially_copyable_v<F>,
                  "cuda::Backend::map: the functor is passed to a kernel by value and must be "
                  "trivially copyable");
    (check_same_extent(out, in, "map"), ...);
    if (out.empty())
      return;
    const bool flat = out.contiguous() && (in.contiguous() && ...);
    const Layout l = layout(out, flat);
    constexpr int n = static_cast<int>(sizeof...(Inputs));
    detail::Inputs<n> operands{{operand(in, flat)...}};
    map_kernel<F, n>
        <<<grid_for(l), threads, 0, stream_>>>(out.data(), row_stride(out, flat), l, f, operands);
    TSTITCH_CUDA_CHECK(cudaGetLastError());
  }

  /// Device-to-device copy, row by row (one 2D copy). `out` may be `in` itself (nothing to do);
  /// other overlaps are rejected, since a device copy's order is unspecified.
  void copy(View out, ConstView in) const {
    detail::check_same_extent(out, in, "copy");
    if (out.empty() || (out.data() == in.data() && out.batch_stride() == in.batch_stride()))
      return;
    const auto span_end = [](ConstView v) {
      return v.data() + (v.batch() - 1) * v.batch_stride() + v.sample_numel();
    };
    if (in.data() < span_end(out) && out.data() < span_end(in))
      throw_invalid_argument("cuda::Backend::copy", "overlapping views",
                             "input and output must be the same view or not overlap");
    const std::size_t row_bytes = static_cast<std::size_t>(out.sample_numel()) * sizeof(float);
    TSTITCH_CUDA_CHECK(cudaMemcpy2DAsync(
        out.data(), static_cast<std::size_t>(out.batch_stride()) * sizeof(float), in.data(),
        static_cast<std::size_t>(in.batch_stride()) * sizeof(float), row_bytes,
        static_cast<std::size_t>(out.batch()), cudaMemcpyDeviceToDevice, stream_));
  }

  void fill(View out, float value) const {
    using namespace detail;
    if (out.empty())
      return;
    const Layout l = layout(out, out.contiguous());
    fill_kernel<><<<grid_for(l), threads, 0, stream_>>>(
        out.data(), row_stride(out, out.contiguous()), l, value);
    TSTITCH_CUDA_CHECK(cudaGetLastError());
  }

  /// Standard normal noise, bit-identical to HostBackend::fill_normal: row b gets the stream of
  /// sample key.sample + b.
  void fill_normal(View out, NoiseKey key) const {
    using namespace detail;
    if (out.empty())
      return;
    const Layout l = layout(out, /*flat=*/false); // the stream changes per row
    fill_normal_kernel<>
        <<<grid_for(l, 4), threads, 0, stream_>>>(out.data(), out.batch_stride(), l, key);
    TSTITCH_CUDA_CHECK(cudaGetLastError());
  }

  /// Flat index (n * C*H*W + offset in the sample) of the first NaN or Inf, or -1. Copies one
  /// integer to the host and WAITS for the stream: the sampling loop calls it only when
  /// SampleOptions::check_finite is on (once before the loop and once per step). Allocates an
  /// 8-byte device flag on first use.
  [[nodiscard]] std::int64_t find_nonfinite(ConstView x) const {
    using namespace detail;
    if (x.empty())
      return -1;
    if (state_->flag.size() == 0)
      state_->flag = DeviceBuffer<unsigned long long>(1);
    TSTITCH_CUDA_CHECK(
        cudaMemsetAsync(state_->flag.data(), 0xff, sizeof(unsigned long long), stream_));
    const Layout l = layout(x, /*flat=*/false);
    find_nonfinite_kernel<>
        <<<grid_for(l), threads, 0, stream_>>>(x.data(), x.batch_stride(), l, state_->flag.data());
    TSTITCH_CUDA_CHECK(cudaGetLastError());
    unsigned long long first = 0;
    TSTITCH_CUDA_CHECK(cudaMemcpyAsync(&first, state_->flag.data(), sizeof first,
                                       cudaMemcpyDeviceToHost, stream_));
    TSTITCH_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return first == std::numeric_limits<unsigned long long>::max()
               ? -1
               : static_cast<std::int64_t>(first);
  }

  /// Device memory has no host view, so this DOWNLOADS x (waiting for the stream) into a host
  /// buffer the backend owns and returns a contiguous view of it, valid until the next host_view
  /// call on this backend or a copy of it. Only dynamic thresholding (DPMSolverMultistep, UniPC)
  /// uses it, once per sample and step; device sampling (cuda/sampling.hpp) therefore rejects
  /// thresholding. The buffer grows to the largest x seen.
  [[nodiscard]] ConstView host_view(ConstView x) const {
    std::vector<float>& buffer = state_->host;
    if (static_cast<std::int64_t>(buffer.size()) < x.numel())
      buffer.resize(static_cast<std::size_t>(x.numel()));
    const View host(buffer.data(), x.batch(), x.shape());
    download(host, x, stream_);
    return host;
  }

  /// Calls of allocate() so far, by this backend and its copies: a sampler reused for the same
  /// batch and shape must not add any.
  [[nodiscard]] std::int64_t allocations() const { return state_->allocations; }
  [[nodiscard]] std::int64_t allocated_bytes() const { return state_->allocated_bytes; }

private:
  struct State {
    DeviceBuffer<unsigned long long> flag;
    std::vector<float> host;
    std::int64_t allocations = 0;
    std::int64_t allocated_bytes = 0;
  };

  static std::int64_t row_stride(ConstView v, bool flat) { return flat ? 0 : v.batch_stride(); }

  cudaStream_t stream_;
  std::shared_ptr<State> state_;
};

} // namespace tstitch::cuda
