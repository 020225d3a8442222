// SPDX-License-Identifier: Apache-2.0
// Must NOT compile: a const solver (solvers keep per-run state). Temporaries are accepted; the
// error says so.
#include "tstitch/sample.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/solver/ddim.hpp"

struct Model {
  using condition_type = tstitch::NoCondition;
  tstitch::Prediction prediction() const { return tstitch::Prediction::epsilon; }
  tstitch::Shape latent_shape() const { return {4, 8, 8}; }
  void predict(tstitch::ConstView, const tstitch::StepContext&, const tstitch::NoCondition&,
               tstitch::View) {}
};

int main() {
  Model model;
  tstitch::Tensor x(1, model.latent_shape());
  const tstitch::DDIM ddim;
  tstitch::sample(model, tstitch::DiscreteSchedule{}, ddim, x, tstitch::NoCondition{});
}
