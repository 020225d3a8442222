// SPDX-License-Identifier: Apache-2.0
#pragma once

// The element-wise kernels of the DiT forward on CUDA and the definitions of their launchers
// (declared, with the layouts, in kernels.hpp). The launchers are defined out of line: include
// this in exactly one translation unit (tstitch_cuda.cu), which emits them for every user.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "tstitch/cuda/kernels.hpp"
#include "tstitch/cuda/runtime.hpp"

namespace tstitch::cuda::detail {

using bf16 = __nv_bfloat16;
using kernels::bias_columns;

inline int blocks_for(std::int64_t work, int threads) {
  const std::int64_t blocks = (work + threads - 1) / threads;
  return static_cast<int>(blocks < 1 ? 1 : (blocks > 65535 * 8 ? 65535 * 8 : blocks));
}

inline void check_launch(const char* kernel) {
  check(cudaGetLastError(), kernel, __FILE__, __LINE__);
}

__device__ inline float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// The row of a one-warp-per-row kernel: blockDim.x / 32 rows per block.
__device__ inline std::int64_t warp_row() {
  return blockIdx.x * static_cast<std::int64_t>(blockDim.x / 32) + (threadIdx.x >> 5);
}

// adaLN's modulation of a normalised value: (v - mean) * rstd * (1 + scale) + shift.
__device__ inline float4 modulate(float4 v, float mean, float rstd, float4 shift, float4 scale) {
  return make_float4((v.x - mean) * rstd * (1.0f + scale.x) + shift.x,
                     (v.y - mean) * rstd * (1.0f + scale.y) + shift.y,
                     (v.z - mean) * rstd * (1.0f + scale.z) + shift.z,
                     (v.w - mean) * rstd * (1.0f + scale.w) + shift.w);
}

__device__ inline float silu(float v) { return v / (1.0f + expf(-v)); }

// ---- kernels ---------------------------------------------------------------------------------

__global__ void fill_bias_columns_kernel(bf16* out, int ld, int cols, std::int64_t rows) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
       i < rows * bias_columns; i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t row = i / bias_columns;
    const int c = static_cast<int>(i % bias_columns);
    out[row * ld + cols + c] = __float2bfloat16(c == 0 ? 1.0f : 0.0f);
  }
}

// Copies the (possibly batch-strided) latents into the model's input buffer and stores the step's
// timestep and labels where the captured graph reads them: everything a forward depends on besides
// the weights goes through this one launch, so the graph itself never changes.
__global__ void prepare_inputs_kernel(const float* x, std::int64_t batch_stride,
                                      std::int64_t per_sample, int batch, float* x_in, float t,
                                      float* t_out, const int* labels, int* labels_out) {
  const std::int64_t total = per_sample * batch;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t n = i / per_sample;
    x_in[i] = x[n * batch_stride + (i - n * per_sample)];
  }
  if (blockIdx.x == 0) {
    for (int n = static_cast<int>(threadIdx.x); n < batch; n += static_cast<int>(blockDim.x))
      labels_out[n] = labels[n];
    if (threadIdx.x == 0)
      *t_out = t;
  }
}

// [cos(t f_k), sin(t f_k)], f_k = exp(-ln(10000) k / 128), k < 128, in fp32 as DiT computes it.
__global__ void timestep_frequencies_kernel(const float* t, bf16* out, int ld, int batch) {
  constexpr int half = 128;
  const int k = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (k >= half)
    return;
  const float log_period = -9.210340371976184f; // float(-ln(10000))
  const float f = expf(log_period * static_cast<float>(k) / static_cast<float>(half));
  const float arg = *t * f;
  const bf16 c = __float2bfloat16(cosf(arg));
  const bf16 s = __float2bfloat16(sinf(arg));
  for (int n = 0; n < batch; ++n) {
    out[static_cast<std::int64_t>(n) * ld + k] = c;
    out[static_cast<std::int64_t>(n) * ld + half + k] = s;
  }
}

__global__ void silu_to_bf16_kernel(const float* in, int ld_in, bf16* out, int ld_out, int cols,
                                    std::int64_t rows) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
       i < rows * cols; i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / cols;
    const std::int64_t c = i - r * cols;
    out[r * ld_out + c] = __float2bfloat16(silu(in[r * ld_in + c]));
  }
}

// c = t_embedding + class_table[label]; writes SiLU(c): every consumer of c (the adaLN
// modulations of all blocks and of the final layer) starts with SiLU.
__global__ void condition_kernel(const float* temb, const float* table, const int* labels,
                                 bf16* out, int ld_out, int dim, int batch) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
       i < static_cast<std::int64_t>(batch) * dim;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t n = i / dim;
    const std::int64_t c = i - n * dim;
    const float v = temb[i] + table[static_cast<std::int64_t>(labels[n]) * dim + c];
    out[n * ld_out + c] = __float2bfloat16(silu(v));
  }
}

// Patch p x p of channel ch at grid cell (r, c) -> patches[n*T + r*g + c][(ch*p + i)*p + j], the
// flattening of the patch-embedding convolution's weight [D, C, p, p].
__global__ void patchify_kernel(const float* x, bf16* patches, int ld, int channels, int size,
                                int patch, int batch) {
  const int grid = size / patch;
  const std::int64_t total = static_cast<std::int64_t>(batch) * channels * size * size;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const int col = static_cast<int>(i % size);
    const int row = static_cast<int>((i / size) % size);
    const int ch = static_cast<int>((i / (static_cast<std::int64_t>(size) * size)) % channels);
    const std::int64_t n = i / (static_cast<std::int64_t>(size) * size * channels);
    const std::int64_t token = n * grid * grid + (row / patch) * grid + (col / patch);
    const int k = (ch * patch + row % patch) * patch + col % patch;
    patches[token * ld + k] = __float2bfloat16(x[i]);
  }
}

// The row kernels below run one thread block per row (blockIdx.x = row), threads striding over
// 4-column groups: 16-byte loads and stores, and no 64-bit division per element (a first version
// with a flat index spent more time dividing than moving bytes). D and 4D are multiples of 4 (the
// config requires D % 4 == 0), so every row and offset is 16-byte aligned for fp32 and 8-byte
// aligned for bf16.

__device__ inline void store_bf16x4(bf16* out, float4 v) {
  __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y);
  __nv_bfloat162 hi = __floats2bfloat162_rn(v.z, v.w);
  uint2 bits;
  memcpy(&bits.x, &lo, 4);
  memcpy(&bits.y, &hi, 4);
  *reinterpret_cast<uint2*>(out) = bits;
}

__device__ inline float4 load_bf16x4(const bf16* in) {
  const uint2 bits = *reinterpret_cast<const uint2*>(in);
  __nv_bfloat162 lo, hi;
  memcpy(&lo, &bits.x, 4);
  memcpy(&hi, &bits.y, 4);
  const float2 a = __bfloat1622float2(lo), b = __bfloat1622float2(hi);
  return make_float4(a.x, a.y, b.x, b.y);
}

__global__ void add_position_kernel(float* h, const float* pos, int tokens, int dim) {
  const std::int64_t row = blockIdx.x;
  float4* x = reinterpret_cast<float4*>(h + row * dim);
  const float4* p = reinterpret_cast<const float4*>(pos + (row % tokens) * dim);
  for (int c = static_cast<int>(threadIdx.x); c < dim / 4; c += static_cast<int>(blockDim.x)) {
    float4 v = x[c];
    const float4 q = p[c];
    v.x += q.x;
    v.y += q.y;
    v.z += q.z;
    v.w += q.w;
    x[c] = v;
  }
}

// out = LayerNorm(h) * (1 + scale) + shift, LayerNorm without affine (eps 1e-6), shift and scale
// of the row's sample. One warp per row; the row is read three times (mean, variance, output),
// the second and third times from L1. Two passes keep the variance accurate when |mean| is
// large, as it can be in the residual stream.
__global__ void layernorm_modulate_kernel(const float* h, const float* mod, int mod_ld,
                                          int shift_offset, int scale_offset, bf16* out, int ld_out,
                                          int tokens, int dim, std::int64_t rows, float eps) {
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const std::int64_t row = warp_row();
  if (row >= rows)
    return;
  const int groups = dim / 4;
  const float4* x = reinterpret_cast<const float4*>(h + row * dim);
  float sum = 0.0f;
  for (int c = lane; c < groups; c += 32) {
    const float4 v = x[c];
    sum += (v.x + v.y) + (v.z + v.w);
  }
  const float mean = warp_sum(sum) / static_cast<float>(dim);
  float sq = 0.0f;
  for (int c = lane; c < groups; c += 32) {
    const float4 v = x[c];
    const float a = v.x - mean, b = v.y - mean, d = v.z - mean, e = v.w - mean;
    sq += (a * a + b * b) + (d * d + e * e);
  }
  const float rstd = rsqrtf(warp_sum(sq) / static_cast<float>(dim) + eps);
  const float* m = mod + (row / tokens) * mod_ld;
  const float4* shift = reinterpret_cast<const float4*>(m + shift_offset);
  const float4* scale = reinterpret_cast<const float4*>(m + scale_offset);
  bf16* o = out + row * ld_out;
  for (int c = lane; c < groups; c += 32) {
    const float4 v = x[c], sh = shift[c], sc = scale[c];
    store_bf16x4(o + 4 * c, modulate(v, mean, rstd, sh, sc));
  }
}

// The gated residual of one sublayer and the LayerNorm-modulate of the next for one row, by one
// warp: h + gate * (y + bias) stays in registers (kGroups float4 per lane, enough for the row) for
// the two LayerNorm passes, so h is read and written once instead of three reads and a write.
// Every load of a phase is issued before the first store (all pointers __restrict__): with a
// store between loads the compiler must keep them in order, and the warp then waits for one
// memory round trip per 512-byte piece of the row instead of one per phase. bias, gate, shift and
// scale are float4 rows in global or shared memory.
template <int kGroups>
__device__ inline void
residual_layernorm_modulate_row(float4* __restrict__ x, const bf16* __restrict__ in,
                                const float4* __restrict__ b, const float4* __restrict__ gate,
                                const float4* __restrict__ shift, const float4* __restrict__ scale,
                                bf16* __restrict__ o, int dim, float eps) {
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int groups = dim / 4;
  float4 v[kGroups];
  float4 u[kGroups];
#pragma unroll
  for (int j = 0; j < kGroups; ++j) {
    const int c = lane + 32 * j;
    if (c < groups) {
      v[j] = x[c];
      u[j] = load_bf16x4(in + 4 * c);
    }
  }
  float sum = 0.0f;
#pragma unroll
  for (int j = 0; j < kGroups; ++j) {
    const int c = lane + 32 * j;
    if (c < groups) {
      const float4 bb = b[c], g = gate[c];
      v[j].x += g.x * (u[j].x + bb.x);
      v[j].y += g.y * (u[j].y + bb.y);
      v[j].z += g.z * (u[j].z + bb.z);
      v[j].w += g.w * (u[j].w + bb.w);
      sum += (v[j].x + v[j].y) + (v[j].z + v[j].w);
    }
  }
#pragma unroll
  for (int j = 0; j < kGroups; ++j) {
    const int c = lane + 32 * j;
    if (c < groups)
      x[c] = v[j];
  }
  const float mean = warp_sum(sum) / static_cast<float>(dim);
  float sq = 0.0f;
#pragma unroll
  for (int j = 0; j < kGroups; ++j) {
    if (lane + 32 * j < groups) {
      const float a = v[j].x - mean, bq = v[j].y - mean, d = v[j].z - mean, e = v[j].w - mean;
      sq += (a * a + bq * bq) + (d * d + e * e);
    }
  }
  const float rstd = rsqrtf(warp_sum(sq) / static_cast<float>(dim) + eps);
#pragma unroll
  for (int j = 0; j < kGroups; ++j) {
    const int c = lane + 32 * j;
    if (c < groups) {
      const float4 sh = shift[c], sc = scale[c];
      store_bf16x4(o + 4 * c, modulate(v[j], mean, rstd, sh, sc));
    }
  }
}

// One warp per row; each warp reads the bias and its sample's gate, shift and scale from global
// memory (L2 after the first warps).
template <int kGroups>
__global__ void residual_layernorm_modulate_kernel(
    float* __restrict__ h, const bf16* __restrict__ y, const float* __restrict__ bias,
    const float* __restrict__ mod, int mod_ld, int gate_offset, int shift_offset, int scale_offset,
    bf16* __restrict__ out, int ld_out, int tokens, int dim, std::int64_t rows, float eps) {
  const std::int64_t row = warp_row();
  if (row >= rows)
    return;
  const float* m = mod + (row / tokens) * mod_ld;
  residual_layernorm_modulate_row<kGroups>(
      reinterpret_cast<float4*>(h + row * dim), y + row * dim,
      reinterpret_cast<const float4*>(bias), reinterpret_cast<const float4*>(m + gate_offset),
      reinterpret_cast<const float4*>(m + shift_offset),
      reinterpret_cast<const float4*>(m + scale_offset), out + row * ld_out, dim, eps);
}

// The same with the parameters staged: every row of a block belongs to one sample (the launcher
// checks tokens % rows per block == 0), so the block first copies the bias and that sample's gate,
// shift and scale rows into shared memory and its warps read them there. Per row they are 16 bytes
// per column, more than the row's own traffic (12: h read and written, y read, out written): most
// of the kernel above's L2 traffic. Staged: 1.26x faster at DiT-XL/2's sizes on an H100, 1.02x at
// DiT-S/2's 8 images, where the kernel is latency-bound
// (benchmarks/results/2026-11-26-dit-cuda-h100.md).
template <int kGroups>
__global__ void residual_layernorm_modulate_staged_kernel(
    float* __restrict__ h, const bf16* __restrict__ y, const float* __restrict__ bias,
    const float* __restrict__ mod, int mod_ld, int gate_offset, int shift_offset, int scale_offset,
    bf16* __restrict__ out, int ld_out, int tokens, int dim, std::int64_t rows, float eps) {
  extern __shared__ float4 staged[]; // [4][dim / 4]: bias, gate, shift, scale
  const int groups = dim / 4;
  const std::int64_t first_row = blockIdx.x * static_cast<std::int64_t>(blockDim.x / 32);
  const float* m = mod + (first_row / tokens) * mod_ld;
  for (int c = static_cast<int>(threadIdx.x); c < groups; c += static_cast<int>(blockDim.x)) {
    staged[c] = reinterpret_cast<const float4*>(bias)[c];
    staged[groups + c] = reinterpret_cast<const float4*>(m + gate_offset)[c];
    staged[2 * groups + c] = reinterpret_cast<const float4*>(m + shift_offset)[c];
    staged[3 * groups + c] = reinterpret_cast<const float4*>(m + scale_offset)[c];
  }
  __syncthreads();
  const std::int64_t row = warp_row();
  if (row >= rows)
    return;
  residual_layernorm_modulate_row<kGroups>(reinterpret_cast<float4*>(h + row * dim), y + row * dim,
                                           staged, staged + groups, staged + 2 * groups,
                                           staged + 3 * groups, out + row * ld_out, dim, eps);
}

// Token (r, c), column (i*p + j)*Co + o  ->  out[n, o, r*p + i, c*p + j].
__global__ void unpatchify_kernel(const float* tokens_out, float* out, int out_channels, int size,
                                  int patch, int batch) {
  const int grid = size / patch;
  const std::int64_t total = static_cast<std::int64_t>(batch) * out_channels * size * size;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const int col = static_cast<int>(i % size);
    const int row = static_cast<int>((i / size) % size);
    const int o = static_cast<int>((i / (static_cast<std::int64_t>(size) * size)) % out_channels);
    const std::int64_t n = i / (static_cast<std::int64_t>(size) * size * out_channels);
    const std::int64_t token = n * grid * grid + (row / patch) * grid + (col / patch);
    const int k = ((row % patch) * patch + col % patch) * out_channels + o;
    out[i] = tokens_out[token * (patch * patch * out_channels) + k];
  }
}

// ---- launchers' helpers ---------------------------------------------------------------------

constexpr int threads_per_block = 256;
inline bf16* as_bf16(std::uint16_t* p) { return reinterpret_cast<bf16*>(p); }
inline int blocks(std::int64_t work) { return blocks_for(work, threads_per_block); }
// One block per row (grid x allows 2^31 - 1 rows); as many threads as 4-column groups, in whole
// warps, at most 256.
inline unsigned row_blocks(std::int64_t rows) {
  require(rows >= 1 && rows < (std::int64_t{1} << 31), "rows", rows, "must be in [1, 2^31)");
  return static_cast<unsigned>(rows);
}
inline void require_groups_of_4(const char* what, std::int64_t value) {
  if (value % 4 != 0)
    throw_invalid_argument(what, value, "must be a multiple of 4 (16-byte vector access)");
}
inline int row_threads(int groups) { return std::min(256, std::max(32, (groups + 31) / 32 * 32)); }
inline void require_batch(std::string_view what, std::int64_t batch) {
  require(batch >= 1, what, batch, "must be at least 1");
}
// patchify / unpatchify: whole patches only (a ragged edge would address tokens past the grid).
inline void require_patch_grid(const char* kernel, int channels, int size, int patch, int batch) {
  const auto name = [kernel](const char* parameter) {
    return tstitch::detail::concat(kernel, " ", parameter);
  };
  require(channels >= 1, name("channels"), channels, "must be at least 1");
  require(patch >= 1, name("patch"), patch, "must be at least 1");
  require(size >= patch && size % patch == 0, name("size"), size,
          tstitch::detail::concat("must be a positive multiple of the patch size ", patch));
  require_batch(name("batch"), batch);
}
} // namespace tstitch::cuda::detail

// ---- launchers (declared in kernels.hpp) ---------------------------------------------------

namespace tstitch::cuda::kernels {

using detail::as_bf16;
using detail::bf16;
using detail::threads_per_block;

void fill_bias_columns(std::uint16_t* out, int ld, int cols, std::int64_t rows, cudaStream_t s) {
  require(cols >= 0 && ld >= cols + bias_columns, "fill_bias_columns ld", ld,
          tstitch::detail::concat("must hold cols + ", bias_columns, " = ", cols + bias_columns,
                                  " columns"));
  detail::require_batch("fill_bias_columns rows", rows);
  detail::
      fill_bias_columns_kernel<<<detail::blocks(rows * bias_columns), threads_per_block, 0, s>>>(
          as_bf16(out), ld, cols, rows);
  detail::check_launch("fill_bias_columns_kernel");
}

void prepare_inputs(ConstView x, float* x_in, float t, float* t_out, const int* labels,
                    int* labels_out, cudaStream_t s) {
  const std::int64_t per_sample = x.sample_numel();
  detail::
      prepare_inputs_kernel<<<detail::blocks(per_sample * x.batch()), threads_per_block, 0, s>>>(
          x.data(), x.batch_stride(), per_sample, static_cast<int>(x.batch()), x_in, t, t_out,
          labels, labels_out);
  detail::check_launch("prepare_inputs_kernel");
}

void timestep_frequencies(const float* t, std::uint16_t* out, int ld, int batch, cudaStream_t s) {
  constexpr int frequencies = 256; // cos and sin of 128 frequencies, as the kernel writes
  require(ld >= frequencies, "timestep_frequencies ld", ld,
          tstitch::detail::concat("must hold the ", frequencies, " sinusoid columns"));
  detail::require_batch("timestep_frequencies batch", batch);
  detail::timestep_frequencies_kernel<<<1, 128, 0, s>>>(t, as_bf16(out), ld, batch);
  detail::check_launch("timestep_frequencies_kernel");
}

void silu_to_bf16(const float* in, int ld_in, std::uint16_t* out, int ld_out, int cols,
                  std::int64_t rows, cudaStream_t s) {
  detail::silu_to_bf16_kernel<<<detail::blocks(rows * cols), threads_per_block, 0, s>>>(
      in, ld_in, as_bf16(out), ld_out, cols, rows);
  detail::check_launch("silu_to_bf16_kernel");
}

void condition(const float* temb, const float* table, const int* labels, std::uint16_t* out,
               int ld_out, int dim, int batch, cudaStream_t s) {
  detail::condition_kernel<<<detail::blocks(static_cast<std::int64_t>(batch) * dim),
                             threads_per_block, 0, s>>>(temb, table, labels, as_bf16(out), ld_out,
                                                        dim, batch);
  detail::check_launch("condition_kernel");
}

void patchify(const float* x, std::uint16_t* patches, int ld, int channels, int size, int patch,
              int batch, cudaStream_t s) {
  detail::require_patch_grid("patchify", channels, size, patch, batch);
  require(ld >= channels * patch * patch, "patchify ld", ld,
          tstitch::detail::concat("must hold a patch of ", channels * patch * patch, " values"));
  const std::int64_t total = static_cast<std::int64_t>(batch) * channels * size * size;
  detail::patchify_kernel<<<detail::blocks(total), threads_per_block, 0, s>>>(
      x, as_bf16(patches), ld, channels, size, patch, batch);
  detail::check_launch("patchify_kernel");
}

void add_position(float* h, const float* pos, int tokens, int dim, std::int64_t rows,
                  cudaStream_t s) {
  detail::require_groups_of_4("add_position dim", dim);
  detail::add_position_kernel<<<detail::row_blocks(rows), detail::row_threads(dim / 4), 0, s>>>(
      h, pos, tokens, dim);
  detail::check_launch("add_position_kernel");
}

void layernorm_modulate(const float* h, const float* mod, int mod_ld, int shift_offset,
                        int scale_offset, std::uint16_t* out, int ld_out, int tokens, int dim,
                        std::int64_t rows, cudaStream_t s, float eps) {
  detail::require_groups_of_4("layernorm_modulate dim", dim);
  detail::require_groups_of_4("layernorm_modulate ld_out", ld_out);
  detail::require_groups_of_4("layernorm_modulate mod_ld", mod_ld);
  detail::require_groups_of_4("layernorm_modulate shift_offset", shift_offset);
  detail::require_groups_of_4("layernorm_modulate scale_offset", scale_offset);
  constexpr int warps = threads_per_block / 32;
  detail::layernorm_modulate_kernel<<<static_cast<unsigned>((rows + warps - 1) / warps),
                                      threads_per_block, 0, s>>>(
      h, mod, mod_ld, shift_offset, scale_offset, as_bf16(out), ld_out, tokens, dim, rows, eps);
  detail::check_launch("layernorm_modulate_kernel");
}

void residual_layernorm_modulate(float* h, const std::uint16_t* y, const float* bias,
                                 const float* mod, int mod_ld, int gate_offset, int shift_offset,
                                 int scale_offset, std::uint16_t* out, int ld_out, int tokens,
                                 int dim, std::int64_t rows, cudaStream_t s, float eps,
                                 ParamStaging staging) {
  detail::require_groups_of_4("residual_layernorm_modulate dim", dim);
  detail::require_groups_of_4("residual_layernorm_modulate ld_out", ld_out);
  detail::require_groups_of_4("residual_layernorm_modulate mod_ld", mod_ld);
  detail::require_groups_of_4("residual_layernorm_modulate gate_offset", gate_offset);
  detail::require_groups_of_4("residual_layernorm_modulate shift_offset", shift_offset);
  detail::require_groups_of_4("residual_layernorm_modulate scale_offset", scale_offset);
  // The row lives in registers: at most 32 float4 per lane (dim <= 4096; DiT-XL has 1152).
  constexpr int max_dim = 4 * 32 * 32;
  require(dim <= max_dim, "residual_layernorm_modulate dim", dim,
          tstitch::detail::concat("must be at most ", max_dim, " (the row is held in registers)"));
  require(rows >= 1, "residual_layernorm_modulate rows", rows, "must be at least 1");
  require(tokens >= 1, "residual_layernorm_modulate tokens", tokens, "must be at least 1");
  constexpr int warps = threads_per_block / 32;
  // Staging needs every block's rows in one sample, and its 4 rows of parameters within the
  // shared memory a launch gets without opting in (48 KB: dim <= 3072).
  const auto staged_bytes = static_cast<std::size_t>(4 * dim) * sizeof(float);
  const bool can_stage = tokens % warps == 0 && staged_bytes <= 48 * 1024;
  if (staging == ParamStaging::shared)
    require(can_stage, "residual_layernorm_modulate staging", "shared",
            tstitch::detail::concat("needs tokens % ", warps, " == 0 and dim <= 3072 (tokens ",
                                    tokens, ", dim ", dim, ")"));
  const bool stage =
      staging == ParamStaging::shared || (staging == ParamStaging::automatic && can_stage);
  const auto grid = static_cast<unsigned>((rows + warps - 1) / warps);
  const int per_lane = (dim / 4 + 31) / 32;
  auto launch = [&](auto global_kernel, auto staged_kernel) {
    if (stage)
      staged_kernel<<<grid, threads_per_block, staged_bytes, s>>>(
          h, reinterpret_cast<const bf16*>(y), bias, mod, mod_ld, gate_offset, shift_offset,
          scale_offset, as_bf16(out), ld_out, tokens, dim, rows, eps);
    else
      global_kernel<<<grid, threads_per_block, 0, s>>>(
          h, reinterpret_cast<const bf16*>(y), bias, mod, mod_ld, gate_offset, shift_offset,
          scale_offset, as_bf16(out), ld_out, tokens, dim, rows, eps);
  };
#define TSTITCH_RLM_LAUNCH(n)                                                                      \
  launch(detail::residual_layernorm_modulate_kernel<n>,                                            \
         detail::residual_layernorm_modulate_staged_kernel<n>)
  if (per_lane <= 1)
    TSTITCH_RLM_LAUNCH(1);
  else if (per_lane <= 3)
    TSTITCH_RLM_LAUNCH(3);
  else if (per_lane <= 6)
    TSTITCH_RLM_LAUNCH(6);
  else if (per_lane <= 9)
    TSTITCH_RLM_LAUNCH(9);
  else if (per_lane <= 16)
    TSTITCH_RLM_LAUNCH(16);
  else
    TSTITCH_RLM_LAUNCH(32);
#undef TSTITCH_RLM_LAUNCH
  detail::check_launch("residual_layernorm_modulate_kernel");
}

void unpatchify(const float* tokens_out, float* out, int out_channels, int size, int patch,
                int batch, cudaStream_t s) {
  detail::require_patch_grid("unpatchify", out_channels, size, patch, batch);
  const std::int64_t total = static_cast<std::int64_t>(batch) * out_channels * size * size;
  detail::unpatchify_kernel<<<detail::blocks(total), threads_per_block, 0, s>>>(
      tokens_out, out, out_channels, size, patch, batch);
  detail::check_launch("unpatchify_kernel");
}

} // namespace tstitch::cuda::kernels
