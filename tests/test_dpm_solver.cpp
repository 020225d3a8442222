// SPDX-License-Identifier: Apache-2.0
// DPM-Solver++ (DPMSolverMultistep): the diffusers oracles of
// docs/parity.md §4.5 with diffusers' harness (§1) and tolerances, the
// relational tests of §6, convergence order and distribution on analytic Gaussian data, history
// policy at a model switch, and option validation.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iomanip>
#include <vector>

#include "support/gaussian_mixture.hpp"
#include "tstitch/sample.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/solver/dpm_solver.hpp"
#include "tstitch/stitch/stitcher.hpp"

#include "support/diffusers_harness.hpp"
#include "support/gaussian_problems.hpp"
#include "support/tensor_checks.hpp"

using namespace tstitch;
using namespace tstitch::testing;
using analytic::DiagonalGaussian;
using analytic::ExactDenoiser;
using analytic::Labels;

static_assert(Solver<DPMSolverMultistep>);

namespace {

/// The §4.5 test config: linspace spacing, final_sigmas_type = "sigma_min".
DiscreteScheduleOptions dpm_config() {
  DiscreteScheduleOptions o;
  o.spacing = TimestepSpacing::linspace_multistep;
  o.final_point = FinalPoint::first_train_step;
  return o;
}

/// The §4.5 solver config: solver_order 2, midpoint, lower_order_final = False.
DPMSolverMultistepOptions dpm_solver_config() {
  DPMSolverMultistepOptions o;
  o.lower_order_final = false;
  return o;
}

DPMSolverMultistepOptions dpm(int order, DPMSolverType type = DPMSolverType::midpoint,
                              DPMSolverThirdOrder third = DPMSolverThirdOrder::diffusers) {
  DPMSolverMultistepOptions o;
  o.solver_order = order;
  o.solver_type = type;
  o.third_order = third;
  o.lower_order_final = false;
  return o;
}

} // namespace

TEST_CASE("DPM-Solver++ full loops match diffusers' DPMSolverMultistepSchedulerTest",
          "[parity][dpm_solver]") {
  DiscreteScheduleOptions schedule = dpm_config();
  DPMSolverMultistepOptions solver_options = dpm_solver_config();
  SECTION("test_full_loop_no_noise") {
    const Result r = full_loop(schedule, DPMSolverMultistep(solver_options), Prediction::epsilon);
    INFO("mean " << std::setprecision(8) << r.mean);
    CHECK(std::abs(r.mean - 0.3301) < 1e-3);
  }
  SECTION("test_full_loop_no_noise_thres") {
    solver_options.thresholding = DynamicThresholding{0.87, 0.5};
    const Result r = full_loop(schedule, DPMSolverMultistep(solver_options), Prediction::epsilon);
    INFO("mean " << std::setprecision(8) << r.mean);
    CHECK(std::abs(r.mean - 1.1364) < 1e-3);
  }
  SECTION("test_full_loop_with_v_prediction") {
    const Result r = full_loop(schedule, DPMSolverMultistep(solver_options), Prediction::v);
    INFO("mean " << std::setprecision(8) << r.mean);
    CHECK(std::abs(r.mean - 0.2251) < 1e-3);
  }
  SECTION("test_full_loop_with_karras_and_v_prediction") {
    schedule.sigma_spacing = SigmaSpacing::karras;
    const Result r = full_loop(schedule, DPMSolverMultistep(solver_options), Prediction::v);
    INFO("mean " << std::setprecision(8) << r.mean);
    CHECK(std::abs(r.mean - 0.2096) < 1e-3);
  }
  SECTION("test_full_loop_with_lu_and_v_prediction") {
    schedule.sigma_spacing = SigmaSpacing::lu_lambdas;
    const Result r = full_loop(schedule, DPMSolverMultistep(solver_options), Prediction::v);
    INFO("mean " << std::setprecision(8) << r.mean);
    CHECK(std::abs(r.mean - 0.1554) < 1e-3);
  }
  SECTION("test_full_loop_with_noise (t_start = 5: timesteps [500, ..., 100])") {
    const Result r =
        full_loop(schedule, DPMSolverMultistep(solver_options), Prediction::epsilon, 5);
    INFO(std::setprecision(8) << "sum " << r.sum << ", mean " << r.mean);
    CHECK(std::abs(r.sum - 318.4111) < 1e-2);
    CHECK(std::abs(r.mean - 0.4146) < 1e-3);
  }
}

TEST_CASE("DPM-Solver++ on custom timesteps equals the default schedule (§6)",
          "[parity][dpm_solver]") {
  for (FinalPoint final_point : {FinalPoint::first_train_step, FinalPoint::clean})
    for (Prediction prediction : {Prediction::epsilon, Prediction::sample, Prediction::v}) {
      DiscreteScheduleOptions o = dpm_config();
      o.final_point = final_point;
      const DiscreteSchedule schedule(o);
      const Tensor a =
          full_loop_latents(schedule, DPMSolverMultistep(dpm_solver_config()), prediction);
      const Tensor b = full_loop_latents(CustomTimesteps{&schedule, schedule.timesteps(10)},
                                         DPMSolverMultistep(dpm_solver_config()), prediction);
      const double difference = abs_difference(a, b);
      INFO("prediction " << to_string(prediction) << ", final point "
                         << (final_point == FinalPoint::clean ? "zero" : "sigma_min"));
      CHECK(difference < 1e-5);
    }
}

TEST_CASE("DPM-Solver++ never produces NaN over orders, solver types and predictions (§6)",
          "[parity][dpm_solver]") {
  for (DPMSolverAlgorithm algorithm :
       {DPMSolverAlgorithm::dpmsolver_pp, DPMSolverAlgorithm::sde_dpmsolver_pp})
    for (DPMSolverType type : {DPMSolverType::midpoint, DPMSolverType::heun})
      for (int order : {1, 2, 3})
        for (Prediction prediction : {Prediction::epsilon, Prediction::sample}) {
          DPMSolverMultistepOptions o = dpm_solver_config();
          o.algorithm = algorithm;
          o.solver_type = type;
          o.solver_order = order;
          if (algorithm == DPMSolverAlgorithm::sde_dpmsolver_pp && order == 3)
            o.third_order = DPMSolverThirdOrder::taylor;
          INFO("sde " << (algorithm == DPMSolverAlgorithm::sde_dpmsolver_pp) << ", heun "
                      << (type == DPMSolverType::heun) << ", order " << order << ", "
                      << to_string(prediction));
          CHECK(all_finite(full_loop_latents(DiscreteSchedule(dpm_config()), DPMSolverMultistep(o),
                                             prediction)));
        }
}

TEST_CASE("DPM-Solver++ handles degenerate and infinite steps without NaN", "[dpm_solver]") {
  SECTION("karras + sigma_min: the zero-length last step leaves x as it is, heun and 3M too") {
    // diffusers' heun and 3M formulas give 0/0 = NaN there; its midpoint gives x exactly.
    DiscreteScheduleOptions o = dpm_config();
    o.sigma_spacing = SigmaSpacing::karras;
    const DiscreteSchedule schedule(o);
    const Trajectory trajectory = schedule.trajectory(10);
    REQUIRE(trajectory[9].sigma == trajectory[10].sigma);
    for (int order : {2, 3})
      for (DPMSolverType type : {DPMSolverType::midpoint, DPMSolverType::heun}) {
        DPMSolverMultistepOptions options = dpm(order, type);
        auto model = harness_model(Prediction::epsilon);
        DPMSolverMultistep solver(options);
        Tensor x = harness_tensor(false);
        Tensor before_last;
        SampleOptions so;
        so.steps = 10;
        so.on_step = [&](const StepRecord& r) {
          if (r.step == 8)
            before_last = x;
          return true;
        };
        sample(model, schedule, solver, x, NoCondition{}, so);
        CHECK(solver.last_order() == 0);
        CHECK(all_finite(x));
        CHECK(rms_distance(x, before_last) == 0.0);
      }
  }
  SECTION("a step into sigma = 0 is first order and lands on the data prediction") {
    DiscreteScheduleOptions o = dpm_config();
    o.final_point = FinalPoint::clean;
    for (int order : {1, 2, 3}) {
      DPMSolverMultistep solver(dpm(order));
      // The sample model: x0 = x * t / (t + 1).
      const Tensor x = full_loop_latents(DiscreteSchedule(o), solver, Prediction::sample);
      CHECK(solver.last_order() == 1);
      CHECK(all_finite(x));
    }
  }
  SECTION("pure noise at the start (alpha = 0, lambda = -inf): a flow-matching trajectory") {
    for (int order : {1, 2, 3})
      CHECK(all_finite(sample_from_pure_noise(
          DPMSolverMultistep(dpm(order, DPMSolverType::heun, DPMSolverThirdOrder::taylor)))));
  }
}

TEST_CASE("Dynamic thresholding: per-sample quantile, clamped to [1, sample_max_value]",
          "[dpm_solver]") {
  // A first-order step into a clean point returns the stored (thresholded) data prediction.
  const Trajectory trajectory{{TimePoint{500, 0.6, 0.8}, TimePoint{0, 1, 0}}, 1000};
  const std::int64_t count = harness_shape.numel(); // 192 values per sample
  Tensor x0(3, harness_shape), x(3, harness_shape);
  for (std::int64_t e = 0; e < count; ++e) {
    const double sign = e % 2 == 0 ? 1.0 : -1.0;
    x0[e] = static_cast<float>(sign * 0.1 * static_cast<double>(e));             // |x0| to 19.1
    x0[count + e] = static_cast<float>(sign * 0.001 * static_cast<double>(e));   // below 1
    x0[2 * count + e] = static_cast<float>(sign * 0.2 * static_cast<double>(e)); // to 38.2
  }
  DPMSolverMultistepOptions o;
  o.solver_order = 1;
  o.thresholding = DynamicThresholding{0.5, 10.0};
  DPMSolverMultistep solver(o);
  HostBackend backend;
  solver.begin(backend, trajectory, 3, harness_shape);
  solver.update(backend, SolverStep{0, 0, &trajectory, NoiseKey{}},
                ModelOutput{x0.view(), x0.view(), x0.view(), Prediction::sample}, x.view());
  // The median of |x0| over 192 values interpolates the 96th and 97th smallest: rank 95.5.
  const double s[] = {9.55, 1.0 /* quantile 0.0955 < 1 */, 10.0 /* 19.1 > sample_max_value */};
  for (int n = 0; n < 3; ++n)
    for (std::int64_t e = 0; e < count; ++e) {
      const double v = x0[n * count + e];
      const double expected = std::clamp(v, -s[n], s[n]) / s[n];
      INFO("sample " << n << ", element " << e);
      CHECK(x[n * count + e] == Approx(expected).epsilon(1e-5).margin(1e-7));
    }
}

TEST_CASE("DPM-Solver++ picks diffusers' order at each step", "[dpm_solver]") {
  auto orders = [](DPMSolverMultistepOptions options, DiscreteScheduleOptions schedule_options,
                   int n) {
    DPMSolverMultistep solver(options);
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
  DiscreteScheduleOptions clean = dpm_config();
  clean.final_point = FinalPoint::clean;
  DPMSolverMultistepOptions o;
  o.solver_order = 3;
  // lower_order_final with n < 15: second order, then first order at the end.
  CHECK(orders(o, dpm_config(), 8) == std::vector<int>{1, 2, 3, 3, 3, 3, 2, 1});
  // n >= 15 and a sigma_min end: no lowering.
  CHECK(orders(o, dpm_config(), 16).back() == 3);
  // ... but a clean end forces the first-order last step (final_sigmas_type = "zero").
  const std::vector<int> to_clean = orders(o, clean, 16);
  CHECK(to_clean[14] == 3);
  CHECK(to_clean[15] == 1);
  o.euler_at_final = true;
  CHECK(orders(o, dpm_config(), 16).back() == 1);
  o.euler_at_final = false;
  o.lower_order_final = false;
  CHECK(orders(o, dpm_config(), 8) == std::vector<int>{1, 2, 3, 3, 3, 3, 3, 3});
}

// Orders are measured at the middle of the run (see midpoint_error), on the VP cosine schedule
// above: uniform in t, sigma = 0 at the end, n = 8..64 or 16..128 (errors 1e-2..1e-6, above the
// float32 rounding of the latents, about 3e-7 here).
TEST_CASE("DPM-Solver++ converges at its order on analytic Gaussian data", "[dpm_solver][order]") {
  auto run = [](DPMSolverMultistepOptions o) {
    return [o](int n) { return midpoint_error(DPMSolverMultistep(o), n); };
  };
  SECTION("1M is DDIM: order 1") {
    const double order = measured_order(run(dpm(1)), {16, 32, 64, 128});
    INFO("measured order " << order);
    CHECK(order == Approx(1.0).margin(0.25));
  }
  SECTION("2M midpoint: order 2") {
    const double order = measured_order(run(dpm(2)), {16, 32, 64, 128});
    INFO("measured order " << order);
    CHECK(order == Approx(2.0).margin(0.25));
  }
  SECTION("2M heun: order 2") {
    const double order = measured_order(run(dpm(2, DPMSolverType::heun)), {16, 32, 64, 128});
    INFO("measured order " << order);
    CHECK(order == Approx(2.0).margin(0.25));
  }
  SECTION("3M with its first-order start: order 2") {
    // The first step is first order: its O(h^2) local error caps the global order at 2.
    for (DPMSolverThirdOrder third :
         {DPMSolverThirdOrder::diffusers, DPMSolverThirdOrder::taylor}) {
      const double order =
          measured_order(run(dpm(3, DPMSolverType::midpoint, third)), {16, 32, 64, 128});
      INFO("measured order " << order);
      CHECK(order == Approx(2.0).margin(0.25));
    }
  }
}

TEST_CASE("DPM-Solver++ 3M from exact starting values: taylor order 3, diffusers' order 2",
          "[dpm_solver][order]") {
  SECTION("taylor: order 3") {
    const double order = measured_order(
        [](int n) {
          return exact_start_error(
              DPMSolverMultistep(dpm(3, DPMSolverType::midpoint, DPMSolverThirdOrder::taylor)), n,
              2);
        },
        {8, 16, 32, 64});
    INFO("measured order " << order);
    CHECK(order == Approx(3.0).margin(0.25));
  }
  SECTION("diffusers: order 2 (its D2 term is half the Taylor term)") {
    const double order =
        measured_order([](int n) { return exact_start_error(DPMSolverMultistep(dpm(3)), n, 2); },
                       {16, 32, 64, 128});
    INFO("measured order " << order);
    CHECK(order == Approx(2.0).margin(0.25));
  }
}

TEST_CASE("DPM-Solver++ history at a model switch: keep and reset", "[dpm_solver][stitch]") {
  auto model = harness_model(Prediction::epsilon);
  TrajectoryStitcher stitcher(model, model, 0.5); // two identical models, switch before step 5
  SampleOptions options; // the harness' n = 10; the seed of the SDE's noise
  options.steps = 10;
  options.seed = 11;
  for (DPMSolverAlgorithm algorithm :
       {DPMSolverAlgorithm::dpmsolver_pp, DPMSolverAlgorithm::sde_dpmsolver_pp})
    for (int order : {2, 3}) {
      DPMSolverMultistepOptions o;
      o.algorithm = algorithm;
      o.solver_order = order;
      o.third_order = DPMSolverThirdOrder::taylor;
      INFO("sde " << (algorithm == DPMSolverAlgorithm::sde_dpmsolver_pp) << ", order " << order);
      const auto runs = switch_runs<DPMSolverMultistep>(
          model, stitcher, o, dpm_config(), options, 5,
          [](const DPMSolverMultistep& s) { return s.last_order(); });

      // keep: the switch between identical models changes nothing, bit for bit.
      CHECK(runs.kept_switches == 1);
      CHECK(bit_identical(runs.kept, runs.alone));

      // reset: step 5 is a first-order step, exactly as in a run that starts at step 5 from the
      // same latents.
      CHECK(runs.reset_switches == 1);
      CHECK(runs.reset_after_step.at(5) == 1);
      CHECK(bit_identical(runs.reset, runs.restarted));
      CHECK_FALSE(bit_identical(runs.reset, runs.alone));
    }
}

namespace {

/// The host backend with the solver's noise replaced by a probe: 1 at step `probe` (every
/// element), 0 at every other step.
struct ProbeBackend : HostBackend {
  int probe = -1;
  void fill_normal(View out, NoiseKey key) const {
    fill(out, static_cast<int>(key.step) == probe ? 1.0f : 0.0f);
  }
};

struct Moments {
  double mean[2], variance[2];
};

/// The exact mean and variance per channel of the discretised chain: with Gaussian data the
/// exact denoiser is affine, so the final latents are x_final = a x_T + b + sum_i w_i z_i per
/// element, and runs with probe inputs recover a, b and every w_i.
Moments chain_moments(const DiscreteSchedule& schedule, const DPMSolverMultistepOptions& options,
                      int steps) {
  const Shape one{2, 1, 1};
  const DiagonalGaussian data = channel_gaussians(one);
  ExactDenoiser model(one, data, Prediction::epsilon);
  const TimePoint start = schedule.trajectory(steps)[0];
  auto run = [&](float x_t, int probe) { // x_T = marginal mean + x_t marginal SDs
    Tensor x(1, one);
    x[0] = x[1] = x_t;
    to_marginal(x, data, start);
    DPMSolverMultistep solver(options);
    ProbeBackend backend;
    backend.probe = probe;
    Sampler<ProbeBackend> sampler(backend);
    SampleOptions so;
    so.steps = steps;
    sampler.run(model, schedule, solver, x.view(), Labels{}, nullptr, so);
    return std::array<double, 2>{x[0], x[1]};
  };
  const auto mean = run(0.0f, -1);
  const auto unit = run(1.0f, -1);
  Moments m{};
  for (int c = 0; c < 2; ++c) {
    m.mean[c] = mean[static_cast<std::size_t>(c)];
    const double a = unit[static_cast<std::size_t>(c)] - mean[static_cast<std::size_t>(c)];
    m.variance[c] = a * a;
  }
  for (int i = 0; i < steps; ++i) {
    const auto probed = run(0.0f, i);
    for (int c = 0; c < 2; ++c) {
      const double w = probed[static_cast<std::size_t>(c)] - mean[static_cast<std::size_t>(c)];
      m.variance[c] += w * w;
    }
  }
  return m;
}

} // namespace

// The SDE sampler is exact only as the step count grows. With Gaussian data every step is
// affine, so chain_moments gives the exact final moments of the discretised chain. The mean is
// unbiased (to float32 rounding); the variance is too large by (channel variance 0.5 / 2.0):
//   25 steps: +5.7% / +6.0%,  50: +4.9% / +2.4%,  100: +1.9% / +0.75%,  200: +0.58% / +0.21%,
//   400: +0.22% / +0.07%
// for 2M (midpoint). One standard error of a variance at 20000 samples is 1%, so the honest
// check runs 200 steps, where the bias is below 1 SE (at 50 steps it fails, for that reason).
TEST_CASE("DPM-Solver++ 2M SDE reproduces the data's mean and variance", "[dpm_solver][stat]") {
  DiscreteScheduleOptions so;
  so.spacing = TimestepSpacing::linspace_multistep;
  const DiscreteSchedule schedule(so);
  const int steps = 200;
  const double count = 20000;
  DPMSolverMultistepOptions o;
  o.algorithm = DPMSolverAlgorithm::sde_dpmsolver_pp;
  SECTION("2M") {}
  SECTION("3M (taylor)") {
    o.solver_order = 3;
    o.third_order = DPMSolverThirdOrder::taylor;
  }

  const Moments exact = chain_moments(schedule, o, steps);
  for (int c = 0; c < 2; ++c) {
    INFO("channel " << c << ": chain mean " << exact.mean[c] << ", chain variance "
                    << exact.variance[c] << " (data " << stat_variance[c] << ")");
    CHECK(std::abs(exact.mean[c] - stat_mean[c]) < std::sqrt(stat_variance[c] / count));
    CHECK(std::abs(exact.variance[c] - stat_variance[c]) <
          stat_variance[c] * std::sqrt(2.0 / (count - 1)));
  }

  // 8 x [2, 50, 50]: 20000 independent samples per channel.
  check_distribution(schedule, DPMSolverMultistep(o), Prediction::epsilon, steps);
}

TEST_CASE("DPM-Solver++ options are validated, naming the option and value",
          "[dpm_solver][errors]") {
  auto make = [](auto edit) {
    DPMSolverMultistepOptions o;
    edit(o);
    return DPMSolverMultistep(o);
  };
  using Catch::Contains;
  CHECK_THROWS_AS(make([](auto& o) { o.solver_order = 0; }), tstitch::invalid_argument);
  CHECK_THROWS_WITH(make([](auto& o) { o.solver_order = 4; }),
                    Contains("DPMSolverMultistepOptions::solver_order = 4"));
  CHECK_THROWS_WITH(make([](auto& o) { o.solver_order = 0; }), Contains("solver_order = 0"));
  CHECK_THROWS_WITH(make([](auto& o) {
                      o.thresholding = DynamicThresholding{1.0, 1.0};
                    }),
                    Contains("thresholding->ratio = 1"));
  CHECK_THROWS_WITH(make([](auto& o) {
                      o.thresholding = DynamicThresholding{0.0, 1.0};
                    }),
                    Contains("thresholding->ratio = 0"));
  CHECK_THROWS_WITH(make([](auto& o) {
                      o.thresholding = DynamicThresholding{NAN, 1.0};
                    }),
                    Contains("thresholding->ratio = nan"));
  CHECK_THROWS_WITH(make([](auto& o) {
                      o.thresholding = DynamicThresholding{0.9, -0.5};
                    }),
                    Contains("thresholding->sample_max_value = -0.5"));
  CHECK_THROWS_WITH(make([](auto& o) {
                      o.thresholding = DynamicThresholding{0.9, 0.0};
                    }),
                    Contains("thresholding->sample_max_value = 0"));
  CHECK_THROWS_WITH(make([](auto& o) {
                      o.algorithm = DPMSolverAlgorithm::sde_dpmsolver_pp;
                      o.solver_order = 3;
                    }),
                    Contains("third_order = diffusers"));
  CHECK_NOTHROW(make([](auto& o) {
    o.algorithm = DPMSolverAlgorithm::sde_dpmsolver_pp;
    o.solver_order = 3;
    o.third_order = DPMSolverThirdOrder::taylor;
  }));
  CHECK_NOTHROW(make([](auto& o) { o.thresholding = DynamicThresholding{0.87, 0.5}; }));
}

TEST_CASE("DPM-Solver++ allocates in begin() only", "[dpm_solver]") {
  // Every buffer (history ring, noise, thresholding scratch) is sized in begin(); update() only
  // rotates the ring's index. A second begin() with the same batch and shape reuses everything.
  DPMSolverMultistepOptions o;
  o.solver_order = 3;
  o.algorithm = DPMSolverAlgorithm::sde_dpmsolver_pp;
  o.third_order = DPMSolverThirdOrder::taylor;
  o.thresholding = DynamicThresholding{0.9, 2.0};
  DPMSolverMultistep solver(o);
  int allocations = 0;
  CountingBackend backend{{}, &allocations};
  const Trajectory trajectory = DiscreteSchedule().trajectory(12);
  Tensor x = harness_tensor(false), x0 = harness_tensor(true);
  solver.begin(backend, trajectory, 4, harness_shape);
  CHECK(allocations == 4); // three history slots and the noise
  for (int run = 0; run < 2; ++run) {
    solver.begin(backend, trajectory, 4, harness_shape);
    for (int i = 0; i < 12; ++i)
      solver.update(backend, SolverStep{i, 0, &trajectory, NoiseKey{1, 0, 0, 0}},
                    ModelOutput{x0.view(), x0.view(), x0.view(), Prediction::sample}, x.view());
  }
  CHECK(allocations == 4);
}
