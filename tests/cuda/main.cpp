// SPDX-License-Identifier: Apache-2.0
// Catch2 main of the CUDA tests. Without a usable CUDA device every test exits with code 77,
// which ctest's SKIP_RETURN_CODE turns into "skipped": a machine without a GPU never reports a
// CUDA test as passed. Listing the tests (ctest's discovery) works without a device.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>
#include <string_view>

#include "tstitch/cuda/runtime.hpp"

int main(int argc, char** argv) {
  bool listing = false;
  for (int i = 1; i < argc; ++i)
    listing = listing || std::string_view(argv[i]).starts_with("--list");
  if (!listing && !tstitch::cuda::device_available()) {
    std::puts("tstitch_cuda_tests: no CUDA device; skipped");
    return 77;
  }
  if (!listing) {
    const tstitch::cuda::DeviceInfo info = tstitch::cuda::device_info();
    std::printf("tstitch_cuda_tests on %s (sm_%d%d, %d SMs)\n", info.name.c_str(),
                info.compute_major, info.compute_minor, info.multiprocessors);
  }
  return Catch::Session().run(argc, argv);
}
