// SPDX-License-Identifier: Apache-2.0
// The noise-prediction variants of DPMSolverMultistep (algorithm_type "dpmsolver" and
// "sde-dpmsolver") and of UniPC (predict_x0 = False), and UniC on another solver
// (UniPCWithPredictor, diffusers' solver_p): diffusers' own assertions for them, full loops
// against diffusers 0.31.0 on diffusers' harness (docs/parity.md §1) with diffusers' tolerances,
// convergence orders on analytic Gaussian data, the SDE's distribution, history keep/reset at a
// model switch, option validation and allocation.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <iomanip>
#include <string>
#include <vector>

#include "tstitch/sample.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/solver/dpm_solver.hpp"
#include "tstitch/solver/heun.hpp"
#include "tstitch/solver/unipc.hpp"
#include "tstitch/stitch/stitcher.hpp"

#include "support/diffusers_harness.hpp"
#include "support/gaussian_problems.hpp"
#include "support/tensor_checks.hpp"

using namespace tstitch;
using namespace tstitch::testing;

static_assert(Solver<UniPCWithPredictor<DPMSolverMultistep>>);

namespace {

/// The test config of diffusers' DPM-Solver and UniPC tests: linspace spacing,
/// final_sigmas_type = "sigma_min".
DiscreteScheduleOptions multistep_config() {
  DiscreteScheduleOptions o;
  o.spacing = TimestepSpacing::linspace_multistep;
  o.final_point = FinalPoint::first_train_step;
  return o;
}

/// DPMSolverMultistepSchedulerTest's solver config (lower_order_final = False) for `algorithm`.
DPMSolverMultistepOptions dpm(DPMSolverAlgorithm algorithm, int order = 2,
                              DPMSolverType type = DPMSolverType::midpoint,
                              DPMSolverThirdOrder third = DPMSolverThirdOrder::diffusers) {
  DPMSolverMultistepOptions o;
  o.algorithm = algorithm;
  o.solver_order = order;
  o.solver_type = type;
  o.third_order = third;
  o.lower_order_final = false;
  return o;
}

UniPCOptions unipc_noise(int order = 2, UniPCVariant variant = UniPCVariant::bh2,
                         bool corrector = true) {
  UniPCOptions o;
  o.predict_x0 = false;
  o.solver_order = order;
  o.solver_type = variant;
  if (!corrector)
    for (int i = 0; i < 1000; ++i)
      o.disable_corrector.push_back(i);
  return o;
}

/// The host backend with a deterministic "normal" noise that diffusers can be given too (as
/// step(variance_noise=...)): element i of the batch at step s holds 1.5 sin(0.1 i + 0.7 s).
struct PatternNoiseBackend : HostBackend {
  void fill_normal(View out, NoiseKey key) const {
    float* d = out.data();
    for (std::int64_t i = 0; i < out.numel(); ++i)
      d[i] = static_cast<float>(
          1.5 * std::sin(0.1 * static_cast<double>(i) + 0.7 * static_cast<double>(key.step)));
  }
};

/// diffusers' full loop (n = 10, 2-D harness) with the pattern noise.
Result pattern_loop(const DiscreteScheduleOptions& schedule_options, DPMSolverMultistep solver,
                    Prediction prediction) {
  auto model = harness_model(prediction);
  Tensor x = harness_tensor(false);
  Sampler<PatternNoiseBackend> sampler;
  SampleOptions so;
  so.steps = 10;
  sampler.run(model, DiscreteSchedule(schedule_options), solver, x.view(), NoCondition{}, nullptr,
              so);
  return abs_sum(x);
}

void check_mean(const Result& r, double expected) {
  INFO(std::setprecision(8) << "sum " << r.sum << ", mean " << r.mean << ", expected mean "
                            << expected);
  CHECK(std::abs(r.mean - expected) < 1e-3);
}

} // namespace

// ---- DPMSolverMultistep: "dpmsolver" and "sde-dpmsolver" ----------------------------------------

TEST_CASE("DPM-Solver noise-prediction variants never produce NaN (diffusers' "
          "test_solver_order_and_type)",
          "[parity][dpm_solver_variants]") {
  // diffusers runs "dpmsolver" at orders 1-3 and "sde-dpmsolver" at orders 1-2 (it has no
  // third-order SDE update), midpoint and heun, epsilon and sample, and asserts no NaN.
  for (DPMSolverAlgorithm algorithm :
       {DPMSolverAlgorithm::dpmsolver, DPMSolverAlgorithm::sde_dpmsolver})
    for (DPMSolverType type : {DPMSolverType::midpoint, DPMSolverType::heun})
      for (int order : {1, 2, 3})
        for (Prediction prediction : {Prediction::epsilon, Prediction::sample}) {
          const bool sde = algorithm == DPMSolverAlgorithm::sde_dpmsolver;
          if (sde && order == 3)
            continue;
          INFO("sde " << sde << ", heun " << (type == DPMSolverType::heun) << ", order " << order
                      << ", " << to_string(prediction));
          CHECK(all_finite(full_loop_latents(DiscreteSchedule(multistep_config()),
                                             DPMSolverMultistep(dpm(algorithm, order, type)),
                                             prediction)));
        }
}

TEST_CASE("DPM-Solver (algorithm_type dpmsolver) full loops match diffusers 0.31.0",
          "[parity][dpm_solver_variants]") {
  // Values from diffusers 0.31.0 (DPMSolverMultistepScheduler, the harness and config of
  // DPMSolverMultistepSchedulerTest with algorithm_type="dpmsolver"; diffusers' own tests have no
  // full-loop value for it), checked with diffusers' tolerance on the mean.
  struct Case {
    int order;
    DPMSolverType type;
    Prediction prediction;
    double mean;
  };
  const Case cases[] = {
      {1, DPMSolverType::midpoint, Prediction::epsilon, 0.224302},
      {2, DPMSolverType::midpoint, Prediction::epsilon, 0.291128},
      {2, DPMSolverType::heun, Prediction::epsilon, 0.265109},
      {3, DPMSolverType::midpoint, Prediction::epsilon, 0.266912},
      {3, DPMSolverType::heun, Prediction::epsilon, 0.266939},
      {1, DPMSolverType::midpoint, Prediction::sample, 0.882302},
      {2, DPMSolverType::midpoint, Prediction::sample, 1.020128},
      {2, DPMSolverType::heun, Prediction::sample, 0.973665},
      {3, DPMSolverType::midpoint, Prediction::sample, 0.978390},
      {1, DPMSolverType::midpoint, Prediction::v, 0.067721},
      {2, DPMSolverType::midpoint, Prediction::v, 0.155110},
      {2, DPMSolverType::heun, Prediction::v, 0.122897},
      {3, DPMSolverType::midpoint, Prediction::v, 0.112247},
  };
  for (const Case& c : cases) {
    INFO("order " << c.order << ", heun " << (c.type == DPMSolverType::heun) << ", "
                  << to_string(c.prediction));
    check_mean(full_loop(multistep_config(),
                         DPMSolverMultistep(dpm(DPMSolverAlgorithm::dpmsolver, c.order, c.type)),
                         c.prediction),
               c.mean);
  }
  DiscreteScheduleOptions schedule = multistep_config();
  DPMSolverMultistepOptions o = dpm(DPMSolverAlgorithm::dpmsolver);
  SECTION("karras sigmas") {
    schedule.sigma_spacing = SigmaSpacing::karras;
    check_mean(full_loop(schedule, DPMSolverMultistep(o), Prediction::epsilon), 0.255261);
    check_mean(full_loop(schedule, DPMSolverMultistep(o), Prediction::v), 0.119987);
  }
  SECTION("thresholding (ratio 0.87, sample_max_value 0.5): clamps x0, converts back to eps") {
    o.thresholding = DynamicThresholding{0.87, 0.5};
    check_mean(full_loop(schedule, DPMSolverMultistep(o), Prediction::epsilon), 0.998793);
  }
  SECTION("lower_order_final = True (diffusers' default)") {
    o.lower_order_final = true;
    check_mean(full_loop(schedule, DPMSolverMultistep(o), Prediction::epsilon), 0.240783);
  }
  SECTION("with noise (t_start = 5)") {
    const Result r = full_loop(schedule, DPMSolverMultistep(o), Prediction::epsilon, 5);
    INFO(std::setprecision(8) << "sum " << r.sum << ", mean " << r.mean);
    CHECK(std::abs(r.sum - 281.0768) < 1e-2);
    CHECK(std::abs(r.mean - 0.365985) < 1e-3);
  }
}

TEST_CASE("DPM-Solver SDE (algorithm_type sde-dpmsolver) full loops match diffusers 0.31.0 "
          "given the same noise",
          "[parity][dpm_solver_variants]") {
  // diffusers 0.31.0 with step(..., variance_noise = z_i), z_i the pattern of PatternNoiseBackend.
  struct Case {
    int order;
    DPMSolverType type;
    Prediction prediction;
    double mean;
  };
  const Case cases[] = {
      {1, DPMSolverType::midpoint, Prediction::epsilon, 0.555322},
      {2, DPMSolverType::midpoint, Prediction::epsilon, 5.408731},
      {2, DPMSolverType::heun, Prediction::epsilon, 1.171139},
      {1, DPMSolverType::midpoint, Prediction::sample, 1.625524},
      {2, DPMSolverType::midpoint, Prediction::sample, 1.500438},
      {2, DPMSolverType::heun, Prediction::sample, 1.324553},
      {1, DPMSolverType::midpoint, Prediction::v, 0.437538},
      {2, DPMSolverType::midpoint, Prediction::v, 57.748806},
      {2, DPMSolverType::heun, Prediction::v, 14.714545},
  };
  for (const Case& c : cases) {
    INFO("order " << c.order << ", heun " << (c.type == DPMSolverType::heun) << ", "
                  << to_string(c.prediction));
    check_mean(
        pattern_loop(multistep_config(),
                     DPMSolverMultistep(dpm(DPMSolverAlgorithm::sde_dpmsolver, c.order, c.type)),
                     c.prediction),
        c.mean);
  }
  DiscreteScheduleOptions schedule = multistep_config();
  DPMSolverMultistepOptions o = dpm(DPMSolverAlgorithm::sde_dpmsolver);
  SECTION("karras sigmas") {
    schedule.sigma_spacing = SigmaSpacing::karras;
    check_mean(pattern_loop(schedule, DPMSolverMultistep(o), Prediction::epsilon), 3.217323);
  }
  SECTION("thresholding (ratio 0.87, sample_max_value 0.5)") {
    o.thresholding = DynamicThresholding{0.87, 0.5};
    check_mean(pattern_loop(schedule, DPMSolverMultistep(o), Prediction::epsilon), 16.858997);
  }
  SECTION("lower_order_final = True") {
    o.lower_order_final = true;
    check_mean(pattern_loop(schedule, DPMSolverMultistep(o), Prediction::epsilon), 1.033327);
  }
}

TEST_CASE("DPM-Solver's first-order step is DDIM in both forms", "[dpm_solver_variants]") {
  for (Prediction prediction : {Prediction::epsilon, Prediction::sample, Prediction::v}) {
    const DiscreteSchedule schedule(multistep_config());
    const Tensor a = full_loop_latents(
        schedule, DPMSolverMultistep(dpm(DPMSolverAlgorithm::dpmsolver, 1)), prediction);
    const Tensor b = full_loop_latents(
        schedule, DPMSolverMultistep(dpm(DPMSolverAlgorithm::dpmsolver_pp, 1)), prediction);
    INFO(to_string(prediction));
    CHECK(abs_difference(a, b) < 1e-3); // a sum over 768 values of float32 rounding
  }
}

TEST_CASE("DPM-Solver noise-prediction variants at clean points and pure noise",
          "[dpm_solver_variants]") {
  SECTION("into sigma = 0 (diffusers refuses final_sigmas_type zero): first order, finite") {
    DiscreteScheduleOptions o = multistep_config();
    o.final_point = FinalPoint::clean;
    for (DPMSolverAlgorithm algorithm :
         {DPMSolverAlgorithm::dpmsolver, DPMSolverAlgorithm::sde_dpmsolver})
      for (int order : {1, 2, 3}) {
        DPMSolverMultistep solver(
            dpm(algorithm, order, DPMSolverType::midpoint, DPMSolverThirdOrder::taylor));
        const Tensor x = full_loop_latents(DiscreteSchedule(o), solver, Prediction::epsilon);
        CHECK(solver.last_order() == 1);
        CHECK(all_finite(x));
      }
  }
  SECTION("the ODE into sigma = 0 lands on alpha x0, as dpmsolver++ does") {
    DiscreteScheduleOptions o = multistep_config();
    o.final_point = FinalPoint::clean;
    const Tensor a = full_loop_latents(DiscreteSchedule(o),
                                       DPMSolverMultistep(dpm(DPMSolverAlgorithm::dpmsolver, 1)),
                                       Prediction::epsilon);
    const Tensor b = full_loop_latents(DiscreteSchedule(o),
                                       DPMSolverMultistep(dpm(DPMSolverAlgorithm::dpmsolver_pp, 1)),
                                       Prediction::epsilon);
    CHECK(abs_difference(a, b) < 1e-3);
  }
  SECTION("the ODE out of pure noise (alpha = 0): DDIM first, finite") {
    for (int order : {1, 2, 3})
      CHECK(all_finite(sample_from_pure_noise(
          DPMSolverMultistep(dpm(DPMSolverAlgorithm::dpmsolver, order, DPMSolverType::heun,
                                 DPMSolverThirdOrder::taylor)))));
  }
  SECTION("the SDE refuses pure noise, naming the option") {
    CHECK_THROWS_WITH(
        sample_from_pure_noise(DPMSolverMultistep(dpm(DPMSolverAlgorithm::sde_dpmsolver))),
        Catch::Contains("DPMSolverMultistepOptions::algorithm = sde_dpmsolver") &&
            Catch::Contains("alpha = 0 at trajectory point 0"));
  }
}

TEST_CASE("DPM-Solver (noise prediction) converges at its order on analytic Gaussian data",
          "[dpm_solver_variants][order]") {
  auto run = [](DPMSolverMultistepOptions o) {
    return [o](int n) { return midpoint_error(DPMSolverMultistep(o), n); };
  };
  auto check = [](double order, double expected) {
    INFO("measured order " << order);
    CHECK(order == Approx(expected).margin(0.25));
  };
  const auto noise = DPMSolverAlgorithm::dpmsolver;
  SECTION("1M: order 1") { check(measured_order(run(dpm(noise, 1)), {16, 32, 64, 128}), 1.0); }
  SECTION("2M midpoint: order 2") {
    check(measured_order(run(dpm(noise, 2)), {16, 32, 64, 128}), 2.0);
  }
  SECTION("2M heun: order 2") {
    check(measured_order(run(dpm(noise, 2, DPMSolverType::heun)), {16, 32, 64, 128}), 2.0);
  }
  SECTION("3M from exact starting values: taylor order 3, diffusers' D2 term order 2") {
    // The noise prediction varies more than the data prediction here: taylor's local slopes are
    // 2.58, 2.72, 2.85 over n = 8..64 (the data-prediction form reaches 3 from n = 8).
    check(measured_order(
              [&](int n) {
                return exact_start_error(DPMSolverMultistep(dpm(noise, 3, DPMSolverType::midpoint,
                                                                DPMSolverThirdOrder::taylor)),
                                         n, 2);
              },
              {24, 32, 48, 64, 96}),
          3.0);
    check(measured_order(
              [&](int n) { return exact_start_error(DPMSolverMultistep(dpm(noise, 3)), n, 2); },
              {16, 32, 64, 128}),
          2.0);
  }
}

// As for DPM-Solver++ SDE (test_dpm_solver.cpp), the chain is exact only as the step count grows;
// at 200 steps its bias is below the 3-SE bound of 20000 samples.
TEST_CASE("DPM-Solver SDE (noise prediction) reproduces the data's mean and variance",
          "[dpm_solver_variants][stat]") {
  DiscreteScheduleOptions so;
  so.spacing = TimestepSpacing::linspace_multistep;
  DPMSolverMultistepOptions o;
  o.algorithm = DPMSolverAlgorithm::sde_dpmsolver;
  SECTION("2M") {}
  SECTION("3M (taylor)") {
    o.solver_order = 3;
    o.third_order = DPMSolverThirdOrder::taylor;
  }
  check_distribution(DiscreteSchedule(so), DPMSolverMultistep(o), Prediction::epsilon, 200);
}

TEST_CASE("DPM-Solver noise-prediction history at a model switch: keep and reset",
          "[dpm_solver_variants][stitch]") {
  auto model = harness_model(Prediction::epsilon);
  TrajectoryStitcher stitcher(model, model, 0.5); // two identical models, switch before step 5
  SampleOptions options;
  options.steps = 10;
  options.seed = 11;
  for (DPMSolverAlgorithm algorithm :
       {DPMSolverAlgorithm::dpmsolver, DPMSolverAlgorithm::sde_dpmsolver})
    for (int order : {2, 3}) {
      DPMSolverMultistepOptions o;
      o.algorithm = algorithm;
      o.solver_order = order;
      o.third_order = DPMSolverThirdOrder::taylor;
      INFO("sde " << (algorithm == DPMSolverAlgorithm::sde_dpmsolver) << ", order " << order);
      const auto runs = switch_runs<DPMSolverMultistep>(
          model, stitcher, o, multistep_config(), options, 5,
          [](const DPMSolverMultistep& s) { return s.last_order(); });
      CHECK(runs.kept_switches == 1);
      CHECK(bit_identical(runs.kept, runs.alone));
      CHECK(runs.reset_switches == 1);
      CHECK(runs.reset_after_step.at(5) == 1);
      CHECK(bit_identical(runs.reset, runs.restarted));
      CHECK_FALSE(bit_identical(runs.reset, runs.alone));
    }
}

TEST_CASE("DPM-Solver noise-prediction options are validated, naming the option and value",
          "[dpm_solver_variants][errors]") {
  DPMSolverMultistepOptions o;
  o.algorithm = DPMSolverAlgorithm::sde_dpmsolver;
  o.solver_order = 3;
  CHECK_THROWS_AS(DPMSolverMultistep(o), tstitch::invalid_argument);
  CHECK_THROWS_WITH(DPMSolverMultistep(o),
                    Catch::Contains("DPMSolverMultistepOptions::third_order = diffusers"));
  o.third_order = DPMSolverThirdOrder::taylor;
  CHECK_NOTHROW(DPMSolverMultistep(o));
  o.algorithm = DPMSolverAlgorithm::dpmsolver;
  o.third_order = DPMSolverThirdOrder::diffusers;
  CHECK_NOTHROW(DPMSolverMultistep(o));
  o.solver_order = 4;
  CHECK_THROWS_WITH(DPMSolverMultistep(o),
                    Catch::Contains("DPMSolverMultistepOptions::solver_order = 4"));
}

TEST_CASE("DPM-Solver noise-prediction variants allocate in begin() only",
          "[dpm_solver_variants]") {
  DPMSolverMultistepOptions o;
  o.solver_order = 3;
  o.algorithm = DPMSolverAlgorithm::sde_dpmsolver;
  o.third_order = DPMSolverThirdOrder::taylor;
  o.thresholding = DynamicThresholding{0.9, 2.0};
  DPMSolverMultistep solver(o);
  int allocations = 0;
  CountingBackend backend{{}, &allocations};
  const Trajectory trajectory = DiscreteSchedule().trajectory(12);
  Tensor x = harness_tensor(false), x0 = harness_tensor(true);
  solver.begin(backend, trajectory, 4, harness_shape);
  CHECK(allocations == 5); // three history slots, the noise and the thresholded x0
  for (int run = 0; run < 2; ++run) {
    solver.begin(backend, trajectory, 4, harness_shape);
    for (int i = 0; i < 12; ++i)
      solver.update(backend, SolverStep{i, 0, &trajectory, NoiseKey{1, 0, 0, 0}},
                    ModelOutput{x0.view(), x0.view(), x0.view(), Prediction::sample}, x.view());
  }
  CHECK(allocations == 5);
}

// ---- UniPC: predict_x0 = False ------------------------------------------------------------------

TEST_CASE("UniPC (predict_x0 = False) full loops match diffusers 0.31.0",
          "[parity][unipc_variants]") {
  // Values from diffusers 0.31.0 (UniPCMultistepScheduler(predict_x0=False), the harness and
  // config of UniPCMultistepSchedulerTest; diffusers' own tests have none for it), with
  // diffusers' tolerance on the mean.
  struct Case {
    int order;
    UniPCVariant variant;
    Prediction prediction;
    double mean;
  };
  const Case cases[] = {
      {1, UniPCVariant::bh1, Prediction::epsilon, 0.248689},
      {2, UniPCVariant::bh1, Prediction::epsilon, 0.246790},
      {3, UniPCVariant::bh1, Prediction::epsilon, 0.244640},
      {1, UniPCVariant::bh2, Prediction::epsilon, 0.256821},
      {2, UniPCVariant::bh2, Prediction::epsilon, 0.244005},
      {3, UniPCVariant::bh2, Prediction::epsilon, 0.241567},
      {2, UniPCVariant::bh1, Prediction::sample, 0.957920},
      {2, UniPCVariant::bh2, Prediction::sample, 0.955672},
      {3, UniPCVariant::bh2, Prediction::sample, 0.952241},
      {2, UniPCVariant::bh1, Prediction::v, 0.097971},
      {2, UniPCVariant::bh2, Prediction::v, 0.092725},
      {3, UniPCVariant::bh2, Prediction::v, 0.091312},
  };
  for (const Case& c : cases) {
    INFO("order " << c.order << ", bh1 " << (c.variant == UniPCVariant::bh1) << ", "
                  << to_string(c.prediction));
    check_mean(full_loop(multistep_config(), UniPC(unipc_noise(c.order, c.variant)), c.prediction),
               c.mean);
  }
  DiscreteScheduleOptions schedule = multistep_config();
  SECTION("karras sigmas") {
    schedule.sigma_spacing = SigmaSpacing::karras;
    check_mean(full_loop(schedule, UniPC(unipc_noise()), Prediction::epsilon), 0.273258);
    check_mean(full_loop(schedule, UniPC(unipc_noise()), Prediction::v), 0.121906);
  }
  SECTION("with noise (t_start = 8)") {
    const Result r = full_loop(schedule, UniPC(unipc_noise()), Prediction::epsilon, 8);
    INFO(std::setprecision(8) << "sum " << r.sum << ", mean " << r.mean);
    CHECK(std::abs(r.sum - 335.1284) < 1e-2);
    CHECK(std::abs(r.mean - 0.436365) < 1e-3);
  }
  SECTION("the 1-D harness") {
    const Result r = full_loop(schedule, UniPC(unipc_noise()), Prediction::epsilon, Shape{3, 1, 8});
    INFO(std::setprecision(8) << "sum " << r.sum << ", mean " << r.mean);
    CHECK(std::abs(r.sum - 23.2107) < 1e-2);
    CHECK(std::abs(r.mean - 0.241778) < 1e-3);
  }
  SECTION("order 3 without lower_order_final") {
    UniPCOptions o = unipc_noise(3);
    o.lower_order_final = false;
    check_mean(full_loop(schedule, UniPC(o), Prediction::epsilon), 0.204952);
  }
}

TEST_CASE("UniP-p (noise prediction, B(h) = e^h - 1) is DPM-Solver pM", "[unipc_variants]") {
  // Order 2: the 2M midpoint update; order 3 (rho solved for): the third-order Taylor update.
  for (int order : {2, 3}) {
    const DiscreteSchedule schedule(multistep_config());
    const Tensor a = full_loop_latents(schedule, UniPC([&] {
                                         UniPCOptions o =
                                             unipc_noise(order, UniPCVariant::bh2, false);
                                         o.lower_order_final = false;
                                         return o;
                                       }()),
                                       Prediction::epsilon);
    const Tensor b = full_loop_latents(
        schedule,
        DPMSolverMultistep(dpm(DPMSolverAlgorithm::dpmsolver, order, DPMSolverType::midpoint,
                               DPMSolverThirdOrder::taylor)),
        Prediction::epsilon);
    double largest = 0;
    for (std::int64_t i = 0; i < a.numel(); ++i)
      largest = std::max(largest, std::abs(static_cast<double>(a[i]) - b[i]));
    INFO("order " << order << ": largest difference " << largest);
    CHECK(largest < 1e-5);
  }
}

TEST_CASE("UniPC (noise prediction) never produces NaN, at clean points and pure noise too",
          "[parity][unipc_variants]") {
  for (UniPCVariant variant : {UniPCVariant::bh1, UniPCVariant::bh2})
    for (int order : {1, 2, 3})
      for (Prediction prediction : {Prediction::epsilon, Prediction::sample}) {
        INFO("bh1 " << (variant == UniPCVariant::bh1) << ", order " << order << ", "
                    << to_string(prediction));
        CHECK(all_finite(full_loop_latents(DiscreteSchedule(multistep_config()),
                                           UniPC(unipc_noise(order, variant)), prediction)));
        DiscreteScheduleOptions clean = multistep_config();
        clean.final_point = FinalPoint::clean;
        UniPC solver(unipc_noise(order, variant));
        CHECK(all_finite(full_loop_latents(DiscreteSchedule(clean), solver, prediction)));
        CHECK(solver.last_order() == 1);
        CHECK(all_finite(sample_from_pure_noise(UniPC(unipc_noise(order, variant)))));
      }
}

TEST_CASE("UniPC (noise prediction) converges at its order on analytic Gaussian data",
          "[unipc_variants][order]") {
  auto run = [](UniPCOptions o) { return [o](int n) { return midpoint_error(UniPC(o), n); }; };
  auto check = [](double order, double expected) {
    INFO("measured order " << order);
    CHECK(order == Approx(expected).margin(0.25));
  };
  SECTION("UniP-2 without corrector: order 2") {
    check(measured_order(run(unipc_noise(2, UniPCVariant::bh2, false)), {16, 32, 64, 128}), 2.0);
    check(measured_order(run(unipc_noise(2, UniPCVariant::bh1, false)), {16, 32, 64, 128}), 2.0);
  }
  SECTION("UniPC-1: order 2") {
    check(measured_order(run(unipc_noise(1, UniPCVariant::bh2)), {16, 32, 64, 128}), 2.0);
  }
  SECTION("UniPC-2: order 3") {
    check(measured_order(run(unipc_noise(2, UniPCVariant::bh2)), {8, 16, 32, 64}), 3.0);
  }
}

TEST_CASE("UniPC (noise prediction) history at a model switch: keep and reset",
          "[unipc_variants][stitch]") {
  auto model = harness_model(Prediction::epsilon);
  TrajectoryStitcher stitcher(model, model, 0.5);
  struct Orders {
    int predictor, corrector;
  };
  SampleOptions options;
  options.steps = 10;
  for (int order : {1, 2, 3}) {
    INFO("order " << order);
    const auto runs = switch_runs<UniPC>(model, stitcher, unipc_noise(order), multistep_config(),
                                         options, 5, [](const UniPC& s) {
                                           return Orders{s.last_order(), s.last_corrector_order()};
                                         });
    CHECK(runs.kept_switches == 1);
    CHECK(runs.kept_after_step.at(5).corrector == order);
    CHECK(bit_identical(runs.kept, runs.alone));
    CHECK(runs.reset_switches == 1);
    CHECK(runs.reset_after_step.at(5).predictor == 1);
    CHECK(runs.reset_after_step.at(5).corrector == 0);
    CHECK(bit_identical(runs.reset, runs.restarted));
    CHECK_FALSE(bit_identical(runs.reset, runs.alone));
  }
}

// ---- UniPCWithPredictor: diffusers' solver_p ----------------------------------------------------

namespace {

/// UniC on DPM-Solver++ with one history policy for both, for switch_runs.
struct UniCDpmOptions {
  UniPCOptions unipc;
  DPMSolverMultistepOptions dpm;
  HistoryPolicy history = HistoryPolicy::keep;
};

struct UniCDpm : UniPCWithPredictor<DPMSolverMultistep> {
  explicit UniCDpm(UniCDpmOptions o)
      : UniPCWithPredictor(with_history(o.unipc, o.history),
                           DPMSolverMultistep(with_history(o.dpm, o.history))) {}
  template <class O> static O with_history(O options, HistoryPolicy history) {
    options.history = history;
    return options;
  }
};

UniPCWithPredictor<DPMSolverMultistep> unic_dpm(UniPCOptions u, DPMSolverMultistepOptions d) {
  return {std::move(u), DPMSolverMultistep(d)};
}

} // namespace

TEST_CASE("UniPC with solver_p = DPMSolverMultistepScheduler matches diffusers 0.31.0",
          "[parity][unipc_variants]") {
  // diffusers 0.31.0: UniPCMultistepScheduler(UniPCMultistepSchedulerTest's config,
  // solver_p=DPMSolverMultistepScheduler(DPMSolverMultistepSchedulerTest's config)), full loop.
  struct Case {
    DPMSolverAlgorithm algorithm;
    int order;
    Prediction prediction;
    double mean;
  };
  const auto pp = DPMSolverAlgorithm::dpmsolver_pp, noise = DPMSolverAlgorithm::dpmsolver;
  const Case cases[] = {
      {pp, 1, Prediction::epsilon, 0.242787},    {pp, 2, Prediction::epsilon, 0.308851},
      {pp, 3, Prediction::epsilon, 0.840827},    {noise, 2, Prediction::epsilon, 0.289922},
      {noise, 3, Prediction::epsilon, 0.241556}, {pp, 1, Prediction::sample, 0.913431},
      {pp, 2, Prediction::sample, 1.115853},     {pp, 3, Prediction::sample, 0.869256},
      {noise, 2, Prediction::sample, 1.041911},  {pp, 1, Prediction::v, 0.095210},
      {pp, 2, Prediction::v, 0.201380},          {pp, 3, Prediction::v, 0.104814},
      {noise, 2, Prediction::v, 0.158213},       {noise, 3, Prediction::v, 0.112330},
  };
  for (const Case& c : cases) {
    INFO("predictor " << (c.algorithm == pp ? "dpmsolver++" : "dpmsolver") << " order " << c.order
                      << ", " << to_string(c.prediction));
    check_mean(full_loop(multistep_config(), unic_dpm(UniPCOptions{}, dpm(c.algorithm, c.order)),
                         c.prediction),
               c.mean);
  }
  SECTION("UniC in the noise-prediction form (predict_x0 = False)") {
    check_mean(
        full_loop(multistep_config(), unic_dpm(unipc_noise(), dpm(pp, 2)), Prediction::epsilon),
        0.303371);
  }
  SECTION("UniPC solver_order 3 (the corrector's orders) on DPM-Solver++ 2M") {
    UniPCOptions u;
    u.solver_order = 3;
    check_mean(full_loop(multistep_config(), unic_dpm(u, dpm(pp, 2)), Prediction::epsilon),
               0.308200);
  }
}

TEST_CASE("UniC on UniP (corrector off) is UniPC", "[unipc_variants]") {
  // With a sample-predicting model the output's x0 does not depend on x, so the predictor sees
  // UniPC's own data predictions: the composition must reproduce UniPC.
  for (int order : {1, 2, 3}) {
    UniPCOptions inner;
    inner.solver_order = order;
    for (int i = 0; i < 1000; ++i)
      inner.disable_corrector.push_back(i);
    UniPCOptions outer;
    outer.solver_order = order;
    const DiscreteSchedule schedule(multistep_config());
    const Tensor a = full_loop_latents(schedule, UniPCWithPredictor<UniPC>(outer, UniPC(inner)),
                                       Prediction::sample);
    const Tensor b = full_loop_latents(schedule, UniPC(outer), Prediction::sample);
    INFO("order " << order);
    CHECK(abs_difference(a, b) < 1e-5);
  }
}

TEST_CASE("UniPC with a predictor: history at a model switch", "[unipc_variants][stitch]") {
  auto model = harness_model(Prediction::epsilon);
  TrajectoryStitcher stitcher(model, model, 0.5);
  struct Orders {
    int predictor, corrector, dpm;
  };
  SampleOptions options;
  options.steps = 10;
  for (int order : {2, 3}) {
    INFO("order " << order);
    UniCDpmOptions o;
    o.unipc.solver_order = order;
    o.dpm.solver_order = order;
    const auto runs = switch_runs<UniCDpm>(
        model, stitcher, o, multistep_config(), options, 5, [](const UniCDpm& s) {
          return Orders{s.last_order(), s.last_corrector_order(), s.predictor().last_order()};
        });
    CHECK(runs.kept_switches == 1);
    CHECK(runs.kept_after_step.at(5).corrector == order);
    CHECK(bit_identical(runs.kept, runs.alone));
    CHECK(runs.reset_switches == 1);
    CHECK(runs.reset_after_step.at(5).corrector == 0);
    CHECK(runs.reset_after_step.at(5).dpm == 1);
    CHECK(bit_identical(runs.reset, runs.restarted));
    CHECK_FALSE(bit_identical(runs.reset, runs.alone));
  }
}

TEST_CASE("UniPC variant options are validated, naming the option and value",
          "[unipc_variants][errors]") {
  UniPCOptions o = unipc_noise();
  o.thresholding = DynamicThresholding{};
  CHECK_THROWS_AS(UniPC(o), tstitch::invalid_argument);
  CHECK_THROWS_WITH(UniPC(o), Catch::Contains("UniPCOptions::predict_x0 = false") &&
                                  Catch::Contains("thresholding"));
  o.predict_x0 = true;
  CHECK_NOTHROW(UniPC(o));
  // A predictor that evaluates the model twice per step cannot run under UniC.
  UniPCWithPredictor<Heun> two_evaluations(UniPCOptions{}, Heun{});
  HostBackend backend;
  const Trajectory trajectory = DiscreteSchedule().trajectory(5);
  CHECK_THROWS_WITH(two_evaluations.begin(backend, trajectory, 1, harness_shape),
                    Catch::Contains("UniPCWithPredictor predictor evaluations = 2") &&
                        Catch::Contains("at step 0"));
}

TEST_CASE("UniPC variants allocate in begin() only", "[unipc_variants]") {
  DPMSolverMultistepOptions d;
  d.solver_order = 3;
  UniPCWithPredictor<DPMSolverMultistep> solver(unipc_noise(3), DPMSolverMultistep(d));
  int allocations = 0;
  CountingBackend backend{{}, &allocations};
  const Trajectory trajectory = DiscreteSchedule().trajectory(12);
  Tensor x = harness_tensor(false), x0 = harness_tensor(true);
  solver.begin(backend, trajectory, 4, harness_shape);
  // UniPC: four history slots and the saved latents; DPM-Solver++: three history slots; the
  // uncorrected latents and the re-converted x0 and eps.
  CHECK(allocations == 11);
  for (int run = 0; run < 2; ++run) {
    solver.begin(backend, trajectory, 4, harness_shape);
    for (int i = 0; i < 12; ++i)
      solver.update(backend, SolverStep{i, 0, &trajectory, NoiseKey{}},
                    ModelOutput{x0.view(), x0.view(), x0.view(), Prediction::sample}, x.view());
  }
  CHECK(allocations == 11);
}
