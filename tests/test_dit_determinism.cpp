// SPDX-License-Identifier: Apache-2.0
// The CPU DiT's bits must not depend on the machine's core count, on where its buffers were
// allocated, or (when asked) on the batch an image is in: a renderer reproduces an image from
// its seed alone. This file is also built for this CPU (-march=native, tstitch_native_tests),
// where Eigen's wider packets make addresses matter more.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <new>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "support/dit_fixtures.hpp"
#include "support/tensor_checks.hpp"
#include "tstitch/models/dit/cpu_model.hpp"
#include "tstitch/models/dit/parallel.hpp"
#include "tstitch/sample.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/solver/ddpm.hpp"
#include "tstitch/stitch/stitcher.hpp"

using namespace tstitch;
using testing::available_gemms;
using testing::bit_identical;
using testing::dit_forward;

namespace {

/// Shapes that put rows at every alignment: 64 tokens of 64 floats (rows of whole AVX-512
/// packets), and 49 tokens of 72 floats (odd token count, so T x T scores are no whole number of
/// packets; rows of 72 floats alternate between two alignments). And one as wide as DiT-S (hidden
/// 384, MLP 1536, one block): products deeper than Eigen's depth blocks, which Eigen sizes by the
/// team it threads a GEMM over.
std::vector<dit::Config> determinism_configs() {
  dit::Config even = testing::tiny_dit_config();
  even.input_size = 16;
  dit::Config odd = testing::tiny_dit_config();
  odd.input_size = 14;
  odd.hidden_size = 72;
  dit::Config wide = testing::tiny_dit_config();
  wide.input_size = 16;
  wide.hidden_size = 384;
  wide.num_heads = 6;
  wide.depth = 1;
  return {even, odd, wide};
}

#ifdef _OPENMP
const std::vector<int> thread_counts{1, 2, 3, 5, 17, 33};
#else
const std::vector<int> thread_counts{1};
#endif

const std::vector<int> eight_labels{0, 1, 2, 3, 4, 5, 9, 10};

/// Restores the OpenMP thread count on scope exit.
struct ThreadCountGuard {
#ifdef _OPENMP
  int previous = omp_get_max_threads();
  ~ThreadCountGuard() { omp_set_num_threads(previous); }
#endif
};

void set_threads([[maybe_unused]] int threads) {
#ifdef _OPENMP
  omp_set_num_threads(threads);
#endif
}

} // namespace

TEST_CASE("DiT with Eigen gives the same bits at any thread count", "[dit][determinism]") {
  // No loop of the forward splits a sum between threads (the linear layers share fixed column
  // tiles, attention shares (sample, head) pairs), Eigen never threads a product itself, and
  // per-thread scratch starts aligned. A fresh model per thread count; 8 samples: enough rows for
  // every threaded loop to split. (oneDNN fixes a primitive's partitioning by the thread count it
  // was created at: with it, the same bits need the same thread count, or set_batch_invariant.)
  const ThreadCountGuard guard;
  for (const dit::Config& c : determinism_configs()) {
    std::vector<Tensor> outputs;
    for (const int threads : thread_counts) {
      set_threads(threads);
      dit::CpuModel model(dit::Weights::random(c, 41), "DiT", dit::Gemm::eigen);
      outputs.push_back(dit_forward(model, 8, 640, eight_labels));
    }
    for (std::size_t i = 1; i < outputs.size(); ++i) {
      INFO(c.tokens() << " tokens, hidden " << c.hidden_size << ", " << thread_counts[i]
                      << " threads against 1");
      CHECK(bit_identical(outputs[i], outputs[0]));
    }
  }
}

TEST_CASE("DiT buffers start on a 64-byte boundary", "[dit][determinism]") {
  for (const std::size_t size : {1, 3, 17, 1000, 123457}) {
    INFO(size << " floats");
    const dit::AlignedBuffer<float> buffer(size);
    CHECK(reinterpret_cast<std::uintptr_t>(buffer.data()) % 64 == 0);
  }
  CHECK(dit::aligned_stride(49 * 49) % 16 == 0);
  CHECK(dit::aligned_stride(49 * 49) >= 49 * 49);
  CHECK(dit::aligned_stride(64) == 64);
}

TEST_CASE("DiT gives the same bits wherever its buffers were allocated", "[dit][determinism]") {
  // A second model whose buffers were allocated among odd-sized blocks and grown through other
  // batch sizes before: its activations lie at other addresses than the first model's.
  const ThreadCountGuard guard;
  set_threads(2);
  for (const dit::Config& c : determinism_configs())
    for (const dit::Gemm gemm : available_gemms()) {
      INFO("GEMM " << dit::to_string(gemm) << ", " << c.tokens() << " tokens");
      dit::CpuModel first(dit::Weights::random(c, 43), "DiT", gemm);
      const Tensor reference = dit_forward(first, 8, 123, eight_labels);

      std::vector<std::unique_ptr<char[]>> interleaved;
      std::unique_ptr<dit::CpuModel> second;
      for (int k = 1; k <= 3; ++k)
        interleaved.push_back(std::make_unique<char[]>(static_cast<std::size_t>(4 * k + 4)));
      second = std::make_unique<dit::CpuModel>(dit::Weights::random(c, 43), "DiT", gemm);
      for (const std::int64_t batch : {1, 3}) {
        interleaved.push_back(std::make_unique<char[]>(static_cast<std::size_t>(4 * batch + 8)));
        dit_forward(*second, batch, 123, std::vector<int>(static_cast<std::size_t>(batch), 1));
      }
      CHECK(bit_identical(dit_forward(*second, 8, 123, eight_labels), reference));
    }
}

TEST_CASE("DiT with set_batch_invariant gives each image the same bits in any batch",
          "[dit][determinism]") {
  const ThreadCountGuard guard;
  const std::vector<int> labels{7, 10, 2, 2, 5};
  for (const dit::Config& c : determinism_configs())
    for (const dit::Gemm gemm : available_gemms()) {
      INFO("GEMM " << dit::to_string(gemm) << ", " << c.tokens() << " tokens, hidden "
                   << c.hidden_size);
      // Each image alone (same noise stream, same label), at 5 threads: one image must not run
      // on more threads than an image of a batch does.
      set_threads(5);
      dit::CpuModel model(dit::Weights::random(c, 47), "DiT", gemm);
      CHECK_FALSE(model.batch_invariant());
      model.set_batch_invariant(true);
      CHECK(model.batch_invariant());
      std::vector<Tensor> alone;
      for (std::int64_t k = 0; k < 5; ++k)
        alone.push_back(dit_forward(model, 1, 321, {labels[static_cast<std::size_t>(k)]},
                                    static_cast<std::uint32_t>(k)));
      // The images in a batch of 5 and among others at another position, on a fresh model at
      // every thread count (more threads than images too).
      for (const int threads : thread_counts) {
        INFO(threads << " threads");
        set_threads(threads);
        dit::CpuModel fresh(dit::Weights::random(c, 47), "DiT", gemm);
        fresh.set_batch_invariant(true);
        const Tensor batch = dit_forward(fresh, 5, 321, labels);
        for (std::int64_t k = 0; k < 5; ++k) {
          INFO("image " << k);
          CHECK(bit_identical(testing::copy_samples(batch, k, 1),
                              alone[static_cast<std::size_t>(k)]));
        }
        const Tensor tail = dit_forward(fresh, 3, 321, {2, 2, 5}, 2);
        CHECK(bit_identical(testing::copy_samples(tail, 1, 2), testing::copy_samples(batch, 3, 2)));
      }
      // The invariant forward is the same model: within float rounding of the batched one.
      set_threads(2);
      model.set_batch_invariant(false);
      Tensor invariant(5, Shape{c.out_channels(), c.input_size, c.input_size});
      for (std::int64_t k = 0; k < 5; ++k)
        std::copy_n(alone[static_cast<std::size_t>(k)].data(), alone[0].numel(),
                    invariant.data() + k * alone[0].numel());
      CHECK(testing::max_abs_difference(dit_forward(model, 5, 321, labels), invariant) < 1e-4);
    }
}

TEST_CASE("Stitched sampling with batch-invariant DiTs reproduces an image from its seed alone",
          "[dit][determinism]") {
  // What a renderer relies on: image k of a batch is image k alone with first_sample = k, through
  // guidance, a stochastic solver and the switch between models.
  const ThreadCountGuard guard;
  set_threads(2);
  const dit::Config small_config = determinism_configs()[1];
  dit::Config large_config = small_config;
  large_config.depth = 3;
  dit::CpuModel small(dit::Weights::random(small_config, 51), "DiT-S");
  dit::CpuModel large(dit::Weights::random(large_config, 52), "DiT-L");
  small.set_batch_invariant(true);
  large.set_batch_invariant(true);
  TrajectoryStitcher stitcher(small, large, 0.5);
  SampleOptions options;
  options.steps = 6;
  options.seed = 9;
  options.guidance = Guidance::dit(3.0);
  DDPM ddpm;

  const auto run = [&](std::int64_t count, std::uint32_t first, const std::vector<int>& labels) {
    Tensor x(count, small.latent_shape());
    fill_initial_noise(x, options.seed, first);
    SampleOptions o = options;
    o.first_sample = first;
    sample(stitcher, DiscreteSchedule{}, ddpm, x, labels, o);
    return x;
  };
  const Tensor batch = run(4, 0, {3, 1, 4, 1});
  CHECK(HostBackend{}.find_nonfinite(batch) == -1);
  const Tensor third = run(1, 2, {4});
  CHECK(bit_identical(third, testing::copy_samples(batch, 2, 1)));
}

TEST_CASE("parallel_for rethrows a body's exception on the calling thread", "[dit][parallel]") {
  // An exception leaving an OpenMP region would terminate the program (std::bad_alloc from
  // Eigen's packing buffers, inside the DiT's loops); parallel_for carries it out instead.
  const ThreadCountGuard guard;
  for (const int threads : {1, 2, 5}) {
    set_threads(threads);
    for (const int team : {0, 1, 3}) {
      CAPTURE(threads, team);
      std::atomic<int> ran{0};
      auto throw_at_37 = [&](std::int64_t i) {
        ++ran;
        if (i == 37)
          throw tstitch::runtime_error("body 37 failed");
      };
      CHECK_THROWS_AS(dit::parallel_for(100, throw_at_37, team), tstitch::runtime_error);
      CHECK(ran == 100); // every other body still ran
      ran = 0;
      CHECK_THROWS_WITH(dit::parallel_for(100, throw_at_37, team), "body 37 failed");
      // The exception's type survives (std::bad_alloc is what the DiT's loops can meet).
      auto throw_bad_alloc = [](std::int64_t i) {
        if (i % 16 == 3)
          throw std::bad_alloc();
      };
      CHECK_THROWS_AS(dit::parallel_for(64, throw_bad_alloc, team), std::bad_alloc);
      // Without an exception every index runs exactly once.
      std::vector<int> seen(50, 0);
      dit::parallel_for(
          50, [&](std::int64_t i) { ++seen[static_cast<std::size_t>(i)]; }, team);
      CHECK(std::ranges::count(seen, 1) == 50);
      dit::parallel_for(
          0, [](std::int64_t) { FAIL("no index in an empty range"); }, team);
    }
  }
}
