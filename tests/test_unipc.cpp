// SPDX-License-Identifier: Apache-2.0
// UniPC: the diffusers oracles of ../shared/reference/diffusers-parity.md §4.8 (2-D and 1-D
// harness, §1) with diffusers' tolerances, the relational tests of §6, convergence order on
// analytic Gaussian data, history policy at a model switch, and option validation.
#include <catch2/catch.hpp>

#include <bit>
#include <cmath>
#include <cstdint>
#include <functional>
#include <iomanip>
#include <numbers>
#include <tuple>
#include <utility>
#include <vector>

#include "tstitch/analytic/gaussian_mixture.hpp"
#include "tstitch/sample.hpp"
#include "tstitch/schedule/continuous.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/solver/dpm_solver.hpp"
#include "tstitch/solver/unipc.hpp"
#include "tstitch/stitch/stitcher.hpp"

using namespace tstitch;
using analytic::DiagonalGaussian;
using analytic::ExactDenoiser;
using analytic::Labels;

static_assert(Solver<UniPC>);

namespace {

// ---- diffusers' harness (after test_ddim_parity.cpp) ----------------------------------------

/// (4, 3, 8, 8) for the 2-D class, (4, 3, 8) = [3, 1, 8] per sample for the 1-D class.
const Shape shape_2d{3, 8, 8};
const Shape shape_1d{3, 1, 8};

/// diffusers' deterministic harness sample: the element at (b, c, h, w) holds k / count with
/// k = ((c*H + h)*W + w)*4 + b (laid out (C, H, W, B), then permuted); the noise holds
/// (count - 1 - k) / count. For the 1-D class H = 1: k = (c*8 + w)*4 + b over 96 values.
Tensor harness_tensor(Shape shape, bool reversed) {
  Tensor t(4, shape);
  const auto count = static_cast<int>(4 * shape.numel());
  for (int b = 0; b < 4; ++b)
    for (int c = 0; c < shape.channels; ++c)
      for (int h = 0; h < shape.height; ++h)
        for (int w = 0; w < shape.width; ++w) {
          const auto k = static_cast<int>(((c * shape.height + h) * shape.width + w) * 4 + b);
          t.at(b, c, h, w) =
              static_cast<float>(reversed ? count - 1 - k : k) / static_cast<float>(count);
        }
  return t;
}

/// diffusers' dummy model: sample * t / (t + 1), in float32, t cast to float32 first.
auto harness_model(Prediction prediction, Shape shape) {
  return make_denoiser(prediction, shape,
                       [](ConstView x, const StepContext& ctx, const NoCondition&, View out) {
                         const auto t = static_cast<float>(ctx.point.timestep);
                         HostBackend{}.map(
                             out, [t](float v) { return v * t / (t + 1.0f); }, x);
                       });
}

struct Result {
  double sum, mean;
};

Result abs_sum(const Tensor& x) {
  double sum = 0; // accumulated in double (§2.3)
  for (std::int64_t i = 0; i < x.numel(); ++i)
    sum += std::abs(static_cast<double>(x[i]));
  return {sum, sum / static_cast<double>(x.numel())};
}

/// The §4.8 test config: linspace spacing, final_sigmas_type = "sigma_min".
DiscreteScheduleOptions unipc_config() {
  DiscreteScheduleOptions o;
  o.spacing = TimestepSpacing::linspace_multistep;
  o.final_point = FinalPoint::first_train_step;
  return o;
}

/// Loop P (or N from start_step, §1.2) with n = 10, returning the final latents.
Tensor full_loop_latents(const DiscreteSchedule& schedule, const UniPCOptions& solver_options,
                         Prediction prediction, Shape shape, int start_step = -1) {
  auto model = harness_model(prediction, shape);
  UniPC solver(solver_options);
  Tensor x = harness_tensor(shape, false);
  SampleOptions options;
  options.steps = 10;
  if (start_step >= 0) { // "with_noise": add_noise at the first remaining timestep
    add_noise(x, harness_tensor(shape, true), schedule.trajectory(10)[start_step]);
    options.start_step = start_step;
  }
  sample(model, schedule, solver, x, NoCondition{}, options);
  return x;
}

Result full_loop(DiscreteScheduleOptions schedule_options, Prediction prediction, Shape shape,
                 int start_step = -1) {
  return abs_sum(full_loop_latents(DiscreteSchedule(schedule_options), UniPCOptions{}, prediction,
                                   shape, start_step));
}

bool all_finite(const Tensor& x) {
  for (std::int64_t i = 0; i < x.numel(); ++i)
    if (!std::isfinite(x[i]))
      return false;
  return true;
}

bool bit_identical(const Tensor& a, const Tensor& b) {
  if (a.numel() != b.numel())
    return false;
  for (std::int64_t i = 0; i < a.numel(); ++i)
    if (std::bit_cast<std::uint32_t>(a[i]) != std::bit_cast<std::uint32_t>(b[i]))
      return false;
  return true;
}

// ---- analytic Gaussian data (after test_solvers.cpp) ----------------------------------------

/// Variance-preserving cosine schedule, alpha = cos(pi t / 2), sigma = sin(pi t / 2), uniform in
/// t from t_max down to 0 (sigma = 0). t_max = 0.8 keeps alpha >= 0.31 at the start, so the
/// steps in lambda stay comparable along the way (near t = 1 they grow like 1 / (1 - t)).
struct CosineSchedule {
  double t_max = 0.8;
  TimePoint point(double t) const {
    return {t, std::cos(std::numbers::pi / 2 * t), std::sin(std::numbers::pi / 2 * t)};
  }
  double timestep_at(double ve_sigma) const { return std::atan(ve_sigma) * 2 / std::numbers::pi; }
  Trajectory trajectory(int n) const {
    Trajectory trajectory{{}, 1.0};
    for (int i = 0; i <= n; ++i)
      trajectory.points.push_back(point(t_max * (1.0 - static_cast<double>(i) / n)));
    return trajectory;
  }
};

const Shape shape{3, 4, 4};

DiagonalGaussian curved_data() {
  // Variances far from 1 bend the probability-flow trajectories.
  DiagonalGaussian g;
  for (std::int64_t e = 0; e < shape.numel(); ++e) {
    g.mean.push_back(0.8 * std::sin(1.3 * static_cast<double>(e)));
    g.variance.push_back(0.02 + 0.08 * static_cast<double>(e % 6));
  }
  return g;
}

/// The exact probability-flow solution at trajectory point k from x_start at point 0.
Tensor exact_flow(const DiagonalGaussian& data, const Tensor& x_start, const Trajectory& trajectory,
                  int k) {
  Tensor exact(x_start.batch(), shape);
  for (std::int64_t i = 0; i < exact.numel(); ++i)
    exact[i] = static_cast<float>(data.flow(static_cast<std::size_t>(i % shape.numel()), x_start[i],
                                            trajectory[0], trajectory[k]));
  return exact;
}

double rms_distance(const Tensor& a, const Tensor& b) {
  double sum = 0;
  for (std::int64_t i = 0; i < a.numel(); ++i)
    sum += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
  return std::sqrt(sum / static_cast<double>(a.numel()));
}

/// RMS error against the exact flow at the middle of an n-step run (n even): the lower-order
/// final steps and the first-order step into sigma = 0 (whose O(sigma^2) error is second order
/// by construction) lie beyond it. sample() is stopped there through on_step.
template <class SolverT> double midpoint_error(SolverT solver, int n) {
  const CosineSchedule schedule;
  const DiagonalGaussian data = curved_data();
  ExactDenoiser model(shape, data, Prediction::epsilon);
  Tensor x(8, shape);
  fill_initial_noise(x, 17);
  const Tensor x_start = x;
  SampleOptions options;
  options.steps = n;
  options.on_step = [n](const StepRecord& r) { return r.step + 1 < n / 2; };
  sample(model, schedule, solver, x, Labels{}, options);
  return rms_distance(x, exact_flow(data, x_start, schedule.trajectory(n), n / 2));
}

/// As midpoint_error, but with exact starting values, the setting in which a multistep method's
/// order is defined: after each of the first `warm_up` steps the latents are replaced by the
/// exact flow, so the stored outputs are those of the exact solution. (With the solver's own
/// first-order start, a method of order >= 3 is second order wherever x0 varies at the start.)
template <class SolverT> double exact_start_error(SolverT solver, int n, int warm_up) {
  const CosineSchedule schedule;
  const DiagonalGaussian data = curved_data();
  ExactDenoiser model(shape, data, Prediction::sample);
  const Trajectory trajectory = schedule.trajectory(n);
  Tensor x(8, shape);
  fill_initial_noise(x, 17);
  const Tensor x_start = x;
  Tensor x0(8, shape), eps(8, shape);
  HostBackend backend;
  solver.begin(backend, trajectory, x.batch(), shape);
  for (int i = 0; i < n / 2; ++i) {
    const TimePoint& p = trajectory[i];
    model.predict(x, StepContext{i, n, 0, p}, Labels{}, x0);
    for (std::int64_t e = 0; e < x.numel(); ++e)
      eps[e] = static_cast<float>((x[e] - p.alpha * x0[e]) / p.sigma);
    const ModelOutput out{x0.view(), eps.view(), x0.view(), Prediction::sample};
    solver.update(backend, SolverStep{i, 0, &trajectory, NoiseKey{}}, out, x.view());
    if (i + 1 < warm_up)
      x = exact_flow(data, x_start, trajectory, i + 1);
  }
  return rms_distance(x, exact_flow(data, x_start, trajectory, n / 2));
}

/// Least-squares slope of log(error) against log(n), negated: the measured order.
template <class Error> double measured_order(Error error, const std::vector<int>& steps) {
  std::vector<double> log_n, log_err;
  for (int n : steps) {
    const double err = error(n);
    INFO("n = " << n << ": RMS error " << err);
    CHECK(err > 0);
    log_n.push_back(std::log(n));
    log_err.push_back(std::log(err));
  }
  const auto count = static_cast<double>(steps.size());
  double mean_x = 0, mean_y = 0;
  for (std::size_t i = 0; i < log_n.size(); ++i) {
    mean_x += log_n[i] / count;
    mean_y += log_err[i] / count;
  }
  double sxy = 0, sxx = 0;
  for (std::size_t i = 0; i < log_n.size(); ++i) {
    sxy += (log_n[i] - mean_x) * (log_err[i] - mean_y);
    sxx += (log_n[i] - mean_x) * (log_n[i] - mean_x);
  }
  return -sxy / sxx;
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
    const Result r = full_loop(config, Prediction::epsilon, shape_2d);
    INFO("mean " << std::setprecision(8) << r.mean);
    CHECK(std::abs(r.mean - 0.2464) < 1e-3);
  }
  SECTION("test_full_loop_with_karras") {
    config.sigma_spacing = SigmaSpacing::karras;
    const Result r = full_loop(config, Prediction::epsilon, shape_2d);
    INFO("mean " << std::setprecision(8) << r.mean);
    CHECK(std::abs(r.mean - 0.2925) < 1e-3);
  }
  SECTION("test_full_loop_with_v_prediction") {
    const Result r = full_loop(config, Prediction::v, shape_2d);
    INFO("mean " << std::setprecision(8) << r.mean);
    CHECK(std::abs(r.mean - 0.1014) < 1e-3);
  }
  SECTION("test_full_loop_with_karras_and_v_prediction") {
    config.sigma_spacing = SigmaSpacing::karras;
    const Result r = full_loop(config, Prediction::v, shape_2d);
    INFO("mean " << std::setprecision(8) << r.mean);
    CHECK(std::abs(r.mean - 0.1966) < 1e-3);
  }
  SECTION("test_full_loop_with_noise (t_start = 8: timesteps [200, 100])") {
    const Result r = full_loop(config, Prediction::epsilon, shape_2d, 8);
    INFO(std::setprecision(8) << "sum " << r.sum << ", mean " << r.mean);
    CHECK(std::abs(r.sum - 315.5757) < 1e-2);
    CHECK(std::abs(r.mean - 0.4109) < 1e-3);
  }
}

TEST_CASE("UniPC full loops match diffusers' UniPCMultistepScheduler1DTest", "[parity][unipc]") {
  DiscreteScheduleOptions config = unipc_config();
  SECTION("test_full_loop_no_noise") {
    const Result r = full_loop(config, Prediction::epsilon, shape_1d);
    INFO("mean " << std::setprecision(8) << r.mean);
    CHECK(std::abs(r.mean - 0.2441) < 1e-3);
  }
  SECTION("test_full_loop_with_karras") {
    config.sigma_spacing = SigmaSpacing::karras;
    const Result r = full_loop(config, Prediction::epsilon, shape_1d);
    INFO("mean " << std::setprecision(8) << r.mean);
    CHECK(std::abs(r.mean - 0.2898) < 1e-3);
  }
  SECTION("test_full_loop_with_v_prediction") {
    const Result r = full_loop(config, Prediction::v, shape_1d);
    INFO("mean " << std::setprecision(8) << r.mean);
    CHECK(std::abs(r.mean - 0.1014) < 1e-3);
  }
  SECTION("test_full_loop_with_karras_and_v_prediction") {
    config.sigma_spacing = SigmaSpacing::karras;
    const Result r = full_loop(config, Prediction::v, shape_1d);
    INFO("mean " << std::setprecision(8) << r.mean);
    CHECK(std::abs(r.mean - 0.1944) < 1e-3);
  }
  SECTION("test_full_loop_with_noise (t_start = 8)") {
    const Result r = full_loop(config, Prediction::epsilon, shape_1d, 8);
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
            full_loop_latents(DiscreteSchedule(unipc_config()), o, prediction, shape_2d)));
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
        auto model = harness_model(Prediction::epsilon, shape_2d);
        Tensor x = harness_tensor(shape_2d, false);
        SampleOptions so;
        so.steps = 10;
        sample(model, schedule, solver, x, NoCondition{}, so);
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
          auto model = harness_model(Prediction::epsilon, shape_2d);
          Tensor x = harness_tensor(shape_2d, false);
          SampleOptions so;
          so.steps = 10;
          sample(model, DiscreteSchedule(config), solver, x, NoCondition{}, so);
          CHECK(solver.last_order() == 1);
          CHECK(all_finite(x));
        }
  }
  SECTION("pure noise at the start (alpha = 0, lambda = -inf): a flow-matching trajectory") {
    for (int order : {1, 2, 3}) {
      UniPC solver(unipc(order, UniPCVariant::bh2));
      ExactDenoiser model(shape, curved_data(), Prediction::flow);
      Tensor x(2, shape);
      fill_initial_noise(x, 3);
      SampleOptions so;
      so.steps = 12;
      sample(model, ContinuousSchedule::linear_flow(1.0, 0.0), solver, x, Labels{}, so);
      CHECK(all_finite(x));
    }
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
    auto model = harness_model(Prediction::epsilon, shape_2d);
    Tensor a = harness_tensor(shape_2d, false), b = a;
    UniPC unipc_solver(u);
    DPMSolverMultistep dpm_solver(d);
    SampleOptions so;
    so.steps = 10;
    sample(model, schedule, unipc_solver, a, NoCondition{}, so);
    sample(model, schedule, dpm_solver, b, NoCondition{}, so);
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

namespace {

/// Samples n = 10 steps of the harness (clean final point) from x with `model` (a denoiser or a
/// stitcher), from start_step, stopping after step stop_after if given.
template <class Model>
SampleResult run_harness(Model& model, UniPC& solver, Tensor& x, int start_step = 0,
                         int stop_after = -1,
                         std::function<void(const StepRecord&)> observe = nullptr) {
  DiscreteScheduleOptions o = unipc_config();
  o.final_point = FinalPoint::clean;
  SampleOptions options;
  options.steps = 10;
  options.start_step = start_step;
  options.on_step = [stop_after, observe](const StepRecord& r) {
    if (observe)
      observe(r);
    return stop_after < 0 || r.step < stop_after;
  };
  return sample(model, DiscreteSchedule(o), solver, x, NoCondition{}, options);
}

} // namespace

TEST_CASE("UniPC history at a model switch: keep and reset", "[unipc][stitch]") {
  auto model = harness_model(Prediction::epsilon, shape_2d);
  TrajectoryStitcher stitcher(model, model, 0.5); // two identical models, switch before step 5
  for (int order : {1, 2, 3}) {
    UniPCOptions o;
    o.solver_order = order;
    INFO("order " << order);

    Tensor alone = harness_tensor(shape_2d, false);
    UniPC solver_alone(o);
    run_harness(model, solver_alone, alone);

    // keep: predictor history and corrector carry across the switch; nothing changes, bit for
    // bit, when the models are the same.
    o.history = HistoryPolicy::keep;
    Tensor kept = harness_tensor(shape_2d, false);
    UniPC solver_keep(o);
    int corrector_at_switch = -1;
    CHECK(run_harness(stitcher, solver_keep, kept, 0, -1, [&](const StepRecord& r) {
            if (r.step == 5)
              corrector_at_switch = solver_keep.last_corrector_order();
          }).switches == 1);
    CHECK(corrector_at_switch == order);
    CHECK(bit_identical(kept, alone));

    // reset: step 5 runs no corrector and a first-order predictor, exactly as a run that starts
    // at step 5 from the same (uncorrected) latents.
    o.history = HistoryPolicy::reset;
    Tensor reset = harness_tensor(shape_2d, false);
    UniPC solver_reset(o);
    int predictor_after = -1;
    corrector_at_switch = -1;
    CHECK(run_harness(stitcher, solver_reset, reset, 0, -1, [&](const StepRecord& r) {
            if (r.step == 5) {
              predictor_after = solver_reset.last_order();
              corrector_at_switch = solver_reset.last_corrector_order();
            }
          }).switches == 1);
    CHECK(predictor_after == 1);
    CHECK(corrector_at_switch == 0);
    Tensor restarted = harness_tensor(shape_2d, false);
    UniPC first_half(o);
    run_harness(model, first_half, restarted, 0, 4); // steps 0..4, then stop
    UniPC second_half(o);
    run_harness(model, second_half, restarted, 5);
    CHECK(bit_identical(reset, restarted));
    CHECK_FALSE(bit_identical(reset, alone));
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

namespace {

/// The host backend, counting allocations.
struct CountingBackend : HostBackend {
  int* allocations;
  [[nodiscard]] Tensor allocate(std::int64_t batch, Shape s) const {
    ++*allocations;
    return HostBackend::allocate(batch, s);
  }
};

} // namespace

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
