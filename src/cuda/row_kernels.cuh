// SPDX-License-Identifier: Apache-2.0
#pragma once

// The gather/scatter kernel of per-sample stitching on the device and its launchers (declared in
// kernels.hpp). Defined out of line: include this in exactly one translation unit
// (tstitch_cuda.cu).
#include <cuda_runtime.h>

#include <cstdint>
#include <span>

#include "tstitch/core/error.hpp"
#include "tstitch/cuda/kernels.hpp"
#include "tstitch/cuda/runtime.hpp"

namespace tstitch::cuda::detail {

/// One launch's row indices, passed by value in the kernel's arguments so that the launch needs
/// no device copy of them (and so no host buffer that must outlive it).
struct RowIndices {
  std::int64_t index[kernels::row_indices_per_launch];
};

// blockIdx.y picks the pair of samples (listed index, dense position `first + y`); the x blocks
// stride over the sample's values. `gather`: src[index] -> dst[first + y], else the reverse.
__global__ void copy_rows_kernel(const float* src, std::int64_t src_stride, float* dst,
                                 std::int64_t dst_stride, std::int64_t per_sample,
                                 std::int64_t first, RowIndices rows, bool gather) {
  const std::int64_t listed = rows.index[blockIdx.y];
  const std::int64_t dense = first + blockIdx.y;
  const float* from = src + (gather ? listed : dense) * src_stride;
  float* to = dst + (gather ? dense : listed) * dst_stride;
  for (std::int64_t e = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
       e < per_sample; e += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    to[e] = from[e];
}

inline void copy_rows(ConstView src, std::span<const std::int64_t> rows, View dst, bool gather,
                      cudaStream_t s) {
  const char* what = gather ? "gather_rows" : "scatter_rows";
  if (src.shape() != dst.shape())
    throw_invalid_argument(
        tstitch::detail::concat(what, " dst shape"), shape_string(dst),
        tstitch::detail::concat("must have src's sample shape ", shape_string(src)));
  const auto count = static_cast<std::int64_t>(rows.size());
  const ConstView dense = gather ? ConstView(dst) : src;
  const std::int64_t listed_batch = gather ? src.batch() : dst.batch();
  if (count > dense.batch())
    throw_invalid_argument(tstitch::detail::concat(what, " rows.size()"), count,
                           tstitch::detail::concat("must not exceed the ", gather ? "dst" : "src",
                                                   " batch, ", dense.batch()));
  for (std::size_t i = 0; i < rows.size(); ++i)
    if (rows[i] < 0 || rows[i] >= listed_batch)
      throw_invalid_argument(tstitch::detail::concat(what, " rows[", i, "]"), rows[i],
                             tstitch::detail::concat("must be in [0, ", listed_batch, ")"));
  const std::int64_t per_sample = src.sample_numel();
  if (count == 0 || per_sample == 0)
    return;
  constexpr int threads = 256;
  const std::int64_t x_blocks = (per_sample + threads - 1) / threads;
  const unsigned grid_x = static_cast<unsigned>(x_blocks < 1024 ? x_blocks : 1024);
  for (std::int64_t first = 0; first < count; first += kernels::row_indices_per_launch) {
    const std::int64_t n = count - first < kernels::row_indices_per_launch
                               ? count - first
                               : kernels::row_indices_per_launch;
    RowIndices indices{};
    for (std::int64_t i = 0; i < n; ++i)
      indices.index[i] = rows[static_cast<std::size_t>(first + i)];
    copy_rows_kernel<<<dim3(grid_x, static_cast<unsigned>(n)), threads, 0, s>>>(
        src.data(), src.batch_stride(), dst.data(), dst.batch_stride(), per_sample, first, indices,
        gather);
    check(cudaGetLastError(), "copy_rows_kernel", __FILE__, __LINE__);
  }
}

} // namespace tstitch::cuda::detail

namespace tstitch::cuda::kernels {

void gather_rows(ConstView src, std::span<const std::int64_t> rows, View dst, cudaStream_t s) {
  detail::copy_rows(src, rows, dst, true, s);
}

void scatter_rows(ConstView src, std::span<const std::int64_t> rows, View dst, cudaStream_t s) {
  detail::copy_rows(src, rows, dst, false, s);
}

} // namespace tstitch::cuda::kernels
