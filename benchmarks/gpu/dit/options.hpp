// SPDX-License-Identifier: Apache-2.0
#pragma once
// bench_dit_cuda's command line.
#include <string>
#include <vector>

namespace bench {

struct Options {
  std::vector<std::string> models{"S/2", "B/2", "XL/2"};
  std::vector<int> batches{1, 8, 32, 64};
  int repeats = 10;
  std::string json;
  int steps = 50;
  std::vector<int> sample_batches{1, 8}; // images of the stitched sampling runs
  int gemm = 8192;
  bool switch_cost = true;
  bool stitch = true;
  std::string profile; // "MODEL:IMAGES": one profiled forward only
};

/// Prints the usage.
void usage();
/// The options of argv; throws std::invalid_argument naming a bad one (--help exits 0).
Options parse(int argc, char** argv);
/// `text` as an integer >= 1; throws std::invalid_argument naming `flag` otherwise.
int positive_int(const std::string& text, const char* flag);

} // namespace bench
