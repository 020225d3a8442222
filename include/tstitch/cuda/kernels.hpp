// SPDX-License-Identifier: Apache-2.0
#pragma once

// Host launchers of the CUDA kernels, declared for plain C++ (tests, benchmarks, users composing
// their own models). Their definitions live in the .cuh headers beside this one and are compiled
// in one CUDA translation unit (tstitch/cuda/tstitch_cuda.cu).
//
// Conventions. Pointers are device pointers. bf16 values travel as their raw 16-bit patterns
// (std::uint16_t) so this header needs no CUDA type headers; the kernels read them as
// __nv_bfloat16. Every launcher enqueues on `stream` and returns without waiting; launch errors are
// thrown as tstitch::runtime_error (cudaGetLastError after the launch).
#include <cuda_runtime_api.h>

#include <cstdint>
#include <string_view>

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

} // namespace kernels
} // namespace tstitch::cuda
