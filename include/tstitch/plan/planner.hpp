// SPDX-License-Identifier: Apache-2.0
#pragma once

// The latency planner: from measured seconds per model evaluation (plan/measure.hpp) and the
// evaluations each step takes, the predicted time of a routing, and the small-model fraction for
// a target speed-up or for a deadline, optionally the best-quality one by a quality table
// (plan/quality_table.hpp). Two-model plans return a StepFraction for the stitchers.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "tstitch/core/error.hpp"
#include "tstitch/core/step.hpp"
#include "tstitch/plan/measure.hpp"
#include "tstitch/plan/quality_table.hpp"
#include "tstitch/schedule/trajectory.hpp"
#include "tstitch/solver/concept.hpp"
#include "tstitch/stitch/policy.hpp"

namespace tstitch::plan {

/// The model evaluations of each step of an n-step run, as the solver declares them
/// (evaluations_of: Heun takes 2 per step but 1 into sigma = 0). Call after solver.begin() for
/// the run's trajectory: solvers such as Heun decide per step there.
template <class S> [[nodiscard]] std::vector<int> evaluations_per_step(const S& solver, int steps) {
  require(steps >= 1, "steps", steps, "must be at least 1");
  std::vector<int> out(static_cast<std::size_t>(steps));
  for (int i = 0; i < steps; ++i)
    out[static_cast<std::size_t>(i)] = evaluations_of(solver, i);
  return out;
}

/// The small-model fraction that StepFraction turns into exactly `small_steps` of `steps`: the
/// smallest multiple of 1e-9 at or above small_steps / steps (StepFraction floors c * n in units
/// of 1e-9, so 1/3 rounded down to 0.333333333 would give 0 of 3 steps).
[[nodiscard]] inline double fraction_for_steps(int small_steps, int steps) {
  require(steps >= 1 && steps <= 1'000'000'000, "steps", steps, "must be in [1, 1e9]");
  require(small_steps >= 0 && small_steps <= steps, "small_steps", small_steps,
          detail::concat("must be in [0, ", steps, "]"));
  constexpr std::int64_t scale = 1'000'000'000;
  const std::int64_t nanos = (std::int64_t{small_steps} * scale + steps - 1) / steps;
  return static_cast<double>(nanos) / static_cast<double>(scale);
}

/// A two-model plan: the small model (model 0) serves the first `small_steps` steps.
struct Plan {
  int steps = 0;
  int small_steps = 0;
  double predicted_seconds = 0;  ///< the whole run's model time
  double speedup = 1;            ///< large-only predicted time / predicted_seconds
  std::optional<double> quality; ///< the quality table's metric at this fraction, if chosen by one

  /// small_steps / steps, for display.
  [[nodiscard]] double small_fraction() const {
    return static_cast<double>(small_steps) / static_cast<double>(steps);
  }
  /// The policy for the stitchers: model 0 for exactly small_steps steps, then model 1.
  [[nodiscard]] StepFraction policy() const {
    return StepFraction::small_fraction(fraction_for_steps(small_steps, steps));
  }
};

/// Predicts run times from per-evaluation costs. The prediction counts model time only: the
/// solver's and the loop's own work is small next to a DiT evaluation (benchmarks/README.md).
class Planner {
public:
  /// seconds_per_evaluation[j]: model j's cost of one evaluation at the batch size in use (for a
  /// guided run, both predictions); evaluations[i]: model evaluations of step i.
  Planner(std::vector<double> seconds_per_evaluation, std::vector<int> evaluations)
      : costs_(std::move(seconds_per_evaluation)), evaluations_(std::move(evaluations)) {
    require(!costs_.empty(), "number of models", costs_.size(), "must be at least 1");
    for (std::size_t j = 0; j < costs_.size(); ++j)
      if (!(costs_[j] >= 0.0 && std::isfinite(costs_[j])))
        throw_invalid_argument(detail::concat("seconds_per_evaluation[", j, "]"), costs_[j],
                               "must be finite and >= 0");
    require(!evaluations_.empty(), "number of steps", evaluations_.size(), "must be at least 1");
    for (std::size_t i = 0; i < evaluations_.size(); ++i)
      require(evaluations_[i] >= 1, detail::concat("evaluations[", i, "]"), evaluations_[i],
              "must be at least 1");
  }
  /// With the same number of evaluations at every step.
  Planner(std::vector<double> seconds_per_evaluation, int steps, int evaluations_per_step = 1)
      : Planner(std::move(seconds_per_evaluation), uniform(steps, evaluations_per_step)) {}
  Planner(const ModelCosts& costs, std::vector<int> evaluations)
      : Planner(costs.seconds, std::move(evaluations)) {}

  [[nodiscard]] int steps() const { return static_cast<int>(evaluations_.size()); }
  [[nodiscard]] std::size_t num_models() const { return costs_.size(); }
  [[nodiscard]] const std::vector<double>& seconds_per_evaluation() const { return costs_; }
  [[nodiscard]] const std::vector<int>& evaluations() const { return evaluations_; }

  /// The predicted time of a routing given as the serving model of each step.
  [[nodiscard]] double predicted_seconds(std::span<const std::size_t> model_per_step) const {
    require(model_per_step.size() == evaluations_.size(), "routing length", model_per_step.size(),
            detail::concat("must equal the number of steps, ", steps()));
    double total = 0;
    for (std::size_t i = 0; i < model_per_step.size(); ++i) {
      const std::size_t j = model_per_step[i];
      require(j < costs_.size(), detail::concat("routing[", i, "]"), j,
              detail::concat("must be a model index below ", costs_.size()));
      total += evaluations_[i] * costs_[j];
    }
    return total;
  }

  /// The predicted time of a policy's routing. Policies that route by time or noise level read
  /// the trajectory's points; StepFraction needs none (pass nullptr).
  template <StitchPolicy P>
  [[nodiscard]] double predicted_seconds(const P& policy,
                                         const Trajectory* trajectory = nullptr) const {
    return predicted_seconds(routing_of(policy, trajectory));
  }

  /// The serving model of each step under a policy (see predicted_seconds(policy)).
  template <StitchPolicy P>
  [[nodiscard]] std::vector<std::size_t> routing_of(const P& policy,
                                                    const Trajectory* trajectory = nullptr) const {
    if constexpr (requires { policy.check(costs_.size()); })
      policy.check(costs_.size());
    if (trajectory)
      require(trajectory->steps() == steps(), "trajectory steps", trajectory->steps(),
              detail::concat("must equal the planner's steps, ", steps()));
    std::vector<std::size_t> route(evaluations_.size());
    for (int i = 0; i < steps(); ++i) {
      StepContext ctx;
      ctx.step = i;
      ctx.num_steps = steps();
      if (trajectory)
        ctx.point = (*trajectory)[i];
      route[static_cast<std::size_t>(i)] = policy.model_for(ctx, costs_.size());
    }
    return route;
  }

  /// Two models: the plan with the small model (model 0) on the first `small_steps` steps.
  [[nodiscard]] Plan at_small_steps(int small_steps) const {
    require_two_models();
    require(small_steps >= 0 && small_steps <= steps(), "small_steps", small_steps,
            detail::concat("must be in [0, ", steps(), "]"));
    Plan p;
    p.steps = steps();
    p.small_steps = small_steps;
    p.predicted_seconds = two_model_seconds(small_steps);
    const double large_only = two_model_seconds(0);
    p.speedup = p.predicted_seconds > 0 ? large_only / p.predicted_seconds : 1.0;
    return p;
  }

  /// Two models: the fewest small-model steps whose predicted speed-up over the large model alone
  /// is at least `target` (so the fraction rounds up to whole steps); Plan::speedup is what it
  /// achieves. Throws when even the fastest routing falls short, naming the best speed-up.
  [[nodiscard]] Plan for_speedup(double target) const {
    check_target(target);
    const std::optional<Plan> p = first_plan([&](const Plan& q) { return q.speedup >= target; });
    if (!p)
      throw_invalid_argument("target speed-up", target,
                             detail::concat("is unreachable: the fastest routing of ", steps(),
                                            " steps gives ", fastest().speedup, "x"));
    return *p;
  }

  /// Two models: the fewest small-model steps whose predicted time is at most `deadline_seconds`.
  /// Throws when none is, naming the deadline and the minimum achievable time.
  [[nodiscard]] Plan for_deadline(double deadline_seconds) const {
    check_deadline(deadline_seconds);
    const std::optional<Plan> p =
        first_plan([&](const Plan& q) { return q.predicted_seconds <= deadline_seconds; });
    if (!p)
      throw_invalid_argument("deadline (s)", deadline_seconds,
                             detail::concat("is unreachable: the fastest routing of ", steps(),
                                            " steps takes ", fastest().predicted_seconds, " s"));
    return *p;
  }

  /// Two models, with a quality table: among the table's fractions that are whole numbers of
  /// steps here (f * n within 1e-6 of an integer; no interpolation between entries), the one of
  /// lowest metric whose speed-up is at least `target`; ties go to the faster routing.
  [[nodiscard]] Plan for_speedup(double target, const QualityTable& table) const {
    check_target(target);
    return best_of(
        table, [&](const Plan& q) { return q.speedup >= target; }, "target speed-up", target);
  }

  /// As for_speedup(target, table), for a deadline in seconds.
  [[nodiscard]] Plan for_deadline(double deadline_seconds, const QualityTable& table) const {
    check_deadline(deadline_seconds);
    return best_of(
        table, [&](const Plan& q) { return q.predicted_seconds <= deadline_seconds; },
        "deadline (s)", deadline_seconds);
  }

private:
  static std::vector<int> uniform(int steps, int evaluations_per_step) {
    require(steps >= 1, "steps", steps, "must be at least 1");
    require(evaluations_per_step >= 1, "evaluations_per_step", evaluations_per_step,
            "must be at least 1");
    return std::vector<int>(static_cast<std::size_t>(steps), evaluations_per_step);
  }

  void require_two_models() const {
    require(costs_.size() == 2, "number of models", costs_.size(),
            "fraction plans take two models: small (0) then large (1)");
  }
  static void check_target(double target) {
    if (!(target > 0.0 && std::isfinite(target)))
      throw_invalid_argument("target speed-up", target, "must be finite and > 0");
  }
  static void check_deadline(double deadline) {
    if (!(deadline > 0.0 && std::isfinite(deadline)))
      throw_invalid_argument("deadline (s)", deadline, "must be finite and > 0");
  }

  // Sums step by step in the same order as predicted_seconds(routing), so both agree exactly.
  [[nodiscard]] double two_model_seconds(int small_steps) const {
    double total = 0;
    for (int i = 0; i < steps(); ++i)
      total += evaluations_[static_cast<std::size_t>(i)] * costs_[i < small_steps ? 0 : 1];
    return total;
  }

  template <class Meets> [[nodiscard]] std::optional<Plan> first_plan(Meets meets) const {
    require_two_models();
    for (int m = 0; m <= steps(); ++m) {
      Plan p = at_small_steps(m);
      if (meets(p))
        return p;
    }
    return std::nullopt;
  }

  [[nodiscard]] Plan fastest() const {
    Plan best = at_small_steps(0);
    for (int m = 1; m <= steps(); ++m) {
      Plan p = at_small_steps(m);
      if (p.predicted_seconds < best.predicted_seconds)
        best = p;
    }
    return best;
  }

  template <class Meets>
  [[nodiscard]] Plan best_of(const QualityTable& table, Meets meets, const char* budget,
                             double value) const {
    require_two_models();
    table.validate();
    // A table measured at another step count says nothing of this one (0: the table does not say).
    require(table.steps == 0 || table.steps == steps(), "quality table steps", table.steps,
            detail::concat("must equal the planned steps, ", steps()));
    std::optional<Plan> best;
    bool any_reachable = false;
    for (const QualityEntry& e : table.entries) {
      const double exact = e.fraction * steps();
      const double whole = std::round(exact);
      if (std::abs(exact - whole) > 1e-6)
        continue; // not a whole number of steps at this step count
      any_reachable = true;
      Plan p = at_small_steps(static_cast<int>(whole));
      if (!meets(p))
        continue;
      p.quality = e.value;
      if (!best || e.value < *best->quality ||
          (e.value == *best->quality && p.predicted_seconds < best->predicted_seconds))
        best = p;
    }
    if (!any_reachable)
      throw_invalid_argument("steps", steps(),
                             detail::concat("no fraction of the quality table (", table.metric,
                                            ") is a whole number of steps"));
    if (!best)
      throw_invalid_argument(budget, value,
                             detail::concat("is unreachable by the quality table's fractions; "
                                            "the fastest routing of ",
                                            steps(), " steps takes ", fastest().predicted_seconds,
                                            " s (", fastest().speedup, "x)"));
    return *best;
  }

  std::vector<double> costs_;
  std::vector<int> evaluations_;
};

} // namespace tstitch::plan
