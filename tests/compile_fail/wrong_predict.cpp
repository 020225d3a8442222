// SPDX-License-Identifier: Apache-2.0
// Must NOT compile: a denoiser whose predict() has the wrong signature (its latents as a View, its
// condition by value of another type). The error names predict and the signature it must have.
#include "tstitch/sample.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/solver/ddim.hpp"

struct Model {
  using condition_type = tstitch::NoCondition;
  tstitch::Prediction prediction() const { return tstitch::Prediction::epsilon; }
  tstitch::Shape latent_shape() const { return {4, 8, 8}; }
  void predict(tstitch::View, const tstitch::StepContext&, int, tstitch::View) {}
};

int main() {
  Model model;
  tstitch::Tensor x(1, model.latent_shape());
  tstitch::DDIM ddim;
  tstitch::sample(model, tstitch::DiscreteSchedule{}, ddim, x, tstitch::NoCondition{});
}
