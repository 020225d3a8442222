// SPDX-License-Identifier: Apache-2.0
// bench_dit_cuda's command line.
#include "dit/options.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "tstitch/models/dit/config.hpp"

namespace bench {

namespace {

std::vector<std::string> split(std::string_view text) {
  std::vector<std::string> parts;
  std::size_t begin = 0;
  while (begin <= text.size()) {
    const std::size_t comma = std::min(text.find(',', begin), text.size());
    if (comma > begin)
      parts.emplace_back(text.substr(begin, comma - begin));
    begin = comma + 1;
  }
  return parts;
}

} // namespace

int positive_int(const std::string& text, const char* flag) {
  std::size_t used = 0;
  int value = 0;
  try {
    value = std::stoi(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size() || value < 1)
    throw std::invalid_argument(std::string(flag) + ": '" + text + "' is not a positive integer");
  return value;
}

void usage() {
  std::puts("usage: bench_dit_cuda [--models S/2,B/2,XL/2] [--batches 1,8,32,64] [--repeats N]\n"
            "                      [--json path] [--steps 50] [--sample-batch 1,8] [--gemm 8192]\n"
            "                      [--no-switch] [--no-stitch]\n"
            "       bench_dit_cuda --profile MODEL:IMAGES   (one forward for ncu)\n"
            "batches count images; each forward runs twice as many rows (guidance).");
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc)
        throw std::invalid_argument(std::string(arg) + " needs a value");
      return argv[++i];
    };
    if (arg == "--models") {
      o.models.clear();
      for (std::string m : split(value())) {
        if (m.starts_with("DiT-"))
          m = m.substr(4);
        (void)tstitch::dit::Config::preset("DiT-" + m); // rejects unknown names early
        o.models.push_back(m);
      }
    } else if (arg == "--batches") {
      o.batches.clear();
      for (const std::string& b : split(value()))
        o.batches.push_back(positive_int(b, "--batches"));
    } else if (arg == "--repeats") {
      o.repeats = positive_int(value(), "--repeats");
    } else if (arg == "--json") {
      o.json = value();
    } else if (arg == "--steps") {
      o.steps = positive_int(value(), "--steps");
    } else if (arg == "--sample-batch") {
      o.sample_batches.clear();
      for (const std::string& b : split(value()))
        o.sample_batches.push_back(positive_int(b, "--sample-batch"));
      if (o.sample_batches.empty())
        throw std::invalid_argument("--sample-batch: needs at least one batch size");
    } else if (arg == "--gemm") {
      o.gemm = positive_int(value(), "--gemm");
    } else if (arg == "--no-switch") {
      o.switch_cost = false;
    } else if (arg == "--no-stitch") {
      o.stitch = false;
    } else if (arg == "--profile") {
      o.profile = value();
    } else if (arg == "--help" || arg == "-h") {
      usage();
      std::exit(0);
    } else {
      throw std::invalid_argument("unknown argument '" + std::string(arg) + "' (see --help)");
    }
  }
  return o;
}

} // namespace bench
