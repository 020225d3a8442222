// SPDX-License-Identifier: Apache-2.0
#pragma once
// The harness every measurement of bench_dit_cuda shares: the median, the one CUDA event timer,
// the one graph-capture routine, benchmark inputs, and number formatting for the table and JSON.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "tstitch/core/step.hpp"
#include "tstitch/core/tensor.hpp"
#include "tstitch/cuda/runtime.hpp"
#include "tstitch/models/dit/config.hpp"
#include "tstitch/schedule/trajectory.hpp"

namespace bench {

using Json = nlohmann::json;

inline double median(std::vector<double> v) {
  if (v.empty())
    return std::nan("");
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/// Milliseconds between two events around whatever `work` enqueues on `stream`.
class EventTimer {
public:
  EventTimer() {
    TSTITCH_CUDA_CHECK(cudaEventCreate(&start_));
    TSTITCH_CUDA_CHECK(cudaEventCreate(&stop_));
  }
  ~EventTimer() {
    (void)cudaEventDestroy(start_);
    (void)cudaEventDestroy(stop_);
  }
  EventTimer(const EventTimer&) = delete;
  EventTimer& operator=(const EventTimer&) = delete;

  template <class Work> double time_ms(cudaStream_t stream, Work&& work) {
    TSTITCH_CUDA_CHECK(cudaEventRecord(start_, stream));
    work();
    TSTITCH_CUDA_CHECK(cudaEventRecord(stop_, stream));
    TSTITCH_CUDA_CHECK(cudaEventSynchronize(stop_));
    float ms = 0;
    TSTITCH_CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
    return static_cast<double>(ms);
  }

private:
  cudaEvent_t start_ = nullptr;
  cudaEvent_t stop_ = nullptr;
};

/// An instantiated CUDA graph of whatever `work` enqueues on `stream` (captured thread-locally).
/// A failure inside `work` ends the capture before it propagates: the stream is shared with the
/// measurements that follow.
class Graph {
public:
  template <class Work> static Graph capture(cudaStream_t stream, Work&& work) {
    cudaGraph_t graph = nullptr;
    TSTITCH_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    try {
      work();
    } catch (...) {
      cudaGraph_t broken = nullptr;
      (void)cudaStreamEndCapture(stream, &broken);
      if (broken != nullptr)
        (void)cudaGraphDestroy(broken);
      throw;
    }
    TSTITCH_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
    Graph result;
    const cudaError_t instantiated = cudaGraphInstantiate(&result.exec_, graph, 0);
    (void)cudaGraphDestroy(graph);
    TSTITCH_CUDA_CHECK(instantiated);
    return result;
  }
  Graph(Graph&& other) noexcept : exec_(std::exchange(other.exec_, nullptr)) {}
  Graph& operator=(Graph&&) = delete;
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  ~Graph() {
    if (exec_ != nullptr)
      (void)cudaGraphExecDestroy(exec_);
  }

  void launch(cudaStream_t stream) const { TSTITCH_CUDA_CHECK(cudaGraphLaunch(exec_, stream)); }

private:
  Graph() = default;
  cudaGraphExec_t exec_ = nullptr;
};

/// A small fast generator for benchmark inputs (statistical quality is irrelevant here; what
/// matters is that no input is zero, which would let the hardware skip work or flatter power).
struct XorShift {
  std::uint64_t s;
  explicit XorShift(std::uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  /// Uniform in [-1, 1).
  float next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return static_cast<float>(static_cast<double>(s >> 11) * 0x1.0p-52 - 1.0);
  }
};

/// Fills a device buffer with small non-zero values (bf16 0x3c3c = 0.0115, fp32 0x3c3c3c3c):
/// the same bytes move whatever the values.
template <class Buffer> void fill_small(Buffer& buffer, cudaStream_t stream) {
  TSTITCH_CUDA_CHECK(
      cudaMemsetAsync(buffer.data(), 0x3c, static_cast<std::size_t>(buffer.bytes()), stream));
}

inline std::string fixed(double v, int digits) {
  if (!std::isfinite(v))
    return "-";
  char text[64];
  std::snprintf(text, sizeof text, "%.*f", digits, v);
  return text;
}

/// NaN as JSON null (nlohmann writes NaN as null anyway; explicit for readers of this code).
inline Json number(double v) { return std::isfinite(v) ? Json(v) : Json(nullptr); }

/// The inputs of one forward batch.
struct Batch {
  tstitch::cuda::DeviceTensor x;
  tstitch::cuda::DeviceTensor out;
  std::vector<int> labels; // first half: classes; second half: the null class (guidance)
};

inline Batch make_batch(const tstitch::dit::Config& cfg, std::int64_t rows, std::uint64_t seed,
                        cudaStream_t stream) {
  Batch b{tstitch::cuda::DeviceTensor(rows, cfg.latent_shape()),
          tstitch::cuda::DeviceTensor(rows, {cfg.out_channels(), cfg.input_size, cfg.input_size}),
          {}};
  tstitch::Tensor host(rows, cfg.latent_shape());
  XorShift rng(seed);
  for (std::int64_t i = 0; i < host.view().batch() * host.view().sample_numel(); ++i)
    host.view().data()[i] = 1.7f * rng.next(); // roughly unit variance, like a noisy latent
  tstitch::cuda::upload(b.x.view(), host.view(), stream);
  for (std::int64_t i = 0; i < rows; ++i)
    b.labels.push_back(i < (rows + 1) / 2
                           ? static_cast<int>((seed * 131 + static_cast<std::uint64_t>(i) * 17) %
                                              static_cast<std::uint64_t>(cfg.num_classes))
                           : static_cast<int>(cfg.num_classes));
  return b;
}

/// The context of call i: a DDIM-like walk over the trajectory, so timestep updates are real.
inline tstitch::StepContext context(const tstitch::Trajectory& trajectory, int i) {
  const int steps = trajectory.steps();
  tstitch::StepContext ctx;
  ctx.step = i % steps;
  ctx.num_steps = steps;
  ctx.point = trajectory[ctx.step];
  return ctx;
}

} // namespace bench
