// SPDX-License-Identifier: Apache-2.0
// The README's example: stitch two denoisers and sample. Here both are exact denoisers of a
// Gaussian (stand-ins for a small and a large network); plug in your own types the same way.
#include <cstdio>

#include "tstitch/tstitch.hpp"

#include "support/gaussian_mixture.hpp" // exact denoisers for known data (tests/support)

int main() {
  using namespace tstitch;
  const Shape latent{4, 32, 32};

  // Any type with condition_type, prediction(), latent_shape() and predict() is a Denoiser.
  analytic::DiagonalGaussian data{std::vector<double>(4 * 32 * 32, 0.0),
                                  std::vector<double>(4 * 32 * 32, 0.5)};
  analytic::ExactDenoiser small(latent, data, Prediction::epsilon);
  analytic::ExactDenoiser large(latent, data, Prediction::v);

  // The small model serves the first 40% of the steps, the large one the rest.
  TrajectoryStitcher stitcher(small, large, 0.4);
  stitcher.set_names({"small", "large"});

  const DiscreteSchedule schedule; // DDPM linear betas, 1000 training steps
  DDIM solver;
  SampleOptions options;
  options.steps = 50;
  options.seed = 42;              // one seed for the whole run: x_T and any solver noise
  Tensor x(2, latent);            // a batch of 2
  fill_initial_noise(x, options); // x_T
  options.guidance = Guidance::standard(1.5); // needs an unconditional branch: see below
  const analytic::Labels labels{0, 0};        // the exact denoiser provides unconditional(labels)
  const SampleResult result = sample(stitcher, schedule, solver, x, labels, options);

  for (const StepRecord& r : result.records)
    if (r.step % 10 == 0 || r.step == 19 || r.step == 20)
      std::printf("step %2d  %-5s  t = %5.1f  sigma = %.4f  %.1f us\n", r.step,
                  stitcher.model_name(r.model).c_str(), r.timestep, r.sigma, r.seconds * 1e6);
  std::printf("switches: %d, x[0] = %.4f\n", result.switches, static_cast<double>(x[0]));
}
