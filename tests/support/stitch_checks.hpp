// SPDX-License-Identifier: Apache-2.0
// Stitching checks for solvers with several model evaluations per step: an exact denoiser of
// Gaussian data that logs every call it serves, and the check that every evaluation of a step is
// served by that step's model.
#pragma once

#include <catch2/catch.hpp>

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "gaussian_mixture.hpp"
#include "gaussian_problems.hpp"
#include "tstitch/sample.hpp"

namespace tstitch::testing {

/// One model call a Recording served.
struct Call {
  std::string model;
  int step, evaluation;
  double timestep;
};

/// An exact denoiser (epsilon prediction) on curved_shape that logs every call it serves.
class Recording {
public:
  using condition_type = analytic::Labels;
  Recording(std::string name, const analytic::DiagonalGaussian& data, std::vector<Call>& log)
      : name_(std::move(name)), model_(curved_shape, data, Prediction::epsilon), log_(&log) {}
  [[nodiscard]] Prediction prediction() const { return model_.prediction(); }
  [[nodiscard]] Shape latent_shape() const { return model_.latent_shape(); }
  [[nodiscard]] analytic::Labels unconditional(const analytic::Labels& labels) const {
    return model_.unconditional(labels);
  }
  void predict(ConstView x, const StepContext& ctx, const analytic::Labels& labels, View out) {
    log_->push_back(Call{name_, ctx.step, ctx.evaluation, ctx.point.timestep});
    model_.predict(x, ctx, labels, out);
  }

private:
  std::string name_;
  analytic::ExactDenoiser model_;
  std::vector<Call>* log_;
};

/// Samples n steps of `schedule` through `stitcher`, whose Recordings "small" and "large" log into
/// `log` and which switches to "large" before step 4, with a fresh copy of `solver`, unguided and
/// at guidance 3 (two calls per evaluation). Checks that every step but the last (into sigma = 0,
/// one evaluation) evaluates twice, and that each call of a step is served by that step's model,
/// in order, at timestep(i, e) for evaluation e of step i.
template <class Stitcher, class Schedule, class SolverT, class Timestep>
void check_stitched_evaluations(Stitcher& stitcher, const Schedule& schedule, const SolverT& solver,
                                int n, std::vector<Call>& log, Timestep timestep) {
  for (double guidance : {1.0, 3.0}) {
    log.clear();
    SolverT fresh = solver;
    Tensor x(2, curved_shape);
    fill_initial_noise(x, 8);
    SampleOptions options;
    options.steps = n;
    options.guidance = Guidance::standard(guidance);
    const SampleResult result =
        sample(stitcher, schedule, fresh, x, analytic::Labels{0, 0}, options);
    const int per_evaluation = guidance == 1.0 ? 1 : 2; // guided: conditional + unconditional
    INFO("guidance " << guidance);
    REQUIRE(result.records.size() == static_cast<std::size_t>(n));
    CHECK(result.switches == 1);
    std::size_t k = 0;
    for (int i = 0; i < n; ++i) {
      const std::string expected = i < 4 ? "small" : "large";
      const int evaluations = i + 1 < n ? 2 : 1; // the step into sigma = 0 is Euler's
      const StepRecord& record = result.records[static_cast<std::size_t>(i)];
      CHECK(record.model == (i < 4 ? 0u : 1u));
      CHECK(record.evaluations == evaluations * per_evaluation);
      for (int e = 0; e < evaluations; ++e)
        for (int g = 0; g < per_evaluation; ++g, ++k) {
          REQUIRE(k < log.size());
          INFO("step " << i << ", evaluation " << e);
          CHECK(log[k].model == expected);
          CHECK(log[k].step == i);
          CHECK(log[k].evaluation == e);
          CHECK(log[k].timestep == timestep(i, e));
        }
    }
    CHECK(k == log.size());
  }
}

} // namespace tstitch::testing
