// SPDX-License-Identifier: Apache-2.0
#pragma once
// Kernel lab: one whole DiT block forward in one persistent cooperative kernel. Five phases, each
// a __host__ __device__ function of (CTA, grid size, params, shared memory) that loops over its
// work tiles (tile = CTA, CTA + grid, ...), separated by grid-wide barriers on the device
// (cooperative_groups grid sync) and run phase by phase, CTA after CTA, under the emulation:
//   0 qkv   = bf16( LNmod(h_in; shift_msa, scale_msa) Wqkv^T + bqkv )  gemm_prologue's tile
//   1 attn  = bf16( softmax(q k^T / sqrt(hd)) v )                       short_attention's body
//   2 h_mid = h_in + gate_msa * (bf16(attn Wproj^T) + bproj)           seam tile (below)
//   3 mlp   = bf16( GELU( LNmod(h_mid; shift_mlp, scale_mlp) Wfc1^T + bfc1 ) )  gemm_prologue
//   4 h_out = h_mid + gate_mlp * (bf16(mlp Wfc2^T) + bfc2)             seam tile
// The LayerNorm statistics of phases 0 and 3 are taken in the GEMM's prologue (per CTA), so the
// seams need no row-wide reduction: each element of h is written by exactly one CTA.
//
// The residual stream passes through three buffers, h_in -> h_mid -> h_out, not one updated in
// place (the library's): gemm_prologue's tile reads h with ld.global.nc (__ldg), which is only
// defined for data no CTA writes during the kernel. h_in is never written; h_mid is written in
// phase 2 and read no earlier than phase 3, so no SM can hold a line of it from before the write
// (a non-coherent read of it still relies on that; the seam phases read it with ld.global.cg).
// A chain of blocks would ping-pong h_in and h_out.
//
// One CTA shape for all phases: 4 warps (128 threads), GEMM tiles of 64 x 64 (2 x 2 warps of
// 32 x 32) and attention CTAs of 64 queries (short_attention's W = 4). Shared memory is the
// largest phase's: attention's 82,944 bytes at head dim 64 (101,376 at 72). Registers are the
// most any phase needs, since every phase is inlined into one function (ptxas: sm_90a 250 at head
// dim 64, 255 at 72, no spills; sm_80 255 with 40-56 bytes of stack for spills), so two CTAs (8
// warps) fit an SM where shared memory allows (an H100's 228 KB: expected grid 2 x 132).
#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <vector>

#include "emulate.cuh"
#include "gemm_prologue_kernel.cuh"
#include "lane_ops.cuh"
#include "short_attention_kernel.cuh"
#include "tstitch/core/error.hpp"
#include "tstitch/cuda/runtime.hpp"

#if defined(__CUDA_ARCH__)
#define PERSISTENT_BLOCK_UNROLL _Pragma("unroll")
#else
#define PERSISTENT_BLOCK_UNROLL
#endif

namespace lab::persistent_block {

namespace gp = lab::gemm_prologue;
namespace sa = lab::short_attn;
using bf16 = __nv_bfloat16;

inline constexpr int kPhases = 5;
inline constexpr int kBN = 64;                   // GEMM tile columns (rows: gp::kBM = 64)
inline constexpr int kAttnWarps = 4;             // short_attention's W: 64 queries per CTA
inline constexpr int kThreads = 32 * kAttnWarps; // = gp::Tile<64>::kThreads
static_assert(gp::Tile<kBN>::kThreads == kThreads, "one CTA shape for every phase");

/// The phases' names, in order (printed with their CTA counts).
inline constexpr const char* kPhaseNames[kPhases] = {"qkv", "attention", "proj", "fc1", "fc2"};

/// Offsets of one block's six adaLN chunks in a row of mod (DiT's order, as the library's
/// block_modulation: shift, scale, gate of attention, then of the MLP).
struct Modulation {
  int shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp;
};

/// What the kernel reads and writes (device pointers; host ones under the emulation).
struct Params {
  const float* h_in; // [rows, d] the residual stream before the block
  float* h_mid;      // [rows, d] after attention
  float* h_out;      // [rows, d] after the MLP
  const float* mod;  // [rows / tokens, mod_ld]
  int mod_ld;
  Modulation m;
  const bf16* w_qkv;  // [3d, d]
  const float* b_qkv; // [3d]
  const bf16* w_proj; // [d, d]
  const float* b_proj;
  const bf16* w_fc1; // [4d, d]
  const float* b_fc1;
  const bf16* w_fc2; // [d, 4d]
  const float* b_fc2;
  bf16* qkv;  // [rows, 3d]: [tokens, 3, heads, head_dim] per sample
  bf16* attn; // [rows, d]
  bf16* mlp;  // [rows, 4d]
  int d, heads, head_dim, tokens;
  std::int64_t rows;
  float eps;
  float scale_log2; // log2(e) / sqrt(head_dim)
};

// ---- the seam tile: h_out = h_src + gate * (bf16(A W^T) + bias) on a 64 x 64 tile ---------------

struct SeamTile {
  static constexpr int kWarps = 4; // warp (m, n) = (warp % 2, warp / 2), 32 x 32 each
  static constexpr std::uint32_t kABytes = gp::kBM * gp::kBK * 2;
  static constexpr std::uint32_t kWBytes = kBN * gp::kBK * 2;
  static constexpr std::uint32_t kStageBytes = kABytes + kWBytes;
  static constexpr int kSmemBytes = static_cast<int>(gp::kStages * kStageBytes);
  static constexpr int kAChunks = gp::kBM * 4 / kThreads; // 16-byte chunks per thread per k-tile
  static constexpr int kWChunks = kBN * 4 / kThreads;
  static_assert(kAChunks * kThreads == gp::kBM * 4 && kWChunks * kThreads == kBN * 4);
};

struct SeamParams {
  const bf16* a;     // [rows, k]
  const bf16* w;     // [n, k]
  const float* bias; // [n]
  const float* mod;
  int mod_ld, gate;
  const float* h_src; // [rows, n]
  float* h_dst;       // [rows, n]
  int k, n, tokens;
};

// A coherent (L2) read of two floats: h_src may have been written earlier in the kernel.
__host__ __device__ __forceinline__ float2 load_f2_coherent(const float* p) {
#if defined(__CUDA_ARCH__)
  return __ldcg(reinterpret_cast<const float2*>(p));
#else
  float2 v = make_float2(0.0f, 0.0f);
  if (emu::readable(p, 8))
    std::memcpy(&v, p, 8);
  return v;
#endif
}

// y rounded to bf16, as the library's GEMM stores it before the residual kernel reads it.
__host__ __device__ __forceinline__ float round_bf16(float v) {
  return __bfloat162float(__float2bfloat16_rn(v));
}

// One CTA: seam tile (tile_m, tile_n). The same pipeline as gemm_prologue_body's W (3 cp.async
// stages of k-tiles of 32, swizzled), with A streamed the same way since it is bf16 already.
__host__ __device__ __forceinline__ void seam_tile_body(unsigned char* smem, int tile_n, int tile_m,
                                                        int tid, const SeamParams& p) {
  using T = SeamTile;
  const int warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, t4 = lane & 3;
  const int warp_m = warp & 1, warp_n = warp >> 1;
  const std::int64_t row0 = static_cast<std::int64_t>(tile_m) * gp::kBM;
  const int n0 = tile_n * kBN;
  const int tiles = p.k / gp::kBK;
  const std::uint32_t base = gp::smem_u32(smem);

  // k-tile `tile` of A (64 rows) and W (64 rows) into stage `slot`, chunk c of row r at
  // swizzle(r, c) of its half.
  const auto load_stage = [&](int tile, int slot) {
    const std::uint32_t dst = base + static_cast<std::uint32_t>(slot) * T::kStageBytes;
    PERSISTENT_BLOCK_UNROLL
    for (int i = 0; i < T::kAChunks; ++i) {
      const int idx = tid + i * kThreads;
      const int r = idx >> 2, c = idx & 3;
      gp::cp_async_16(dst + gp::swizzle(r, c), p.a + (row0 + r) * p.k + tile * gp::kBK + c * 8);
    }
    PERSISTENT_BLOCK_UNROLL
    for (int i = 0; i < T::kWChunks; ++i) {
      const int idx = tid + i * kThreads;
      const int r = idx >> 2, c = idx & 3;
      gp::cp_async_16(dst + T::kABytes + gp::swizzle(r, c),
                      p.w + static_cast<std::int64_t>(n0 + r) * p.k + tile * gp::kBK + c * 8);
    }
  };
  PERSISTENT_BLOCK_UNROLL
  for (int s = 0; s < gp::kStages - 1; ++s) {
    if (s < tiles)
      load_stage(s, s);
    gp::cp_async_commit();
  }

  float acc[2][4][4]; // [m16 tile][n8 tile][mma C register]
  PERSISTENT_BLOCK_UNROLL
  for (int mi = 0; mi < 2; ++mi)
    PERSISTENT_BLOCK_UNROLL
  for (int nj = 0; nj < 4; ++nj)
    acc[mi][nj][0] = acc[mi][nj][1] = acc[mi][nj][2] = acc[mi][nj][3] = 0.0f;

  for (int t = 0; t < tiles; ++t) {
    // Stage t landed for every thread; every warp is done with stage (t - 1) % kStages.
    gp::cp_async_wait<gp::kStages - 2>();
    gp::sync_block();
    if (const int next = t + gp::kStages - 1; next < tiles)
      load_stage(next, next % gp::kStages);
    gp::cp_async_commit();
    const std::uint32_t sa = base + static_cast<std::uint32_t>(t % gp::kStages) * T::kStageBytes;
    const std::uint32_t sw = sa + T::kABytes;
    PERSISTENT_BLOCK_UNROLL
    for (int kk = 0; kk < gp::kBK / 16; ++kk) {
      // The fragment addressing of gemm_prologue_body (see there).
      std::uint32_t af[2][4];
      PERSISTENT_BLOCK_UNROLL
      for (int mi = 0; mi < 2; ++mi)
        gp::ldmatrix_x4(
            af[mi], sa + gp::swizzle(32 * warp_m + 16 * mi + (lane & 15), 2 * kk + (lane >> 4)));
      PERSISTENT_BLOCK_UNROLL
      for (int pr = 0; pr < 2; ++pr) {
        std::uint32_t bw[4];
        gp::ldmatrix_x4(bw,
                        sw + gp::swizzle(32 * warp_n + 16 * pr + (lane & 7) + ((lane >> 4) << 3),
                                         2 * kk + ((lane >> 3) & 1)));
        PERSISTENT_BLOCK_UNROLL
        for (int mi = 0; mi < 2; ++mi) {
          gp::mma_16816(acc[mi][2 * pr], af[mi], bw[0], bw[1]);
          gp::mma_16816(acc[mi][2 * pr + 1], af[mi], bw[2], bw[3]);
        }
      }
    }
  }
  gp::cp_async_wait<0>();

  // Epilogue: register e of acc[mi][nj] is row 32 warp_m + 16 mi + g + 8 (e / 2), column
  // 32 warp_n + 8 nj + 2 t + e % 2; the library's residual: h + gate (bf16(y) + bias).
  PERSISTENT_BLOCK_UNROLL
  for (int nj = 0; nj < 4; ++nj) {
    const int col = n0 + 32 * warp_n + 8 * nj + 2 * t4;
    const float2 b = gp::load_f2(p.bias + col);
    PERSISTENT_BLOCK_UNROLL
    for (int mi = 0; mi < 2; ++mi) {
      PERSISTENT_BLOCK_UNROLL
      for (int half = 0; half < 2; ++half) {
        const std::int64_t row = row0 + 32 * warp_m + 16 * mi + g + 8 * half;
        const float2 gate = gp::load_f2(p.mod + (row / p.tokens) * p.mod_ld + p.gate + col);
        const float2 x = load_f2_coherent(p.h_src + row * p.n + col);
        const float y0 = round_bf16(acc[mi][nj][2 * half]);
        const float y1 = round_bf16(acc[mi][nj][2 * half + 1]);
        gp::store_global_f2(p.h_dst + row * p.n + col, x.x + gate.x * (y0 + b.x),
                            x.y + gate.y * (y1 + b.y));
      }
    }
  }
}

// ---- the phases ---------------------------------------------------------------------------------

/// Work tiles of phase `phase` (CTAs it would take as a grid of its own).
__host__ __device__ inline int phase_tiles(int phase, const Params& p) {
  const int row_blocks = static_cast<int>(p.rows / gp::kBM);
  const int q_tiles = (p.tokens + 16 * kAttnWarps - 1) / (16 * kAttnWarps);
  switch (phase) {
  case 0:
    return row_blocks * (3 * p.d / kBN);
  case 1:
    return static_cast<int>(p.rows / p.tokens) * p.heads * q_tiles;
  case 3:
    return row_blocks * (4 * p.d / kBN);
  default: // proj, fc2: N = d
    return row_blocks * (p.d / kBN);
  }
}

__host__ __device__ inline gp::Params prologue_params(const Params& p, bool mlp) {
  return {mlp ? p.h_mid : p.h_in,
          mlp ? p.w_fc1 : p.w_qkv,
          mlp ? p.b_fc1 : p.b_qkv,
          p.mod,
          p.mod_ld,
          mlp ? p.m.shift_mlp : p.m.shift_msa,
          mlp ? p.m.scale_mlp : p.m.scale_msa,
          mlp ? p.mlp : p.qkv,
          p.d,
          (mlp ? 4 : 3) * p.d,
          p.tokens,
          p.rows,
          p.eps,
          nullptr};
}

__host__ __device__ inline SeamParams seam_params(const Params& p, bool mlp) {
  return {mlp ? p.mlp : p.attn,
          mlp ? p.w_fc2 : p.w_proj,
          mlp ? p.b_fc2 : p.b_proj,
          p.mod,
          p.mod_ld,
          mlp ? p.m.gate_mlp : p.m.gate_msa,
          mlp ? p.h_mid : p.h_in,
          mlp ? p.h_out : p.h_mid,
          (mlp ? 4 : 1) * p.d,
          p.d,
          p.tokens};
}

/// Phase `phase` of CTA `cta` of `grid`, thread `tid`: every tile cta, cta + grid, ... of it.
/// Column tiles of one row block are adjacent in the tile order (they share h's rows in L2).
template <int HD>
__host__ __device__ __forceinline__ void run_phase(int phase, unsigned char* smem, int cta,
                                                   int grid, int tid, const Params& p) {
  const int tiles = phase_tiles(phase, p);
  for (int tile = cta; tile < tiles; tile += grid) {
    switch (phase) {
    case 0:
    case 3: {
      const int tiles_n = (phase == 0 ? 3 : 4) * p.d / kBN;
      const gp::Params gemm = prologue_params(p, phase == 3);
      const auto tn = static_cast<unsigned>(tile % tiles_n);
      const auto tm = static_cast<unsigned>(tile / tiles_n);
      if (phase == 0)
        gp::gemm_prologue_body<kBN, false, true>(smem, tn, tm, tid, gemm);
      else
        gp::gemm_prologue_body<kBN, true, true>(smem, tn, tm, tid, gemm);
      break;
    }
    case 1: {
      const int q_tiles = (p.tokens + 16 * kAttnWarps - 1) / (16 * kAttnWarps);
      sa::short_attention_body<HD, kAttnWarps>(smem, static_cast<unsigned>(tile), tid, p.qkv,
                                               p.attn, p.tokens, p.heads, q_tiles, p.scale_log2);
      break;
    }
    default: {
      const int tiles_n = p.d / kBN;
      seam_tile_body(smem, tile % tiles_n, tile / tiles_n, tid, seam_params(p, phase == 4));
      break;
    }
    }
    // The next tile's copies overwrite shared memory that slower warps may still read.
    gp::sync_block();
  }
}

template <int HD>
constexpr int kSmemBytes = std::max({gp::Tile<kBN>::kSmemBytes, SeamTile::kSmemBytes,
                                     sa::Shape<HD, kAttnWarps>::kSmemBytes});

template <int HD> __global__ void __launch_bounds__(kThreads) persistent_block_kernel(Params p) {
  extern __shared__ __align__(128) unsigned char persistent_block_smem[];
  cooperative_groups::grid_group grid = cooperative_groups::this_grid();
  for (int phase = 0; phase < kPhases; ++phase) {
    run_phase<HD>(phase, persistent_block_smem, static_cast<int>(blockIdx.x),
                  static_cast<int>(gridDim.x), static_cast<int>(threadIdx.x), p);
    if (phase + 1 < kPhases)
      grid.sync();
  }
}

// ---- host side ----------------------------------------------------------------------------------

/// Refuses a block the kernel cannot run, naming the value (tstitch::invalid_argument); reads
/// only p's sizes.
inline void require_sizes(const Params& p) {
  using tstitch::require;
  require(p.head_dim == 64 || p.head_dim == 72, "persistent block head_dim", p.head_dim,
          "must be 64 or 72 (short_attention's)");
  require(p.heads >= 1 && p.heads * p.head_dim == p.d, "persistent block heads x head_dim",
          tstitch::detail::concat(p.heads, "x", p.head_dim),
          tstitch::detail::concat("must equal hidden ", p.d));
  require(p.d >= kBN && p.d % kBN == 0, "persistent block hidden", p.d,
          "must be a positive multiple of 64 (64 x 64 GEMM tiles)");
  require(
      p.tokens >= gp::kBM && p.tokens <= sa::kMaxTokens && p.tokens % gp::kBM == 0,
      "persistent block tokens", p.tokens,
      "must be 64, 128, 192 or 256 (64-row tiles of one sample; K and V whole in shared memory)");
  require(p.rows >= p.tokens && p.rows % p.tokens == 0 &&
              p.rows / gp::kBM * (4 * p.d / kBN) < 0x7fffffff,
          "persistent block rows", p.rows, "must be a whole number of samples");
  gp::require_sizes(prologue_params(p, false), kBN);
  gp::require_sizes(prologue_params(p, true), kBN);
  for (const int v : {p.mod_ld, p.m.gate_msa, p.m.gate_mlp})
    require(v >= 0 && v % 2 == 0, "persistent block mod_ld and gate offsets", v,
            "must be even (float2 loads)");
  require(p.m.gate_msa + p.d <= p.mod_ld && p.m.gate_mlp + p.d <= p.mod_ld,
          "persistent block gates", tstitch::detail::concat(p.m.gate_msa, "/", p.m.gate_mlp),
          "must leave hidden values inside mod's row");
}

/// CTAs the cooperative grid gets: every SM times the CTAs of this kernel that fit on one.
template <int HD> int cooperative_grid(int multiprocessors) {
  int per_sm = 0;
  TSTITCH_CUDA_CHECK(cudaFuncSetAttribute(
      persistent_block_kernel<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes<HD>));
  TSTITCH_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
      &per_sm, persistent_block_kernel<HD>, kThreads, kSmemBytes<HD>));
  tstitch::require(per_sm >= 1, "persistent block CTAs per SM", per_sm,
                   "must be at least 1 (registers or shared memory exceed an SM)");
  return per_sm * multiprocessors;
}

/// One block forward on the device: one cooperative launch of `grid` CTAs (cooperative_grid);
/// returns the grid it ran with. Where the device refuses that many co-resident CTAs (a tool that
/// instruments the kernel may take registers: compute-sanitizer), it halves the grid until one
/// fits: the phases loop over their tiles, so any grid gives the same result.
template <int HD> int launch(const Params& p, int grid, cudaStream_t stream) {
  Params copy = p;
  void* args[] = {&copy};
  for (;;) {
    const cudaError_t status =
        cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(&persistent_block_kernel<HD>),
                                    dim3(static_cast<unsigned>(grid)), dim3(kThreads), args,
                                    static_cast<std::size_t>(kSmemBytes<HD>), stream);
    if (status != cudaErrorCooperativeLaunchTooLarge || grid == 1) {
      TSTITCH_CUDA_CHECK(status);
      return grid;
    }
    (void)cudaGetLastError(); // clear the refusal before the retry
    grid /= 2;
  }
}

} // namespace lab::persistent_block

#if !defined(__CUDA_ARCH__)
namespace lab::persistent_block {

/// The kernel on the CPU (see emulate.cuh): phase by phase, every CTA of `grid` in order, one
/// std::thread per lane, the end of a phase standing for the grid barrier. Each phase may read
/// only its inputs and write only its output (accesses elsewhere are faults); the sizes of the
/// host buffers follow from p. Returns the faults.
template <int HD> int emulate(const Params& p, int grid) {
  require_sizes(p);
  const auto rows = static_cast<std::size_t>(p.rows);
  const auto d = static_cast<std::size_t>(p.d);
  const std::size_t mod_bytes =
      rows / static_cast<std::size_t>(p.tokens) * static_cast<std::size_t>(p.mod_ld) * 4;
  const emu::Range h_in{p.h_in, rows * d * 4}, h_mid{p.h_mid, rows * d * 4},
      h_out{p.h_out, rows * d * 4}, mod{p.mod, mod_bytes}, qkv{p.qkv, rows * 3 * d * 2},
      attn{p.attn, rows * d * 2}, mlp{p.mlp, rows * 4 * d * 2};
  const auto weight = [&](const bf16* w, const float* b, std::size_t n, std::size_t k) {
    return std::vector<emu::Range>{{w, n * k * 2}, {b, n * 4}};
  };
  const auto with = [](std::vector<emu::Range> v, std::initializer_list<emu::Range> more) {
    v.insert(v.end(), more);
    return v;
  };
  const std::vector<emu::Range> inputs[kPhases] = {
      with(weight(p.w_qkv, p.b_qkv, 3 * d, d), {h_in, mod}),
      {qkv},
      with(weight(p.w_proj, p.b_proj, d, d), {attn, mod, h_in}),
      with(weight(p.w_fc1, p.b_fc1, 4 * d, d), {h_mid, mod}),
      with(weight(p.w_fc2, p.b_fc2, d, 4 * d), {mlp, mod, h_mid})};
  // short_attention's stores of out are plain host stores (unchecked); the others are checked.
  const std::vector<emu::Range> outputs[kPhases] = {{qkv}, {attn}, {h_mid}, {mlp}, {h_out}};
  std::atomic<int> faults{0};
  std::vector<unsigned char> smem(static_cast<std::size_t>(kSmemBytes<HD>));
  for (int phase = 0; phase < kPhases; ++phase)
    for (int cta = 0; cta < grid; ++cta) {
      // Shared memory starts as all ones (bf16 and fp32 NaN): a read before a write poisons.
      std::fill(smem.begin(), smem.end(), static_cast<unsigned char>(0xff));
      emu::run_block(kThreads, smem.data(), smem.size(), inputs[phase], outputs[phase], faults,
                     [&](int tid) { run_phase<HD>(phase, emu::self.smem, cta, grid, tid, p); });
    }
  return faults.load();
}

} // namespace lab::persistent_block
#endif
