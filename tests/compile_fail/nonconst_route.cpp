// SPDX-License-Identifier: Apache-2.0
// Must NOT compile: a composite denoiser whose route() is not const. The loop routes through a
// const reference and would never call it, so sample() refuses it by name instead.
#include <vector>

#include "tstitch/sample.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/solver/ddim.hpp"
#include "tstitch/stitch/route.hpp"

using namespace tstitch;

struct Pair {
  using condition_type = std::vector<int>;
  Prediction prediction() const { return Prediction::epsilon; }
  Shape latent_shape() const { return {4, 8, 8}; }
  void predict(ConstView, const StepContext&, const std::vector<int>&, View) {}
  Route route(const StepContext& ctx) { return Route{ctx.step < 5 ? 0u : 1u}; } // not const
};

int main() {
  Pair model;
  Tensor x(1, model.latent_shape());
  sample(model, DiscreteSchedule{}, DDIM{}, x, std::vector<int>{0});
}
