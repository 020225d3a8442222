// SPDX-License-Identifier: Apache-2.0
// Attention kernel throughput: tstitch::cuda::kernels::attention for each path, timed with CUDA
// events (3 warm-up launches, then the median of 20 individually timed launches). The flash path
// is timed with its automatic tiling (kernels::flash_tiling; tiling column "auto:WxR") and with
// every tiling it offers (kernels::flash_tilings; "WxR": W warps of R query rows per CTA).
// FLOPs = 4 * batch * heads * tokens^2 * head_dim (Q K^T and P V, 2 FLOPs per multiply-add).
//
//   bench_attention [--csv] [--runs N]
//
// Prints a table (and, with --csv, the same rows as CSV after it). Exits 0 with a message when no
// CUDA device is present.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <optional>
#include <string>
#include <vector>

#include "tstitch/core/error.hpp"
#include "tstitch/cuda/kernels.hpp"
#include "tstitch/cuda/runtime.hpp"

namespace {

using tstitch::cuda::AttentionPath;

struct Config {
  AttentionPath path;
  std::optional<tstitch::cuda::kernels::FlashTiling> tiling; // flash only; empty: automatic
  int head_dim;
  int tokens;
  int batch;
  int heads;
  int runs;
};

struct Row {
  Config config;
  double ms = 0.0;
  double tflops = 0.0;
};

// Deterministic bf16 values in about [-2, 2) (exact bf16 patterns built from a xorshift stream;
// the timing does not depend on the values, but NaN/Inf patterns must not appear).
std::vector<std::uint16_t> fill_values(std::size_t count) {
  std::vector<std::uint16_t> values(count);
  std::uint64_t state = 0x9e3779b97f4a7c15ull;
  for (auto& v : values) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    const float x = static_cast<float>(static_cast<std::int64_t>(state >> 40) - (1 << 23)) /
                    static_cast<float>(1 << 22); // [-2, 2)
    std::uint32_t bits = 0;
    std::memcpy(&bits, &x, sizeof bits);
    v = static_cast<std::uint16_t>(bits >> 16); // truncation is fine for benchmark data
  }
  return values;
}

std::string tiling_text(tstitch::cuda::kernels::FlashTiling t) {
  return std::to_string(t.warps) + "x" + std::to_string(t.rows_per_warp);
}

// "auto:4x32" for the flash path's own choice, "4x16" for a forced tiling, "-" for other paths.
std::string tiling_column(const Config& c) {
  namespace k = tstitch::cuda::kernels;
  if (c.path != AttentionPath::flash)
    return "-";
  if (c.tiling)
    return tiling_text(*c.tiling);
  return "auto:" + tiling_text(k::flash_tiling(c.batch, c.tokens, c.heads, c.head_dim));
}

void launch(const Config& c, const std::uint16_t* qkv, std::uint16_t* out, cudaStream_t stream) {
  namespace k = tstitch::cuda::kernels;
  if (c.tiling)
    k::attention_flash(qkv, out, c.batch, c.tokens, c.heads, c.head_dim, *c.tiling, stream);
  else
    k::attention(qkv, out, c.batch, c.tokens, c.heads, c.head_dim, c.path, stream);
}

Row time_config(const Config& c, const std::uint16_t* qkv, std::uint16_t* out,
                cudaStream_t stream) {
  for (int i = 0; i < 3; ++i)
    launch(c, qkv, out, stream);
  cudaEvent_t start = nullptr;
  cudaEvent_t stop = nullptr;
  TSTITCH_CUDA_CHECK(cudaEventCreate(&start));
  TSTITCH_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<double> times;
  for (int i = 0; i < c.runs; ++i) {
    TSTITCH_CUDA_CHECK(cudaEventRecord(start, stream));
    launch(c, qkv, out, stream);
    TSTITCH_CUDA_CHECK(cudaEventRecord(stop, stream));
    TSTITCH_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0.f;
    TSTITCH_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    times.push_back(ms);
  }
  TSTITCH_CUDA_CHECK(cudaEventDestroy(start));
  TSTITCH_CUDA_CHECK(cudaEventDestroy(stop));
  std::sort(times.begin(), times.end());
  Row row{c};
  row.ms = times[times.size() / 2];
  const double flops =
      4.0 * c.batch * c.heads * static_cast<double>(c.tokens) * c.tokens * c.head_dim;
  row.tflops = flops / (row.ms * 1e-3) / 1e12;
  return row;
}

} // namespace

int main(int argc, char** argv) {
  bool csv = false;
  int runs = 20;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--csv") {
      csv = true;
    } else if (arg == "--runs" && i + 1 < argc) {
      runs = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: %s [--csv] [--runs N]\n", argv[0]);
      return 2;
    }
  }
  if (!tstitch::cuda::device_available()) {
    std::printf("bench_attention: no CUDA device; nothing to measure\n");
    return 0;
  }
  try {
    const auto info = tstitch::cuda::device_info();
    std::printf("device: %s (sm_%d%d, %d SMs)\n", info.name.c_str(), info.compute_major,
                info.compute_minor, info.multiprocessors);

    namespace k = tstitch::cuda::kernels;
    std::vector<Config> configs;
    // (batch, heads, head_dim, tokens): the H100 goals' head dims 64 and 72 at 256 and 1024 tokens
    // and 64 samples x 16 heads, then DiT-S/2 at 8 images with guidance (16 samples x 6 heads x
    // 256 tokens: a grid too small for 128-query CTAs to fill the GPU).
    struct Shape {
      int batch, heads, head_dim, tokens;
    };
    std::vector<Shape> shapes;
    for (int head_dim : {64, 72})
      for (int tokens : {256, 1024})
        shapes.push_back({64, 16, head_dim, tokens});
    shapes.push_back({16, 6, 64, 256});
    for (const Shape& s : shapes) {
      configs.push_back(
          {AttentionPath::flash, std::nullopt, s.head_dim, s.tokens, s.batch, s.heads, runs});
      for (const k::FlashTiling& t : k::flash_tilings)
        configs.push_back({AttentionPath::flash, t, s.head_dim, s.tokens, s.batch, s.heads, runs});
    }
    // The reference kernel is only a correctness check: one size, few runs.
    configs.push_back({AttentionPath::reference, std::nullopt, 64, 256, 64, 16, std::min(runs, 5)});
    // cuDNN's fused attention where libcudnn can be loaded (TSTITCH_CUDNN_LIBRARY or
    // libcudnn.so.9), at the same shapes as the hand-written kernel.
    for (const Shape& s : shapes)
      if (k::attention_supported(AttentionPath::cudnn, s.head_dim))
        configs.push_back(
            {AttentionPath::cudnn, std::nullopt, s.head_dim, s.tokens, s.batch, s.heads, runs});

    std::size_t max_qkv = 0;
    std::size_t max_out = 0;
    for (const Config& c : configs) {
      const std::size_t per_token =
          static_cast<std::size_t>(c.batch) * c.tokens * c.heads * c.head_dim;
      max_qkv = std::max(max_qkv, 3 * per_token);
      max_out = std::max(max_out, per_token);
    }
    tstitch::cuda::DeviceBuffer<std::uint16_t> qkv(static_cast<std::int64_t>(max_qkv));
    tstitch::cuda::DeviceBuffer<std::uint16_t> out(static_cast<std::int64_t>(max_out));
    const auto values = fill_values(max_qkv);
    TSTITCH_CUDA_CHECK(cudaMemcpy(qkv.data(), values.data(), max_qkv * sizeof(std::uint16_t),
                                  cudaMemcpyHostToDevice));
    // A copy from pageable memory may return before its DMA lands, and the timing stream is not
    // ordered after the legacy stream: wait for it.
    TSTITCH_CUDA_CHECK(cudaDeviceSynchronize());
    const cudaStream_t stream = tstitch::cuda::default_stream();

    std::vector<Row> rows;
    std::printf("%-10s %-10s %8s %7s %6s %6s %10s %9s\n", "path", "tiling", "head_dim", "tokens",
                "batch", "heads", "ms", "TFLOP/s");
    for (const Config& c : configs) {
      Row r{};
      try {
        r = time_config(c, qkv.data(), out.data(), stream);
      } catch (const tstitch::invalid_argument& e) {
        // cuDNN may reject a shape at its first call; the other rows are still worth having.
        std::printf("%-10s %-10s %8d %7d %6d %6d   rejected: %s\n",
                    std::string(tstitch::cuda::to_string(c.path)).c_str(), tiling_column(c).c_str(),
                    c.head_dim, c.tokens, c.batch, c.heads, e.what());
        continue;
      }
      rows.push_back(r);
      std::printf("%-10s %-10s %8d %7d %6d %6d %10.4f %9.1f\n",
                  std::string(tstitch::cuda::to_string(c.path)).c_str(), tiling_column(c).c_str(),
                  c.head_dim, c.tokens, c.batch, c.heads, r.ms, r.tflops);
      std::fflush(stdout);
    }
    if (csv) {
      std::printf("\npath,tiling,head_dim,tokens,batch,heads,ms,tflops\n");
      for (const Row& r : rows)
        std::printf("%s,%s,%d,%d,%d,%d,%.5f,%.2f\n",
                    std::string(tstitch::cuda::to_string(r.config.path)).c_str(),
                    tiling_column(r.config).c_str(), r.config.head_dim, r.config.tokens,
                    r.config.batch, r.config.heads, r.ms, r.tflops);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_attention: %s\n", e.what());
    return 1;
  }
  return 0;
}
