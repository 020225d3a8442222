// SPDX-License-Identifier: Apache-2.0
// UniPC: the diffusers oracles of docs/parity.md §4.8 (2-D and 1-D
// harness, §1) with diffusers' tolerances, the relational tests of §6, convergence order on
// analytic Gaussian data, history policy at a model switch, and option validation.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <iomanip>
#include <tuple>
#include <utility>
#include <vector>

#include "tstitch/sample.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/solver/dpm_solver.hpp"
#include "tstitch/solver/unipc.hpp"
#include "tstitch/stitch/stitcher.hpp"

#include "support/diffusers_harness.hpp"
#include "support/gaussian_problems.hpp"
#include "support/tensor_checks.hpp"

using namespace tstitch;
using namespace tstitch::testing;

static_assert(Solver<UniPC>);

namespace {

/// (4, 3, 8, 8) for the 2-D class, (4, 3, 8) = [3, 1, 8] per sample for the 1-D class.
const Shape shape_2d = harness_shape;
const Shape shape_1d{3, 1, 8};

/// The §4.8 test config: linspace spacing, final_sigmas_type = "sigma_min".
DiscreteScheduleOptions unipc_config() {
  DiscreteScheduleOptions o;
  o.spacing = TimestepSpacing::linspace_multistep;
  o.final_point = FinalPoint::first_train_step;
  return o;
}

UniPCOptions unipc(int order, UniPCVariant variant, bool corrector = true) {
  UniPCOptions o;
  o.solver_order = order;
  o.solver_type = variant;
  o.lower_order_final = false;
  if (!corrector)
    for (int i = 0; i < 1000; ++i)
      o.disable_corrector.push_back(i);
  return o;
}

} // namespace

TEST_CASE("UniPC full loops match diffusers' UniPCMultistepSchedulerTest", "[parity][unipc]") {
  DiscreteScheduleOptions config = unipc_config();
  SECTION("test_full_loop_no_noise") {
    const Result r = full_loop(config, UniPC(), Prediction::epsilon, shape_2d);
    INFO("mean " << std::setprecision(8) << r.mean);
    CHECK(std::abs(r.mean - 0.2464) < 1e-3);
  }
  SECTION("test_full_loop_with_karras") {
    config.sigma_spacing = SigmaSpacing::karras;
    const Result r = full_loop(config, UniPC(), Prediction::epsilon, shape_2d);
    INFO("mean " << std::setprecision(8) << r.mean);
    CHECK(std::abs(r.mean - 0.2925) < 1e-3);
  }
  SECTION("test_full_loop_with_v_prediction") {
    const Result r = full_loop(config, UniPC(), Prediction::v, shape_2d);
    INFO("mean " << std::setprecision(8) << r.mean);
    CHECK(std::abs(r.mean - 0.1014) < 1e-3);
  }
  SECTION("test_full_loop_with_karras_and_v_prediction") {
    config.sigma_spacing = SigmaSpacing::karras;
    const Result r = full_loop(config, UniPC(), Prediction::v, shape_2d);
    INFO("mean " << std::setprecision(8) << r.mean);
    CHECK(std::abs(r.mean - 0.1966) < 1e-3);
  }
  SECTION("test_full_loop_with_noise (t_start = 8: timesteps [200, 100])") {
    const Result r = full_loop(config, UniPC(), Prediction::epsilon, shape_2d, 8);
    INFO(std::setprecision(8) << "sum " << r.sum << ", mean " << r.mean);
    CHECK(std::abs(r.sum - 315.5757) < 1e-2);
    CHECK(std::abs(r.mean - 0.4109) < 1e-3);
  }
}

TEST_CASE("UniPC full loops match diffusers' UniPCMultistepScheduler1DTest", "[parity][unipc]") {
  DiscreteScheduleOptions config = unipc_config();
  SECTION("test_full_loop_no_noise") {
    const Result r = full_loop(config, UniPC(), Prediction::epsilon, shape_1d);
    INFO("mean " << std::setprecision(8) << r.mean);
    CHECK(std::abs(r.mean - 0.2441) < 1e-3);
  }
  SECTION("test_full_loop_with_karras") {
    config.sigma_spacing = SigmaSpacing::karras;
    const Result r = full_loop(config, UniPC(), Prediction::epsilon, shape_1d);
    INFO("mean " << std::setprecision(8) << r.mean);
    CHECK(std::abs(r.mean - 0.2898) < 1e-3);
  }
  SECTION("test_full_loop_with_v_prediction") {
    const Result r = full_loop(config, UniPC(), Prediction::v, shape_1d);
    INFO("mean " << std::setprecision(8) << r.mean);
    CHECK(std::abs(r.mean - 0.1014) < 1e-3);
  }
  SECTION("test_full_loop_with_karras_and_v_prediction") {
    config.sigma_spacing = SigmaSpacing::karras;
    const Result r = full_loop(config, UniPC(), Prediction::v, shape_1d);
    INFO("mean " << std::setprecision(8) << r.mean);
    CHECK(std::abs(r.mean - 0.1944) < 1e-3);
  }
  SECTION("test_full_loop_with_noise (t_start = 8)") {
    const Result r = full_loop(config, UniPC(), Prediction::epsilon, shape_1d, 8);
    INFO(std::setprecision(8) << "sum " << r.sum << ", mean " << r.mean);
    CHECK(std::abs(r.sum - 39.0870) < 1e-2);
    CHECK(std::abs(r.mean - 0.4072) < 1e-3);
  }
}

TEST_CASE("UniPC never produces NaN over orders, variants and predictions (§6)",
          "[parity][unipc]") {
  for (UniPCVariant variant : {UniPCVariant::bh1, UniPCVariant::bh2})
    for (int order : {1, 2, 3})
      for (Prediction prediction : {Prediction::epsilon, Prediction::sample}) {
        UniPCOptions o;
        o.solver_type = variant;
        o.solver_order = order;
        INFO("bh1 " << (variant == UniPCVariant::bh1) << ", order " << order << ", "
                    << to_string(prediction));
        CHECK(all_finite(
            full_loop_latents(DiscreteSchedule(unipc_config()), UniPC(o), prediction, shape_2d)));
      }
}

TEST_CASE("UniPC handles degenerate and infinite steps without NaN", "[unipc]") {
  SECTION("karras + sigma_min: the zero-length last step leaves x as it is") {
    DiscreteScheduleOptions config = unipc_config();
    config.sigma_spacing = SigmaSpacing::karras;
    const DiscreteSchedule schedule(config);
    REQUIRE(schedule.trajectory(10)[9].sigma == schedule.trajectory(10)[10].sigma);
    for (bool lower_order_final : {true, false})
      for (int order : {1, 2, 3}) {
        UniPCOptions o;
        o.solver_order = order;
        o.lower_order_final = lower_order_final;
        UniPC solver(o);
        const Tensor x = full_loop_latents(schedule, solver, Prediction::epsilon, shape_2d);
        CHECK(solver.last_order() == 0);
        CHECK(all_finite(x));
      }
  }
  SECTION("a step into sigma = 0 is first order, also where diffusers gives NaN") {
    // diffusers: bh1 computes alpha_t * B(h) * 0 with B(h) = -inf at that step, and without
    // lower_order_final its higher orders divide by the infinite step.
    DiscreteScheduleOptions config = unipc_config();
    config.final_point = FinalPoint::clean;
    for (UniPCVariant variant : {UniPCVariant::bh1, UniPCVariant::bh2})
      for (bool lower_order_final : {true, false})
        for (int order : {1, 2, 3}) {
          UniPCOptions o;
          o.solver_type = variant;
          o.solver_order = order;
          o.lower_order_final = lower_order_final;
          UniPC solver(o);
          const Tensor x =
              full_loop_latents(DiscreteSchedule(config), solver, Prediction::epsilon, shape_2d);
          CHECK(solver.last_order() == 1);
          CHECK(all_finite(x));
        }
  }
  SECTION("pure noise at the start (alpha = 0, lambda = -inf): a flow-matching trajectory") {
    for (int order : {1, 2, 3})
      CHECK(all_finite(sample_from_pure_noise(UniPC(unipc(order, UniPCVariant::bh2)))));
  }
}

TEST_CASE("UniPC picks diffusers' predictor and corrector orders", "[unipc]") {
  auto orders = [](const UniPCOptions& options, int n) {
    UniPC solver(options);
    auto model = harness_model(Prediction::epsilon, shape_2d);
    Tensor x = harness_tensor(shape_2d, false);
    std::vector<int> predictor, corrector;
    SampleOptions so;
    so.steps = n;
    so.on_step = [&](const StepRecord&) {
      predictor.push_back(solver.last_order());
      corrector.push_back(solver.last_corrector_order());
      return true;
    };
    sample(model, DiscreteSchedule(unipc_config()), solver, x, NoCondition{}, so);
    return std::pair{predictor, corrector};
  };
  UniPCOptions o;
  o.solver_order = 3;
  auto [predictor, corrector] = orders(o, 8);
  CHECK(predictor == std::vector<int>{1, 2, 3, 3, 3, 3, 2, 1});
  CHECK(corrector == std::vector<int>{0, 1, 2, 3, 3, 3, 3, 2});
  // disable_corrector lists the step whose result is not corrected (at the next step).
  o.disable_corrector = {2, 5};
  std::tie(predictor, corrector) = orders(o, 8);
  CHECK(corrector == std::vector<int>{0, 1, 2, 0, 3, 3, 0, 2});
  o.disable_corrector = {};
  o.lower_order_final = false;
  std::tie(predictor, corrector) = orders(o, 8);
  CHECK(predictor == std::vector<int>{1, 2, 3, 3, 3, 3, 3, 3});
}

TEST_CASE("UniP-p with B(h) = e^h - 1 is DPM-Solver++ pM", "[unipc]") {
  // bh2's predictor at order 2 is the 2M midpoint update, and at order 3 (where rho is solved
  // for, so B(h) cancels) the third-order Taylor update: a check of both implementations.
  for (int order : {2, 3}) {
    const DiscreteSchedule schedule(unipc_config());
    UniPCOptions u = unipc(order, UniPCVariant::bh2, false);
    DPMSolverMultistepOptions d;
    d.solver_order = order;
    d.lower_order_final = false;
    d.third_order = DPMSolverThirdOrder::taylor;
    const Tensor a = full_loop_latents(schedule, UniPC(u), Prediction::epsilon, shape_2d);
    const Tensor b =
        full_loop_latents(schedule, DPMSolverMultistep(d), Prediction::epsilon, shape_2d);
    double largest = 0;
    for (std::int64_t i = 0; i < a.numel(); ++i)
      largest = std::max(largest, std::abs(static_cast<double>(a[i]) - b[i]));
    INFO("order " << order << ": largest difference " << largest);
    CHECK(largest < 1e-5);
  }
}

// Orders are measured at the middle of the run (see midpoint_error), on the VP cosine schedule
// above: uniform in t, sigma = 0 at the end, with errors above the float32 rounding of the
// latents (about 3e-7 here). UniC-p raises UniP-p to order p + 1, but the first steps bound
// what a run can show: the corrector of step 1 is UniC-1, locally O(h^3), so with its own start
// UniPC is third order at most; order 4 of UniPC-3 needs exact starting values.
TEST_CASE("UniPC converges at its order on analytic Gaussian data", "[unipc][order]") {
  auto run = [](UniPCOptions o) { return [o](int n) { return midpoint_error(UniPC(o), n); }; };
  auto check = [](double order, double expected) {
    INFO("measured order " << order);
    CHECK(order == Approx(expected).margin(0.25));
  };
  SECTION("UniP-2 without corrector: order 2 (bh2: DPM-Solver++ 2M)") {
    check(measured_order(run(unipc(2, UniPCVariant::bh2, false)), {16, 32, 64, 128}), 2.0);
    check(measured_order(run(unipc(2, UniPCVariant::bh1, false)), {16, 32, 64, 128}), 2.0);
  }
  SECTION("UniPC-1: order 2") {
    check(measured_order(run(unipc(1, UniPCVariant::bh1)), {16, 32, 64, 128}), 2.0);
    check(measured_order(run(unipc(1, UniPCVariant::bh2)), {16, 32, 64, 128}), 2.0);
  }
  SECTION("UniPC-2: order 3") {
    check(measured_order(run(unipc(2, UniPCVariant::bh2)), {8, 16, 32, 64}), 3.0);
    // bh1 reaches its asymptotic slope later (2.3, 2.6, 2.8, 2.8 over 8..64).
    check(measured_order(run(unipc(2, UniPCVariant::bh1)), {24, 32, 48, 64}), 3.0);
  }
  SECTION("UniPC-3: order 3 with its own start") {
    check(measured_order(run(unipc(3, UniPCVariant::bh1)), {8, 16, 32, 64}), 3.0);
    // bh2's start is more accurate: slopes 3.0, 3.4, 3.9, 4.3 over 8..32 before rounding.
    const double bh2 = measured_order(run(unipc(3, UniPCVariant::bh2)), {8, 12, 16, 24, 32});
    INFO("measured order " << bh2);
    CHECK(bh2 > 2.75);
    CHECK(bh2 < 4.25);
  }
}

TEST_CASE("UniPC from exact starting values: UniP-3 order 3, UniPC-3 approaching 4",
          "[unipc][order]") {
  SECTION("UniP-3 without corrector: order 3") {
    const double order = measured_order(
        [](int n) { return exact_start_error(UniPC(unipc(3, UniPCVariant::bh2, false)), n, 2); },
        {8, 16, 32, 64});
    INFO("measured order " << order);
    CHECK(order == Approx(3.0).margin(0.25));
  }
  SECTION("UniPC-3: order 4 before float32 rounding takes over") {
    // Exact starting values for the corrector too: the warm-up correctors are skipped, so the
    // first corrector is UniC-3 from exact latents and outputs.
    UniPCOptions o = unipc(3, UniPCVariant::bh2);
    o.disable_corrector = {0, 1};
    const double order =
        measured_order([o](int n) { return exact_start_error(UniPC(o), n, 4); }, {12, 16, 24, 32});
    INFO("measured order " << order);
    CHECK(order > 3.5);
  }
}

TEST_CASE("UniPC history at a model switch: keep and reset", "[unipc][stitch]") {
  auto model = harness_model(Prediction::epsilon, shape_2d);
  TrajectoryStitcher stitcher(model, model, 0.5); // two identical models, switch before step 5
  struct Orders {
    int predictor, corrector;
  };
  SampleOptions options; // the harness' n = 10
  options.steps = 10;
  for (int order : {1, 2, 3}) {
    UniPCOptions o;
    o.solver_order = order;
    INFO("order " << order);
    const auto runs =
        switch_runs<UniPC>(model, stitcher, o, unipc_config(), options, 5, [](const UniPC& s) {
          return Orders{s.last_order(), s.last_corrector_order()};
        });

    // keep: predictor history and corrector carry across the switch; nothing changes, bit for
    // bit, when the models are the same.
    CHECK(runs.kept_switches == 1);
    CHECK(runs.kept_after_step.at(5).corrector == order);
    CHECK(bit_identical(runs.kept, runs.alone));

    // reset: step 5 runs no corrector and a first-order predictor, exactly as a run that starts
    // at step 5 from the same (uncorrected) latents.
    CHECK(runs.reset_switches == 1);
    CHECK(runs.reset_after_step.at(5).predictor == 1);
    CHECK(runs.reset_after_step.at(5).corrector == 0);
    CHECK(bit_identical(runs.reset, runs.restarted));
    CHECK_FALSE(bit_identical(runs.reset, runs.alone));
  }
}

TEST_CASE("UniPC options are validated, naming the option and value", "[unipc][errors]") {
  auto make = [](auto edit) {
    UniPCOptions o;
    edit(o);
    return UniPC(o);
  };
  using Catch::Contains;
  CHECK_THROWS_AS(make([](auto& o) { o.solver_order = 4; }), tstitch::invalid_argument);
  CHECK_THROWS_WITH(make([](auto& o) { o.solver_order = 4; }),
                    Contains("UniPCOptions::solver_order = 4"));
  CHECK_THROWS_WITH(make([](auto& o) { o.solver_order = -1; }), Contains("solver_order = -1"));
  CHECK_THROWS_WITH(make([](auto& o) {
                      o.disable_corrector = {3, -2};
                    }),
                    Contains("UniPCOptions::disable_corrector[1] = -2"));
  CHECK_THROWS_WITH(make([](auto& o) {
                      o.thresholding = DynamicThresholding{1.5, 1.0};
                    }),
                    Contains("UniPCOptions::thresholding->ratio = 1.5"));
  CHECK_THROWS_WITH(make([](auto& o) {
                      o.thresholding = DynamicThresholding{0.9, -1.0};
                    }),
                    Contains("UniPCOptions::thresholding->sample_max_value = -1"));
  CHECK_NOTHROW(make([](auto& o) { o.disable_corrector = {0, 4}; }));
}

TEST_CASE("UniPC allocates in begin() only", "[unipc]") {
  UniPCOptions o;
  o.solver_order = 3;
  o.disable_corrector = {4};
  o.thresholding = DynamicThresholding{0.9, 2.0};
  UniPC solver(o);
  int allocations = 0;
  CountingBackend backend{{}, &allocations};
  const Trajectory trajectory = DiscreteSchedule().trajectory(12);
  Tensor x = harness_tensor(shape_2d, false), x0 = harness_tensor(shape_2d, true);
  solver.begin(backend, trajectory, 4, shape_2d);
  CHECK(allocations == 5); // four history slots and the corrector's saved latents
  for (int run = 0; run < 2; ++run) {
    solver.begin(backend, trajectory, 4, shape_2d);
    for (int i = 0; i < 12; ++i)
      solver.update(backend, SolverStep{i, 0, &trajectory, NoiseKey{}},
                    ModelOutput{x0.view(), x0.view(), x0.view(), Prediction::sample}, x.view());
  }
  CHECK(allocations == 5);
}
