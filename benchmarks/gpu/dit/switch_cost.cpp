// SPDX-License-Identifier: Apache-2.0
// 3. The cost of a switch: alternating predicts between two models against repeating one.
#include <cuda_runtime_api.h>

#include <string>
#include <vector>

#include "dit/harness.hpp"
#include "dit/measurements.hpp"
#include "tstitch/cuda/runtime.hpp"

namespace bench {

SwitchRow measure_switch(DitModel& first, DitModel& second, const std::string& pair, int repeats,
                         const tstitch::Trajectory& trajectory) {
  SwitchRow row;
  row.pair = pair;
  row.calls = 40;
  // Batch 2 (one image with guidance): the smallest forward, where a switch weighs most.
  Batch b1 = make_batch(first.config(), 2, 7, first.stream());
  Batch b2 = make_batch(second.config(), 2, 7, second.stream());
  const cudaStream_t stream = first.stream();
  int call = 0;
  auto run = [&](DitModel& m, Batch& b) {
    m.predict(b.x.view(), context(trajectory, call++), b.labels, b.out.view());
  };
  for (int i = 0; i < 3; ++i) {
    run(first, b1);
    run(second, b2);
  }
  TSTITCH_CUDA_CHECK(cudaDeviceSynchronize());
  EventTimer timer;
  std::vector<double> same, alternating;
  for (int r = 0; r < repeats; ++r) {
    // Interleave the three orders within each repeat, so drifting clocks hit all of them.
    const double t1 = timer.time_ms(stream, [&] {
      for (int k = 0; k < row.calls; ++k)
        run(first, b1);
    });
    const double t2 = timer.time_ms(stream, [&] {
      for (int k = 0; k < row.calls; ++k)
        run(second, b2);
    });
    const double ta = timer.time_ms(stream, [&] {
      for (int k = 0; k < row.calls; ++k)
        k % 2 == 0 ? run(first, b1) : run(second, b2);
    });
    same.push_back((t1 + t2) / (2.0 * row.calls));
    alternating.push_back(ta / row.calls);
  }
  row.same_ms = median(same);
  row.alternating_ms = median(alternating);
  row.cost_us = (row.alternating_ms - row.same_ms) * 1e3;
  return row;
}

} // namespace bench
