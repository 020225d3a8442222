// SPDX-License-Identifier: Apache-2.0
// DEIS (diffusers' DEISMultistepScheduler, log-rho): the full-loop oracles of
// test_scheduler_deis.py with diffusers' harness and tolerances, extra diffusers 0.31.0 values
// over orders, predictions, karras sigmas and thresholding, the order rule, convergence order on
// analytic Gaussian data, history policy at a model switch, option validation and allocation.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <iomanip>
#include <vector>

#include "support/gaussian_mixture.hpp"
#include "tstitch/sample.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/solver/deis.hpp"
#include "tstitch/solver/dpm_solver.hpp"
#include "tstitch/solver/unipc.hpp"
#include "tstitch/stitch/stitcher.hpp"

#include "support/diffusers_harness.hpp"
#include "support/gaussian_problems.hpp"
#include "support/solver_checks.hpp"
#include "support/tensor_checks.hpp"

using namespace tstitch;
using namespace tstitch::testing;

static_assert(Solver<DEIS>);

namespace {

/// DEISMultistepScheduler's schedule: "linspace" = linspace_multistep, and the last step ends at
/// alphas_cumprod[0] (sigma_last), i.e. FinalPoint::first_train_step.
DiscreteScheduleOptions deis_config() {
  DiscreteScheduleOptions o;
  o.spacing = TimestepSpacing::linspace_multistep;
  o.final_point = FinalPoint::first_train_step;
  return o;
}

DEISOptions deis(int order, bool lower_order_final = true) {
  DEISOptions o;
  o.solver_order = order;
  o.lower_order_final = lower_order_final;
  return o;
}

/// DEIS::weights(order, the rho nodes of step i, rho_{i+1}) as recursion_error's weights.
const auto deis_weights = [](const Trajectory& t, int i, int order) {
  std::array<double, 3> nodes{};
  for (int j = 0; j < order; ++j)
    nodes[static_cast<std::size_t>(j)] = t[i - j].ve_sigma();
  return DEIS::weights(order, nodes, t[i + 1].ve_sigma());
};

} // namespace

// ---- diffusers parity ---------------------------------------------------------------------------

TEST_CASE("DEIS full loops match diffusers' DEISMultistepSchedulerTest", "[parity][deis]") {
  const DiscreteScheduleOptions schedule = deis_config();
  SECTION("test_full_loop_no_noise") {
    const Result r = full_loop(schedule, DEIS(), Prediction::epsilon);
    INFO("mean " << std::setprecision(8) << r.mean);
    CHECK(std::abs(r.mean - 0.23916) < 1e-3);
  }
  SECTION("test_full_loop_with_v_prediction") {
    const Result r = full_loop(schedule, DEIS(), Prediction::v);
    INFO("mean " << std::setprecision(8) << r.mean);
    CHECK(std::abs(r.mean - 0.091) < 1e-3);
  }
  SECTION("test_full_loop_with_noise (t_start = 8: timesteps [200, 100])") {
    const Result r = full_loop(schedule, DEIS(), Prediction::epsilon, 8);
    INFO(std::setprecision(8) << "sum " << r.sum << ", mean " << r.mean);
    CHECK(std::abs(r.sum - 315.3016) < 1e-2);
    CHECK(std::abs(r.mean - 0.41054) < 1e-3);
  }
}

TEST_CASE("DEIS test_switch: the same solver after DPM-Solver++ and UniPC runs", "[parity][deis]") {
  // diffusers round-trips the config through DPMSolverSinglestep, DPMSolverMultistep and UniPC
  // (algorithm_type "deis" <-> "dpmsolver++", solver_type "logrho" <-> "midpoint"/"bh2") back to
  // DEIS and expects the same loop. tstitch has no config objects; what it can reproduce is that
  // the schedule and a reused DEIS solver carry no state across runs of other solvers.
  const DiscreteSchedule schedule(deis_config());
  DEIS solver;
  const Tensor first = full_loop_latents(schedule, solver, Prediction::epsilon);
  CHECK(std::abs(abs_sum(first).mean - 0.23916) < 1e-3);
  DPMSolverMultistepOptions dpm;
  CHECK(all_finite(full_loop_latents(schedule, DPMSolverMultistep(dpm), Prediction::epsilon)));
  CHECK(all_finite(full_loop_latents(schedule, UniPC(), Prediction::epsilon)));
  const Tensor again = full_loop_latents(schedule, solver, Prediction::epsilon);
  CHECK(std::abs(abs_sum(again).mean - 0.23916) < 1e-3);
  CHECK(bit_identical(first, again));
}

TEST_CASE("DEIS matches diffusers 0.31.0 over orders, predictions, karras and thresholding",
          "[parity][deis]") {
  // Values from diffusers 0.31.0 (DEISMultistepScheduler, the harness loop of
  // test_scheduler_deis.py's full_loop), checked with diffusers' tolerance 1e-3 on the mean.
  struct Case {
    int order;
    Prediction prediction;
    double mean;
  };
  for (const Case& c : {Case{1, Prediction::epsilon, 0.2243022471666336},
                        Case{1, Prediction::sample, 0.8823015093803406},
                        Case{1, Prediction::v, 0.06772094964981079},
                        Case{2, Prediction::sample, 0.9314563870429993},
                        Case{3, Prediction::epsilon, 0.24164068698883057},
                        Case{3, Prediction::sample, 0.9431808590888977},
                        Case{3, Prediction::v, 0.09414676576852798}}) {
    const Result r = full_loop(deis_config(), DEIS(deis(c.order)), c.prediction);
    INFO("order " << c.order << ", " << to_string(c.prediction) << ": mean " << std::setprecision(8)
                  << r.mean);
    CHECK(std::abs(r.mean - c.mean) < 1e-3);
  }
  SECTION("use_karras_sigmas (the last step has zero length)") {
    DiscreteScheduleOptions karras = deis_config();
    karras.sigma_spacing = SigmaSpacing::karras;
    const Result r2 = full_loop(karras, DEIS(), Prediction::epsilon);
    INFO("order 2: mean " << std::setprecision(8) << r2.mean);
    CHECK(std::abs(r2.mean - 0.24578626453876495) < 1e-3);
    const Result r3 = full_loop(karras, DEIS(deis(3)), Prediction::v);
    INFO("order 3, v: mean " << std::setprecision(8) << r3.mean);
    CHECK(std::abs(r3.mean - 0.12219616770744324) < 1e-3);
  }
  SECTION("thresholding (ratio 0.87, sample_max_value 0.5)") {
    DEISOptions o;
    o.thresholding = DynamicThresholding{0.87, 0.5};
    const Result r = full_loop(deis_config(), DEIS(o), Prediction::epsilon);
    INFO("mean " << std::setprecision(8) << r.mean);
    CHECK(std::abs(r.mean - 0.7043444514274597) < 1e-3);
  }
  SECTION("lower_order_final = False, order 3") {
    const Result r = full_loop(deis_config(), DEIS(deis(3, false)), Prediction::epsilon);
    INFO("mean " << std::setprecision(8) << r.mean);
    CHECK(std::abs(r.mean - 0.26704415678977966) < 1e-3);
  }
}

TEST_CASE("DEIS never produces NaN over orders and predictions (test_solver_order_and_type)",
          "[parity][deis]") {
  for (FinalPoint final_point : {FinalPoint::first_train_step, FinalPoint::clean})
    for (int order : {1, 2, 3})
      for (Prediction prediction : {Prediction::epsilon, Prediction::sample, Prediction::v})
        for (bool lower_order_final : {true, false}) {
          DiscreteScheduleOptions o = deis_config();
          o.final_point = final_point;
          INFO("order " << order << ", " << to_string(prediction) << ", lower_order_final "
                        << lower_order_final << ", clean end "
                        << (final_point == FinalPoint::clean));
          CHECK(all_finite(full_loop_latents(DiscreteSchedule(o),
                                             DEIS(deis(order, lower_order_final)), prediction)));
        }
}

TEST_CASE("DEIS on custom timesteps equals the default schedule", "[parity][deis]") {
  for (Prediction prediction : {Prediction::epsilon, Prediction::sample, Prediction::v}) {
    const DiscreteSchedule schedule(deis_config());
    const Tensor a = full_loop_latents(schedule, DEIS(deis(3)), prediction);
    const Tensor b = full_loop_latents(CustomTimesteps{&schedule, schedule.timesteps(10)},
                                       DEIS(deis(3)), prediction);
    INFO("prediction " << to_string(prediction));
    CHECK(abs_difference(a, b) < 1e-5);
  }
}

// ---- the method ---------------------------------------------------------------------------------

TEST_CASE("DEIS picks diffusers' order at each step", "[deis]") {
  auto orders = [](DEISOptions options, DiscreteScheduleOptions schedule_options, int n) {
    DEIS solver(options);
    auto model = harness_model(Prediction::epsilon);
    Tensor x = harness_tensor(false);
    std::vector<int> seen;
    SampleOptions so;
    so.steps = n;
    so.on_step = [&](const StepRecord&) {
      seen.push_back(solver.last_order());
      return true;
    };
    sample(model, DiscreteSchedule(schedule_options), solver, x, NoCondition{}, so);
    return seen;
  };
  CHECK(orders(deis(3), deis_config(), 8) == std::vector<int>{1, 2, 3, 3, 3, 3, 2, 1});
  CHECK(orders(deis(3, false), deis_config(), 8) == std::vector<int>{1, 2, 3, 3, 3, 3, 3, 3});
  CHECK(orders(deis(2), deis_config(), 16).back() == 2); // n >= 15: no lowering
  DiscreteScheduleOptions clean = deis_config();
  clean.final_point = FinalPoint::clean;
  CHECK(orders(deis(3), clean, 16).back() == 3); // into rho = 0 at third order: its limit
}

TEST_CASE("DEIS weights: first order is DDIM, weights reproduce constant eps exactly", "[deis]") {
  const Trajectory t = DiscreteSchedule(deis_config()).trajectory(10);
  for (int i = 2; i < 10; ++i) {
    const std::array<double, 3> nodes{t[i].ve_sigma(), t[i - 1].ve_sigma(), t[i - 2].ve_sigma()};
    const double r = t[i + 1].ve_sigma(), step = r - nodes[0];
    CHECK(DEIS::weights(1, nodes, r)[0] == Approx(step).epsilon(1e-14));
    for (int order = 2; order <= 3; ++order) {
      const auto c = DEIS::weights(order, nodes, r);
      // sum_j c_j (log rho_j)^k = integral of (log rho)^k: k = 0 and, for order 3, k = 1
      const double sum = c[0] + c[1] + c[2];
      INFO("step " << i << ", order " << order);
      CHECK(sum == Approx(step).epsilon(1e-12));
      double first = 0;
      for (int j = 0; j < order; ++j)
        first += c[static_cast<std::size_t>(j)] * std::log(nodes[static_cast<std::size_t>(j)]);
      const double exact = r * (std::log(r) - 1) - nodes[0] * (std::log(nodes[0]) - 1);
      CHECK(first == Approx(exact).epsilon(1e-10));
    }
    // into rho = 0: the limit, finite
    for (int order = 1; order <= 3; ++order)
      for (double c : DEIS::weights(order, nodes, 0.0))
        CHECK(std::isfinite(c));
  }
}

// Orders are measured at the middle of the run on the VP cosine schedule (uniform in t).
//  - The recursion in double (recursion_error), n = 256..2048: 1.00, 1.99, 2.99.
//  - The float32 solver with its own start, n = 16..128: 1.00, 1.92. Order 3 from exact
//    starting values through float32 reaches 2.73 at n = 16..64 (error ratios 4.7, 6.2, 7.1, still
//    rising towards 8) and the float32 floor beyond, so order 3 is asserted in double only; with
//    its own first-order start the global order of solver_order 3 is capped at 2.
TEST_CASE("DEIS converges at its order on analytic Gaussian data", "[deis][order]") {
  SECTION("the recursion in double: order k for k = 1..3") {
    for (int k = 1; k <= 3; ++k) {
      const double order = measured_order(
          [k](int n) { return recursion_error(k, n, deis_weights); }, {256, 512, 1024, 2048});
      INFO("order " << k << ": measured " << order);
      CHECK(order == Approx(k).margin(0.25));
    }
  }
  SECTION("the float32 solver: orders 1 and 2") {
    for (int k = 1; k <= 2; ++k) {
      const double order = measured_order([k](int n) { return midpoint_error(DEIS(deis(k)), n); },
                                          {16, 32, 64, 128});
      INFO("order " << k << ": measured " << order);
      CHECK(order == Approx(k).margin(0.25));
    }
  }
}

// ---- model switches -----------------------------------------------------------------------------

TEST_CASE("DEIS history at a model switch: keep and reset", "[deis][stitch]") {
  auto model = harness_model(Prediction::epsilon);
  TrajectoryStitcher stitcher(model, model, 0.5); // two identical models, switch before step 5
  SampleOptions options;
  options.steps = 10;
  for (int order : {2, 3}) {
    INFO("order " << order);
    const auto runs = switch_runs<DEIS>(model, stitcher, deis(order), deis_config(), options, 5,
                                        [](const DEIS& s) { return s.last_order(); });
    CHECK(runs.kept_switches == 1);
    CHECK(bit_identical(runs.kept, runs.alone));
    CHECK(runs.kept_after_step.at(5) == order);
    CHECK(runs.reset_switches == 1);
    CHECK(runs.reset_after_step.at(5) == 1);
    CHECK(runs.reset_after_step.at(6) == 2);
    CHECK(bit_identical(runs.reset, runs.restarted));
    CHECK_FALSE(bit_identical(runs.reset, runs.alone));
  }
}

TEST_CASE("DEIS from pure noise (alpha = 0) takes Euler's limit, then finite orders", "[deis]") {
  for (int order = 1; order <= 3; ++order) {
    INFO("order " << order);
    CHECK(all_finite(sample_from_pure_noise(DEIS(deis(order)))));
    DEISOptions o = deis(order);
    o.thresholding = DynamicThresholding{0.9, 2.0};
    CHECK(all_finite(sample_from_pure_noise(DEIS(o))));
  }
}

// ---- options, allocation ------------------------------------------------------------------------

TEST_CASE("DEIS options are validated, naming the option and value", "[deis][errors]") {
  using Catch::Contains;
  const auto make = [](auto edit) { return made_with<DEIS, DEISOptions>(edit); };
  CHECK_THROWS_AS(make([](auto& o) { o.solver_order = 0; }), tstitch::invalid_argument);
  CHECK_THROWS_WITH(make([](auto& o) { o.solver_order = 4; }),
                    Contains("DEISOptions::solver_order = 4"));
  CHECK_THROWS_WITH(make([](auto& o) {
                      o.thresholding = DynamicThresholding{1.0, 1.0};
                    }),
                    Contains("DEISOptions::thresholding->ratio = 1"));
  CHECK_THROWS_WITH(make([](auto& o) {
                      o.thresholding = DynamicThresholding{0.5, 0.0};
                    }),
                    Contains("thresholding->sample_max_value = 0"));
  CHECK_NOTHROW(make([](auto& o) { o.solver_order = 3; }));
  CHECK(DEIS().options() == DEISOptions{});
}

TEST_CASE("DEIS allocates in begin() only", "[deis]") {
  DEISOptions o = deis(3);
  o.thresholding = DynamicThresholding{0.9, 2.0};
  DEIS solver(o);
  const Trajectory trajectory = DiscreteSchedule().trajectory(12);
  Tensor x = harness_tensor(false), x0 = harness_tensor(true);
  const Allocations allocations = count_allocations(
      solver, trajectory, x, ModelOutput{x0.view(), x0.view(), x0.view(), Prediction::sample});
  CHECK(allocations.in_begin == 3); // three history slots
  CHECK(allocations.after_begin == 0);
  CHECK(all_finite(x));
}
