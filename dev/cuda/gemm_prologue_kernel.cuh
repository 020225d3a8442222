// SPDX-License-Identifier: Apache-2.0
#pragma once
// Kernel lab: a DiT block's input GEMM (qkv or fc1) with the LayerNorm-modulate in its prologue
// and the bias (+ tanh-GELU) in its epilogue, on ordinary 2-D tiles:
//   out = bf16( act( LNmod(h) W^T + b ) ),  LNmod(h) = LayerNorm(h) * (1 + scale) + shift
// h fp32 [rows, K] (the residual stream, K = hidden), W bf16 [N, K], b fp32 [N], out bf16 [rows,
// N]; shift and scale are the rows of the sample's adaLN modulation (mod[row / tokens] at their
// offsets); LayerNorm without affine, eps 1e-6; act identity (qkv) or GELU-tanh (fc1).
//
// One CTA per 64 x BN output tile (BN 64 or 128), 2 x BN/32 warps of 32 x 32 each (mma.sync
// m16n8k16, bf16 in, fp32 accumulators). W goes through a 3-stage cp.async pipeline of k-tiles of
// 32. A cannot: it arrives as fp32 h and must be normalised first, so each thread loads its part
// of the next k-tile of h (and of shift and scale) to registers before the current tile's mma,
// and afterwards normalises it with the row's mean and rstd, rounds to bf16 (as layernorm_modulate
// does) and stores it to the other of two A slots. The rows' statistics are taken by the CTA
// before the main loop, one warp per row, in the library's order of operations (see the body),
// while the first W tiles are in flight. With Params::stats set (the lab's version 3) the CTAs
// read each row's (mean, rstd) from there instead, written beforehand by row_stats_kernel.
//
// Shared memory: 20,992 bytes at BN 64, 33,280 at 128, under the 48 KB a launch gets without
// opting in; registers (ptxas, sm_90a): 156-158 and 116-118, no spills, so 3 CTAs (12 warps) or
// 2 CTAs (16 warps) fit an SM. Unlike a CTA that owns whole rows, W is read once per row block of
// 64, not once per 16 rows; the price is that the statistics of a row block are taken once per
// column tile (N / BN times, from L2: 2 x 64 x K x 4 bytes each).
//
// The body is __host__ __device__: on the host (lab_gemm_prologue --emulate) it runs on the lab's
// CPU warp emulator (emulate.cuh), one std::thread per lane, every access bounds-checked.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "emulate.cuh"
#include "lane_ops.cuh"
#include "tstitch/core/error.hpp"
#include "tstitch/cuda/runtime.hpp"

#if defined(__CUDA_ARCH__)
#define GEMM_PROLOGUE_UNROLL _Pragma("unroll")
#else
#define GEMM_PROLOGUE_UNROLL
#endif

namespace lab::gemm_prologue {

inline constexpr int kBM = 64;    // rows per CTA
inline constexpr int kBK = 32;    // k per tile: 64 bytes of a bf16 row, four 16-byte chunks
inline constexpr int kStages = 3; // W pipeline depth
inline constexpr int kASlots = 2; // A is written by the threads themselves: double buffer

template <int BN> struct Tile {
  static_assert(BN == 64 || BN == 128, "64 x 64 or 64 x 128 tiles");
  static constexpr int kWarpsN = BN / 32;
  static constexpr int kWarps = 2 * kWarpsN; // warp (m, n) = (warp % 2, warp / 2), 32 x 32 each
  static constexpr int kThreads = 32 * kWarps;
  static constexpr std::uint32_t kABytes = kBM * kBK * 2;
  static constexpr std::uint32_t kWBytes = BN * kBK * 2;
  static constexpr std::uint32_t kWOffset = kASlots * kABytes;
  static constexpr std::uint32_t kStatsOffset = kWOffset + kStages * kWBytes; // mean, rstd
  static constexpr int kSmemBytes = static_cast<int>(kStatsOffset) + 2 * kBM * 4;
  static constexpr int kAVectors = kBM * kBK / 4 / kThreads; // float4 of h per thread per tile
  static constexpr int kWChunks = BN * 4 / kThreads;         // 16-byte W chunks per thread
  static_assert(kAVectors * kThreads * 4 == kBM * kBK && kWChunks * kThreads == BN * 4);
};

/// What the kernel reads and writes (device pointers; host ones under the emulation).
struct Params {
  const float* h;           // [rows, k]
  const __nv_bfloat16* w;   // [n, k]
  const float* bias;        // [n]
  const float* mod;         // [rows / tokens, mod_ld]
  int mod_ld, shift, scale; // offsets of shift and scale in a row of mod
  __nv_bfloat16* out;       // [rows, n]
  int k, n, tokens;
  std::int64_t rows;
  float eps;
  // Version 3: the rows' (mean, rstd) from row_stats_kernel, float2 [rows]; nullptr where the
  // CTAs take them themselves (version 2).
  const float* stats;
};

// ---- warp instructions and memory accesses (device: PTX; host: the emulation) -------------------

// Those whose device form is the same in the other lab kernels are in lane_ops.cuh.
using lane::cp_async_wait;
using lane::mma_16816;
using lane::pack_bf16x2;
using lane::shfl_xor;
using lane::sync_block;

__host__ __device__ __forceinline__ std::uint32_t smem_u32(const unsigned char* p) {
#if defined(__CUDA_ARCH__)
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
#else
  return static_cast<std::uint32_t>(p - emu::self.smem);
#endif
}

// 16 bytes global -> shared (L2 only), asynchronously on the device, at once on the host.
__host__ __device__ __forceinline__ void cp_async_16(std::uint32_t dst, const void* src) {
#if defined(__CUDA_ARCH__)
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst),
               "l"(__cvta_generic_to_global(src))
               : "memory");
#else
  emu::cp_async_16(dst, src);
#endif
}
__host__ __device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__)
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

__host__ __device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], std::uint32_t address) {
#if defined(__CUDA_ARCH__)
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address)
               : "memory");
#else
  emu::ldmatrix(r, 4, false, address);
#endif
}

__host__ __device__ __forceinline__ float4 load_f4(const float* p) {
#if defined(__CUDA_ARCH__)
  return __ldg(reinterpret_cast<const float4*>(p));
#else
  float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  if (emu::readable(p, 16))
    std::memcpy(&v, p, 16);
  return v;
#endif
}

__host__ __device__ __forceinline__ float2 load_f2(const float* p) {
#if defined(__CUDA_ARCH__)
  return __ldg(reinterpret_cast<const float2*>(p));
#else
  float2 v = make_float2(0.0f, 0.0f);
  if (emu::readable(p, 8))
    std::memcpy(&v, p, 8);
  return v;
#endif
}

__host__ __device__ __forceinline__ void store_global_u32(__nv_bfloat16* p, std::uint32_t v) {
#if defined(__CUDA_ARCH__)
  *reinterpret_cast<std::uint32_t*>(p) = v;
#else
  if (emu::writable(p, 4))
    std::memcpy(static_cast<void*>(p), &v, 4);
#endif
}

__host__ __device__ __forceinline__ void store_global_f2(float* p, float x, float y) {
#if defined(__CUDA_ARCH__)
  *reinterpret_cast<float2*>(p) = make_float2(x, y);
#else
  if (emu::writable(p, 8)) {
    std::memcpy(p, &x, 4);
    std::memcpy(p + 1, &y, 4);
  }
#endif
}

__host__ __device__ __forceinline__ void store_shared_u64(unsigned char* smem, std::uint32_t offset,
                                                          std::uint32_t lo, std::uint32_t hi) {
#if defined(__CUDA_ARCH__)
  *reinterpret_cast<uint2*>(smem + offset) = make_uint2(lo, hi);
#else
  if (emu::smem_ok(offset, 8)) {
    std::memcpy(smem + offset, &lo, 4);
    std::memcpy(smem + offset + 4, &hi, 4);
  }
#endif
}

__host__ __device__ __forceinline__ void store_shared_f32(unsigned char* smem, std::uint32_t offset,
                                                          float v) {
#if defined(__CUDA_ARCH__)
  *reinterpret_cast<float*>(smem + offset) = v;
#else
  if (emu::smem_ok(offset, 4))
    std::memcpy(smem + offset, &v, 4);
#endif
}

__host__ __device__ __forceinline__ float load_shared_f32(const unsigned char* smem,
                                                          std::uint32_t offset) {
#if defined(__CUDA_ARCH__)
  return *reinterpret_cast<const float*>(smem + offset);
#else
  float v = 0.0f;
  if (emu::smem_ok(offset, 4))
    std::memcpy(&v, smem + offset, 4);
  return v;
#endif
}

__host__ __device__ __forceinline__ float reciprocal_sqrt(float v) {
#if defined(__CUDA_ARCH__)
  return rsqrtf(v); // as layernorm_modulate
#else
  return 1.0f / std::sqrt(v);
#endif
}

// GELU with the tanh approximation, the formula of cuBLASLt's GELU epilogue (and PyTorch's
// approximate="tanh"): 0.5 v (1 + tanh(sqrt(2 / pi) (v + 0.044715 v^3))).
__host__ __device__ __forceinline__ float gelu_tanh(float v) {
  constexpr float k0 = 0.7978845608028654f;
  constexpr float k1 = 0.044715f;
  return 0.5f * v * (1.0f + tanhf(k0 * (v + k1 * v * v * v)));
}

// ---- index helpers ------------------------------------------------------------------------------

// Shared tiles are [rows][kBK] bf16, 64 bytes a row, chunk c (8 values) of row r stored at chunk
// c ^ ((r / 2) % 4): ldmatrix reads one chunk of 8 consecutive rows (from a multiple of 8), and
// the 8 pairs (r % 2, (r / 2) % 4) land in 8 distinct 16-byte bank groups: no bank conflicts.
__host__ __device__ constexpr std::uint32_t swizzle(int r, int c) {
  return static_cast<std::uint32_t>(r * (kBK * 2) + ((c ^ ((r >> 1) & 3)) << 4));
}

// ---- the body -----------------------------------------------------------------------------------

// The sum over a warp, as the library's warp_sum (the same butterfly, so the same rounding).
__host__ __device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1)
    v += shfl_xor(v, offset);
  return v;
}

// Mean and rstd of B rows of h (row i at rows[i], K values) by one warp, as
// layernorm_modulate_kernel computes them: each lane sums float4 groups lane, lane + 32, ... as
// (x + y) + (z + w), the warp's butterfly adds the lanes, mean = sum / K; then the same over the
// squared deviations from that mean (two passes: the residual stream's mean can be large against
// its spread); rstd = rsqrt(var + eps). The B rows' loads are in flight together (one row at a
// time would wait for L2 twice per row); each row's sums keep the library's order.
template <int B>
__host__ __device__ __forceinline__ void row_statistics(const float* const (&rows)[B], int k,
                                                        float eps, int lane, float (&mean)[B],
                                                        float (&rstd)[B]) {
  float sum[B], sq[B];
  GEMM_PROLOGUE_UNROLL
  for (int i = 0; i < B; ++i)
    sum[i] = sq[i] = 0.0f;
  for (int c = lane; c < k / 4; c += 32) {
    GEMM_PROLOGUE_UNROLL
    for (int i = 0; i < B; ++i) {
      const float4 v = load_f4(rows[i] + 4 * c);
      sum[i] += (v.x + v.y) + (v.z + v.w);
    }
  }
  GEMM_PROLOGUE_UNROLL
  for (int i = 0; i < B; ++i)
    mean[i] = warp_sum(sum[i]) / static_cast<float>(k);
  for (int c = lane; c < k / 4; c += 32) {
    GEMM_PROLOGUE_UNROLL
    for (int i = 0; i < B; ++i) {
      const float4 v = load_f4(rows[i] + 4 * c);
      const float a = v.x - mean[i], b = v.y - mean[i], d = v.z - mean[i], e = v.w - mean[i];
      sq[i] += (a * a + b * b) + (d * d + e * e);
    }
  }
  GEMM_PROLOGUE_UNROLL
  for (int i = 0; i < B; ++i)
    rstd[i] = reciprocal_sqrt(warp_sum(sq[i]) / static_cast<float>(k) + eps);
}

// Version 3's first kernel: (mean, rstd) of row `row` into p.stats, by one warp.
__host__ __device__ __forceinline__ void row_stats_body(std::int64_t row, int lane, const Params& p,
                                                        float* stats) {
  const float* const rows[1] = {p.h + row * p.k};
  float mean[1], rstd[1];
  row_statistics<1>(rows, p.k, p.eps, lane, mean, rstd);
  if (lane == 0)
    store_global_f2(stats + 2 * row, mean[0], rstd[0]);
}

inline constexpr int kStatsWarps = 8; // rows per block of row_stats_kernel

__global__ void __launch_bounds__(32 * kStatsWarps) row_stats_kernel(Params p, float* stats) {
  const std::int64_t row =
      static_cast<std::int64_t>(blockIdx.x) * kStatsWarps + static_cast<int>(threadIdx.x >> 5);
  if (row < p.rows)
    row_stats_body(row, static_cast<int>(threadIdx.x & 31), p, stats);
}

// One CTA: output tile (tile_m, tile_n), thread `tid`; `smem` holds Tile<BN>::kSmemBytes.
// kOwnStats: the CTA takes its rows' statistics (version 2), else reads p.stats (version 3).
template <int BN, bool kGelu, bool kOwnStats>
__host__ __device__ __forceinline__ void gemm_prologue_body(unsigned char* smem, unsigned tile_n,
                                                            unsigned tile_m, int tid,
                                                            const Params& p) {
  using T = Tile<BN>;
  const int warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, t4 = lane & 3;
  const int warp_m = warp & 1, warp_n = warp >> 1;
  const std::int64_t row0 = static_cast<std::int64_t>(tile_m) * kBM;
  const int n0 = static_cast<int>(tile_n) * BN;
  const int tiles = p.k / kBK;
  const std::uint32_t base = smem_u32(smem);

  // W k-tile `tile` into stage `slot`: BN rows x 4 chunks, chunk c of row r at swizzle(r, c).
  const auto load_w = [&](int tile, int slot) {
    const std::uint32_t dst = base + T::kWOffset + static_cast<std::uint32_t>(slot) * T::kWBytes;
    GEMM_PROLOGUE_UNROLL
    for (int i = 0; i < T::kWChunks; ++i) {
      const int idx = tid + i * T::kThreads;
      const int r = idx >> 2, c = idx & 3;
      cp_async_16(dst + swizzle(r, c),
                  p.w + static_cast<std::int64_t>(n0 + r) * p.k + tile * kBK + c * 8);
    }
  };
  // cp.async group s holds W k-tile s (empty past the last): the first kStages - 1 now, so they
  // fly while the statistics are taken.
  GEMM_PROLOGUE_UNROLL
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < tiles)
      load_w(s, s);
    cp_async_commit();
  }

  // Version 2: the rows' statistics (row_statistics), rows warp, warp + warps, ... of each warp,
  // 8 at a time, into shared memory for all threads.
  if constexpr (kOwnStats) {
    constexpr int kRowsPerWarp = kBM / T::kWarps; // 16 or 8
    constexpr int kBatch = 8;
    static_assert(kRowsPerWarp % kBatch == 0);
    for (int b0 = 0; b0 < kRowsPerWarp; b0 += kBatch) {
      const float* rows[kBatch];
      float mean[kBatch], rstd[kBatch];
      GEMM_PROLOGUE_UNROLL
      for (int i = 0; i < kBatch; ++i)
        rows[i] = p.h + (row0 + warp + (b0 + i) * T::kWarps) * p.k;
      row_statistics<kBatch>(rows, p.k, p.eps, lane, mean, rstd);
      GEMM_PROLOGUE_UNROLL
      for (int i = 0; i < kBatch; ++i) {
        const auto r = static_cast<std::uint32_t>(warp + (b0 + i) * T::kWarps);
        if (lane == 0) {
          store_shared_f32(smem, T::kStatsOffset + 4 * r, mean[i]);
          store_shared_f32(smem, T::kStatsOffset + 4 * (kBM + r), rstd[i]);
        }
      }
    }
    sync_block();
  }

  // A: thread tid's float4 i of a k-tile is row (tid + i threads) / 8, columns 4 (tid % 8) .. + 3
  // (threads is a multiple of 8): eight lanes cover a row's 128 bytes of h, and a thread keeps its
  // rows and columns through the whole loop, so their statistics stay in registers, and where the
  // CTA's rows are all of one sample (tokens a multiple of 64, as DiT's 256) one shift and scale
  // per k-tile serve all of the thread's rows.
  const int q = tid & 7;
  const bool one_sample = row0 / p.tokens == (row0 + kBM - 1) / p.tokens; // uniform in the CTA
  float mean[T::kAVectors], rstd[T::kAVectors];
  float4 xa[T::kAVectors], sh[T::kAVectors], sc[T::kAVectors];
  GEMM_PROLOGUE_UNROLL
  for (int i = 0; i < T::kAVectors; ++i) {
    const auto r = static_cast<std::uint32_t>((tid + i * T::kThreads) >> 3);
    if constexpr (kOwnStats) {
      mean[i] = load_shared_f32(smem, T::kStatsOffset + 4 * r);
      rstd[i] = load_shared_f32(smem, T::kStatsOffset + 4 * (kBM + r));
    } else {
      const float2 st = load_f2(p.stats + 2 * (row0 + r));
      mean[i] = st.x;
      rstd[i] = st.y;
    }
    sh[i] = sc[i] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  }
  const auto fetch_a = [&](int tile) {
    const int col = tile * kBK + 4 * q;
    GEMM_PROLOGUE_UNROLL
    for (int i = 0; i < T::kAVectors; ++i) {
      const std::int64_t row = row0 + ((tid + i * T::kThreads) >> 3);
      xa[i] = load_f4(p.h + row * p.k + col);
      if (i == 0 || !one_sample) {
        const float* m = p.mod + (row / p.tokens) * p.mod_ld;
        sh[i] = load_f4(m + p.shift + col);
        sc[i] = load_f4(m + p.scale + col);
      }
    }
  };
  // (x - mean) rstd (1 + scale) + shift, rounded to bf16 as layernorm_modulate stores it.
  const auto store_a = [&](int slot) {
    const std::uint32_t a_off = static_cast<std::uint32_t>(slot) * T::kABytes;
    GEMM_PROLOGUE_UNROLL
    for (int i = 0; i < T::kAVectors; ++i) {
      const int r = (tid + i * T::kThreads) >> 3;
      const float4 x = xa[i], f = one_sample ? sh[0] : sh[i], s = one_sample ? sc[0] : sc[i];
      const float m = mean[i], d = rstd[i];
      const std::uint32_t lo =
          pack_bf16x2((x.x - m) * d * (1.0f + s.x) + f.x, (x.y - m) * d * (1.0f + s.y) + f.y);
      const std::uint32_t hi =
          pack_bf16x2((x.z - m) * d * (1.0f + s.z) + f.z, (x.w - m) * d * (1.0f + s.w) + f.w);
      // Values 4q..4q+3 of the row: chunk q / 2, bytes 8 (q % 2) of it.
      store_shared_u64(smem, a_off + swizzle(r, q >> 1) + 8 * static_cast<std::uint32_t>(q & 1), lo,
                       hi);
    }
  };
  fetch_a(0);
  store_a(0);

  float acc[2][4][4]; // [m16 tile][n8 tile][mma C register]
  GEMM_PROLOGUE_UNROLL
  for (int mi = 0; mi < 2; ++mi)
    GEMM_PROLOGUE_UNROLL
  for (int nj = 0; nj < 4; ++nj)
    acc[mi][nj][0] = acc[mi][nj][1] = acc[mi][nj][2] = acc[mi][nj][3] = 0.0f;

  for (int t = 0; t < tiles; ++t) {
    // W tile t landed (this thread's copies, then everyone's); A slot t % 2 written by all; every
    // warp is done with W stage (t - 1) % kStages and A slot (t + 1) % 2 (read at t - 1).
    cp_async_wait<kStages - 2>();
    sync_block();
    if (const int next = t + kStages - 1; next < tiles)
      load_w(next, next % kStages);
    cp_async_commit();
    const bool more = t + 1 < tiles;
    if (more)
      fetch_a(t + 1); // in flight during the mma below

    const std::uint32_t sa = base + static_cast<std::uint32_t>(t % kASlots) * T::kABytes;
    const std::uint32_t sw =
        base + T::kWOffset + static_cast<std::uint32_t>(t % kStages) * T::kWBytes;
    GEMM_PROLOGUE_UNROLL
    for (int kk = 0; kk < kBK / 16; ++kk) {
      // A of m16 tile mi: lane L addresses row 32 warp_m + 16 mi + L % 16, chunk 2 kk + L / 16:
      // matrices rows 0-7 / k 0-7, rows 8-15 / k 0-7, rows 0-7 / k 8-15, rows 8-15 / k 8-15 =
      // a0..a3.
      std::uint32_t af[2][4];
      GEMM_PROLOGUE_UNROLL
      for (int mi = 0; mi < 2; ++mi)
        ldmatrix_x4(af[mi],
                    sa + swizzle(32 * warp_m + 16 * mi + (lane & 15), 2 * kk + (lane >> 4)));
      GEMM_PROLOGUE_UNROLL
      for (int pr = 0; pr < 2; ++pr) {
        // W rows (= B columns) of n8 tiles 2 pr and 2 pr + 1: lane L addresses row 32 warp_n +
        // 16 pr + L % 8 + 8 (L / 16), chunk 2 kk + (L / 8) % 2: b0, b1 of tile 2 pr, then of
        // 2 pr + 1 (B = W^T, so a plain ldmatrix of W's rows gives B's column fragments).
        std::uint32_t bw[4];
        ldmatrix_x4(bw, sw + swizzle(32 * warp_n + 16 * pr + (lane & 7) + ((lane >> 4) << 3),
                                     2 * kk + ((lane >> 3) & 1)));
        GEMM_PROLOGUE_UNROLL
        for (int mi = 0; mi < 2; ++mi) {
          mma_16816(acc[mi][2 * pr], af[mi], bw[0], bw[1]);
          mma_16816(acc[mi][2 * pr + 1], af[mi], bw[2], bw[3]);
        }
      }
    }
    if (more)
      store_a((t + 1) % kASlots);
  }
  cp_async_wait<0>(); // only empty groups remain; none outlives the block

  // Epilogue: register e of acc[mi][nj] is row 32 warp_m + 16 mi + g + 8 (e / 2), column
  // 32 warp_n + 8 nj + 2 t + e % 2; bias, activation, bf16 pairs straight to global memory.
  GEMM_PROLOGUE_UNROLL
  for (int nj = 0; nj < 4; ++nj) {
    const int col = n0 + 32 * warp_n + 8 * nj + 2 * t4;
    const float2 b = load_f2(p.bias + col);
    GEMM_PROLOGUE_UNROLL
    for (int mi = 0; mi < 2; ++mi) {
      float v[4] = {acc[mi][nj][0] + b.x, acc[mi][nj][1] + b.y, acc[mi][nj][2] + b.x,
                    acc[mi][nj][3] + b.y};
      if constexpr (kGelu) {
        GEMM_PROLOGUE_UNROLL
        for (int e = 0; e < 4; ++e)
          v[e] = gelu_tanh(v[e]);
      }
      const std::int64_t row = row0 + 32 * warp_m + 16 * mi + g;
      store_global_u32(p.out + row * p.n + col, pack_bf16x2(v[0], v[1]));
      store_global_u32(p.out + (row + 8) * p.n + col, pack_bf16x2(v[2], v[3]));
    }
  }
}

template <int BN, bool kGelu, bool kOwnStats>
__global__ void __launch_bounds__(Tile<BN>::kThreads) gemm_prologue_kernel(Params p) {
  extern __shared__ __align__(128) unsigned char gemm_prologue_smem[];
  gemm_prologue_body<BN, kGelu, kOwnStats>(gemm_prologue_smem, blockIdx.x, blockIdx.y,
                                           static_cast<int>(threadIdx.x), p);
}

// ---- host side ----------------------------------------------------------------------------------

/// Columns per CTA: 128 where that still gives every SM a CTA (8 and 64 images), else 64 (1
/// image: 64 x 128 tiles would leave DiT-S/2's qkv 36 CTAs, 64 x 64 gives 72).
inline int tile_n_for(std::int64_t rows, int n, int multiprocessors) {
  if (n % 128 == 0 && rows / kBM * (n / 128) >= multiprocessors)
    return 128;
  return 64;
}

/// Refuses what the kernel cannot take, naming the value (tstitch::invalid_argument).
/// The sizes alone (p's pointers unread): what a caller can refuse before allocating anything.
inline void require_sizes(const Params& p, int tile_n) {
  using tstitch::require;
  require(tile_n == 64 || tile_n == 128, "gemm_prologue tile N", tile_n, "must be 64 or 128");
  require(p.k >= kBK && p.k % kBK == 0, "gemm_prologue K (hidden)", p.k,
          "must be a positive multiple of 32 (whole k-tiles)");
  require(
      p.n >= tile_n && p.n % tile_n == 0, "gemm_prologue N", p.n,
      tstitch::detail::concat("must be a positive multiple of the tile's ", tile_n, " columns"));
  require(p.rows >= kBM && p.rows % kBM == 0 && p.rows / kBM <= 65535, "gemm_prologue rows", p.rows,
          "must be a positive multiple of 64, at most 64 x 65535 (the grid's y)");
  require(p.tokens >= 1, "gemm_prologue tokens", p.tokens, "must be at least 1");
  for (const int v : {p.mod_ld, p.shift, p.scale})
    require(v >= 0 && v % 4 == 0, "gemm_prologue mod_ld and offsets", v,
            "must be multiples of 4 (float4 loads)");
  require(p.shift + p.k <= p.mod_ld && p.scale + p.k <= p.mod_ld, "gemm_prologue shift/scale",
          tstitch::detail::concat(p.shift, "/", p.scale), "must leave K values inside mod's row");
}

/// require_sizes, then the alignment of every pointer to its accesses.
inline void require_supported(const Params& p, int tile_n) {
  using tstitch::require;
  require_sizes(p, tile_n);
  const auto aligned = [](const void* q, std::uintptr_t bytes) {
    return reinterpret_cast<std::uintptr_t>(q) % bytes == 0;
  };
  require(aligned(p.h, 16) && aligned(p.w, 16) && aligned(p.mod, 16), "gemm_prologue h, W, mod",
          "addresses", "must be 16-byte aligned");
  require(aligned(p.bias, 8) && aligned(p.out, 4), "gemm_prologue bias, out", "addresses",
          "must be aligned to their pair accesses");
}

template <int BN, bool kGelu> void launch_tile(const Params& p, cudaStream_t stream) {
  using T = Tile<BN>;
  const dim3 grid(static_cast<unsigned>(p.n / BN), static_cast<unsigned>(p.rows / kBM));
  if (p.stats == nullptr)
    gemm_prologue_kernel<BN, kGelu, true><<<grid, T::kThreads, T::kSmemBytes, stream>>>(p);
  else
    gemm_prologue_kernel<BN, kGelu, false><<<grid, T::kThreads, T::kSmemBytes, stream>>>(p);
  TSTITCH_CUDA_CHECK(cudaGetLastError());
}

/// The fused op on the device: tile_n 64 or 128 (tile_n_for), gelu for fc1; with p.stats null
/// the CTAs take their rows' statistics (version 2), else they read them there (version 3).
inline void gemm_prologue(const Params& p, int tile_n, bool gelu, cudaStream_t stream) {
  require_supported(p, tile_n);
  tstitch::require(reinterpret_cast<std::uintptr_t>(p.stats) % 8 == 0, "gemm_prologue stats",
                   "address", "must be 8-byte aligned (float2 per row)");
  if (tile_n == 64)
    gelu ? launch_tile<64, true>(p, stream) : launch_tile<64, false>(p, stream);
  else
    gelu ? launch_tile<128, true>(p, stream) : launch_tile<128, false>(p, stream);
}

/// Version 3's first kernel: (mean, rstd) of every row of p.h into stats (float2 [rows]).
inline void row_stats(const Params& p, float* stats, cudaStream_t stream) {
  tstitch::require(p.k >= 4 && p.k % 4 == 0, "gemm_prologue row_stats K", p.k,
                   "must be a positive multiple of 4 (float4 loads)");
  tstitch::require(reinterpret_cast<std::uintptr_t>(p.h) % 16 == 0 &&
                       reinterpret_cast<std::uintptr_t>(stats) % 8 == 0,
                   "gemm_prologue row_stats h, stats", "addresses",
                   "must be 16- and 8-byte aligned");
  const std::int64_t blocks = (p.rows + kStatsWarps - 1) / kStatsWarps;
  tstitch::require(blocks >= 1 && blocks <= 0x7fffffff, "gemm_prologue row_stats rows", p.rows,
                   "must give 1 .. 2^31 - 1 blocks");
  row_stats_kernel<<<static_cast<unsigned>(blocks), 32 * kStatsWarps, 0, stream>>>(p, stats);
  TSTITCH_CUDA_CHECK(cudaGetLastError());
}

} // namespace lab::gemm_prologue

#if !defined(__CUDA_ARCH__)
namespace lab::gemm_prologue {

// Where the emulated lanes may read: h, W, bias, mod (and the statistics, where given).
inline std::vector<emu::Range> inputs_of(const Params& p, std::size_t mod_elements) {
  const auto rows = static_cast<std::size_t>(p.rows);
  std::vector<emu::Range> inputs = {
      {p.h, rows * static_cast<std::size_t>(p.k) * 4},
      {p.w, static_cast<std::size_t>(p.n) * static_cast<std::size_t>(p.k) * 2},
      {p.bias, static_cast<std::size_t>(p.n) * 4},
      {p.mod, mod_elements * 4}};
  if (p.stats != nullptr)
    inputs.push_back({p.stats, rows * 8});
  return inputs;
}

/// The CTAs `tiles` ((tile_m, tile_n) pairs) of the kernel run on the CPU (see the emulation note
/// at the top): the same body, one std::thread per lane; p's pointers are host memory (mod of
/// mod_elements values). Writes out as the kernel would; returns the faults (accesses out of
/// bounds or misaligned). Slow: a few CTAs of small problems. With p.stats set, version 3's
/// GEMM (the statistics read from there), else version 2's.
template <int BN, bool kGelu>
int emulate_tiles(const Params& p, std::size_t mod_elements,
                  const std::vector<std::pair<unsigned, unsigned>>& tiles) {
  using T = Tile<BN>;
  require_supported(p, BN);
  std::atomic<int> faults{0};
  std::vector<unsigned char> smem(T::kSmemBytes);
  const std::vector<emu::Range> outputs = {
      {p.out, static_cast<std::size_t>(p.rows) * static_cast<std::size_t>(p.n) * 2}};
  for (const auto& [tile_m, tile_n] : tiles) {
    // Shared memory starts as all ones (bf16 and fp32 NaN): what is read before it is written
    // poisons the output.
    std::fill(smem.begin(), smem.end(), static_cast<unsigned char>(0xff));
    emu::run_block(T::kThreads, smem.data(), smem.size(), inputs_of(p, mod_elements), outputs,
                   faults, [&, tm = tile_m, tn = tile_n](int tid) {
                     if (p.stats == nullptr)
                       gemm_prologue_body<BN, kGelu, true>(emu::self.smem, tn, tm, tid, p);
                     else
                       gemm_prologue_body<BN, kGelu, false>(emu::self.smem, tn, tm, tid, p);
                   });
  }
  return faults.load();
}

/// row_stats_kernel's blocks `blocks` run on the CPU into `stats` (float2 [rows], host memory);
/// returns the faults.
inline int emulate_row_stats(const Params& p, float* stats, const std::vector<unsigned>& blocks) {
  std::atomic<int> faults{0};
  const std::vector<emu::Range> inputs = {
      {p.h, static_cast<std::size_t>(p.rows) * static_cast<std::size_t>(p.k) * 4}};
  const std::vector<emu::Range> outputs = {{stats, static_cast<std::size_t>(p.rows) * 8}};
  for (const unsigned b : blocks)
    emu::run_block(32 * kStatsWarps, nullptr, 0, inputs, outputs, faults, [&](int tid) {
      const std::int64_t row = static_cast<std::int64_t>(b) * kStatsWarps + (tid >> 5);
      if (row < p.rows)
        row_stats_body(row, tid & 31, p, stats);
    });
  return faults.load();
}

} // namespace lab::gemm_prologue
#endif
