// SPDX-License-Identifier: Apache-2.0
// tstitch_npy_close REFERENCE.npy CANDIDATE.npy BOUND [--expect-different]: exit 0 when
// CANDIDATE has REFERENCE's shape, only finite values, and a relative L2 distance
// ||c - r|| / ||r|| of at most BOUND (with --expect-different: above BOUND); prints the distance
// and the largest difference either way. Exit 1: the expectation failed; 2: bad input.
#include <cmath>
#include <cstdio>
#include <exception>
#include <string>

#include "tstitch/io/npy.hpp"

int main(int argc, char** argv) {
  const bool expect_different = argc == 5 && std::string(argv[4]) == "--expect-different";
  if (argc != 4 && !expect_different) {
    std::fprintf(stderr, "usage: tstitch_npy_close REFERENCE.npy CANDIDATE.npy BOUND "
                         "[--expect-different]\n");
    return 2;
  }
  try {
    const tstitch::io::NpyArray want = tstitch::io::read_npy(argv[1]);
    const tstitch::io::NpyArray got = tstitch::io::read_npy(argv[2]);
    const double bound = std::stod(argv[3]);
    if (got.shape != want.shape) {
      std::printf("shape %s, want %s\n", tstitch::io::shape_string(got.shape).c_str(),
                  tstitch::io::shape_string(want.shape).c_str());
      return 1;
    }
    double diff2 = 0.0, ref2 = 0.0, max_abs = 0.0;
    std::size_t at = 0;
    for (std::size_t i = 0; i < want.values.size(); ++i) {
      if (!std::isfinite(got.values[i])) {
        std::printf("non-finite value %g at flat index %zu\n", double(got.values[i]), i);
        return 1;
      }
      const double d = double(got.values[i]) - double(want.values[i]);
      diff2 += d * d;
      ref2 += double(want.values[i]) * double(want.values[i]);
      if (std::abs(d) > max_abs) {
        max_abs = std::abs(d);
        at = i;
      }
    }
    const double rel = ref2 > 0.0 ? std::sqrt(diff2 / ref2) : (diff2 > 0.0 ? INFINITY : 0.0);
    std::printf("relative L2 %.3e (bound %.1e), max |diff| %.3e at flat index %zu "
                "(got %g, want %g), %zu values\n",
                rel, bound, max_abs, at, want.values.empty() ? 0.0 : double(got.values[at]),
                want.values.empty() ? 0.0 : double(want.values[at]), want.values.size());
    return (rel <= bound) != expect_different ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tstitch_npy_close: %s\n", e.what());
    return 2;
  }
}
