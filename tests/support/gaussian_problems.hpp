// SPDX-License-Identifier: Apache-2.0
// Exactly solvable problems for the solver tests: Gaussian data (analytic::DiagonalGaussian), whose
// exact denoiser and probability-flow solution are known in closed form, the schedules the tests
// run them on, and what the tests measure with them: the distance to the exact flow, the
// convergence order, and the mean and variance of a sampled distribution.
#pragma once

#include <catch2/catch.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numbers>
#include <vector>

#include "gaussian_mixture.hpp"
#include "tstitch/sample.hpp"
#include "tstitch/schedule/continuous.hpp"

namespace tstitch::testing {

// ---- schedules ----------------------------------------------------------------------------------

// Schedules with steps uniform in t that end exactly at sigma = 0, so the step size halves when n
// doubles. The cosine one starts just short of pure noise (alpha > 0), where epsilon models are
// singular; the flow one at alpha = 0.
inline const ContinuousSchedule cosine = ContinuousSchedule::cosine(0.98, 0.0);
inline const ContinuousSchedule flow = ContinuousSchedule::linear_flow();

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

// ---- the data -----------------------------------------------------------------------------------

/// A diagonal Gaussian over `shape` whose means and variances vary along the elements (a sine
/// and a period-5 ramp), shifted by mean_offset and scaled by variance_scale: distinct data for
/// distinct (offset, scale), so models trained on them really differ.
inline analytic::DiagonalGaussian varied_gaussian(Shape shape, double mean_offset,
                                                  double variance_scale) {
  analytic::DiagonalGaussian g;
  for (std::int64_t e = 0; e < shape.numel(); ++e) {
    g.mean.push_back(mean_offset + 0.5 * std::sin(0.7 * static_cast<double>(e)));
    g.variance.push_back(variance_scale * (0.05 + 0.1 * static_cast<double>(e % 5)));
  }
  return g;
}

/// The exact denoiser of a two-component mixture of varied Gaussians (at +offset and -offset,
/// weights 0.4 and 0.6): distinct (offset, spread) give distinct "small" and "large" models, so a
/// routing shows in the result.
inline analytic::ExactDenoiser two_component_mixture(Shape shape, double offset, double spread) {
  return analytic::ExactDenoiser(
      shape,
      {varied_gaussian(shape, offset, spread), varied_gaussian(shape, -offset, 0.5 * spread)},
      {0.4, 0.6});
}

/// The per-sample shape of curved_data().
inline constexpr Shape curved_shape{3, 4, 4};

inline analytic::DiagonalGaussian curved_data() {
  // Variances far from 1 bend the probability-flow trajectories.
  analytic::DiagonalGaussian g;
  for (std::int64_t e = 0; e < curved_shape.numel(); ++e) {
    g.mean.push_back(0.8 * std::sin(1.3 * static_cast<double>(e)));
    g.variance.push_back(0.02 + 0.08 * static_cast<double>(e % 6));
  }
  return g;
}

// ---- distance to the exact probability-flow solution --------------------------------------------

/// RMS distance of a solver's result to the exact probability-flow solution from the same x_T.
template <class Schedule, class SolverT>
double ode_error(const Schedule& schedule, SolverT solver, Prediction prediction, int n) {
  const analytic::DiagonalGaussian data = curved_data();
  analytic::ExactDenoiser model(curved_shape, data, prediction);
  Tensor x(8, curved_shape);
  fill_initial_noise(x, 17);
  const Tensor x_start = x;
  SampleOptions options;
  options.steps = n;
  sample(model, schedule, solver, x, analytic::Labels{}, options);
  const Trajectory trajectory = schedule.trajectory(n);
  double sum = 0;
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    const auto e = static_cast<std::size_t>(i % curved_shape.numel());
    const double exact = data.flow(e, x_start[i], trajectory[0], trajectory[n]);
    sum += (x[i] - exact) * (x[i] - exact);
  }
  return std::sqrt(sum / static_cast<double>(x.numel()));
}

/// The exact probability-flow solution at trajectory point k from x_start at point 0.
inline Tensor exact_flow(const analytic::DiagonalGaussian& data, const Tensor& x_start,
                         const Trajectory& trajectory, int k) {
  Tensor exact(x_start.batch(), curved_shape);
  for (std::int64_t i = 0; i < exact.numel(); ++i)
    exact[i] = static_cast<float>(data.flow(static_cast<std::size_t>(i % curved_shape.numel()),
                                            x_start[i], trajectory[0], trajectory[k]));
  return exact;
}

inline double rms_distance(const Tensor& a, const Tensor& b) {
  double sum = 0;
  for (std::int64_t i = 0; i < a.numel(); ++i)
    sum += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
  return std::sqrt(sum / static_cast<double>(a.numel()));
}

/// RMS error against the exact flow at the middle of an n-step run (n even) on CosineSchedule:
/// the lower-order final steps and the first-order step into sigma = 0 (whose O(sigma^2) error is
/// second order by construction) lie beyond it. sample() is stopped there through on_step.
template <class SolverT> double midpoint_error(SolverT solver, int n) {
  const CosineSchedule schedule;
  const analytic::DiagonalGaussian data = curved_data();
  analytic::ExactDenoiser model(curved_shape, data, Prediction::epsilon);
  Tensor x(8, curved_shape);
  fill_initial_noise(x, 17);
  const Tensor x_start = x;
  SampleOptions options;
  options.steps = n;
  options.on_step = [n](const StepRecord& r) { return r.step + 1 < n / 2; };
  sample(model, schedule, solver, x, analytic::Labels{}, options);
  return rms_distance(x, exact_flow(data, x_start, schedule.trajectory(n), n / 2));
}

/// As midpoint_error, but with exact starting values, the setting in which a multistep method's
/// order is defined: after each of the first `warm_up` steps the latents are replaced by the
/// exact flow, so the stored outputs are those of the exact solution. (With the solver's own
/// first-order start, a method of order >= 3 is second order wherever x0 varies at the start.)
template <class SolverT> double exact_start_error(SolverT solver, int n, int warm_up) {
  const CosineSchedule schedule;
  const analytic::DiagonalGaussian data = curved_data();
  analytic::ExactDenoiser model(curved_shape, data, Prediction::sample);
  const Trajectory trajectory = schedule.trajectory(n);
  Tensor x(8, curved_shape);
  fill_initial_noise(x, 17);
  const Tensor x_start = x;
  Tensor x0(8, curved_shape), eps(8, curved_shape);
  HostBackend backend;
  solver.begin(backend, trajectory, x.batch(), curved_shape);
  for (int i = 0; i < n / 2; ++i) {
    const TimePoint& p = trajectory[i];
    model.predict(x, StepContext{i, n, 0, p}, analytic::Labels{}, x0);
    for (std::int64_t e = 0; e < x.numel(); ++e)
      eps[e] = static_cast<float>((x[e] - p.alpha * x0[e]) / p.sigma);
    const ModelOutput out{x0.view(), eps.view(), x0.view(), Prediction::sample};
    solver.update(backend, SolverStep{i, 0, &trajectory, NoiseKey{}}, out, x.view());
    if (i + 1 < warm_up)
      x = exact_flow(data, x_start, trajectory, i + 1);
  }
  return rms_distance(x, exact_flow(data, x_start, trajectory, n / 2));
}

/// The global error at the middle of an n-step run of a linear multistep recursion in double,
///   y_{i+1} = y_i + sum_j c_j eps_{i-j},   c = weights(t, i, order),
/// on scalar Gaussian data (mean 0.3, variance 0.05) in y = x / alpha, s = sigma / alpha
/// (k-diffusion coordinates), where dy/ds = eps = (y - x0) / s with the exact
/// x0 = m + v / (v + s^2) (y - m) and the exact flow y(s) = m + (y0 - m) sqrt((v + s^2) / (v +
/// s0^2)). The nodes are the VE sigmas of t, CosineSchedule's n-step trajectory (non-uniform in s);
/// the first order - 1 points are exact. This is the method's order, free of the float32 rounding
/// of the latents (about 3e-7), which hides orders 3 and 4 before their errors settle into their
/// asymptotic rate.
template <class Weights> double recursion_error(int order, int n, Weights weights) {
  const Trajectory t = CosineSchedule{}.trajectory(n);
  const double m = 0.3, v = 0.05, y0 = 2.0, s0 = t[0].ve_sigma();
  const auto exact = [&](double s) {
    return m + (y0 - m) * std::sqrt((v + s * s) / (v + s0 * s0));
  };
  const auto slope = [&](double y, double s) { return (y - (m + v / (v + s * s) * (y - m))) / s; };
  std::vector<double> y{y0}, eps;
  for (int i = 0; i < n / 2; ++i) {
    eps.push_back(slope(y[static_cast<std::size_t>(i)], t[i].ve_sigma()));
    if (i + 1 < order) {
      y.push_back(exact(t[i + 1].ve_sigma()));
      continue;
    }
    const auto c = weights(t, i, order);
    double next = y[static_cast<std::size_t>(i)];
    for (int j = 0; j < order; ++j)
      next += c[static_cast<std::size_t>(j)] * eps[static_cast<std::size_t>(i - j)];
    y.push_back(next);
  }
  return std::abs(y.back() - exact(t[n / 2].ve_sigma()));
}

// ---- convergence order --------------------------------------------------------------------------

/// How measured_order averages log n and log error. The two round differently, nothing more;
/// each test keeps the arithmetic its expected orders were measured with.
enum class Averaging {
  divide_each_term, ///< mean = sum of (term / count)
  divide_the_sum    ///< mean = (sum of terms) / count
};

/// Least-squares slope of log(error(n)) against log(n) over `steps`, negated: the measured order.
/// Checks that every error is positive.
template <class Error>
double measured_order(Error error, const std::vector<int>& steps,
                      Averaging averaging = Averaging::divide_each_term) {
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
    if (averaging == Averaging::divide_each_term) {
      mean_x += log_n[i] / count;
      mean_y += log_err[i] / count;
    } else {
      mean_x += log_n[i];
      mean_y += log_err[i];
    }
  }
  if (averaging == Averaging::divide_the_sum) {
    mean_x /= count;
    mean_y /= count;
  }
  double sxy = 0, sxx = 0;
  for (std::size_t i = 0; i < log_n.size(); ++i) {
    sxy += (log_n[i] - mean_x) * (log_err[i] - mean_y);
    sxx += (log_n[i] - mean_x) * (log_n[i] - mean_x);
  }
  return -sxy / sxx;
}

/// The measured order of ode_error(schedule, solver, prediction, n) over `steps`.
template <class Schedule, class SolverT>
double measured_order(const Schedule& schedule, SolverT solver, Prediction prediction,
                      const std::vector<int>& steps,
                      Averaging averaging = Averaging::divide_each_term) {
  return measured_order([&](int n) { return ode_error(schedule, solver, prediction, n); }, steps,
                        averaging);
}

// ---- sampled distributions ----------------------------------------------------------------------

/// The data of the distribution checks: two channels, each one 1-D Gaussian.
inline constexpr double stat_mean[] = {-0.6, 0.5}, stat_variance[] = {0.5, 2.0};

/// The data of the distribution checks on per-sample shape s (two channels).
inline analytic::DiagonalGaussian channel_gaussians(Shape s) {
  analytic::DiagonalGaussian data;
  for (int c = 0; c < 2; ++c)
    for (std::int64_t p = 0; p < s.plane(); ++p) {
      data.mean.push_back(stat_mean[c]);
      data.variance.push_back(stat_variance[c]);
    }
  return data;
}

/// x_T from the exact marginal at `start`, given standard normal x.
inline void to_marginal(Tensor& x, const analytic::DiagonalGaussian& data, const TimePoint& start) {
  const std::int64_t per_sample = x.shape().numel();
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    const auto e = static_cast<std::size_t>(i % per_sample);
    x[i] = static_cast<float>(
        start.alpha * data.mean[e] +
        std::sqrt(start.alpha * start.alpha * data.variance[e] + start.sigma * start.sigma) * x[i]);
  }
}

/// The latents after `steps` steps of `solver` with `model` on `schedule` (options.seed = 5), from
/// a batch of 8 of `shape` drawn from the exact marginal of `data` at the first point
/// (fill_initial_noise(x, 31) through to_marginal).
template <class Model, class Schedule, class SolverT, class Condition>
Tensor sample_from_marginal(Model& model, const Schedule& schedule, SolverT& solver,
                            const analytic::DiagonalGaussian& data, Shape shape, int steps,
                            const Condition& condition) {
  Tensor x(8, shape);
  fill_initial_noise(x, 31);
  to_marginal(x, data, schedule.trajectory(steps)[0]);
  SampleOptions options;
  options.steps = steps;
  options.seed = 5;
  sample(model, schedule, solver, x, condition, options);
  return x;
}

/// Checks the sampled mean and variance of channel c of x (the channel one 1-D Gaussian, its
/// elements independent samples) against `mean` and `variance`, within 3 standard errors, from at
/// least 20000 samples.
inline void check_channel_moments(const Tensor& x, int c, double mean, double variance) {
  double sum = 0, sum2 = 0, count = 0;
  for (std::int64_t n = 0; n < x.batch(); ++n)
    for (std::int64_t p = 0; p < x.shape().plane(); ++p) {
      const double v = x.at(n, c, 0, p);
      sum += v;
      sum2 += v * v;
      count += 1;
    }
  const double sample_mean = sum / count;
  const double sample_variance = (sum2 - sum * sum / count) / (count - 1);
  const double mean_se = std::sqrt(variance / count);
  const double var_se = variance * std::sqrt(2.0 / (count - 1));
  INFO("channel " << c << " (" << count << " samples): mean " << sample_mean << " (expected "
                  << mean << ", SE " << mean_se << "), variance " << sample_variance
                  << " (expected " << variance << ", SE " << var_se << ")");
  CHECK(count >= 20000);
  CHECK(std::abs(sample_mean - mean) < 3 * mean_se);
  CHECK(std::abs(sample_variance - variance) < 3 * var_se);
}

/// Samples with a stochastic solver from the exact marginal at the first point and checks the
/// final mean and variance against the data, within 3 standard errors. The data are two channels
/// of 50x50 elements, each channel one 1-D Gaussian; elements are independent, so a batch of 8
/// gives 20000 independent samples per channel.
template <class SolverT, class Schedule>
void check_distribution(const Schedule& schedule, SolverT solver, Prediction prediction,
                        int steps) {
  const Shape shape2{2, 50, 50};
  const analytic::DiagonalGaussian data = channel_gaussians(shape2);
  analytic::ExactDenoiser model(shape2, data, prediction);
  const Tensor x =
      sample_from_marginal(model, schedule, solver, data, shape2, steps, analytic::Labels{});
  for (int c = 0; c < 2; ++c)
    check_channel_moments(x, c, stat_mean[c], stat_variance[c]);
}

// ---- degenerate starts --------------------------------------------------------------------------

/// 12 steps of `solver` from pure noise (alpha = 0, lambda = -inf at the start: a flow-matching
/// trajectory), with the exact flow-velocity denoiser of curved_data(); the final latents.
template <class SolverT> Tensor sample_from_pure_noise(SolverT solver) {
  analytic::ExactDenoiser model(curved_shape, curved_data(), Prediction::flow);
  const auto schedule = ContinuousSchedule::linear_flow(1.0, 0.0);
  Tensor x(2, curved_shape);
  fill_initial_noise(x, 3);
  SampleOptions so;
  so.steps = 12;
  sample(model, schedule, solver, x, analytic::Labels{}, so);
  return x;
}

} // namespace tstitch::testing
