// SPDX-License-Identifier: Apache-2.0
#pragma once
// Warp and block operations for kernel bodies that are __host__ __device__: on the device the PTX
// instruction or intrinsic, on the host the CPU warp emulator (emulate.cuh). Only operations
// whose device form is the same in every lab kernel that uses them live here; a kernel that wants
// another form (a cp.async with a source size, an ldmatrix with a memory clobber) keeps its own.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

#include "emulate.cuh"

namespace lab::lane {

// Waits until at most N of this thread's committed cp.async groups are still in flight (on the
// host every copy has landed already).
template <int N> __host__ __device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__)
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

__host__ __device__ __forceinline__ void sync_block() {
#if defined(__CUDA_ARCH__)
  __syncthreads();
#else
  emu::self.block->arrive_and_wait();
#endif
}

__host__ __device__ __forceinline__ float shfl_xor(float value, int mask) {
#if defined(__CUDA_ARCH__)
  return __shfl_xor_sync(0xffffffffu, value, mask);
#else
  return emu::shfl_xor(value, mask);
#endif
}

// d += A B for one m16n8k16 tile, bf16 in, fp32 accumulate (register layouts in mma.cuh).
__host__ __device__ __forceinline__ void mma_16816(float (&d)[4], const std::uint32_t (&a)[4],
                                                   std::uint32_t b0, std::uint32_t b1) {
#if defined(__CUDA_ARCH__)
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
               "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  emu::mma(d, a, b0, b1);
#endif
}

// Two floats -> bf16x2, round to nearest even, `lo` in the low half.
__host__ __device__ __forceinline__ std::uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  std::uint32_t bits;
  std::memcpy(&bits, &v, 4);
  return bits;
}

} // namespace lab::lane
