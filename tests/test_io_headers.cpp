// SPDX-License-Identifier: Apache-2.0
// The io headers together, in an order that once failed to compile: safetensors.hpp declares
// tstitch::io::detail, after which an unqualified detail::concat inside tstitch::io (npy.hpp,
// png.hpp, mapped_file.hpp) found that namespace instead of tstitch::detail. Each header alone
// compiled (the header-set check), so only a translation unit like this one sees it.
// The order is the point: keep clang-format from sorting it.
// clang-format off
#include "tstitch/io/safetensors.hpp"
#include "tstitch/io/mapped_file.hpp"
#include "tstitch/io/npy.hpp"
#include "tstitch/io/png.hpp"
// clang-format on

#include <catch2/catch.hpp>

#include <cstdint>
#include <vector>

TEST_CASE("io headers compile together; shape_string and the npy element count", "[io]") {
  const std::vector<std::int64_t> shape{2, 3};
  CHECK(tstitch::io::shape_string(shape) == "[2, 3]");
  CHECK(tstitch::io::shape_string({}) == "[]");
  std::uint64_t product = std::uint64_t{1} << 40;
  CHECK(tstitch::io::detail::checked_multiply(product, 1u << 20));
  CHECK(product == std::uint64_t{1} << 60);
  CHECK_FALSE(tstitch::io::detail::checked_multiply(product, 16));
  CHECK(product == std::uint64_t{1} << 60); // unchanged on overflow
}
