// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <concepts>
#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>

#include "tstitch/core/prediction.hpp"
#include "tstitch/core/step.hpp"
#include "tstitch/core/tensor.hpp"

namespace tstitch {

/// The condition type of unconditional models.
struct NoCondition {};

/// 1. A denoiser names the type of its condition (class labels, text embeddings, NoCondition).
template <class D>
concept has_condition_type = requires {
  typename std::remove_cvref_t<D>::condition_type;
};

/// 2. It declares what its raw output means.
template <class D>
concept declares_prediction = requires(const D& d) {
  { d.prediction() } -> std::same_as<Prediction>;
};

/// 3. It declares the shape [C, H, W] of one latent sample; the batch comes with x.
template <class D>
concept declares_latent_shape = requires(const D& d) {
  { d.latent_shape() } -> std::same_as<Shape>;
};

/// 4. It writes its raw prediction for latents x (N, C, H, W) at the step described by ctx into
///    out (N, output_channels(prediction, C), H, W).
template <class D>
concept predicts = has_condition_type<D> &&
    requires(D& d, ConstView x, const StepContext& ctx,
             const typename std::remove_cvref_t<D>::condition_type& c, View out) {
  d.predict(x, ctx, c, out);
};

/// A denoiser: anything with these four members. No base class, no virtual functions: a user's
/// TensorRT engine, a lambda wrapper (make_denoiser) and the stitcher itself all qualify.
///
/// Optional members the sampling loop uses when present:
///   condition_type unconditional(const condition_type&) const  the "null" condition for
///                                                              classifier-free guidance
///   Route route(const StepContext&) const  which of its models serves a step (a stitcher; see
///                                       stitch/route.hpp): the loop asks once per step and
///                                       passes the answer back in StepContext::serving
///   std::int64_t output_channels() const  raw output channels (default: from prediction())
///   std::string model_name(std::size_t) const  names for per-step records
///   void predict_guided(x, ctx, cond, uncond, out_cond, out_uncond)
///                                       both predictions of a guided evaluation in one call, e.g.
///                                       one batch of 2N rows on a GPU (see predict_guided_of)
///   void predict_timesteps(x, std::span<const double> timesteps, cond, out)
///                                       one model time per batch row, as the official DiT's
///                                       forward(x, t, y) takes them (see
///                                       predicts_per_row_timesteps); for callers, the sampling
///                                       loop does not use it
template <class D>
concept Denoiser =
    has_condition_type<D> && declares_prediction<D> && declares_latent_shape<D> && predicts<D>;

/// Checks that D is a Denoiser with one static_assert per member, each naming the member and the
/// form it must have, where the concept alone leaves the compiler to list every candidate:
///     static_assert(tstitch::check_denoiser<MyEngine>());
/// sample() runs it on its argument.
template <class D> consteval bool check_denoiser() {
  static_assert(has_condition_type<D>,
                "tstitch: a Denoiser names its condition: `using condition_type = ...;` "
                "(NoCondition for an unconditional model)");
  static_assert(declares_prediction<D>,
                "tstitch: a Denoiser declares what its output means: "
                "`Prediction prediction() const` (a const member returning tstitch::Prediction)");
  static_assert(declares_latent_shape<D>,
                "tstitch: a Denoiser declares the shape of one latent: "
                "`Shape latent_shape() const` (a const member returning tstitch::Shape)");
  static_assert(!has_condition_type<D> || predicts<D>,
                "tstitch: a Denoiser predicts: `void predict(ConstView x, const StepContext& ctx, "
                "const condition_type& c, View out)`, callable on a non-const model");
  // A non-const route() would not be seen by the loop, which routes through a const reference.
  static_assert(
      !requires(D & d, const StepContext& ctx) { d.route(ctx); } ||
          requires(const D& d, const StepContext& ctx) { d.route(ctx); },
      "tstitch: a denoiser that routes between its models declares "
      "`Route route(const StepContext&) const` (a const member)");
  return has_condition_type<D> && declares_prediction<D> && declares_latent_shape<D> && predicts<D>;
}

template <Denoiser D> using condition_of = typename std::remove_cvref_t<D>::condition_type;

/// Channels of the raw output buffer a denoiser needs.
template <Denoiser D> [[nodiscard]] std::int64_t raw_output_channels(const D& d) {
  if constexpr (requires {
                  { d.output_channels() } -> std::convertible_to<std::int64_t>;
                })
    return d.output_channels();
  else
    return output_channels(d.prediction(), d.latent_shape().channels);
}

/// The name of model k of a denoiser: its model_name(k) (a single model ignores k by
/// convention), else "model k". Every name in records and errors comes from here.
template <Denoiser D> [[nodiscard]] std::string model_name_of(const D& d, std::size_t k) {
  if constexpr (requires {
                  { d.model_name(k) } -> std::convertible_to<std::string>;
                })
    return d.model_name(k);
  else
    return "model " + std::to_string(k);
}

/// The unconditional condition for classifier-free guidance: the denoiser's
/// `unconditional(cond)` if it has one. A member that returns std::optional<condition_type> (a
/// type-erased wrapper such as DenoiserRef, which may or may not hold one) is asked as well.
template <Denoiser D>
[[nodiscard]] std::optional<condition_of<D>> unconditional_of(const D& d,
                                                              const condition_of<D>& cond) {
  if constexpr (requires {
                  { d.unconditional(cond) } -> std::same_as<std::optional<condition_of<D>>>;
                })
    return d.unconditional(cond);
  else if constexpr (requires {
                       { d.unconditional(cond) } -> std::convertible_to<condition_of<D>>;
                     })
    return d.unconditional(cond);
  else
    return std::nullopt;
}

/// Whether a denoiser offers predict_guided: the conditional and unconditional predictions of a
/// classifier-free-guided evaluation of the same latents in one call. A GPU model runs them as
/// one batch of 2N rows, as DiT's reference sampler does, which costs little more than N rows
/// where the model is latency-bound (a small model at a small batch); on a CPU two calls cost
/// the same, so CPU models need not offer it.
template <class D>
concept predicts_guided = Denoiser<D> &&
    requires(D& d, ConstView x, const StepContext& ctx, const condition_of<D>& c, View out) {
  d.predict_guided(x, ctx, c, c, out, out);
};

/// Both predictions of a guided evaluation: one predict_guided call where the denoiser offers
/// it, else predict(cond) then predict(uncond).
template <Denoiser D>
void predict_guided_of(D& d, ConstView x, const StepContext& ctx, const condition_of<D>& cond,
                       const condition_of<D>& uncond, View out_cond, View out_uncond) {
  if constexpr (predicts_guided<D>) {
    d.predict_guided(x, ctx, cond, uncond, out_cond, out_uncond);
  } else {
    d.predict(x, ctx, cond, out_cond);
    d.predict(x, ctx, uncond, out_uncond);
  }
}

/// Whether a denoiser takes one model time per batch row: `predict_timesteps(x, timesteps, c,
/// out)` writes for each row k what predict() writes at timestep timesteps[k] (timesteps.size()
/// is the batch). For comparing against a reference that evaluates a batch at mixed times (the
/// official DiT's forward, a training step) without splitting the batch. With every row at the
/// same time it should write predict()'s bits (dit::CpuModel does).
template <class D>
concept predicts_per_row_timesteps = Denoiser<D> &&
    requires(D& d, ConstView x, std::span<const double> timesteps, const condition_of<D>& c,
             View out) {
  d.predict_timesteps(x, timesteps, c, out);
};

/// The same as a type trait, for `if constexpr` and static_assert in code that predates concepts
/// or passes traits on: std::true_type where D offers predict_timesteps.
template <class D>
struct has_per_row_timesteps : std::bool_constant<predicts_per_row_timesteps<D>> {};
template <class D> inline constexpr bool has_per_row_timesteps_v = has_per_row_timesteps<D>::value;

/// A denoiser from a callable `f(ConstView x, const StepContext&, const Cond&, View out)`: the
/// quickest way to plug in an existing engine.
template <class Cond, class F> class FunctionDenoiser {
public:
  using condition_type = Cond;

  FunctionDenoiser(Prediction prediction, Shape latent_shape, F f)
      : prediction_(prediction), shape_(latent_shape), f_(std::move(f)) {}

  [[nodiscard]] Prediction prediction() const { return prediction_; }
  [[nodiscard]] Shape latent_shape() const { return shape_; }
  void predict(ConstView x, const StepContext& ctx, const Cond& c, View out) { f_(x, ctx, c, out); }

private:
  Prediction prediction_;
  Shape shape_;
  F f_;
};

template <class Cond = NoCondition, class F>
[[nodiscard]] FunctionDenoiser<Cond, F> make_denoiser(Prediction prediction, Shape latent_shape,
                                                      F f) {
  return {prediction, latent_shape, std::move(f)};
}

} // namespace tstitch
