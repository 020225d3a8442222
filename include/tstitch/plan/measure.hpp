// SPDX-License-Identifier: Apache-2.0
#pragma once

// Measuring what one model evaluation costs, for the planner (plan/planner.hpp): warm-up calls,
// then the median of timed repeats, on the batch the run will use.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <functional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "tstitch/core/denoiser.hpp"
#include "tstitch/core/error.hpp"
#include "tstitch/core/step.hpp"
#include "tstitch/core/tensor.hpp"

namespace tstitch::plan {

/// A clock: seconds since any fixed origin. Injectable so that tests time a fake model exactly.
using Clock = std::function<double()>;

/// The monotonic wall clock (std::chrono::steady_clock).
[[nodiscard]] inline double steady_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct MeasureOptions {
  int warmup = 2;  ///< untimed calls first (caches, oneDNN primitives, thread pools)
  int repeats = 5; ///< timed calls; the median is reported, robust to one slow outlier
  Clock clock = steady_seconds;
};

/// The median duration in seconds of `repeats` calls of fn, after `warmup` untimed ones.
template <class F> [[nodiscard]] double median_seconds(F&& fn, const MeasureOptions& options) {
  require(options.warmup >= 0, "MeasureOptions::warmup", options.warmup, "must not be negative");
  require(options.repeats >= 1, "MeasureOptions::repeats", options.repeats, "must be at least 1");
  require(static_cast<bool>(options.clock), "MeasureOptions::clock", "empty",
          "must be a callable returning seconds");
  for (int i = 0; i < options.warmup; ++i)
    fn();
  std::vector<double> times(static_cast<std::size_t>(options.repeats));
  for (double& t : times) {
    const double start = options.clock();
    fn();
    t = options.clock() - start;
    if (!(t >= 0.0 && std::isfinite(t))) // a clock that runs backwards or returns NaN
      throw_invalid_argument("measured duration (s)", t,
                             "must be finite and >= 0; is MeasureOptions::clock monotonic?");
  }
  const auto mid = times.begin() + static_cast<std::ptrdiff_t>(times.size() / 2);
  std::nth_element(times.begin(), mid, times.end());
  if (times.size() % 2 == 1)
    return *mid;
  const double upper = *mid;
  return 0.5 * (upper + *std::max_element(times.begin(), mid));
}

/// Seconds per model evaluation, one entry per model, for one batch size.
struct ModelCosts {
  std::vector<double> seconds;    ///< per evaluation (guided: both predictions of it)
  std::vector<std::string> names; ///< model_name_of(model, 0)
  std::int64_t batch = 0;         ///< rows of x when measured
};

/// Times each model's evaluation of the latents x (host memory) at the step described by ctx:
/// predict(x, ctx, cond), or, when `uncond` is given, both predictions of a classifier-free-guided
/// evaluation (predict_guided_of), as the sampling loop makes them. Models are timed one after
/// the other in the order given; the first is usually the small one.
template <class Cond, Denoiser... Models>
requires(std::same_as<condition_of<Models>, Cond>&&...) [[nodiscard]] ModelCosts
    measure_costs(ConstView x, const StepContext& ctx, const Cond& cond,
                  const std::type_identity_t<Cond>* uncond, const MeasureOptions& options,
                  Models&... models) {
  static_assert(sizeof...(Models) >= 1, "tstitch::plan::measure_costs: give at least one model");
  ModelCosts costs;
  costs.batch = x.batch();
  auto one = [&](auto& model) {
    require(model.latent_shape() == x.shape(), "x shape", x.shape(),
            detail::concat("must be the latent shape of model ", model_name_of(model, 0), ", ",
                           model.latent_shape()));
    const Shape out_shape{raw_output_channels(model), x.shape().height, x.shape().width};
    Tensor out(x.batch(), out_shape);
    Tensor out_uncond(uncond ? x.batch() : 0, out_shape);
    costs.seconds.push_back(median_seconds(
        [&] {
          if (uncond)
            predict_guided_of(model, x, ctx, cond, *uncond, out.view(), out_uncond.view());
          else
            model.predict(x, ctx, cond, out.view());
        },
        options));
    costs.names.push_back(model_name_of(model, 0));
  };
  (one(models), ...);
  return costs;
}

} // namespace tstitch::plan
