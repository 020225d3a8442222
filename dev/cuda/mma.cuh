// SPDX-License-Identifier: Apache-2.0
#pragma once
// Warp-level tensor-core helpers of the kernel lab (sm_80 and later, sm_90/90a included): 16-byte
// cp.async copies into shared memory, ldmatrix and the bf16 mma.sync.m16n8k16 with fp32
// accumulation. Compiled for an older architecture, each traps instead (the lab's programs check
// the device's compute capability before launching a kernel that uses them).
//
// Register layouts of mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 (PTX ISA), with
// g = lane / 4 (the group) and t = lane % 4 (the thread in the group); each 32-bit register holds
// two bf16 of consecutive columns (k for A and B, n for C), the lower column in the low half:
//   A (16 x 16, row-major, 4 registers):
//     a0 = A[g][2t, 2t+1]   a1 = A[g+8][2t, 2t+1]   a2 = A[g][2t+8, 2t+9]   a3 = A[g+8][2t+8, 2t+9]
//   B (16 x 8, k by n, 2 registers):
//     b0 = B[2t, 2t+1][g]   b1 = B[2t+8, 2t+9][g]
//   C, D (16 x 8, fp32, 4 registers):
//     c0, c1 = C[g][2t, 2t+1]   c2, c3 = C[g+8][2t, 2t+1]
// ldmatrix.m8n8.x4 loads four 8 x 8 b16 matrices: lanes 8j..8j+7 give the addresses of the 8 rows
// (16 bytes each) of matrix j, and lane l receives in register j the elements (l / 4, 2 (l % 4))
// and (l / 4, 2 (l % 4) + 1) of matrix j: exactly a0..a3 when matrix j is A's 8 x 8 quarter
// listed above, and b0 (b1) when the matrix is 8 rows n by 8 columns k, 0..7 (8..15), of a
// row-major W[n][k], since B = W^T.
#include <cuda_runtime.h>

#include <cstdint>

namespace lab::mma {

/// The shared-memory address (as PTX's .shared state space takes it) of a generic pointer.
__device__ inline std::uint32_t smem_address(const void* p) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
}

/// 16 bytes global -> shared, asynchronously, bypassing L1 (both addresses 16-byte aligned).
__device__ inline void cp_async_16(std::uint32_t dst, const void* src) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst),
               "l"(__cvta_generic_to_global(src))
               : "memory");
#else
  (void)dst;
  (void)src;
  __trap();
#endif
}

/// Closes the group of cp.async copies issued by this thread since the last commit.
__device__ inline void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#else
  __trap();
#endif
}

/// Waits until at most `pending` of this thread's committed groups are still in flight.
template <int pending> __device__ inline void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(pending) : "memory");
#else
  __trap();
#endif
}

/// Four 8 x 8 bf16 matrices from shared memory (see the layout note above).
__device__ inline void ldmatrix_x4(std::uint32_t (&r)[4], std::uint32_t address) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address)
               : "memory");
#else
  (void)address;
  r[0] = r[1] = r[2] = r[3] = 0;
  __trap();
#endif
}

/// c += A B for one 16 x 8 x 16 tile: bf16 inputs, fp32 accumulators (layouts above).
__device__ inline void mma_bf16_16816(float (&c)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
                                      std::uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
               "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  (void)a;
  (void)b0;
  (void)b1;
  c[0] = c[1] = c[2] = c[3] = 0.0f;
  __trap();
#endif
}

} // namespace lab::mma
