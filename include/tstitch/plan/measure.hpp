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

namespace measure_detail {

inline void check_measure_options(const MeasureOptions& options) {
  require(options.warmup >= 0, "MeasureOptions::warmup", options.warmup, "must not be negative");
  require(options.repeats >= 1, "MeasureOptions::repeats", options.repeats, "must be at least 1");
  require(static_cast<bool>(options.clock), "MeasureOptions::clock", "empty",
          "must be a callable returning seconds");
}

inline double median_of(std::vector<double> times) {
  const auto mid = times.begin() + static_cast<std::ptrdiff_t>(times.size() / 2);
  std::nth_element(times.begin(), mid, times.end());
  if (times.size() % 2 == 1)
    return *mid;
  const double upper = *mid;
  return 0.5 * (upper + *std::max_element(times.begin(), mid));
}

template <class F> double timed(F& fn, const MeasureOptions& options) {
  const double start = options.clock();
  fn();
  const double t = options.clock() - start;
  if (!(t >= 0.0 && std::isfinite(t))) // a clock that runs backwards or returns NaN
    throw_invalid_argument("measured duration (s)", t,
                           "must be finite and >= 0; is MeasureOptions::clock monotonic?");
  return t;
}

} // namespace measure_detail

/// The median duration in seconds of `repeats` calls of fn, after `warmup` untimed ones.
template <class F> [[nodiscard]] double median_seconds(F&& fn, const MeasureOptions& options) {
  measure_detail::check_measure_options(options);
  for (int i = 0; i < options.warmup; ++i)
    fn();
  std::vector<double> times(static_cast<std::size_t>(options.repeats));
  for (double& t : times)
    t = measure_detail::timed(fn, options);
  return measure_detail::median_of(std::move(times));
}

/// The median duration of each callable, timed in rounds of one call each (interleaved), so that
/// a change of machine load during the measurement affects all of them alike.
[[nodiscard]] inline std::vector<double>
median_seconds_each(const std::vector<std::function<void()>>& fns, const MeasureOptions& options) {
  measure_detail::check_measure_options(options);
  for (int i = 0; i < options.warmup; ++i)
    for (const auto& fn : fns)
      fn();
  std::vector<std::vector<double>> times(fns.size());
  for (int r = 0; r < options.repeats; ++r)
    for (std::size_t j = 0; j < fns.size(); ++j)
      times[j].push_back(measure_detail::timed(fns[j], options));
  std::vector<double> out;
  for (auto& t : times)
    out.push_back(measure_detail::median_of(std::move(t)));
  return out;
}

/// Seconds per model evaluation, one entry per model, for one batch size.
struct ModelCosts {
  std::vector<double> seconds;    ///< per evaluation (guided: both predictions of it)
  std::vector<std::string> names; ///< model_name_of(model, 0)
  std::int64_t batch = 0;         ///< rows of x when measured
};

/// Times each model's evaluation of the latents x (host memory) at the step described by ctx:
/// predict(x, ctx, cond), or, when `uncond` is given, both predictions of a classifier-free-guided
/// evaluation (predict_guided_of), as the sampling loop makes them. The models take turns, one call
/// each per round (median_seconds_each).
template <class Cond, Denoiser... Models>
requires(std::same_as<condition_of<Models>, Cond>&&...) [[nodiscard]] ModelCosts
    measure_costs(ConstView x, const StepContext& ctx, const Cond& cond,
                  const std::type_identity_t<Cond>* uncond, const MeasureOptions& options,
                  Models&... models) {
  static_assert(sizeof...(Models) >= 1, "tstitch::plan::measure_costs: give at least one model");
  ModelCosts costs;
  costs.batch = x.batch();
  std::vector<Tensor> outputs;
  outputs.reserve(2 * sizeof...(Models)); // stable addresses for the calls below
  std::vector<std::function<void()>> calls;
  auto add = [&](auto& model) {
    require(model.latent_shape() == x.shape(), "x shape", x.shape(),
            detail::concat("must be the latent shape of model ", model_name_of(model, 0), ", ",
                           model.latent_shape()));
    const Shape out_shape{raw_output_channels(model), x.shape().height, x.shape().width};
    Tensor& out = outputs.emplace_back(x.batch(), out_shape);
    Tensor& out_uncond = outputs.emplace_back(uncond ? x.batch() : 0, out_shape);
    calls.emplace_back([&model, &out, &out_uncond, x, &ctx, &cond, uncond] {
      if (uncond)
        predict_guided_of(model, x, ctx, cond, *uncond, out.view(), out_uncond.view());
      else
        model.predict(x, ctx, cond, out.view());
    });
    costs.names.push_back(model_name_of(model, 0));
  };
  (add(models), ...);
  costs.seconds = median_seconds_each(calls, options);
  return costs;
}

} // namespace tstitch::plan
