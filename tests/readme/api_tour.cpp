// SPDX-License-Identifier: Apache-2.0
// The README's API tour, compiled and run (check_snippets keeps the README's copy identical).
#include <tstitch/tstitch.hpp>

#include <cstdio>
#include <vector>

/// Stands for the user's network: a fixed linear map, and the condition checked against the batch
/// as the README asks of every denoiser.
void run_my_network(tstitch::ConstView x, double timestep, const std::vector<int>& labels,
                    tstitch::View out) {
  if (static_cast<std::int64_t>(labels.size()) != x.batch())
    throw tstitch::invalid_argument(tstitch::detail::concat("labels.size() = ", labels.size(),
                                                            ": must equal the batch, ", x.batch()));
  const auto k = static_cast<float>(0.1 + timestep / 10000.0);
  for (std::int64_t i = 0; i < x.numel(); ++i)
    out.data()[i] = k * x.data()[i];
}

// clang-format off
// README snippet begin
#include <tstitch/tstitch.hpp>
using namespace tstitch;

// 1. A denoiser is any type with these members; no base class, no virtuals.
struct MyEngine {
  using condition_type = std::vector<int>;                 // class labels, text embeddings, ...
  Prediction prediction() const { return Prediction::epsilon; }  // or v, sample, flow,
                                                                 // epsilon_learned_sigma (DiT)
  Shape latent_shape() const { return {4, 32, 32}; }       // [C, H, W]; the batch comes with x
  // Write the raw prediction for x (N rows) into out; ctx: step i of n, timestep, alpha, sigma.
  // The condition arrives as given to sample(): check that it covers the N rows.
  void predict(ConstView x, const StepContext& ctx, const condition_type& labels, View out) {
    run_my_network(x, ctx.point.timestep, labels, out);
  }
  // optional: the null condition, for classifier-free guidance
  condition_type unconditional(const condition_type& c) const {
    return condition_type(c.size(), 1000);
  }
  // optional: both guidance branches in one call, e.g. one batch of 2N rows on a GPU
  // void predict_guided(x, ctx, cond, uncond, View out_cond, View out_uncond);
};
static_assert(check_denoiser<MyEngine>());  // optional: names any member that is missing or wrong

int main() {
  // 2. Stitch: the small model serves the first 40% of the steps. The stitcher is a Denoiser too.
  MyEngine small, large;
  TrajectoryStitcher stitcher(small, large, 0.4);

  // 3. Sample with any schedule and solver.
  DiscreteSchedule schedule;            // DDPM linear betas, diffusers' float32 numerics
  DDIM solver;                          // or DPMSolverMultistep{}, UniPC{}, Heun{}, ...
  Tensor x(8, small.latent_shape());    // a batch of 8
  std::vector<int> labels(8, 207);      // one label per image
  SampleOptions options;
  options.steps = 100;
  options.seed = 42;                    // one seed: x_T here and any solver noise
  fill_initial_noise(x, options);       // x_T; sample k's noise is the same in any batch
  options.guidance = Guidance::dit(4.0);  // DiT's variant: guides the first 3 channels only
  SampleResult result = sample(stitcher, schedule, solver, x, labels, options);
  // result.records: per step, which model served it, timestep, sigma, wall time.
  std::printf("%d switch; step 39 by model %zu, step 40 by model %zu\n", result.switches,
              result.records[39].model, result.records[40].model);
}
// README snippet end
// clang-format on
