// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "tstitch/core/denoiser.hpp"
#include "tstitch/core/error.hpp"
#include "tstitch/core/tensor.hpp"

/// Denoisers that are exact for known data, so solvers and stitching can be tested against truth:
/// the tests' oracle, which the quickstart and the analytic demo borrow (they have no model files).
namespace tstitch::analytic {

/// A diagonal Gaussian over latents of one shape: every element e of a sample is independent,
/// x0[e] ~ N(mean[e], variance[e]).
struct DiagonalGaussian {
  std::vector<double> mean;
  std::vector<double> variance;

  [[nodiscard]] std::size_t size() const { return mean.size(); }

  /// Where the probability-flow ODE takes x_t from point t to point s: for Gaussian data every
  /// element keeps its standardised value (x - alpha mu) / sqrt(alpha^2 v + sigma^2), exactly.
  [[nodiscard]] double flow(std::size_t e, double x_t, const TimePoint& t,
                            const TimePoint& s) const {
    const double mu = mean[e], v = variance[e];
    const double spread_t = std::sqrt(t.alpha * t.alpha * v + t.sigma * t.sigma);
    const double spread_s = std::sqrt(s.alpha * s.alpha * v + s.sigma * s.sigma);
    return s.alpha * mu + spread_s / spread_t * (x_t - t.alpha * mu);
  }
};

/// Class labels, one per batch row; -1 (or an empty vector, for every row) means unconditional.
using Labels = std::vector<int>;

/// The exact (Bayes-optimal) denoiser for a mixture of diagonal Gaussians with given weights.
/// Conditioned on label k it is exact for component k alone; unconditionally (label -1) for the
/// whole mixture, so classifier-free guidance has real conditional and unconditional branches.
///
/// For x_t = alpha x0 + sigma eps and component k with m_k = alpha^2 v_k + sigma^2 (per element):
///   E[x0 | x_t, k]  = mu_k + alpha v_k (x_t - alpha mu_k) / m_k
///   E[eps | x_t, k] = sigma (x_t - alpha mu_k) / m_k
/// and the mixture weights them by the posterior responsibilities p(k | x_t).
class ExactDenoiser {
public:
  using condition_type = Labels;

  ExactDenoiser(Shape shape, std::vector<DiagonalGaussian> components, std::vector<double> weights,
                Prediction prediction = Prediction::epsilon)
      : shape_(shape), components_(std::move(components)), prediction_(prediction) {
    require(!components_.empty(), "components.size()", 0, "must be at least 1");
    require(weights.size() == components_.size(), "weights.size()", weights.size(),
            detail::concat("must equal components.size(), ", components_.size()));
    double total = 0;
    for (std::size_t k = 0; k < components_.size(); ++k) {
      const DiagonalGaussian& g = components_[k];
      const auto n = static_cast<std::size_t>(shape.numel());
      require(g.mean.size() == n && g.variance.size() == n,
              detail::concat("components[", k, "] size"), g.mean.size(),
              detail::concat("must equal the shape's C*H*W, ", n));
      for (double v : g.variance)
        require(v >= 0 && std::isfinite(v), detail::concat("components[", k, "] variance"), v,
                "must be finite and >= 0");
      require(weights[k] > 0 && std::isfinite(weights[k]), detail::concat("weights[", k, "]"),
              weights[k], "must be finite and > 0");
      total += weights[k];
    }
    for (double w : weights)
      log_weights_.push_back(std::log(w / total));
  }

  /// One Gaussian component: an unconditional model of Gaussian data.
  ExactDenoiser(Shape shape, DiagonalGaussian data, Prediction prediction = Prediction::epsilon)
      : ExactDenoiser(shape, std::vector<DiagonalGaussian>{std::move(data)}, {1.0}, prediction) {}

  [[nodiscard]] Prediction prediction() const { return prediction_; }
  [[nodiscard]] Shape latent_shape() const { return shape_; }
  [[nodiscard]] Labels unconditional(const Labels& labels) const {
    return Labels(labels.size(), -1);
  }
  [[nodiscard]] const std::vector<DiagonalGaussian>& components() const { return components_; }

  void predict(ConstView x, const StepContext& ctx, const Labels& labels, View out) const {
    const auto n = static_cast<std::size_t>(shape_.numel());
    require(x.shape() == shape_, "x shape", x.shape(), "must equal the denoiser's latent shape");
    require(out.batch() == x.batch() &&
                out.shape().channels == output_channels(prediction_, shape_.channels),
            "out shape", shape_string(out), "must match the batch and the raw output channels");
    require(labels.empty() || labels.size() == static_cast<std::size_t>(x.batch()), "labels.size()",
            labels.size(), detail::concat("must be 0 or the batch, ", x.batch()));
    const double alpha = ctx.point.alpha, sigma = ctx.point.sigma;
    std::vector<double> responsibility(components_.size());
    for (std::int64_t row = 0; row < x.batch(); ++row) {
      const float* xr = &x.at(row, 0, 0, 0);
      float* outr = &out.at(row, 0, 0, 0);
      const int label = labels.empty() ? -1 : labels[static_cast<std::size_t>(row)];
      if (label < -1 || label >= static_cast<int>(components_.size()))
        throw_invalid_argument(detail::concat("labels[", row, "]"), label,
                               detail::concat("must be -1 or in [0, ", components_.size(), ")"));
      responsibilities(xr, alpha, sigma, label, responsibility);
      for (std::size_t e = 0; e < n; ++e) {
        double x0 = 0, eps = 0;
        for (std::size_t k = 0; k < components_.size(); ++k) {
          if (responsibility[k] == 0)
            continue;
          const double mu = components_[k].mean[e], v = components_[k].variance[e];
          const double residual = (xr[e] - alpha * mu) / (alpha * alpha * v + sigma * sigma);
          x0 += responsibility[k] * (mu + alpha * v * residual);
          eps += responsibility[k] * sigma * residual;
        }
        write_prediction(outr, e, n, x0, eps, alpha, sigma);
      }
    }
  }

private:
  void responsibilities(const float* x, double alpha, double sigma, int label,
                        std::vector<double>& r) const {
    if (label >= 0) {
      std::fill(r.begin(), r.end(), 0.0);
      r[static_cast<std::size_t>(label)] = 1.0;
      return;
    }
    double best = -INFINITY;
    for (std::size_t k = 0; k < components_.size(); ++k) {
      double log_p = log_weights_[k];
      for (std::size_t e = 0; e < components_[k].size(); ++e) {
        const double m = alpha * alpha * components_[k].variance[e] + sigma * sigma;
        const double d = x[e] - alpha * components_[k].mean[e];
        log_p -= 0.5 * (d * d / m + std::log(m));
      }
      r[k] = log_p;
      best = std::max(best, log_p);
    }
    double total = 0;
    for (double& v : r)
      total += (v = std::exp(v - best));
    for (double& v : r)
      v /= total;
  }

  void write_prediction(float* out, std::size_t e, std::size_t n, double x0, double eps,
                        double alpha, double sigma) const {
    switch (prediction_) {
    case Prediction::epsilon:
      out[e] = static_cast<float>(eps);
      break;
    case Prediction::v:
      out[e] = static_cast<float>(alpha * eps - sigma * x0);
      break;
    case Prediction::sample:
      out[e] = static_cast<float>(x0);
      break;
    case Prediction::flow:
      out[e] = static_cast<float>(eps - x0);
      break;
    case Prediction::epsilon_learned_sigma:
      out[e] = static_cast<float>(eps);
      out[n + e] = 0.0f; // the geometric mean of beta_t and the posterior variance
      break;
    }
  }

  Shape shape_;
  std::vector<DiagonalGaussian> components_;
  std::vector<double> log_weights_;
  Prediction prediction_;
};

} // namespace tstitch::analytic
