// SPDX-License-Identifier: Apache-2.0
// Guidance::dit guides DiT's first 3 latent channels; on a model with fewer channels the error
// must say what to use instead, since the README's DiT example is copied onto other models.
#include <catch2/catch.hpp>

#include "tstitch/sample.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/solver/ddim.hpp"

using namespace tstitch;

TEST_CASE("Guidance::dit on a 1-channel model names Guidance::standard", "[sample][errors]") {
  const Shape shape{1, 4, 4};
  auto model = make_denoiser(Prediction::epsilon, shape,
                             [](ConstView, const StepContext&, const NoCondition&, View out) {
                               HostBackend{}.fill(out, 0.0f);
                             });
  Tensor x(2, shape);
  DDIM ddim;
  SampleOptions options;
  options.steps = 2;
  options.guidance = Guidance::dit(1.5);
  CHECK_THROWS_WITH(
      sample(model, DiscreteSchedule{}, ddim, x, NoCondition{}, NoCondition{}, options),
      Catch::Contains("guided_channels = 3") && Catch::Contains("1 channel;") &&
          Catch::Contains("Guidance::standard(scale)"));
  options.guidance = Guidance::standard(1.5); // the advice works
  CHECK_NOTHROW(sample(model, DiscreteSchedule{}, ddim, x, NoCondition{}, NoCondition{}, options));
}
