// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <cmath>
#include <optional>

#include "tstitch/core/config.hpp"
#include "tstitch/core/error.hpp"
#include "tstitch/solver/clip.hpp"
#include "tstitch/solver/concept.hpp"
#include "tstitch/solver/multistep.hpp"
#include "tstitch/solver/posterior.hpp"

namespace tstitch {

/// The variance of DDPM's reverse step (Ho et al. 2020; Nichol & Dhariwal 2021).
enum class DDPMVariance {
  fixed_small,   ///< the posterior variance beta_t (1 - abar_s) / (1 - abar_t)
  fixed_large,   ///< the transition variance beta_t
  learned_range, ///< exp(f log beta_t + (1 - f) log posterior), f = (v + 1) / 2 from the model's
                 ///< extra channels (DiT, improved DDPM); needs an epsilon_learned_sigma model
};

struct DDPMOptions {
  DDPMVariance variance = DDPMVariance::fixed_small;
  /// Clip x0 to [-r, r] before taking the posterior mean (diffusers' clip_sample; DiT: off).
  std::optional<float> clip_sample;
  /// Dynamic thresholding of x0 before taking the posterior mean (diffusers' thresholding=True;
  /// Saharia et al. 2022, written for pixel-space models such as DeepFloyd IF). When set,
  /// clip_sample is not applied, as in diffusers (IF's configs set both). Unset: off.
  std::optional<DynamicThresholding> thresholding = std::nullopt;

  friend bool operator==(const DDPMOptions&, const DDPMOptions&) = default;
};

/// Ancestral DDPM sampling: x_s ~ N(posterior mean(x_t, x0), variance). The step into a clean
/// point (sigma_s = 0) returns the mean, i.e. x0, and draws no noise.
class DDPM {
public:
  explicit DDPM(DDPMOptions options = {}) : options_(options) {
    if (options.clip_sample)
      require(*options.clip_sample > 0, "DDPMOptions::clip_sample", *options.clip_sample,
              "must be > 0");
    multistep::validate("DDPMOptions", 1, options.thresholding);
  }

  [[nodiscard]] const DDPMOptions& options() const { return options_; }

  template <class Backend>
  void begin(Backend& backend, const Trajectory& trajectory, std::int64_t batch, Shape shape) {
    require_towards_data(trajectory, "DDPM");
    ensure_workspace(backend, noise_, batch, shape);
    if (options_.thresholding) {
      ensure_workspace(backend, x0_, batch, shape);
      thresholder_.reserve(shape.numel());
    }
  }

  template <class Backend>
  void update(Backend& backend, const SolverStep& step, const ModelOutput& out, View x) {
    const TimePoint& t = step.from();
    const TimePoint& s = step.to();
    const PosteriorMean mean = posterior_mean(t, s);
    const double beta = transition_variance(t, s);
    const double posterior = posterior_variance(t, s);
    ConstView x0 = out.x0;
    float clip = options_.clip_sample.value_or(0.0f);
    if (options_.thresholding) {
      thresholder_.apply(backend, *options_.thresholding, out.x0, x0_.view());
      x0 = x0_.view();
      clip = 0.0f;
    }
    const ClippedCombination mean_step{static_cast<float>(mean.x0_coeff),
                                       static_cast<float>(mean.xt_coeff), 0.0f, clip};
    const ConstView x_in = x;

    if (s.sigma == 0 || posterior <= 0) { // into a clean point: the mean, no noise
      backend.map(x, mean_step, x0, x_in);
      return;
    }
    backend.fill_normal(noise_.view(), step.noise);
    const ConstView z = noise_.view();
    switch (options_.variance) {
    case DDPMVariance::fixed_small:
    case DDPMVariance::fixed_large: {
      const double variance = options_.variance == DDPMVariance::fixed_small ? posterior : beta;
      ClippedCombination with_noise = mean_step;
      with_noise.noise_coeff = static_cast<float>(std::sqrt(variance));
      backend.map(x, with_noise, x0, x_in, z);
      return;
    }
    case DDPMVariance::learned_range: {
      if (out.prediction != Prediction::epsilon_learned_sigma)
        throw_invalid_argument("model prediction at step " + std::to_string(step.step),
                               to_string(out.prediction),
                               "DDPMVariance::learned_range needs an epsilon_learned_sigma model");
      const std::int64_t c = x.shape().channels;
      backend.map(x,
                  LearnedRange{mean_step, static_cast<float>(std::log(posterior)),
                               static_cast<float>(std::log(beta))},
                  x0, x_in, z, out.raw.channels(c, c));
      return;
    }
    }
  }

  // Element-wise functors passed to backend.map. Public only because nvcc cannot instantiate a
  // kernel template (cuda::Backend::map) with a private nested type; not part of the API.
  struct LearnedRange {
    ClippedCombination mean; // its two-argument form: the posterior mean
    float min_log, max_log;  // log posterior variance, log beta
    TSTITCH_HOST_DEVICE float operator()(float x0, float xt, float z, float v) const {
      const float frac = (v + 1.0f) * 0.5f;
      const float log_variance = frac * max_log + (1.0f - frac) * min_log;
      return mean(x0, xt) + std::exp(0.5f * log_variance) * z;
    }
  };

private:
  DDPMOptions options_;
  AnyTensor noise_;
  AnyTensor x0_; // the thresholded x0
  multistep::Thresholder thresholder_;
};

} // namespace tstitch
