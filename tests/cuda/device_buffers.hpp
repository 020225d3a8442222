// SPDX-License-Identifier: Apache-2.0
#pragma once

// Test helpers: a host vector to a new device buffer and back, and a device view to a host
// tensor, each waiting for the GPU (the vector copies use the legacy stream, which tstitch's
// non-blocking stream is not ordered after, so the device is synchronised on both sides of them).
#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

#include "tstitch/core/tensor.hpp"
#include "tstitch/cuda/runtime.hpp"

namespace tstitch::test {

template <class T> cuda::DeviceBuffer<T> to_device(const std::vector<T>& host) {
  cuda::DeviceBuffer<T> d(static_cast<std::int64_t>(host.size()));
  TSTITCH_CUDA_CHECK(cudaDeviceSynchronize());
  TSTITCH_CUDA_CHECK(
      cudaMemcpy(d.data(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  TSTITCH_CUDA_CHECK(cudaDeviceSynchronize());
  return d;
}

template <class T> std::vector<T> to_host(const cuda::DeviceBuffer<T>& d) {
  TSTITCH_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<T> host(static_cast<std::size_t>(d.size()));
  TSTITCH_CUDA_CHECK(
      cudaMemcpy(host.data(), d.data(), host.size() * sizeof(T), cudaMemcpyDeviceToHost));
  return host;
}

/// A contiguous host copy of a (possibly strided) device view (cuda::download waits for it).
inline Tensor to_host(ConstView device) {
  Tensor host(device.batch(), device.shape());
  cuda::download(host.view(), device);
  return host;
}

} // namespace tstitch::test
