// SPDX-License-Identifier: Apache-2.0
// Inversion (InvertedSchedule): the deterministic full-loop oracles of diffusers'
// DDIMInverseSchedulerTest and DPMSolverMultistepInverseScheduler test (same harness, same
// tolerances), run by the unchanged DDIM and DPMSolverMultistep solvers through tstitch::sample;
// the round trip inversion -> sampling on analytic Gaussian data; convergence to the exact flow;
// stitching in the inverse direction (switch step, history keep/reset); option validation.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <numbers>
#include <utility>
#include <vector>

#include "support/gaussian_mixture.hpp"
#include "tstitch/sample.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/schedule/inverse.hpp"
#include "tstitch/solver/ddim.hpp"
#include "tstitch/solver/ddpm.hpp"
#include "tstitch/solver/dpm_solver.hpp"
#include "tstitch/solver/euler_ancestral.hpp"
#include "tstitch/stitch/policy.hpp"
#include "tstitch/stitch/stitcher.hpp"

#include "support/diffusers_harness.hpp"
#include "support/gaussian_problems.hpp"
#include "support/tensor_checks.hpp"

using namespace tstitch;
using namespace tstitch::testing;
using analytic::DiagonalGaussian;
using analytic::ExactDenoiser;
using analytic::Labels;
using Catch::Matchers::Contains;

static_assert(NoiseSchedule<InvertedSchedule<DiscreteSchedule>>);
static_assert(NoiseSchedule<InvertedSchedule<CosineSchedule>>);

namespace {

/// DDIMInverseSchedulerTest.get_scheduler_config: DDIM's defaults (leading, set_alpha_to_one).
DiscreteScheduleOptions ddim_inverse_config() { return {}; }

/// DDIMInverseSchedulerTest's clip_sample = True (range 1).
DDIM ddim_clipped() {
  DDIMOptions o;
  o.clip_sample = 1.0f;
  return DDIM(o);
}

/// The DPMSolverMultistepInverseScheduler test config: linspace spacing.
DiscreteScheduleOptions dpm_inverse_config() {
  DiscreteScheduleOptions o;
  o.spacing = TimestepSpacing::linspace_multistep;
  return o;
}

/// Its solver config: solver_order 2, midpoint, dpmsolver++, lower_order_final = False.
DPMSolverMultistepOptions dpm_inverse_solver(int order = 2) {
  DPMSolverMultistepOptions o;
  o.solver_order = order;
  o.lower_order_final = false;
  return o;
}

Result ddim_loop(DiscreteScheduleOptions o, Prediction p) {
  return abs_sum(full_loop_latents(ddim_inverse(DiscreteSchedule(o)), ddim_clipped(), p));
}

Result dpm_loop(DiscreteScheduleOptions o, DPMSolverMultistepOptions s, Prediction p) {
  return abs_sum(
      full_loop_latents(dpm_solver_inverse(DiscreteSchedule(o)), DPMSolverMultistep(s), p));
}

/// CosineSchedule ending short of the clean point (sigma > 0 at t_min), so that DPM-Solver++'s
/// lambda is finite at the start of an inversion.
struct TruncatedCosine {
  double t_max = 0.8, t_min = 0.1;
  TimePoint point(double t) const {
    return {t, std::cos(std::numbers::pi / 2 * t), std::sin(std::numbers::pi / 2 * t)};
  }
  double timestep_at(double ve_sigma) const { return std::atan(ve_sigma) * 2 / std::numbers::pi; }
  Trajectory trajectory(int n) const {
    Trajectory trajectory{{}, 1.0};
    for (int i = 0; i <= n; ++i)
      trajectory.points.push_back(
          point(t_max - (t_max - t_min) * static_cast<double>(i) / static_cast<double>(n)));
    return trajectory;
  }
};

/// 8 clean samples of curved_data().
Tensor clean_samples(const DiagonalGaussian& data) {
  Tensor x(8, curved_shape);
  fill_initial_noise(x, 23);
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    const auto e = static_cast<std::size_t>(i % curved_shape.numel());
    x[i] = static_cast<float>(data.mean[e] + std::sqrt(data.variance[e]) * x[i]);
  }
  return x;
}

/// RMS distance of an n-step inversion of `schedule` from the exact probability flow.
template <class Schedule, class SolverT>
double inversion_error(const Schedule& schedule, SolverT solver, int n) {
  const DiagonalGaussian data = curved_data();
  ExactDenoiser model(curved_shape, data, Prediction::epsilon);
  const Trajectory trajectory = schedule.trajectory(n);
  Tensor x(8, curved_shape);
  fill_initial_noise(x, 31);
  to_marginal(x, data, trajectory[0]);
  const Tensor start = x;
  SampleOptions options;
  options.steps = n;
  sample(model, schedule, solver, x, Labels{}, options);
  return rms_distance(x, exact_flow(data, start, trajectory, n));
}

} // namespace

// ---- diffusers' DDIMInverseSchedulerTest -----------------------------------------------------

TEST_CASE("DDIM inversion full loops match diffusers' DDIMInverseSchedulerTest",
          "[parity][ddim_inverse]") {
  SECTION("test_full_loop_no_noise") {
    const Result r = ddim_loop(ddim_inverse_config(), Prediction::epsilon);
    CHECK(std::abs(r.sum - 671.6816) < 1e-2);
    CHECK(std::abs(r.mean - 0.8746) < 1e-3);
  }
  SECTION("test_full_loop_with_v_prediction") {
    const Result r = ddim_loop(ddim_inverse_config(), Prediction::v);
    CHECK(std::abs(r.sum - 1394.2185) < 1e-2);
    CHECK(std::abs(r.mean - 1.8154) < 1e-3);
  }
  SECTION("test_full_loop_with_set_alpha_to_one") {
    DiscreteScheduleOptions o = ddim_inverse_config();
    o.beta_start = 0.01;
    o.final_point = FinalPoint::clean;
    const Result r = ddim_loop(o, Prediction::epsilon);
    CHECK(std::abs(r.sum - 539.9622) < 1e-2);
    CHECK(std::abs(r.mean - 0.7031) < 1e-3);
  }
  SECTION("test_full_loop_with_no_set_alpha_to_one") {
    DiscreteScheduleOptions o = ddim_inverse_config();
    o.beta_start = 0.01;
    o.final_point = FinalPoint::first_train_step;
    const Result r = ddim_loop(o, Prediction::epsilon);
    CHECK(std::abs(r.sum - 542.6722) < 1e-2);
    CHECK(std::abs(r.mean - 0.7066) < 1e-3);
  }
}

TEST_CASE("DDIM inversion with trailing spacing (diffusers 0.31.0 values)", "[ddim_inverse]") {
  DiscreteScheduleOptions o = ddim_inverse_config();
  o.spacing = TimestepSpacing::trailing;
  // diffusers 0.31.0: DDIMInverseScheduler(timestep_spacing="trailing"), the harness full loop.
  const Result r = ddim_loop(o, Prediction::epsilon);
  CHECK(std::abs(r.sum - 676.5342) < 1e-2);
  CHECK(std::abs(r.mean - 0.8809) < 1e-3);
  // Known deviation: where n does not divide N, diffusers starts step i at the level of
  // t_i - N // n, which is not where step i - 1 ended; tstitch's steps join. diffusers 0.31.0
  // gives sums 545.6233 (n = 3) and 642.7051 (n = 7); tstitch is within 0.2 % of them.
  auto model = harness_model(Prediction::epsilon);
  for (auto [n, expected] : {std::pair{3, 545.6233}, std::pair{7, 642.7051}}) {
    Tensor x = harness_tensor();
    SampleOptions options;
    options.steps = n;
    DDIM solver = ddim_clipped();
    sample(model, ddim_inverse(DiscreteSchedule(o)), solver, x, NoCondition{}, options);
    INFO("n = " << n);
    CHECK(std::abs(abs_sum(x).sum - expected) < 2e-3 * expected);
  }
}

TEST_CASE("DDIM inversion timesteps match diffusers' set_timesteps", "[parity][ddim_inverse]") {
  DiscreteScheduleOptions o = ddim_inverse_config();
  o.steps_offset = 1; // test_steps_offset
  CHECK(ddim_inverse(DiscreteSchedule(o)).timesteps(5) ==
        std::vector<double>{1, 201, 401, 601, 801});
  // diffusers 0.31.0: leading without offset, and trailing.
  CHECK(ddim_inverse(DiscreteSchedule()).timesteps(10) ==
        std::vector<double>{0, 100, 200, 300, 400, 500, 600, 700, 800, 900});
  o = ddim_inverse_config();
  o.spacing = TimestepSpacing::trailing;
  CHECK(ddim_inverse(DiscreteSchedule(o)).timesteps(10) ==
        std::vector<double>{99, 199, 299, 399, 499, 599, 699, 799, 899, 999});
}

TEST_CASE("DDIM inversion: each step starts where the last one ended", "[ddim_inverse]") {
  const Trajectory t = ddim_inverse(DiscreteSchedule()).trajectory(10);
  const DiscreteSchedule base;
  REQUIRE(t.steps() == 10);
  // set_alpha_to_one: the first step starts clean and is conditioned on timestep 0.
  CHECK(t[0].timestep == 0);
  CHECK(t[0].alpha == 1.0);
  CHECK(t[0].sigma == 0.0);
  for (int i = 1; i <= 10; ++i) { // step i - 1 ends at the level of its timestep
    CHECK(t[i].alpha == base.point(t[i - 1].timestep).alpha);
    CHECK(t[i].sigma == base.point(t[i - 1].timestep).sigma);
  }
}

// ---- diffusers' DPMSolverMultistepInverseScheduler test ---------------------------------------

TEST_CASE("DPM-Solver++ inversion full loops match diffusers' inverse scheduler test",
          "[parity][dpm_solver_inverse]") {
  SECTION("test_full_loop_no_noise") {
    const Result r = dpm_loop(dpm_inverse_config(), dpm_inverse_solver(), Prediction::epsilon);
    CHECK(std::abs(r.mean - 0.7047) < 1e-3);
  }
  SECTION("test_full_loop_no_noise_thres") {
    DPMSolverMultistepOptions s = dpm_inverse_solver();
    s.thresholding = DynamicThresholding{0.87, 0.5};
    const Result r = dpm_loop(dpm_inverse_config(), s, Prediction::epsilon);
    CHECK(std::abs(r.mean - 19.8933) < 1e-3);
  }
  SECTION("test_full_loop_with_v_prediction") {
    const Result r = dpm_loop(dpm_inverse_config(), dpm_inverse_solver(), Prediction::v);
    CHECK(std::abs(r.mean - 1.5194) < 1e-3);
  }
  SECTION("test_full_loop_with_karras_and_v_prediction") {
    DiscreteScheduleOptions o = dpm_inverse_config();
    o.sigma_spacing = SigmaSpacing::karras;
    const Result r = dpm_loop(o, dpm_inverse_solver(), Prediction::v);
    CHECK(std::abs(r.mean - 1.7833) < 2e-3);
  }
  SECTION("test_switch: the forward DPMSolverMultistep config inverts to the same loop") {
    // diffusers round-trips the config through DPMSolverMultistepScheduler; here the forward
    // schedule options and solver options are the inverse's, so the loop is the same.
    const Result a = dpm_loop(dpm_inverse_config(), dpm_inverse_solver(), Prediction::epsilon);
    CHECK(std::abs(a.mean - 0.7047) < 1e-3);
    const DiscreteSchedule forward(dpm_inverse_config());
    const Result b =
        abs_sum(full_loop_latents(inverted(forward, InversionRule::dpm_solver),
                                  DPMSolverMultistep(dpm_inverse_solver()), Prediction::epsilon));
    CHECK(std::abs(b.mean - a.mean) < 1e-3);
  }
}

TEST_CASE("DPM-Solver++ inversion with trailing and leading spacing (diffusers 0.31.0 values)",
          "[dpm_solver_inverse]") {
  // diffusers 0.31.0: the inverse scheduler test config with timestep_spacing "trailing", and
  // "leading" with steps_offset 1; the harness full loop's sum of |x|.
  DiscreteScheduleOptions o = dpm_inverse_config();
  o.spacing = TimestepSpacing::trailing; // its last step is zero-length: 999 -> 999
  CHECK(std::abs(dpm_loop(o, dpm_inverse_solver(), Prediction::epsilon).sum - 558.8735) < 1e-2);
  o.spacing = TimestepSpacing::leading_multistep;
  o.steps_offset = 1;
  CHECK(std::abs(dpm_loop(o, dpm_inverse_solver(), Prediction::epsilon).sum - 634.3705) < 1e-2);
}

TEST_CASE("DPM-Solver++ inversion never produces NaN (test_solver_order_and_type)",
          "[parity][dpm_solver_inverse]") {
  for (int order : {1, 2, 3})
    for (DPMSolverType type : {DPMSolverType::midpoint, DPMSolverType::heun})
      for (Prediction p : {Prediction::epsilon, Prediction::sample}) {
        DPMSolverMultistepOptions s = dpm_inverse_solver(order);
        s.solver_type = type;
        INFO("order " << order << ", heun " << (type == DPMSolverType::heun) << ", " << p);
        CHECK(all_finite(full_loop_latents(
            dpm_solver_inverse(DiscreteSchedule(dpm_inverse_config())), DPMSolverMultistep(s), p)));
      }
}

TEST_CASE("DPM-Solver++ inversion timesteps and orders follow diffusers", "[dpm_solver_inverse]") {
  // diffusers 0.31.0: DPMSolverMultistepInverseScheduler().set_timesteps(10).timesteps, sigmas.
  const auto inverse = dpm_solver_inverse(DiscreteSchedule(dpm_inverse_config()));
  CHECK(inverse.timesteps(10) ==
        std::vector<double>{0, 100, 200, 300, 400, 500, 599, 699, 799, 899});
  const Trajectory t = inverse.trajectory(10);
  CHECK(t[10].timestep == 999);
  CHECK(t[10].sigma == DiscreteSchedule(dpm_inverse_config()).point(999).sigma);
  DiscreteScheduleOptions o = dpm_inverse_config();
  o.spacing = TimestepSpacing::leading_multistep;
  o.steps_offset = 1;
  CHECK(dpm_solver_inverse(DiscreteSchedule(o)).timesteps(4) ==
        std::vector<double>{1, 201, 401, 601});
  o.spacing = TimestepSpacing::trailing;
  o.steps_offset = 0;
  CHECK(dpm_solver_inverse(DiscreteSchedule(o)).timesteps(4) ==
        std::vector<double>{249, 499, 749, 999});

  // The order rule is the forward one: lower_order_final with n < 15 gives 2 then 1 at the end.
  DPMSolverMultistepOptions s;
  s.solver_order = 3;
  DPMSolverMultistep solver(s);
  std::vector<int> orders;
  Tensor x = harness_tensor();
  auto model = harness_model(Prediction::epsilon);
  SampleOptions options;
  options.steps = 8;
  options.on_step = [&](const StepRecord&) {
    orders.push_back(solver.last_order());
    return true;
  };
  sample(model, inverse, solver, x, NoCondition{}, options);
  CHECK(orders == std::vector<int>{1, 2, 3, 3, 3, 3, 2, 1});
}

// ---- analytic Gaussian data ------------------------------------------------------------------

TEST_CASE("DDIM inversion then DDIM sampling returns the start, at first order",
          "[ddim_inverse][order]") {
  const CosineSchedule forward;
  const auto backward = inverted(forward);
  const DiagonalGaussian data = curved_data();
  ExactDenoiser model(curved_shape, data, Prediction::epsilon);
  auto round_trip = [&](int n) {
    const Tensor x0 = clean_samples(data);
    Tensor x = x0;
    SampleOptions options;
    options.steps = n;
    DDIM solver;
    sample(model, backward, solver, x, Labels{}, options); // clean -> noisy
    sample(model, forward, solver, x, Labels{}, options);  // noisy -> clean
    return rms_distance(x, x0);
  };
  const std::vector<double> errors = {round_trip(16), round_trip(32), round_trip(64),
                                      round_trip(128)};
  for (std::size_t i = 1; i < errors.size(); ++i)
    CHECK(errors[i] < errors[i - 1]); // shrinks with n
  CHECK(errors.back() < 0.02);
  const double order = measured_order(round_trip, {16, 32, 64, 128});
  INFO("measured order " << order);
  CHECK(order == Approx(1.0).margin(0.25));
}

TEST_CASE("Inversion follows the exact probability flow at the solver's order",
          "[inversion][order]") {
  SECTION("DDIM on the reversed cosine schedule: order 1") {
    const double order =
        measured_order([](int n) { return inversion_error(inverted(CosineSchedule{}), DDIM(), n); },
                       {16, 32, 64, 128});
    INFO("measured order " << order);
    CHECK(order == Approx(1.0).margin(0.25));
  }
  SECTION("DPM-Solver++ 2M with h < 0: order 2") {
    const double order = measured_order(
        [](int n) {
          return inversion_error(inverted(TruncatedCosine{}),
                                 DPMSolverMultistep(dpm_inverse_solver(2)), n);
        },
        {16, 32, 64, 128});
    INFO("measured order " << order);
    CHECK(order == Approx(2.0).margin(0.25));
  }
}

// ---- stitching in the inverse direction -------------------------------------------------------

TEST_CASE("Stitching an inversion: the switch step and history keep/reset", "[inversion][stitch]") {
  const auto schedule = dpm_solver_inverse(DiscreteSchedule(dpm_inverse_config()));
  // Timesteps 0, 100, ..., 500, 599, ...: model 0 serves t >= 450, i.e. steps 5..9 of the
  // inversion, so the switch (model 1 -> model 0) comes before step 5.
  auto model = harness_model(Prediction::epsilon);
  TrajectoryStitcher stitcher(model, model, TimestepThreshold(450.0));
  std::vector<SwitchEvent> events;
  stitcher.on_switch([&](const SwitchEvent& e) { events.push_back(e); });
  CHECK(stitcher.assignment(schedule.trajectory(10)) ==
        std::vector<std::size_t>{1, 1, 1, 1, 1, 0, 0, 0, 0, 0});

  auto run = [&](auto& denoiser, Tensor& x, HistoryPolicy history, int start, int stop_after,
                 std::vector<int>* orders) {
    DPMSolverMultistepOptions o = dpm_inverse_solver(2);
    o.history = history;
    DPMSolverMultistep solver(o);
    SampleOptions options;
    options.steps = 10;
    options.start_step = start;
    options.on_step = [&](const StepRecord& r) {
      if (orders)
        orders->push_back(solver.last_order());
      return stop_after < 0 || r.step < stop_after;
    };
    return sample(denoiser, schedule, solver, x, NoCondition{}, options).switches;
  };
  Tensor alone = harness_tensor(), kept = harness_tensor(), reset = harness_tensor(),
         restarted = harness_tensor();
  std::vector<int> kept_orders, reset_orders;
  run(model, alone, HistoryPolicy::keep, 0, -1, nullptr);
  events.clear();
  CHECK(run(stitcher, kept, HistoryPolicy::keep, 0, -1, &kept_orders) == 1);
  REQUIRE(events.size() == 1);
  CHECK(events[0].from == 1);
  CHECK(events[0].to == 0);
  CHECK(events[0].context.step == 5);
  CHECK(events[0].context.point.timestep == 500);
  CHECK(run(stitcher, reset, HistoryPolicy::reset, 0, -1, &reset_orders) == 1);
  run(model, restarted, HistoryPolicy::reset, 0, 4, nullptr); // steps 0..4, then stop
  run(model, restarted, HistoryPolicy::reset, 5, -1, nullptr);

  // keep: a switch between identical models changes nothing; reset: the solver restarts at first
  // order at the switch, exactly as a run that starts there.
  CHECK(bit_identical(kept, alone));
  CHECK(kept_orders == std::vector<int>{1, 2, 2, 2, 2, 2, 2, 2, 2, 2});
  CHECK(reset_orders == std::vector<int>{1, 2, 2, 2, 2, 1, 2, 2, 2, 2});
  CHECK(bit_identical(reset, restarted));
  CHECK(!bit_identical(reset, alone));
}

TEST_CASE("A step-fraction policy counts steps in run order, clean end first", "[inversion]") {
  // StepFraction gives model 0 the first steps of a run; in an inversion those are the cleanest.
  auto model = harness_model(Prediction::epsilon);
  TrajectoryStitcher stitcher(model, model, 0.3);
  const auto schedule = ddim_inverse(DiscreteSchedule());
  CHECK(stitcher.assignment(schedule.trajectory(10)) ==
        std::vector<std::size_t>{0, 0, 0, 1, 1, 1, 1, 1, 1, 1});
}

// ---- validation ---------------------------------------------------------------------------------

TEST_CASE("Inversion options are validated, naming the option and the value", "[inversion]") {
  DiscreteScheduleOptions o;
  o.spacing = TimestepSpacing::linspace;
  CHECK_THROWS_WITH(ddim_inverse(DiscreteSchedule(o)),
                    Contains("DiscreteScheduleOptions::spacing") && Contains("linspace"));
  o.spacing = TimestepSpacing::leading;
  CHECK_THROWS_WITH(dpm_solver_inverse(DiscreteSchedule(o)),
                    Contains("DiscreteScheduleOptions::spacing") && Contains("leading"));
  o = dpm_inverse_config();
  o.sigma_spacing = SigmaSpacing::exponential;
  CHECK_THROWS_WITH(dpm_solver_inverse(DiscreteSchedule(o)),
                    Contains("sigma_spacing") && Contains("exponential"));
  CHECK_THROWS_WITH(inverted(CosineSchedule{}, InversionRule::ddim),
                    Contains("InversionRule") && Contains("ddim"));
  CHECK_THROWS_WITH(ddim_inverse(DiscreteSchedule()).trajectory(1001), Contains("num_steps"));
  o = ddim_inverse_config();
  o.steps_offset = 200;
  CHECK_THROWS_WITH(ddim_inverse(DiscreteSchedule(o)).trajectory(5), Contains("steps_offset"));
  CHECK_THROWS_WITH(dpm_solver_inverse(DiscreteSchedule(dpm_inverse_config())).trajectory(1000),
                    Contains("repeats timestep"));
}

TEST_CASE("Stochastic solvers refuse a trajectory towards noise, naming the option",
          "[inversion][errors]") {
  const auto schedule = ddim_inverse(DiscreteSchedule{});
  auto model = testing::harness_model(Prediction::epsilon);
  Tensor x = testing::harness_tensor(false);
  SampleOptions options;
  options.steps = 5;
  DDIM stochastic(DDIMOptions{1.0, std::nullopt});
  CHECK_THROWS_WITH(sample(model, schedule, stochastic, x, NoCondition{}, options),
                    Catch::Contains("DDIMOptions::eta = 1") && Catch::Contains("towards noise"));
  EulerAncestral ancestral;
  CHECK_THROWS_WITH(sample(model, schedule, ancestral, x, NoCondition{}, options),
                    Catch::Contains("EulerAncestral = a trajectory towards noise"));
  DDPM ddpm;
  CHECK_THROWS_WITH(sample(model, schedule, ddpm, x, NoCondition{}, options),
                    Catch::Contains("DDPM = a trajectory towards noise"));
  DPMSolverMultistepOptions sde;
  sde.algorithm = DPMSolverAlgorithm::sde_dpmsolver_pp;
  DPMSolverMultistep dpm(sde);
  CHECK_THROWS_WITH(sample(model, schedule, dpm, x, NoCondition{}, options),
                    Catch::Contains("sde_dpmsolver_pp") && Catch::Contains("towards noise"));
}
