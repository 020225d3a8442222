// SPDX-License-Identifier: Apache-2.0
// One timestep per batch row (CpuModel::predict_timesteps, the optional Denoiser member that the
// official DiT's forward(x, t, y) corresponds to): each row as if run alone at its own time.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include "support/dit_fixtures.hpp"
#include "support/tensor_checks.hpp"
#include "tstitch/core/denoiser.hpp"
#include "tstitch/core/host_backend.hpp"
#include "tstitch/models/dit/cpu_model.hpp"

using namespace tstitch;
using tstitch::testing::available_gemms;
using tstitch::testing::tiny_dit_config;

static_assert(predicts_per_row_timesteps<dit::CpuModel>);
static_assert(has_per_row_timesteps_v<dit::CpuModel>);
static_assert(has_per_row_timesteps<dit::CpuModel&>::value);

namespace {

/// make_denoiser's wrapper has predict() alone.
using PlainDenoiser = FunctionDenoiser<NoCondition, void (*)(ConstView, const StepContext&,
                                                             const NoCondition&, View)>;
static_assert(Denoiser<PlainDenoiser>);
static_assert(!predicts_per_row_timesteps<PlainDenoiser>);
static_assert(!has_per_row_timesteps_v<PlainDenoiser>);

/// A denoiser with the member, to show the detection does not depend on the DiT.
struct PerRowEngine {
  using condition_type = NoCondition;
  [[nodiscard]] Prediction prediction() const { return Prediction::epsilon; }
  [[nodiscard]] Shape latent_shape() const { return {1, 2, 2}; }
  void predict(ConstView, const StepContext&, const NoCondition&, View) {}
  void predict_timesteps(ConstView, std::span<const double>, const NoCondition&, View) {}
};
static_assert(has_per_row_timesteps_v<PerRowEngine>);

constexpr std::int64_t batch = 4;
const std::vector<int> labels = {1, 2, 3, 10}; // 10: the null class
const std::vector<double> times = {999.0, 500.5, 0.0, 250.0};

Tensor latents(const dit::Config& c) {
  Tensor x(batch, c.latent_shape());
  HostBackend{}.fill_normal(x, NoiseKey{11, 0, 0, 0});
  return x;
}

Tensor output(const dit::Config& c, std::int64_t n) {
  return Tensor(n, Shape{c.out_channels(), c.input_size, c.input_size});
}

/// Row k alone (a batch of one), at its own timestep through predict().
Tensor row_alone(dit::CpuModel& model, const Tensor& x, std::int64_t k) {
  Tensor out = output(model.config(), 1);
  StepContext ctx;
  ctx.point.timestep = times[static_cast<std::size_t>(k)];
  model.predict(x.view().samples(k, 1), ctx, {labels[static_cast<std::size_t>(k)]}, out);
  return out;
}

bool same_bits(const float* a, const float* b, std::int64_t n) { return std::equal(a, a + n, b); }

using testing::relative_l2;

} // namespace

TEST_CASE("DiT per-row timesteps: each row equals the row alone at its own time", "[dit]") {
  const dit::Config c = tiny_dit_config();
  const Tensor x = latents(c);
  for (const dit::Gemm gemm : available_gemms()) {
    for (const int threads : {1, 2}) {
      CAPTURE(static_cast<int>(gemm), threads);
      dit::CpuModel model(dit::Weights::random(c, 21), "tiny", gemm);
      model.set_threads(threads);
      const std::int64_t row = output(c, 1).numel();

      // Batch-invariant: bit for bit, at any thread count (slices of one image each).
      model.set_batch_invariant(true);
      Tensor mixed = output(c, batch);
      model.predict_timesteps(x, times, labels, mixed);
      for (std::int64_t k = 0; k < batch; ++k) {
        CAPTURE(k);
        const Tensor alone = row_alone(model, x, k);
        CHECK(same_bits(mixed.data() + k * row, alone.data(), row));
      }
      // The times matter: row 1 at row 0's time is another output.
      Tensor shifted = output(c, batch);
      std::vector<double> swapped = times;
      std::swap(swapped[0], swapped[1]);
      model.predict_timesteps(x, swapped, labels, shifted);
      CHECK(relative_l2(shifted.data() + row, mixed.data() + row, row) > 1e-3);

      // Batched (one forward, or oneDNN's per-thread slices of two images): the GEMMs block rows
      // by the row count, so a row's bits change with its batch; it stays within float32
      // rounding of the row alone.
      model.set_batch_invariant(false);
      Tensor batched = output(c, batch);
      model.predict_timesteps(x, times, labels, batched);
      for (std::int64_t k = 0; k < batch; ++k) {
        CAPTURE(k);
        const Tensor alone = row_alone(model, x, k);
        CHECK(relative_l2(batched.data() + k * row, alone.data(), row) < 1e-5);
      }
    }
  }
}

TEST_CASE("DiT per-row timesteps all equal give predict()'s bits", "[dit]") {
  const dit::Config c = tiny_dit_config();
  const Tensor x = latents(c);
  for (const dit::Gemm gemm : available_gemms()) {
    for (const bool invariant : {false, true}) {
      CAPTURE(static_cast<int>(gemm), invariant);
      dit::CpuModel model(dit::Weights::random(c, 22), "tiny", gemm);
      model.set_threads(2);
      model.set_batch_invariant(invariant);
      for (const double t : {0.0, 333.25, 999.0}) {
        CAPTURE(t);
        Tensor uniform = output(c, batch), per_row = output(c, batch);
        StepContext ctx;
        ctx.point.timestep = t;
        model.predict(x, ctx, labels, uniform);
        model.predict_timesteps(x, std::vector<double>(batch, t), labels, per_row);
        CHECK(same_bits(per_row.data(), uniform.data(), uniform.numel()));
      }
    }
  }
}

TEST_CASE("DiT per-row timesteps: a count or value that does not fit is refused", "[dit][errors]") {
  const dit::Config c = tiny_dit_config();
  const Tensor x = latents(c);
  dit::CpuModel model(dit::Weights::random(c, 23), "tiny");
  Tensor out = output(c, batch);
  CHECK_THROWS_AS(model.predict_timesteps(x, std::vector<double>{1.0, 2.0}, labels, out),
                  tstitch::invalid_argument);
  CHECK_THROWS_WITH(model.predict_timesteps(x, std::vector<double>{1.0, 2.0}, labels, out),
                    Catch::Contains("timesteps.size() = 2") &&
                        Catch::Contains("must equal the batch, 4"));
  std::vector<double> bad = times;
  bad[2] = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH(model.predict_timesteps(x, bad, labels, out),
                    Catch::Contains("timesteps[2] = nan") && Catch::Contains("finite"));
  // The labels are checked as predict() checks them.
  CHECK_THROWS_WITH(model.predict_timesteps(x, times, std::vector<int>{1}, out),
                    Catch::Contains("labels.size() = 1"));
}
