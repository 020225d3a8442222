// SPDX-License-Identifier: Apache-2.0
// The README's two CUDA examples, compiled where tstitch::cuda_dit is built and run on a GPU
// (prints SKIPPED without one), in the source tree (models/ holds the shipped pair).
#include <cstdio>
#include <vector>

#include "tstitch/cuda/dit.hpp"
#include "tstitch/cuda/sampling.hpp"
#include "tstitch/tstitch.hpp"

using namespace tstitch;

/// Stands for the user's own GPU engine: here a DiT, which has the members a device denoiser
/// needs (predict over device views, one int condition per row, stream()).
struct MyTensorRtEngine : cuda::DitModel {
  MyTensorRtEngine()
      : cuda::DitModel(dit::Weights::load("models/fashion_dit_s.safetensors"), "engine") {}
};

int main() {
  if (!cuda::device_available()) {
    std::printf("SKIPPED: no CUDA device\n");
    return 0;
  }
  // clang-format off
  // README snippet begin
  cuda::DitModel small(dit::Weights::load("models/fashion_dit_s.safetensors"), "DiT-S");
  cuda::DitModel large(dit::Weights::load("models/fashion_dit_l.safetensors"), "DiT-L");
  cuda::DitModel* models[] = {&small, &large};         // model 0 serves first

  Tensor noise(8, small.latent_shape());               // x_T: the usual Philox noise on the host
  fill_initial_noise(noise.view(), /*seed=*/42);
  cuda::DeviceTensor x(8, small.latent_shape());
  cuda::upload(x.view(), noise.view());                // set-up copy (waits)
  std::vector<int> labels = {0, 1, 2, 3, 4, 5, 6, 7};  // one class per image

  SampleOptions options;
  options.guidance = Guidance::standard(1.25);
  options.check_finite = false;                        // on (default): one GPU sync per step
  cuda::DeviceSampler sampler;                         // keeps its device buffers between runs
  sampler.run(models, StepFraction::small_fraction(0.4), DiscreteSchedule{}, DDIM{}, x.view(),
              labels, options);                        // enqueued; x is sampled in place
  Tensor images(8, small.latent_shape());
  cuda::download(images.view(), x.view());             // waits for the stream
  // README snippet end

  // README snippet begin
  MyTensorRtEngine engine;                             // predict() enqueues on engine.stream()
  cuda::DeviceStitcher stitcher(PaperTimestep(0.4), {engine, large});  // DeviceDenoiserRefs
  stitcher.set_names({"engine", "DiT-L"}).on_switch([](const SwitchEvent&) { /* ... */ });
  sampler.run(stitcher, DiscreteSchedule{}, UniPC{}, x.view(), labels, options);
  // README snippet end
  // clang-format on
  cuda::download(images.view(), x.view());
  for (std::int64_t i = 0; i < images.numel(); ++i)
    if (!std::isfinite(images[i]))
      return 1;
  std::printf("sampled 8 images on the GPU, twice\n");
}
