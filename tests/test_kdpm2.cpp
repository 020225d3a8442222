// SPDX-License-Identifier: Apache-2.0
// KDPM2 and KDPM2 ancestral (k-diffusion's DPM-Solver-2 in Karras et al.'s form):
//  - diffusers parity: KDPM2DiscreteSchedulerTest's deterministic full loops with diffusers' own
//    harness and tolerances, plus further spacings checked against diffusers 0.31.0;
//  - convergence order and sampling statistics on exactly solvable Gaussian data;
//  - the log-midpoint evaluation inside the sampling loop and the trajectory stitcher.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "support/gaussian_mixture.hpp"
#include "tstitch/sample.hpp"
#include "tstitch/schedule/continuous.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/solver/euler.hpp"
#include "tstitch/solver/kdpm2.hpp"
#include "tstitch/stitch/stitcher.hpp"

#include "support/diffusers_harness.hpp"
#include "support/gaussian_problems.hpp"
#include "support/k_diffusion_harness.hpp"
#include "support/solver_checks.hpp"
#include "support/stitch_checks.hpp"
#include "support/tensor_checks.hpp"

using namespace tstitch;
using namespace tstitch::testing;
using analytic::DiagonalGaussian;
using analytic::ExactDenoiser;
using analytic::Labels;

static_assert(Solver<KDPM2> && Solver<KDPM2Ancestral>);

namespace {

/// The relative bias of KDPM2 ancestral's final variance for Gaussian data of variance v, exact in
/// the step count. With u = y - mean every stage is linear, d = u s / (v + s^2), so one step is
///   u_next = u (1 + (s_down - s) k(s_mid) (1 + (s_mid - s) k(s))) + s_up z,  k(s) = s / (v + s^2)
/// and the variance propagates as V' = V g^2 + s_up^2 from V = v + s_0^2 (the last step, into
/// sigma = 0, is Euler's: g = 1 - s k(s)).
double kdpm2_ancestral_variance_bias(const Trajectory& trajectory, double v, double eta) {
  auto k = [v](double s) { return s / (v + s * s); };
  double var = v + trajectory[0].ve_sigma() * trajectory[0].ve_sigma();
  for (int i = 0; i < trajectory.steps(); ++i) {
    const double s = trajectory[i].ve_sigma(), sn = trajectory[i + 1].ve_sigma();
    const auto [up, down] = ancestral_step(s, sn, eta);
    double gain = 1 - s * k(s);
    if (down > 0) {
      const double mid = std::sqrt(s * down);
      gain = 1 + (down - s) * k(mid) * (1 + (mid - s) * k(s));
    }
    var = var * gain * gain + up * up;
  }
  return var / v - 1;
}

} // namespace

// ---- diffusers parity ---------------------------------------------------------------------------

TEST_CASE("KDPM2 full loops match diffusers' KDPM2DiscreteSchedulerTest", "[parity][kdpm2]") {
  const DiscreteScheduleOptions config = k_config();
  const DiscreteSchedule schedule = torch_schedule(config);
  SECTION("test_full_loop_no_noise and test_full_loop_device") {
    const Result r = abs_sum(k_loop(KDPM2{}, ve_trajectory(schedule, 10), Prediction::epsilon));
    CHECK(std::abs(r.sum - 20.4125) < 1e-2);
    CHECK(std::abs(r.mean - 0.0266) < 1e-3);
  }
  SECTION("test_full_loop_with_v_prediction") {
    const Result r = abs_sum(k_loop(KDPM2{}, ve_trajectory(schedule, 10), Prediction::v));
    CHECK(std::abs(r.sum - 4.6934e-07) < 1e-2);
    CHECK(std::abs(r.mean - 6.1112e-10) < 1e-3);
  }
  SECTION("test_full_loop_with_noise (timesteps[16:] = [122.1111, 15.5784, 0]: steps 8 and 9)") {
    // t_start * order = 16 is the first evaluation of step 8; add_noise uses sigmas[16] = s_8.
    const Trajectory ve = ve_trajectory(schedule, 10);
    CHECK(static_cast<float>(ve[8].timestep) == Approx(122.1111f));
    const Result r = abs_sum(k_loop(KDPM2{}, ve, Prediction::epsilon, 8));
    CHECK(std::abs(r.sum - 70408.4062) < 1e-2);
    CHECK(std::abs(r.mean - 91.6776) < 1e-3);
  }
}

TEST_CASE("KDPM2 full loops match diffusers 0.31.0 on further spacings", "[parity][kdpm2]") {
  // Not in diffusers' test file: sums computed with diffusers 0.31.0 (torch 1.13, CPU) on the
  // same harness, checked at diffusers' tolerances (1e-2 on the sum, 1e-3 on the mean).
  DiscreteScheduleOptions config = k_config();
  Prediction prediction = Prediction::epsilon;
  bool leading = false;
  double sum = 0, mean = 0;
  SECTION("use_karras_sigmas (KDPM2 rounds the karras timesteps)") {
    config.sigma_spacing = SigmaSpacing::karras;
    config.round_timesteps = true;
    sum = 11.968606948852539;
    mean = 0.015584123320877552;
  }
  SECTION("use_karras_sigmas, v_prediction") {
    config.sigma_spacing = SigmaSpacing::karras;
    config.round_timesteps = true;
    prediction = Prediction::v;
    sum = 2.732943585215253e-06;
    mean = 3.5585203672638954e-09;
  }
  SECTION("use_exponential_sigmas") {
    config.sigma_spacing = SigmaSpacing::exponential;
    sum = 937.927734375;
    mean = 1.2212600708007812;
  }
  SECTION("timestep_spacing = leading (init_noise_sigma = sqrt(max^2 + 1))") {
    config.spacing = TimestepSpacing::leading;
    leading = true;
    sum = 2.8488478660583496;
    mean = 0.0037094373255968094;
  }
  SECTION("timestep_spacing = trailing") {
    config.spacing = TimestepSpacing::trailing;
    sum = 3.096696615219116;
    mean = 0.0040321568958461285;
  }
  SECTION("beta_schedule = scaled_linear") {
    config.beta_schedule = BetaSchedule::scaled_linear;
    sum = 13.537938117980957;
    mean = 0.017627524212002754;
  }
  const Result r =
      abs_sum(k_loop(KDPM2{}, ve_trajectory(torch_schedule(config), 10), prediction, 0, leading));
  CHECK(std::abs(r.sum - sum) < 1e-2);
  CHECK(std::abs(r.mean - mean) < 1e-3);
}

// ---- the midpoint evaluation in the sampling loop -----------------------------------------------

TEST_CASE("KDPM2 evaluates at points[i] and at the log-midpoint; once into sigma = 0",
          "[solver][kdpm2]") {
  const DiagonalGaussian data = curved_data();
  ExactDenoiser exact(curved_shape, data, Prediction::epsilon);
  std::vector<StepContext> seen;
  auto model = make_denoiser<Labels>(
      Prediction::epsilon, curved_shape,
      [&](ConstView x, const StepContext& ctx, const Labels& labels, View out) {
        seen.push_back(ctx);
        exact.predict(x, ctx, labels, out);
      });
  DiscreteScheduleOptions config = k_config();
  const DiscreteSchedule schedule(config);
  const int n = 6;
  KDPM2 solver;
  Tensor x(2, curved_shape);
  fill_initial_noise(x, 3);
  SampleOptions options;
  options.steps = n;
  const SampleResult result = sample(model, schedule, solver, x, Labels{}, options);
  const Trajectory trajectory = schedule.trajectory(n);

  REQUIRE(seen.size() == 2 * n - 1);
  REQUIRE(result.records.size() == static_cast<std::size_t>(n));
  std::size_t k = 0;
  for (int i = 0; i < n; ++i) {
    const int expected = i + 1 < n ? 2 : 1;
    CHECK(result.records[static_cast<std::size_t>(i)].evaluations == expected);
    CHECK(solver.evaluations(i) == expected);
    for (int e = 0; e < expected; ++e, ++k) {
      INFO("step " << i << ", evaluation " << e);
      CHECK(seen[k].step == i);
      CHECK(seen[k].evaluation == e);
      if (e == 0) {
        CHECK(seen[k].point.timestep == trajectory[i].timestep);
        continue;
      }
      // sigma_interpol = exp(lerp(log s, log s_next, 1/2)), its timestep sigma_to_t of it
      const double s = trajectory[i].ve_sigma(), sn = trajectory[i + 1].ve_sigma();
      const double mid = std::exp(std::log(s) + 0.5 * (std::log(sn) - std::log(s)));
      CHECK(seen[k].point.ve_sigma() == Approx(mid).epsilon(1e-12));
      CHECK(seen[k].point.timestep == schedule.timestep_at(mid));
      CHECK(seen[k].point.alpha == schedule.point(seen[k].point.timestep).alpha);
      CHECK(seen[k].point.timestep < trajectory[i].timestep);
      CHECK(seen[k].point.timestep > trajectory[i + 1].timestep);
    }
  }
}

TEST_CASE("KDPM2 matches diffusers' midpoint timesteps (timesteps_interpol)", "[parity][kdpm2]") {
  // diffusers' timesteps for n = 10: t_0, then (timesteps_interpol[i], t_i) for i = 1..9; the
  // interpolated ones (float32) are 1039.7437, 917.8562, ..., 175.9601, 15.5784.
  const DiscreteSchedule schedule = torch_schedule(k_config());
  const Trajectory ve = ve_trajectory(schedule, 10);
  KDPM2 solver;
  HostBackend backend;
  solver.begin(backend, ve, 1, harness_shape);
  const double expected[] = {1039.7437, 917.8562, 795.9838, 674.0095, 551.6428,
                             428.4221,  303.7248, 175.9601, 15.5784};
  for (int i = 0; i < 9; ++i) {
    const SolverStep step{i, 1, &ve, NoiseKey{}};
    INFO("step " << i);
    CHECK(solver.evaluation_point(step).timestep == Approx(expected[i]).margin(1e-4));
  }
  CHECK(solver.evaluations(9) == 1);
}

TEST_CASE("KDPM2's midpoint evaluation sees the half step; its step uses the midpoint slope",
          "[solver][kdpm2]") {
  const ContinuousSchedule& schedule = cosine;
  Trajectory trajectory = schedule.trajectory(4);
  trajectory.point_at = [&](double t) { return schedule.point(t); };
  trajectory.timestep_at = [&](double s) { return schedule.timestep_at(s); };
  HostBackend backend;
  KDPM2 solver;
  solver.begin(backend, trajectory, 1, curved_shape);
  Tensor x(1, curved_shape), x0(1, curved_shape), eps0(1, curved_shape), eps1(1, curved_shape);
  fill_initial_noise(x, 9);
  fill_initial_noise(eps0, 10);
  fill_initial_noise(eps1, 11);
  const Tensor x_start = x;

  SolverStep step{1, 0, &trajectory, NoiseKey{}};
  solver.update(backend, step, ModelOutput{x0, eps0, eps0, Prediction::epsilon}, x);
  CHECK(bit_identical(x, x_start)); // x is kept until the step completes
  step.evaluation = 1;
  const TimePoint a = trajectory[1], b = trajectory[2], m = solver.evaluation_point(step);
  const double s = a.ve_sigma(), sn = b.ve_sigma(), s_mid = std::sqrt(s * sn);
  CHECK(m.ve_sigma() == Approx(s_mid).epsilon(1e-12));
  CHECK(m.timestep == Approx(schedule.timestep_at(s_mid)).epsilon(1e-12));
  const ConstView predictor = solver.evaluation_input(step, x);
  CHECK(predictor.data() != x.data());
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    const double y_mid = x_start[i] / a.alpha + (s_mid - s) * eps0[i];
    CHECK(predictor.data()[i] == Approx(m.alpha * y_mid).margin(1e-5));
  }
  solver.update(backend, step, ModelOutput{x0, eps1, eps1, Prediction::epsilon}, x);
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    const double y1 = x_start[i] / a.alpha + (sn - s) * eps1[i];
    CHECK(x[i] == Approx(b.alpha * y1).margin(1e-5));
  }
}

TEST_CASE("KDPM2's single-evaluation steps are Euler's, bit for bit", "[solver][kdpm2]") {
  const DiagonalGaussian data = curved_data();
  SECTION("a one-step run into sigma = 0") {
    ExactDenoiser model(curved_shape, data, Prediction::v);
    Tensor a(2, curved_shape);
    fill_initial_noise(a, 4);
    Tensor b = a;
    SampleOptions options;
    options.steps = 1;
    KDPM2 kdpm2;
    Euler euler;
    sample(model, cosine, kdpm2, a, Labels{}, options);
    sample(model, cosine, euler, b, Labels{}, options);
    CHECK(bit_identical(a, b));
  }
  SECTION("the first step of a flow schedule (alpha = 0) and the last") {
    Trajectory trajectory = flow.trajectory(5);
    trajectory.point_at = [](double t) { return flow.point(t); };
    trajectory.timestep_at = [](double s) { return flow.timestep_at(s); };
    KDPM2 solver;
    HostBackend backend;
    solver.begin(backend, trajectory, 1, curved_shape);
    CHECK(solver.evaluations(0) == 1);
    CHECK(solver.evaluations(1) == 2);
    CHECK(solver.evaluations(4) == 1);
  }
}

// ---- convergence --------------------------------------------------------------------------------

TEST_CASE("KDPM2 converges at order 2 on the exact probability-flow solution", "[solver][kdpm2]") {
  const std::vector<int> steps{10, 20, 40, 80, 160};
  SECTION("VP cosine, epsilon") {
    const double order = measured_order(cosine, KDPM2{}, Prediction::epsilon, steps);
    UNSCOPED_INFO("measured order " << order);
    CHECK(order == Approx(2.0).margin(0.25));
  }
  SECTION("VP cosine, v") {
    const double order = measured_order(cosine, KDPM2{}, Prediction::v, steps);
    UNSCOPED_INFO("measured order " << order);
    CHECK(order == Approx(2.0).margin(0.25));
  }
  SECTION("rectified flow, flow velocity (first step Euler from alpha = 0)") {
    const double order = measured_order(flow, KDPM2{}, Prediction::flow, steps);
    UNSCOPED_INFO("measured order " << order);
    CHECK(order == Approx(2.0).margin(0.25));
  }
}

// ---- KDPM2 ancestral ----------------------------------------------------------------------------

TEST_CASE("KDPM2 ancestral with eta = 0 is KDPM2, bit for bit", "[solver][kdpm2_ancestral]") {
  const DiagonalGaussian data = curved_data();
  for (int on_flow = 0; on_flow < 2; ++on_flow) {
    const Prediction prediction = on_flow ? Prediction::flow : Prediction::epsilon;
    ExactDenoiser model(curved_shape, data, prediction);
    Tensor a(2, curved_shape);
    fill_initial_noise(a, 12);
    Tensor b = a;
    SampleOptions options;
    options.steps = 7;
    KDPM2Ancestral ancestral(KDPM2AncestralOptions{0.0});
    KDPM2 kdpm2;
    if (on_flow) {
      sample(model, flow, ancestral, a, Labels{}, options);
      sample(model, flow, kdpm2, b, Labels{}, options);
    } else {
      sample(model, cosine, ancestral, a, Labels{}, options);
      sample(model, cosine, kdpm2, b, Labels{}, options);
    }
    INFO((on_flow ? "rectified flow" : "VP cosine"));
    CHECK(bit_identical(a, b));
  }
}

TEST_CASE("KDPM2 ancestral: midpoint towards sigma_down, sigma_up noise from step.noise",
          "[solver][kdpm2_ancestral]") {
  const ContinuousSchedule& schedule = cosine;
  Trajectory trajectory = schedule.trajectory(5);
  trajectory.point_at = [&](double t) { return schedule.point(t); };
  trajectory.timestep_at = [&](double s) { return schedule.timestep_at(s); };
  HostBackend backend;
  for (double eta : {1.0, 0.5, 3.0}) {
    KDPM2Ancestral solver(KDPM2AncestralOptions{eta});
    solver.begin(backend, trajectory, 2, curved_shape);
    Tensor x(2, curved_shape), eps0(2, curved_shape), eps1(2, curved_shape), z(2, curved_shape);
    fill_initial_noise(x, 1);
    fill_initial_noise(eps0, 2);
    fill_initial_noise(eps1, 3);
    const Tensor x_start = x;
    const NoiseKey key{77, 3, 2, stream_solver};
    backend.fill_normal(z, key);
    const double s = trajectory[2].ve_sigma(), sn = trajectory[3].ve_sigma();
    const auto [up, down] = ancestral_step(s, sn, eta);
    const double a = trajectory[2].alpha, an = trajectory[3].alpha;
    INFO("eta = " << eta << ", sigma_up = " << up << ", sigma_down = " << down);
    SolverStep step{2, 0, &trajectory, key};
    if (eta == 3.0) { // capped: all of sigma_next is fresh noise, one Euler evaluation to 0
      CHECK(up == sn);
      REQUIRE(solver.evaluations(2) == 1);
      solver.update(backend, step, ModelOutput{eps0, eps0, eps0, Prediction::epsilon}, x);
      for (std::int64_t i = 0; i < x.numel(); ++i) {
        const double y = x_start[i] / a - s * eps0[i] + up * z[i];
        CHECK(x[i] == Approx(an * y).margin(1e-5));
      }
      continue;
    }
    REQUIRE(solver.evaluations(2) == 2);
    solver.update(backend, step, ModelOutput{eps0, eps0, eps0, Prediction::epsilon}, x);
    step.evaluation = 1;
    const TimePoint m = solver.evaluation_point(step);
    const double s_mid = std::sqrt(s * down);
    CHECK(m.ve_sigma() == Approx(s_mid).epsilon(1e-12));
    CHECK(m.timestep == Approx(schedule.timestep_at(s_mid)).epsilon(1e-12));
    const ConstView predictor = solver.evaluation_input(step, x);
    for (std::int64_t i = 0; i < x.numel(); ++i)
      CHECK(predictor.data()[i] ==
            Approx(m.alpha * (x_start[i] / a + (s_mid - s) * eps0[i])).margin(1e-5));
    solver.update(backend, step, ModelOutput{eps1, eps1, eps1, Prediction::epsilon}, x);
    for (std::int64_t i = 0; i < x.numel(); ++i) {
      const double y = x_start[i] / a + (down - s) * eps1[i] + up * z[i];
      CHECK(x[i] == Approx(an * y).margin(1e-5));
    }
  }
}

TEST_CASE("KDPM2 ancestral is reproducible per seed and draws different noise per seed",
          "[solver][kdpm2_ancestral]") {
  const DiagonalGaussian data = curved_data();
  ExactDenoiser model(curved_shape, data, Prediction::epsilon);
  auto run = [&](std::uint64_t seed) {
    return seeded_sample(model, cosine, KDPM2Ancestral{}, 10, seed, 1);
  };
  CHECK(bit_identical(run(4), run(4)));
  CHECK_FALSE(bit_identical(run(4), run(5)));
}

// diffusers' ancestral full loops draw torch-generator noise, which tstitch does not reproduce;
// the sampler is checked on its distribution instead. Finite-step bias (exact, see
// kdpm2_ancestral_variance_bias) is checked to stay below one standard error of the variance.
TEST_CASE("KDPM2 ancestral reproduces the data's mean and variance", "[solver][stat]") {
  const ContinuousSchedule& schedule = cosine;
  const int steps = 500;
  for (double eta : {1.0, 0.5})
    for (double v : {0.5, 2.0}) {
      const double bias = kdpm2_ancestral_variance_bias(schedule.trajectory(steps), v, eta);
      INFO("eta " << eta << ", data variance " << v << ": relative bias " << bias);
      CHECK(std::abs(bias) < std::sqrt(2.0 / 19999.0));
    }
  SECTION("eta = 1 (diffusers)") {
    check_distribution(schedule, KDPM2Ancestral{}, Prediction::epsilon, steps);
  }
  SECTION("eta = 0.5, v prediction") {
    check_distribution(schedule, KDPM2Ancestral{KDPM2AncestralOptions{0.5}}, Prediction::v, steps);
  }
}

// ---- stitching ----------------------------------------------------------------------------------

TEST_CASE("Stitched KDPM2: both evaluations of a step are served by the same model",
          "[solver][kdpm2][stitch]") {
  const int n = 10;
  const DiagonalGaussian data = curved_data();
  std::vector<Call> log;
  Recording small("small", data, log), large("large", data, log);
  const ContinuousSchedule& schedule = cosine;
  Trajectory trajectory = schedule.trajectory(n);
  trajectory.point_at = [&](double t) { return schedule.point(t); };
  trajectory.timestep_at = [&](double s) { return schedule.timestep_at(s); };
  std::vector<double> midpoints(n, 0.0);
  {
    KDPM2 probe;
    HostBackend backend;
    probe.begin(backend, trajectory, 1, curved_shape);
    for (int i = 0; i + 1 < n; ++i)
      midpoints[static_cast<std::size_t>(i)] =
          probe.evaluation_point(SolverStep{i, 1, &trajectory, NoiseKey{}}).timestep;
  }
  // By fraction, and by a timestep threshold between point 3 and the midpoint of step 3: that
  // midpoint evaluation lies on the large model's side of the threshold, yet it belongs to step 3
  // and so to the small model.
  const double between = 0.5 * (trajectory[3].timestep + midpoints[3]);
  TrajectoryStitcher by_fraction(small, large, 0.4);
  TrajectoryStitcher by_threshold(small, large, TimestepThreshold(between));

  auto run = [&](auto& stitcher, const auto& solver) {
    check_stitched_evaluations(stitcher, schedule, solver, n, log, [&](int i, int e) {
      return e == 0 ? trajectory[i].timestep : midpoints[static_cast<std::size_t>(i)];
    });
  };
  SECTION("StepFraction") { run(by_fraction, KDPM2{}); }
  SECTION("TimestepThreshold") { run(by_threshold, KDPM2{}); }
  SECTION("TimestepThreshold, ancestral (eta = 0: the same midpoints)") {
    run(by_threshold, KDPM2Ancestral{KDPM2AncestralOptions{0.0}});
  }
}

// ---- resources and errors -----------------------------------------------------------------------

TEST_CASE("KDPM2 and KDPM2 ancestral allocate their workspace in begin() only", "[solver][kdpm2]") {
  Trajectory trajectory = cosine.trajectory(6);
  trajectory.point_at = [](double t) { return cosine.point(t); };
  trajectory.timestep_at = [](double s) { return cosine.timestep_at(s); };
  CHECK(allocations_after_begin(KDPM2{}, trajectory, curved_shape) == 0);
  CHECK(allocations_after_begin(KDPM2Ancestral{}, trajectory, curved_shape) == 0);
  CHECK(allocations_after_begin(KDPM2Ancestral{KDPM2AncestralOptions{0.0}}, trajectory,
                                curved_shape) == 0);
  int count = 0;
  CountingBackend backend{{}, &count};
  KDPM2Ancestral ancestral;
  ancestral.begin(backend, trajectory, 2, curved_shape);
  CHECK(count == 2); // the half step and the noise
  KDPM2 kdpm2;
  kdpm2.begin(backend, trajectory, 2, curved_shape);
  CHECK(count == 3); // the half step
}

TEST_CASE("KDPM2 options and inputs are validated, naming option and value",
          "[solver][kdpm2][errors]") {
  CHECK_THROWS_AS(KDPM2Ancestral(KDPM2AncestralOptions{-0.5}), tstitch::invalid_argument);
  CHECK_THROWS_WITH(KDPM2Ancestral(KDPM2AncestralOptions{-0.5}),
                    Catch::Contains("KDPM2AncestralOptions::eta = -0.5"));
  CHECK_THROWS_WITH(KDPM2Ancestral(KDPM2AncestralOptions{NAN}),
                    Catch::Contains("KDPM2AncestralOptions::eta"));
  CHECK_THROWS_WITH(KDPM2Ancestral(KDPM2AncestralOptions{std::numeric_limits<double>::infinity()}),
                    Catch::Contains("KDPM2AncestralOptions::eta = inf"));

  HostBackend backend;
  KDPM2 kdpm2;
  CHECK_THROWS_WITH(kdpm2.evaluations(0), Catch::Contains("step = 0"));
  // A hand-built trajectory has no maps: the midpoint cannot be placed.
  const Trajectory bare = cosine.trajectory(3);
  CHECK_THROWS_AS(kdpm2.begin(backend, bare, 1, curved_shape), tstitch::invalid_argument);
  CHECK_THROWS_WITH(kdpm2.begin(backend, bare, 1, curved_shape),
                    Catch::Contains("Trajectory::timestep_at = empty") && Catch::Contains("KDPM2"));
  KDPM2Ancestral ancestral;
  CHECK_THROWS_WITH(ancestral.begin(backend, bare, 1, curved_shape),
                    Catch::Contains("KDPM2Ancestral"));
  // ... unless no step evaluates a midpoint (one step into sigma = 0).
  CHECK_NOTHROW(kdpm2.begin(backend, cosine.trajectory(1), 1, curved_shape));
  Trajectory mapped = cosine.trajectory(3);
  mapped.point_at = [](double t) { return cosine.point(t); };
  mapped.timestep_at = [](double s) { return cosine.timestep_at(s); };
  kdpm2.begin(backend, mapped, 1, curved_shape);
  CHECK(kdpm2.evaluations(2) == 1);
  CHECK_THROWS_WITH(kdpm2.evaluations(3), Catch::Contains("step = 3"));
}
