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

namespace tstitch {

/// What the switch observer is told: the step at which `to` takes over from `from`.
struct SwitchEvent {
  std::size_t from = 0;
  std::size_t to = 0;
  StepContext context{};
};

namespace detail {

// Instantiated once per stitched model; a mismatch fails here, and the compiler's note
// "required from condition_types_match<A, B>" names both condition types.
template <class First, class Other> struct condition_types_match {
  static_assert(std::is_same_v<First, Other>,
                "stitched denoisers must share one condition_type; the two types differ in this "
                "instantiation of tstitch::detail::condition_types_match<First, Other>");
  static constexpr bool value = std::is_same_v<First, Other>;
};

} // namespace detail

namespace detail {

/// What every stitcher shares, whichever way it holds its models (BasicStitcher: a tuple of
/// types fixed at compile time; RuntimeStitcher: a vector of one type): the policy, names,
/// per-model guidance scales, the switch observer and the routing state. Derived provides
/// size(), model_prediction(k), model_latent_shape(k) and model_display_name(k) (CRTP).
template <class Derived, StitchPolicy Policy> class StitcherCore {
public:
  using policy_type = Policy;

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
  /// Called once at each switch, when route() sees the serving model change.
  Derived& on_switch(std::function<void(const SwitchEvent&)> observer) {
    observer_ = std::move(observer);
    return derived();
  }

  // --- the Denoiser interface: what does not depend on how the models are held ------------------

  /// The common prediction type. When the models differ there is none: use route(ctx).
  [[nodiscard]] Prediction prediction() const {
    const Prediction first = derived().model_prediction(0);
    for (std::size_t k = 1; k < count(); ++k)
      if (derived().model_prediction(k) != first)
        throw invalid_argument(detail::concat(
            "tstitch: stitched models predict different things (", model_name(0), ": ", first, ", ",
            model_name(k), ": ", derived().model_prediction(k), "); ask route(ctx) per step"));
    return first;
  }
  [[nodiscard]] Shape latent_shape() const { return derived().model_latent_shape(0); }

  /// The model serving step ctx, its prediction and guidance scale. The sampling loop calls this
  /// once per step, in step order; the switch observer fires from here. A step that does not
  /// directly follow the last one routed (same step count, next index) starts a new run: a
  /// reused stitcher (a second run, or one from start_step > 0) reports no switch from the model
  /// that ended the previous run.
  [[nodiscard]] Route route(const StepContext& ctx) {
    const std::size_t k = model_index(ctx);
    const bool same_run =
        serving_ && ctx.num_steps == routed_.num_steps && ctx.step == routed_.step + 1;
    if (same_run && *serving_ != k && observer_)
      observer_(SwitchEvent{*serving_, k, ctx});
    serving_ = k;
    routed_ = ctx;
    Route r{k, derived().model_prediction(k), std::nullopt};
    if (!guidance_scales_.empty())
      r.guidance_scale = guidance_scales_[k];
    return r;
  }

  /// Forgets the last route: the next route() starts a run and predict() asks the policy. For
  /// callers that drive route() and predict() by hand and start a run that route() cannot tell
  /// from a continuation (e.g. resuming at the step after a cancelled run).
  void reset_route() {
    serving_.reset();
    routed_ = StepContext{};
  }

  // --- queries --------------------------------------------------------------------------------

  [[nodiscard]] std::size_t model_index(const StepContext& ctx) const {
    const std::size_t k = static_cast<std::size_t>(policy_.model_for(ctx, count()));
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
    return names_.empty() ? derived().model_display_name(k) : names_[k];
  }
  [[nodiscard]] const Policy& policy() const { return policy_; }

protected:
  explicit StitcherCore(Policy policy) : policy_(std::move(policy)) {}

  /// Once the models are in place: the policy accepts their number and they share a latent shape.
  void check_models() const {
    if constexpr (requires { policy_.check(count()); })
      policy_.check(count());
    const Shape shape = derived().model_latent_shape(0);
    for (std::size_t k = 1; k < count(); ++k)
      if (derived().model_latent_shape(k) != shape)
        throw invalid_argument(detail::concat(
            "tstitch: stitched models disagree on latent shape: ", model_name(0), " has ", shape,
            ", ", model_name(k), " has ", derived().model_latent_shape(k)));
  }

  /// The model predict() runs for ctx: every evaluation of a step goes to the model route() chose
  /// for it, even where a solver evaluates at another point (Heun's second evaluation sits at the
  /// next step's point, which a threshold policy may give to the next model); a step route() has
  /// not seen asks the policy.
  [[nodiscard]] std::size_t serving_model(const StepContext& ctx) const {
    const bool routed = serving_ && routed_.step == ctx.step && routed_.num_steps == ctx.num_steps;
    return routed ? *serving_ : model_index(ctx);
  }

private:
  [[nodiscard]] Derived& derived() { return static_cast<Derived&>(*this); }
  [[nodiscard]] const Derived& derived() const { return static_cast<const Derived&>(*this); }
  [[nodiscard]] std::size_t count() const { return derived().size(); }

  Policy policy_;
  std::vector<std::string> names_;
  std::vector<std::optional<double>> guidance_scales_;
  std::function<void(const SwitchEvent&)> observer_;
  std::optional<std::size_t> serving_; // the model route() chose for step routed_
  StepContext routed_{};
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
class BasicStitcher : public detail::StitcherCore<BasicStitcher<Policy, Ds...>, Policy> {
  static_assert(sizeof...(Ds) >= 2, "stitching needs at least two denoisers");
  using First = std::remove_cvref_t<std::tuple_element_t<0, std::tuple<Ds...>>>;
  static_assert((detail::condition_types_match<condition_of<First>, condition_of<Ds>>::value &&
                 ...));
  using Core = detail::StitcherCore<BasicStitcher<Policy, Ds...>, Policy>;
  friend Core;

public:
  using condition_type = condition_of<First>;
  static constexpr std::size_t num_models = sizeof...(Ds);

  BasicStitcher(Policy policy, Ds&... models) : Core(std::move(policy)), models_(&models...) {
    Core::check_models();
  }

  [[nodiscard]] static constexpr std::size_t size() { return num_models; }

  [[nodiscard]] std::int64_t output_channels() const {
    std::int64_t channels = 0;
    for_each_model([&](std::size_t, const auto& model) {
      channels = std::max(channels, raw_output_channels(model));
    });
    return channels;
  }

  /// The unconditional condition for guidance, from the first model (all share the type).
  [[nodiscard]] auto unconditional(const condition_type& c) const requires
      requires(const First& m) {
    m.unconditional(c);
  }
  { return std::get<0>(models_)->unconditional(c); }

  /// Runs the model serving ctx.step (see StitcherCore::serving_model).
  void predict(ConstView x, const StepContext& ctx, const condition_type& c, View out) {
    visit(Core::serving_model(ctx), [&](auto& model) { model.predict(x, ctx, c, out); });
  }
  /// Both predictions of a guided evaluation from the serving model: in one call where that
  /// model offers predict_guided.
  void predict_guided(ConstView x, const StepContext& ctx, const condition_type& cond,
                      const condition_type& uncond, View out_cond, View out_uncond) {
    visit(Core::serving_model(ctx), [&](auto& model) {
      predict_guided_of(model, x, ctx, cond, uncond, out_cond, out_uncond);
    });
  }

private:
  [[nodiscard]] Prediction model_prediction(std::size_t k) const {
    Prediction p = Prediction::epsilon;
    visit(k, [&](const auto& model) { p = model.prediction(); });
    return p;
  }
  [[nodiscard]] Shape model_latent_shape(std::size_t k) const {
    Shape s{};
    visit(k, [&](const auto& model) { s = model.latent_shape(); });
    return s;
  }
  [[nodiscard]] std::string model_display_name(std::size_t k) const {
    std::string name;
    visit(k, [&](const auto& model) { name = display_name_of(model, k); });
    return name;
  }

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
  template <class F> void for_each_model(F&& f) const {
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (f(I, std::as_const(*std::get<I>(models_))), ...);
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
class RuntimeStitcher : public detail::StitcherCore<RuntimeStitcher<Model, Policy>, Policy> {
  using Core = detail::StitcherCore<RuntimeStitcher<Model, Policy>, Policy>;
  friend Core;

public:
  using condition_type = condition_of<Model>;
  using model_type = Model;

  RuntimeStitcher(Policy policy, std::vector<Model> models)
      : Core(std::move(policy)), models_(std::move(models)) {
    require(!models_.empty(), "number of models", models_.size(), "must be at least 1");
    Core::check_models();
  }

  [[nodiscard]] std::size_t size() const { return models_.size(); }
  [[nodiscard]] Model& model(std::size_t k) { return models_.at(k); }
  [[nodiscard]] const Model& model(std::size_t k) const { return models_.at(k); }

  [[nodiscard]] std::int64_t output_channels() const {
    std::int64_t channels = 0;
    for (const Model& m : models_)
      channels = std::max(channels, raw_output_channels(m));
    return channels;
  }

  /// The unconditional condition for guidance, from the first model (all share the type).
  [[nodiscard]] auto unconditional(const condition_type& c) const requires
      requires(const Model& m) {
    m.unconditional(c);
  }
  { return models_[0].unconditional(c); }

  /// Runs the model serving ctx.step (see StitcherCore::serving_model).
  void predict(ConstView x, const StepContext& ctx, const condition_type& c, View out) {
    models_[Core::serving_model(ctx)].predict(x, ctx, c, out);
  }
  /// Both predictions of a guided evaluation from the serving model: in one call where that
  /// model offers predict_guided.
  void predict_guided(ConstView x, const StepContext& ctx, const condition_type& cond,
                      const condition_type& uncond, View out_cond, View out_uncond) {
    predict_guided_of(models_[Core::serving_model(ctx)], x, ctx, cond, uncond, out_cond,
                      out_uncond);
  }

private:
  [[nodiscard]] Prediction model_prediction(std::size_t k) const { return models_[k].prediction(); }
  [[nodiscard]] Shape model_latent_shape(std::size_t k) const { return models_[k].latent_shape(); }
  [[nodiscard]] std::string model_display_name(std::size_t k) const {
    return display_name_of(models_[k], k);
  }

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
