// SPDX-License-Identifier: Apache-2.0
//
// Two ways to bring your own noise schedule:
//  1. a ContinuousSchedule from a function of model time (here: log-SNR falling linearly), and
//  2. a DiscreteSchedule from your own training betas (here: a quadratic beta ramp),
// then the first points of their 10-step sampling trajectories.

#include <cmath>
#include <cstddef>
#include <cstdio>
#include <vector>

#include "tstitch/core/step.hpp"
#include "tstitch/schedule/continuous.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/schedule/trajectory.hpp"

namespace {

void print_trajectory(const char* name, const tstitch::Trajectory& traj, int count) {
  std::printf("%s: %d steps, horizon T = %g\n", name, traj.steps(), traj.num_train_timesteps);
  std::printf("  %4s %12s %12s %12s %14s\n", "i", "timestep", "alpha", "sigma", "sigma/alpha");
  for (int i = 0; i < count && i <= traj.steps(); ++i) {
    const tstitch::TimePoint& p = traj[i];
    std::printf("  %4d %12.4f %12.8f %12.8f %14.6f\n", i, p.timestep, p.alpha, p.sigma,
                p.ve_sigma());
  }
  const tstitch::TimePoint& last = traj[traj.steps()];
  std::printf("  ...  end: timestep %g, alpha %g, sigma %g\n\n", last.timestep, last.alpha,
              last.sigma);
}

} // namespace

int main() {
  // 1. Variance-preserving schedule whose log-SNR lambda = log(alpha^2 / sigma^2) falls linearly
  //    from +10 at t = 0 to -10 at t = 1: alpha^2 = sigmoid(lambda), sigma^2 = sigmoid(-lambda).
  //    Uniform steps in t are then uniform steps in log-SNR. The schedule replaces the returned
  //    timestep with t.
  const auto log_snr_linear = [](double t) {
    const double lambda = 10.0 - 20.0 * t;
    const double alpha = std::sqrt(1.0 / (1.0 + std::exp(-lambda)));
    const double sigma = std::sqrt(1.0 / (1.0 + std::exp(lambda)));
    return tstitch::TimePoint{t, alpha, sigma};
  };
  const tstitch::ContinuousSchedule continuous(log_snr_linear, /*t_start=*/1.0, /*t_end=*/0.0);
  print_trajectory("log-SNR-linear ContinuousSchedule", continuous.trajectory(10), 4);
  std::printf("  timestep_at(sigma/alpha = 1) = %.9f (lambda = 0 at t = 0.5)\n\n",
              continuous.timestep_at(1.0));

  // 2. A DDPM schedule from your own betas: quadratic in the index, 1e-4 .. 0.02 over 1000 steps.
  //    The table is stored the torch-float32 way, so diffusers' `trained_betas=` gives the same
  //    numbers. Trailing spacing starts at the noisiest training step (999, 899, ...).
  const int num_train = 1000;
  std::vector<double> betas(static_cast<std::size_t>(num_train));
  for (int i = 0; i < num_train; ++i) {
    const double u = static_cast<double>(i) / (num_train - 1);
    betas[static_cast<std::size_t>(i)] = 1e-4 + (0.02 - 1e-4) * u * u;
  }
  tstitch::DiscreteScheduleOptions options;
  options.spacing = tstitch::TimestepSpacing::trailing;
  const auto discrete = tstitch::DiscreteSchedule::from_betas(betas, options);
  print_trajectory("quadratic-beta DiscreteSchedule (trailing)", discrete.trajectory(10), 4);

  // The same table with Karras sigmas (DPM-Solver++ "Karras" in most UIs).
  options.sigma_spacing = tstitch::SigmaSpacing::karras;
  const auto karras = tstitch::DiscreteSchedule::from_betas(betas, options);
  print_trajectory("quadratic-beta DiscreteSchedule (karras)", karras.trajectory(10), 4);
  return 0;
}
