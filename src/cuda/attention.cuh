// SPDX-License-Identifier: Apache-2.0
#pragma once

// Multi-head self-attention of DiT on the GPU: the launchers declared in tstitch/cuda/kernels.hpp
// (attention, attention_flash, flash_tiling, attention_supported) and their kernels. Compiled by
// nvcc in exactly one translation unit (src/cuda/tstitch_cuda.cu). Helper host functions are
// `inline`; the public ones are ordinary external definitions (see the note above flash_tiling).
//
// Three paths:
//   flash      FlashAttention-2 style. One CTA per (sample, head, query tile) of 4 warps, each
//              warp owning 16 or 32 query rows (one or two mma M tiles) for the whole kernel;
//              the CTA shape is a kernels::FlashTiling. The CTA walks the keys in 64-key tiles:
//              S = Q K^T and O += P V on tensor cores (mma.sync m16n8k16 bf16 -> fp32), online
//              softmax in fp32 registers (running row max and row sum), P never leaves registers
//              (the S accumulator fragment is, after bf16 packing, exactly the A fragment of the
//              P V mma). K and V tiles are double-buffered in shared memory and requested one
//              step ahead (one __syncthreads per key tile). At one M tile per warp the loop is
//              software-pipelined: S(i+1) is computed on the tensor cores while the softmax of
//              S(i) runs its exp2 on the special-function units.
//   reference  Plain fp32 math, one CTA per (sample, query, head), two passes over the keys
//              (row max, then exp-weighted V). Slow, obviously correct, any head_dim <= 256: the
//              GPU-side check of `flash`.
//   cudnn      cuDNN's fused flash attention through its graph API, libcudnn opened at run time
//              (src/cuda/cudnn_attention.cuh; built when CMake found the cuDNN 9 headers).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "cudnn_attention.cuh"
#include "tstitch/core/error.hpp"
#include "tstitch/cuda/kernels.hpp"
#include "tstitch/cuda/runtime.hpp"

namespace tstitch::cuda::detail {

using kernels::FlashTiling;

// ---------------------------------------------------------------------------------------------
// Flash kernel: compile-time shape of one CTA for a head dimension HD (a multiple of 8, <= 128).
// ---------------------------------------------------------------------------------------------
inline constexpr int kFlashMinHeadDim = 8;
inline constexpr int kFlashMaxHeadDim = 128;
inline constexpr int kReferenceMaxHeadDim = 256;

// W warps per CTA, each owning MT mma M tiles (16 MT query rows). The tilings offered
// (kernels::flash_tilings, warps x rows per warp) are 4x16 and 4x32; kernels::flash_tiling says
// which one a problem gets.
template <int HD, int W, int MT> struct FlashShape {
  static_assert(HD % 8 == 0 && HD >= kFlashMinHeadDim && HD <= kFlashMaxHeadDim);
  static_assert(W == 4);
  static_assert(MT == 1 || MT == 2);
  // The Q K^T contraction runs in k16 steps, so it is padded to a multiple of 16 (72 -> 80) with
  // zero columns in shared memory; P V's output dimension runs in n8 tiles and needs no padding.
  static constexpr int kPadDim = (HD + 15) / 16 * 16;
  // Shared-memory row stride in elements. kPadDim / 8 is even, so the stride is an odd number of
  // 16-byte chunks: the 8 row addresses of one ldmatrix 8x8 matrix fall in 8 different bank
  // groups (no conflicts), and every row start stays 16-byte aligned for cp.async.
  static constexpr int kStride = kPadDim + 8;
  static constexpr int kWarps = W;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kRowsPerWarp = 16 * MT;
  static constexpr int kBlockM = kRowsPerWarp * kWarps; // queries per CTA
  static constexpr int kBlockN = 64;                    // keys per iteration
  // Registers: the pipelined key loop holds two tiles of S (32 MT each) beside O (MT HD / 2).
  // One M tile per warp: 384 threads per SM, so at most 168 registers per thread; two M tiles:
  // 256 threads per SM, up to 255 registers.
  static constexpr int kMinBlocksPerSm = MT == 1 ? 12 / W : 8 / W;
  // Two live S tiles fit only at one M tile (ptxas, sm_90: 168 registers at HD 64 and 72 without
  // spilling; pipelined with two M tiles, 255 registers and spills from HD 48 on), so two M tiles
  // compute S(it + 1) after P(it) V(it) instead of during the softmax.
  static constexpr bool kPipelined = MT == 1;
  static constexpr int kChunks = HD / 8;        // 16-byte chunks per q/k/v row in global memory
  static constexpr int kQkSteps = kPadDim / 16; // k16 steps of Q K^T
  static constexpr int kSTiles = kBlockN / 8;   // n8 tiles of S per M tile
  static constexpr int kPvSteps = kBlockN / 16; // k16 steps of P V
  static constexpr int kOTiles = HD / 8;        // n8 tiles of O per M tile
  // Q, then two buffers each of K and V (bf16).
  static constexpr int kSmemBytes = (kBlockM + 4 * kBlockN) * kStride * 2;
  // Q's A fragments (MT * kQkSteps * 4 registers) stay in registers across the key loop only
  // at one M tile and HD <= 64; otherwise they are re-read from shared memory for every key tile
  // (+25% ldmatrix in Q K^T at MT 1), which beats spilling.
  static constexpr bool kQInRegisters = MT == 1 && HD <= 64;
};

// ---------------------------------------------------------------------------------------------
// PTX wrappers. `volatile` keeps them ordered with respect to __syncthreads and each other.
// ---------------------------------------------------------------------------------------------
__device__ __forceinline__ std::uint32_t smem_address(const void* pointer) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(pointer));
}

// 16-byte global -> shared copy that bypasses L1. With `valid` false nothing is read and the 16
// destination bytes are zero-filled (src-size 0): rows past the sequence end become zeros, so
// masked keys never multiply garbage (possibly NaN) V rows.
__device__ __forceinline__ void cp_async_16(std::uint32_t dst, const void* src, bool valid) {
  const int src_size = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(src_size));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() {
  asm volatile("cp.async.wait_group 0;\n" ::: "memory");
}
// Waits until at most the most recently committed group is still in flight.
__device__ __forceinline__ void cp_async_wait_one() {
  asm volatile("cp.async.wait_group 1;\n" ::: "memory");
}

__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], std::uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}
__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], std::uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}
__device__ __forceinline__ void ldmatrix_x2_trans(std::uint32_t (&r)[2], std::uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(address));
}

// D = A B + D for one 16x8x16 tile; A row-major (4 regs), B column-major (2 regs), D fp32.
__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const std::uint32_t (&a)[4],
                                               std::uint32_t b0, std::uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
               "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats -> bf16x2 (round to nearest even); `lo` lands in the low half, which mma fragments
// read as the lower column index.
__device__ __forceinline__ std::uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const std::uint32_t*>(&v);
}

// 2^x with the SFU instruction (ex2.approx: ~2 ulp, 2^-inf = +0), independent of -use_fast_math.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ unsigned fresh_block_index() {
  unsigned index;
  asm volatile("mov.u32 %0, %%ctaid.x;\n" : "=r"(index));
  return index;
}

// Enqueues cp.async copies of rows [row0, row0 + ROWS) of one head's q, k or v (global row t at
// `base + t * row_stride`) into a shared tile; rows at or past `tokens` are zero-filled.
template <class S, int ROWS>
__device__ __forceinline__ void load_tile_async(std::uint32_t tile, const __nv_bfloat16* base,
                                                int row0, int tokens, int row_stride) {
  constexpr int kTotal = ROWS * S::kChunks;
  constexpr int kIterations = (kTotal + S::kThreads - 1) / S::kThreads; // compile-time trip count
#pragma unroll
  for (int i = 0; i < kIterations; ++i) {
    const int c = static_cast<int>(threadIdx.x) + i * S::kThreads;
    if (kTotal % S::kThreads != 0 && c >= kTotal)
      break;
    const int r = c / S::kChunks;
    const int chunk = c % S::kChunks;
    const int t = row0 + r;
    const bool valid = t < tokens;
    // 32-bit offset within one sample (the launcher checks tokens * row_stride < 2^31): the
    // per-chunk offsets the compiler hoists out of the key loop then cost one register each.
    const __nv_bfloat16* src = base + ((valid ? t : 0) * row_stride + chunk * 8);
    cp_async_16(tile + static_cast<std::uint32_t>((r * S::kStride + chunk * 8) * 2), src, valid);
  }
}

// ---------------------------------------------------------------------------------------------
// The stages of one key tile of the flash kernel, as device functions on one warp's fragments.
// ---------------------------------------------------------------------------------------------

// S (then P) of one key tile for a warp's MT M tiles, as mma accumulators.
template <class S, int MT> using FlashScores = float[MT][S::kSTiles][4];
// Q's A fragments: every k16 step when they stay in registers, else one step's, reloaded.
template <class S, int MT>
using FlashQFragments = std::uint32_t[MT][S::kQInRegisters ? S::kQkSteps : 1][4];
// The O accumulators: this thread's part of the warp's 16 MT rows x HD output columns.
template <class S, int MT> using FlashOutput = float[MT][S::kOTiles][4];

// Where a CTA's K and V tiles come from (one head of one sample in global memory) and go (two
// shared buffers each, key tile i in buffer i % 2).
struct FlashKeyValueSource {
  std::uint32_t k_smem, v_smem;
  const __nv_bfloat16* k_base;
  const __nv_bfloat16* v_base;
  int tokens, row_stride, kv_tiles;
};

template <class S, int MT> __device__ __forceinline__ void clear_scores(FlashScores<S, MT>& s) {
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int j = 0; j < S::kSTiles; ++j)
      s[mt][j][0] = s[mt][j][1] = s[mt][j][2] = s[mt][j][3] = 0.f;
}

// k16 step ks of S = Q K^T for 16 MT rows x 64 keys, K from the buffer at k_tile. K is stored
// [key][dim], which is B = K^T "col" layout: non-transposed ldmatrix gives B fragments
// directly; one x4 covers two n8 key tiles and serves every M tile of the warp.
template <class S, int MT>
__device__ __forceinline__ void qk_step(FlashScores<S, MT>& s, FlashQFragments<S, MT>& qf,
                                        std::uint32_t q_frag_addr, std::uint32_t k_tile, int ks,
                                        int lane) {
  constexpr std::uint32_t kMTileBytes = 16 * S::kStride * 2;
  const int qi = S::kQInRegisters ? ks : 0;
  if constexpr (!S::kQInRegisters) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
      ldmatrix_x4(qf[mt][0], q_frag_addr + mt * kMTileBytes + ks * 32);
  }
#pragma unroll
  for (int jp = 0; jp < S::kSTiles / 2; ++jp) {
    std::uint32_t kb[4];
    const int key = jp * 16 + (lane & 7) + ((lane >> 4) << 3);
    const int col = ks * 16 + ((lane >> 3) & 1) * 8;
    ldmatrix_x4(kb, k_tile + static_cast<std::uint32_t>((key * S::kStride + col) * 2));
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      mma_bf16_16816(s[mt][2 * jp], qf[mt][qi], kb[0], kb[1]);
      mma_bf16_16816(s[mt][2 * jp + 1], qf[mt][qi], kb[2], kb[3]);
    }
  }
}

// Waits for V(it) and K(it + 1), then requests V(it + 1) and K(it + 2) into the buffers that
// step it - 1 has finished with. kv0 = it * kBlockN, the first key of tile it.
template <class S>
__device__ __forceinline__ void request_next_tiles(const FlashKeyValueSource& kv, int it, int kv0) {
  constexpr std::uint32_t kTileBytes = S::kBlockN * S::kStride * 2; // one K or V buffer
  cp_async_wait_all(); // V(it) and K(it + 1) landed (this thread's part) ...
  __syncthreads();     // ... everyone's, and every warp is done with step it - 1, which read
                       // V(it - 1) and K(it): their buffers take V(it + 1) and K(it + 2).
  if (it + 1 < kv.kv_tiles)
    load_tile_async<S, S::kBlockN>(kv.v_smem + ((it + 1) & 1) * kTileBytes, kv.v_base,
                                   kv0 + S::kBlockN, kv.tokens, kv.row_stride);
  if (it + 2 < kv.kv_tiles)
    load_tile_async<S, S::kBlockN>(kv.k_smem + (it & 1) * kTileBytes, kv.k_base,
                                   kv0 + 2 * S::kBlockN, kv.tokens, kv.row_stride);
  cp_async_commit();
}

// Keys past the sequence end (only in the last tile) get -inf: exp2 turns them into 0.
template <class S, int MT>
__device__ __forceinline__ void mask_keys_past_end(FlashScores<S, MT>& s, int kv0, int tokens,
                                                   int lane) {
  const float kNegInf = -INFINITY;
  if (kv0 + S::kBlockN > tokens) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int j = 0; j < S::kSTiles; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (kv0 + j * 8 + 2 * (lane & 3) + (e & 1) >= tokens)
            s[mt][j][e] = kNegInf;
  }
}

// Online softmax, part 1: the new row max (m_scaled: times scale_log2), and the old sum and O
// rescaled to it.
template <class S, int MT>
__device__ __forceinline__ void
rescale_to_new_max(const FlashScores<S, MT>& s, float (&row_max)[MT][2], float (&row_sum)[MT][2],
                   FlashOutput<S, MT>& o, float (&m_scaled)[MT][2], float scale_log2) {
  const float kNegInf = -INFINITY;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float m = row_max[mt][r];
#pragma unroll
      for (int j = 0; j < S::kSTiles; ++j)
        m = fmaxf(m, fmaxf(s[mt][j][2 * r], s[mt][j][2 * r + 1]));
      // The 4 threads of a quad share the row.
      m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));
      m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 2));
      // Key 0 is always valid, so m is finite from the first tile on; the guard keeps a fully
      // masked row from computing (-inf) - (-inf) = NaN should that ever change.
      m_scaled[mt][r] = (m == kNegInf) ? 0.f : m * scale_log2;
      const float correction = fast_exp2(row_max[mt][r] * scale_log2 - m_scaled[mt][r]);
      row_max[mt][r] = m;
      row_sum[mt][r] *= correction;
#pragma unroll
      for (int j = 0; j < S::kOTiles; ++j) {
        o[mt][j][2 * r] *= correction;
        o[mt][j][2 * r + 1] *= correction;
      }
    }
  }
}

// Online softmax, part 2, for the n8 tiles j = ks, ks + kQkSteps, ... of S:
// P = exp2(S * scale * log2(e) - max), added to this thread's row sums.
template <class S, int MT>
__device__ __forceinline__ void exponentiate_scores(FlashScores<S, MT>& s, int ks,
                                                    const float (&m_scaled)[MT][2],
                                                    float (&row_sum)[MT][2], float scale_log2) {
#pragma unroll
  for (int j = ks; j < S::kSTiles; j += S::kQkSteps)
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float p = fast_exp2(fmaf(s[mt][j][e], scale_log2, -m_scaled[mt][e >> 1]));
        s[mt][j][e] = p;
        row_sum[mt][e >> 1] += p;
      }
}

// O += P V for the V tile at v_tile. The P accumulators of n8 tiles 2kk and 2kk+1, packed to
// bf16, are the A fragment of k16 step kk. V is stored [key][dim] (row-major k x n), so B comes
// from ldmatrix.trans; each V fragment serves every M tile of the warp.
template <class S, int MT>
__device__ __forceinline__ void accumulate_pv(FlashOutput<S, MT>& o, const FlashScores<S, MT>& p,
                                              std::uint32_t v_tile, int lane) {
#pragma unroll
  for (int kk = 0; kk < S::kPvSteps; ++kk) {
    std::uint32_t pa[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      pa[mt][0] = pack_bf16x2(p[mt][2 * kk][0], p[mt][2 * kk][1]);
      pa[mt][1] = pack_bf16x2(p[mt][2 * kk][2], p[mt][2 * kk][3]);
      pa[mt][2] = pack_bf16x2(p[mt][2 * kk + 1][0], p[mt][2 * kk + 1][1]);
      pa[mt][3] = pack_bf16x2(p[mt][2 * kk + 1][2], p[mt][2 * kk + 1][3]);
    }
#pragma unroll
    for (int jp = 0; jp < S::kOTiles / 2; ++jp) {
      std::uint32_t vb[4];
      const int key = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
      const int col = jp * 16 + (lane >> 4) * 8;
      ldmatrix_x4_trans(vb, v_tile + static_cast<std::uint32_t>((key * S::kStride + col) * 2));
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        mma_bf16_16816(o[mt][2 * jp], pa[mt], vb[0], vb[1]);
        mma_bf16_16816(o[mt][2 * jp + 1], pa[mt], vb[2], vb[3]);
      }
    }
    if constexpr (S::kOTiles % 2 != 0) { // HD = 72 etc.: the last n8 tile alone
      std::uint32_t vb[2];
      const int key = kk * 16 + (lane & 15);
      const int col = (S::kOTiles - 1) * 8;
      ldmatrix_x2_trans(vb, v_tile + static_cast<std::uint32_t>((key * S::kStride + col) * 2));
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
        mma_bf16_16816(o[mt][S::kOTiles - 1], pa[mt], vb[0], vb[1]);
    }
  }
}

// grid.x = batch * heads * q_tiles (q tiles of one (sample, head) adjacent, so they share K/V in
// L2); block = 32 W threads; dynamic shared memory FlashShape<HD, W, MT>::kSmemBytes.
// Longer than our usual limit: the prologue, the key loop and the epilogue share register-resident
// accumulators (o, running max and sum); the key loop's stages are the device functions above.
template <int HD, int W, int MT>
__global__ void __launch_bounds__(FlashShape<HD, W, MT>::kThreads,
                                  FlashShape<HD, W, MT>::kMinBlocksPerSm)
    flash_attention_kernel(const __nv_bfloat16* __restrict__ qkv, __nv_bfloat16* __restrict__ out,
                           int tokens, int heads, int q_tiles, float scale_log2) {
  using S = FlashShape<HD, W, MT>;
  using Scores = FlashScores<S, MT>; // S (then P) of one key tile, as mma accumulators
  constexpr std::uint32_t kTileBytes = S::kBlockN * S::kStride * 2; // one K or V buffer
  extern __shared__ __align__(16) unsigned char flash_smem[];
  // Layout: Q | K buffer 0 | K buffer 1 | V buffer 0 | V buffer 1. Key tile i lives in buffer i
  // % 2.
  __nv_bfloat16* const sQ = reinterpret_cast<__nv_bfloat16*>(flash_smem);
  const std::uint32_t sQ_addr = smem_address(sQ);
  const std::uint32_t sK_addr = sQ_addr + S::kBlockM * S::kStride * 2;
  const std::uint32_t sV_addr = sK_addr + 2 * kTileBytes;

  const int tid = static_cast<int>(threadIdx.x);
  const int warp = tid >> 5;
  const int lane = tid & 31;
  const int q_tile = static_cast<int>(blockIdx.x % static_cast<unsigned>(q_tiles));
  const std::int64_t bh = blockIdx.x / static_cast<unsigned>(q_tiles);
  const int h = static_cast<int>(bh % heads);
  const std::int64_t b = bh / heads;
  const int row_stride = 3 * heads * HD;
  const __nv_bfloat16* const q_base =
      qkv + b * tokens * row_stride + static_cast<std::int64_t>(h) * HD;
  const __nv_bfloat16* const k_base = q_base + static_cast<std::int64_t>(heads) * HD;
  const __nv_bfloat16* const v_base = k_base + static_cast<std::int64_t>(heads) * HD;
  const int q0 = q_tile * S::kBlockM;
  const int kv_tiles = (tokens + S::kBlockN - 1) / S::kBlockN;

  // Zero the contraction padding (columns HD..kPadDim-1, exactly one 16-byte chunk when present)
  // of every Q row and both K buffers once; cp.async never writes there afterwards.
  if constexpr (S::kPadDim != HD) {
    for (int r = tid; r < S::kBlockM + 2 * S::kBlockN; r += S::kThreads)
      *reinterpret_cast<uint4*>(sQ + r * S::kStride + HD) = make_uint4(0u, 0u, 0u, 0u);
  }

  // Prologue: group 1 = Q and K(0); group 2 = V(0) and K(1).
  load_tile_async<S, S::kBlockM>(sQ_addr, q_base, q0, tokens, row_stride);
  load_tile_async<S, S::kBlockN>(sK_addr, k_base, 0, tokens, row_stride);
  cp_async_commit();
  load_tile_async<S, S::kBlockN>(sV_addr, v_base, 0, tokens, row_stride);
  if (kv_tiles > 1)
    load_tile_async<S, S::kBlockN>(sK_addr + kTileBytes, k_base, S::kBlockN, tokens, row_stride);
  cp_async_commit();
  cp_async_wait_one(); // group 1 landed (this thread's part) ...
  __syncthreads();     // ... everyone's

  // This warp's rows [warp_row0, warp_row0 + 16 MT): M tile mt is rows warp_row0 + 16 mt + 0..15.
  // Their A fragments (rows lane % 16, column half lane / 16 of each k16 step) stay in registers
  // for the whole key loop when they fit (see kQInRegisters).
  const int warp_row0 = warp * S::kRowsPerWarp;
  const std::uint32_t q_frag_addr =
      sQ_addr +
      static_cast<std::uint32_t>(((warp_row0 + (lane & 15)) * S::kStride + (lane >> 4) * 8) * 2);
  constexpr std::uint32_t kMTileBytes = 16 * S::kStride * 2;
  FlashQFragments<S, MT> qf;
  if constexpr (S::kQInRegisters) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int ks = 0; ks < S::kQkSteps; ++ks)
        ldmatrix_x4(qf[mt][ks], q_frag_addr + mt * kMTileBytes + ks * 32);
  }

  FlashKeyValueSource kv{};
  kv.k_smem = sK_addr;
  kv.v_smem = sV_addr;
  kv.k_base = k_base;
  kv.v_base = v_base;
  kv.tokens = tokens;
  kv.row_stride = row_stride;
  kv.kv_tiles = kv_tiles;
  const auto clear = [](Scores& s) { clear_scores<S, MT>(s); };
  const auto qk_step = [&](Scores& s, std::uint32_t k_tile, int ks) {
    detail::qk_step<S, MT>(s, qf, q_frag_addr, k_tile, ks, lane);
  };

  // Accumulator fragment layout (m16n8): this thread owns rows g = lane/4 and g + 8 of each M
  // tile, columns 2 * (lane % 4) + {0, 1} of each n8 tile; elements [0..1] are row g, [2..3]
  // row g + 8.
  FlashOutput<S, MT> o;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int j = 0; j < S::kOTiles; ++j)
      o[mt][j][0] = o[mt][j][1] = o[mt][j][2] = o[mt][j][3] = 0.f;
  const float kNegInf = -INFINITY; // std::numeric_limits is host-only without relaxed constexpr
  float row_max[MT][2];            // raw (unscaled) scores
  float row_sum[MT][2];            // this thread's partial sum; the quad reduces at the end
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    row_max[mt][0] = row_max[mt][1] = kNegInf;
    row_sum[mt][0] = row_sum[mt][1] = 0.f;
  }

  // One key tile: S(it) (in `cur`, computed the step before) becomes P, the O accumulators are
  // rescaled, P V(it) is added and S(it + 1) = Q K(it+1)^T is computed into `next` (not in the
  // last step, has_next false). Software pipelining (kPipelined): the mma of S(it + 1) are issued
  // between the softmax's exp2 instructions, so the tensor cores work while the special-function
  // units do.
  // Shared memory at entry: V(it) and K(it + 1) were requested one step earlier.
  const auto step = [&](auto has_next, int it, Scores& cur, Scores& next) {
    constexpr bool kHasNext = decltype(has_next)::value;
    const int kv0 = it * S::kBlockN;
    request_next_tiles<S>(kv, it, kv0);
    if constexpr (!kHasNext)
      mask_keys_past_end<S, MT>(cur, kv0, tokens, lane);
    float m_scaled[MT][2];
    rescale_to_new_max<S, MT>(cur, row_max, row_sum, o, m_scaled, scale_log2);
    // n8 tile j is exponentiated right after k16 step j % kQkSteps of the next tile's Q K^T is
    // issued (kQkSteps <= kSTiles: HD <= 128).
    const std::uint32_t next_k_tile = sK_addr + ((it + 1) & 1) * kTileBytes;
    if constexpr (kHasNext && S::kPipelined)
      clear(next);
#pragma unroll
    for (int ks = 0; ks < S::kQkSteps; ++ks) {
      if constexpr (kHasNext && S::kPipelined)
        qk_step(next, next_k_tile, ks);
      exponentiate_scores<S, MT>(cur, ks, m_scaled, row_sum, scale_log2);
    }
    accumulate_pv<S, MT>(o, cur, sV_addr + (it & 1) * kTileBytes, lane);
    // Without pipelining, S(it + 1) is computed after P(it) is dead, in the same registers.
    if constexpr (kHasNext && !S::kPipelined) {
      clear(next);
#pragma unroll
      for (int ks = 0; ks < S::kQkSteps; ++ks)
        qk_step(next, next_k_tile, ks);
    }
  };

  // S(0), then the key tiles two at a time so that `cur` and `next` swap roles by name, not by
  // copying registers; the last tile is the step without a next one.
  Scores s_a, s_b;
  clear(s_a);
#pragma unroll
  for (int ks = 0; ks < S::kQkSteps; ++ks)
    qk_step(s_a, sK_addr, ks);
  using Next = std::true_type;
  using Last = std::false_type;
  int it = 0;
  for (; it + 2 < kv_tiles; it += 2) {
    step(Next{}, it, s_a, s_b);
    step(Next{}, it + 1, s_b, s_a);
  }
  if (it + 2 == kv_tiles) {
    step(Next{}, it, s_a, s_b);
    step(Last{}, it + 1, s_b, s_a);
  } else {
    step(Last{}, it, s_a, s_b);
  }

  // Epilogue: finish the row sums across the quad, normalise, and stage the bf16 rows in this
  // warp's own 16 MT rows of sQ (no other warp ever reads them), so the global stores are whole
  // 16-byte chunks of each output row.
  __nv_bfloat16* const sO = sQ + warp_row0 * S::kStride;
  const int g = lane >> 2;
  const int tq = lane & 3;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    float inv[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float sum = row_sum[mt][r];
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      inv[r] = sum > 0.f ? 1.f / sum : 0.f;
    }
    __nv_bfloat16* const rows = sO + 16 * mt * S::kStride;
#pragma unroll
    for (int j = 0; j < S::kOTiles; ++j) {
      *reinterpret_cast<std::uint32_t*>(rows + g * S::kStride + j * 8 + 2 * tq) =
          pack_bf16x2(o[mt][j][0] * inv[0], o[mt][j][1] * inv[0]);
      *reinterpret_cast<std::uint32_t*>(rows + (g + 8) * S::kStride + j * 8 + 2 * tq) =
          pack_bf16x2(o[mt][j][2] * inv[1], o[mt][j][3] * inv[1]);
    }
  }
  __syncwarp();
  // The output position is recomputed from a fresh (volatile, so not CSE'd) read of the block
  // index instead of keeping b, h and q0 live across the key loop: at HD 72 those few registers
  // were what ptxas spilled.
  const unsigned block = fresh_block_index();
  const unsigned bh_e = block / static_cast<unsigned>(q_tiles);
  const int q_first =
      static_cast<int>(block % static_cast<unsigned>(q_tiles)) * S::kBlockM + warp_row0;
  const std::int64_t b_e = bh_e / static_cast<unsigned>(heads);
  const int h_e = static_cast<int>(bh_e % static_cast<unsigned>(heads));
  const auto tokens_e = static_cast<std::int64_t>(static_cast<unsigned>(tokens)); // tokens >= 1
  __nv_bfloat16* const out_rows = out + ((b_e * tokens_e + q_first) * heads + h_e) * HD;
#pragma unroll
  for (int c = lane; c < S::kRowsPerWarp * S::kChunks; c += 32) {
    const int r = c / S::kChunks;
    const int chunk = c % S::kChunks;
    if (q_first + r < tokens)
      *reinterpret_cast<uint4*>(out_rows + static_cast<std::int64_t>(r) * heads * HD + chunk * 8) =
          *reinterpret_cast<const uint4*>(sO + r * S::kStride + chunk * 8);
  }
}

// Raises the dynamic shared memory limit of flash_attention_kernel<HD, W, MT> above the default
// 48 KB, once per device (the attribute is per device; a bit per ordinal remembers it was done).
template <int HD, int W, int MT> void configure_flash_kernel() {
  using S = FlashShape<HD, W, MT>;
  if constexpr (S::kSmemBytes > 48 * 1024) {
    static std::atomic<std::uint64_t> done{0};
    int device = 0;
    TSTITCH_CUDA_CHECK(cudaGetDevice(&device));
    const std::uint64_t bit = device < 64 ? (std::uint64_t{1} << device) : 0;
    if (bit == 0 || (done.load(std::memory_order_acquire) & bit) == 0) {
      TSTITCH_CUDA_CHECK(cudaFuncSetAttribute(flash_attention_kernel<HD, W, MT>,
                                              cudaFuncAttributeMaxDynamicSharedMemorySize,
                                              S::kSmemBytes));
      done.fetch_or(bit, std::memory_order_acq_rel);
    }
  }
}

template <int HD, int W, int MT>
void launch_flash_shape(const __nv_bfloat16* qkv, __nv_bfloat16* out, int batch, int tokens,
                        int heads, cudaStream_t stream) {
  using S = FlashShape<HD, W, MT>;
  configure_flash_kernel<HD, W, MT>();
  const std::int64_t q_tiles = (tokens + S::kBlockM - 1) / S::kBlockM;
  const std::int64_t blocks = q_tiles * batch * heads;
  if (static_cast<std::int64_t>(tokens) * 3 * heads * HD > std::numeric_limits<int>::max())
    throw_invalid_argument(
        "attention tokens * 3 * heads * head_dim",
        static_cast<std::int64_t>(tokens) * 3 * heads * HD,
        "must be below 2^31 for the flash path (32-bit offsets within a sample)");
  if (blocks > std::numeric_limits<int>::max())
    throw_invalid_argument("attention batch * heads * query tiles", blocks,
                           "must fit the grid (at most 2^31 - 1 blocks)");
  const float scale_log2 =
      static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(HD)));
  flash_attention_kernel<HD, W, MT>
      <<<static_cast<unsigned>(blocks), S::kThreads, S::kSmemBytes, stream>>>(
          qkv, out, tokens, heads, static_cast<int>(q_tiles), scale_log2);
  TSTITCH_CUDA_CHECK(cudaGetLastError());
}

// The tilings of kernels::flash_tilings, one kernel instantiation each per head dimension.
template <int HD>
void launch_flash(const __nv_bfloat16* qkv, __nv_bfloat16* out, int batch, int tokens, int heads,
                  FlashTiling tiling, cudaStream_t stream) {
  if (tiling == FlashTiling{4, 16})
    launch_flash_shape<HD, 4, 1>(qkv, out, batch, tokens, heads, stream);
  else if (tiling == FlashTiling{4, 32})
    launch_flash_shape<HD, 4, 2>(qkv, out, batch, tokens, heads, stream);
  else
    throw_invalid_argument("attention flash tiling (warps x rows per warp)",
                           tstitch::detail::concat(tiling.warps, "x", tiling.rows_per_warp),
                           "is not offered (kernels::flash_tilings: 4x16, 4x32)");
}

// ---------------------------------------------------------------------------------------------
// Reference kernel: one CTA of 256 threads per (sample, query, head); blockIdx.x enumerates
// (b, t, h) in the output's order, so out row = blockIdx.x.
// ---------------------------------------------------------------------------------------------
inline constexpr int kReferenceThreads = 256;

__device__ __forceinline__ float block_reduce(float value, bool is_max, float* scratch) {
  // scratch: 32 floats. Warp reduce, then warp 0 reduces the warp results; everyone gets it.
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float other = __shfl_xor_sync(0xffffffffu, value, offset);
    value = is_max ? fmaxf(value, other) : value + other;
  }
  const int warp = static_cast<int>(threadIdx.x) >> 5;
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int warps = static_cast<int>(blockDim.x) >> 5;
  __syncthreads(); // scratch may still be read from a previous reduction
  if (lane == 0)
    scratch[warp] = value;
  __syncthreads();
  if (warp == 0) {
    value = lane < warps ? scratch[lane] : (is_max ? -INFINITY : 0.f);
    for (int offset = 16; offset > 0; offset >>= 1) {
      const float other = __shfl_xor_sync(0xffffffffu, value, offset);
      value = is_max ? fmaxf(value, other) : value + other;
    }
    if (lane == 0)
      scratch[0] = value;
  }
  __syncthreads();
  return scratch[0];
}

__global__ void __launch_bounds__(kReferenceThreads)
    reference_attention_kernel(const __nv_bfloat16* __restrict__ qkv,
                               __nv_bfloat16* __restrict__ out, int tokens, int heads, int head_dim,
                               float scale) {
  __shared__ float q_row[kReferenceMaxHeadDim];
  __shared__ float p_chunk[kReferenceThreads];
  __shared__ float scratch[32];
  const int tid = static_cast<int>(threadIdx.x);
  const std::int64_t row = blockIdx.x;
  const int h = static_cast<int>(row % heads);
  const std::int64_t bt = row / heads;
  const std::int64_t t = bt % tokens;
  const std::int64_t b = bt / tokens;
  const std::int64_t row_stride = 3LL * heads * head_dim;
  const __nv_bfloat16* const base =
      qkv + b * tokens * row_stride + static_cast<std::int64_t>(h) * head_dim;
  const std::int64_t k_offset = static_cast<std::int64_t>(heads) * head_dim;
  const std::int64_t v_offset = 2 * k_offset;

  for (int d = tid; d < head_dim; d += kReferenceThreads)
    q_row[d] = __bfloat162float(base[t * row_stride + d]);
  __syncthreads();

  auto score = [&](int key) {
    const __nv_bfloat16* k = base + key * row_stride + k_offset;
    float acc = 0.f;
    for (int d = 0; d < head_dim; ++d)
      acc = fmaf(q_row[d], __bfloat162float(k[d]), acc);
    return acc * scale;
  };

  // Pass 1: the row max.
  float m = -INFINITY;
  for (int key = tid; key < tokens; key += kReferenceThreads)
    m = fmaxf(m, score(key));
  m = block_reduce(m, true, scratch);

  // Pass 2: chunks of 256 keys; each thread computes one p = exp(s - m), then thread d sums
  // p * v[d] over the chunk.
  float sum = 0.f;
  float acc = 0.f;
  for (int key0 = 0; key0 < tokens; key0 += kReferenceThreads) {
    const int key = key0 + tid;
    const float p = key < tokens ? expf(score(key) - m) : 0.f;
    sum += p;
    p_chunk[tid] = p;
    __syncthreads();
    if (tid < head_dim) {
      const int count = min(kReferenceThreads, tokens - key0);
      for (int j = 0; j < count; ++j)
        acc =
            fmaf(p_chunk[j], __bfloat162float(base[(key0 + j) * row_stride + v_offset + tid]), acc);
    }
    __syncthreads();
  }
  sum = block_reduce(sum, false, scratch);
  if (tid < head_dim)
    out[row * head_dim + tid] = __float2bfloat16_rn(acc / sum);
}

inline void launch_reference(const __nv_bfloat16* qkv, __nv_bfloat16* out, int batch, int tokens,
                             int heads, int head_dim, cudaStream_t stream) {
  const std::int64_t blocks = static_cast<std::int64_t>(batch) * tokens * heads;
  if (blocks > std::numeric_limits<int>::max())
    throw_invalid_argument("attention batch * tokens * heads (reference path)", blocks,
                           "must be at most 2^31 - 1");
  reference_attention_kernel<<<static_cast<unsigned>(blocks), kReferenceThreads, 0, stream>>>(
      qkv, out, tokens, heads, head_dim,
      static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim))));
  TSTITCH_CUDA_CHECK(cudaGetLastError());
}

// The checks every path shares (the path-specific ones follow in each).
inline void check_attention_arguments(const std::uint16_t* qkv, const std::uint16_t* out, int batch,
                                      int tokens, int heads) {
  require(batch >= 1, "attention batch", batch, "must be at least 1");
  require(tokens >= 1, "attention tokens", tokens, "must be at least 1");
  require(heads >= 1, "attention heads", heads, "must be at least 1");
  require(qkv != nullptr, "attention qkv", "nullptr", "must be a device pointer");
  require(out != nullptr, "attention out", "nullptr", "must be a device pointer");
}

inline bool flash_head_dim_ok(int head_dim) {
  return head_dim % 8 == 0 && head_dim >= kFlashMinHeadDim && head_dim <= kFlashMaxHeadDim;
}

} // namespace tstitch::cuda::detail

namespace tstitch::cuda::kernels {

// The launchers declared in kernels.hpp are deliberately NOT `inline`: an inline definition
// emits no symbol in a translation unit that does not call it, and the plain C++ callers (tests,
// benchmarks, the DiT) link against the one TU, tstitch_cuda.cu, that includes this header. Being
// included by exactly that one TU keeps these external definitions ODR-safe.
FlashTiling flash_tiling(int batch, int tokens, int heads, int head_dim) {
  int device = 0, multiprocessors = 0;
  TSTITCH_CUDA_CHECK(cudaGetDevice(&device));
  TSTITCH_CUDA_CHECK(
      cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, device));
  const std::int64_t wide_ctas = static_cast<std::int64_t>(batch) * heads * ((tokens + 127) / 128);
  // Two 128-query CTAs fit an SM; below 1.5 such waves, halving the CTAs evens out the SMs' loads
  // (S/2 at 8 images: 192 CTAs = 1 or 2 per SM -> 384 = 2 or 3 half-size ones).
  if (2 * wide_ctas < 3 * static_cast<std::int64_t>(multiprocessors))
    return {4, 16};
  // ptxas (sm_90): two M tiles per warp use 255 registers and spill a little up to head dim 96
  // (4-32 bytes; yet 4x32 is the faster tiling at 64 and 72 on the H200) and much more from 104
  // on (48-140 bytes stored, 228-652 loaded).
  return head_dim <= 96 ? FlashTiling{4, 32} : FlashTiling{4, 16};
}

bool attention_supported(AttentionPath path, int head_dim) {
  switch (path) {
  case AttentionPath::flash:
    return detail::flash_head_dim_ok(head_dim);
  case AttentionPath::reference:
    return head_dim >= 1 && head_dim <= detail::kReferenceMaxHeadDim;
  case AttentionPath::cudnn:
    return detail::cudnn_attention_supported(head_dim);
  }
  return false;
}

void attention_flash(const std::uint16_t* qkv, std::uint16_t* out, int batch, int tokens, int heads,
                     int head_dim, FlashTiling tiling, cudaStream_t stream) {
  namespace ad = detail;
  ad::check_attention_arguments(qkv, out, batch, tokens, heads);
  require(attention_supported(AttentionPath::flash, head_dim), "attention head_dim", head_dim,
          "the flash path supports multiples of 8 from 8 to 128");
  // cp.async and the output stores move 16-byte chunks; with head_dim % 8 == 0 every row offset
  // is a multiple of 16 bytes, so only the base pointers need checking.
  require(reinterpret_cast<std::uintptr_t>(qkv) % 16 == 0, "attention qkv address",
          reinterpret_cast<std::uintptr_t>(qkv), "must be 16-byte aligned for the flash path");
  require(reinterpret_cast<std::uintptr_t>(out) % 16 == 0, "attention out address",
          reinterpret_cast<std::uintptr_t>(out), "must be 16-byte aligned for the flash path");
  const auto* in = reinterpret_cast<const __nv_bfloat16*>(qkv);
  auto* dst = reinterpret_cast<__nv_bfloat16*>(out);
  switch (head_dim / 8) {
#define TSTITCH_FLASH_CASE(N)                                                                      \
  case N:                                                                                          \
    ad::launch_flash<8 * (N)>(in, dst, batch, tokens, heads, tiling, stream);                      \
    return;
    TSTITCH_FLASH_CASE(1)
    TSTITCH_FLASH_CASE(2)
    TSTITCH_FLASH_CASE(3)
    TSTITCH_FLASH_CASE(4)
    TSTITCH_FLASH_CASE(5)
    TSTITCH_FLASH_CASE(6)
    TSTITCH_FLASH_CASE(7)
    TSTITCH_FLASH_CASE(8)
    TSTITCH_FLASH_CASE(9)
    TSTITCH_FLASH_CASE(10)
    TSTITCH_FLASH_CASE(11)
    TSTITCH_FLASH_CASE(12)
    TSTITCH_FLASH_CASE(13)
    TSTITCH_FLASH_CASE(14)
    TSTITCH_FLASH_CASE(15)
    TSTITCH_FLASH_CASE(16)
#undef TSTITCH_FLASH_CASE
  default:
    break;
  }
  throw_invalid_argument("attention head_dim", head_dim, "is not supported by the flash path");
}

void attention(const std::uint16_t* qkv, std::uint16_t* out, int batch, int tokens, int heads,
               int head_dim, AttentionPath path, cudaStream_t stream) {
  namespace ad = detail;
  ad::check_attention_arguments(qkv, out, batch, tokens, heads);
  const auto* in = reinterpret_cast<const __nv_bfloat16*>(qkv);
  auto* dst = reinterpret_cast<__nv_bfloat16*>(out);
  switch (path) {
  case AttentionPath::cudnn:
    ad::cudnn_attention(qkv, out, batch, tokens, heads, head_dim, stream);
    return;
  case AttentionPath::reference:
    require(attention_supported(path, head_dim), "attention head_dim", head_dim,
            "the reference path supports 1..256");
    ad::launch_reference(in, dst, batch, tokens, heads, head_dim, stream);
    return;
  case AttentionPath::flash:
    attention_flash(qkv, out, batch, tokens, heads, head_dim,
                    flash_tiling(batch, tokens, heads, head_dim), stream);
    return;
  }
  throw_invalid_argument("attention path", static_cast<int>(path), "is unknown");
}

} // namespace tstitch::cuda::kernels
