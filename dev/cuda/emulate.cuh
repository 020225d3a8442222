// SPDX-License-Identifier: Apache-2.0
#pragma once
// The kernel lab's CPU warp emulator (host code only): a kernel whose body is __host__ __device__
// runs on the host with each lane of a CTA as a std::thread (run_block), and its warp
// instructions (ldmatrix, mma.sync, shuffles) meet in an exchange where each lane takes its result
// from the lanes' operands as the PTX ISA's fragment tables say (mma.cuh lists them); every shared
// and global access is bounds-checked and counted as a fault when outside. It checks the index
// arithmetic and the layouts the code relies on; not timing, races or cp.async ordering (copies
// land at once on the host), nor the hardware's own reading of the tables.
#if !defined(__CUDA_ARCH__)
#include <algorithm>
#include <array>
#include <atomic>
#include <barrier>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

namespace lab::emu {

struct Warp {
  std::barrier<> barrier{32};
  std::array<std::array<std::uint32_t, 6>, 32> slot{}; // the most a lane publishes: mma's 6
};

/// `bytes` of host memory from `begin`: one input or output of the emulated kernel.
struct Range {
  const void* begin;
  std::size_t bytes;
};

// Where the calling (emulated) lane is, and what it may touch.
struct Lane {
  unsigned char* smem = nullptr;
  std::size_t smem_bytes = 0;
  std::vector<Range> readable; // the inputs
  std::vector<Range> writable; // the outputs
  std::barrier<>* block = nullptr;
  Warp* warp = nullptr;
  int lane = 0;
  std::atomic<int>* faults = nullptr;
};
inline thread_local Lane self;

inline void fault(const char* what, std::size_t at) {
  if (self.faults->fetch_add(1) < 8)
    std::fprintf(stderr, "emulation: %s (%zu, lane %d)\n", what, at, self.lane);
}

inline bool inside(const Range& r, const void* p, std::size_t bytes) {
  const auto* b = static_cast<const unsigned char*>(r.begin);
  const auto* q = static_cast<const unsigned char*>(p);
  return q >= b && q + bytes <= b + r.bytes;
}

// Global read of `bytes` (aligned to `bytes`) inside one of the inputs.
inline bool readable(const void* p, std::size_t bytes) {
  const auto address = reinterpret_cast<std::uintptr_t>(p);
  if (address % bytes == 0)
    for (const Range& r : self.readable)
      if (inside(r, p, bytes))
        return true;
  fault("global load outside the inputs or misaligned", address);
  return false;
}

// Global store of `bytes` (aligned to `bytes`) inside an output.
inline bool writable(const void* p, std::size_t bytes) {
  const auto address = reinterpret_cast<std::uintptr_t>(p);
  if (address % bytes == 0)
    for (const Range& r : self.writable)
      if (inside(r, p, bytes))
        return true;
  fault("global store outside the outputs or misaligned", address);
  return false;
}

// Shared access of `bytes` (aligned to `bytes`) at `offset`.
inline bool smem_ok(std::uint32_t offset, std::uint32_t bytes) {
  if (offset % bytes == 0 && offset + bytes <= self.smem_bytes)
    return true;
  fault("shared access out of bounds or misaligned", offset);
  return false;
}

inline std::uint16_t smem_load16(std::uint32_t offset) {
  std::uint16_t v = 0;
  if (smem_ok(offset, 2))
    std::memcpy(&v, self.smem + offset, 2);
  return v;
}

inline float bf16_value(std::uint32_t bits16) {
  const std::uint32_t bits = (bits16 & 0xffffu) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// cp.async of 16 bytes, landing at once; valid false (a source size of 0) zero-fills the 16 bytes
// and reads nothing.
inline void cp_async_16(std::uint32_t dst, const void* src, bool valid = true) {
  if (!smem_ok(dst, 16))
    return;
  if (!valid)
    std::memset(self.smem + dst, 0, 16);
  else if (readable(src, 16))
    std::memcpy(self.smem + dst, src, 16);
}

// Every lane publishes `words`, then `result` runs with all 32 lanes' words visible; the second
// barrier keeps a fast lane from overwriting its slot before the slow ones have read it.
template <class Result> inline void exchange(const std::uint32_t* words, int count, Result result) {
  Warp& w = *self.warp;
  std::copy(words, words + count, w.slot[static_cast<std::size_t>(self.lane)].begin());
  w.barrier.arrive_and_wait();
  result(w.slot);
  w.barrier.arrive_and_wait();
}

// ldmatrix.m8n8.{x2,x4}[.trans].b16: lanes 8i..8i+7 address the rows of matrix i (16-byte
// aligned); lane L receives in r[i] the pair (row L/4, columns 2(L%4), +1) of matrix i, or with
// .trans of its transpose, i.e. (rows 2(L%4), +1 of column L/4), the lower index in the low half.
inline void ldmatrix(std::uint32_t* r, int matrices, bool trans, std::uint32_t address) {
  if (address % 16 != 0 || address + 16 > self.smem_bytes)
    fault("ldmatrix row address out of bounds or misaligned", address);
  exchange(&address, 1, [&](const auto& slot) {
    const int g = self.lane >> 2, t = self.lane & 3;
    for (int i = 0; i < matrices; ++i) {
      std::uint32_t lo, hi;
      if (!trans) {
        const std::uint32_t row = slot[static_cast<std::size_t>(8 * i + g)][0];
        lo = smem_load16(row + 4 * t);
        hi = smem_load16(row + 4 * t + 2);
      } else {
        lo = smem_load16(slot[static_cast<std::size_t>(8 * i + 2 * t)][0] + 2 * g);
        hi = smem_load16(slot[static_cast<std::size_t>(8 * i + 2 * t + 1)][0] + 2 * g);
      }
      r[i] = lo | (hi << 16);
    }
  });
}

// mma.m16n8k16.row.col f32 += bf16 x bf16, rebuilt from the PTX ISA's fragment tables
// (g = L/4, t = L%4): A element (row, k) is in lane 4 (row % 8) + (k % 8) / 2, register
// (row / 8) + 2 (k / 8), half k % 2; B element (k, n) in lane 4 n + (k % 8) / 2, register k / 8
// (b0, b1), half k % 2; lane L's D registers e = 0..3 are (row g + 8 (e / 2), column 2t + e % 2).
inline void mma(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
  const std::uint32_t words[6] = {a[0], a[1], a[2], a[3], b0, b1};
  float out[4];
  exchange(words, 6, [&](const auto& slot) {
    const auto A = [&](int row, int k) {
      const auto& w = slot[static_cast<std::size_t>(4 * (row % 8) + (k % 8) / 2)];
      return bf16_value(w[static_cast<std::size_t>(row / 8 + 2 * (k / 8))] >> (16 * (k % 2)));
    };
    const auto B = [&](int k, int n) {
      const auto& w = slot[static_cast<std::size_t>(4 * n + (k % 8) / 2)];
      return bf16_value(w[static_cast<std::size_t>(4 + k / 8)] >> (16 * (k % 2)));
    };
    const int g = self.lane >> 2, t = self.lane & 3;
    for (int e = 0; e < 4; ++e) {
      const int row = g + 8 * (e / 2), col = 2 * t + e % 2;
      double acc = d[e];
      for (int k = 0; k < 16; ++k)
        acc += static_cast<double>(A(row, k)) * B(k, col);
      out[e] = static_cast<float>(acc);
    }
  });
  std::copy(out, out + 4, d);
}

inline float shfl_xor(float value, int mask) {
  std::uint32_t bits;
  std::memcpy(&bits, &value, 4);
  float result = 0;
  exchange(&bits, 1, [&](const auto& slot) {
    std::memcpy(&result, &slot[static_cast<std::size_t>(self.lane ^ mask)][0], 4);
  });
  return result;
}

/// Runs `lanes` emulated lanes (whole warps) of one block, each as a std::thread calling
/// body(tid) with its context set; returns once all are done.
template <class Body>
void run_block(int lanes, unsigned char* smem, std::size_t smem_bytes,
               const std::vector<Range>& inputs, const std::vector<Range>& outputs,
               std::atomic<int>& faults, Body body) {
  std::barrier<> block(lanes);
  std::vector<std::unique_ptr<Warp>> warps;
  for (int w = 0; w < lanes / 32; ++w)
    warps.push_back(std::make_unique<Warp>());
  std::vector<std::thread> threads;
  for (int tid = 0; tid < lanes; ++tid)
    threads.emplace_back([&, tid] {
      self.smem = smem;
      self.smem_bytes = smem_bytes;
      self.readable = inputs;
      self.writable = outputs;
      self.block = &block;
      self.warp = warps[static_cast<std::size_t>(tid / 32)].get();
      self.lane = tid % 32;
      self.faults = &faults;
      body(tid);
    });
  for (std::thread& t : threads)
    t.join();
}

} // namespace lab::emu
#endif
