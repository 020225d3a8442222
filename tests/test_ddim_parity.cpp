// SPDX-License-Identifier: Apache-2.0
// diffusers parity for DDIM: the oracles of ../shared/reference/diffusers-parity.md §4.1, with
// diffusers' own harness (§1) and tolerances. Values are diffusers' asserted numbers.
#include <catch2/catch.hpp>

#include <cmath>

#include "tstitch/sample.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/solver/ddim.hpp"
#include "tstitch/solver/posterior.hpp"

using namespace tstitch;

namespace {

const Shape harness_shape{3, 8, 8};

/// diffusers' deterministic harness sample (4, 3, 8, 8): element (b, c, h, w) holds k / 768 with
/// k = ((c*8 + h)*8 + w)*4 + b; the noise holds (767 - k) / 768.
Tensor harness_tensor(bool reversed) {
  Tensor t(4, harness_shape);
  for (int b = 0; b < 4; ++b)
    for (int c = 0; c < 3; ++c)
      for (int h = 0; h < 8; ++h)
        for (int w = 0; w < 8; ++w) {
          const int k = ((c * 8 + h) * 8 + w) * 4 + b;
          t.at(b, c, h, w) = static_cast<float>(reversed ? 767 - k : k) / 768.0f;
        }
  return t;
}

/// diffusers' dummy model: sample * t / (t + 1), in float32, t cast to float32 first.
auto harness_model(Prediction prediction) {
  return make_denoiser(prediction, harness_shape,
                       [](ConstView x, const StepContext& ctx, const NoCondition&, View out) {
                         const auto t = static_cast<float>(ctx.point.timestep);
                         HostBackend{}.map(
                             out, [t](float v) { return v * t / (t + 1.0f); }, x);
                       });
}

struct Result {
  double sum, mean;
};

Result full_loop(DiscreteScheduleOptions schedule_options, Prediction prediction,
                 int start_step = -1) {
  const DiscreteSchedule schedule(schedule_options);
  auto model = harness_model(prediction);
  DDIM ddim(DDIMOptions{0.0, 1.0f}); // the test config's clip_sample=True, range 1
  Tensor x = harness_tensor(false);
  SampleOptions options;
  options.steps = 10;
  if (start_step >= 0) { // the "with_noise" pattern: add_noise at the first remaining timestep
    add_noise(x, harness_tensor(true), schedule.trajectory(10)[start_step]);
    options.start_step = start_step;
  }
  sample(model, schedule, ddim, x, NoCondition{}, options);
  double sum = 0; // accumulated in double (§2.3)
  for (std::int64_t i = 0; i < x.numel(); ++i)
    sum += std::abs(static_cast<double>(x[i]));
  return {sum, sum / static_cast<double>(x.numel())};
}

} // namespace

TEST_CASE("DDIM full loops match diffusers' DDIMSchedulerTest", "[parity][ddim]") {
  DiscreteScheduleOptions config; // num_train_timesteps 1000, linear 1e-4..0.02, leading
  SECTION("test_full_loop_no_noise") {
    const Result r = full_loop(config, Prediction::epsilon);
    CHECK(std::abs(r.sum - 172.0067) < 1e-2);
    CHECK(std::abs(r.mean - 0.223967) < 1e-3);
  }
  SECTION("test_full_loop_with_v_prediction") {
    const Result r = full_loop(config, Prediction::v);
    CHECK(std::abs(r.sum - 52.5302) < 1e-2);
    CHECK(std::abs(r.mean - 0.0684) < 1e-3);
  }
  SECTION("test_full_loop_with_set_alpha_to_one") {
    config.beta_start = 0.01;
    config.final_point = FinalPoint::clean;
    const Result r = full_loop(config, Prediction::epsilon);
    CHECK(std::abs(r.sum - 149.8295) < 1e-2);
    CHECK(std::abs(r.mean - 0.1951) < 1e-3);
  }
  SECTION("test_full_loop_with_no_set_alpha_to_one") {
    config.beta_start = 0.01;
    config.final_point = FinalPoint::first_train_step;
    const Result r = full_loop(config, Prediction::epsilon);
    CHECK(std::abs(r.sum - 149.0784) < 1e-2);
    CHECK(std::abs(r.mean - 0.1941) < 1e-3);
  }
  SECTION("test_full_loop_with_noise (t_start = 8: timesteps [100, 0])") {
    const Result r = full_loop(config, Prediction::epsilon, 8);
    CHECK(std::abs(r.sum - 354.5418) < 1e-2);
    CHECK(std::abs(r.mean - 0.4616) < 1e-3);
  }
}

TEST_CASE("DDIM variance matches diffusers' test_variance", "[parity][ddim]") {
  const DiscreteSchedule schedule; // the §4.1 config
  auto variance = [&](int t, int prev) {
    return posterior_variance(schedule.point(t), schedule.point(prev));
  };
  CHECK(std::abs(variance(0, 0) - 0.0) < 1e-5);
  CHECK(std::abs(variance(420, 400) - 0.14771) < 1e-5);
  CHECK(std::abs(variance(980, 960) - 0.32460) < 1e-5);
  CHECK(std::abs(variance(487, 486) - 0.00979) < 1e-5);
  CHECK(std::abs(variance(999, 998) - 0.02) < 1e-5);
}

TEST_CASE("DDIM steps_offset matches diffusers' test_steps_offset", "[parity][ddim]") {
  DiscreteScheduleOptions config;
  config.steps_offset = 1;
  const Trajectory trajectory = DiscreteSchedule(config).trajectory(5);
  REQUIRE(trajectory.steps() == 5);
  const double expected[] = {801, 601, 401, 201, 1};
  for (int i = 0; i < 5; ++i)
    CHECK(trajectory[i].timestep == expected[i]);
}
