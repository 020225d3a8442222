// SPDX-License-Identifier: Apache-2.0
// Checks shared by the solver tests: the allocations a solver makes after begin() (for the
// "allocates in begin() only" tests), seeded sampling runs (for the "reproducible per seed"
// tests), and options built by editing the defaults (for the option validation tests).
#pragma once

#include <cstdint>
#include <utility>

#include "tensor_checks.hpp"
#include "tstitch/sample.hpp"
#include "tstitch/solver/concept.hpp"

namespace tstitch::testing {

/// The allocations of a solver: in its begin(), and after it.
struct Allocations {
  int in_begin;    ///< the first begin()'s: the workspace
  int after_begin; ///< all later ones: nothing, for a solver that allocates in begin() only
};

/// Counts the allocations of `solver`: begin(), then two runs of the same batch and shape, each a
/// begin() and an update of x with `output` at every evaluation of every step of `trajectory`
/// (step i draws from NoiseKey{1, 0, i, 1}).
template <class SolverT>
Allocations count_allocations(SolverT solver, const Trajectory& trajectory, Tensor& x,
                              const ModelOutput& output) {
  int count = 0;
  CountingBackend backend{{}, &count};
  solver.begin(backend, trajectory, x.batch(), x.shape());
  const int in_begin = count;
  for (int run = 0; run < 2; ++run) {
    solver.begin(backend, trajectory, x.batch(), x.shape());
    for (int i = 0; i < trajectory.steps(); ++i) {
      SolverStep step{i, 0, &trajectory, NoiseKey{1, 0, static_cast<std::uint32_t>(i), 1}};
      for (int e = 0; e < evaluations_of(solver, i); ++e) {
        step.evaluation = e;
        solver.update(backend, step, output, x);
      }
    }
  }
  return {in_begin, count - in_begin};
}

/// The allocations count_allocations finds after the first begin().
template <class SolverT>
int allocations_after_begin(SolverT solver, const Trajectory& trajectory, Tensor& x,
                            const ModelOutput& output) {
  return count_allocations(std::move(solver), trajectory, x, output).after_begin;
}

/// allocations_after_begin on a batch of 2 of `shape`: x from fill_initial_noise(seed 1), the
/// model output an epsilon prediction (eps from seed 2, x0 = 0).
template <class SolverT>
int allocations_after_begin(SolverT solver, const Trajectory& trajectory, Shape shape) {
  Tensor x(2, shape), x0(2, shape), eps(2, shape);
  fill_initial_noise(x, 1);
  fill_initial_noise(eps, 2);
  return allocations_after_begin(std::move(solver), trajectory, x,
                                 ModelOutput{x0, eps, eps, Prediction::epsilon});
}

/// The latents after `steps` steps of (a copy of) `solver` with `model` on `schedule` and
/// options.seed = seed, from a batch of 2 of fill_initial_noise(noise_seed) on the model's latent
/// shape, unconditioned: for the "reproducible per seed" tests.
template <class Model, class Schedule, class SolverT>
Tensor seeded_sample(Model& model, const Schedule& schedule, SolverT solver, int steps,
                     std::uint64_t seed, std::uint64_t noise_seed) {
  Tensor x(2, model.latent_shape());
  fill_initial_noise(x, noise_seed);
  SampleOptions options;
  options.steps = steps;
  options.seed = seed;
  sample(model, schedule, solver, x, condition_of<Model>{}, options);
  return x;
}

/// A T made from default Options after edit(options): for the option validation tests, e.g.
/// made_with<DEIS, DEISOptions>([](auto& o) { o.solver_order = 4; }).
template <class T, class Options, class Edit> T made_with(Edit edit) {
  Options options;
  edit(options);
  return T(options);
}

} // namespace tstitch::testing
