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

struct DDIMOptions {
  /// 0: deterministic DDIM; 1: the DDPM posterior variance (Song et al. eq. 16).
  double eta = 0.0;
  /// Clip x0 to [-r, r] before stepping (diffusers' clip_sample / clip_sample_range). As in
  /// diffusers, eps is not recomputed from the clipped x0.
  std::optional<float> clip_sample;
  /// Dynamic thresholding of x0 (diffusers' thresholding=True; Saharia et al. 2022), per sample,
  /// before stepping; eps is kept, as with clip_sample. When set, clip_sample is not applied:
  /// diffusers checks thresholding first and clips only without it (DeepFloyd IF's configs set
  /// both). Unset: off.
  std::optional<DynamicThresholding> thresholding = std::nullopt;

  friend bool operator==(const DDIMOptions&, const DDIMOptions&) = default;
};

/// DDIM (Song et al. 2021): x_s = alpha_s x0 + sqrt(sigma_s^2 - c^2) eps + c z, with
/// c = eta * sqrt(posterior variance). Matches diffusers' DDIMScheduler on the same trajectory.
class DDIM {
public:
  explicit DDIM(DDIMOptions options = {}) : options_(options) {
    require(std::isfinite(options.eta) && options.eta >= 0, "DDIMOptions::eta", options.eta,
            "must be finite and >= 0");
    if (options.clip_sample)
      require(*options.clip_sample > 0, "DDIMOptions::clip_sample", *options.clip_sample,
              "must be > 0");
    multistep::validate("DDIMOptions", 1, options.thresholding);
  }

  [[nodiscard]] const DDIMOptions& options() const { return options_; }

  template <class Backend>
  void begin(Backend& backend, const Trajectory& trajectory, std::int64_t batch, Shape shape) {
    // Towards noise (an inversion) the posterior variance is negative: no stochastic DDIM there.
    if (options_.eta > 0)
      for (int i = 0; i < trajectory.steps(); ++i)
        require(!(trajectory[i + 1].ve_sigma() > trajectory[i].ve_sigma()), "DDIMOptions::eta",
                options_.eta, "must be 0 on a trajectory towards noise (an inversion)");
    if (options_.eta > 0)
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
    const double noise_std = options_.eta * std::sqrt(std::max(0.0, posterior_variance(t, s)));
    const auto x0_coeff = static_cast<float>(s.alpha);
    const auto eps_coeff =
        static_cast<float>(std::sqrt(std::max(0.0, s.sigma * s.sigma - noise_std * noise_std)));
    float clip = options_.clip_sample.value_or(0.0f);
    ConstView x0 = out.x0;
    if (options_.thresholding) {
      thresholder_.apply(backend, *options_.thresholding, out.x0, x0_.view());
      x0 = x0_.view();
      clip = 0.0f;
    }
    if (noise_std > 0) {
      backend.fill_normal(noise_.view(), step.noise);
      backend.map(x, ClippedCombination{x0_coeff, eps_coeff, static_cast<float>(noise_std), clip},
                  x0, out.eps, ConstView(noise_.view()));
    } else if (clip > 0) {
      backend.map(x, ClippedCombination{x0_coeff, eps_coeff, 0.0f, clip}, x0, out.eps);
    } else {
      backend.combine(x, Term{x0_coeff, x0}, Term{eps_coeff, out.eps});
    }
  }

private:
  DDIMOptions options_;
  AnyTensor noise_;
  AnyTensor x0_; // the thresholded x0
  multistep::Thresholder thresholder_;
};

} // namespace tstitch
