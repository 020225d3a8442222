// SPDX-License-Identifier: Apache-2.0
#pragma once

// The element-wise kernels of the DiT forward on CUDA and the definitions of their launchers
// (declared, with the layouts, in kernels.hpp). The launchers are defined out of line: include
// this in exactly one translation unit (tstitch_cuda.cu), which emits them for every user.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "tstitch/cuda/kernels.hpp"
#include "tstitch/cuda/runtime.hpp"

namespace tstitch::cuda::kernels {

using bf16 = __nv_bfloat16;

namespace impl {

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

__device__ inline float silu(float v) { return v / (1.0f + expf(-v)); }

// DiT's MLP activation: GELU with the tanh approximation (nn.GELU(approximate="tanh")).
__device__ inline float gelu_tanh(float v) {
  constexpr float k0 = 0.7978845608028654f; // sqrt(2 / pi)
  constexpr float k1 = 0.044715f;
  return 0.5f * v * (1.0f + tanhf(k0 * (v + k1 * v * v * v)));
}

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

__global__ void silu_to_bf16_kernel(const float* in, int ld_in, bf16* out, int ld_out,
                                    int cols, std::int64_t rows) {
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
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
       i < total; i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const int col = static_cast<int>(i % size);
    const int row = static_cast<int>((i / size) % size);
    const int ch = static_cast<int>((i / (static_cast<std::int64_t>(size) * size)) % channels);
    const std::int64_t n = i / (static_cast<std::int64_t>(size) * size * channels);
    const std::int64_t token = n * grid * grid + (row / patch) * grid + (col / patch);
    const int k = (ch * patch + row % patch) * patch + col % patch;
    patches[token * ld + k] = __float2bfloat16(x[i]);
  }
}

__global__ void add_position_kernel(float* h, const float* pos, int tokens, int dim,
                                    std::int64_t rows) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
       i < rows * dim; i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / dim;
    h[i] += pos[(r % tokens) * dim + (i - r * dim)];
  }
}

// out = LayerNorm(h) * (1 + scale) + shift, LayerNorm without affine (eps 1e-6), shift and scale
// of the row's sample. One warp per row; the row is read three times (mean, variance, output),
// the second and third times from L1/L2. Two passes keep the variance accurate when |mean| is
// large, as it can be in the residual stream.
__global__ void layernorm_modulate_kernel(const float* h, const float* mod, int mod_ld,
                                          int shift_offset, int scale_offset, bf16* out,
                                          int ld_out, int tokens, int dim, std::int64_t rows,
                                          float eps) {
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const std::int64_t row =
      blockIdx.x * static_cast<std::int64_t>(blockDim.x / 32) + (threadIdx.x >> 5);
  if (row >= rows)
    return;
  const float* x = h + row * dim;
  float sum = 0.0f;
  for (int c = lane; c < dim; c += 32)
    sum += x[c];
  const float mean = warp_sum(sum) / static_cast<float>(dim);
  float sq = 0.0f;
  for (int c = lane; c < dim; c += 32) {
    const float d = x[c] - mean;
    sq += d * d;
  }
  const float rstd = rsqrtf(warp_sum(sq) / static_cast<float>(dim) + eps);
  const float* m = mod + (row / tokens) * mod_ld;
  bf16* o = out + row * ld_out;
  for (int c = lane; c < dim; c += 32)
    o[c] = __float2bfloat16((x[c] - mean) * rstd * (1.0f + m[scale_offset + c]) +
                            m[shift_offset + c]);
}

// h += gate * (y + bias): a block's output joins the residual stream (the gate of adaLN-Zero).
__global__ void gated_residual_kernel(float* h, const float* y, const float* bias,
                                      const float* mod, int mod_ld, int gate_offset, int tokens,
                                      int dim, std::int64_t rows) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
       i < rows * dim; i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / dim;
    const std::int64_t c = i - r * dim;
    const float gate = mod[(r / tokens) * mod_ld + gate_offset + c];
    h[i] += gate * (y[i] + bias[c]);
  }
}

// In place on the fc1 output (bias already added by the GEMM), or with a bias when given.
__global__ void bias_gelu_kernel(bf16* x, int ld, const float* bias, int cols, std::int64_t rows) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
       i < rows * cols; i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / cols;
    const std::int64_t c = i - r * cols;
    float v = __bfloat162float(x[r * ld + c]);
    if (bias != nullptr)
      v += bias[c];
    x[r * ld + c] = __float2bfloat16(gelu_tanh(v));
  }
}

// Token (r, c), column (i*p + j)*Co + o  ->  out[n, o, r*p + i, c*p + j].
__global__ void unpatchify_kernel(const float* tokens_out, float* out, int out_channels, int size,
                                  int patch, int batch) {
  const int grid = size / patch;
  const std::int64_t total = static_cast<std::int64_t>(batch) * out_channels * size * size;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
       i < total; i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const int col = static_cast<int>(i % size);
    const int row = static_cast<int>((i / size) % size);
    const int o = static_cast<int>((i / (static_cast<std::int64_t>(size) * size)) % out_channels);
    const std::int64_t n = i / (static_cast<std::int64_t>(size) * size * out_channels);
    const std::int64_t token = n * grid * grid + (row / patch) * grid + (col / patch);
    const int k = ((row % patch) * patch + col % patch) * out_channels + o;
    out[i] = tokens_out[token * (patch * patch * out_channels) + k];
  }
}

} // namespace impl

// ---- launchers (declared in kernels.hpp) ---------------------------------------------------

namespace impl {
constexpr int threads_per_block = 256;
inline bf16* as_bf16(std::uint16_t* p) { return reinterpret_cast<bf16*>(p); }
inline int blocks(std::int64_t work) { return blocks_for(work, threads_per_block); }
} // namespace impl

using impl::as_bf16;
using impl::threads_per_block;

void fill_bias_columns(std::uint16_t* out, int ld, int cols, std::int64_t rows, cudaStream_t s) {
  impl::fill_bias_columns_kernel<<<impl::blocks(rows * bias_columns), threads_per_block, 0, s>>>(
      as_bf16(out), ld, cols, rows);
  impl::check_launch("fill_bias_columns_kernel");
}

void prepare_inputs(ConstView x, float* x_in, float t, float* t_out, const int* labels,
                    int* labels_out, cudaStream_t s) {
  const std::int64_t per_sample = x.sample_numel();
  impl::prepare_inputs_kernel<<<impl::blocks(per_sample * x.batch()), threads_per_block, 0, s>>>(
      x.data(), x.batch_stride(), per_sample, static_cast<int>(x.batch()), x_in, t, t_out, labels,
      labels_out);
  impl::check_launch("prepare_inputs_kernel");
}

void timestep_frequencies(const float* t, std::uint16_t* out, int ld, int batch, cudaStream_t s) {
  impl::timestep_frequencies_kernel<<<1, 128, 0, s>>>(t, as_bf16(out), ld, batch);
  impl::check_launch("timestep_frequencies_kernel");
}

void silu_to_bf16(const float* in, int ld_in, std::uint16_t* out, int ld_out, int cols,
                  std::int64_t rows, cudaStream_t s) {
  impl::silu_to_bf16_kernel<<<impl::blocks(rows * cols), threads_per_block, 0, s>>>(
      in, ld_in, as_bf16(out), ld_out, cols, rows);
  impl::check_launch("silu_to_bf16_kernel");
}

void condition(const float* temb, const float* table, const int* labels, std::uint16_t* out,
               int ld_out, int dim, int batch, cudaStream_t s) {
  impl::condition_kernel<<<impl::blocks(static_cast<std::int64_t>(batch) * dim),
                           threads_per_block, 0, s>>>(temb, table, labels, as_bf16(out), ld_out,
                                                      dim, batch);
  impl::check_launch("condition_kernel");
}

void patchify(const float* x, std::uint16_t* patches, int ld, int channels, int size, int patch,
              int batch, cudaStream_t s) {
  const std::int64_t total = static_cast<std::int64_t>(batch) * channels * size * size;
  impl::patchify_kernel<<<impl::blocks(total), threads_per_block, 0, s>>>(
      x, as_bf16(patches), ld, channels, size, patch, batch);
  impl::check_launch("patchify_kernel");
}

void add_position(float* h, const float* pos, int tokens, int dim, std::int64_t rows,
                  cudaStream_t s) {
  impl::add_position_kernel<<<impl::blocks(rows * dim), threads_per_block, 0, s>>>(h, pos, tokens,
                                                                                   dim, rows);
  impl::check_launch("add_position_kernel");
}

void layernorm_modulate(const float* h, const float* mod, int mod_ld, int shift_offset,
                        int scale_offset, std::uint16_t* out, int ld_out, int tokens, int dim,
                        std::int64_t rows, cudaStream_t s, float eps) {
  constexpr int warps = threads_per_block / 32;
  impl::layernorm_modulate_kernel<<<static_cast<unsigned>((rows + warps - 1) / warps),
                                    threads_per_block, 0, s>>>(
      h, mod, mod_ld, shift_offset, scale_offset, as_bf16(out), ld_out, tokens, dim, rows, eps);
  impl::check_launch("layernorm_modulate_kernel");
}

void gated_residual(float* h, const float* y, const float* bias, const float* mod, int mod_ld,
                    int gate_offset, int tokens, int dim, std::int64_t rows, cudaStream_t s) {
  impl::gated_residual_kernel<<<impl::blocks(rows * dim), threads_per_block, 0, s>>>(
      h, y, bias, mod, mod_ld, gate_offset, tokens, dim, rows);
  impl::check_launch("gated_residual_kernel");
}

void bias_gelu(std::uint16_t* x, int ld, const float* bias, int cols, std::int64_t rows,
               cudaStream_t s) {
  impl::bias_gelu_kernel<<<impl::blocks(rows * cols), threads_per_block, 0, s>>>(
      as_bf16(x), ld, bias, cols, rows);
  impl::check_launch("bias_gelu_kernel");
}

void unpatchify(const float* tokens_out, float* out, int out_channels, int size, int patch,
                int batch, cudaStream_t s) {
  const std::int64_t total = static_cast<std::int64_t>(batch) * out_channels * size * size;
  impl::unpatchify_kernel<<<impl::blocks(total), threads_per_block, 0, s>>>(
      tokens_out, out, out_channels, size, patch, batch);
  impl::check_launch("unpatchify_kernel");
}

} // namespace tstitch::cuda::kernels
