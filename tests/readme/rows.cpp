// SPDX-License-Identifier: Apache-2.0
// The README's per-row stitching example, compiled and run in the source tree (models/ holds the
// shipped pair): four requests with different small-model fractions in one batch.
#include <cstdio>
#include <vector>

#include "tstitch/models/dit/cpu_model.hpp"
#include "tstitch/tstitch.hpp"

int main() {
  using namespace tstitch;
  dit::CpuModel small(dit::Weights::load("models/fashion_dit_s.safetensors"), "DiT-S");
  dit::CpuModel large(dit::Weights::load("models/fashion_dit_l.safetensors"), "DiT-L");
  Tensor x(4, small.latent_shape());
  std::vector<int> labels = {0, 1, 7, 9};
  SampleOptions options;
  options.steps = 20;
  options.guidance = Guidance::standard(1.25);
  fill_initial_noise(x, options);
  // clang-format off
  // README snippet begin
  using Labels = std::vector<int>;
  RowStitcher<DenoiserRef<Labels>, PerRow<StepFraction>> stitcher(
      row_fractions({0.0, 0.4, 0.4, 0.8}), {small, large});  // small-model fraction per row
  SampleResult result = sample(stitcher, DiscreteSchedule{}, DPMSolverMultistep{}, x, labels,
                               options);
  // result.records[i].rows: the model that served each row at step i
  // README snippet end
  // clang-format on
  std::vector<int> small_steps(4, 0);
  for (const StepRecord& r : result.records)
    for (std::size_t row = 0; row < r.rows.size(); ++row)
      small_steps[row] += r.rows[row] == 0 ? 1 : 0;
  std::printf("small-model steps per row: %d %d %d %d\n", small_steps[0], small_steps[1],
              small_steps[2], small_steps[3]);
}
