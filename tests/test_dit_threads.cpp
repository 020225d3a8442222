// SPDX-License-Identifier: Apache-2.0
// How the CPU DiT uses threads: per-thread slices of a batch, a thread count per model, and a
// host application's pool in place of OpenMP (models/dit/cpu_model.hpp, parallel.hpp).
#include <catch2/catch.hpp>

#include <atomic>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <vector>

#include "support/dit_fixtures.hpp"
#include "support/tensor_checks.hpp"
#include "tstitch/models/dit/cpu_model.hpp"

using namespace tstitch;
using tstitch::testing::bit_identical;
using tstitch::testing::dit_forward;
using tstitch::testing::relative_l2;
using tstitch::testing::tiny_dit_config;

namespace {

const std::vector<int> labels8{0, 1, 2, 3, 4, 5, 9, 10};

/// A host pool as a renderer might have one: each call runs its tasks on fresh std::threads,
/// two tasks per thread, and counts what it was given.
struct CountingPool {
  std::atomic<int> calls{0};
  std::atomic<long> tasks{0};

  dit::ParallelFor executor() {
    return [this](std::int64_t count, const std::function<void(std::int64_t)>& task) {
      ++calls;
      tasks += count;
      std::vector<std::thread> threads;
      for (std::int64_t first = 0; first < count; first += 2)
        threads.emplace_back([&, first] {
          for (std::int64_t i = first; i < std::min(count, first + 2); ++i)
            task(i);
        });
      for (std::thread& t : threads)
        t.join();
    };
  }
};

} // namespace

TEST_CASE("CPU DiT: per-thread slices of a batch give the layer-threaded forward's output",
          "[dit][threads]") {
  for (const dit::Gemm gemm : testing::available_gemms()) {
    INFO("gemm " << dit::to_string(gemm));
    dit::CpuModel threaded_layers(dit::Weights::random(tiny_dit_config(), 8), "DiT", gemm);
    threaded_layers.set_threads(1); // a team of one never slices
    const Tensor want = dit_forward(threaded_layers, 8, 300, labels8);
    for (const int threads : {2, 3, 5}) {
      INFO(threads << " threads");
      dit::CpuModel sliced(dit::Weights::random(tiny_dit_config(), 8), "DiT", gemm);
      sliced.set_threads(threads);
      CHECK(sliced.threads() == threads);
      const Tensor got = dit_forward(sliced, 8, 300, labels8);
      CHECK(relative_l2(got, want) < 1e-6);
      // The same thread count reproduces the bits, call after call.
      CHECK(bit_identical(dit_forward(sliced, 8, 300, labels8), got));
    }
  }
}

TEST_CASE("CPU DiT: a host pool runs the forward's tasks, with OpenMP's bits", "[dit][threads]") {
  for (const dit::Gemm gemm : testing::available_gemms()) {
    INFO("gemm " << dit::to_string(gemm));
    dit::CpuModel openmp(dit::Weights::random(tiny_dit_config(), 9), "DiT", gemm);
    openmp.set_threads(4);
    CountingPool pool;
    dit::CpuModel hosted(dit::Weights::random(tiny_dit_config(), 9), "DiT", gemm);
    hosted.set_threads(4);
    hosted.set_parallel_for(pool.executor());
    const Tensor got = dit_forward(hosted, 8, 700, labels8);
    CHECK(pool.calls == 1);
    CHECK(pool.tasks == 4); // one slice per task
    if (gemm == dit::Gemm::onednn) {
      // The same slices, each single-threaded, as OpenMP runs them: the same bits.
      CHECK(bit_identical(got, dit_forward(openmp, 8, 700, labels8)));
    } else {
      CHECK(relative_l2(got, dit_forward(openmp, 8, 700, labels8)) < 1e-6);
    }
    // A batch smaller than the task count: one task per image, each image alone.
    dit_forward(hosted, 3, 700, {1, 2, 3});
    CHECK(pool.tasks == 4 + 3);
    // Batch-invariant images through the pool keep their bits in any batch.
    hosted.set_batch_invariant(true);
    const Tensor batch = dit_forward(hosted, 8, 700, labels8);
    const Tensor alone = dit_forward(hosted, 1, 700, {labels8[5]}, 5);
    CHECK(std::memcmp(batch.data() + 5 * alone.numel(), alone.data(),
                      static_cast<std::size_t>(alone.numel()) * sizeof(float)) == 0);
    // An empty executor gives the model back to OpenMP.
    hosted.set_parallel_for({});
    const int calls = pool.calls;
    dit_forward(hosted, 8, 700, labels8);
    CHECK(pool.calls == calls);
  }
}

TEST_CASE("run_tasks rethrows a task's exception from a host pool on the calling thread",
          "[dit][threads]") {
  CountingPool pool;
  std::atomic<int> ran{0};
  CHECK_THROWS_WITH(dit::run_tasks(
                        pool.executor(), 5,
                        [&](std::int64_t i) {
                          ++ran;
                          if (i == 3)
                            throw std::runtime_error("task 3 failed");
                        },
                        0),
                    "task 3 failed");
  CHECK(ran == 5); // the pool saw no exception and ran every task
}

TEST_CASE("CpuModel::set_threads rejects a negative count, naming it", "[dit][threads][errors]") {
  dit::CpuModel model(dit::Weights::random(tiny_dit_config(), 1), "DiT");
  CHECK_THROWS_WITH(model.set_threads(-2), Catch::Contains("threads = -2"));
}
