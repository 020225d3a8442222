// SPDX-License-Identifier: Apache-2.0
// Device allocation sizes, checked on the host: a size int64 cannot count is refused before any
// CUDA call, and a failed cudaMalloc names the buffer and the bytes. These run without a GPU
// (cudaMalloc then fails for want of a device, which must read the same way as out of memory).
#include <catch2/catch.hpp>

#include <cstdint>
#include <string>

#include "tstitch/cuda/runtime.hpp"

using namespace tstitch;

TEST_CASE("device buffer bytes that int64 cannot count are refused before cudaMalloc",
          "[cuda][host]") {
  // 2^62 floats are 2^64 bytes: as a size_t product that wraps to 0, which cudaMalloc accepts.
  constexpr std::int64_t count = std::int64_t{1} << 62;
  CHECK_THROWS_AS(cuda::DeviceBuffer<float>(count, "latents"), invalid_argument);
  CHECK_THROWS_WITH(cuda::DeviceBuffer<float>(count, "latents"),
                    Catch::Contains("latents size = 4611686018427387904"));
  CHECK_THROWS_WITH(cuda::DeviceBuffer<float>(-1, "latents"),
                    Catch::Contains("latents size = -1") && Catch::Contains("negative"));
  CHECK(cuda::detail::device_bytes((std::int64_t{1} << 61) - 1, 4, "x") ==
        ((std::int64_t{1} << 61) - 1) * 4);
}

TEST_CASE("a device tensor whose batch x shape int64 cannot count is refused", "[cuda][host]") {
  const Shape shape{1 << 20, 1 << 20, 4}; // 2^42 values per sample
  CHECK_THROWS_AS(cuda::DeviceTensor(std::int64_t{1} << 30, shape), invalid_argument);
  CHECK_THROWS_WITH(cuda::DeviceTensor(std::int64_t{1} << 30, shape),
                    Catch::Contains("batch x shape") && Catch::Contains("1073741824 x"));
  CHECK_THROWS_WITH(cuda::DeviceTensor(-1, Shape{4, 8, 8}),
                    Catch::Contains("device tensor batch = -1"));
  const cuda::DeviceTensor empty(0, Shape{4, 8, 8}); // nothing to allocate, no device needed
  CHECK(empty.numel() == 0);
  CHECK(empty.data() == nullptr);
}

TEST_CASE("a failed cudaMalloc names the buffer and the bytes asked for", "[cuda][host]") {
  // 2^50 floats (4 PiB): more than any card holds, and without a device cudaMalloc fails too.
  constexpr std::int64_t count = std::int64_t{1} << 50;
  const std::string bytes = std::to_string(count * 4);
  CHECK_THROWS_AS(cuda::DeviceBuffer<float>(count, "model 'XL' latents"), runtime_error);
  CHECK_THROWS_WITH(cuda::DeviceBuffer<float>(count, "model 'XL' latents"),
                    Catch::Contains("cannot allocate model 'XL' latents") &&
                        Catch::Contains("cudaMalloc of " + bytes + " bytes") &&
                        Catch::Contains("4294967296 MiB"));
}
