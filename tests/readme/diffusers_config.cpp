// SPDX-License-Identifier: Apache-2.0
// The README's diffusers-config example, compiled and run from a folder holding
// sd15/scheduler/scheduler_config.json (a copy of tests/data/diffusers/sd15_dpm_solver.json).
#include <cstdio>
#include <vector>

#include "tstitch/tstitch.hpp"

// clang-format off
// README snippet begin
#include <tstitch/diffusers/scheduler_config.hpp>  // tstitch::io

// Samples `model` with the schedule and the solver of a diffusers scheduler folder.
template <class Model>
void sample_as_configured(Model& model, tstitch::Tensor& x,
                          const tstitch::condition_of<Model>& cond) {
  tstitch::DiffusersScheduler config = tstitch::from_diffusers_config("sd15/scheduler");
  // config.prediction must be what `model` outputs; config.ignored lists other classes' keys.
  tstitch::SampleOptions options;
  options.steps = 25;
  std::visit([&](auto solver) { tstitch::sample(model, config.schedule, solver, x, cond, options); },
             config.solver);
}
// README snippet end
// clang-format on

int main() {
  using namespace tstitch;
  const Shape shape{4, 8, 8};
  auto model = make_denoiser(Prediction::epsilon, shape,
                             [](ConstView x, const StepContext&, const NoCondition&, View out) {
                               for (std::int64_t i = 0; i < x.numel(); ++i)
                                 out.data()[i] = 0.5f * x.data()[i];
                             });
  Tensor x(2, shape);
  fill_initial_noise(x, 1);
  sample_as_configured(model, x, NoCondition{});
  for (std::int64_t i = 0; i < x.numel(); ++i)
    if (!std::isfinite(x[i]))
      return 1;
  std::printf("sampled 2 images with %s\n",
              from_diffusers_config("sd15/scheduler").class_name.c_str());
}
