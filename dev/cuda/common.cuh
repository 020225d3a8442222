// SPDX-License-Identifier: Apache-2.0
#pragma once
// What every kernel-lab program shares: random inputs, device copies, a comparison against the
// CPU reference and an event timer. Each lab program is one op: a CPU reference, numbered
// versions of its kernels, a check of every version against the reference, then timings.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tstitch/core/error.hpp"
#include "tstitch/core/philox.hpp"
#include "tstitch/cuda/runtime.hpp"
#include "tstitch/io/half.hpp"

namespace lab {

using tstitch::cuda::DeviceBuffer;

/// Normal random values (the project's Philox stream), times `scale`.
inline std::vector<float> randn(std::size_t count, std::uint64_t seed, float scale = 1.0f) {
  std::vector<float> v(count);
  tstitch::fill_normal(v.data(), v.size(), tstitch::NoiseKey{seed, 0, 0, 0});
  for (float& x : v)
    x *= scale;
  return v;
}

inline std::vector<std::uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<std::uint16_t> out(v.size());
  std::transform(v.begin(), v.end(), out.begin(), tstitch::io::f32_to_bf16_rne);
  return out;
}

inline std::vector<float> from_bf16(const std::vector<std::uint16_t>& v) {
  std::vector<float> out(v.size());
  std::transform(v.begin(), v.end(), out.begin(), tstitch::io::bf16_to_f32);
  return out;
}

template <class T> DeviceBuffer<T> to_device(const std::vector<T>& host) {
  DeviceBuffer<T> d(static_cast<std::int64_t>(host.size()), "lab input");
  TSTITCH_CUDA_CHECK(
      cudaMemcpy(d.data(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

template <class T> std::vector<T> to_host(const DeviceBuffer<T>& d) {
  TSTITCH_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<T> host(static_cast<std::size_t>(d.size()));
  TSTITCH_CUDA_CHECK(
      cudaMemcpy(host.data(), d.data(), host.size() * sizeof(T), cudaMemcpyDeviceToHost));
  return host;
}

/// Relative L2 error of `got` against the fp64 reference over the entries `mask` keeps; prints
/// it and returns whether it is below `tolerance`.
template <class Mask>
bool validate(const char* what, const std::vector<float>& got, const std::vector<double>& want,
              double tolerance, Mask mask) {
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    if (!mask(i))
      continue;
    const double d = static_cast<double>(got[i]) - want[i];
    diff += d * d;
    norm += want[i] * want[i];
  }
  const double rel = std::sqrt(diff / std::max(norm, 1e-300));
  const bool ok = std::isfinite(rel) && rel < tolerance;
  std::printf("  %-32s rel L2 %.3e (bound %.0e) %s\n", what, rel, tolerance, ok ? "ok" : "FAIL");
  return ok;
}

/// Relative L2 error of `got` against the fp64 reference, infinity where it is not finite.
inline double rel_l2(const std::vector<float>& got, const std::vector<double>& want) {
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    const double e = static_cast<double>(got[i]) - want[i];
    diff += e * e;
    norm += want[i] * want[i];
  }
  const double rel = std::sqrt(diff / std::max(norm, 1e-300));
  return std::isfinite(rel) ? rel : INFINITY;
}

inline bool validate(const char* what, const std::vector<float>& got,
                     const std::vector<double>& want, double tolerance) {
  return validate(what, got, want, tolerance, [](std::size_t) { return true; });
}

/// Milliseconds per call of `launch` (which enqueues on the default stream), the mean of
/// `repeats` calls after one warm-up call, timed with CUDA events.
template <class Launch> double time_ms(int repeats, Launch launch) {
  launch();
  cudaEvent_t start = nullptr, stop = nullptr;
  TSTITCH_CUDA_CHECK(cudaEventCreate(&start));
  TSTITCH_CUDA_CHECK(cudaEventCreate(&stop));
  TSTITCH_CUDA_CHECK(cudaEventRecord(start));
  for (int i = 0; i < repeats; ++i)
    launch();
  TSTITCH_CUDA_CHECK(cudaEventRecord(stop));
  TSTITCH_CUDA_CHECK(cudaEventSynchronize(stop));
  float ms = 0;
  TSTITCH_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
  TSTITCH_CUDA_CHECK(cudaEventDestroy(start));
  TSTITCH_CUDA_CHECK(cudaEventDestroy(stop));
  return static_cast<double>(ms) / repeats;
}

/// Median over `samples` of the mean time of `calls` back-to-back calls, in microseconds.
template <class Launch> double median_us(int samples, int calls, Launch launch) {
  launch(); // warm-up
  cudaEvent_t start = nullptr, stop = nullptr;
  TSTITCH_CUDA_CHECK(cudaEventCreate(&start));
  TSTITCH_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<double> us;
  for (int i = 0; i < samples; ++i) {
    TSTITCH_CUDA_CHECK(cudaEventRecord(start));
    for (int c = 0; c < calls; ++c)
      launch();
    TSTITCH_CUDA_CHECK(cudaEventRecord(stop));
    TSTITCH_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    TSTITCH_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    us.push_back(1e3 * static_cast<double>(ms) / calls);
  }
  TSTITCH_CUDA_CHECK(cudaEventDestroy(start));
  TSTITCH_CUDA_CHECK(cudaEventDestroy(stop));
  std::sort(us.begin(), us.end());
  return us[us.size() / 2];
}

/// Microseconds per call: the median over `samples` of `calls` back-to-back calls on `stream`,
/// one event pair per sample (one call of a few µs is near the events' resolution). The calls are
/// replayed from a CUDA graph, as the CUDA DiT runs its forward, so host launch costs stay out;
/// where capture fails, they are launched directly and `graphed` says so.
template <class Launch>
double median_us_graphed(Launch launch, cudaStream_t stream, bool& graphed, int samples = 15,
                         int calls = 20) {
  for (int i = 0; i < 3; ++i) // warm-up, outside the capture (cuDNN builds its plan here)
    launch();
  TSTITCH_CUDA_CHECK(cudaStreamSynchronize(stream));
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  graphed = cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal) == cudaSuccess;
  if (graphed) {
    try {
      for (int c = 0; c < calls; ++c)
        launch();
    } catch (const std::exception& e) {
      std::printf("  (capture failed: %s; timing direct launches)\n", e.what());
      graphed = false;
    }
    graphed = cudaStreamEndCapture(stream, &graph) == cudaSuccess && graphed &&
              cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess;
  }
  (void)cudaGetLastError(); // a failed capture leaves its error here; direct launches follow
  cudaEvent_t start = nullptr, stop = nullptr;
  TSTITCH_CUDA_CHECK(cudaEventCreate(&start));
  TSTITCH_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<double> us;
  for (int s = 0; s < samples; ++s) {
    TSTITCH_CUDA_CHECK(cudaEventRecord(start, stream));
    if (graphed)
      TSTITCH_CUDA_CHECK(cudaGraphLaunch(exec, stream));
    else
      for (int c = 0; c < calls; ++c)
        launch();
    TSTITCH_CUDA_CHECK(cudaEventRecord(stop, stream));
    TSTITCH_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    TSTITCH_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    us.push_back(static_cast<double>(ms) * 1e3 / calls);
  }
  TSTITCH_CUDA_CHECK(cudaEventDestroy(start));
  TSTITCH_CUDA_CHECK(cudaEventDestroy(stop));
  if (exec != nullptr)
    TSTITCH_CUDA_CHECK(cudaGraphExecDestroy(exec));
  if (graph != nullptr)
    TSTITCH_CUDA_CHECK(cudaGraphDestroy(graph));
  std::sort(us.begin(), us.end());
  return us[us.size() / 2];
}

/// A residual stream h [rows, d] to normalise: per row a mean around 20 (the DiT's, which a
/// two-pass variance must survive) and a spread from 0.5 to 2.5, so rows differ in their
/// statistics and a row or statistics mix-up costs O(1).
inline std::vector<float> residual_stream(std::int64_t rows, int d) {
  std::vector<float> h = randn(static_cast<std::size_t>(rows * d), 41);
  const std::vector<float> offset = randn(static_cast<std::size_t>(rows), 42, 4.0f);
  for (std::int64_t r = 0; r < rows; ++r) {
    const float spread = 0.5f + 2.0f * static_cast<float>(r % 7) / 6.0f;
    for (int c = 0; c < d; ++c) {
      float& v = h[static_cast<std::size_t>(r * d + c)];
      v = 20.0f + offset[static_cast<std::size_t>(r)] + spread * v;
    }
  }
  return h;
}

/// The rows a check compares with its reference: every row up to 256, else 16 blocks of 16 rows
/// spread evenly from the first block to the last (so the first and last CTAs' rows are in).
inline std::vector<std::int64_t> checked_rows(std::int64_t rows) {
  std::vector<std::int64_t> out;
  if (rows <= 256) {
    for (std::int64_t r = 0; r < rows; ++r)
      out.push_back(r);
    return out;
  }
  const std::int64_t blocks = rows / 16;
  for (std::int64_t i = 0; i < 16; ++i)
    for (std::int64_t r = 0; r < 16; ++r)
      out.push_back(i * (blocks - 1) / 15 * 16 + r);
  return out;
}

/// Whether `call` refuses its arguments with tstitch::invalid_argument, printing what it said
/// (a kernel's launcher must name the value it cannot take before anything runs).
template <class Call> bool refuses(const char* what, Call call) {
  try {
    call();
  } catch (const tstitch::invalid_argument& e) {
    std::printf("  %s refused: %s\n", what, e.what());
    return true;
  }
  std::printf("  %s accepted: FAIL\n", what);
  return false;
}

/// A time for a csv line: "%.2f" of `us`.
inline std::string csv_time(double us) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.2f", us);
  return buffer;
}

/// One csv line of a GEMM lab program: csv,<op>,<shape>,<version>,<us>,<max_err>,<ok> (us empty
/// where not timed).
inline void print_csv(const char* op, const std::string& shape, const std::string& version,
                      const std::string& us, double max_err, bool ok) {
  std::printf("csv,%s,%s,%s,%s,%.3e,%d\n", op, shape.c_str(), version.c_str(), us.c_str(), max_err,
              ok ? 1 : 0);
}

/// The image counts the GEMM lab programs check and time: 1, 8 and 64; 1 alone under --quick.
inline std::vector<int> image_counts(bool quick) {
  return quick ? std::vector<int>{1} : std::vector<int>{1, 8, 64};
}

/// DiT-S/2 and DiT-XL/2 with their hidden sizes, the widths the GEMM lab programs cover.
inline constexpr std::pair<const char*, int> kDitWidths[] = {{"S2", 384}, {"XL2", 1152}};

/// Whether `flag` (e.g. "--quick": the check at the smallest shape only, no timing, as the
/// sanitizer runs of benchmarks/gpu/run.sh use it) is anywhere in argv; drops it from argv.
inline bool take_flag(int& argc, char** argv, std::string_view flag) {
  bool found = false;
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]) == flag)
      found = true;
    else
      argv[kept++] = argv[i];
  }
  argc = kept;
  return found;
}

/// The version to run from argv[1] (0: all), refusing anything outside [0, versions].
inline int version_argument(int argc, char** argv, int versions) {
  if (argc < 2)
    return 0;
  const int v = std::atoi(argv[1]);
  if (v < 0 || v > versions) {
    std::fprintf(stderr, "usage: %s [version 1..%d, default all]\n", argv[0], versions);
    std::exit(2);
  }
  return v;
}

/// The command line of lab_gemm_seam and lab_gemm_prologue:
/// [version 1..versions, 0 or none: all] [--quick] | --emulate.
struct Arguments {
  int only = 0;         // the version to run, 0: all
  bool quick = false;   // the check at the smallest shape only, no timing
  bool emulate = false; // the CPU emulation instead of the device
  bool bad = false;     // anything else: print usage, exit 2
};

inline Arguments parse_arguments(int argc, char** argv, int versions) {
  Arguments a;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg(argv[i]);
    if (arg == "--emulate") { // alone or not at all
      a.emulate = argc == 2;
      a.bad = !a.emulate;
      return a;
    }
    if (arg == "--quick")
      a.quick = true;
    else if (arg.size() == 1 && arg[0] >= '1' && arg[0] <= '0' + versions)
      a.only = arg[0] - '0';
    else if (arg != "0") {
      a.bad = true;
      return a;
    }
  }
  return a;
}

/// The usage line of a program taking parse_arguments' command line; returns exit code 2.
inline int usage(const char* program, int versions) {
  std::fprintf(stderr, "usage: %s [version 1..%d, default all] [--quick] | --emulate\n", program,
               versions);
  return 2;
}

/// Exit code 77 (skipped) when there is no CUDA device to run on.
inline void require_device(const char* program) {
  if (!tstitch::cuda::device_available()) {
    std::printf("%s: no CUDA device; skipped\n", program);
    std::exit(77);
  }
}

/// The device's properties, after require_device; exit code 77 (skipped) where it is older than
/// sm_80, which has no cp.async, ldmatrix or bf16 mma.sync (mma.cuh): a skip, not a failed launch
/// reported as a mismatch.
inline cudaDeviceProp require_bf16_mma(const char* program) {
  require_device(program);
  cudaDeviceProp prop{};
  TSTITCH_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  if (prop.major < 8) {
    std::printf("%s: %s (sm_%d%d) has no bf16 mma.sync; skipped\n", program, prop.name, prop.major,
                prop.minor);
    std::exit(77);
  }
  return prop;
}

/// The line naming the device a lab program's timings come from.
inline void print_device(const cudaDeviceProp& prop) {
  std::printf("device: %s (sm_%d%d, %d SMs)\n", prop.name, prop.major, prop.minor,
              prop.multiProcessorCount);
}

/// main's body for a lab program: lab_main's exit code; 2 with the message for a refused value
/// (tstitch::invalid_argument), 1 for any other error.
template <class Main> int run_main(int argc, char** argv, Main lab_main) {
  try {
    return lab_main(argc, argv);
  } catch (const tstitch::invalid_argument& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}

} // namespace lab
