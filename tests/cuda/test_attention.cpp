// SPDX-License-Identifier: Apache-2.0
// The CUDA attention kernels (flash and reference paths, and the cuDNN path where cuDNN can be
// loaded) against a CPU fp64 reference computed from the same bf16-rounded inputs. Every case
// prints one line (path, shape, rel L2, max error) so a single GPU run gives enough to fix a
// failure; a failing case also names the first output index whose error exceeds 5% of max
// |reference|, as (sample, token, head, dim).
#include <catch2/catch.hpp>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "tstitch/core/error.hpp"
#include "tstitch/cuda/kernels.hpp"
#include "tstitch/cuda/runtime.hpp"
#include "tstitch/io/half.hpp"

namespace {

using tstitch::cuda::AttentionPath;
using tstitch::cuda::DeviceBuffer;
using tstitch::io::bf16_to_f32;
using tstitch::io::f32_to_bf16_rne;

constexpr std::uint16_t kPoison = 0xffffu; // a bf16 NaN: cudaMemset(0xff) writes it everywhere
constexpr std::int64_t kGuard = 64;        // poisoned elements before and after the output

struct Case {
  int batch;
  int tokens;
  int heads;
  int head_dim;
  float q_scale; // q ~ N(0, q_scale^2): larger values make the softmax sharper
};

std::string describe(AttentionPath path, const Case& c) {
  std::ostringstream out;
  out << tstitch::cuda::to_string(path) << " batch=" << c.batch << " tokens=" << c.tokens
      << " heads=" << c.heads << " head_dim=" << c.head_dim << " q_scale=" << c.q_scale;
  return out.str();
}

// qkv [batch, tokens, 3, heads, head_dim], already rounded to bf16.
std::vector<std::uint16_t> random_qkv(const Case& c, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  const std::int64_t per_part = static_cast<std::int64_t>(c.heads) * c.head_dim;
  std::vector<std::uint16_t> qkv(static_cast<std::size_t>(c.batch) * c.tokens * 3 * per_part);
  for (std::size_t i = 0; i < qkv.size(); ++i) {
    const bool is_q = (static_cast<std::int64_t>(i) / per_part) % 3 == 0;
    qkv[i] = f32_to_bf16_rne(normal(rng) * (is_q ? c.q_scale : 1.f));
  }
  return qkv;
}

// out [batch, tokens, heads, head_dim] in fp64.
std::vector<double> cpu_attention(const std::vector<std::uint16_t>& qkv, const Case& c) {
  const std::int64_t row = 3LL * c.heads * c.head_dim;
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
  std::vector<double> out(static_cast<std::size_t>(c.batch) * c.tokens * c.heads * c.head_dim);
  std::vector<double> p(static_cast<std::size_t>(c.tokens));
  for (int b = 0; b < c.batch; ++b)
    for (int h = 0; h < c.heads; ++h) {
      const std::int64_t base =
          static_cast<std::int64_t>(b) * c.tokens * row + static_cast<std::int64_t>(h) * c.head_dim;
      const std::int64_t k_off = static_cast<std::int64_t>(c.heads) * c.head_dim;
      for (int i = 0; i < c.tokens; ++i) {
        double m = -INFINITY;
        for (int j = 0; j < c.tokens; ++j) {
          double s = 0.0;
          for (int d = 0; d < c.head_dim; ++d)
            s += static_cast<double>(
                     bf16_to_f32(qkv[static_cast<std::size_t>(base + i * row + d)])) *
                 bf16_to_f32(qkv[static_cast<std::size_t>(base + j * row + k_off + d)]);
          p[static_cast<std::size_t>(j)] = s * scale;
          m = std::max(m, s * scale);
        }
        double sum = 0.0;
        for (double& v : p) {
          v = std::exp(v - m);
          sum += v;
        }
        for (int d = 0; d < c.head_dim; ++d) {
          double acc = 0.0;
          for (int j = 0; j < c.tokens; ++j)
            acc += p[static_cast<std::size_t>(j)] *
                   bf16_to_f32(qkv[static_cast<std::size_t>(base + j * row + 2 * k_off + d)]);
          out[static_cast<std::size_t>(
              ((static_cast<std::int64_t>(b) * c.tokens + i) * c.heads + h) * c.head_dim + d)] =
              acc / sum;
        }
      }
    }
  return out;
}

struct Comparison {
  double rel_l2 = 0.0;
  double max_abs_err = 0.0;
  double max_abs_ref = 0.0;
  std::int64_t non_finite = 0; // outputs left NaN (never written) or Inf
  std::int64_t first_non_finite = -1;
  std::int64_t first_bad = -1;        // first index with |err| > 5e-2 * max|ref|
  std::int64_t guard_overwritten = 0; // poisoned guard elements before/after the output changed
  std::string first_bad_text;
};

std::string index_text(std::int64_t index, const Case& c) {
  const std::int64_t d = index % c.head_dim;
  const std::int64_t h = (index / c.head_dim) % c.heads;
  const std::int64_t t = (index / c.head_dim / c.heads) % c.tokens;
  const std::int64_t b = index / c.head_dim / c.heads / c.tokens;
  std::ostringstream out;
  out << index << " (sample " << b << ", token " << t << ", head " << h << ", dim " << d << ")";
  return out.str();
}

// Runs one path on the GPU and compares with `expected`. in_graph: the launch is captured into a
// CUDA graph (as DitModel captures its forward) and the graph replayed once.
// tiling: forces a flash tiling (kernels::attention_flash) instead of the automatic choice.
Comparison run_and_compare(AttentionPath path, const Case& c, const std::vector<std::uint16_t>& qkv,
                           const std::vector<double>& expected, bool in_graph = false,
                           std::optional<tstitch::cuda::kernels::FlashTiling> tiling = {}) {
  const auto out_count = static_cast<std::int64_t>(expected.size());
  DeviceBuffer<std::uint16_t> d_qkv(static_cast<std::int64_t>(qkv.size()));
  DeviceBuffer<std::uint16_t> d_out(out_count + 2 * kGuard);
  // Input copy and poison on the kernel's own stream: tstitch's stream is non-blocking, so a
  // plain cudaMemset/cudaMemcpy (legacy default stream) is NOT ordered before the kernel. With
  // the GPU idle the race never showed; with other processes on the GPU the memset landed after
  // the kernel and the output read back as all poison.
  const cudaStream_t stream = tstitch::cuda::default_stream();
  TSTITCH_CUDA_CHECK(cudaMemcpyAsync(d_qkv.data(), qkv.data(), qkv.size() * sizeof(std::uint16_t),
                                     cudaMemcpyHostToDevice, stream));
  TSTITCH_CUDA_CHECK(
      cudaMemsetAsync(d_out.data(), 0xff, static_cast<std::size_t>(d_out.bytes()), stream));
  const auto launch = [&] {
    namespace k = tstitch::cuda::kernels;
    if (tiling)
      k::attention_flash(d_qkv.data(), d_out.data() + kGuard, c.batch, c.tokens, c.heads,
                         c.head_dim, *tiling, stream);
    else
      k::attention(d_qkv.data(), d_out.data() + kGuard, c.batch, c.tokens, c.heads, c.head_dim,
                   path, stream);
  };
  if (in_graph) {
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    TSTITCH_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    try {
      launch();
    } catch (...) {
      (void)cudaStreamEndCapture(stream, &graph);
      if (graph != nullptr)
        (void)cudaGraphDestroy(graph);
      throw;
    }
    TSTITCH_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
    TSTITCH_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    TSTITCH_CUDA_CHECK(cudaGraphLaunch(exec, stream));
    TSTITCH_CUDA_CHECK(cudaStreamSynchronize(stream));
    TSTITCH_CUDA_CHECK(cudaGraphExecDestroy(exec));
    TSTITCH_CUDA_CHECK(cudaGraphDestroy(graph));
  } else {
    launch();
  }
  TSTITCH_CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<std::uint16_t> got(static_cast<std::size_t>(d_out.size()));
  TSTITCH_CUDA_CHECK(cudaMemcpy(got.data(), d_out.data(), got.size() * sizeof(std::uint16_t),
                                cudaMemcpyDeviceToHost));

  Comparison r;
  for (std::int64_t i = 0; i < kGuard; ++i) {
    r.guard_overwritten += got[static_cast<std::size_t>(i)] != kPoison;
    r.guard_overwritten += got[static_cast<std::size_t>(kGuard + out_count + i)] != kPoison;
  }
  for (double v : expected)
    r.max_abs_ref = std::max(r.max_abs_ref, std::abs(v));
  double err2 = 0.0;
  double ref2 = 0.0;
  for (std::int64_t i = 0; i < out_count; ++i) {
    const double ref = expected[static_cast<std::size_t>(i)];
    const double value = bf16_to_f32(got[static_cast<std::size_t>(kGuard + i)]);
    if (!std::isfinite(value)) {
      if (r.non_finite++ == 0)
        r.first_non_finite = i;
      continue;
    }
    const double err = std::abs(value - ref);
    err2 += err * err;
    ref2 += ref * ref;
    r.max_abs_err = std::max(r.max_abs_err, err);
    if (r.first_bad < 0 && err > 5e-2 * r.max_abs_ref) {
      r.first_bad = i;
      std::ostringstream text;
      text << index_text(i, c) << ": got " << value << ", expected " << ref;
      r.first_bad_text = text.str();
    }
  }
  r.rel_l2 = ref2 > 0.0 ? std::sqrt(err2 / ref2) : std::sqrt(err2);
  return r;
}

void check_case(AttentionPath path, const Case& c, std::uint32_t seed, bool in_graph = false,
                std::optional<tstitch::cuda::kernels::FlashTiling> tiling = {}) {
  const auto qkv = random_qkv(c, seed);
  const auto expected = cpu_attention(qkv, c);
  const Comparison r = run_and_compare(path, c, qkv, expected, in_graph, tiling);
  std::string name = describe(path, c) + (in_graph ? " (captured in a CUDA graph)" : "");
  if (tiling)
    name +=
        " tiling=" + std::to_string(tiling->warps) + "x" + std::to_string(tiling->rows_per_warp);
  std::printf(
      "attention %-70s rel_l2=%.3e max_err=%.3e max_ref=%.3e non_finite=%lld guard=%lld%s\n",
      name.c_str(), r.rel_l2, r.max_abs_err, r.max_abs_ref, static_cast<long long>(r.non_finite),
      static_cast<long long>(r.guard_overwritten), r.first_bad >= 0 ? " FIRST-BAD" : "");
  std::fflush(stdout);
  INFO(name);
  INFO("rel L2 " << r.rel_l2 << ", max |err| " << r.max_abs_err << ", max |ref| " << r.max_abs_ref);
  INFO("first |err| > 5e-2 max|ref|: " << (r.first_bad >= 0 ? r.first_bad_text : "none"));
  INFO("non-finite outputs (unwritten or NaN): "
       << r.non_finite << ", first at "
       << (r.first_non_finite >= 0 ? index_text(r.first_non_finite, c) : "none"));
  INFO("guard elements around the output overwritten: " << r.guard_overwritten);
  CHECK(r.non_finite == 0);
  CHECK(r.guard_overwritten == 0);
  CHECK(r.first_bad < 0);
  CHECK(r.rel_l2 < 1e-2);
}

bool have_gpu() {
  if (tstitch::cuda::device_available())
    return true;
  WARN("no CUDA device: attention test not run");
  return false;
}

} // namespace

TEST_CASE("cuda attention: flash and reference match the CPU (DiT head dims)",
          "[cuda][attention]") {
  if (!have_gpu())
    return;
  const int head_dims[] = {16, 32, 64, 72};
  const int token_counts[] = {1, 7, 64, 100, 256};
  struct BatchHeads {
    int batch;
    int heads;
  };
  const BatchHeads shapes[] = {{1, 1}, {2, 3}};
  std::uint32_t seed = 1;
  for (int head_dim : head_dims)
    for (int tokens : token_counts)
      for (const BatchHeads& bh : shapes) {
        const Case c{bh.batch, tokens, bh.heads, head_dim, 2.f};
        for (AttentionPath path : {AttentionPath::flash, AttentionPath::reference}) {
          DYNAMIC_SECTION(describe(path, c)) { check_case(path, c, seed); }
        }
        ++seed;
      }
}

TEST_CASE("cuda attention: long sequences, sharp softmax, other head dims", "[cuda][attention]") {
  if (!have_gpu())
    return;
  const Case cases[] = {
      {1, 1024, 2, 64, 1.f}, // 16 key tiles, 8 query tiles: the online rescaling over many tiles
      {2, 300, 1, 72, 1.f},  // odd length across several query and key tiles
      {1, 256, 2, 64, 8.f},  // scores with std ~8: large running-max corrections
      {1, 129, 1, 72, 8.f},  // one query row in the second tile, one key in the last key tile
      {1, 100, 2, 8, 2.f},   // other multiples of 8 (template instantiations)
      {1, 100, 2, 40, 2.f},  {1, 100, 2, 96, 2.f}, {1, 100, 2, 128, 2.f}, {3, 65, 2, 120, 2.f},
  };
  std::uint32_t seed = 1000;
  for (const Case& c : cases) {
    for (AttentionPath path : {AttentionPath::flash, AttentionPath::reference}) {
      DYNAMIC_SECTION(describe(path, c)) { check_case(path, c, seed); }
    }
    ++seed;
  }
}

TEST_CASE("cuda attention: every flash tiling matches the CPU", "[cuda][attention]") {
  if (!have_gpu())
    return;
  namespace k = tstitch::cuda::kernels;
  // Each tiling (warps x query rows per warp) is its own kernel: cover partial query and key
  // tiles, several CTAs per (sample, head), padded head dims and the DiT shapes.
  const Case cases[] = {
      {2, 256, 6, 64, 2.f},  // DiT-S/2, B/2 head dim
      {1, 300, 2, 72, 2.f},  // DiT-XL/2 head dim, ragged query and key tiles
      {1, 1024, 1, 64, 1.f}, // many key tiles
      {1, 77, 2, 40, 8.f},   // padded contraction (40 -> 48), sharp softmax
      {2, 33, 1, 128, 2.f},  // the largest head dim
  };
  std::uint32_t seed = 3000;
  for (const Case& c : cases) {
    for (const k::FlashTiling& t : k::flash_tilings) {
      DYNAMIC_SECTION(describe(AttentionPath::flash, c)
                      << " tiling=" << t.warps << "x" << t.rows_per_warp) {
        check_case(AttentionPath::flash, c, seed, false, t);
      }
    }
    ++seed;
  }
}

TEST_CASE("cuda attention: the automatic flash tiling follows the grid size and head dim",
          "[cuda][attention]") {
  if (!have_gpu())
    return;
  namespace k = tstitch::cuda::kernels;
  // Few CTAs (short sequences, small batch): 64-query CTAs; enough for 1.5 waves of two
  // 128-query CTAs per multiprocessor: 4 x 32, or 4 x 16 above head dim 96. The batch for the
  // latter follows the device's SM count.
  const int sms = tstitch::cuda::device_info().multiprocessors;
  const int heads = 16, tokens = 256;
  const int wide_batch = (3 * sms + 2 * heads * 2 - 1) / (2 * heads * 2) + 1;
  CHECK(k::flash_tiling(2, tokens, 6, 64) == k::FlashTiling{4, 16});
  CHECK(k::flash_tiling(wide_batch, tokens, heads, 64) == k::FlashTiling{4, 32});
  CHECK(k::flash_tiling(wide_batch, tokens, heads, 96) == k::FlashTiling{4, 32});
  CHECK(k::flash_tiling(wide_batch, tokens, heads, 128) == k::FlashTiling{4, 16});
}

TEST_CASE("cuda attention: reference path handles head dims flash does not", "[cuda][attention]") {
  if (!have_gpu())
    return;
  for (const Case& c :
       {Case{2, 33, 3, 12, 2.f}, Case{1, 17, 1, 1, 2.f}, Case{1, 40, 1, 200, 1.f}}) {
    DYNAMIC_SECTION(describe(AttentionPath::reference, c)) {
      check_case(AttentionPath::reference, c, 77);
    }
  }
}

TEST_CASE("cuda attention: the cudnn path matches the CPU where cuDNN is available",
          "[cuda][attention][cudnn]") {
  if (!have_gpu())
    return;
  if (!tstitch::cuda::kernels::attention_supported(AttentionPath::cudnn, 64)) {
    // Not loadable here (or not built): the refusal itself is checked in the test below.
    WARN("cuDNN attention is not available here: cudnn path not compared");
    return;
  }
  // DiT's head dims, the token count of DiT-S/XL at 256 px (256) and of smaller latents (64),
  // and one that is no multiple of the engines' tiles (77). A shape cuDNN rejects fails its
  // section with cuDNN's message (tstitch::invalid_argument naming the shape).
  const int head_dims[] = {64, 72};
  const int token_counts[] = {64, 256, 77};
  std::uint32_t seed = 2000;
  for (int head_dim : head_dims)
    for (int tokens : token_counts) {
      const Case c{2, tokens, 3, head_dim, 2.f};
      DYNAMIC_SECTION(describe(AttentionPath::cudnn, c)) {
        check_case(AttentionPath::cudnn, c, seed);
      }
      ++seed;
    }
  const Case more[] = {
      {1, 1024, 2, 64, 1.f}, // long sequence
      {1, 256, 2, 64, 8.f},  // sharp softmax
      {4, 100, 1, 128, 2.f}, // the largest head dim the path accepts
      {3, 65, 2, 16, 2.f},   // a small head dim (the tiny test DiTs have 16)
  };
  for (const Case& c : more) {
    DYNAMIC_SECTION(describe(AttentionPath::cudnn, c)) {
      check_case(AttentionPath::cudnn, c, seed);
    }
    ++seed;
  }
  // A shape seen for the first time while the stream is being captured: the plan is built (and
  // its workspace allocated) inside the capture, then the graph replays the cuDNN launch.
  const Case captured{2, 96, 3, 72, 2.f};
  DYNAMIC_SECTION(describe(AttentionPath::cudnn, captured) << " in a CUDA graph") {
    check_case(AttentionPath::cudnn, captured, seed, true);
  }
}

TEST_CASE("cuda attention: supported paths and invalid arguments", "[cuda][attention]") {
  if (!have_gpu())
    return;
  namespace k = tstitch::cuda::kernels;
  CHECK(k::attention_supported(AttentionPath::flash, 64));
  CHECK(k::attention_supported(AttentionPath::flash, 72));
  CHECK(k::attention_supported(AttentionPath::flash, 128));
  CHECK_FALSE(k::attention_supported(AttentionPath::flash, 12));
  CHECK_FALSE(k::attention_supported(AttentionPath::flash, 136));
  CHECK_FALSE(k::attention_supported(AttentionPath::flash, 0));
  CHECK(k::attention_supported(AttentionPath::reference, 12));
  CHECK(k::attention_supported(AttentionPath::reference, 256));
  CHECK_FALSE(k::attention_supported(AttentionPath::reference, 257));
  const bool cudnn = k::attention_supported(AttentionPath::cudnn, 64);
  if (cudnn) {
    CHECK(k::attention_supported(AttentionPath::cudnn, 72));
    CHECK(k::attention_supported(AttentionPath::cudnn, 128));
    CHECK_FALSE(k::attention_supported(AttentionPath::cudnn, 12));
    CHECK_FALSE(k::attention_supported(AttentionPath::cudnn, 136));
    CHECK_FALSE(k::attention_supported(AttentionPath::cudnn, 0));
  }

  DeviceBuffer<std::uint16_t> qkv(3 * 4 * 2 * 64);
  DeviceBuffer<std::uint16_t> out(4 * 2 * 64);
  const cudaStream_t stream = tstitch::cuda::default_stream();
  auto run = [&](int batch, int tokens, int heads, int head_dim, AttentionPath path) {
    k::attention(qkv.data(), out.data(), batch, tokens, heads, head_dim, path, stream);
  };
  CHECK_THROWS_AS(run(1, 4, 2, 12, AttentionPath::flash), tstitch::invalid_argument);
  CHECK_THROWS_WITH(run(1, 4, 2, 12, AttentionPath::flash), Catch::Contains("head_dim = 12"));
  CHECK_THROWS_AS(run(1, 4, 1, 136, AttentionPath::flash), tstitch::invalid_argument);
  CHECK_THROWS_AS(run(1, 1, 1, 300, AttentionPath::reference), tstitch::invalid_argument);
  // A tiling the flash path is not built for, named in the message.
  CHECK_THROWS_WITH(
      k::attention_flash(qkv.data(), out.data(), 1, 4, 2, 64, k::FlashTiling{2, 16}, stream),
      Catch::Contains("flash tiling") && Catch::Contains("2x16"));
  CHECK_THROWS_WITH(
      k::attention_flash(qkv.data(), out.data(), 1, 4, 2, 12, k::FlashTiling{4, 32}, stream),
      Catch::Contains("head_dim = 12"));
  for (AttentionPath path :
       {AttentionPath::flash, AttentionPath::reference, AttentionPath::cudnn}) {
    CHECK_THROWS_AS(run(1, 0, 2, 64, path), tstitch::invalid_argument);
    CHECK_THROWS_WITH(run(1, 0, 2, 64, path), Catch::Contains("tokens = 0"));
    CHECK_THROWS_AS(run(0, 4, 2, 64, path), tstitch::invalid_argument);
    CHECK_THROWS_AS(run(1, 4, 0, 64, path), tstitch::invalid_argument);
  }
  if (cudnn) {
    CHECK_THROWS_AS(run(1, 4, 2, 12, AttentionPath::cudnn), tstitch::invalid_argument);
    CHECK_THROWS_WITH(run(1, 4, 2, 12, AttentionPath::cudnn),
                      Catch::Contains("head_dim = 12") && Catch::Contains("cuDNN"));
    CHECK_THROWS_AS(run(1, 4, 1, 136, AttentionPath::cudnn), tstitch::invalid_argument);
    CHECK_THROWS_AS(
        k::attention(qkv.data() + 1, out.data(), 1, 4, 2, 64, AttentionPath::cudnn, stream),
        tstitch::invalid_argument);
  } else {
    // Where cuDNN cannot be loaded (or the build has no cuDNN headers) the path refuses, saying
    // why and naming both the path and cuDNN.
    CHECK_THROWS_AS(run(1, 4, 2, 64, AttentionPath::cudnn), tstitch::invalid_argument);
    CHECK_THROWS_WITH(run(1, 4, 2, 64, AttentionPath::cudnn),
                      Catch::Contains("cuDNN") && Catch::Contains("cudnn"));
  }
  // A misaligned pointer is refused by the flash path (its loads move 16-byte chunks).
  CHECK_THROWS_AS(
      k::attention(qkv.data() + 1, out.data(), 1, 4, 2, 64, AttentionPath::flash, stream),
      tstitch::invalid_argument);
  // Nothing above was launched: the stream is clean.
  TSTITCH_CUDA_CHECK(cudaStreamSynchronize(stream));
  CHECK(cudaGetLastError() == cudaSuccess);
}
