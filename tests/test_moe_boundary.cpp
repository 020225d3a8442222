// SPDX-License-Identifier: Apache-2.0
// Two-expert models in the style of Wan 2.2 (diffusers' WanPipeline with `boundary_ratio`,
// stable-diffusion.cpp's --moe-boundary): the high-noise expert serves every step whose timestep
// t satisfies t >= boundary_ratio * num_train_timesteps, the low-noise expert the rest. In tstitch
// that is TimestepThreshold(boundary_ratio * N); this test checks that it splits the steps
// exactly as that rule does on the timesteps diffusers' FlowMatchEulerDiscreteScheduler makes.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "tstitch/sample.hpp"
#include "tstitch/schedule/flow.hpp"
#include "tstitch/solver/euler.hpp"
#include "tstitch/stitch/stitcher.hpp"

using namespace tstitch;

namespace {

/// diffusers' FlowMatchEulerDiscreteScheduler.set_timesteps(n) with `shift` (no dynamic
/// shifting), written out. The constructor shifts the training sigmas t / N for t = N..1 in
/// float32 and keeps the last as sigma_min; set_timesteps spaces model times linearly in float64
/// from sigma_max * N to sigma_min * N, divides by N, shifts again, and makes the sigmas float32
/// and the timesteps sigmas * N in float32.
std::vector<float> diffusers_timesteps(int n, double shift, int train = 1000) {
  const auto shifted32 = [&](float s) {
    return static_cast<float>(shift) * s / (1.0f + (static_cast<float>(shift) - 1.0f) * s);
  };
  const double sigma_max = shifted32(1.0f);
  const double sigma_min = shifted32(1.0f / static_cast<float>(train));
  const double first = sigma_max * train, last = sigma_min * train;
  std::vector<float> out;
  for (int i = 0; i < n; ++i) {
    const double t = n == 1 ? first : first + (last - first) * i / (n - 1.0);
    const double s = t / train;
    const auto sigma = static_cast<float>(shift * s / (1.0 + (shift - 1.0) * s));
    out.push_back(sigma * static_cast<float>(train));
  }
  return out;
}

/// The pipeline's loop: the high-noise expert (0) where t >= boundary_ratio * N.
std::vector<std::size_t> diffusers_experts(const std::vector<float>& timesteps,
                                           double boundary_ratio, int train = 1000) {
  const double boundary_timestep = boundary_ratio * train;
  std::vector<std::size_t> experts;
  for (const float t : timesteps)
    experts.push_back(static_cast<double>(t) >= boundary_timestep ? 0 : 1);
  return experts;
}

} // namespace

TEST_CASE("TimestepThreshold(boundary_ratio * N) splits steps as Wan 2.2's boundary_ratio",
          "[stitch][moe]") {
  const Shape shape{1, 2, 2};
  const auto expert = [&] {
    return make_denoiser(Prediction::flow, shape,
                         [](ConstView, const StepContext&, const NoCondition&, View out) {
                           HostBackend{}.fill(out, 0.0f);
                         });
  };
  auto high_noise = expert();
  auto low_noise = expert();
  // 1.0 puts the boundary on the first timestep (exactly N): t >= boundary includes it.
  for (const double boundary_ratio : {0.875, 0.9, 0.5, 1.0}) {
    for (const double shift : {1.0, 3.0, 5.0, 12.0}) {
      for (const int steps : {4, 10, 20, 40, 50}) {
        INFO("boundary_ratio " << boundary_ratio << ", shift " << shift << ", " << steps
                               << " steps");
        FlowMatchScheduleOptions options;
        options.shift = shift;
        const FlowMatchSchedule schedule(options);
        // The schedule's timesteps are diffusers' (to float32 rounding).
        const std::vector<float> reference = diffusers_timesteps(steps, shift);
        const std::vector<double> ours = schedule.timesteps(steps);
        REQUIRE(ours.size() == reference.size());
        for (std::size_t i = 0; i < ours.size(); ++i)
          CHECK(ours[i] == Approx(reference[i]).epsilon(1e-6));

        TrajectoryStitcher stitcher(high_noise, low_noise,
                                    TimestepThreshold(boundary_ratio * 1000));
        Tensor x(1, shape);
        Euler euler;
        SampleOptions sample_options;
        sample_options.steps = steps;
        const SampleResult result =
            sample(stitcher, schedule, euler, x, NoCondition{}, sample_options);
        std::vector<std::size_t> served;
        for (const StepRecord& r : result.records)
          served.push_back(r.model);
        CHECK(served == diffusers_experts(reference, boundary_ratio));
      }
    }
  }
}
