// SPDX-License-Identifier: Apache-2.0
#pragma once

#include "tstitch/core/torch_rng.hpp"

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

namespace tstitch {

/// Where HostBackend::fill_normal's Gaussian noise comes from.
///
/// - philox (the default): tstitch's counter-based noise, a pure function of (seed, sample, step,
///   stream), the same in any batch, on any thread count and on the GPU.
/// - torch_cpu / torch_cuda: a stateful PyTorch generator seeded like
///   `torch.Generator(device).manual_seed(seed)`. Every fill_normal is one `torch.randn` of the
///   whole batch, so the initial latents (fill_initial_noise) and then each stochastic solver's
///   step noise are drawn in the order a diffusers pipeline draws them from its one generator.
///   The NoiseKey is not used: the noise depends on the batch and on what was drawn before.
///
/// Copies share the generator (a Sampler copies its backend), so x_T drawn through one copy and
/// the run's step noise drawn through another continue one sequence. Not thread-safe.
class NoiseSource {
public:
  enum class Kind { philox, torch_cpu, torch_cuda };

  NoiseSource() = default;

  static NoiseSource philox() { return {}; }
  static NoiseSource torch_cpu(std::uint64_t seed,
                               torch_rng::CpuKernel kernel = torch_rng::CpuKernel::avx2) {
    NoiseSource source;
    source.kind_ = Kind::torch_cpu;
    source.cpu_ = std::make_shared<torch_rng::CpuGenerator>(seed, kernel);
    return source;
  }
  static NoiseSource torch_cuda(std::uint64_t seed, torch_rng::CudaDevice device = {}) {
    NoiseSource source;
    source.kind_ = Kind::torch_cuda;
    source.cuda_ = std::make_shared<torch_rng::CudaGenerator>(seed, device);
    return source;
  }

  [[nodiscard]] Kind kind() const { return kind_; }
  /// True for Philox: noise addressed by NoiseKey, independent of batch and draw order.
  [[nodiscard]] bool counter_based() const { return kind_ == Kind::philox; }

  /// The shared generators (null unless the kind is theirs), to inspect or reseed them.
  [[nodiscard]] torch_rng::CpuGenerator* cpu_generator() const { return cpu_.get(); }
  [[nodiscard]] torch_rng::CudaGenerator* cuda_generator() const { return cuda_.get(); }

  /// One torch.randn of dst.size() values from the stateful generator.
  void randn(std::span<float> dst) const {
    if (cpu_)
      cpu_->randn(dst);
    else if (cuda_)
      cuda_->randn(dst);
    else
      throw_invalid_argument("NoiseSource::randn", "philox",
                             "draws by NoiseKey (HostBackend::fill_normal), not in sequence");
  }

private:
  Kind kind_ = Kind::philox;
  std::shared_ptr<torch_rng::CpuGenerator> cpu_;
  std::shared_ptr<torch_rng::CudaGenerator> cuda_;
};

/// "philox", "torch-cpu" or "torch-cuda".
inline std::string_view to_string(NoiseSource::Kind kind) {
  switch (kind) {
  case NoiseSource::Kind::torch_cpu:
    return "torch-cpu";
  case NoiseSource::Kind::torch_cuda:
    return "torch-cuda";
  default:
    return "philox";
  }
}

} // namespace tstitch
