// SPDX-License-Identifier: Apache-2.0
// PNDM and IPNDM: the full loops of diffusers' test_scheduler_pndm.py and
// test_scheduler_ipndm.py with diffusers' harness and tolerances, extra diffusers 0.31.0 values
// (skip_prk_steps, trailing spacing, timesteps), convergence order on analytic Gaussian data,
// history keep/reset at a model switch, option validation and allocation.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <iomanip>
#include <vector>

#include "support/gaussian_mixture.hpp"
#include "tstitch/sample.hpp"
#include "tstitch/schedule/continuous.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/solver/ipndm.hpp"
#include "tstitch/solver/pndm.hpp"
#include "tstitch/stitch/stitcher.hpp"

#include "support/diffusers_harness.hpp"
#include "support/gaussian_problems.hpp"
#include "support/tensor_checks.hpp"

using namespace tstitch;
using namespace tstitch::testing;

static_assert(Solver<PNDM> && Solver<IPNDM>);
static_assert(NoiseSchedule<IPNDMSchedule>);

namespace {

/// PNDMSchedulerTest's config: N = 1000, linear betas 1e-4..0.02, leading spacing, and diffusers'
/// default set_alpha_to_one = False (the last step ends at alphas_cumprod[0]).
DiscreteScheduleOptions pndm_config() {
  DiscreteScheduleOptions o;
  o.final_point = FinalPoint::first_train_step;
  return o;
}

PNDMOptions skip_prk() {
  PNDMOptions o;
  o.skip_prk_steps = true;
  return o;
}

/// The timesteps the model is told, in order, during a 10-step harness run.
std::vector<double> told_timesteps(const DiscreteScheduleOptions& schedule, PNDMOptions options) {
  std::vector<double> seen;
  auto model =
      make_denoiser(Prediction::epsilon, harness_shape,
                    [&](ConstView x, const StepContext& ctx, const NoCondition&, View out) {
                      seen.push_back(ctx.point.timestep);
                      dummy_model(ctx.point.timestep, x, out);
                    });
  Tensor x = harness_tensor(false);
  SampleOptions so;
  so.steps = 10;
  PNDM solver(options);
  sample(model, DiscreteSchedule(schedule), solver, x, NoCondition{}, so);
  return seen;
}

void check_pndm_result(const Result& r, double sum, double mean) {
  INFO(std::setprecision(8) << "sum " << r.sum << ", mean " << r.mean);
  CHECK(std::abs(r.sum - sum) < 1e-2);
  CHECK(std::abs(r.mean - mean) < 1e-3);
}

} // namespace

TEST_CASE("PNDM full loops match diffusers' PNDMSchedulerTest", "[parity][pndm]") {
  DiscreteScheduleOptions schedule = pndm_config();
  SECTION("test_full_loop_no_noise") {
    check_pndm_result(full_loop(schedule, PNDM(), Prediction::epsilon), 198.1318, 0.2580);
  }
  SECTION("test_full_loop_with_v_prediction") {
    check_pndm_result(full_loop(schedule, PNDM(), Prediction::v), 67.3986, 0.0878);
  }
  SECTION("test_full_loop_with_set_alpha_to_one (beta_start 0.01)") {
    schedule.beta_start = 0.01;
    schedule.final_point = FinalPoint::clean;
    check_pndm_result(full_loop(schedule, PNDM(), Prediction::epsilon), 230.0399, 0.2995);
  }
  SECTION("test_full_loop_with_no_set_alpha_to_one (beta_start 0.01)") {
    schedule.beta_start = 0.01;
    check_pndm_result(full_loop(schedule, PNDM(), Prediction::epsilon), 186.9482, 0.2434);
  }
}

TEST_CASE("PNDM evaluates at diffusers' prk and plms timesteps", "[parity][pndm]") {
  SECTION("test_steps_offset: steps_offset = 1") {
    DiscreteScheduleOptions o = pndm_config();
    o.steps_offset = 1;
    CHECK(told_timesteps(o, PNDMOptions{}) == std::vector<double>{901, 851, 851, 801, 801, 751, 751,
                                                                  701, 701, 651, 651, 601, 601, 501,
                                                                  401, 301, 201, 101, 1});
  }
  // diffusers 0.31.0: scheduler.timesteps of the configurations below.
  SECTION("skip_prk_steps: the start step's second evaluation, then the duplicated timestep") {
    CHECK(told_timesteps(pndm_config(), skip_prk()) ==
          std::vector<double>{900, 800, 800, 700, 600, 500, 400, 300, 200, 100, 0});
  }
  SECTION("trailing spacing") {
    DiscreteScheduleOptions o = pndm_config();
    o.spacing = TimestepSpacing::trailing;
    CHECK(told_timesteps(o, PNDMOptions{}) == std::vector<double>{999, 949, 949, 899, 899, 849, 849,
                                                                  799, 799, 749, 749, 699, 699, 599,
                                                                  499, 399, 299, 199, 99});
  }
  SECTION("linspace spacing") {
    DiscreteScheduleOptions o = pndm_config();
    o.spacing = TimestepSpacing::linspace;
    CHECK(told_timesteps(o, PNDMOptions{}) == std::vector<double>{999, 938, 938, 888, 888, 827, 827,
                                                                  777, 777, 716, 716, 666, 666, 555,
                                                                  444, 333, 222, 111, 0});
  }
}

TEST_CASE("PNDM full loops match diffusers 0.31.0 beyond diffusers' tests", "[parity][pndm]") {
  // Values printed by diffusers 0.31.0 with the same harness loop (prk_timesteps, then
  // plms_timesteps); checked with diffusers' tolerances.
  DiscreteScheduleOptions schedule = pndm_config();
  SECTION("skip_prk_steps") {
    check_pndm_result(full_loop(schedule, PNDM(skip_prk()), Prediction::epsilon), 197.715515,
                      0.25744209);
  }
  SECTION("skip_prk_steps, v_prediction") {
    check_pndm_result(full_loop(schedule, PNDM(skip_prk()), Prediction::v), 67.355240, 0.08770213);
  }
  SECTION("skip_prk_steps, set_alpha_to_one, steps_offset = 1") {
    schedule.final_point = FinalPoint::clean;
    schedule.steps_offset = 1;
    check_pndm_result(full_loop(schedule, PNDM(skip_prk()), Prediction::epsilon), 199.554077,
                      0.25983605);
  }
  SECTION("trailing") {
    schedule.spacing = TimestepSpacing::trailing;
    check_pndm_result(full_loop(schedule, PNDM(), Prediction::epsilon), 198.085861, 0.25792429);
  }
  SECTION("trailing, skip_prk_steps") {
    schedule.spacing = TimestepSpacing::trailing;
    check_pndm_result(full_loop(schedule, PNDM(skip_prk()), Prediction::epsilon), 198.796387,
                      0.25884947);
  }
}

TEST_CASE("PNDM with linspace spacing follows diffusers off the trajectory", "[parity][pndm]") {
  // diffusers' PLMS (and the first PRK stage) move the latents to t - N // n, which with linspace
  // spacing is not the next evaluated timestep (666 -> 566, while the model is next told 555).
  // PNDMTimesteps::diffusers does the same; diffusers 0.31.0 values, diffusers' tolerances.
  DiscreteScheduleOptions schedule = pndm_config();
  schedule.spacing = TimestepSpacing::linspace;
  check_pndm_result(full_loop(schedule, PNDM(), Prediction::epsilon), 215.737274, 0.28090790);
  check_pndm_result(full_loop(schedule, PNDM(skip_prk()), Prediction::epsilon), 215.154160,
                    0.28014866);
  // PNDMTimesteps::trajectory stays on the trajectory: 8% lower here.
  PNDMOptions on_trajectory;
  on_trajectory.timesteps = PNDMTimesteps::trajectory;
  const Result r = full_loop(schedule, PNDM(on_trajectory), Prediction::epsilon);
  INFO(std::setprecision(8) << "trajectory rule: sum " << r.sum);
  CHECK(std::abs(r.sum - 215.737274) > 10);
}

namespace {
PNDMOptions on_trajectory(bool skip) {
  PNDMOptions o;
  o.skip_prk_steps = skip;
  o.timesteps = PNDMTimesteps::trajectory;
  return o;
}

} // namespace

// Orders at the middle of the run on the VP cosine schedule (uniform in t, see midpoint_error).
// PLMS is 4th order only on steps of equal length in the variable DDIM's transfer integrates the
// noise prediction over, s = sigma / alpha: its Adams-Bashforth weights are those of equal steps,
// and on a grid uniform in t but not in s the weighted mean of eps over a step is off by O(h^2),
// an O(h^3) local error, so the method is second order. The PRK half point (the midpoint in model
// time, not in s) likewise breaks Runge-Kutta's order-2 condition; its 3 steps add O(h^2) too.
// diffusers' DDPM schedules are uniform in timestep, not in s, so 2 is what users get.
TEST_CASE("PNDM and IPNDM convergence order on analytic Gaussian data", "[pndm][order]") {
  const std::vector<int> steps{16, 32, 64, 128};
  SECTION("PNDM, PRK warm-up") {
    const double order =
        measured_order([](int n) { return midpoint_error(PNDM(on_trajectory(false)), n); }, steps);
    INFO("measured order " << order);
    CHECK(order == Approx(2.0).margin(0.25));
  }
  SECTION("PNDM, skip_prk_steps") {
    const double order =
        measured_order([](int n) { return midpoint_error(PNDM(on_trajectory(true)), n); }, steps);
    INFO("measured order " << order);
    CHECK(order == Approx(2.0).margin(0.25));
  }
  SECTION("IPNDM") {
    const double order = measured_order([](int n) { return midpoint_error(IPNDM(), n); }, steps);
    INFO("measured order " << order);
    CHECK(order == Approx(2.0).margin(0.25));
  }
}

namespace {
/// A solver that forwards to `inner` but begins it only once, so a second sampling run continues
/// with the first run's history: diffusers' IPNDM full_loop resets only _step_index between its
/// two passes, never ets.
struct BeginOnce {
  IPNDM& inner;
  bool begun = false;
  template <class Backend>
  void begin(Backend& backend, const Trajectory& t, std::int64_t batch, Shape shape) {
    if (!begun)
      inner.begin(backend, t, batch, shape);
    begun = true;
  }
  template <class Backend>
  void update(Backend& backend, const SolverStep& step, const ModelOutput& out, View x) {
    inner.update(backend, step, out, x);
  }
};
} // namespace

TEST_CASE("IPNDM schedule matches diffusers' IPNDMScheduler tables", "[parity][ipndm]") {
  // diffusers 0.31.0, set_timesteps(10): timesteps, betas (our sigmas), alphas.
  const double timesteps[] = {1.0,
                              0.8588707447052002,
                              0.7195241451263428,
                              0.583897590637207,
                              0.45424884557724,
                              0.3333333432674408,
                              0.22457554936408997,
                              0.1321592777967453,
                              0.06088455021381378,
                              0.01558075100183487};
  const double sigmas[] = {1.0,
                           0.9755282998085022,
                           0.9045085310935974,
                           0.7938926219940186,
                           0.6545085906982422,
                           0.4999999701976776,
                           0.345491498708725,
                           0.20610742270946503,
                           0.09549150615930557,
                           0.024471744894981384,
                           0.0};
  const double alphas[] = {0.0,
                           0.21987394988536835,
                           0.4264555275440216,
                           0.608057975769043,
                           0.7560545802116394,
                           0.8660253882408142,
                           0.938421905040741,
                           0.9785293340682983,
                           0.9954302310943604,
                           0.9997005462646484,
                           1.0};
  const Trajectory t = IPNDMSchedule{}.trajectory(10);
  REQUIRE(t.steps() == 10);
  for (int i = 0; i <= 10; ++i) {
    INFO("point " << i);
    CHECK(t[i].sigma == Approx(sigmas[i]).epsilon(2e-7).margin(1e-9));
    CHECK(t[i].alpha == Approx(alphas[i]).epsilon(2e-7).margin(1e-9));
    if (i < 10)
      CHECK(t[i].timestep == Approx(timesteps[i]).epsilon(2e-7).margin(1e-9));
  }
  CHECK(t[10].timestep == 0);
  // trained_betas: the run's sigmas as given.
  const Trajectory custom = IPNDMSchedule({1.0, 0.6, 0.0}).trajectory(2);
  CHECK(custom[1].sigma == Approx(0.6));
  CHECK(custom[1].alpha == Approx(0.8));
}

TEST_CASE("IPNDM full loop matches diffusers' IPNDMSchedulerTest", "[parity][ipndm]") {
  // diffusers' dummy output is IPNDM's v (it forms sigma x + alpha m, the noise prediction of a
  // v model on this variance-preserving schedule), so the harness model predicts v.
  const IPNDMSchedule schedule;
  auto model = harness_model(Prediction::v);
  Tensor x = harness_tensor(false);
  SampleOptions so;
  so.steps = 10;
  IPNDM solver;
  BeginOnce once{solver};
  sample(model, schedule, once, x, NoCondition{}, so);
  SECTION("one pass (diffusers 0.31.0: sum 247.44087, mean 0.32218865)") {
    const Result r = abs_sum(x);
    INFO(std::setprecision(10) << "sum " << r.sum << ", mean " << r.mean);
    CHECK(std::abs(r.sum - 247.44087) < 1e-2);
    CHECK(std::abs(r.mean - 0.32218865) < 1e-3);
  }
  SECTION("test_full_loop_no_noise: a second pass continuing the history") {
    // The second pass starts at pure noise (alpha = 0) with a 4-step history from the first, so
    // x0' = (x - e) / 1e-8: diffusers' oracle is about 2.5e6, reproduced to its tolerance.
    sample(model, schedule, once, x, NoCondition{}, so);
    const Result r = abs_sum(x);
    INFO(std::setprecision(10) << "mean " << r.mean);
    CHECK(std::abs(r.mean - 2540529) < 10);
  }
}

TEST_CASE("PNDM and IPNDM history at a model switch: keep and reset", "[pndm][stitch]") {
  auto model = harness_model(Prediction::epsilon);
  TrajectoryStitcher stitcher(model, model, 0.5); // two identical models, switch before step 5
  SampleOptions options;
  options.steps = 10;
  for (bool skip : {false, true}) {
    PNDMOptions o;
    o.skip_prk_steps = skip;
    INFO("skip_prk_steps " << skip);
    const auto runs = switch_runs<PNDM>(model, stitcher, o, pndm_config(), options, 5,
                                        [](const PNDM& s) { return s.last_kind(); });
    CHECK(runs.kept_switches == 1);
    CHECK(bit_identical(runs.kept, runs.alone));
    CHECK(runs.kept_after_step.at(5) == -4);
    // reset: step 5 starts the warm-up again, as a run that starts at step 5.
    CHECK(runs.reset_switches == 1);
    CHECK(runs.reset_after_step.at(5) == (skip ? 2 : 4));
    CHECK(bit_identical(runs.reset, runs.restarted));
    CHECK_FALSE(bit_identical(runs.reset, runs.alone));
  }
  {
    const auto runs = switch_runs<IPNDM>(model, stitcher, IPNDMOptions{}, pndm_config(), options, 5,
                                         [](const IPNDM& s) { return s.last_order(); });
    CHECK(bit_identical(runs.kept, runs.alone));
    CHECK(runs.kept_after_step.at(5) == 4);
    CHECK(runs.reset_after_step.at(5) == 1);
    CHECK(bit_identical(runs.reset, runs.restarted));
    CHECK_FALSE(bit_identical(runs.reset, runs.alone));
  }
}

TEST_CASE("PNDM evaluates four times per warm-up step and never at the final point", "[pndm]") {
  auto count = [](PNDMOptions o, int steps) {
    auto model = harness_model(Prediction::epsilon);
    Tensor x = harness_tensor(false);
    SampleOptions so;
    so.steps = steps;
    PNDM solver(o);
    int evaluations = 0;
    for (const StepRecord& r :
         sample(model, DiscreteSchedule(pndm_config()), solver, x, NoCondition{}, so).records)
      evaluations += r.evaluations;
    return evaluations;
  };
  CHECK(count(PNDMOptions{}, 10) == 19);       // 3 x 4 + 7: diffusers' 19 timesteps
  CHECK(count(skip_prk(), 10) == 11);          // n + 1
  CHECK(count(skip_prk(), 1) == 1);            // diffusers' plms_timesteps for n = 1: {0}
  CHECK(count(PNDMOptions{}, 3) == 4 + 4 + 1); // the last step is never a warm-up step
}

TEST_CASE("PNDM and IPNDM allocate in begin() only", "[pndm]") {
  // A second run through the same sampler allocates nothing: the solvers' workspace comes from
  // the first begin(), and no step allocates.
  int allocations = 0;
  CountingBackend backend{{}, &allocations};
  Sampler<CountingBackend> sampler(backend);
  const DiscreteSchedule schedule(pndm_config());
  auto model = harness_model(Prediction::v);
  auto run = [&](auto& solver) {
    Tensor x = harness_tensor(false);
    SampleOptions so;
    so.steps = 10;
    sampler.run(model, schedule, solver, x.view(), NoCondition{}, nullptr, so);
  };
  PNDM prk;
  PNDM skip(skip_prk());
  IPNDM ipndm;
  run(prk);
  run(skip);
  run(ipndm);
  const int after_first = allocations;
  CHECK(after_first > 0);
  run(prk);
  run(skip);
  run(ipndm);
  CHECK(allocations == after_first);
}

TEST_CASE("PNDM options and trajectories are validated, naming option and value",
          "[pndm][errors]") {
  HostBackend backend;
  Trajectory by_hand{{TimePoint{900, 0.6, 0.8}, TimePoint{800, 0.7, 0.71}, TimePoint{0, 1, 0}},
                     1000};
  PNDM prk;
  CHECK_THROWS_WITH(prk.begin(backend, by_hand, 1, harness_shape),
                    Catch::Contains("Trajectory::point_at = empty"));
  by_hand.point_at = [](double t) { return TimePoint{t, 0.6, 0.8}; };
  Trajectory continuous = CosineSchedule{}.trajectory(8);
  continuous.point_at = [](double t) { return CosineSchedule{}.point(t); };
  CHECK_THROWS_WITH(prk.begin(backend, continuous, 1, harness_shape),
                    Catch::Contains("PNDMOptions::timesteps = diffusers") &&
                        Catch::Contains("PNDMTimesteps::trajectory"));
  PNDM on_traj(on_trajectory(false));
  CHECK_NOTHROW(on_traj.begin(backend, continuous, 1, harness_shape));
  Trajectory from_noise = by_hand;
  from_noise.points[0].alpha = 0;
  CHECK_THROWS_WITH(on_traj.begin(backend, from_noise, 1, harness_shape),
                    Catch::Contains("trajectory alpha = 0"));
  CHECK_THROWS_WITH(IPNDMSchedule({1.0, 1.5}), Catch::Contains("trained_betas[1] = 1.5"));
  CHECK_THROWS_WITH(IPNDMSchedule({1.0, 0.5, 0.0}).trajectory(3), Catch::Contains("num_steps = 3"));
}

TEST_CASE("IPNDM refuses an epsilon model at its pure-noise start, naming the prediction",
          "[ipndm][errors]") {
  auto model = harness_model(Prediction::epsilon);
  Tensor x = harness_tensor(false);
  SampleOptions options;
  options.steps = 5;
  IPNDM solver;
  CHECK_THROWS_WITH(sample(model, IPNDMSchedule{}, solver, x, NoCondition{}, options),
                    Catch::Contains("model prediction = epsilon") &&
                        Catch::Contains("v- or sample-prediction"));
}
