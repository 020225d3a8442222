// SPDX-License-Identifier: Apache-2.0
// LCM: diffusers parity (docs/parity.md §4.16) with diffusers' harness
// (§1) and tolerances, the LCM timestep schedule, and the consistency step itself.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <vector>

#include "support/gaussian_mixture.hpp"
#include "tstitch/sample.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/solver/lcm.hpp"

#include "support/diffusers_harness.hpp"
#include "support/solver_checks.hpp"
#include "support/tensor_checks.hpp"

using namespace tstitch;
using namespace tstitch::testing;

static_assert(Solver<LCM>);

namespace {

const Shape lcm_shape{2, 4, 4};

} // namespace

TEST_CASE("LCM one-step loop matches diffusers' LCMSchedulerTest (§4.16)", "[parity][lcm]") {
  // The test config (N = 1000, scaled_linear 0.00085 .. 0.012, epsilon) is LCMSchedule's default.
  // Loop pattern P: x = step(model(x, t), t, x) over timesteps {999}.
  const LCMSchedule schedule;
  auto model = harness_model(Prediction::epsilon);
  LCM lcm;
  Tensor x = harness_tensor();
  SampleOptions options;
  options.steps = 1;
  sample(model, schedule, lcm, x, NoCondition{}, options);
  const Result r = abs_sum(x);
  INFO(std::setprecision(10) << "sum " << r.sum << ", mean " << r.mean);
  CHECK(std::abs(r.sum - 18.7097) < 1e-3);
  CHECK(std::abs(r.mean - 0.0244) < 1e-3);
  // test_full_loop_multistep (n = 10: sum 197.7616) is not reproducible: diffusers draws
  // torch.randn noise at 9 of its 10 steps, and tstitch's noise is its own Philox stream.
}

TEST_CASE("LCM timesteps follow diffusers' set_timesteps", "[parity][lcm]") {
  SECTION("test_inference_steps: the last timestep of n = 10, 25, 26, 50") {
    CHECK(lcm_timesteps(1000, 50, 10).back() == 99);
    CHECK(lcm_timesteps(1000, 50, 25).back() == 39);
    CHECK(lcm_timesteps(1000, 50, 26).back() == 39);
    CHECK(lcm_timesteps(1000, 50, 50).back() == 19);
  }
  SECTION("whole schedules") {
    CHECK(lcm_timesteps(1000, 50, 1) == std::vector<double>{999});
    CHECK(lcm_timesteps(1000, 50, 4) == std::vector<double>{999, 759, 499, 259});
    CHECK(lcm_timesteps(1000, 50, 10) ==
          std::vector<double>{999, 899, 799, 699, 599, 499, 399, 299, 199, 99});
    std::vector<double> stride_40;
    for (int t = 999; t > 0; t -= 40)
      stride_40.push_back(t);
    CHECK(lcm_timesteps(1000, 50, 25) == stride_40);
    CHECK(lcm_timesteps(1000, 50, 26) ==
          std::vector<double>{999, 979, 939, 899, 859, 819, 779, 739, 699, 659, 619, 579, 539,
                              499, 479, 439, 399, 359, 319, 279, 239, 199, 159, 119, 79,  39});
    std::vector<double> all;
    for (int t = 999; t > 0; t -= 20)
      all.push_back(t);
    CHECK(lcm_timesteps(1000, 50, 50) == all);
    // k = N // original: 1100 // 50 = 22, so the distillation schedule is 22 j - 1.
    CHECK(lcm_timesteps(1100, 50, 2) == std::vector<double>{1099, 549});
  }
  SECTION("LCMSchedule: the trajectory through them, ending clean") {
    const LCMSchedule schedule;
    const Trajectory trajectory = schedule.trajectory(4);
    REQUIRE(trajectory.steps() == 4);
    const double expected[] = {999, 759, 499, 259};
    for (int i = 0; i < 4; ++i) {
      CHECK(trajectory[i].timestep == expected[i]);
      CHECK(trajectory[i].alpha == schedule.base().point(expected[i]).alpha);
    }
    CHECK(trajectory[4].alpha == 1.0);
    CHECK(trajectory[4].sigma == 0.0);
    CHECK(schedule.original_inference_steps() == 50);
    CHECK(schedule.base().num_train_timesteps() == 1000);
  }
}

TEST_CASE("LCM custom timesteps: each step moves to the next one, the last to the clean point",
          "[parity][lcm]") {
  // diffusers' test_custom_timesteps: previous_timestep of [100, 87, 50, 1, 0] is
  // [87, 50, 1, 0, -1], -1 standing for final_alpha_cumprod (1 with set_alpha_to_one).
  const DiscreteSchedule schedule(LCMSchedule::default_options());
  const Trajectory trajectory = schedule.trajectory_through({100, 87, 50, 1, 0});
  REQUIRE(trajectory.steps() == 5);
  const double previous[] = {87, 50, 1, 0};
  for (int i = 0; i < 4; ++i) {
    const SolverStep step{i, 0, &trajectory, NoiseKey{}};
    CHECK(step.to().timestep == previous[i]);
    CHECK_FALSE(step.last());
  }
  const SolverStep last{4, 0, &trajectory, NoiseKey{}};
  CHECK(last.last());
  CHECK(last.to().alpha == 1.0);
  CHECK(last.to().sigma == 0.0);
  // diffusers rejects increasing and too large custom timesteps; so does trajectory_through.
  CHECK_THROWS_AS(schedule.trajectory_through({100, 87, 50, 51, 0}), tstitch::invalid_argument);
  CHECK_THROWS_AS(schedule.trajectory_through({1000}), tstitch::invalid_argument);
}

TEST_CASE("LCM boundary-condition scalings", "[lcm]") {
  const LCM lcm;
  const LCM::Scalings at_zero = lcm.scalings(0);
  CHECK(at_zero.c_skip == 1.0); // f(x, 0) = x
  CHECK(at_zero.c_out == 0.0);
  const LCM::Scalings at_999 = lcm.scalings(999); // u = 9990
  CHECK(at_999.c_skip == Approx(0.25 / (9990.0 * 9990.0 + 0.25)).epsilon(1e-14));
  CHECK(at_999.c_out == Approx(9990.0 / std::sqrt(9990.0 * 9990.0 + 0.25)).epsilon(1e-14));
  const LCM custom(LCMOptions{1.0, 1.0, {}});
  CHECK(custom.scalings(1).c_skip == Approx(0.5));
  CHECK(custom.scalings(1).c_out == Approx(std::sqrt(0.5)));
}

TEST_CASE("LCM steps: denoise, then re-noise to the next point with step.noise", "[lcm]") {
  const LCMSchedule schedule;
  const Trajectory trajectory = schedule.trajectory(4);
  HostBackend backend;
  LCM lcm;
  lcm.begin(backend, trajectory, 2, lcm_shape);
  Tensor x(2, lcm_shape), x0(2, lcm_shape), z(2, lcm_shape);
  fill_initial_noise(x, 1);
  fill_initial_noise(x0, 2);
  const Tensor x_start = x;

  SECTION("a middle step") {
    const NoiseKey key{9, 4, 1, stream_solver};
    backend.fill_normal(z, key);
    const SolverStep step{1, 0, &trajectory, key};
    lcm.update(backend, step, ModelOutput{x0, x0, x0, Prediction::sample}, x);
    const LCM::Scalings c = lcm.scalings(trajectory[1].timestep);
    const TimePoint next = trajectory[2];
    for (std::int64_t i = 0; i < x.numel(); ++i) {
      const double denoised = c.c_out * x0[i] + c.c_skip * x_start[i];
      CHECK(x[i] == Approx(next.alpha * denoised + next.sigma * z[i]).margin(1e-5));
    }
  }
  SECTION("the last step returns the denoised estimate and draws nothing") {
    const SolverStep step{3, 0, &trajectory, NoiseKey{9, 4, 3, stream_solver}};
    lcm.update(backend, step, ModelOutput{x0, x0, x0, Prediction::sample}, x);
    const LCM::Scalings c = lcm.scalings(trajectory[3].timestep);
    for (std::int64_t i = 0; i < x.numel(); ++i)
      CHECK(x[i] == Approx(c.c_out * x0[i] + c.c_skip * x_start[i]).margin(1e-6));
  }
  SECTION("clip_sample clips x0 first") {
    LCM clipped(LCMOptions{10.0, 0.5, 0.1f});
    clipped.begin(backend, trajectory, 2, lcm_shape);
    const SolverStep step{3, 0, &trajectory, NoiseKey{}};
    clipped.update(backend, step, ModelOutput{x0, x0, x0, Prediction::sample}, x);
    const LCM::Scalings c = clipped.scalings(trajectory[3].timestep);
    for (std::int64_t i = 0; i < x.numel(); ++i) {
      const double x0c = std::clamp(static_cast<double>(x0[i]), -0.1, 0.1);
      CHECK(x[i] == Approx(c.c_out * x0c + c.c_skip * x_start[i]).margin(1e-6));
    }
  }
}

TEST_CASE("Multistep LCM is reproducible per seed; one step draws no noise", "[lcm]") {
  analytic::DiagonalGaussian data;
  for (std::int64_t e = 0; e < lcm_shape.numel(); ++e) {
    data.mean.push_back(0.3 * std::cos(static_cast<double>(e)));
    data.variance.push_back(0.1 + 0.05 * static_cast<double>(e % 3));
  }
  analytic::ExactDenoiser model(lcm_shape, data, Prediction::epsilon);
  auto run = [&](int steps, std::uint64_t seed) {
    return seeded_sample(model, LCMSchedule{}, LCM{}, steps, seed, 3);
  };
  CHECK(bit_identical(run(4, 1), run(4, 1)));
  CHECK_FALSE(bit_identical(run(4, 1), run(4, 2)));
  CHECK(bit_identical(run(1, 1), run(1, 2)));
}

TEST_CASE("LCM allocates its workspace in begin() only", "[lcm]") {
  const Trajectory trajectory = LCMSchedule{}.trajectory(4);
  for (const LCM& lcm : {LCM{}, LCM{LCMOptions{10.0, 0.5, 1.0f}}}) {
    Tensor x(2, lcm_shape), x0(2, lcm_shape);
    CHECK(allocations_after_begin(lcm, trajectory, x,
                                  ModelOutput{x0, x0, x0, Prediction::sample}) == 0);
  }
}

TEST_CASE("LCM options and timesteps are validated, naming option and value", "[lcm][errors]") {
  CHECK_THROWS_AS(LCM(LCMOptions{0.0, 0.5, {}}), tstitch::invalid_argument);
  CHECK_THROWS_WITH(LCM(LCMOptions{-1.0, 0.5, {}}),
                    Catch::Contains("LCMOptions::timestep_scaling = -1"));
  CHECK_THROWS_WITH(LCM(LCMOptions{NAN, 0.5, {}}), Catch::Contains("LCMOptions::timestep_scaling"));
  CHECK_THROWS_WITH(LCM(LCMOptions{10.0, 0.0, {}}), Catch::Contains("LCMOptions::sigma_data = 0"));
  CHECK_THROWS_WITH(LCM(LCMOptions{10.0, 0.5, -1.0f}),
                    Catch::Contains("LCMOptions::clip_sample = -1"));

  CHECK_THROWS_WITH(lcm_timesteps(1000, 50, 51), Catch::Contains("num_steps = 51"));
  CHECK_THROWS_WITH(lcm_timesteps(1000, 50, 0), Catch::Contains("num_steps = 0"));
  CHECK_THROWS_WITH(lcm_timesteps(1000, 1001, 4),
                    Catch::Contains("original_inference_steps = 1001"));
  CHECK_THROWS_WITH(lcm_timesteps(1000, 0, 1), Catch::Contains("original_inference_steps = 0"));
  CHECK_THROWS_WITH(lcm_timesteps(0, 1, 1), Catch::Contains("num_train_timesteps = 0"));
  CHECK_THROWS_WITH(LCMSchedule(DiscreteSchedule{}, 2000),
                    Catch::Contains("original_inference_steps = 2000"));
  CHECK_THROWS_WITH(LCMSchedule{}.trajectory(60), Catch::Contains("num_steps = 60"));
}
