// SPDX-License-Identifier: Apache-2.0
#pragma once

// The vocabulary between the sampling loop and a denoiser that holds several models (a stitcher):
// which model serves a step, and when the serving model changes. The loop asks route(ctx) once per
// step, passes the answer to every evaluation of that step in StepContext::serving, detects the
// switches itself and tells the denoiser about each one.
#include <concepts>
#include <cstddef>
#include <optional>
#include <span>

#include "tstitch/core/denoiser.hpp"
#include "tstitch/core/prediction.hpp"
#include "tstitch/core/step.hpp"

namespace tstitch {

/// Which model serves a step and how: the answer of a stitcher's route(ctx).
struct Route {
  std::size_t model = 0; ///< index of the serving model (0 for a plain denoiser)
  Prediction prediction = Prediction::epsilon; ///< what that model's raw output means
  std::optional<double> guidance_scale;        ///< overrides the sampling options' scale when set
};

/// What the switch observer is told: the step at which `to` takes over from `from`.
struct SwitchEvent {
  std::size_t from = 0;
  std::size_t to = 0;
  StepContext context{}; ///< step `context.step`'s first evaluation, routed to `to`
};

/// Whether a denoiser routes steps between models of its own (a stitcher, or a DenoiserRef, which
/// may refer to one): it answers route(ctx), dispatches predict() on ctx.serving, and its
/// model_name(k) names its k-th model rather than itself.
template <class D>
concept routes_steps = requires(const D& d, const StepContext& ctx) {
  { d.route(ctx) } -> std::same_as<Route>;
};

/// Whether a denoiser routes each batch row of a step on its own (a RowStitcher): route_rows(ctx,
/// out) writes the model of every row, and the loop passes that to predict() in ctx.serving.rows.
template <class D>
concept routes_rows = routes_steps<D> &&
    requires(const D& d, const StepContext& ctx, std::span<std::size_t> out) {
  d.route_rows(ctx, out);
};

/// The route of step ctx: the denoiser's own answer, or model 0 with its declared prediction.
template <Denoiser D> [[nodiscard]] Route route_of(const D& d, const StepContext& ctx) {
  if constexpr (routes_steps<D>)
    return d.route(ctx);
  else
    return Route{0, d.prediction(), std::nullopt};
}

/// Tells a denoiser that its serving model changed (the loop calls this once per switch, within a
/// run): a stitcher passes the event to its on_switch observer. Others have nothing to hear.
template <Denoiser D> void announce_switch(D& d, const SwitchEvent& event) {
  if constexpr (requires { d.model_switched(event); })
    d.model_switched(event);
}

} // namespace tstitch
