// SPDX-License-Identifier: Apache-2.0
#pragma once

// tstitch-sample's latency planning: --target-speedup X or --deadline-ms T instead of a fraction.
// The models' cost per step is measured on the backend that will sample (warm-up, then a median),
// for the run's batches; the planner (tstitch/plan/) picks the small-model fraction, by a quality
// table where one applies; after sampling the measured time is printed next to the predicted one.

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

#include <CLI/CLI.hpp>

#include "tstitch/io/quality_table.hpp"
#include "tstitch/plan/measure.hpp"
#include "tstitch/plan/planner.hpp"
#include "tstitch/tstitch.hpp"

namespace tstitch_sample {

/// A bad planning request or an unreachable budget: the message names the option and its value.
struct plan_error : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

/// A time or ratio for messages, to 4 significant digits (concat would print 17).
inline std::string num(double v) {
  char text[32];
  std::snprintf(text, sizeof text, "%.4g", v);
  return text;
}

template <class... Parts> [[noreturn]] void plan_bad(const Parts&... parts) {
  throw plan_error(tstitch::detail::concat(parts...));
}

/// The shipped pair and its quality table (models/): used without --quality-table when the two
/// model files are these, next to the table.
inline constexpr const char* shipped_small = "fashion_dit_s.safetensors";
inline constexpr const char* shipped_large = "fashion_dit_l.safetensors";
inline constexpr const char* shipped_table = "fashion_quality.json";

struct PlanRequest {
  std::optional<double> target_speedup; ///< over the large model alone
  std::optional<double> deadline_ms;    ///< the whole run's model time (every batch)
  std::string quality_table;            ///< --quality-table; empty: the shipped one if it applies
  int warmup = 2;                       ///< untimed evaluations before the cost measurement
  std::optional<int> repeats;           ///< --plan-repeats as given; unset: default_repeats
  static constexpr int default_repeats = 5;

  [[nodiscard]] int timed_repeats() const { return repeats.value_or(default_repeats); }

  [[nodiscard]] bool active() const { return target_speedup || deadline_ms; }
  /// The option as given, its value in the shortest form that reads back the same ("1e-06").
  [[nodiscard]] std::string option_text() const {
    char text[64];
    const double v = target_speedup ? *target_speedup : deadline_ms.value_or(0);
    const auto end = std::to_chars(text, text + sizeof text, v).ptr;
    return (target_speedup ? "--target-speedup = " : "--deadline-ms = ") + std::string(text, end);
  }
};

/// The options, each excluding --fraction, --fractions (added before) and the other budget.
inline void add_plan_options(CLI::App& app, PlanRequest& r) {
  auto* speedup = app.add_option("--target-speedup", r.target_speedup,
                                 "two models: measure each model's cost per step, then pick the "
                                 "small-model fraction giving at least this speed-up over the "
                                 "large model alone (best quality by the quality table, if any)");
  auto* deadline = app.add_option("--deadline-ms", r.deadline_ms,
                                  "as --target-speedup, for a budget in milliseconds of model "
                                  "time for the whole run (every batch)");
  speedup->excludes("--fraction")->excludes("--fractions")->excludes(deadline);
  deadline->excludes("--fraction")->excludes("--fractions");
  app.add_option("--quality-table", r.quality_table,
                 "with --target-speedup/--deadline-ms: a quality table (fraction -> metric, lower "
                 "is better; default: models/fashion_quality.json for the shipped pair)");
  app.add_option("--plan-repeats", r.repeats,
                 "with --target-speedup/--deadline-ms: timed evaluations of each model whose "
                 "median is its cost (default 5; more: a steadier plan, a longer planning time)");
}

/// Phase 1, before any model is loaded: the values and what planning supports.
inline void check_plan_request(const PlanRequest& r, std::size_t models, const std::string& rule,
                               const std::string& device) {
  if (!r.active()) {
    if (!r.quality_table.empty())
      plan_bad("--quality-table = '", r.quality_table,
               "': used only with --target-speedup or --deadline-ms");
    if (r.repeats)
      plan_bad("--plan-repeats = ", *r.repeats,
               ": used only with --target-speedup or --deadline-ms");
    return;
  }
  if (const int n = r.timed_repeats(); n < 1 || n > 1000)
    plan_bad("--plan-repeats = ", n, ": must be in [1, 1000]");
  const std::string what = r.option_text();
  if (r.target_speedup && !(*r.target_speedup > 0 && std::isfinite(*r.target_speedup)))
    plan_bad(what, ": must be finite and > 0 (a speed-up over the large model alone)");
  if (r.deadline_ms && !(*r.deadline_ms > 0 && std::isfinite(*r.deadline_ms)))
    plan_bad(what, ": must be finite and > 0");
  if (models != 2)
    plan_bad(what, ": plans a small and a large model; got ", models, " models");
  if (rule != "fraction")
    plan_bad(what, ": plans a --rule fraction run; got --rule ", rule);
  if (device != "cpu")
    plan_bad(what, ": plans on the CPU models only; got --device ", device);
}

/// The quality table to plan with, and a line saying which (or why none).
struct TableChoice {
  std::optional<tstitch::plan::QualityTable> table;
  std::string note;
};

inline TableChoice find_quality_table(const PlanRequest& r, const std::vector<std::string>& models,
                                      int steps) {
  namespace fs = std::filesystem;
  TableChoice c;
  if (!r.quality_table.empty()) {
    try {
      c.table = tstitch::plan::load_quality_table(r.quality_table);
    } catch (const std::exception& e) {
      plan_bad("--quality-table = '", r.quality_table, "': ", e.what());
    }
    if (c.table->steps != 0 && c.table->steps != steps)
      plan_bad("--quality-table = '", r.quality_table, "': measured at ", c.table->steps,
               " steps; the run has --steps ", steps);
    c.note =
        tstitch::detail::concat("quality table '", r.quality_table, "' (", c.table->metric, ")");
    return c;
  }
  const bool shipped = models.size() == 2 && fs::path(models[0]).filename() == shipped_small &&
                       fs::path(models[1]).filename() == shipped_large;
  const fs::path table = fs::path(models.empty() ? "" : models[0]).parent_path() / shipped_table;
  if (!shipped || !fs::is_regular_file(table)) {
    c.note = "no quality table (fewest small-model steps)";
    return c;
  }
  c.table = tstitch::plan::load_quality_table(table);
  if (c.table->steps != 0 && c.table->steps != steps) {
    c.note = tstitch::detail::concat("quality table '", table.string(), "' not used: measured at ",
                                     c.table->steps, " steps, the run has ", steps);
    c.table.reset();
    return c;
  }
  c.note = tstitch::detail::concat("quality table '", table.string(), "' (", c.table->metric, ")");
  return c;
}

/// The plan for the request from the run's planner (two models, costs of the whole run's steps).
/// A budget no routing meets is refused with what is achievable.
inline tstitch::plan::Plan choose_plan(const PlanRequest& r, const tstitch::plan::Planner& planner,
                                       const tstitch::plan::QualityTable* table) {
  const std::string what = r.option_text();
  tstitch::plan::Plan fastest = planner.at_small_steps(0);
  for (int m = 1; m <= planner.steps(); ++m) {
    const tstitch::plan::Plan p = planner.at_small_steps(m);
    if (p.predicted_seconds < fastest.predicted_seconds)
      fastest = p;
  }
  const std::string routing =
      fastest.small_steps == planner.steps()
          ? tstitch::detail::concat("all ", planner.steps(), " steps on the small model")
          : tstitch::detail::concat(fastest.small_steps, " of ", planner.steps(),
                                    " steps on the small model");
  if (r.target_speedup && *r.target_speedup > fastest.speedup)
    plan_bad(what, ": above the achievable speed-up, ", num(fastest.speedup), "x (", routing,
             ", predicted ", num(1e3 * fastest.predicted_seconds), " ms)");
  if (r.deadline_ms && *r.deadline_ms < 1e3 * fastest.predicted_seconds)
    plan_bad(what, ": below the fastest routing's predicted time, ",
             num(1e3 * fastest.predicted_seconds), " ms (", routing, ")");
  try {
    if (r.target_speedup)
      return table ? planner.for_speedup(*r.target_speedup, *table)
                   : planner.for_speedup(*r.target_speedup);
    return table ? planner.for_deadline(*r.deadline_ms / 1e3, *table)
                 : planner.for_deadline(*r.deadline_ms / 1e3);
  } catch (const tstitch::invalid_argument& e) {
    plan_bad(what, ": ", e.what());
  }
}

/// What planning chose, for the run and its report.
struct PlannedRun {
  tstitch::plan::Plan plan;
  std::vector<double> step_seconds; ///< per model: one step's evaluations over all batches
  std::string rule_text;            ///< for the outputs' parameters
  std::string metric;               ///< the quality table's, if planned with one
};

/// Seconds of one model evaluation of every batch of the run, per model: the full batches' cost
/// and the last, partial batch's, each measured on latents of that size.
template <class Model>
std::vector<double> measure_run_costs(const PlanRequest& r, std::vector<Model>& models,
                                      const tstitch::Trajectory& trajectory, int count, int batch,
                                      const std::vector<int>& labels, double guidance,
                                      std::uint64_t seed) {
  batch = std::min(batch, count);
  const int full = count / batch, rest = count % batch;
  tstitch::plan::MeasureOptions measure;
  measure.warmup = r.warmup;
  measure.repeats = r.timed_repeats();
  tstitch::StepContext ctx;
  ctx.num_steps = trajectory.steps();
  ctx.point = trajectory[0];
  std::vector<double> total(models.size(), 0.0);
  for (const int rows : {batch, rest}) {
    if (rows == 0)
      continue;
    tstitch::Tensor x(rows, models.front().latent_shape());
    tstitch::fill_initial_noise(x.view(), seed);
    const std::vector<int> cond(labels.begin(), labels.begin() + rows);
    const std::vector<int> uncond = models.back().unconditional(cond);
    const std::vector<int>* guided = guidance != 1.0 ? &uncond : nullptr;
    const tstitch::plan::ModelCosts costs = tstitch::plan::measure_costs(
        x.view(), ctx, cond, guided, measure, models.front(), models.back());
    for (std::size_t k = 0; k < total.size(); ++k)
      total[k] += (rows == batch ? full : 1) * costs.seconds[k];
  }
  return total;
}

/// The model evaluations of each step under the run's solver (Heun decides per step in begin()).
inline std::vector<int> run_evaluations(const tstitch::AnySolver& solver,
                                        const tstitch::Trajectory& trajectory,
                                        const tstitch::Shape& shape) {
  return std::visit(
      [&](auto s) {
        tstitch::HostBackend backend;
        s.begin(backend, trajectory, 1, shape);
        return tstitch::plan::evaluations_per_step(s, trajectory.steps());
      },
      solver);
}

/// Measures, plans and prints the plan (stderr); models: small then large, set up for the run.
template <class Model>
PlannedRun plan_run(const PlanRequest& r, std::vector<Model>& models,
                    const std::vector<std::string>& model_paths,
                    const tstitch::AnySchedule& schedule, const tstitch::AnySolver& solver,
                    int steps, int count, int batch, const std::vector<int>& labels,
                    double guidance, std::uint64_t seed) {
  const TableChoice table = find_quality_table(r, model_paths, steps);
  const tstitch::Trajectory trajectory = schedule.trajectory(steps);
  PlannedRun run;
  std::vector<double> costs =
      measure_run_costs(r, models, trajectory, count, batch, labels, guidance, seed);
  const tstitch::plan::Planner planner(
      costs, run_evaluations(solver, trajectory, models.front().latent_shape()));
  run.plan = choose_plan(r, planner, table.table ? &*table.table : nullptr);
  run.step_seconds = std::move(costs);
  if (table.table)
    run.metric = table.table->metric;
  const double fraction = tstitch::plan::fraction_for_steps(run.plan.small_steps, run.plan.steps);
  run.rule_text = tstitch::detail::concat("fraction ", fraction, ",", 1.0 - fraction,
                                          " (planned: ", r.option_text(), ")");
  std::fprintf(stderr,
               "plan: measured %.3f ms (small) and %.3f ms (large) per evaluation of the run's "
               "%d images (median of %d); %s\n",
               1e3 * run.step_seconds[0], 1e3 * run.step_seconds[1], count, r.timed_repeats(),
               table.note.c_str());
  return run;
}

/// The plan's line after sampling (stdout): the chosen fraction, the predicted and measured time.
inline std::string plan_report(const PlannedRun& run, double measured_seconds) {
  const tstitch::plan::Plan& p = run.plan;
  std::string quality;
  if (p.quality)
    quality = ", " + run.metric + " " + num(*p.quality);
  char text[256];
  std::snprintf(text, sizeof text,
                "planned: fraction %.4g (%d small + %d large steps), speed-up %.3gx%s; predicted "
                "%.1f ms, measured %.1f ms (%+.1f%%)",
                p.small_fraction(), p.small_steps, p.steps - p.small_steps, p.speedup,
                quality.c_str(), 1e3 * p.predicted_seconds, 1e3 * measured_seconds,
                100.0 * (measured_seconds / p.predicted_seconds - 1.0));
  return text;
}

} // namespace tstitch_sample
