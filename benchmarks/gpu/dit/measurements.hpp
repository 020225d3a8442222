// SPDX-License-Identifier: Apache-2.0
#pragma once
// The measurements of bench_dit_cuda, one source file each, and what each returns.
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "tstitch/cuda/dit.hpp"
#include "tstitch/models/dit/config.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/schedule/trajectory.hpp"

namespace bench {

using tstitch::cuda::DitModel;

/// The card's bf16 GEMM peak in this run (gemm_peak.cpp).
struct GemmPeak {
  int n = 0;
  double ms = std::nan("");
  double tflops = std::nan("");
};
GemmPeak measure_gemm_peak(int n, int repeats, cudaStream_t stream);

/// The seam kernel between two sublayers (residual_layernorm_modulate) at one model's shape,
/// with its parameters read per warp (global) and staged per block (shared): microseconds per
/// call (seam_kernel.cpp).
struct SeamRow {
  std::string shape;
  std::int64_t rows = 0;
  int dim = 0;
  double global_us = std::nan("");
  double shared_us = std::nan("");
};
SeamRow measure_seam(const std::string& shape, std::int64_t rows, int dim, cudaStream_t stream);

/// The GEMMs of one guided forward alone, from the model's own layer list, replayed as one
/// graph: milliseconds (gemms_alone.cpp).
double measure_gemms_alone(DitModel& model, int images, int repeats);

/// One model's forward at one batch (forward.cpp).
struct ForwardRow {
  std::string model;
  int images = 0;
  std::int64_t rows = 0;
  int calls_per_repeat = 0;
  double ms = std::nan("");
  double tflops = std::nan("");
  double fraction_of_peak = std::nan("");
  double ms_cudnn = std::nan(""); // the same forward with AttentionPath::cudnn, where available
  // The first predict of the batch size, host wall time until the stream is idle: activations,
  // GEMM algorithm timing, graph capture and one replay (what DitModel::prepare moves ahead).
  double first_call_ms = std::nan("");
  // At small batches: one guided evaluation of the images as the sampling loops ran it before
  // predict_guided (two predicts of N rows: classes, then the null class), and as they run it
  // now (predict_guided: one forward of 2N rows).
  double two_calls_ms = std::nan("");
  double guided_ms = std::nan("");
  std::string error;
};
ForwardRow measure_forward(DitModel& model, const std::string& name, int images, int repeats,
                           const tstitch::Trajectory& trajectory, double peak_tflops);

/// The cost of a switch between two models (switch_cost.cpp).
struct SwitchRow {
  std::string pair;
  int calls = 0;
  double same_ms = std::nan("");        ///< per call, each model repeated on its own
  double alternating_ms = std::nan(""); ///< per call, models alternating (every call a switch)
  double cost_us = std::nan("");        ///< alternating - same, per switch
};
SwitchRow measure_switch(DitModel& first, DitModel& second, const std::string& pair, int repeats,
                         const tstitch::Trajectory& trajectory);

/// Stitched sampling against the ideal speedup (stitched.cpp).
struct StitchRow {
  double r = 0;
  double ms = std::nan("");
  double speedup = std::nan("");
  double ideal = std::nan("");
  double deviation = std::nan("");    ///< speedup / ideal - 1
  double predicted_ms = std::nan(""); ///< tstitch::plan::Planner's, from the per-evaluation costs
  double prediction_error = std::nan(""); ///< ms / predicted_ms - 1
};
struct StitchResult {
  std::string mode;
  int steps = 0;
  int images = 0;
  double large_ms = std::nan(""); ///< r = 0
  double small_ms = std::nan(""); ///< r = 1
  double c = std::nan("");        ///< small_ms / large_ms: the cost ratio in this very loop
  /// One guided evaluation (2 x images rows) of each model, timed on its own (warm-up, then the
  /// median of repeats): the planner's costs. NaN in the forwards-only mode.
  double small_eval_ms = std::nan(""), large_eval_ms = std::nan("");
  std::vector<StitchRow> rows;
};
StitchResult measure_stitch(DitModel& small, DitModel& large, int images, int steps, int repeats,
                            const tstitch::DiscreteSchedule& schedule);

/// Per-sample routing on the GPU (row_routing.cpp): the gather/scatter copies of a split step
/// against the DiT-S/2 step they serve, and one mixed batch against separate batches.
struct RowRoutingResult {
  int steps = 0;
  double copies_us = std::nan("");     ///< gather + scatter of 8 rows split 4/4, per step
  double small_step_us = std::nan(""); ///< one guided DiT-S/2 evaluation of the 8 rows
  double copies_share = std::nan("");  ///< copies_us / small_step_us (the goal: < 1%)
  int images = 0;                      ///< of the mixed batch (4 per fraction 0.0, 0.4, 0.8)
  double mixed_ms = std::nan("");      ///< one DeviceRowStitcher run of all of them
  double separate_ms = std::nan("");   ///< three DeviceSampler runs of 4, one per fraction
  double gain = std::nan(""); ///< separate_ms / mixed_ms: the mixed batch's throughput gain
};
RowRoutingResult measure_row_routing(DitModel& small, DitModel& large, int steps, int repeats,
                                     const tstitch::DiscreteSchedule& schedule);

/// --profile MODEL:IMAGES: one forward between cudaProfilerStart and Stop (profile.cpp).
int profile_one(const std::string& spec);

} // namespace bench
