// SPDX-License-Identifier: Apache-2.0
// 2b. The forward's GEMMs alone: what a forward would cost if every other kernel were free.
#include <cuda_runtime_api.h>

#include <vector>

#include "dit/harness.hpp"
#include "dit/measurements.hpp"

namespace bench {

/// The GEMMs of one guided forward of `images` (2 x images rows), replayed from the model's own
/// layer list (DitModel::launch_gemms_only: its weights, activations and cuBLASLt algorithms),
/// captured as one CUDA graph. How long a forward would take if every other kernel (attention,
/// the LayerNorms, the residuals, the conditioning kernels) were free: a lower bound for any
/// design that keeps these cuBLASLt GEMMs. Milliseconds, median over `repeats` blocks.
double measure_gemms_alone(DitModel& model, int images, int repeats) {
  const int rows = 2 * images; // guidance: both branches in one forward, as predict_guided
  const cudaStream_t stream = model.stream();
  model.prepare(rows); // the activations, and the GEMM algorithms timed outside the capture
  const Graph graph = Graph::capture(stream, [&] { model.launch_gemms_only(rows); });
  for (int i = 0; i < 3; ++i)
    graph.launch(stream);
  EventTimer timer;
  constexpr int calls = 10;
  std::vector<double> per_call;
  for (int r = 0; r < repeats; ++r)
    per_call.push_back(timer.time_ms(stream, [&] {
      for (int i = 0; i < calls; ++i)
        graph.launch(stream);
    }) / calls);
  return median(per_call);
}

} // namespace bench
