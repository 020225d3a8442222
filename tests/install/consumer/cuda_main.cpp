// SPDX-License-Identifier: Apache-2.0
// A C++-only consumer of the installed tstitch::cuda_dit: links the compiled kernels and asks
// them a question that needs no GPU.
#include <cstdio>

#include <tstitch/cuda/kernels.hpp>
#include <tstitch/cuda/runtime.hpp>

int main() {
  using namespace tstitch::cuda;
  using kernels::attention_supported;
  if (!attention_supported(AttentionPath::flash, 64) ||
      attention_supported(AttentionPath::flash, 7)) {
    std::fprintf(stderr, "unexpected attention_supported answers\n");
    return 1;
  }
  std::printf("cuda consumer: linked tstitch::cuda_dit; GPU %s\n",
              device_available() ? "available" : "not available");
  return 0;
}
