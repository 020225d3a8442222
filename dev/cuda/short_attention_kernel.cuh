// SPDX-License-Identifier: Apache-2.0
#pragma once
// Kernel lab: attention for short sequences (tokens <= 256; head dim 64, or 72 padded to 80 in
// the Q K^T contraction), on the library's layouts: qkv bf16 [batch, tokens, 3, heads, head_dim]
// in, out bf16 [batch, tokens, heads, head_dim], out = softmax(q k^T / sqrt(head_dim)) v.
//
// One CTA per (sample, head, query tile) of W warps; each warp owns 16 query rows (one mma M
// tile). K and V of the (sample, head) are held whole in shared memory (bf16, cp.async), so one
// pass suffices: S = Q K^T for all 256 keys stays in registers (32 n8 tiles = 128 fp32 per
// thread), the row max is exact (no online rescaling), P = exp(S - max) is packed to bf16 in
// registers and is, as it stands, the A operand of P V. The copies are issued as six cp.async
// groups (Q with keys 0-63, keys 64-127, 128-191, 192-255, V rows 0-127, 128-255) so Q K^T
// starts on the first 64 keys while the rest is still arriving.
//
// Tile choice (short_attention_warps): W = 4 (64 queries per CTA) whenever that still gives at
// least one CTA per SM, else 2, else 1. Shared memory per CTA is (16 W + 512) rows x (pad + 8)
// bf16: 82,944 bytes at head dim 64 and W = 4 (101,376 at 72), so two CTAs (8 warps) share an
// SM; registers (ptxas, sm_90a: 190 at W = 4, 215 at 2, 254 at 1, no spills) allow the same.
// DiT-S/2 (6 heads, 256 tokens) on 132 SMs:
//   8 images: W = 4, 8 * 6 * 4 = 192 CTAs: every SM busy, 60 of them with two CTAs, and each
//             (sample, head)'s K and V read from L2 by 4 CTAs (12 MB in all);
//   1 image:  W = 4 would give 24 CTAs and W = 2 48, so W = 1: 6 * 16 = 96 CTAs of one warp
//             (a 1-image problem has only 96 warps' worth of 16-row tiles).
// DiT-XL/2 (16 heads, head dim 72): 8 images W = 4, 512 CTAs; 1 image W = 1, 256 CTAs.
// Several heads per CTA would only add shared memory per CTA (each head needs its own K and V),
// so CTAs stay one head each. The lab times every W so the rule can be checked against the card.
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
#include "lane_ops.cuh"
#include "tstitch/core/error.hpp"
#include "tstitch/cuda/runtime.hpp"

// `#pragma unroll` for the device pass only: the body is also host code (the emulation), where
// the host compiler does not know the pragma.
#if defined(__CUDA_ARCH__)
#define SHORT_ATTN_UNROLL _Pragma("unroll")
#else
#define SHORT_ATTN_UNROLL
#endif

namespace lab::short_attn {

inline constexpr int kMaxTokens = 256;

template <int HD, int W> struct Shape {
  static_assert(HD == 64 || HD == 72, "head dim 64 or 72");
  static_assert(W == 1 || W == 2 || W == 4);
  // Q K^T runs in k16 steps: 72 is padded to 80 with zero columns in shared memory (Q and K);
  // P V's output columns run in n8 tiles and need no padding (V's pad columns are never read).
  static constexpr int kPadDim = (HD + 15) / 16 * 16;
  // Row stride in elements: kPadDim / 8 is even, so the stride is an odd number (9 or 11) of
  // 16-byte chunks and the 8 row addresses of one ldmatrix 8x8 matrix hit 8 different bank
  // groups; every row start stays 16-byte aligned for cp.async.
  static constexpr int kStride = kPadDim + 8;
  static constexpr int kWarps = W;
  static constexpr int kThreads = 32 * W;
  static constexpr int kBlockM = 16 * W;           // queries per CTA
  static constexpr int kChunks = HD / 8;           // 16-byte chunks per q/k/v row in global memory
  static constexpr int kQkSteps = kPadDim / 16;    // k16 steps of Q K^T: 4 or 5
  static constexpr int kSTiles = kMaxTokens / 8;   // n8 key tiles of S: 32
  static constexpr int kPvSteps = kMaxTokens / 16; // k16 key steps of P V: 16
  static constexpr int kOTiles = HD / 8;           // n8 tiles of O: 8 or 9
  static constexpr int kKeyGroup = 64;             // keys per cp.async group of K
  static constexpr int kKGroups = kMaxTokens / kKeyGroup; // 4
  static constexpr int kVGroup = 128;                     // V rows per cp.async group
  static constexpr int kVGroups = kMaxTokens / kVGroup;   // 2
  static constexpr int kGroups = kKGroups + kVGroups;     // 6 commit groups
  static constexpr std::uint32_t kRowBytes = kStride * 2;
  // Q | K (256 rows) | V (256 rows), bf16.
  static constexpr int kSmemBytes = (kBlockM + 2 * kMaxTokens) * kStride * 2;
};

// The kernel body below is __host__ __device__: on the host (lab_short_attention --emulate) it
// runs on the lab's CPU warp emulator (emulate.cuh), one std::thread per lane, every shared access
// and every global load bounds-checked, without a GPU.

// ---- PTX wrappers (`volatile`: kept in order with each other and with __syncthreads) ----------

// Those whose device form is the same in the other lab kernels are in lane_ops.cuh.
using lane::cp_async_wait;
using lane::mma_16816;
using lane::pack_bf16x2;
using lane::shfl_xor;
using lane::sync_block;

__host__ __device__ __forceinline__ std::uint32_t smem_u32(const void* p) {
#if defined(__CUDA_ARCH__)
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
#else
  return static_cast<std::uint32_t>(static_cast<const unsigned char*>(p) - emu::self.smem);
#endif
}

// 16-byte global -> shared copy (L2 only). valid false: nothing is read, the 16 bytes become
// zeros, so keys and queries past the end are zero rows (V's must be: 0 * NaN would be NaN).
__host__ __device__ __forceinline__ void cp_async_16(std::uint32_t dst, const void* src,
                                                     bool valid) {
#if defined(__CUDA_ARCH__)
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(valid ? 16 : 0));
#else
  emu::cp_async_16(dst, src, valid); // lands at once
#endif
}
__host__ __device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__)
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}
// The same with N known only after unrolling (folds to one wait).
__host__ __device__ __forceinline__ void cp_async_wait_pending(int n) {
  switch (n) {
  case 0:
    cp_async_wait<0>();
    break;
  case 1:
    cp_async_wait<1>();
    break;
  case 2:
    cp_async_wait<2>();
    break;
  case 3:
    cp_async_wait<3>();
    break;
  case 4:
    cp_async_wait<4>();
    break;
  default:
    cp_async_wait<5>();
    break;
  }
}
__host__ __device__ __forceinline__ void sync_warp() {
#if defined(__CUDA_ARCH__)
  __syncwarp();
#else
  emu::self.warp->barrier.arrive_and_wait();
#endif
}

// ldmatrix .x4: lanes 8i..8i+7 give the 8 row addresses (16 bytes each) of matrix i; every
// thread receives in r[i] row lane / 4, columns 2 * (lane % 4) + {0, 1} of matrix i (.trans: of
// matrix i transposed).
__host__ __device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], std::uint32_t address) {
#if defined(__CUDA_ARCH__)
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
#else
  emu::ldmatrix(r, 4, false, address);
#endif
}
__host__ __device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4],
                                                           std::uint32_t address) {
#if defined(__CUDA_ARCH__)
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
#else
  emu::ldmatrix(r, 4, true, address);
#endif
}
// .x2: only lanes 0-15 give addresses (matrix 0, then 1).
__host__ __device__ __forceinline__ void ldmatrix_x2_trans(std::uint32_t (&r)[2],
                                                           std::uint32_t address) {
#if defined(__CUDA_ARCH__)
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(address));
#else
  emu::ldmatrix(r, 2, true, address);
#endif
}

// mma_16816 (lane_ops.cuh), D += A B for one m16n8k16 tile, bf16 in, fp32 accumulate, with
// g = lane / 4, t = lane % 4 (PTX ISA, "matrix fragments for mma.m16n8k16", 16-bit A/B):
//   A (16 x 16, row): a0 = (row g,     cols 2t, 2t+1)    a1 = (row g + 8, cols 2t, 2t+1)
//                     a2 = (row g,     cols 2t+8, 2t+9)  a3 = (row g + 8, cols 2t+8, 2t+9)
//   B (16 x 8, col):  b0 = (rows 2t, 2t+1, col g)        b1 = (rows 2t+8, 2t+9, col g)
//   D (16 x 8, f32):  d0, d1 = (row g, cols 2t, 2t+1)    d2, d3 = (row g + 8, cols 2t, 2t+1)
// Each 32-bit register holds the lower column (or row, for B) in its low half.

// 2^x on the SFU (ex2.approx, ~2 ulp; 2^-inf = +0).
__host__ __device__ __forceinline__ float exp2_approx(float x) {
#if defined(__CUDA_ARCH__)
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
#else
  return std::exp2(x);
#endif
}

// Enqueues cp.async copies of ROWS rows [row0, row0 + ROWS) of one head's q, k or v (row t at
// base + t * row_stride) into shared memory at `dst` (stride S::kStride); rows at or past `tokens`
// are zero-filled. Row r, 16-byte chunk c goes to dst + r * kRowBytes + 16 c.
template <class S, int ROWS>
__host__ __device__ __forceinline__ void load_rows(std::uint32_t dst, const __nv_bfloat16* base,
                                                   int row0, int tokens, int row_stride, int tid) {
  constexpr int kTotal = ROWS * S::kChunks;
  constexpr int kIterations = (kTotal + S::kThreads - 1) / S::kThreads;
  SHORT_ATTN_UNROLL
  for (int i = 0; i < kIterations; ++i) {
    const int c = tid + i * S::kThreads;
    if (kTotal % S::kThreads != 0 && c >= kTotal)
      break;
    const int r = c / S::kChunks;
    const int chunk = c % S::kChunks;
    const int t = row0 + r;
    const bool valid = t < tokens;
    const __nv_bfloat16* src = base + ((valid ? t : 0) * row_stride + chunk * 8);
    cp_async_16(dst + static_cast<std::uint32_t>(r) * S::kRowBytes +
                    static_cast<std::uint32_t>(chunk * 16),
                src, valid);
  }
}

// One CTA's work, thread `tid` of block `block` (blockIdx.x, threadIdx.x on the GPU; an emulated
// lane on the host). grid.x = batch * heads * q_tiles, the q tiles of one (sample, head) adjacent
// (they read the same K and V, which then come from L2); block = 32 W threads; shared memory
// `smem`, Shape<HD, W>::kSmemBytes. Needs 1 <= tokens <= 256 and tokens * 3 * heads * HD < 2^31
// (the launcher checks both).
template <int HD, int W>
__host__ __device__ __forceinline__ void
short_attention_body(unsigned char* smem, unsigned block, int tid,
                     const __nv_bfloat16* __restrict__ qkv, __nv_bfloat16* __restrict__ out,
                     int tokens, int heads, int q_tiles, float scale_log2) {
  using S = Shape<HD, W>;
  __nv_bfloat16* const sQ = reinterpret_cast<__nv_bfloat16*>(smem);
  const std::uint32_t q_addr = smem_u32(sQ);
  const std::uint32_t k_addr = q_addr + S::kBlockM * S::kRowBytes; // K rows follow Q's
  const std::uint32_t v_addr = k_addr + kMaxTokens * S::kRowBytes;

  const int warp = tid >> 5;
  const int lane = tid & 31;
  const int g = lane >> 2; // fragment row (group) of this thread
  const int t4 = lane & 3; // fragment column pair of this thread
  const int q_tile = static_cast<int>(block % static_cast<unsigned>(q_tiles));
  const int bh = static_cast<int>(block / static_cast<unsigned>(q_tiles));
  const int h = bh % heads;
  const std::int64_t b = bh / heads;
  const int row_stride = 3 * heads * HD; // elements between consecutive tokens' qkv rows
  const __nv_bfloat16* const q_base =
      qkv + b * tokens * row_stride + static_cast<std::int64_t>(h) * HD;
  const __nv_bfloat16* const k_base = q_base + heads * HD;
  const __nv_bfloat16* const v_base = k_base + heads * HD;
  const int q0 = q_tile * S::kBlockM;

  // Zero the contraction padding (columns HD..kPadDim-1: one 16-byte chunk at HD 72) of every Q
  // and K row; cp.async never writes there. Q's kBlockM rows and K's 256 are contiguous.
  if constexpr (S::kPadDim != HD) {
    for (int r = tid; r < S::kBlockM + kMaxTokens; r += S::kThreads)
      *reinterpret_cast<uint4*>(sQ + r * S::kStride + HD) = make_uint4(0u, 0u, 0u, 0u);
  }

  // Commit groups, oldest first: 0 = Q and keys 0-63, 1..3 = keys 64-255 by 64, 4 and 5 = V rows
  // 0-127 and 128-255. Group i has landed once at most kGroups - 1 - i groups are pending.
  load_rows<S, S::kBlockM>(q_addr, q_base, q0, tokens, row_stride, tid);
  SHORT_ATTN_UNROLL
  for (int c = 0; c < S::kKGroups; ++c) {
    load_rows<S, S::kKeyGroup>(k_addr + c * S::kKeyGroup * S::kRowBytes, k_base, c * S::kKeyGroup,
                               tokens, row_stride, tid);
    cp_async_commit();
  }
  SHORT_ATTN_UNROLL
  for (int c = 0; c < S::kVGroups; ++c) {
    load_rows<S, S::kVGroup>(v_addr + c * S::kVGroup * S::kRowBytes, v_base, c * S::kVGroup, tokens,
                             row_stride, tid);
    cp_async_commit();
  }

  // ---- S = Q K^T: this warp's 16 query rows x 256 keys, n8 key tile j in s[j] ----------------
  float s[S::kSTiles][4];
  SHORT_ATTN_UNROLL
  for (int j = 0; j < S::kSTiles; ++j)
    s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
  std::uint32_t qf[S::kQkSteps][4]; // Q's A fragments, every k16 step
  const int warp_row0 = warp * 16;  // within the CTA's Q tile
  // The key groups are independent of each other's arrival: key group c waits for commit group
  // c only (the later ones may still be in flight).
  SHORT_ATTN_UNROLL
  for (int c = 0; c < S::kKGroups; ++c) {
    cp_async_wait_pending(S::kGroups - 1 - c); // this thread's copies of group c landed ...
    sync_block();                              // ... and everyone's
    if (c == 0) {
      // A fragment of k16 step ks via ldmatrix.x4: lane L addresses row (L % 16), column
      // 16 ks + 8 (L / 16) of the warp's Q rows, so matrix 0 = rows 0-7 / cols 0-7 (a0),
      // 1 = rows 8-15 / cols 0-7 (a1), 2 = rows 0-7 / cols 8-15 (a2), 3 = rows 8-15 / cols 8-15
      // (a3): exactly the A layout above.
      const std::uint32_t q_frag =
          q_addr + static_cast<std::uint32_t>(warp_row0 + (lane & 15)) * S::kRowBytes +
          static_cast<std::uint32_t>((lane >> 4) * 16);
      SHORT_ATTN_UNROLL
      for (int ks = 0; ks < S::kQkSteps; ++ks)
        ldmatrix_x4(qf[ks], q_frag + ks * 32);
    }
    if (c * S::kKeyGroup < tokens) { // uniform: whole key groups past the end stay 0 (masked)
      SHORT_ATTN_UNROLL
      for (int ks = 0; ks < S::kQkSteps; ++ks) {
        SHORT_ATTN_UNROLL
        for (int jp = 0; jp < S::kKeyGroup / 16; ++jp) {
          // B = K^T, B[k = dim][n = key] = K[key][dim]: b0 of key tile n is K rows (keys)
          // n*8 + g, dims 2t, 2t+1 = row g of a plain (non-transposed) 8x8 ldmatrix of K.
          // Lane L addresses key 16 jp' + (L % 8) + 8 (L / 16), dim 16 ks + 8 ((L / 8) % 2):
          // matrix 0 = keys +0-7 / dims 0-7 (b0 of tile 2 jp'), 1 = keys +0-7 / dims 8-15 (b1),
          // 2 = keys +8-15 / dims 0-7 (b0 of tile 2 jp' + 1), 3 = keys +8-15 / dims 8-15 (b1).
          const int key = c * S::kKeyGroup + jp * 16 + (lane & 7) + ((lane >> 4) << 3);
          const int col = ks * 16 + ((lane >> 3) & 1) * 8;
          std::uint32_t kb[4];
          ldmatrix_x4(kb, k_addr + static_cast<std::uint32_t>(key) * S::kRowBytes +
                              static_cast<std::uint32_t>(col * 2));
          const int j = c * (S::kKeyGroup / 8) + 2 * jp; // n8 key tile of matrix 0/1
          mma_16816(s[j], qf[ks], kb[0], kb[1]);
          mma_16816(s[j + 1], qf[ks], kb[2], kb[3]);
        }
      }
    }
  }

  // ---- exact softmax over the row: s[j][e] is row g + 8 (e / 2), key 8 j + 2 t + (e % 2) ------
  const float kNegInf = -INFINITY;
  float row_max[2] = {kNegInf, kNegInf};
  SHORT_ATTN_UNROLL
  for (int j = 0; j < S::kSTiles; ++j)
    SHORT_ATTN_UNROLL
  for (int e = 0; e < 4; ++e) {
    if (tokens < kMaxTokens && 8 * j + 2 * t4 + (e & 1) >= tokens)
      s[j][e] = kNegInf;
    row_max[e >> 1] = fmaxf(row_max[e >> 1], s[j][e]);
  }
  float m_scaled[2];
  SHORT_ATTN_UNROLL
  for (int r = 0; r < 2; ++r) {
    // The 4 threads of a quad (lanes 4g..4g+3) hold the row's 256 keys between them.
    row_max[r] = fmaxf(row_max[r], shfl_xor(row_max[r], 1));
    row_max[r] = fmaxf(row_max[r], shfl_xor(row_max[r], 2));
    // Key 0 is always valid (tokens >= 1), so the max is finite for finite inputs; the guard
    // keeps an all -inf row from computing -inf - -inf = NaN.
    m_scaled[r] = row_max[r] == kNegInf ? 0.f : row_max[r] * scale_log2;
  }
  // P = 2^(S scale log2(e) - max scale log2(e)) = exp((S - max) / sqrt(d)). The accumulators of
  // n8 tiles 2 kk and 2 kk + 1, packed to bf16, are the A fragment of k16 key step kk of P V:
  // a0 = row g keys 16 kk + 2t, +1 = tile 2 kk d0, d1;  a1 = row g + 8, same keys = d2, d3;
  // a2 = row g keys 16 kk + 8 + 2t, +1 = tile 2 kk + 1 d0, d1;  a3 = its d2, d3.
  float row_sum[2] = {0.f, 0.f}; // this thread's part; the quad reduces at the end
  std::uint32_t p[S::kPvSteps][4];
  SHORT_ATTN_UNROLL
  for (int kk = 0; kk < S::kPvSteps; ++kk) {
    SHORT_ATTN_UNROLL
    for (int half = 0; half < 2; ++half) {
      float(&t)[4] = s[2 * kk + half];
      SHORT_ATTN_UNROLL
      for (int e = 0; e < 4; ++e) {
        t[e] = exp2_approx(fmaf(t[e], scale_log2, -m_scaled[e >> 1]));
        row_sum[e >> 1] += t[e];
      }
      p[kk][2 * half] = pack_bf16x2(t[0], t[1]);
      p[kk][2 * half + 1] = pack_bf16x2(t[2], t[3]);
    }
  }

  // ---- O = P V: 16 rows x HD, n8 tile jo in o[jo] -------------------------------------------
  float o[S::kOTiles][4];
  SHORT_ATTN_UNROLL
  for (int jo = 0; jo < S::kOTiles; ++jo)
    o[jo][0] = o[jo][1] = o[jo][2] = o[jo][3] = 0.f;
  SHORT_ATTN_UNROLL
  for (int kk = 0; kk < S::kPvSteps; ++kk) {
    if (kk % (S::kVGroup / 16) == 0) { // first k16 step of V group kk / 8: wait for it
      cp_async_wait_pending(S::kVGroups - 1 - kk / (S::kVGroup / 16));
      sync_block();
    }
    if (kk * 16 < tokens) { // uniform; P is 0 past the end anyway
      // B[k = key][n = dim] = V[key][dim] (V stored row-major by key), so b0 of dim tile n is
      // keys 2t, 2t+1 at dim n*8 + g = row g of the TRANSPOSED 8x8 block (keys x dims):
      // ldmatrix .trans. Lane L addresses key 16 kk + (L % 8) + 8 ((L / 8) % 2), dim
      // 16 jp + 8 (L / 16): matrix 0 = keys 0-7 / dims 0-7 (b0 of dim tile 2 jp), 1 = keys 8-15
      // / dims 0-7 (b1), 2 = keys 0-7 / dims 8-15 (b0 of tile 2 jp + 1), 3 = keys 8-15 / dims
      // 8-15 (b1).
      SHORT_ATTN_UNROLL
      for (int jp = 0; jp < S::kOTiles / 2; ++jp) {
        const int key = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
        const int col = jp * 16 + (lane >> 4) * 8;
        std::uint32_t vb[4];
        ldmatrix_x4_trans(vb, v_addr + static_cast<std::uint32_t>(key) * S::kRowBytes +
                                  static_cast<std::uint32_t>(col * 2));
        mma_16816(o[2 * jp], p[kk], vb[0], vb[1]);
        mma_16816(o[2 * jp + 1], p[kk], vb[2], vb[3]);
      }
      if constexpr (S::kOTiles % 2 != 0) {
        // HD 72: dim tile 8 alone. .x2 .trans: lanes 0-7 address keys 0-7 (b0), lanes 8-15
        // keys 8-15 (b1), dims 64-71; lanes 16-31 repeat valid addresses (ignored).
        const int key = kk * 16 + (lane & 15);
        constexpr int kCol = (S::kOTiles - 1) * 8;
        std::uint32_t vb[2];
        ldmatrix_x2_trans(vb, v_addr + static_cast<std::uint32_t>(key) * S::kRowBytes +
                                  static_cast<std::uint32_t>(kCol * 2));
        mma_16816(o[S::kOTiles - 1], p[kk], vb[0], vb[1]);
      }
    }
  }

  // ---- epilogue: normalise, stage the bf16 rows in this warp's own Q rows, 16-byte stores ----
  float inv[2];
  SHORT_ATTN_UNROLL
  for (int r = 0; r < 2; ++r) {
    float sum = row_sum[r];
    sum += shfl_xor(sum, 1);
    sum += shfl_xor(sum, 2);
    inv[r] = sum > 0.f ? 1.f / sum : 0.f;
  }
  // Only this warp ever read its 16 Q rows (into qf, long before); the sync orders those reads
  // before the overwrite for every lane.
  sync_warp();
  __nv_bfloat16* const sO = sQ + warp_row0 * S::kStride;
  SHORT_ATTN_UNROLL
  for (int jo = 0; jo < S::kOTiles; ++jo) {
    *reinterpret_cast<std::uint32_t*>(sO + g * S::kStride + jo * 8 + 2 * t4) =
        pack_bf16x2(o[jo][0] * inv[0], o[jo][1] * inv[0]);
    *reinterpret_cast<std::uint32_t*>(sO + (g + 8) * S::kStride + jo * 8 + 2 * t4) =
        pack_bf16x2(o[jo][2] * inv[1], o[jo][3] * inv[1]);
  }
  sync_warp();
  const int q_first = q0 + warp_row0;
  __nv_bfloat16* const out_rows =
      out + ((b * tokens + q_first) * heads + h) * static_cast<std::int64_t>(HD);
  SHORT_ATTN_UNROLL
  for (int c = lane; c < 16 * S::kChunks; c += 32) {
    const int r = c / S::kChunks;
    const int chunk = c % S::kChunks;
    if (q_first + r < tokens)
      *reinterpret_cast<uint4*>(out_rows + static_cast<std::int64_t>(r) * heads * HD + chunk * 8) =
          *reinterpret_cast<const uint4*>(sO + r * S::kStride + chunk * 8);
  }
}

template <int HD, int W>
__global__ void __launch_bounds__(Shape<HD, W>::kThreads)
    short_attention_kernel(const __nv_bfloat16* __restrict__ qkv, __nv_bfloat16* __restrict__ out,
                           int tokens, int heads, int q_tiles, float scale_log2) {
  extern __shared__ __align__(16) unsigned char short_attn_smem[];
  short_attention_body<HD, W>(short_attn_smem, blockIdx.x, static_cast<int>(threadIdx.x), qkv, out,
                              tokens, heads, q_tiles, scale_log2);
}

// ---- host side ---------------------------------------------------------------------------------

/// Warps per CTA for this problem on a card with `multiprocessors` SMs: the largest of 4, 2, 1
/// that still gives at least one CTA per SM, else 1 (see the tile choice at the top).
inline int short_attention_warps(int batch, int tokens, int heads, int multiprocessors) {
  for (const int w : {4, 2}) {
    const std::int64_t ctas =
        static_cast<std::int64_t>(batch) * heads * ((tokens + 16 * w - 1) / (16 * w));
    if (ctas >= multiprocessors)
      return w;
  }
  return 1;
}

template <int HD, int W>
void launch_shape(const __nv_bfloat16* qkv, __nv_bfloat16* out, int batch, int tokens, int heads,
                  cudaStream_t stream) {
  using S = Shape<HD, W>;
  // Above the default 48 KB of dynamic shared memory: raised once per process (the lab uses
  // one device).
  static std::atomic<bool> configured{false};
  if (!configured.load(std::memory_order_acquire)) {
    TSTITCH_CUDA_CHECK(cudaFuncSetAttribute(
        short_attention_kernel<HD, W>, cudaFuncAttributeMaxDynamicSharedMemorySize, S::kSmemBytes));
    configured.store(true, std::memory_order_release);
  }
  const std::int64_t q_tiles = (tokens + S::kBlockM - 1) / S::kBlockM;
  const std::int64_t blocks = q_tiles * batch * heads;
  tstitch::require(blocks <= 0x7fffffff, "short attention batch * heads * query tiles", blocks,
                   "must fit the grid (at most 2^31 - 1 blocks)");
  const float scale_log2 =
      static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(HD)));
  short_attention_kernel<HD, W>
      <<<static_cast<unsigned>(blocks), S::kThreads, S::kSmemBytes, stream>>>(
          qkv, out, tokens, heads, static_cast<int>(q_tiles), scale_log2);
  TSTITCH_CUDA_CHECK(cudaGetLastError());
}

template <int HD>
void launch_head_dim(const __nv_bfloat16* qkv, __nv_bfloat16* out, int batch, int tokens, int heads,
                     int warps, cudaStream_t stream) {
  switch (warps) {
  case 1:
    launch_shape<HD, 1>(qkv, out, batch, tokens, heads, stream);
    return;
  case 2:
    launch_shape<HD, 2>(qkv, out, batch, tokens, heads, stream);
    return;
  case 4:
    launch_shape<HD, 4>(qkv, out, batch, tokens, heads, stream);
    return;
  default:
    tstitch::throw_invalid_argument("short attention warps per CTA", warps, "must be 1, 2 or 4");
  }
}

/// Whether short_attention takes this problem: 1..256 tokens, head dim 64 or 72.
inline bool short_attention_supported(int tokens, int head_dim) {
  return tokens >= 1 && tokens <= kMaxTokens && (head_dim == 64 || head_dim == 72);
}

/// kernels::attention's op for short sequences, same layouts (qkv bf16 [batch, tokens, 3, heads,
/// head_dim], out bf16 [batch, tokens, heads, head_dim]). warps: 1, 2 or 4 per CTA, 0 = choose
/// (short_attention_warps). Throws tstitch::invalid_argument for a problem it does not take.
inline void short_attention(const std::uint16_t* qkv, std::uint16_t* out, int batch, int tokens,
                            int heads, int head_dim, int warps, cudaStream_t stream) {
  tstitch::require(batch >= 1, "short attention batch", batch, "must be at least 1");
  tstitch::require(heads >= 1, "short attention heads", heads, "must be at least 1");
  tstitch::require(tokens >= 1 && tokens <= kMaxTokens, "short attention tokens", tokens,
                   "must be 1..256 (K and V of a head are held whole in shared memory)");
  tstitch::require(head_dim == 64 || head_dim == 72, "short attention head_dim", head_dim,
                   "must be 64 or 72 (72 is padded to 80 in Q K^T)");
  tstitch::require(static_cast<std::int64_t>(tokens) * 3 * heads * head_dim < 0x7fffffff,
                   "short attention tokens * 3 * heads * head_dim",
                   static_cast<std::int64_t>(tokens) * 3 * heads * head_dim,
                   "must be below 2^31 (32-bit offsets within a sample)");
  // Every row offset is a multiple of 16 bytes (head_dim % 8 == 0): only the bases need checks.
  tstitch::require(reinterpret_cast<std::uintptr_t>(qkv) % 16 == 0, "short attention qkv address",
                   reinterpret_cast<std::uintptr_t>(qkv), "must be 16-byte aligned");
  tstitch::require(reinterpret_cast<std::uintptr_t>(out) % 16 == 0, "short attention out address",
                   reinterpret_cast<std::uintptr_t>(out), "must be 16-byte aligned");
  if (warps == 0) {
    int device = 0, multiprocessors = 0;
    TSTITCH_CUDA_CHECK(cudaGetDevice(&device));
    TSTITCH_CUDA_CHECK(
        cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, device));
    warps = short_attention_warps(batch, tokens, heads, multiprocessors);
  }
  const auto* in = reinterpret_cast<const __nv_bfloat16*>(qkv);
  auto* dst = reinterpret_cast<__nv_bfloat16*>(out);
  if (head_dim == 64)
    launch_head_dim<64>(in, dst, batch, tokens, heads, warps, stream);
  else
    launch_head_dim<72>(in, dst, batch, tokens, heads, warps, stream);
}

} // namespace lab::short_attn

#if !defined(__CUDA_ARCH__)
namespace lab::short_attn {

/// short_attention on the CPU (see the emulation note above): the same body, one std::thread per
/// lane, CTAs one after another; writes `out` as the kernel would and returns the number of
/// faults (shared or global accesses out of bounds or misaligned). Slow: for small problems.
template <int HD, int W>
int emulate_shape(const std::uint16_t* qkv, std::size_t qkv_elements, std::uint16_t* out, int batch,
                  int tokens, int heads) {
  using S = Shape<HD, W>;
  const int q_tiles = (tokens + S::kBlockM - 1) / S::kBlockM;
  const int blocks = q_tiles * batch * heads;
  const float scale_log2 =
      static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(HD)));
  std::atomic<int> faults{0};
  std::vector<unsigned char> smem(S::kSmemBytes);
  // The lanes read qkv only; their stores of out are plain host stores.
  const std::vector<emu::Range> inputs = {{qkv, qkv_elements * 2}};
  for (int block = 0; block < blocks; ++block) {
    // Shared memory starts as all ones (bf16 NaN): whatever is read before it is written
    // poisons the output.
    std::fill(smem.begin(), smem.end(), static_cast<unsigned char>(0xff));
    emu::run_block(S::kThreads, smem.data(), smem.size(), inputs, {}, faults, [&](int tid) {
      short_attention_body<HD, W>(smem.data(), static_cast<unsigned>(block), tid,
                                  reinterpret_cast<const __nv_bfloat16*>(qkv),
                                  reinterpret_cast<__nv_bfloat16*>(out), tokens, heads, q_tiles,
                                  scale_log2);
    });
  }
  return faults.load();
}

/// emulate_shape for a head dim (64, 72) and warps per CTA (1, 2, 4).
inline int emulate_short_attention(const std::uint16_t* qkv, std::size_t qkv_elements,
                                   std::uint16_t* out, int batch, int tokens, int heads,
                                   int head_dim, int warps) {
  tstitch::require(short_attention_supported(tokens, head_dim), "short attention tokens x head_dim",
                   tstitch::detail::concat(tokens, "x", head_dim), "is not supported");
  const auto by_warps = [&]<int HD>() {
    switch (warps) {
    case 1:
      return emulate_shape<HD, 1>(qkv, qkv_elements, out, batch, tokens, heads);
    case 2:
      return emulate_shape<HD, 2>(qkv, qkv_elements, out, batch, tokens, heads);
    case 4:
      return emulate_shape<HD, 4>(qkv, qkv_elements, out, batch, tokens, heads);
    default:
      tstitch::throw_invalid_argument("short attention warps per CTA", warps, "must be 1, 2 or 4");
    }
  };
  return head_dim == 64 ? by_warps.template operator()<64>() : by_warps.template operator()<72>();
}

} // namespace lab::short_attn
#endif
