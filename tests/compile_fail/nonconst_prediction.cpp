// SPDX-License-Identifier: Apache-2.0
// Must NOT compile: a denoiser whose prediction() is not const. The error names the member and the
// form it must have, and, with `using namespace tstitch` and a std:: condition type in scope,
// lists no std::sample candidates.
#include <algorithm>
#include <vector>

#include "tstitch/sample.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/solver/ddim.hpp"

using namespace tstitch;

struct Model {
  using condition_type = std::vector<int>;
  Prediction prediction() { return Prediction::epsilon; } // not const
  Shape latent_shape() const { return {4, 8, 8}; }
  void predict(ConstView, const StepContext&, const std::vector<int>&, View) {}
};

int main() {
  Model model;
  Tensor x(1, model.latent_shape());
  sample(model, DiscreteSchedule{}, DDIM{}, x, std::vector<int>{0});
}
