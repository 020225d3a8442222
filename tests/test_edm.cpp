// SPDX-License-Identifier: Apache-2.0
// EDM: EDMSchedule and edm_preconditioned, with the existing Euler and DPMSolverMultistep.
//  - diffusers parity: EDMEulerSchedulerTest and EDMDPMSolverMultistepSchedulerTest full loops
//    with diffusers' own harness and tolerances (the Euler harness scales the model input with
//    c_in, the DPM-Solver harness does not);
//  - the schedule's sigmas and timesteps against diffusers 0.31.0;
//  - the preconditioning: what the network is handed, the x0 it gives back, and its identity
//    with the usual v prediction for sigma_data = 1;
//  - convergence order on exactly solvable Gaussian data, through the preconditioning;
//  - option validation.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "support/gaussian_mixture.hpp"
#include "tstitch/sample.hpp"
#include "tstitch/schedule/edm.hpp"
#include "tstitch/solver/dpm_solver.hpp"
#include "tstitch/solver/euler.hpp"
#include "tstitch/stitch/stitcher.hpp"

#include "support/diffusers_harness.hpp"
#include "support/gaussian_problems.hpp"
#include "support/tensor_checks.hpp"

using namespace tstitch;
using namespace tstitch::testing;

namespace {

/// EDMDPMSolverMultistepSchedulerTest calls model(sample, t) on the *unscaled* VE latents: the
/// network undoes c_in (its point's alpha is c_in) before the dummy model sees them.
auto unscaled_dummy_network(Prediction prediction) {
  return make_denoiser(
      prediction, harness_shape,
      [](ConstView x, const StepContext& ctx, const NoCondition&, View out) {
        Tensor ve(x.batch(), x.shape());
        HostBackend{}.combine(ve, Term{static_cast<float>(1.0 / ctx.point.alpha), x});
        dummy_model(ctx.point.timestep, ve, out);
      });
}

/// The schedule of EDMDPMSolverMultistepSchedulerTest.get_scheduler_config.
EDMSchedule dpm_test_schedule() {
  EDMScheduleOptions o;
  o.final_sigma = EDMFinalSigma::sigma_min;
  return EDMSchedule(o);
}

/// The solver options of EDMDPMSolverMultistepSchedulerTest.get_scheduler_config.
DPMSolverMultistepOptions dpm_test_options() {
  DPMSolverMultistepOptions o;
  o.solver_order = 2;
  o.solver_type = DPMSolverType::midpoint;
  o.lower_order_final = false;
  o.euler_at_final = false;
  return o;
}

void scale(Tensor& x, double factor) {
  HostBackend{}.combine(x, Term{static_cast<float>(factor), ConstView(x)});
}

/// EDMDPMSolverMultistepSchedulerTest.full_loop (or test_full_loop_with_noise from step
/// `start_step`): the harness sample as VE latents, 10 steps, the VE result (x / alpha at the
/// final point) summed as diffusers does.
Result dpm_full_loop(const EDMSchedule& schedule, DPMSolverMultistepOptions options,
                     Prediction prediction, int start_step = -1) {
  auto model = edm_preconditioned(unscaled_dummy_network(prediction), 0.5);
  const Trajectory trajectory = schedule.trajectory(10);
  Tensor x = harness_tensor(false);
  SampleOptions so;
  so.steps = 10;
  if (start_step >= 0) { // add_noise: x_ve + noise * sigma, i.e. alpha x + sigma noise here
    add_noise(x, harness_tensor(true), trajectory[start_step]);
    so.start_step = start_step;
  } else {
    scale(x, trajectory[0].alpha); // VE latents = the harness sample
  }
  DPMSolverMultistep solver(options);
  sample(model, schedule, solver, x, NoCondition{}, so);
  scale(x, 1.0 / trajectory[10].alpha);
  return abs_sum(x);
}

/// A raw EDM network (prediction epsilon) for Gaussian data: F = (x0 - c_skip x_ve) / c_out with
/// the exact x0 at the point it is handed, so that edm_preconditioned gives back the exact x0.
auto exact_network(const analytic::DiagonalGaussian& data, double sigma_data) {
  analytic::ExactDenoiser exact(curved_shape, data, Prediction::sample);
  return make_denoiser<analytic::Labels>(
      Prediction::epsilon, curved_shape,
      [exact, sigma_data](ConstView u, const StepContext& ctx, const analytic::Labels& labels,
                          View out) {
        exact.predict(u, ctx, labels, out); // x0, from u = c_in x0 + c_in s eps
        const EDMCoefficients k =
            edm_coefficients(ctx.point.ve_sigma(), sigma_data, Prediction::epsilon);
        for (std::int64_t n = 0; n < u.batch(); ++n)
          for (std::int64_t i = 0; i < u.sample_numel(); ++i) {
            const double x_ve = (&u.at(n, 0, 0, 0))[i] / k.c_in;
            float& o = (&out.at(n, 0, 0, 0))[i];
            o = static_cast<float>((o - k.c_skip * x_ve) / k.c_out);
          }
      });
}

/// RMS distance to the exact probability-flow solution after an n-step run on the EDM schedule,
/// from unit noise (x_T), through edm_preconditioned.
template <class SolverT> double edm_ode_error(SolverT solver, int n, double sigma_data) {
  const analytic::DiagonalGaussian data = curved_data();
  auto model = edm_preconditioned(exact_network(data, sigma_data), sigma_data);
  const EDMSchedule schedule;
  Tensor x(8, curved_shape);
  fill_initial_noise(x, 17);
  const Tensor x_start = x;
  SampleOptions options;
  options.steps = n;
  sample(model, schedule, solver, x, analytic::Labels{}, options);
  const Tensor exact = exact_flow(data, x_start, schedule.trajectory(n), n);
  return rms_distance(x, exact);
}

} // namespace

// ---- diffusers parity ---------------------------------------------------------------------------

TEST_CASE("EDM Euler full loop matches diffusers' EDMEulerSchedulerTest", "[parity][edm_euler]") {
  // test_full_loop_no_noise (and test_full_loop_device, the same loop): sample =
  // dummy_sample_deter * init_noise_sigma, init_noise_sigma = sqrt(80^2 + 1), as VE latents;
  // model(scale_model_input(sample, t), t); num_train_timesteps = 256 changes nothing here.
  const EDMSchedule schedule; // sigma_min 0.002, sigma_max 80, karras, final sigma 0
  const Trajectory trajectory = schedule.trajectory(10);
  // The raw network is the dummy model, handed the c_in-scaled latents and the timestep c_noise.
  auto model = edm_preconditioned(harness_model(Prediction::epsilon), 0.5);
  Tensor x = harness_tensor(false);
  scale(x, std::sqrt(80.0 * 80.0 + 1.0) * trajectory[0].alpha);
  Euler solver;
  SampleOptions so;
  so.steps = 10;
  sample(model, schedule, solver, x, NoCondition{}, so);
  REQUIRE(trajectory[10].alpha == 1.0); // the clean end: x is the VE sample itself
  const Result r = abs_sum(x);
  INFO("sum " << r.sum << " mean " << r.mean);
  CHECK(std::abs(r.sum - 34.1855) < 1e-3);
  CHECK(std::abs(r.mean - 0.044) < 1e-3);
}

TEST_CASE("EDM DPM-Solver++ full loops match diffusers' EDMDPMSolverMultistepSchedulerTest",
          "[parity][edm_dpmsolver]") {
  const EDMSchedule schedule = dpm_test_schedule();
  SECTION("test_full_loop_no_noise") {
    const Result r = dpm_full_loop(schedule, dpm_test_options(), Prediction::epsilon);
    INFO("mean " << r.mean);
    CHECK(std::abs(r.mean - 0.0001) < 1e-3);
  }
  SECTION("test_full_loop_with_noise (t_start = 5)") {
    const Result r = dpm_full_loop(schedule, dpm_test_options(), Prediction::epsilon, 5);
    INFO("sum " << r.sum << " mean " << r.mean);
    CHECK(std::abs(r.sum - 8.1661) < 1e-2);
    CHECK(std::abs(r.mean - 0.0106) < 1e-3);
  }
  SECTION("test_full_loop_no_noise_thres") {
    DPMSolverMultistepOptions o = dpm_test_options();
    o.thresholding = DynamicThresholding{0.87, 0.5};
    const Result r = dpm_full_loop(schedule, o, Prediction::epsilon);
    INFO("mean " << r.mean);
    CHECK(std::abs(r.mean - 0.0080) < 1e-3);
  }
  SECTION("test_full_loop_with_v_prediction") {
    const Result r = dpm_full_loop(schedule, dpm_test_options(), Prediction::v);
    INFO("mean " << r.mean);
    CHECK(std::abs(r.mean - 0.0092) < 1e-3);
  }
}

TEST_CASE("EDM DPM-Solver++ loops agree with diffusers 0.31.0 to float32 rounding",
          "[parity][edm_dpmsolver]") {
  // Values from diffusers 0.31.0 (torch 1.13, CPU) with the harness above; tighter than the
  // oracles, so a wrong order or coefficient cannot hide in their tolerance.
  const EDMSchedule schedule = dpm_test_schedule();
  CHECK(dpm_full_loop(schedule, dpm_test_options(), Prediction::epsilon).sum ==
        Approx(0.10760617).epsilon(1e-4));
  CHECK(dpm_full_loop(schedule, dpm_test_options(), Prediction::v).sum ==
        Approx(7.1101789).epsilon(1e-5));
  CHECK(dpm_full_loop(schedule, dpm_test_options(), Prediction::epsilon, 5).sum ==
        Approx(8.1656999).epsilon(1e-5));
  DPMSolverMultistepOptions thres = dpm_test_options();
  thres.thresholding = DynamicThresholding{0.87, 0.5};
  CHECK(dpm_full_loop(schedule, thres, Prediction::epsilon).sum == Approx(6.2099767).epsilon(1e-5));
  // final_sigmas_type = "zero": the last step is first order, into the clean point.
  const EDMSchedule zero_end;
  CHECK(dpm_full_loop(zero_end, dpm_test_options(), Prediction::epsilon).sum ==
        Approx(0.10820836).epsilon(1e-4));
}

TEST_CASE("EDM DPM-Solver++ 3M: diffusers 0.31.0, and finite into sigma_min",
          "[parity][edm_dpmsolver]") {
  DPMSolverMultistepOptions o = dpm_test_options();
  o.solver_order = 3;
  // final_sigmas_type = "zero": diffusers 0.31.0 gives sum 4.9056573.
  CHECK(dpm_full_loop(EDMSchedule(), o, Prediction::epsilon).sum ==
        Approx(4.9056573).epsilon(1e-4));
  // "sigma_min": diffusers 0.31.0 returns NaN (its float32 length of the last step is 0 and 3M
  // divides by it; its test_solver_order_and_type is skipped). That step is ~2.5e-7 long in double
  // lambda here, so the result is diffusers' sum after step 9 of 10, 4.8783565.
  const Result r = dpm_full_loop(dpm_test_schedule(), o, Prediction::epsilon);
  CHECK(std::isfinite(r.sum));
  CHECK(r.sum == Approx(4.8783565).epsilon(1e-4));
}

// ---- the schedule -------------------------------------------------------------------------------

TEST_CASE("EDMSchedule sigmas and timesteps match diffusers 0.31.0", "[schedule][edm]") {
  // EDMEulerScheduler(sigma_min=0.002, sigma_max=80).set_timesteps(10): sigmas and timesteps
  // (diffusers 0.31.0). torch's float32 pow is not correctly rounded: within 2e-6 relative.
  const std::vector<double> karras = {
      79.99998474121094,    42.41517639160156,    21.108667373657227,  9.723200798034668,
      4.066123008728027,    1.5017415285110474,   0.46997880935668945, 0.11663846671581268,
      0.020435336977243423, 0.0019999996293336153};
  const std::vector<double> karras_t = {
      1.0955066680908203,  0.9368765354156494,  0.7624209523200989,   0.56862872838974,
      0.35067248344421387, 0.10165636241436005, -0.18876691162586212, -0.5371690392494202,
      -0.9726223945617676, -1.553652048110962};
  const std::vector<double> exponential = {80.0,
                                           24.64620018005371,
                                           7.592939853668213,
                                           2.3392138481140137,
                                           0.7206591367721558,
                                           0.22201895713806152,
                                           0.06839904189109802,
                                           0.021072207018733025,
                                           0.0064918724820017815,
                                           0.001999999862164259};
  const EDMSchedule schedule;
  const std::vector<double> s = schedule.sigmas(10), t = schedule.timesteps(10);
  for (std::size_t i = 0; i < 10; ++i) {
    CHECK(s[i] == Approx(karras[i]).epsilon(2e-6));
    CHECK(t[i] == Approx(karras_t[i]).margin(1e-6));
  }
  EDMScheduleOptions o;
  o.sigma_schedule = EDMSigmaSchedule::exponential;
  const std::vector<double> e = EDMSchedule(o).sigmas(10);
  for (std::size_t i = 0; i < 10; ++i)
    CHECK(e[i] == Approx(exponential[i]).epsilon(2e-6));
  // One step: sigma_max for karras, sigma_min for exponential (torch.linspace(a, b, 1) = [a]).
  CHECK(schedule.sigmas(1)[0] == Approx(80.0).epsilon(1e-6));
  CHECK(EDMSchedule(o).sigmas(1)[0] == Approx(0.002).epsilon(1e-6));
}

TEST_CASE("EDMSchedule points: variance-preserving form, model time c_noise, final point",
          "[schedule][edm]") {
  const EDMSchedule schedule;
  const Trajectory trajectory = schedule.trajectory(12);
  REQUIRE(trajectory.steps() == 12);
  const std::vector<double> s = schedule.sigmas(12);
  for (int i = 0; i < 12; ++i) {
    const TimePoint& p = trajectory[i];
    CHECK(p.alpha * p.alpha + p.sigma * p.sigma == Approx(1.0).epsilon(1e-14));
    CHECK(p.ve_sigma() == Approx(s[static_cast<std::size_t>(i)]).epsilon(1e-14));
    CHECK(p.timestep == edm_c_noise(s[static_cast<std::size_t>(i)]));
    CHECK(static_cast<float>(s[static_cast<std::size_t>(i)]) == s[static_cast<std::size_t>(i)]);
  }
  CHECK(trajectory[12].alpha == 1.0);
  CHECK(trajectory[12].sigma == 0.0);
  CHECK(trajectory[12].timestep == -std::numeric_limits<double>::infinity());

  // final_sigmas_type = "sigma_min": float32(0.002), right after the last ramp sigma.
  const Trajectory to_min = dpm_test_schedule().trajectory(12);
  CHECK(to_min[12].ve_sigma() == Approx(static_cast<float>(0.002)).epsilon(1e-14));
  CHECK(to_min[12].ve_sigma() != to_min[11].ve_sigma()); // torch's ramp ends 1 ulp off

  // point and timestep_at invert each other.
  for (double v : {0.002, 0.3, 1.0, 17.0, 80.0}) {
    const double t = schedule.timestep_at(v);
    CHECK(t == Approx(0.25 * std::log(v)).epsilon(1e-15));
    CHECK(schedule.point(t).ve_sigma() == Approx(v).epsilon(1e-14));
  }
  CHECK(schedule.point(-std::numeric_limits<double>::infinity()).sigma == 0.0);
  CHECK(schedule.timestep_at(0.0) == -std::numeric_limits<double>::infinity());
}

// ---- the preconditioning ------------------------------------------------------------------------

TEST_CASE("edm_preconditioned hands the network c_in x_ve at c_noise and returns x0",
          "[edm][precondition]") {
  const Shape shape{1, 2, 2};
  Tensor seen(1, shape);
  StepContext seen_ctx;
  const float* seen_input = nullptr;
  int calls = 0;
  const std::vector<float> f = {0.3f, -1.2f, 0.7f, 2.0f};
  auto network = make_denoiser(
      Prediction::v, shape, [&](ConstView x, const StepContext& ctx, const NoCondition&, View out) {
        for (std::int64_t i = 0; i < 4; ++i) {
          seen[i] = (&x.at(0, 0, 0, 0))[i];
          (&out.at(0, 0, 0, 0))[i] = f[static_cast<std::size_t>(i)];
        }
        seen_ctx = ctx;
        if (seen_input != nullptr)
          CHECK(&x.at(0, 0, 0, 0) == seen_input); // workspace reused
        seen_input = &x.at(0, 0, 0, 0);
        ++calls;
      });
  auto model = edm_preconditioned(network, 0.5);
  static_assert(Denoiser<decltype(model)>);
  CHECK(model.prediction() == Prediction::sample);

  Tensor x(1, shape), out(1, shape);
  const std::vector<float> xs = {1.0f, -0.5f, 0.25f, 3.0f};
  for (std::int64_t i = 0; i < 4; ++i)
    x[i] = xs[static_cast<std::size_t>(i)];
  for (double s : {80.0, 1.5, 0.01}) {
    const double alpha = 1.0 / std::sqrt(1.0 + s * s);
    const StepContext ctx{3, 10, 0, TimePoint{123.0, alpha, s * alpha}};
    model.predict(x, ctx, NoCondition{}, out);
    const double sd = 0.5, norm2 = s * s + sd * sd;
    const double c_in = 1 / std::sqrt(norm2), c_skip = sd * sd / norm2;
    const double c_out = -s * sd / std::sqrt(norm2); // v_prediction
    CHECK(seen_ctx.point.timestep == Approx(0.25 * std::log(s)).epsilon(1e-6));
    CHECK(seen_ctx.point.alpha == Approx(c_in));
    CHECK(seen_ctx.point.sigma == Approx(c_in * s));
    CHECK(seen_ctx.step == 3);
    for (std::int64_t i = 0; i < 4; ++i) {
      const double x_ve = xs[static_cast<std::size_t>(i)] / alpha;
      CHECK(seen[i] == Approx(c_in * x_ve).epsilon(1e-6));
      CHECK(out[i] == Approx(c_skip * x_ve + c_out * f[static_cast<std::size_t>(i)]).epsilon(1e-5));
    }
  }
  CHECK(calls == 3);

  SECTION("with sigma_data = 1, EDM's v_prediction is the usual v on the VP form") {
    auto unit = edm_preconditioned(network, 1.0);
    seen_input = nullptr; // a new wrapper, a new workspace
    const double s = 2.5, alpha = 1.0 / std::sqrt(1.0 + s * s), sigma = s * alpha;
    unit.predict(x, StepContext{0, 1, 0, TimePoint{0.0, alpha, sigma}}, NoCondition{}, out);
    const PredictionConversion k = conversion(Prediction::v, alpha, sigma);
    for (std::int64_t i = 0; i < 4; ++i)
      CHECK(out[i] == Approx(k.x0_from_x * xs[static_cast<std::size_t>(i)] +
                             k.x0_from_m * f[static_cast<std::size_t>(i)])
                          .epsilon(1e-6));
  }
}

TEST_CASE("edm_coefficients: epsilon and v differ in the sign of c_out only",
          "[edm][precondition]") {
  const EDMCoefficients e = edm_coefficients(3.0, 0.5, Prediction::epsilon);
  const EDMCoefficients v = edm_coefficients(3.0, 0.5, Prediction::v);
  CHECK(e.c_out == -v.c_out);
  CHECK(e.c_out == Approx(3.0 * 0.5 / std::sqrt(9.25)));
  CHECK(e.c_skip == Approx(0.25 / 9.25));
  CHECK(e.c_in == Approx(1.0 / std::sqrt(9.25)));
  CHECK(e.c_noise == Approx(0.25 * std::log(3.0)).epsilon(1e-6));
  // c_skip + (c_out / sigma_data)^2 = (sigma_data^2 + s^2) / (s^2 + sigma_data^2) = 1.
  CHECK(e.c_skip + e.c_out * e.c_out / 0.25 == Approx(1.0));
}

// ---- convergence --------------------------------------------------------------------------------

TEST_CASE("Euler and DPM-Solver++ 2M converge at orders 1 and 2 on the EDM schedule",
          "[solver][edm]") {
  const std::vector<int> steps = {16, 32, 64, 128};
  SECTION("Euler (EDMEulerScheduler): order 1") {
    const double order =
        measured_order([](int n) { return edm_ode_error(Euler{}, n, 0.5); }, steps);
    UNSCOPED_INFO("measured order " << order);
    CHECK(order == Approx(1.0).margin(0.25));
  }
  SECTION("DPM-Solver++ 2M (EDMDPMSolverMultistepScheduler): order 2") {
    DPMSolverMultistepOptions o;
    o.lower_order_final = false;
    const double order =
        measured_order([&o](int n) { return edm_ode_error(DPMSolverMultistep(o), n, 0.5); }, steps);
    UNSCOPED_INFO("measured order " << order);
    CHECK(order == Approx(2.0).margin(0.25));
  }
}

// ---- stitching ----------------------------------------------------------------------------------

TEST_CASE("Stitched EDM models: DPM-Solver++ history keep and reset at the switch",
          "[edm][stitch]") {
  // Wrap each EDM model, then stitch the wrappers; two identical models switch before step 5.
  auto a = edm_preconditioned(unscaled_dummy_network(Prediction::epsilon), 0.5);
  auto b = edm_preconditioned(unscaled_dummy_network(Prediction::epsilon), 0.5);
  TrajectoryStitcher stitcher(a, b, 0.5);
  const EDMSchedule schedule = dpm_test_schedule();
  auto run = [&](auto& model, HistoryPolicy history, int start, int stop_after, Tensor& x,
                 std::vector<int>* orders) {
    DPMSolverMultistepOptions o = dpm_test_options();
    o.history = history;
    DPMSolverMultistep solver(o);
    SampleOptions so;
    so.steps = 10;
    so.start_step = start;
    so.on_step = [&](const StepRecord& r) {
      if (orders)
        orders->push_back(solver.last_order());
      return stop_after < 0 || r.step < stop_after;
    };
    return sample(model, schedule, solver, x, NoCondition{}, so).switches;
  };
  Tensor alone = harness_tensor(false), kept = alone, reset = alone, restarted = alone;
  std::vector<int> reset_orders;
  run(a, HistoryPolicy::keep, 0, -1, alone, nullptr);
  CHECK(run(stitcher, HistoryPolicy::keep, 0, -1, kept, nullptr) == 1);
  CHECK(bit_identical(kept, alone));
  CHECK(run(stitcher, HistoryPolicy::reset, 0, -1, reset, &reset_orders) == 1);
  CHECK(reset_orders.at(4) == 2);
  CHECK(reset_orders.at(5) == 1);
  run(a, HistoryPolicy::reset, 0, 4, restarted, nullptr); // steps 0..4, then a fresh solver
  run(a, HistoryPolicy::reset, 5, -1, restarted, nullptr);
  CHECK(bit_identical(reset, restarted));
  CHECK_FALSE(bit_identical(reset, alone));
}

// ---- validation ---------------------------------------------------------------------------------

TEST_CASE("EDM options are validated, naming the option and the value", "[edm][validation]") {
  auto rejects = [](EDMScheduleOptions o, const std::string& name) {
    try {
      (void)EDMSchedule(o);
      FAIL("accepted " << name);
    } catch (const std::invalid_argument& e) {
      CHECK_THAT(e.what(), Catch::Contains(name));
    }
  };
  EDMScheduleOptions o;
  o.sigma_min = 0;
  rejects(o, "EDMScheduleOptions::sigma_min = 0");
  o = {};
  o.sigma_max = 0.001;
  rejects(o, "EDMScheduleOptions::sigma_max = 0.001");
  o = {};
  o.rho = -1;
  rejects(o, "EDMScheduleOptions::rho = -1");
  o = {};
  o.num_train_timesteps = 0;
  rejects(o, "EDMScheduleOptions::num_train_timesteps = 0");
  CHECK_THROWS_WITH(EDMSchedule().trajectory(0), Catch::Contains("num_steps = 0"));

  CHECK_THROWS_WITH(edm_preconditioned(harness_model(Prediction::epsilon), -0.5),
                    Catch::Contains("sigma_data = -0.5"));
  CHECK_THROWS_WITH(edm_preconditioned(harness_model(Prediction::sample)),
                    Catch::Contains("network prediction() = sample"));
  auto model = edm_preconditioned(harness_model(Prediction::epsilon));
  Tensor x = harness_tensor(false), out = harness_tensor(false);
  CHECK_THROWS_WITH(model.predict(x, StepContext{0, 1, 0, TimePoint{0, 1, 0}}, NoCondition{}, out),
                    Catch::Contains("sigma / alpha = 0"));
}
