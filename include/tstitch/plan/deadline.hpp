// SPDX-License-Identifier: Apache-2.0
#pragma once

// Policies that hold a latency budget while sampling: Deadline routes each step by the time
// already spent, and Routing replays any run's routing from its records.

#include <cmath>
#include <cstddef>
#include <memory>
#include <utility>
#include <vector>

#include "tstitch/core/error.hpp"
#include "tstitch/core/step.hpp"
#include "tstitch/plan/measure.hpp"
#include "tstitch/plan/planner.hpp"
#include "tstitch/sample.hpp"

namespace tstitch::plan {

/// A fixed model per step: replays a run's routing, e.g. from the records of a Deadline run,
/// which then repeats bit for bit (the routing is all that timing changed).
class Routing {
public:
  explicit Routing(std::vector<std::size_t> model_per_step) : route_(std::move(model_per_step)) {
    require(!route_.empty(), "routing length", route_.size(), "must be at least 1");
  }

  /// The routing of a run from its records: steps 0 .. n-1, in order.
  static Routing from_records(const std::vector<StepRecord>& records) {
    std::vector<std::size_t> route;
    for (std::size_t i = 0; i < records.size(); ++i) {
      require(records[i].step == static_cast<int>(i), detail::concat("records[", i, "].step"),
              records[i].step, "must be i: the records of a whole run, from step 0, in order");
      route.push_back(records[i].model);
    }
    return Routing(std::move(route));
  }

  void check(std::size_t num_models) const {
    for (std::size_t i = 0; i < route_.size(); ++i)
      require(route_[i] < num_models, detail::concat("routing[", i, "]"), route_[i],
              detail::concat("must be below the number of models, ", num_models));
  }

  [[nodiscard]] std::size_t model_for(const StepContext& ctx, std::size_t) const {
    require(ctx.num_steps == static_cast<int>(route_.size()), "steps", ctx.num_steps,
            detail::concat("must equal the routing's length, ", route_.size()));
    require(ctx.step >= 0 && ctx.step < ctx.num_steps, "step", ctx.step,
            detail::concat("must be in [0, ", ctx.num_steps, ")"));
    return route_[static_cast<std::size_t>(ctx.step)];
  }

  [[nodiscard]] const std::vector<std::size_t>& steps() const { return route_; }

private:
  std::vector<std::size_t> route_;
};

/// Routes two models (0: small, 1: large) so that a run finishes within `budget_seconds`, judged
/// at the start of every step from the time spent so far (an injectable clock):
///   small_first (default, the T-Stitch order): the small model until the time left covers the
///     large model for every remaining step, then the large one. With the planner's costs exactly
///     met this is Planner::for_deadline's routing.
///   large_first: the large model while the time left also covers the small model for the steps
///     after this one, then the small one.
/// Costs come from the planner, scaled by the last step's measured / predicted time, so a machine
/// that slows down mid-run moves the switch (and a step back to the small model if needed).
/// The decision is taken in route_step, which the stitchers' route() calls once per step for the
/// sampling loop: it reads the clock and advances the run (the budget starts at the first step
/// routed; a step not after the last one routed starts a new run). model_for is a pure query, as
/// the stitchers' assignment() and steps_per_model() and Planner::predicted_seconds ask it: steps
/// routed in the current (or last) run answer as routed, later ones as the rule would route them
/// at the last step's speed (before any run: at the planner's costs).
/// Copies share their state (the stitcher holds a copy; routing() on the original shows the run);
/// one run at a time: give each concurrent stitcher a Deadline of its own. A RowStitcher asks
/// model_for only, so per row a Deadline gives that projected routing and never reads the clock.
class Deadline {
public:
  enum class Order { small_first, large_first };

  Deadline(double budget_seconds, const Planner& planner, Clock clock = steady_seconds,
           Order order = Order::small_first)
      : budget_(budget_seconds), costs_(planner.seconds_per_evaluation()),
        evaluations_(planner.evaluations()), clock_(std::move(clock)), order_(order),
        state_(std::make_shared<State>()) {
    (void)planner.for_deadline(budget_seconds); // two models, and a budget that can be met
    require(static_cast<bool>(clock_), "Deadline clock", "empty",
            "must be a callable returning seconds");
    remaining_.assign(evaluations_.size() + 1, 0);
    for (std::size_t i = evaluations_.size(); i-- > 0;)
      remaining_[i] = remaining_[i + 1] + evaluations_[i];
  }

  void check(std::size_t num_models) const {
    require(num_models == 2, "number of models", num_models, "Deadline routes exactly 2");
  }

  /// The sampling loop's decision for step ctx (asked once per step by the stitcher's route()):
  /// reads the clock, learns the last step's speed and records the choice.
  [[nodiscard]] std::size_t route_step(const StepContext& ctx, std::size_t) const {
    check_step(ctx);
    State& s = *state_;
    const auto i = static_cast<std::size_t>(ctx.step);
    if (ctx.step == s.last_step && ctx.evaluation > 0)
      return s.route[i]; // a later evaluation of the step: the same answer
    const double now = clock_();
    if (s.last_step < 0 || ctx.step <= s.last_step) { // a new run
      s = State{};
      s.start = now;
      s.route.assign(evaluations_.size(), 0);
    } else { // learn from the step just finished: measured / predicted
      const auto prev = static_cast<std::size_t>(s.last_step);
      const double predicted = evaluations_[prev] * costs_[s.route[prev]];
      if (predicted > 0)
        s.slowdown = (now - s.last) / predicted;
    }
    s.route[i] = decide(i, budget_ - (now - s.start), s.slowdown);
    s.last_step = ctx.step;
    s.last = now;
    return s.route[i];
  }

  /// A query, changing nothing: the model step ctx was routed to in the current (or last) run,
  /// or for a step not reached yet the one the rule would pick if every step from the last one
  /// routed ran at its measured speed (before any run: the planner's costs).
  [[nodiscard]] std::size_t model_for(const StepContext& ctx, std::size_t) const {
    check_step(ctx);
    const State& s = *state_;
    if (ctx.step <= s.last_step)
      return s.route[static_cast<std::size_t>(ctx.step)];
    double spent = 0, slowdown = 1;
    std::size_t j = 0;
    if (s.last_step >= 0) { // the time at the end of the last step routed, at its speed
      const auto prev = static_cast<std::size_t>(s.last_step);
      slowdown = s.slowdown;
      spent = (s.last - s.start) + slowdown * evaluations_[prev] * costs_[s.route[prev]];
      j = prev + 1;
    }
    for (;; ++j) {
      const std::size_t k = decide(j, budget_ - spent, slowdown);
      if (j == static_cast<std::size_t>(ctx.step))
        return k;
      spent += slowdown * evaluations_[j] * costs_[k];
    }
  }

  /// The model of each step routed in the current (or last) run; steps not reached hold 0.
  [[nodiscard]] const std::vector<std::size_t>& routing() const { return state_->route; }
  /// The last step's measured time over its predicted time (1 before the second step).
  [[nodiscard]] double slowdown() const { return state_->slowdown; }
  [[nodiscard]] double budget_seconds() const { return budget_; }

private:
  void check_step(const StepContext& ctx) const {
    require(ctx.num_steps == static_cast<int>(evaluations_.size()), "steps", ctx.num_steps,
            detail::concat("must equal the planner's steps, ", evaluations_.size()));
    require(ctx.step >= 0 && ctx.step < ctx.num_steps, "step", ctx.step,
            detail::concat("must be in [0, ", ctx.num_steps, ")"));
  }

  /// The rule: the model for step i with `left` seconds of budget at the given speed factor.
  [[nodiscard]] std::size_t decide(std::size_t i, double left, double slowdown) const {
    const double after = static_cast<double>(remaining_[i + 1]);
    const double need = order_ == Order::small_first
                            ? costs_[1] * (evaluations_[i] + after)
                            : costs_[1] * evaluations_[i] + costs_[0] * after;
    return left >= slowdown * need ? 1 : 0;
  }

  struct State {
    int last_step = -1;
    double start = 0, last = 0, slowdown = 1;
    std::vector<std::size_t> route;
  };

  double budget_;
  std::vector<double> costs_;
  std::vector<int> evaluations_;
  std::vector<long long> remaining_; // evaluations of steps i .. n-1
  Clock clock_;
  Order order_;
  std::shared_ptr<State> state_;
};

} // namespace tstitch::plan
