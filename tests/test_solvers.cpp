// SPDX-License-Identifier: Apache-2.0
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "tstitch/analytic/gaussian_mixture.hpp"
#include "tstitch/sample.hpp"
#include "tstitch/schedule/continuous.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/solver/ddim.hpp"
#include "tstitch/solver/ddpm.hpp"
#include "tstitch/solver/euler.hpp"

using namespace tstitch;
using analytic::DiagonalGaussian;
using analytic::ExactDenoiser;
using analytic::Labels;

namespace {

// Schedules with steps uniform in t that end exactly at sigma = 0, so the step size halves when n
// doubles. The cosine one starts just short of pure noise, where epsilon models are singular.
const ContinuousSchedule cosine = ContinuousSchedule::cosine(0.98, 0.0);
const ContinuousSchedule flow = ContinuousSchedule::linear_flow();

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

/// RMS distance of a solver's result to the exact probability-flow solution from the same x_T.
template <class Schedule, class SolverT>
double ode_error(const Schedule& schedule, SolverT solver, Prediction prediction, int n) {
  const DiagonalGaussian data = curved_data();
  ExactDenoiser model(shape, data, prediction);
  Tensor x(8, shape);
  fill_initial_noise(x, 17);
  const Tensor x_start = x;
  SampleOptions options;
  options.steps = n;
  sample(model, schedule, solver, x, Labels{}, options);
  const Trajectory trajectory = schedule.trajectory(n);
  double sum = 0;
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    const auto e = static_cast<std::size_t>(i % shape.numel());
    const double exact = data.flow(e, x_start[i], trajectory[0], trajectory[n]);
    sum += (x[i] - exact) * (x[i] - exact);
  }
  return std::sqrt(sum / static_cast<double>(x.numel()));
}

/// Least-squares slope of log(error) against log(n), negated: the measured order.
template <class Schedule, class SolverT>
double measured_order(const Schedule& schedule, SolverT solver, Prediction prediction) {
  std::vector<double> log_n, log_err;
  for (int n : {10, 20, 40, 80, 160}) {
    const double err = ode_error(schedule, solver, prediction, n);
    INFO("n = " << n << ": RMS error " << err);
    CHECK(err > 0);
    log_n.push_back(std::log(n));
    log_err.push_back(std::log(err));
  }
  const double mean_x = (log_n[0] + log_n[1] + log_n[2] + log_n[3] + log_n[4]) / 5;
  const double mean_y = (log_err[0] + log_err[1] + log_err[2] + log_err[3] + log_err[4]) / 5;
  double sxy = 0, sxx = 0;
  for (std::size_t i = 0; i < log_n.size(); ++i) {
    sxy += (log_n[i] - mean_x) * (log_err[i] - mean_y);
    sxx += (log_n[i] - mean_x) * (log_n[i] - mean_x);
  }
  return -sxy / sxx;
}

/// Samples with a stochastic solver from the exact marginal at the first point and checks the
/// final mean and variance against the data, within 3 standard errors. The data are two channels
/// of 50x50 elements, each channel one 1-D Gaussian; elements are independent, so a batch of 8
/// gives 20000 independent samples per channel.
template <class SolverT, class Schedule>
void check_distribution(const Schedule& schedule, SolverT solver, Prediction prediction,
                        int steps) {
  const Shape shape2{2, 50, 50};
  const double mean[] = {-0.6, 0.5}, variance[] = {0.5, 2.0};
  DiagonalGaussian data;
  for (int c = 0; c < 2; ++c)
    for (std::int64_t p = 0; p < shape2.plane(); ++p) {
      data.mean.push_back(mean[c]);
      data.variance.push_back(variance[c]);
    }
  ExactDenoiser model(shape2, data, prediction);
  Tensor x(8, shape2);
  fill_initial_noise(x, 31);
  const TimePoint start = schedule.trajectory(steps)[0];
  for (std::int64_t i = 0; i < x.numel(); ++i) { // x_T from the exact marginal
    const auto e = static_cast<std::size_t>(i % shape2.numel());
    x[i] = static_cast<float>(
        start.alpha * data.mean[e] +
        std::sqrt(start.alpha * start.alpha * data.variance[e] + start.sigma * start.sigma) * x[i]);
  }
  SampleOptions options;
  options.steps = steps;
  options.seed = 5;
  sample(model, schedule, solver, x, Labels{}, options);
  for (int c = 0; c < 2; ++c) {
    double sum = 0, sum2 = 0, count = 0;
    for (std::int64_t n = 0; n < x.batch(); ++n)
      for (std::int64_t p = 0; p < shape2.plane(); ++p) {
        const double v = x.at(n, c, 0, p);
        sum += v;
        sum2 += v * v;
        count += 1;
      }
    const double sample_mean = sum / count;
    const double sample_variance = (sum2 - sum * sum / count) / (count - 1);
    const double mean_se = std::sqrt(variance[c] / count);
    const double var_se = variance[c] * std::sqrt(2.0 / (count - 1));
    INFO("channel " << c << " (" << count << " samples): mean " << sample_mean << " (data "
                    << mean[c] << "), variance " << sample_variance << " (data " << variance[c]
                    << ")");
    CHECK(count >= 20000);
    CHECK(std::abs(sample_mean - mean[c]) < 3 * mean_se);
    CHECK(std::abs(sample_variance - variance[c]) < 3 * var_se);
  }
}

} // namespace

TEST_CASE("DDIM and Euler follow the exact probability-flow solution at order 1", "[solver]") {
  SECTION("DDIM, VP cosine, epsilon") {
    const double order = measured_order(cosine, DDIM{}, Prediction::epsilon);
    CHECK(order == Approx(1.0).margin(0.2));
  }
  SECTION("Euler, VP cosine, v") {
    const double order = measured_order(cosine, Euler{}, Prediction::v);
    CHECK(order == Approx(1.0).margin(0.2));
  }
  SECTION("DDIM, rectified flow, flow velocity") {
    const double order = measured_order(flow, DDIM{}, Prediction::flow);
    CHECK(order == Approx(1.0).margin(0.2));
  }
  SECTION("Euler, rectified flow, flow velocity") {
    const double order = measured_order(flow, Euler{}, Prediction::flow);
    CHECK(order == Approx(1.0).margin(0.2));
  }
  SECTION("Euler, DDPM discrete schedule, epsilon") {
    // Integer timesteps with trailing spacing: 1000 / n is exact for every n tested.
    DiscreteScheduleOptions o;
    o.spacing = TimestepSpacing::trailing;
    const double order = measured_order(DiscreteSchedule(o), Euler{}, Prediction::epsilon);
    CHECK(order == Approx(1.0).margin(0.2));
  }
}

TEST_CASE("DDIM with eta = 0 is deterministic and equals Euler up to rounding", "[solver]") {
  const double ddim = ode_error(cosine, DDIM{}, Prediction::epsilon, 40);
  const double euler = ode_error(cosine, Euler{}, Prediction::epsilon, 40);
  CHECK(ddim == Approx(euler).epsilon(1e-3));
}

// Ancestral samplers are exact only as the step count grows: with the exact posterior mean, each
// step drops the variance of x0 given x_t, most near t = 0 where beta_t / (1 - abar_t) is large.
// Propagating the variance through the chain (Gaussian data keeps every step linear) gives the
// relative bias of the final variance; for data variance 0.5..2 and 1000 steps it is -1.2..-0.7%
// (fixed small, DDIM eta = 1), -0.5% (learned range with v = 0) and +-0.1% (fixed large), all
// below one standard error at 20k samples (1%). At 250 steps fixed small is already -4%, and at
// data variance 0.05 -3% even with 1000 steps: those would fail for the right reason.
TEST_CASE("DDPM ancestral sampling reproduces the data's mean and variance", "[solver][stat]") {
  DiscreteScheduleOptions o;
  o.spacing = TimestepSpacing::linspace; // DiT's DDPM respacing
  const DiscreteSchedule schedule(o);
  SECTION("fixed small variance") {
    check_distribution(schedule, DDPM{}, Prediction::epsilon, 1000);
  }
  SECTION("fixed large variance") {
    check_distribution(schedule, DDPM{DDPMOptions{DDPMVariance::fixed_large, {}}},
                       Prediction::epsilon, 1000);
  }
  SECTION("learned range (DiT's 2C output)") {
    check_distribution(schedule, DDPM{DDPMOptions{DDPMVariance::learned_range, {}}},
                       Prediction::epsilon_learned_sigma, 1000);
  }
  SECTION("DDIM with eta = 1") {
    check_distribution(schedule, DDIM{DDIMOptions{1.0, {}}}, Prediction::epsilon, 1000);
  }
}

TEST_CASE("Solver options are validated", "[solver][errors]") {
  CHECK_THROWS_WITH(DDIM(DDIMOptions{-0.5, {}}), Catch::Contains("eta = -0.5"));
  CHECK_THROWS_WITH(DDIM(DDIMOptions{NAN, {}}), Catch::Contains("eta"));
  CHECK_THROWS_WITH(DDIM(DDIMOptions{0.0, 0.0f}), Catch::Contains("clip_sample = 0"));
  CHECK_THROWS_WITH(DDPM(DDPMOptions{DDPMVariance::fixed_small, -1.0f}),
                    Catch::Contains("clip_sample = -1"));

  // learned_range needs a model that outputs the variance channels.
  ExactDenoiser eps_only(shape, curved_data(), Prediction::epsilon);
  DDPM ddpm(DDPMOptions{DDPMVariance::learned_range, {}});
  Tensor x(1, shape);
  SampleOptions options;
  options.steps = 5;
  CHECK_THROWS_WITH(sample(eps_only, DiscreteSchedule{}, ddpm, x, Labels{}, options),
                    Catch::Contains("learned_range") && Catch::Contains("epsilon"));
}
