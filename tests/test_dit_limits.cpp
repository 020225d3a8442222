// SPDX-License-Identifier: Apache-2.0
// The CPU DiT's guards against misuse it cannot survive (models/dit/cpu_model.hpp): a forward
// whose workspace cannot fit in memory is refused before it allocates, a failed allocation is a
// named error, and two concurrent predict() calls on one model are refused rather than raced.
#include <catch2/catch.hpp>

#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <latch>
#include <limits>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "support/dit_fixtures.hpp"
#include "tstitch/models/dit/cpu_model.hpp"

using namespace tstitch;
using tstitch::testing::available_gemms;
using tstitch::testing::dit_forward;
using tstitch::testing::tiny_dit_config;

namespace {

/// The tiny DiT on 256 x 256 latents with patch 1: 65536 tokens, so one head's scores are 2^32
/// floats (16 GiB), though the weights and activations are small.
dit::Config huge_token_config() {
  dit::Config c = tiny_dit_config();
  c.input_size = 256;
  c.patch_size = 1;
  c.depth = 1;
  return c;
}

} // namespace

TEST_CASE("DiT: a forward whose workspace exceeds the memory limit is refused before it allocates",
          "[dit][errors]") {
  for (const dit::Gemm gemm : available_gemms()) {
    INFO("gemm " << dit::to_string(gemm));
    dit::CpuModel model(dit::Weights::random(huge_token_config(), 3), "tiny", gemm);
    model.set_threads(1);
    const std::int64_t needed = model.workspace_bytes(2);
    CHECK(needed > (std::int64_t{16} << 30)); // at least one head's scores

    // A limit of its own: the message names the model, the batch, the bytes and the limit.
    model.set_memory_limit(1'000'000'000);
    CHECK(model.memory_limit() == 1'000'000'000);
    CHECK_THROWS_AS(dit_forward(model, 2, 10, {1, 2}), tstitch::runtime_error);
    CHECK_THROWS_WITH(
        dit_forward(model, 2, 10, {1, 2}),
        Catch::Contains("CpuModel 'tiny'") && Catch::Contains("a forward of 2 images") &&
            Catch::Contains(std::to_string(needed) + " bytes") && Catch::Contains("65536 tokens") &&
            Catch::Contains("more than the 1.0 GB (1000000000 bytes) limit") &&
            Catch::Contains("set_memory_limit"));
    CHECK(model.activation_bytes() == 0); // nothing was allocated

#ifdef _OPENMP // without OpenMP, attention's scores do not grow with the thread count
    // The default, physical memory: many threads' scores are beyond any machine's (REQUIRE: the
    // forward must never really run).
    model.set_memory_limit(0);
    model.set_threads(4096);
    REQUIRE(model.workspace_bytes(2) > model.memory_limit());
    CHECK_THROWS_WITH(dit_forward(model, 2, 10, {1, 2}),
                      Catch::Contains("CpuModel 'tiny'") && Catch::Contains("(physical memory)"));
    CHECK(model.activation_bytes() == 0);
#endif
  }
}

TEST_CASE("DiT: the workspace estimate bounds what a forward allocates", "[dit]") {
  for (const dit::Gemm gemm : available_gemms()) {
    // 2 images: layer-threaded; 8 on 2 threads: per-thread slices with oneDNN; then one image at
    // a time (batch invariant).
    for (const auto& [batch, invariant] :
         std::vector<std::pair<std::int64_t, bool>>{{2, false}, {8, false}, {8, true}}) {
      INFO("gemm " << dit::to_string(gemm) << ", batch " << batch << ", invariant " << invariant);
      dit::CpuModel model(dit::Weights::random(tiny_dit_config(), 4), "small", gemm);
      model.set_threads(2);
      model.set_batch_invariant(invariant);
      const std::int64_t needed = model.workspace_bytes(batch);
      const std::vector<int> labels(static_cast<std::size_t>(batch), 3);

      model.set_memory_limit(needed - 1);
      CHECK_THROWS_WITH(dit_forward(model, batch, 10, labels),
                        Catch::Contains("CpuModel 'small'") &&
                            Catch::Contains(std::to_string(needed) + " bytes"));
      model.set_memory_limit(needed);
      CHECK_NOTHROW(dit_forward(model, batch, 10, labels));
      CHECK(model.activation_bytes() > 0);
      CHECK(model.activation_bytes() <= needed);
      if (gemm == dit::Gemm::eigen) // no oneDNN fallback to allow for: the estimate is exact
        CHECK(model.activation_bytes() == needed);
    }
  }
}

TEST_CASE("DiT: sizes that overflow int64 are refused, not wrapped", "[dit][errors]") {
  dit::CpuModel model(dit::Weights::random(huge_token_config(), 5), "tiny", dit::Gemm::eigen);
  constexpr std::int64_t max = std::numeric_limits<std::int64_t>::max();
  CHECK(model.workspace_bytes(std::int64_t{1} << 62) == max);
#ifdef _OPENMP // without OpenMP, attention's scores do not grow with the thread count
  // 2^31 threads x 2^32 floats of scores each: 2^63 floats, which no limit admits.
  model.set_threads(std::numeric_limits<int>::max());
  model.set_memory_limit(max);
  CHECK(model.workspace_bytes(2) == max);
  CHECK_THROWS_WITH(dit_forward(model, 2, 10, {1, 2}),
                    Catch::Contains("CpuModel 'tiny'") && Catch::Contains("2^63 bytes or more"));
  CHECK(model.activation_bytes() == 0);
#endif
}

TEST_CASE("DiT: set_memory_limit rejects a negative limit, naming it", "[dit][errors]") {
  dit::CpuModel model(dit::Weights::random(tiny_dit_config(), 6), "small");
  CHECK_THROWS_AS(model.set_memory_limit(-1), tstitch::invalid_argument);
  CHECK_THROWS_WITH(model.set_memory_limit(-1), Catch::Contains("set_memory_limit: bytes = -1"));
  CHECK(model.memory_limit() > 0); // physical memory
}

TEST_CASE("DiT: a failed allocation during a forward is a runtime_error naming model and bytes",
          "[dit][errors]") {
  dit::CpuModel model(dit::Weights::random(tiny_dit_config(), 7), "small");
  model.set_threads(2);
  // The host pool runs out of memory: std::bad_alloc, as any allocation inside a forward throws.
  bool fail = true;
  model.set_parallel_for(
      [&fail](std::int64_t count, const std::function<void(std::int64_t)>& task) {
        if (fail)
          throw std::bad_alloc();
        for (std::int64_t i = 0; i < count; ++i)
          task(i);
      });
  const std::int64_t needed = model.workspace_bytes(2);
  CHECK_THROWS_AS(dit_forward(model, 2, 10, {1, 2}), tstitch::runtime_error);
  CHECK_THROWS_WITH(dit_forward(model, 2, 10, {1, 2}),
                    Catch::Contains("CpuModel 'small'") &&
                        Catch::Contains(std::to_string(needed) + " bytes") &&
                        Catch::Contains("out of memory"));
  fail = false; // and the model is usable again
  CHECK_NOTHROW(dit_forward(model, 2, 10, {1, 2}));
}

TEST_CASE("DiT: predict() from two threads at once on one model is refused, not raced",
          "[dit][errors][threads]") {
  dit::CpuModel model(dit::Weights::random(tiny_dit_config(), 8), "shared");
  model.set_threads(2);
  // The first call parks inside its host pool until the second call has returned, so the two
  // overlap on every run. A second call that got in (no guard) runs its tasks and returns.
  std::latch first_inside(1), second_done(1);
  std::atomic<int> calls{0};
  model.set_parallel_for([&](std::int64_t count, const std::function<void(std::int64_t)>& task) {
    if (calls.fetch_add(1) == 0) {
      first_inside.count_down();
      second_done.wait();
    }
    for (std::int64_t i = 0; i < count; ++i)
      task(i);
  });
  std::exception_ptr first_failure;
  std::thread first([&] {
    try {
      dit_forward(model, 2, 10, {1, 2});
    } catch (...) {
      first_failure = std::current_exception();
    }
  });
  first_inside.wait();
  std::string second_error;
  try {
    dit_forward(model, 2, 10, {3, 4});
  } catch (const tstitch::runtime_error& e) {
    second_error = e.what();
  }
  second_done.count_down();
  first.join();
  CHECK(second_error ==
        "CpuModel 'shared': predict() called from two threads at once; use one model per thread");
  CHECK_FALSE(first_failure);
  CHECK(calls.load() == 1); // the refused call never reached the pool

  // The guard is released when a call returns, and when it throws.
  CHECK_NOTHROW(dit_forward(model, 2, 10, {1, 2}));
  CHECK_THROWS_AS(dit_forward(model, 2, 10, {1, 99}), tstitch::invalid_argument);
  CHECK_NOTHROW(dit_forward(model, 2, 10, {1, 2}));
}

TEST_CASE("DiT: models with the guard still move into a vector", "[dit]") {
  std::vector<dit::CpuModel> models;
  for (int i = 0; i < 3; ++i)
    models.emplace_back(dit::Weights::random(tiny_dit_config(), 9), "m");
  for (dit::CpuModel& model : models)
    CHECK_NOTHROW(dit_forward(model, 1, 10, {0}));
}
