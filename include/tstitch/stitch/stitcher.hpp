// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "tstitch/core/denoiser.hpp"
#include "tstitch/core/error.hpp"
#include "tstitch/schedule/trajectory.hpp"
#include "tstitch/stitch/policy.hpp"
#include "tstitch/stitch/route.hpp"

namespace tstitch {

namespace detail {

// Instantiated once per stitched model; a mismatch fails here, and the compiler's note
// "required from condition_types_match<A, B>" names both condition types.
template <class First, class Other> struct condition_types_match {
  static_assert(std::is_same_v<First, Other>,
                "stitched denoisers must share one condition_type; the two types differ in this "
                "instantiation of tstitch::detail::condition_types_match<First, Other>");
  static constexpr bool value = std::is_same_v<First, Other>;
};

/// The name a stitch gives its model k: the model's own name, unless the model routes steps
/// itself (a stitcher, or a reference to one), whose model_name(k) would name its own k-th model.
template <Denoiser D> [[nodiscard]] std::string name_in_stitch(const D& model, std::size_t k) {
  bool routes = routes_steps<D>;
  if constexpr (requires {
                  { model.composite() } -> std::same_as<bool>;
                })
    routes = model.composite(); // a type-erased reference knows what it refers to
  return routes ? "model " + std::to_string(k) : model_name_of(model, k);
}

} // namespace detail

namespace detail {

/// What every stitcher is, whichever way it holds its models (BasicStitcher: a tuple of types
/// fixed at compile time; RuntimeStitcher: a vector of one type): the policy, names, per-model
/// guidance scales, the switch observer and the Denoiser members. Derived provides size(),
/// first_model() and visit(k, f), which calls f with model k (CRTP); First is model 0's type.
template <class Derived, StitchPolicy Policy, Denoiser First> class StitcherCore {
public:
  using policy_type = Policy;
  using condition_type = condition_of<First>;

  // --- configuration --------------------------------------------------------------------------

  /// Names used in records and errors (default: each model's own model_name, else "model k";
  /// "model k" also for a model that is itself a stitcher).
  Derived& set_names(std::vector<std::string> names) {
    require(names.size() == count(), "names.size()", names.size(),
            detail::concat("must equal the number of models, ", count()));
    names_ = std::move(names);
    return derived();
  }
  /// A classifier-free guidance scale per model (nullopt: the sampling options' scale).
  Derived& set_guidance_scales(std::vector<std::optional<double>> scales) {
    require(scales.size() == count(), "guidance_scales.size()", scales.size(),
            detail::concat("must equal the number of models, ", count()));
    for (std::size_t k = 0; k < scales.size(); ++k)
      if (scales[k] && !std::isfinite(*scales[k]))
        throw_invalid_argument(detail::concat("guidance_scales[", k, "]"), *scales[k],
                               "must be finite");
    guidance_scales_ = std::move(scales);
    return derived();
  }
  /// Called once at each switch of a run, when the sampling loop sees the serving model change.
  Derived& on_switch(std::function<void(const SwitchEvent&)> observer) {
    observer_ = std::move(observer);
    return derived();
  }

  // --- the Denoiser interface ------------------------------------------------------------------

  /// The common prediction type. When the models differ there is none: use route(ctx).
  [[nodiscard]] Prediction prediction() const {
    const Prediction first = model_prediction(0);
    for (std::size_t k = 1; k < count(); ++k)
      if (model_prediction(k) != first)
        throw invalid_argument(detail::concat("tstitch: stitched models predict different things (",
                                              model_name(0), ": ", first, ", ", model_name(k), ": ",
                                              model_prediction(k), "); ask route(ctx) per step"));
    return first;
  }
  [[nodiscard]] Shape latent_shape() const { return model_latent_shape(0); }

  [[nodiscard]] std::int64_t output_channels() const {
    std::int64_t channels = 0;
    for (std::size_t k = 0; k < count(); ++k)
      derived().visit(
          k, [&](const auto& model) { channels = std::max(channels, raw_output_channels(model)); });
    return channels;
  }

  /// The unconditional condition for guidance, from the first model (all share the type).
  [[nodiscard]] auto unconditional(const condition_type& c) const requires
      requires(const First& m) {
    m.unconditional(c);
  }
  { return derived().first_model().unconditional(c); }

  /// The model serving step ctx, its prediction and guidance scale: what the policy says. The
  /// sampling loop asks once per step and hands the answer back to predict() in ctx.serving, so
  /// every evaluation of a step goes to the model chosen for it, even where a solver evaluates at
  /// another point (Heun's second evaluation sits at the next step's point).
  [[nodiscard]] Route route(const StepContext& ctx) const {
    const std::size_t k = routed_index(ctx);
    Route r{k, model_prediction(k), std::nullopt};
    if (!guidance_scales_.empty())
      r.guidance_scale = guidance_scales_[k];
    return r;
  }

  /// Runs the model ctx.serving names (the policy's choice for a context built by hand).
  void predict(ConstView x, const StepContext& ctx, const condition_type& c, View out) {
    const StepContext inner = model_context(ctx);
    derived().visit(serving_model(ctx), [&](auto& model) { model.predict(x, inner, c, out); });
  }
  /// Both predictions of a guided evaluation from the serving model: in one call where that
  /// model offers predict_guided.
  void predict_guided(ConstView x, const StepContext& ctx, const condition_type& cond,
                      const condition_type& uncond, View out_cond, View out_uncond) {
    const StepContext inner = model_context(ctx);
    derived().visit(serving_model(ctx), [&](auto& model) {
      predict_guided_of(model, x, inner, cond, uncond, out_cond, out_uncond);
    });
  }

  /// The sampling loop's word that the serving model changed: passed to the observer.
  void model_switched(const SwitchEvent& event) const {
    if (observer_)
      observer_(event);
  }

  // --- queries --------------------------------------------------------------------------------

  [[nodiscard]] std::size_t model_index(const StepContext& ctx) const {
    return checked_index(static_cast<std::size_t>(policy_.model_for(ctx, count())), ctx);
  }
  /// The sampling loop's choice for step ctx (route()): the policy's route_step where it has one,
  /// since a policy that decides by the run so far (plan::Deadline) advances there and keeps
  /// model_for, which the queries here ask, free of effects.
  [[nodiscard]] std::size_t routed_index(const StepContext& ctx) const {
    if constexpr (requires { policy_.route_step(ctx, count()); })
      return checked_index(static_cast<std::size_t>(policy_.route_step(ctx, count())), ctx);
    else
      return model_index(ctx);
  }
  [[nodiscard]] std::size_t checked_index(std::size_t k, const StepContext& ctx) const {
    if (k >= count())
      throw invalid_argument(detail::concat("tstitch: stitch policy chose model ", k, " at step ",
                                            ctx.step, "; there are ", count(), " models"));
    return k;
  }
  /// The model serving each step of a trajectory.
  [[nodiscard]] std::vector<std::size_t> assignment(const Trajectory& trajectory) const {
    std::vector<std::size_t> models;
    for (int i = 0; i < trajectory.steps(); ++i)
      models.push_back(model_index(StepContext{i, trajectory.steps(), 0, trajectory[i]}));
    return models;
  }
  /// How many steps of a trajectory each model serves.
  [[nodiscard]] std::vector<int> steps_per_model(const Trajectory& trajectory) const {
    std::vector<int> counts(count(), 0);
    for (std::size_t k : assignment(trajectory))
      ++counts[k];
    return counts;
  }
  /// The name set with set_names, else the model's own model_name, else "model k".
  [[nodiscard]] std::string model_name(std::size_t k) const {
    if (k >= count())
      return "model " + std::to_string(k);
    if (!names_.empty())
      return names_[k];
    std::string name;
    derived().visit(k, [&](const auto& model) { name = name_in_stitch(model, k); });
    return name;
  }
  [[nodiscard]] const Policy& policy() const { return policy_; }

protected:
  explicit StitcherCore(Policy policy) : policy_(std::move(policy)) {}

  /// Once the models are in place: the policy accepts their number and they share a latent shape.
  void check_models() const {
    if constexpr (requires { policy_.check(count()); })
      policy_.check(count());
    const Shape shape = model_latent_shape(0);
    for (std::size_t k = 1; k < count(); ++k)
      if (model_latent_shape(k) != shape)
        throw invalid_argument(
            detail::concat("tstitch: stitched models disagree on latent shape: ", model_name(0),
                           " has ", shape, ", ", model_name(k), " has ", model_latent_shape(k)));
  }

private:
  [[nodiscard]] Derived& derived() { return static_cast<Derived&>(*this); }
  [[nodiscard]] const Derived& derived() const { return static_cast<const Derived&>(*this); }
  [[nodiscard]] std::size_t count() const { return derived().size(); }

  [[nodiscard]] Prediction model_prediction(std::size_t k) const {
    Prediction p = Prediction::epsilon;
    derived().visit(k, [&](const auto& model) { p = model.prediction(); });
    return p;
  }
  [[nodiscard]] Shape model_latent_shape(std::size_t k) const {
    Shape s{};
    derived().visit(k, [&](const auto& model) { s = model.latent_shape(); });
    return s;
  }

  /// The model the loop routed ctx to, else (a context built by hand) the policy's choice.
  [[nodiscard]] std::size_t serving_model(const StepContext& ctx) const {
    if (!ctx.serving.model)
      return model_index(ctx);
    const std::size_t k = *ctx.serving.model;
    if (k >= count())
      throw_invalid_argument(
          "StepContext::serving.model", k,
          detail::concat("must be below the number of stitched models, ", count()));
    return k;
  }
  /// The context a model of the stitch sees: the loop's answer was for the stitch, so a model
  /// that is itself a stitcher decides for itself.
  [[nodiscard]] static StepContext model_context(const StepContext& ctx) {
    StepContext inner = ctx;
    inner.serving = {};
    return inner;
  }

  Policy policy_;
  std::vector<std::string> names_;
  std::vector<std::optional<double>> guidance_scales_;
  std::function<void(const SwitchEvent&)> observer_;
};

} // namespace detail

/// Runs a trajectory with k denoisers trained on the same data and latent space: a policy picks
/// the model for each step (model 0 first, the noisiest steps). The stitcher is itself a
/// Denoiser, so it plugs into every solver and into sample() unchanged.
///
/// It holds references: the models must outlive it. Models may predict different things
/// (epsilon, v, ...): route(ctx) reports each step's prediction and sample() converts every output
/// into the solver's space. The models' types are fixed at compile time; RuntimeStitcher takes a
/// number of models of one type (e.g. DenoiserRef) chosen at run time.
template <StitchPolicy Policy, Denoiser... Ds>
class BasicStitcher
    : public detail::StitcherCore<BasicStitcher<Policy, Ds...>, Policy,
                                  std::remove_cvref_t<std::tuple_element_t<0, std::tuple<Ds...>>>> {
  static_assert(sizeof...(Ds) >= 2, "stitching needs at least two denoisers");
  using First = std::remove_cvref_t<std::tuple_element_t<0, std::tuple<Ds...>>>;
  static_assert((detail::condition_types_match<condition_of<First>, condition_of<Ds>>::value &&
                 ...));
  using Core = detail::StitcherCore<BasicStitcher<Policy, Ds...>, Policy, First>;
  friend Core;

public:
  static constexpr std::size_t num_models = sizeof...(Ds);

  BasicStitcher(Policy policy, Ds&... models) : Core(std::move(policy)), models_(&models...) {
    Core::check_models();
  }

  [[nodiscard]] static constexpr std::size_t size() { return num_models; }

private:
  [[nodiscard]] const First& first_model() const { return *std::get<0>(models_); }
  template <class F> void visit(std::size_t k, F&& f) {
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (void)((k == I ? (f(*std::get<I>(models_)), true) : false) || ...);
    }
    (std::index_sequence_for<Ds...>{});
  }
  template <class F> void visit(std::size_t k, F&& f) const {
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (void)((k == I ? (f(std::as_const(*std::get<I>(models_))), true) : false) || ...);
    }
    (std::index_sequence_for<Ds...>{});
  }

  std::tuple<Ds*...> models_;
};

/// A stitch over a number of models chosen at run time (BasicStitcher fixes their number and
/// types at compile time). The models are held by value in a vector of one type: use
/// DenoiserRef<Cond> to stitch any mix of model types that live elsewhere, e.g. a list read from a
/// configuration file:
///     RuntimeStitcher<DenoiserRef<Labels>> stitcher(StepFraction({0.3, 0.7}), {dit_s, my_engine});
/// Model 0 serves first; the policy picks the model of each step. Everything else is
/// BasicStitcher's: names, per-model guidance scales, the switch observer, route(), assignment().
template <Denoiser Model, StitchPolicy Policy = StepFraction>
class RuntimeStitcher : public detail::StitcherCore<RuntimeStitcher<Model, Policy>, Policy, Model> {
  using Core = detail::StitcherCore<RuntimeStitcher<Model, Policy>, Policy, Model>;
  friend Core;

public:
  using model_type = Model;

  RuntimeStitcher(Policy policy, std::vector<Model> models)
      : Core(std::move(policy)), models_(std::move(models)) {
    require(!models_.empty(), "number of models", models_.size(), "must be at least 1");
    Core::check_models();
  }

  [[nodiscard]] std::size_t size() const { return models_.size(); }
  [[nodiscard]] Model& model(std::size_t k) { return models_.at(k); }
  [[nodiscard]] const Model& model(std::size_t k) const { return models_.at(k); }

private:
  [[nodiscard]] const Model& first_model() const { return models_[0]; }
  template <class F> void visit(std::size_t k, F&& f) { f(models_[k]); }
  template <class F> void visit(std::size_t k, F&& f) const { f(models_[k]); }

  std::vector<Model> models_;
};

/// T-Stitch with two models: `small` serves the first, noisiest part of the trajectory and
/// `large` finishes it. With the default StepFraction policy, pass the small model's fraction:
///     TrajectoryStitcher stitcher(dit_s, dit_xl, 0.4);   // DiT-S serves 40% of the steps
template <Denoiser Small, Denoiser Large, StitchPolicy Policy = StepFraction>
class TrajectoryStitcher : public BasicStitcher<Policy, Small, Large> {
public:
  TrajectoryStitcher(Small& small, Large& large, Policy policy)
      : BasicStitcher<Policy, Small, Large>(std::move(policy), small, large) {}

  TrajectoryStitcher(Small& small, Large& large,
                     double small_fraction) requires std::is_same_v<Policy, StepFraction>
      : BasicStitcher<Policy, Small, Large>(StepFraction::small_fraction(small_fraction), small,
                                            large) {}
};

template <class Small, class Large>
TrajectoryStitcher(Small&, Large&, double) -> TrajectoryStitcher<Small, Large, StepFraction>;
template <class Small, class Large, StitchPolicy Policy>
TrajectoryStitcher(Small&, Large&, Policy) -> TrajectoryStitcher<Small, Large, Policy>;

/// k models by fraction of steps (the paper's S -> B -> XL setting):
///     Stitcher stitcher({0.3, 0.3, 0.4}, dit_s, dit_b, dit_xl);
template <Denoiser... Ds> class Stitcher : public BasicStitcher<StepFraction, Ds...> {
public:
  Stitcher(std::vector<double> fractions, Ds&... models)
      : BasicStitcher<StepFraction, Ds...>(StepFraction(std::move(fractions)), models...) {}
};

template <class... Ds> Stitcher(std::vector<double>, Ds&...) -> Stitcher<Ds...>;

} // namespace tstitch
