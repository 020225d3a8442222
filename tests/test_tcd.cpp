// SPDX-License-Identifier: Apache-2.0
// TCD: diffusers parity (TCDSchedulerTest in diffusers tests/schedulers/test_scheduler_tcd.py) with
// diffusers' harness and tolerances, the TCD timesteps (strength included), the strategic
// stochastic step, its convergence order at gamma = 0 and its sampled moments at gamma > 0.
#include <catch2/catch.hpp>

#include <cmath>
#include <iomanip>
#include <vector>

#include "support/gaussian_mixture.hpp"
#include "tstitch/sample.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/solver/tcd.hpp"

#include "support/diffusers_harness.hpp"
#include "support/gaussian_problems.hpp"
#include "support/solver_checks.hpp"
#include "support/tensor_checks.hpp"

using namespace tstitch;
using namespace tstitch::testing;

static_assert(Solver<TCD>);

namespace {

const Shape tcd_shape{2, 4, 4};

/// diffusers' TCDSchedulerTest.full_loop: x = step(model(x, t), t, x, eta = 0) over the
/// timesteps of set_timesteps(n), from the harness sample.
Result tcd_loop(int n, Prediction prediction = Prediction::epsilon,
                DiscreteScheduleOptions o = TCDSchedule::default_options()) {
  const TCDSchedule schedule{DiscreteSchedule(o)};
  auto model = harness_model(prediction);
  TCD tcd(TCDOptions{0.0});
  Tensor x = harness_tensor();
  SampleOptions options;
  options.steps = n;
  sample(model, schedule, tcd, x, NoCondition{}, options);
  const Result r = abs_sum(x);
  INFO(std::setprecision(10) << "sum " << r.sum << ", mean " << r.mean);
  return r;
}

/// A trajectory with the schedule's point map, as the sampling loop hands it to solvers.
template <class Schedule> Trajectory with_map(const Schedule& schedule, int n) {
  Trajectory trajectory = schedule.trajectory(n);
  trajectory.point_at = [&schedule](double t) { return schedule.point(t); };
  return trajectory;
}

/// Samples the two-channel Gaussian data of check_distribution with TCD and an ideal TCD network
/// for them, from the exact marginal at the first point, and checks the final mean and variance
/// within 3 standard errors. The ideal network outputs the x0 whose semi-linear (DDIM) jump to the
/// step's intermediate point s lands exactly on the probability-flow solution there (what TCD
/// distils), so TCD's re-noising keeps every marginal exact and any error in it shows. (With the
/// exact denoiser instead, the DDIM jump over [s, t] - at least gamma times the next timestep,
/// however many steps - loses 12% of the variance at gamma = 0.3.)
void check_ideal_tcd_moments(const TCDSchedule& schedule, double gamma, int steps) {
  const Shape shape2{2, 50, 50};
  const analytic::DiagonalGaussian data = channel_gaussians(shape2);
  const TCD tcd(TCDOptions{gamma});
  const Trajectory trajectory = schedule.trajectory(steps);
  auto model = make_denoiser(
      Prediction::sample, shape2,
      [&](ConstView x, const StepContext& ctx, const NoCondition&, View out) {
        const TimePoint& t = ctx.point;
        const TimePoint& next = trajectory[ctx.step + 1];
        const double ts = tcd.intermediate_timestep(next.timestep);
        const TimePoint s = gamma > 0 && ts != next.timestep ? schedule.point(ts) : next;
        for (std::int64_t n = 0; n < x.batch(); ++n)
          for (std::int64_t e = 0; e < shape2.numel(); ++e) {
            const double xt = x.data()[n * x.batch_stride() + e];
            const double xs = data.flow(static_cast<std::size_t>(e), xt, t, s);
            out.data()[n * out.batch_stride() + e] = static_cast<float>(
                (xs - s.sigma / t.sigma * xt) / (s.alpha - s.sigma * t.alpha / t.sigma));
          }
      });
  TCD solver(TCDOptions{gamma});
  const Tensor x =
      sample_from_marginal(model, schedule, solver, data, shape2, steps, NoCondition{});
  // The run ends at timestep 0 (alpha ~ 0.9996, sigma ~ 0.029): the exact marginal there.
  const TimePoint& end = trajectory[steps];
  INFO("gamma " << gamma);
  for (int c = 0; c < 2; ++c)
    check_channel_moments(x, c, end.alpha * stat_mean[c],
                          end.alpha * end.alpha * stat_variance[c] + end.sigma * end.sigma);
}

} // namespace

TEST_CASE("TCD full loops match diffusers' TCDSchedulerTest (eta = 0)", "[parity][tcd]") {
  // TCDSchedule's defaults are the test config (N = 1000, scaled_linear 0.00085 .. 0.012,
  // original_inference_steps 50); eta = gamma = 0 draws no noise, so the loops are deterministic.
  SECTION("test_full_loop_onestep_deter") {
    const Result r = tcd_loop(1);
    CHECK(std::abs(r.sum - 29.8715) < 1e-3);
    CHECK(std::abs(r.mean - 0.0389) < 1e-3);
  }
  SECTION("test_full_loop_multistep_deter") {
    const Result r = tcd_loop(10);
    CHECK(std::abs(r.sum - 181.2040) < 1e-3);
    CHECK(std::abs(r.mean - 0.2359) < 1e-3);
  }
  // Further values of the same loop, from diffusers 0.31.0 (not in its test file).
  SECTION("diffusers 0.31.0: v_prediction, n = 10") {
    const Result r = tcd_loop(10, Prediction::v);
    CHECK(std::abs(r.sum - 65.1090) < 1e-3);
    CHECK(std::abs(r.mean - 0.0848) < 1e-3);
  }
  SECTION("diffusers 0.31.0: sample prediction, n = 10") {
    const Result r = tcd_loop(10, Prediction::sample);
    CHECK(std::abs(r.sum - 657.6090) < 1e-3);
    CHECK(std::abs(r.mean - 0.8563) < 1e-3);
  }
}

TEST_CASE("TCD timesteps follow diffusers' set_timesteps", "[parity][tcd]") {
  SECTION("test_inference_steps: the last timestep of n = 10, 25, 26, 50") {
    CHECK(tcd_timesteps(1000, 50, 10).back() == 99);
    CHECK(tcd_timesteps(1000, 50, 25).back() == 39);
    CHECK(tcd_timesteps(1000, 50, 26).back() == 39);
    CHECK(tcd_timesteps(1000, 50, 50).back() == 19);
  }
  SECTION("strength 1 is LCM's schedule") {
    for (int n : {1, 4, 10, 26, 50})
      CHECK(tcd_timesteps(1000, 50, n) == lcm_timesteps(1000, 50, n));
    CHECK(TCDSchedule{}.timesteps(10) ==
          std::vector<double>{999, 899, 799, 699, 599, 499, 399, 299, 199, 99});
  }
  SECTION("diffusers 0.31.0: set_timesteps(n, strength)") {
    CHECK(tcd_timesteps(1000, 50, 4, 0.5) == std::vector<double>{499, 379, 259, 139});
    CHECK(tcd_timesteps(1000, 50, 10, 0.3) ==
          std::vector<double>{299, 279, 239, 219, 179, 159, 119, 99, 59, 39});
    CHECK(tcd_timesteps(1000, 50, 3, 0.75) == std::vector<double>{739, 499, 259});
    CHECK(tcd_timesteps(1000, 50, 7, 0.9) ==
          std::vector<double>{899, 779, 659, 519, 399, 259, 139});
    std::vector<double> stride_20;
    for (int t = 299; t > 0; t -= 20)
      stride_20.push_back(t);
    CHECK(tcd_timesteps(1000, 50, 15, 0.3) == stride_20);
    const TCDSchedule half(DiscreteSchedule(TCDSchedule::default_options()), 50, 0.5);
    CHECK(half.timesteps(4) == std::vector<double>{499, 379, 259, 139});
    CHECK(half.trajectory(4)[0].timestep == 499);
  }
  SECTION("the trajectory ends at timestep 0 (alphas_cumprod[0]), as TCD's last step does") {
    const TCDSchedule schedule;
    const Trajectory trajectory = schedule.trajectory(4);
    REQUIRE(trajectory.steps() == 4);
    const double expected[] = {999, 759, 499, 259};
    for (int i = 0; i < 4; ++i)
      CHECK(trajectory[i].timestep == expected[i]);
    CHECK(trajectory[4].timestep == 0);
    CHECK(trajectory[4].alpha == schedule.base().point(0).alpha);
    CHECK(trajectory[4].sigma > 0);
  }
}

TEST_CASE("TCD custom timesteps: each step moves to the next one, the last to timestep 0",
          "[parity][tcd]") {
  // diffusers' test_custom_timesteps: previous_timestep of [100, 87, 50, 1, 0] is
  // [87, 50, 1, 0, -1]; TCD's step() itself then moves to timestep 0 (prev_timestep = 0), never
  // to final_alpha_cumprod, so the trajectory ends at point(0).
  const TCDSchedule schedule;
  const Trajectory trajectory = schedule.trajectory_through({100, 87, 50, 1, 0});
  REQUIRE(trajectory.steps() == 5);
  const double previous[] = {87, 50, 1, 0, 0};
  for (int i = 0; i < 5; ++i) {
    const SolverStep step{i, 0, &trajectory, NoiseKey{}};
    CHECK(step.to().timestep == previous[i]);
    CHECK(step.last() == (i == 4));
  }
  CHECK(trajectory[5].alpha == schedule.base().point(0).alpha);
  // test_custom_timesteps_increasing_order, test_custom_timesteps_too_large.
  CHECK_THROWS_AS(schedule.trajectory_through({100, 87, 50, 51, 0}), tstitch::invalid_argument);
  CHECK_THROWS_AS(schedule.trajectory_through({1000}), tstitch::invalid_argument);
  // diffusers 0.31.0: with strength, the last min(int(n * strength), n) are kept.
  const TCDSchedule half(DiscreteSchedule(TCDSchedule::default_options()), 50, 0.5);
  const Trajectory kept = half.trajectory_through({100, 87, 50, 1, 0});
  REQUIRE(kept.steps() == 2);
  CHECK(kept[0].timestep == 1);
  CHECK(kept[1].timestep == 0);
  const TCDSchedule seventy(DiscreteSchedule(TCDSchedule::default_options()), 50, 0.7);
  CHECK(seventy.trajectory_through({999, 500, 200})[0].timestep == 500);
}

TEST_CASE("TCD's intermediate timestep floors a float32 product, as torch does", "[parity][tcd]") {
  // torch.floor((1 - eta) * prev_timestep) multiplies an int64 tensor by a Python float in
  // float32; in double these would be 62, 0, 0 (diffusers 0.31.0 / torch 1.13 give 63, 1, 1).
  CHECK(TCD(TCDOptions{0.3}).intermediate_timestep(90) == 63);
  CHECK(TCD(TCDOptions{0.8}).intermediate_timestep(5) == 1);
  CHECK(TCD(TCDOptions{0.9}).intermediate_timestep(10) == 1);
  CHECK(TCD(TCDOptions{0.3}).intermediate_timestep(899) == 629);
  CHECK(TCD(TCDOptions{0.0}).intermediate_timestep(899) == 899);
  CHECK(TCD(TCDOptions{1.0}).intermediate_timestep(899) == 0);
}

TEST_CASE("TCD steps: DDIM jump to s, then forward noise to the next point", "[tcd]") {
  const TCDSchedule schedule;
  const Trajectory trajectory = with_map(schedule, 4);
  HostBackend backend;
  TCD tcd(TCDOptions{0.3});
  tcd.begin(backend, trajectory, 2, tcd_shape);
  Tensor x(2, tcd_shape), x0(2, tcd_shape), eps(2, tcd_shape), z(2, tcd_shape);
  fill_initial_noise(x, 1);
  fill_initial_noise(x0, 2);
  fill_initial_noise(eps, 3);
  const ModelOutput out{x0, eps, x0, Prediction::sample};

  SECTION("a middle step") {
    const NoiseKey key{9, 4, 1, stream_solver};
    backend.fill_normal(z, key);
    tcd.update(backend, SolverStep{1, 0, &trajectory, key}, out, x);
    const TimePoint p = trajectory[2];       // timestep 499
    const TimePoint s = schedule.point(349); // floor(0.7f * 499) = 349
    const double abar_p = p.alpha * p.alpha, abar_s = s.alpha * s.alpha;
    for (std::int64_t i = 0; i < x.numel(); ++i) {
      const double xs = s.alpha * x0[i] + s.sigma * eps[i];
      const double expected =
          std::sqrt(abar_p / abar_s) * xs + std::sqrt(1.0 - abar_p / abar_s) * z[i];
      CHECK(x[i] == Approx(expected).margin(1e-5));
    }
  }
  SECTION("the last step returns x_s at timestep 0 and draws nothing") {
    tcd.update(backend, SolverStep{3, 0, &trajectory, NoiseKey{9, 4, 3, stream_solver}}, out, x);
    const TimePoint s = schedule.base().point(0);
    for (std::int64_t i = 0; i < x.numel(); ++i)
      CHECK(x[i] == Approx(s.alpha * x0[i] + s.sigma * eps[i]).margin(1e-6));
  }
  SECTION("gamma = 0 is the DDIM step to the next point") {
    TCD ddim(TCDOptions{0.0});
    ddim.begin(backend, trajectory, 2, tcd_shape);
    ddim.update(backend, SolverStep{0, 0, &trajectory, NoiseKey{}}, out, x);
    const TimePoint p = trajectory[1];
    for (std::int64_t i = 0; i < x.numel(); ++i)
      CHECK(x[i] == Approx(p.alpha * x0[i] + p.sigma * eps[i]).margin(1e-6));
  }
}

TEST_CASE("TCD at gamma = 0 converges at order 1 on the exact probability-flow solution",
          "[solver][tcd]") {
  // gamma = 0 is DDIM between the points: first order.
  const std::vector<int> steps{10, 20, 40, 80, 160};
  SECTION("VP cosine, epsilon") {
    const double order = measured_order(cosine, TCD(TCDOptions{0.0}), Prediction::epsilon, steps);
    UNSCOPED_INFO("measured order " << order);
    CHECK(order == Approx(1.0).margin(0.25));
  }
  SECTION("VP cosine, v") {
    const double order = measured_order(cosine, TCD(TCDOptions{0.0}), Prediction::v, steps);
    UNSCOPED_INFO("measured order " << order);
    CHECK(order == Approx(1.0).margin(0.25));
  }
}

TEST_CASE("TCD with gamma > 0 reproduces the data's mean and variance", "[solver][stat][tcd]") {
  // 10 steps of the default schedule: TCD's few-step regime, where each re-noising is large.
  const TCDSchedule schedule;
  for (double gamma : {0.3, 0.7, 1.0})
    check_ideal_tcd_moments(schedule, gamma, 10);
  SECTION("strength 0.5, 4 steps") {
    check_ideal_tcd_moments(TCDSchedule(DiscreteSchedule(TCDSchedule::default_options()), 50, 0.5),
                            0.3, 4);
  }
}

TEST_CASE("TCD is reproducible per seed; gamma = 0 and one step draw no noise", "[tcd]") {
  analytic::DiagonalGaussian data = varied_gaussian(tcd_shape, 0.1, 1.0);
  analytic::ExactDenoiser model(tcd_shape, data, Prediction::epsilon);
  auto run = [&](int steps, double gamma, std::uint64_t seed) {
    return seeded_sample(model, TCDSchedule{}, TCD(TCDOptions{gamma}), steps, seed, 3);
  };
  CHECK(bit_identical(run(4, 0.3, 1), run(4, 0.3, 1)));
  CHECK_FALSE(bit_identical(run(4, 0.3, 1), run(4, 0.3, 2)));
  CHECK(bit_identical(run(4, 0.0, 1), run(4, 0.0, 2)));
  CHECK(bit_identical(run(1, 0.3, 1), run(1, 0.3, 2)));
}

TEST_CASE("TCD allocates its workspace in begin() only", "[tcd]") {
  const TCDSchedule schedule;
  const Trajectory trajectory = with_map(schedule, 4);
  for (const TCD& tcd : {TCD{}, TCD{TCDOptions{0.0}}, TCD{TCDOptions{1.0}}}) {
    Tensor x(2, tcd_shape), x0(2, tcd_shape);
    CHECK(allocations_after_begin(tcd, trajectory, x,
                                  ModelOutput{x0, x0, x0, Prediction::sample}) == 0);
  }
}

TEST_CASE("TCD options and timesteps are validated, naming option and value", "[tcd][errors]") {
  CHECK_THROWS_AS(TCD(TCDOptions{-0.1}), tstitch::invalid_argument);
  CHECK_THROWS_WITH(TCD(TCDOptions{-0.1}), Catch::Contains("TCDOptions::gamma = -0.1"));
  CHECK_THROWS_WITH(TCD(TCDOptions{1.5}), Catch::Contains("TCDOptions::gamma = 1.5"));
  CHECK_THROWS_WITH(TCD(TCDOptions{NAN}), Catch::Contains("TCDOptions::gamma"));

  HostBackend backend;
  TCD tcd;
  CHECK_THROWS_WITH(tcd.begin(backend, TCDSchedule{}.trajectory(4), 2, tcd_shape),
                    Catch::Contains("trajectory.point_at"));

  CHECK_THROWS_WITH(tcd_timesteps(1000, 50, 4, 0.0), Catch::Contains("strength = 0"));
  CHECK_THROWS_WITH(tcd_timesteps(1000, 50, 4, 1.5), Catch::Contains("strength = 1.5"));
  CHECK_THROWS_WITH(tcd_timesteps(1000, 50, 26, 0.5), Catch::Contains("num_steps = 26"));
  CHECK_THROWS_WITH(tcd_timesteps(1000, 50, 51), Catch::Contains("num_steps = 51"));
  CHECK_THROWS_WITH(tcd_timesteps(1000, 1001, 4, 0.5),
                    Catch::Contains("original_inference_steps = 1001"));
  CHECK_THROWS_WITH(TCDSchedule(DiscreteSchedule(TCDSchedule::default_options()), 50, 0.01),
                    Catch::Contains("strength = 0.01"));
  CHECK_THROWS_WITH(TCDSchedule(DiscreteSchedule(TCDSchedule::default_options()), 2000),
                    Catch::Contains("original_inference_steps = 2000"));
  CHECK_THROWS_WITH(TCDSchedule{}.trajectory(60), Catch::Contains("num_steps = 60"));
  const TCDSchedule small(DiscreteSchedule(TCDSchedule::default_options()), 50, 0.5);
  CHECK_THROWS_WITH(small.trajectory_through({1}), Catch::Contains("strength = 0.5"));
}
