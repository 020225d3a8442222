// SPDX-License-Identifier: Apache-2.0
#pragma once

// Host launchers of the CUDA kernels, declared for plain C++ (tests, benchmarks, users composing
// their own models). Their definitions live in src/cuda/*.cuh and are compiled
// in one CUDA translation unit (src/cuda/tstitch_cuda.cu).
//
// Conventions. Pointers are device pointers. bf16 values travel as their raw 16-bit patterns
// (std::uint16_t) so this header needs no CUDA type headers; the kernels read them as
// __nv_bfloat16. Every launcher enqueues on `stream` and returns without waiting; launch errors are
// thrown as tstitch::runtime_error (cudaGetLastError after the launch).
#include <cuda_runtime_api.h>

#include <cstdint>
#include <span>
#include <string_view>

#include "tstitch/core/tensor.hpp"

namespace tstitch::cuda {

/// Which attention implementation a model or a launch uses.
enum class AttentionPath {
  flash,     ///< hand-written flash-attention kernel: online softmax, mma.sync tensor cores
  reference, ///< simple fp32 kernel (any head dimension), the GPU-side check of `flash`
  cudnn,     ///< cuDNN's fused attention (when built with it; see attention_path_available)
};

[[nodiscard]] constexpr std::string_view to_string(AttentionPath path) {
  switch (path) {
  case AttentionPath::flash:
    return "flash";
  case AttentionPath::reference:
    return "reference";
  case AttentionPath::cudnn:
    return "cudnn";
  }
  return "?";
}

namespace kernels {

/// Multi-head self-attention of DiT. qkv: bf16 [batch, tokens, 3, heads, head_dim] (the output of
/// the qkv linear layer: each token's row holds q, then k, then v, each heads x head_dim); out:
/// bf16 [batch, tokens, heads, head_dim]. out = softmax(q k^T / sqrt(head_dim)) v per (sample,
/// head), fp32 accumulation. Throws tstitch::invalid_argument for a head_dim or path the build
/// does not support (naming both).
void attention(const std::uint16_t* qkv, std::uint16_t* out, int batch, int tokens, int heads,
               int head_dim, AttentionPath path, cudaStream_t stream);

/// Whether `attention` supports this path and head dimension in this build.
[[nodiscard]] bool attention_supported(AttentionPath path, int head_dim);

/// The CTA shape of the flash path: `warps` warps, each owning `rows_per_warp` query rows (16 =
/// one tensor-core M tile, or 32 = two, which halves the shared-memory reads per mma because
/// every K and V fragment serves both tiles). A CTA covers warps * rows_per_warp queries.
struct FlashTiling {
  int warps = 4;
  int rows_per_warp = 16;
  friend constexpr bool operator==(FlashTiling, FlashTiling) = default;
};

/// The tilings the flash path is built for (each is a kernel instantiation per head dimension).
/// 4 x 16 runs a software-pipelined key loop; 4 x 32 has no registers left for that.
inline constexpr FlashTiling flash_tilings[] = {{4, 16}, {4, 32}};

/// The tiling `attention` uses for this problem on the current device: 4 x 16 (64 queries per
/// CTA) when 128-query CTAs would fill fewer than 1.5 waves of the multiprocessors at two per SM
/// (short sequences at small batch) or above head dim 96; else 4 x 32 (128 queries).
[[nodiscard]] FlashTiling flash_tiling(int batch, int tokens, int heads, int head_dim);

/// `attention` on the flash path with an explicit tiling (tests and benchmarks compare them);
/// throws tstitch::invalid_argument for a tiling not in flash_tilings.
void attention_flash(const std::uint16_t* qkv, std::uint16_t* out, int batch, int tokens, int heads,
                     int head_dim, FlashTiling tiling, cudaStream_t stream);

// ---- the element-wise kernels of the DiT forward (defined in src/cuda/dit_kernels.cuh) ----
//
// Row-major layouts: the residual stream h is fp32 [rows = batch * tokens, D]. GEMM inputs
// written here are bf16 with a row stride ld = K + bias_columns whose column K holds 1 and columns
// K+1.. hold 0: the weight carries its bias in column K, so the GEMM adds it for free, and ld
// stays a multiple of 8 elements (16 bytes, as the tensor cores like). fill_bias_columns writes
// those constant columns once per buffer; the other kernels only write columns [0, K).
// The row kernels (add_position, layernorm_modulate, residual_layernorm_modulate) access 4 values
// at a time: their dims, row strides and offsets must be multiples of 4 (else invalid_argument).

/// Extra columns of a GEMM input buffer that carry the folded bias.
inline constexpr int bias_columns = 8;

/// Columns [cols, cols + bias_columns) of each row: 1, 0, ..., 0. Needs ld >= cols + bias_columns.
void fill_bias_columns(std::uint16_t* out, int ld, int cols, std::int64_t rows, cudaStream_t s);
/// x (batch-strided) -> x_in (dense); *t_out = t; labels_out[n] = labels[n]: the per-call inputs
/// of a captured forward, in one launch.
void prepare_inputs(ConstView x, float* x_in, float t, float* t_out, const int* labels,
                    int* labels_out, cudaStream_t s);
/// out[n] = [cos(t f_k), sin(t f_k)], f_k = exp(-ln(10000) k / 128), k < 128 (fp32 math);
/// ld >= 256.
void timestep_frequencies(const float* t, std::uint16_t* out, int ld, int batch, cudaStream_t s);
void silu_to_bf16(const float* in, int ld_in, std::uint16_t* out, int ld_out, int cols,
                  std::int64_t rows, cudaStream_t s);
/// out = SiLU(temb + table[labels[n]]) (every consumer of DiT's c starts with SiLU).
void condition(const float* temb, const float* table, const int* labels, std::uint16_t* out,
               int ld_out, int dim, int batch, cudaStream_t s);
/// x [batch, C, S, S] -> patches [batch * T, C*p*p] in the conv weight's (c, i, j) order;
/// S a multiple of p, ld >= C*p*p.
void patchify(const float* x, std::uint16_t* patches, int ld, int channels, int size, int patch,
              int batch, cudaStream_t s);
/// h[r] += pos[r % tokens].
void add_position(float* h, const float* pos, int tokens, int dim, std::int64_t rows,
                  cudaStream_t s);
/// out = LayerNorm(h) * (1 + mod[scale]) + mod[shift] (no affine, eps 1e-6), per sample's mod row.
void layernorm_modulate(const float* h, const float* mod, int mod_ld, int shift_offset,
                        int scale_offset, std::uint16_t* out, int ld_out, int tokens, int dim,
                        std::int64_t rows, cudaStream_t s, float eps = 1e-6f);
/// Where residual_layernorm_modulate's warps read the bias and the sample's gate, shift and
/// scale: `global`, each warp (row) from global memory; `shared`, each block of 8 rows of one
/// sample stages them in shared memory first, so that L2 serves them once per block instead of
/// once per row (needs tokens % 8 == 0 and dim <= 3072). `automatic`: shared where it applies.
/// The results are the same bits either way.
enum class ParamStaging { automatic, global, shared };

/// The seam between two sublayers of a DiT block, in one pass over the residual stream:
///   h += mod[gate] * (y + bias);  out = LayerNorm(h) * (1 + mod[scale]) + mod[shift]
/// y: the sublayer's GEMM output, bf16 [rows, dim]; h is updated in place (fp32) and read once.
void residual_layernorm_modulate(float* h, const std::uint16_t* y, const float* bias,
                                 const float* mod, int mod_ld, int gate_offset, int shift_offset,
                                 int scale_offset, std::uint16_t* out, int ld_out, int tokens,
                                 int dim, std::int64_t rows, cudaStream_t s, float eps = 1e-6f,
                                 ParamStaging staging = ParamStaging::automatic);
/// tokens [batch * T, p*p*Co] -> out [batch, Co, S, S]; S a multiple of p.
void unpatchify(const float* tokens_out, float* out, int out_channels, int size, int patch,
                int batch, cudaStream_t s);

// ---- row movement of per-sample stitching (defined in src/cuda/row_kernels.cuh) ----
//
// Whole samples between two batch-strided views of one sample shape. The row indices travel in
// the kernel arguments (row_indices_per_launch per launch, more rows take several launches): no
// upload, no staging buffer, no host wait, and the launches can be captured in a CUDA graph.
// Throws tstitch::invalid_argument for different sample shapes, too few samples in a view or an
// index outside its view, naming the value.

/// The row indices one launch of gather_rows / scatter_rows carries.
inline constexpr int row_indices_per_launch = 64;

/// dst sample i = src sample rows[i], for i < rows.size().
void gather_rows(ConstView src, std::span<const std::int64_t> rows, View dst, cudaStream_t s);
/// dst sample rows[i] = src sample i, for i < rows.size() (rows must not repeat an index).
void scatter_rows(ConstView src, std::span<const std::int64_t> rows, View dst, cudaStream_t s);

} // namespace kernels
} // namespace tstitch::cuda
