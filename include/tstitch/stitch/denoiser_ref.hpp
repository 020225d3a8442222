// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <concepts>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>

#include "tstitch/core/denoiser.hpp"
#include "tstitch/stitch/route.hpp"

namespace tstitch {

/// A non-owning, type-erased reference to any Denoiser whose condition type is Cond: one type for
/// models chosen at run time (a list from a config file, RuntimeStitcher) and for interfaces
/// compiled once (cuda::DeviceSampler), while the models themselves stay plain types with no base
/// class. It forwards every member the sampling loop looks for: the four of the concept and the
/// optional unconditional (as std::optional: present or not), route, model_switched,
/// output_channels, model_name and predict_guided, so sampling through a DenoiserRef is the same
/// as sampling the model itself. The model must outlive the reference. Each call costs one
/// indirect call.
template <class Cond> class DenoiserRef {
public:
  using condition_type = Cond;

  /// Refers to `model` (implicitly: a model converts where a DenoiserRef is expected). Not to a
  /// const model (predict may change it), and not to another DenoiserRef or a class derived from
  /// one: those are copied, keeping the model they refer to.
  template <Denoiser D>
  requires(!std::derived_from<std::remove_cvref_t<D>, DenoiserRef> && !std::is_const_v<D> &&
           std::same_as<condition_of<D>, Cond>) DenoiserRef(D& model)
  noexcept : model_(std::addressof(model)), ops_(&ops_for<D>) {}

  [[nodiscard]] Prediction prediction() const { return ops_->prediction(model_); }
  [[nodiscard]] Shape latent_shape() const { return ops_->latent_shape(model_); }
  [[nodiscard]] std::int64_t output_channels() const { return ops_->output_channels(model_); }
  void predict(ConstView x, const StepContext& ctx, const Cond& c, View out) const {
    ops_->predict(model_, x, ctx, c, out);
  }
  /// The model's predict_guided where it has one, else its predict twice.
  void predict_guided(ConstView x, const StepContext& ctx, const Cond& cond, const Cond& uncond,
                      View out_cond, View out_uncond) const {
    ops_->predict_guided(model_, x, ctx, cond, uncond, out_cond, out_uncond);
  }
  /// The model's unconditional(c), or nullopt when it has none (then guidance needs an explicit
  /// unconditional condition).
  [[nodiscard]] std::optional<Cond> unconditional(const Cond& c) const {
    return ops_->unconditional(model_, c);
  }
  /// The model's route(ctx) when it has one (a stitcher), else model 0 with its prediction.
  [[nodiscard]] Route route(const StepContext& ctx) const { return ops_->route(model_, ctx); }
  /// Passes a switch on to the model (a stitcher's observer); nothing for a single model.
  void model_switched(const SwitchEvent& event) const { ops_->model_switched(model_, event); }
  [[nodiscard]] std::string model_name(std::size_t k) const { return ops_->model_name(model_, k); }
  /// Whether the referenced model routes steps itself (a stitcher), so that its model_name(k)
  /// names its own k-th model rather than itself.
  [[nodiscard]] bool composite() const { return ops_->composite; }

  /// The referenced model's address (for identity checks), as void*.
  [[nodiscard]] const void* address() const { return model_; }

private:
  struct Ops {
    Prediction (*prediction)(const void*);
    Shape (*latent_shape)(const void*);
    std::int64_t (*output_channels)(const void*);
    void (*predict)(void*, ConstView, const StepContext&, const Cond&, View);
    void (*predict_guided)(void*, ConstView, const StepContext&, const Cond&, const Cond&, View,
                           View);
    std::optional<Cond> (*unconditional)(const void*, const Cond&);
    Route (*route)(const void*, const StepContext&);
    void (*model_switched)(void*, const SwitchEvent&);
    std::string (*model_name)(const void*, std::size_t);
    bool composite;
  };

  template <class D> static const D& as(const void* m) { return *static_cast<const D*>(m); }
  template <class D> static D& as(void* m) { return *static_cast<D*>(m); }

  // The loop routes every denoiser through the reference; a model that does not route steps itself
  // gets the context without that answer, as if the loop had called it directly (a wrapper around
  // a stitcher inside it must not read model 0 of the reference as its own choice).
  template <class D> static StepContext forwarded(const StepContext& ctx) {
    if constexpr (routes_steps<D>) {
      return ctx;
    } else {
      StepContext plain = ctx;
      plain.serving = {};
      return plain;
    }
  }

  template <class D>
  static constexpr Ops ops_for{
      [](const void* m) { return as<D>(m).prediction(); },
      [](const void* m) { return as<D>(m).latent_shape(); },
      [](const void* m) { return raw_output_channels(as<D>(m)); },
      [](void* m, ConstView x, const StepContext& ctx, const Cond& c, View out) {
        as<D>(m).predict(x, forwarded<D>(ctx), c, out);
      },
      [](void* m, ConstView x, const StepContext& ctx, const Cond& c, const Cond& u, View out_c,
         View out_u) { predict_guided_of(as<D>(m), x, forwarded<D>(ctx), c, u, out_c, out_u); },
      [](const void* m, const Cond& c) { return unconditional_of(as<D>(m), c); },
      [](const void* m, const StepContext& ctx) { return route_of(as<D>(m), ctx); },
      [](void* m, const SwitchEvent& event) { announce_switch(as<D>(m), event); },
      [](const void* m, std::size_t k) { return model_name_of(as<D>(m), k); },
      routes_steps<D>,
  };

  void* model_;
  const Ops* ops_;
};

} // namespace tstitch
