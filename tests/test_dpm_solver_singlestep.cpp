// SPDX-License-Identifier: Apache-2.0
// Singlestep DPM-Solver(++) (DPMSolverSinglestep) and DPM++ 2S ancestral (DPMPP2SAncestral):
//  - the deterministic full-loop oracles of diffusers' test_scheduler_dpm_single.py with its
//    harness and tolerances, and extra diffusers 0.31.0 values for the other orders, solver types
//    and algorithms;
//  - convergence orders and sampled moments on analytic Gaussian data, DPM++ 2S a against
//    k-diffusion's loop written out in double;
//  - history policy at a model switch, option validation, allocation in begin() only.
#include <catch2/catch.hpp>

#include <array>
#include <cmath>
#include <cstdint>
#include <iomanip>
#include <limits>
#include <numbers>
#include <vector>

#include "support/gaussian_mixture.hpp"
#include "tstitch/sample.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/solver/dpm_solver_singlestep.hpp"
#include "tstitch/solver/dpmpp_2s_ancestral.hpp"
#include "tstitch/stitch/stitcher.hpp"

#include "support/diffusers_harness.hpp"
#include "support/gaussian_problems.hpp"
#include "support/tensor_checks.hpp"

using namespace tstitch;
using namespace tstitch::testing;
using analytic::DiagonalGaussian;
using analytic::ExactDenoiser;
using analytic::Labels;

static_assert(Solver<DPMSolverSinglestep> && Solver<DPMPP2SAncestral>);

namespace {

/// The test config of test_scheduler_dpm_single.py: linspace spacing, final_sigmas_type =
/// "sigma_min".
DiscreteScheduleOptions single_config() {
  DiscreteScheduleOptions o;
  o.spacing = TimestepSpacing::linspace_multistep;
  o.final_point = FinalPoint::first_train_step;
  return o;
}

DPMSolverSinglestepOptions
single(int order, DPMSolverType type = DPMSolverType::midpoint,
       DPMSolverSinglestepAlgorithm algorithm = DPMSolverSinglestepAlgorithm::dpmsolver_pp) {
  DPMSolverSinglestepOptions o;
  o.solver_order = order;
  o.solver_type = type;
  o.algorithm = algorithm;
  return o;
}

/// The harness loop with n steps, optionally resumed at start_step from the harness sample itself
/// (no noise added: diffusers' test_full_uneven_loop).
Result harness_loop(const DiscreteScheduleOptions& schedule, DPMSolverSinglestep solver,
                    Prediction prediction, int n, int start_step = 0) {
  auto model = harness_model(prediction);
  Tensor x = harness_tensor(false);
  SampleOptions options;
  options.steps = n;
  options.start_step = start_step;
  sample(model, DiscreteSchedule(schedule), solver, x, NoCondition{}, options);
  return abs_sum(x);
}

} // namespace

// ---- diffusers parity ---------------------------------------------------------------------------

TEST_CASE("DPM-Solver singlestep full loops match diffusers' DPMSolverSinglestepSchedulerTest",
          "[parity][dpm_singlestep]") {
  DiscreteScheduleOptions schedule = single_config();
  const DPMSolverSinglestepOptions solver = single(2);
  SECTION("test_full_loop_no_noise (and test_switch, the same loop after a config round trip)") {
    const Result r = full_loop(schedule, DPMSolverSinglestep(solver), Prediction::epsilon);
    INFO("mean " << std::setprecision(8) << r.mean);
    CHECK(std::abs(r.mean - 0.2791) < 1e-3);
  }
  SECTION("test_full_loop_with_karras") {
    schedule.sigma_spacing = SigmaSpacing::karras;
    const Result r = full_loop(schedule, DPMSolverSinglestep(solver), Prediction::epsilon);
    INFO("mean " << std::setprecision(8) << r.mean);
    CHECK(std::abs(r.mean - 0.2248) < 1e-3);
  }
  SECTION("test_full_loop_with_v_prediction") {
    const Result r = full_loop(schedule, DPMSolverSinglestep(solver), Prediction::v);
    INFO("mean " << std::setprecision(8) << r.mean);
    CHECK(std::abs(r.mean - 0.1453) < 1e-3);
  }
  SECTION("test_full_loop_with_karras_and_v_prediction") {
    schedule.sigma_spacing = SigmaSpacing::karras;
    const Result r = full_loop(schedule, DPMSolverSinglestep(solver), Prediction::v);
    INFO("mean " << std::setprecision(8) << r.mean);
    CHECK(std::abs(r.mean - 0.0649) < 1e-3);
  }
  SECTION("test_full_loop_with_noise (t_start = 5: the first step is lowered to order 1)") {
    const Result r = full_loop(schedule, DPMSolverSinglestep(solver), Prediction::epsilon, 5);
    INFO(std::setprecision(8) << "sum " << r.sum << ", mean " << r.mean);
    CHECK(std::abs(r.sum - 269.2187) < 1e-2);
    CHECK(std::abs(r.mean - 0.3505) < 1e-3);
  }
  SECTION("test_full_uneven_loop (n = 50 from timesteps[3], no noise added)") {
    const Result r =
        harness_loop(schedule, DPMSolverSinglestep(solver), Prediction::epsilon, 50, 3);
    INFO("mean " << std::setprecision(8) << r.mean);
    CHECK(std::abs(r.mean - 0.2574) < 1e-3);
  }
}

TEST_CASE("DPM-Solver singlestep: orders, solver types and algorithms (diffusers 0.31.0 values)",
          "[parity][dpm_singlestep]") {
  // Means of |x| of the harness loop with the test config, generated with diffusers 0.31.0
  // (torch 1.13, CPU); n = 10 lowers order 3 to [1, 2, 3] x 3 + [1] (10 % 3 != 0).
  struct Case {
    DPMSolverSinglestepAlgorithm algorithm;
    DPMSolverType type;
    int order, n;
    double mean;
  };
  using A = DPMSolverSinglestepAlgorithm;
  using T = DPMSolverType;
  const Case cases[] = {
      {A::dpmsolver_pp, T::midpoint, 1, 10, 0.224302},
      {A::dpmsolver_pp, T::midpoint, 2, 12, 0.271481},
      {A::dpmsolver_pp, T::midpoint, 3, 10, 0.246216},
      {A::dpmsolver_pp, T::midpoint, 3, 12, 0.358592},
      {A::dpmsolver_pp, T::heun, 2, 10, 0.324455},
      {A::dpmsolver_pp, T::heun, 2, 12, 0.303350},
      {A::dpmsolver_pp, T::heun, 3, 10, 0.247924},
      {A::dpmsolver_pp, T::heun, 3, 12, 0.208192},
      {A::dpmsolver, T::midpoint, 1, 12, 0.229832},
      {A::dpmsolver, T::midpoint, 2, 10, 0.378880},
      {A::dpmsolver, T::midpoint, 2, 12, 0.340376},
      {A::dpmsolver, T::midpoint, 3, 10, 0.243598},
      {A::dpmsolver, T::midpoint, 3, 12, 0.257814},
      {A::dpmsolver, T::heun, 2, 10, 0.281636},
      {A::dpmsolver, T::heun, 2, 12, 0.274918},
      {A::dpmsolver, T::heun, 3, 10, 0.243264},
      {A::dpmsolver, T::heun, 3, 12, 0.244461},
  };
  for (const Case& c : cases) {
    const Result r =
        harness_loop(single_config(), DPMSolverSinglestep(single(c.order, c.type, c.algorithm)),
                     Prediction::epsilon, c.n);
    INFO("dpmsolver " << (c.algorithm == A::dpmsolver) << ", heun " << (c.type == T::heun)
                      << ", order " << c.order << ", n " << c.n << ": mean " << std::setprecision(8)
                      << r.mean);
    CHECK(std::abs(r.mean - c.mean) < 1e-3);
  }
  SECTION("lower_order_final, order 3, n = 12: [1, 2, 3] x 3 + [1, 2, 1]") {
    DPMSolverSinglestepOptions o = single(3);
    o.lower_order_final = true;
    const Result r = harness_loop(single_config(), DPMSolverSinglestep(o), Prediction::epsilon, 12);
    CHECK(std::abs(r.mean - 0.244377) < 1e-3);
  }
  SECTION("final_sigmas_type = \"zero\" forces lower_order_final") {
    DiscreteScheduleOptions clean = single_config();
    clean.final_point = FinalPoint::clean;
    CHECK(
        std::abs(harness_loop(clean, DPMSolverSinglestep(single(3)), Prediction::epsilon, 10).mean -
                 0.242879) < 1e-3);
    CHECK(std::abs(harness_loop(clean, DPMSolverSinglestep(single(2)), Prediction::v, 10).mean -
                   0.078060) < 1e-3);
  }
  SECTION("karras, order 3, heun, n = 12") {
    DiscreteScheduleOptions karras = single_config();
    karras.sigma_spacing = SigmaSpacing::karras;
    const Result r =
        harness_loop(karras, DPMSolverSinglestep(single(3, T::heun)), Prediction::epsilon, 12);
    CHECK(std::abs(r.mean - 0.275525) < 1e-3);
  }
  SECTION("thresholding (ratio 0.87, sample_max_value 0.5)") {
    DPMSolverSinglestepOptions o = single(2);
    o.thresholding = DynamicThresholding{0.87, 0.5};
    CHECK(std::abs(
              harness_loop(single_config(), DPMSolverSinglestep(o), Prediction::epsilon, 10).mean -
              0.964749) < 1e-3);
    o = single(3, T::heun);
    o.thresholding = DynamicThresholding{0.87, 0.5};
    CHECK(std::abs(
              harness_loop(single_config(), DPMSolverSinglestep(o), Prediction::sample, 12).mean -
              1.106138) < 1e-3);
  }
}

TEST_CASE("DPM-Solver singlestep on custom timesteps equals the default schedule",
          "[parity][dpm_singlestep]") {
  // test_custom_timesteps
  for (FinalPoint final_point : {FinalPoint::first_train_step, FinalPoint::clean})
    for (bool lower_order_final : {true, false})
      for (Prediction prediction : {Prediction::epsilon, Prediction::sample, Prediction::v}) {
        DiscreteScheduleOptions o = single_config();
        o.final_point = final_point;
        DPMSolverSinglestepOptions so = single(2);
        so.lower_order_final = lower_order_final;
        const DiscreteSchedule schedule(o);
        const Tensor a = full_loop_latents(schedule, DPMSolverSinglestep(so), prediction);
        const Tensor b = full_loop_latents(CustomTimesteps{&schedule, schedule.timesteps(10)},
                                           DPMSolverSinglestep(so), prediction);
        INFO("prediction " << to_string(prediction) << ", lower_order_final " << lower_order_final
                           << ", final point "
                           << (final_point == FinalPoint::clean ? "zero" : "sigma_min"));
        CHECK(abs_difference(a, b) < 1e-5);
      }
}

TEST_CASE("DPM-Solver singlestep never produces NaN over orders, types and predictions",
          "[parity][dpm_singlestep]") {
  // test_solver_order_and_type (sde-dpmsolver++ is not offered)
  for (auto algorithm :
       {DPMSolverSinglestepAlgorithm::dpmsolver_pp, DPMSolverSinglestepAlgorithm::dpmsolver})
    for (DPMSolverType type : {DPMSolverType::midpoint, DPMSolverType::heun})
      for (int order : {1, 2, 3})
        for (Prediction prediction : {Prediction::epsilon, Prediction::sample}) {
          INFO("dpmsolver " << (algorithm == DPMSolverSinglestepAlgorithm::dpmsolver) << ", heun "
                            << (type == DPMSolverType::heun) << ", order " << order);
          CHECK(all_finite(full_loop_latents(DiscreteSchedule(single_config()),
                                             DPMSolverSinglestep(single(order, type, algorithm)),
                                             prediction)));
        }
  SECTION("dpmsolver into sigma = 0 (diffusers refuses it): the limit, alpha x0") {
    DiscreteScheduleOptions clean = single_config();
    clean.final_point = FinalPoint::clean;
    for (int order : {1, 2, 3}) {
      DPMSolverSinglestep solver(
          single(order, DPMSolverType::heun, DPMSolverSinglestepAlgorithm::dpmsolver));
      CHECK(all_finite(full_loop_latents(DiscreteSchedule(clean), solver, Prediction::epsilon)));
      CHECK(solver.last_order() == 1);
    }
  }
  SECTION("from pure noise (alpha = 0): the group's first step is the only one from there") {
    for (int order : {2, 3})
      CHECK(all_finite(
          sample_from_pure_noise(DPMSolverSinglestep(single(order, DPMSolverType::heun)))));
  }
}

TEST_CASE("DPM-Solver singlestep follows diffusers' order list", "[dpm_singlestep]") {
  using V = std::vector<int>;
  CHECK(DPMSolverSinglestep::order_list(10, 2, false) == V{1, 2, 1, 2, 1, 2, 1, 2, 1, 2});
  CHECK(DPMSolverSinglestep::order_list(10, 2, true) == V{1, 2, 1, 2, 1, 2, 1, 2, 1, 1});
  CHECK(DPMSolverSinglestep::order_list(7, 2, true) == V{1, 2, 1, 2, 1, 2, 1});
  CHECK(DPMSolverSinglestep::order_list(9, 3, true) == V{1, 2, 3, 1, 2, 3, 1, 2, 1});
  CHECK(DPMSolverSinglestep::order_list(10, 3, true) == V{1, 2, 3, 1, 2, 3, 1, 2, 3, 1});
  CHECK(DPMSolverSinglestep::order_list(11, 3, true) == V{1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2});
  CHECK(DPMSolverSinglestep::order_list(4, 1, true) == V{1, 1, 1, 1});

  auto orders = [](DPMSolverSinglestepOptions options, DiscreteScheduleOptions schedule, int n,
                   int start_step) {
    DPMSolverSinglestep solver(options);
    auto model = harness_model(Prediction::epsilon);
    Tensor x = harness_tensor(false);
    V seen;
    SampleOptions so;
    so.steps = n;
    so.start_step = start_step;
    so.on_step = [&](const StepRecord&) {
      seen.push_back(solver.last_order());
      return true;
    };
    sample(model, DiscreteSchedule(schedule), solver, x, NoCondition{}, so);
    return seen;
  };
  // 12 % 3 == 0 and a sigma_min end: no lowering.
  CHECK(orders(single(3), single_config(), 12, 0) == V{1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3});
  // A run resumed inside a group lowers the order to the outputs made since (diffusers'
  // model_outputs[-order] is None).
  CHECK(orders(single(3), single_config(), 12, 1) == V{1, 2, 1, 2, 3, 1, 2, 3, 1, 2, 3});
  CHECK(orders(single(3), single_config(), 12, 2) == V{1, 1, 2, 3, 1, 2, 3, 1, 2, 3});
  // A clean end forces lower_order_final.
  DiscreteScheduleOptions clean = single_config();
  clean.final_point = FinalPoint::clean;
  CHECK(orders(single(2), clean, 8, 0) == V{1, 2, 1, 2, 1, 2, 1, 1});
}

// ---- convergence --------------------------------------------------------------------------------

namespace {

/// The VP cosine schedule of CosineSchedule with points uniform in lambda = log(alpha / sigma),
/// from t = 0.8 to t = 0.2 (sigma > 0 at the end). Singlestep DPM-Solver-3 is third order where
/// the points inside a group sit at 1/3 and 2/3 of its lambda step: exactly so here, and up to
/// O(h) on CosineSchedule's points uniform in t.
struct LambdaUniformSchedule {
  static double lambda_at(double t) { return std::log(1.0 / std::tan(std::numbers::pi / 2 * t)); }
  TimePoint point(double t) const { return CosineSchedule{}.point(t); }
  double timestep_at(double ve_sigma) const { return CosineSchedule{}.timestep_at(ve_sigma); }
  Trajectory trajectory(int n) const {
    Trajectory trajectory{{}, 1.0};
    const double from = lambda_at(0.8), to = lambda_at(0.2);
    for (int i = 0; i <= n; ++i) {
      const double lambda = from + (to - from) * static_cast<double>(i) / n;
      trajectory.points.push_back(point(timestep_at(std::exp(-lambda))));
    }
    return trajectory;
  }
};

/// RMS error against the exact flow at the end of an n-step run on LambdaUniformSchedule.
double lambda_uniform_error(DPMSolverSinglestep solver, int n) {
  const LambdaUniformSchedule schedule;
  const DiagonalGaussian data = curved_data();
  ExactDenoiser model(curved_shape, data, Prediction::epsilon);
  Tensor x(8, curved_shape);
  fill_initial_noise(x, 17);
  const Tensor x_start = x;
  SampleOptions options;
  options.steps = n;
  sample(model, schedule, solver, x, Labels{}, options);
  return rms_distance(x, exact_flow(data, x_start, schedule.trajectory(n), n));
}

} // namespace

// Orders at the middle of the run (midpoint_error) on CosineSchedule, n = 12 .. 96, so the middle
// (6, 12, 24, 48) closes a group of both 2S and 3S: points inside a group carry lower-order
// values. 3S midpoint with noise prediction (dpmsolver) measures 2.5 there (errors 7.8e-5,
// 1.3e-5, 2.4e-6, 4.3e-7: still pre-asymptotic when float32 rounding, 2e-7, takes over), so the
// 3S orders are measured on points uniform in lambda.
TEST_CASE("DPM-Solver singlestep converges at its order on analytic Gaussian data",
          "[dpm_singlestep][order]") {
  auto order_of = [](DPMSolverSinglestepOptions o) {
    return measured_order([o](int n) { return midpoint_error(DPMSolverSinglestep(o), n); },
                          {12, 24, 48, 96});
  };
  using A = DPMSolverSinglestepAlgorithm;
  for (A algorithm : {A::dpmsolver_pp, A::dpmsolver}) {
    INFO("dpmsolver " << (algorithm == A::dpmsolver));
    const double first = order_of(single(1, DPMSolverType::midpoint, algorithm));
    INFO("1S: measured order " << first);
    CHECK(first == Approx(1.0).margin(0.25));
    for (DPMSolverType type : {DPMSolverType::midpoint, DPMSolverType::heun}) {
      const double second = order_of(single(2, type, algorithm));
      INFO("2S, heun " << (type == DPMSolverType::heun) << ": measured order " << second);
      CHECK(second == Approx(2.0).margin(0.25));
    }
    const double third = measured_order(
        [algorithm](int n) {
          return lambda_uniform_error(
              DPMSolverSinglestep(single(3, DPMSolverType::midpoint, algorithm)), n);
        },
        {6, 12, 24, 48});
    INFO("3S midpoint, uniform in lambda: measured order " << third);
    CHECK(third == Approx(3.0).margin(0.25));
  }
  const double third = order_of(single(3));
  INFO("3S midpoint (dpmsolver++), uniform in t: measured order " << third);
  CHECK(third == Approx(3.0).margin(0.25));
}

// ---- history at a model switch ------------------------------------------------------------------

TEST_CASE("DPM-Solver singlestep history at a model switch: keep and reset",
          "[dpm_singlestep][stitch]") {
  auto model = harness_model(Prediction::epsilon);
  TrajectoryStitcher stitcher(model, model, 0.5); // identical models, switch before step 5
  SampleOptions options;
  options.steps = 10;
  for (int order : {2, 3}) {
    INFO("order " << order);
    const auto runs = switch_runs<DPMSolverSinglestep>(
        model, stitcher, single(order), single_config(), options, 5,
        [](const DPMSolverSinglestep& s) { return s.last_order(); });
    // Step 5 closes a group in both order lists ([1, 2, 1, 2, 1, 2, ...], [1, 2, 3, 1, 2, 3, ...]).
    CHECK(runs.kept_switches == 1);
    CHECK(runs.kept_after_step.at(5) == (order == 2 ? 2 : 3));
    CHECK(bit_identical(runs.kept, runs.alone));
    // reset: step 5 starts a new group at first order, as a run started there.
    CHECK(runs.reset_switches == 1);
    CHECK(runs.reset_after_step.at(5) == 1);
    CHECK(bit_identical(runs.reset, runs.restarted));
    CHECK_FALSE(bit_identical(runs.reset, runs.alone));
  }
}

// ---- DPM++ 2S ancestral -------------------------------------------------------------------------

namespace {

/// The host backend with every noise draw replaced by a constant: `value` at step `probe` (every
/// step if probe < 0), 0 elsewhere.
struct ConstantNoiseBackend : HostBackend {
  int probe = -1;
  float value = 1.0f;
  void fill_normal(View out, NoiseKey key) const {
    fill(out, probe < 0 || static_cast<int>(key.step) == probe ? value : 0.0f);
  }
};

/// k-diffusion's sample_dpmpp_2s_ancestral written out in double for one element of Gaussian
/// data (mean m, variance v), whose exact denoiser is x0(y, s) = m + v / (v + s^2) (y - m), with
/// the noise draw `z` at every step. y = x / alpha in k-diffusion's coordinates.
double k_diffusion_2s_ancestral(double y, const std::vector<double>& sigmas, double m, double v,
                                double eta, double z) {
  auto denoise = [&](double x, double s) { return m + v / (v + s * s) * (x - m); };
  for (std::size_t i = 0; i + 1 < sigmas.size(); ++i) {
    const double s = sigmas[i], s_next = sigmas[i + 1];
    const double denoised = denoise(y, s);
    double s_up =
        std::min(s_next, eta * std::sqrt(s_next * s_next * (s * s - s_next * s_next) / (s * s)));
    if (eta == 0)
      s_up = 0;
    const double s_down = std::sqrt(s_next * s_next - s_up * s_up);
    if (s_down == 0) {
      y = y + (y - denoised) / s * (s_down - s);
    } else {
      const double t = -std::log(s), t_next = -std::log(s_down), h = t_next - t;
      const double t_mid = t + 0.5 * h;
      const double y2 = std::exp(-t_mid) / std::exp(-t) * y - std::expm1(-0.5 * h) * denoised;
      const double denoised2 = denoise(y2, std::exp(-t_mid));
      y = std::exp(-t_next) / std::exp(-t) * y - std::expm1(-h) * denoised2;
    }
    if (s_next > 0)
      y += z * s_up;
  }
  return y;
}

Tensor run_2s(DPMPP2SAncestralOptions options, int n, float noise, int probe = -1,
              const Shape shape = curved_shape) {
  const DiagonalGaussian data = shape == curved_shape ? curved_data() : channel_gaussians(shape);
  ExactDenoiser model(shape, data, Prediction::epsilon);
  Tensor x(2, shape);
  fill_initial_noise(x, 23);
  DPMPP2SAncestral solver(options);
  ConstantNoiseBackend backend;
  backend.probe = probe;
  backend.value = noise;
  Sampler<ConstantNoiseBackend> sampler(backend);
  SampleOptions so;
  so.steps = n;
  sampler.run(model, cosine, solver, x.view(), Labels{}, nullptr, so);
  return x;
}

} // namespace

TEST_CASE("DPM++ 2S a matches k-diffusion's sample_dpmpp_2s_ancestral", "[dpmpp_2s_a]") {
  // The continuous cosine schedule maps sigma to time and back exactly, so the model sees the
  // latents of k-diffusion's midpoint at their own point; the noise is a constant 0.7 at every
  // step on both sides.
  const int n = 12;
  const Trajectory trajectory = cosine.trajectory(n);
  std::vector<double> sigmas;
  for (const TimePoint& p : trajectory.points)
    sigmas.push_back(p.ve_sigma());
  const DiagonalGaussian data = curved_data();
  Tensor x_start(2, curved_shape);
  fill_initial_noise(x_start, 23);
  for (double eta : {0.0, 0.5, 1.0}) {
    DPMPP2SAncestralOptions o;
    o.eta = eta;
    const Tensor x = run_2s(o, n, 0.7f);
    double worst = 0;
    for (std::int64_t i = 0; i < x.numel(); ++i) {
      const auto e = static_cast<std::size_t>(i % curved_shape.numel());
      const double y = k_diffusion_2s_ancestral(x_start[i] / trajectory[0].alpha, sigmas,
                                                data.mean[e], data.variance[e], eta, 0.7);
      worst = std::max(worst, std::abs(x[i] - y)); // alpha = 1 at the clean end
    }
    INFO("eta " << eta << ": largest difference " << worst);
    CHECK(worst < 2e-5);
  }
}

TEST_CASE("DPM++ 2S a with eta = 0 is deterministic and second order", "[dpmpp_2s_a][order]") {
  DPMPP2SAncestralOptions o;
  o.eta = 0;
  CHECK(bit_identical(run_2s(o, 10, 0.0f), run_2s(o, 10, 5.0f))); // no noise is drawn
  const double order = measured_order([o](int n) { return midpoint_error(DPMPP2SAncestral(o), n); },
                                      {16, 32, 64, 128});
  INFO("measured order " << order);
  CHECK(order == Approx(2.0).margin(0.25));
}

TEST_CASE("DPM++ 2S a evaluates at the log-midpoint, or at the next point as stable-diffusion.cpp",
          "[dpmpp_2s_a]") {
  Trajectory trajectory = cosine.trajectory(4);
  trajectory.point_at = [](double t) { return cosine.point(t); };
  trajectory.timestep_at = [](double s) { return static_cast<double>(cosine.timestep_at(s)); };
  Tensor x(1, curved_shape), x0(1, curved_shape);
  fill_initial_noise(x, 2);
  HostBackend backend;
  for (auto where : {DPMPP2SSecondEvaluation::midpoint, DPMPP2SSecondEvaluation::next_point}) {
    DPMPP2SAncestralOptions o;
    o.second_evaluation = where;
    DPMPP2SAncestral solver(o);
    solver.begin(backend, trajectory, 1, curved_shape);
    CHECK(solver.evaluations(0) == 2);
    CHECK(solver.evaluations(3) == 1); // into sigma = 0: s_down = 0
    SolverStep step{1, 0, &trajectory, NoiseKey{}};
    solver.update(backend, step, ModelOutput{x0.view(), x0.view(), x0.view(), Prediction::sample},
                  x.view());
    step.evaluation = 1;
    const TimePoint p = solver.evaluation_point(step);
    // eta = 1: s_down = s_next^2 / s, so the midpoint in lambda is sqrt(s s_down) = s_next.
    const double s = trajectory[1].ve_sigma(), s_next = trajectory[2].ve_sigma();
    const double s_down = s_next * s_next / s;
    if (where == DPMPP2SSecondEvaluation::midpoint)
      CHECK(p.ve_sigma() == Approx(std::sqrt(s * s_down)).epsilon(1e-12));
    else
      CHECK(p.timestep == trajectory[2].timestep);
  }
}

// Finite-step bias of the exact chain (affine in x_T and the draws, measured with probe noise):
// on the cosine schedule the variance is off by less than one standard error at 20000 samples
// (1%) from 100 steps on; the check runs 200.
TEST_CASE("DPM++ 2S a reproduces the data's mean and variance", "[dpmpp_2s_a][stat]") {
  const int steps = 200;
  const Shape one{2, 1, 1};
  for (double eta : {1.0, 0.5}) {
    DPMPP2SAncestralOptions o;
    o.eta = eta;
    // Exact chain moments: x_final = a x_T + b + sum_i w_i z_i per element.
    const DiagonalGaussian data = channel_gaussians(one);
    ExactDenoiser model(one, data, Prediction::epsilon);
    auto run = [&](float x_t, int probe) {
      Tensor x(1, one);
      x[0] = x[1] = x_t;
      to_marginal(x, data, cosine.trajectory(steps)[0]);
      DPMPP2SAncestral solver(o);
      ConstantNoiseBackend backend;
      backend.probe = probe;
      backend.value = probe < 0 ? 0.0f : 1.0f;
      Sampler<ConstantNoiseBackend> sampler(backend);
      SampleOptions so;
      so.steps = steps;
      sampler.run(model, cosine, solver, x.view(), Labels{}, nullptr, so);
      return std::array<double, 2>{x[0], x[1]};
    };
    const auto mean = run(0.0f, -1), unit = run(1.0f, -1);
    std::array<double, 2> variance{};
    for (std::size_t c = 0; c < 2; ++c)
      variance[c] = (unit[c] - mean[c]) * (unit[c] - mean[c]);
    for (int i = 0; i < steps; ++i) {
      const auto probed = run(0.0f, i);
      for (std::size_t c = 0; c < 2; ++c)
        variance[c] += (probed[c] - mean[c]) * (probed[c] - mean[c]);
    }
    for (std::size_t c = 0; c < 2; ++c) {
      INFO("eta " << eta << ", channel " << c << ": chain mean " << mean[c] << ", variance "
                  << variance[c] << " (data " << stat_variance[c] << ")");
      CHECK(std::abs(mean[c] - stat_mean[c]) < std::sqrt(stat_variance[c] / 20000));
      CHECK(std::abs(variance[c] - stat_variance[c]) < stat_variance[c] * std::sqrt(2.0 / 19999));
    }
    check_distribution(cosine, DPMPP2SAncestral(o), Prediction::epsilon, steps);
  }
}

TEST_CASE("DPM++ 2S a is reproducible per seed and draws different noise per seed",
          "[dpmpp_2s_a]") {
  auto run = [](std::uint64_t seed) {
    ExactDenoiser model(curved_shape, curved_data(), Prediction::epsilon);
    Tensor x(2, curved_shape);
    fill_initial_noise(x, 4);
    DPMPP2SAncestral solver;
    SampleOptions so;
    so.steps = 8;
    so.seed = seed;
    sample(model, cosine, solver, x, Labels{}, so);
    return x;
  };
  CHECK(bit_identical(run(4), run(4)));
  CHECK_FALSE(bit_identical(run(4), run(5)));
  CHECK(all_finite(sample_from_pure_noise(DPMPP2SAncestral{})));
}

// ---- resources and errors -----------------------------------------------------------------------

TEST_CASE("DPM-Solver singlestep and DPM++ 2S a allocate in begin() only",
          "[dpm_singlestep][dpmpp_2s_a]") {
  auto count = [](auto solver, Trajectory trajectory, int expected_at_begin) {
    int allocations = 0;
    CountingBackend backend{{}, &allocations};
    Tensor x(2, curved_shape), x0(2, curved_shape);
    fill_initial_noise(x, 1);
    fill_initial_noise(x0, 2);
    solver.begin(backend, trajectory, 2, curved_shape);
    CHECK(allocations == expected_at_begin);
    for (int run = 0; run < 2; ++run) {
      solver.begin(backend, trajectory, 2, curved_shape);
      for (int i = 0; i < trajectory.steps(); ++i) {
        SolverStep step{i, 0, &trajectory, NoiseKey{1, 0, static_cast<std::uint32_t>(i), 1}};
        for (int e = 0; e < evaluations_of(solver, i); ++e) {
          step.evaluation = e;
          solver.update(backend, step, ModelOutput{x0, x0, x0, Prediction::sample}, x);
        }
      }
    }
    CHECK(allocations == expected_at_begin);
  };
  Trajectory trajectory = cosine.trajectory(9);
  trajectory.point_at = [](double t) { return cosine.point(t); };
  trajectory.timestep_at = [](double s) { return static_cast<double>(cosine.timestep_at(s)); };
  DPMSolverSinglestepOptions o = single(3);
  o.thresholding = DynamicThresholding{0.9, 2.0};
  count(DPMSolverSinglestep(o), trajectory, 4); // three outputs and the anchor
  count(DPMSolverSinglestep(single(1)), trajectory, 1);
  count(DPMPP2SAncestral{}, trajectory, 2); // the midpoint input and the noise
}

TEST_CASE("DPM-Solver singlestep and DPM++ 2S a validate their options",
          "[dpm_singlestep][dpmpp_2s_a][errors]") {
  using Catch::Contains;
  auto make = [](auto edit) {
    DPMSolverSinglestepOptions o;
    edit(o);
    return DPMSolverSinglestep(o);
  };
  CHECK_THROWS_AS(make([](auto& o) { o.solver_order = 0; }), tstitch::invalid_argument);
  CHECK_THROWS_WITH(make([](auto& o) { o.solver_order = 4; }),
                    Contains("DPMSolverSinglestepOptions::solver_order = 4"));
  CHECK_THROWS_WITH(make([](auto& o) {
                      o.thresholding = DynamicThresholding{1.0, 1.0};
                    }),
                    Contains("DPMSolverSinglestepOptions::thresholding->ratio = 1"));
  CHECK_THROWS_WITH(make([](auto& o) {
                      o.algorithm = DPMSolverSinglestepAlgorithm::dpmsolver;
                      o.thresholding = DynamicThresholding{};
                    }),
                    Contains("DPMSolverSinglestepOptions::algorithm = dpmsolver"));
  CHECK_THROWS_WITH(DPMPP2SAncestral(DPMPP2SAncestralOptions{-0.5}),
                    Contains("DPMPP2SAncestralOptions::eta = -0.5"));
  CHECK_THROWS_WITH(DPMPP2SAncestral(DPMPP2SAncestralOptions{1.0, NAN}),
                    Contains("DPMPP2SAncestralOptions::s_noise = nan"));
  CHECK_THROWS_WITH(
      DPMPP2SAncestral(DPMPP2SAncestralOptions{std::numeric_limits<double>::infinity()}),
      Contains("DPMPP2SAncestralOptions::eta = inf"));
  {
    DPMPP2SAncestral s;
    HostBackend backend;
    CHECK_THROWS_WITH(DPMPP2SAncestral().evaluations(0), Contains("step = 0")); // before begin()
    CHECK_THROWS_WITH(s.begin(backend, cosine.trajectory(4), 1, curved_shape),
                      Contains("point_at"));
  }
}
