// SPDX-License-Identifier: Apache-2.0
#pragma once

// Rules that route each batch row (each sample) of a step on its own, for a RowStitcher: one
// batch can carry samples at different small-model fractions.
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include "tstitch/core/error.hpp"
#include "tstitch/core/step.hpp"
#include "tstitch/stitch/policy.hpp"

namespace tstitch {

/// A rule that says which of k models serves row `row` of the step described by ctx.
///
/// 1. `model_for_row(ctx, row, k)` returns an index in [0, k).
/// Optional: `check(k)` throws when the rule cannot serve k models (called once, at
/// construction); `rows()` is the batch size the rule was written for (checked at every step).
template <class P>
concept RowPolicy = requires(const P& p, const StepContext& ctx, std::int64_t row,
                             std::size_t num_models) {
  { p.model_for_row(ctx, row, num_models) } -> std::convertible_to<std::size_t>;
};

/// One StitchPolicy per row: row r is routed by policies[r] (see row_fractions for the common
/// case of one small-model fraction per sample).
template <StitchPolicy P> class PerRow {
public:
  explicit PerRow(std::vector<P> policies) : policies_(std::move(policies)) {
    require(!policies_.empty(), "number of row policies", policies_.size(), "must be at least 1");
  }
  void check(std::size_t num_models) const {
    if constexpr (requires(const P& p) { p.check(num_models); })
      for (const P& p : policies_)
        p.check(num_models);
  }
  [[nodiscard]] std::int64_t rows() const { return static_cast<std::int64_t>(policies_.size()); }
  [[nodiscard]] std::size_t model_for_row(const StepContext& ctx, std::int64_t row,
                                          std::size_t num_models) const {
    return static_cast<std::size_t>(
        policies_[static_cast<std::size_t>(row)].model_for(ctx, num_models));
  }
  [[nodiscard]] const std::vector<P>& policies() const { return policies_; }

private:
  std::vector<P> policies_;
};

/// Per-sample small-model fractions for two models: row r's small model serves
/// small_fractions[r] of the steps, exactly as TrajectoryStitcher(small, large, that fraction).
[[nodiscard]] inline PerRow<StepFraction>
row_fractions(const std::vector<double>& small_fractions) {
  std::vector<StepFraction> policies;
  policies.reserve(small_fractions.size());
  for (std::size_t r = 0; r < small_fractions.size(); ++r) {
    const double f = small_fractions[r];
    if (!(f >= 0.0 && f <= 1.0))
      throw_invalid_argument(detail::concat("small_fractions[", r, "]"), f, "must be in [0, 1]");
    policies.push_back(StepFraction::small_fraction(f));
  }
  return PerRow<StepFraction>(std::move(policies));
}

/// Any user rule (step context, row) -> model index.
class RowRule {
public:
  using function_type = std::function<std::size_t(const StepContext&, std::int64_t row)>;
  explicit RowRule(function_type rule) : rule_(std::move(rule)) {
    require(static_cast<bool>(rule_), "row rule", "empty", "must be callable");
  }
  [[nodiscard]] std::size_t model_for_row(const StepContext& ctx, std::int64_t row,
                                          std::size_t) const {
    return rule_(ctx, row);
  }

private:
  function_type rule_;
};

} // namespace tstitch
