// SPDX-License-Identifier: Apache-2.0
// The CUDA DiT on the card it runs on (benchmarks/gpu/run.sh runs it; the H100 goals' table):
//   1. the card's bf16 GEMM peak in this run (cublasGemmEx 8192^3, bf16 in, fp32 accumulate),
//      the yardstick for the fractions below: a datasheet number would flatter nobody and hide
//      clock and power limits of the machine at hand;
//   2. DiT forward per model x batch (each batch doubled for classifier-free guidance), graphs on:
//      time, TFLOP/s with FLOPs = 2 x Config::macs() x forward batch, fraction of (1); memory;
//      at 1 and 8 images also one guided evaluation as two N-row predicts against one
//      predict_guided (2N rows in one forward); at 8 images also the forward's GEMMs alone (the
//      model's own layers, DitModel::launch_gemms_only, one graph: the cost if every other
//      kernel were free);
//   3. the cost of a switch: alternating predicts between two models against repeating one;
//   4. stitched sampling (small model for the first fraction r of the steps, large for the rest)
//      against the ideal speedup 1 / ((1 - r) + r c), c = small-only / large-only run time:
//      DeviceSampler (DDIM, 50 steps, guidance 4) where tstitch/cuda/sampling.hpp exists, at 1 and
//      8 images (--sample-batch); r = 0.4 of it is the end-to-end peer of the PyTorch stitching
//      run of tools/bench_dit_gpu_torch.py; each run also against plan::Planner's prediction;
//   5. per-sample routing (DeviceRowStitcher): a split step's gather/scatter against a DiT-S/2
//      step, and one mixed batch of 12 (fractions 0.0/0.4/0.8) against three batches of 4.
// Each measurement is one file in dit/ over one harness (dit/harness.hpp: the median, the event
// timer, graph capture, inputs); this file runs them in order and writes the table and JSON.
// Plain C++ (no nvcc): it links the kernels compiled in src/cuda/tstitch_cuda.cu.
//
//   bench_dit_cuda [--models S/2,B/2,XL/2] [--batches 1,8,32,64] [--repeats 10] [--json path]
//                  [--steps 50] [--sample-batch 1,8] [--gemm 8192] [--no-switch] [--no-stitch]
//   bench_dit_cuda --profile XL/2:64   one forward without graphs between cudaProfilerStart and
//                  cudaProfilerStop, nothing else: for `ncu --profile-from-start off` (run.sh's
//                  profile stage), which times each kernel of exactly that forward
//
// Timing: CUDA events on the models' stream; warm-up calls first (the first predict of a batch
// size captures its graph: it is timed apart, on the host, as the first-call cost that
// DitModel::prepare moves ahead); each repeat times a block of back-to-back calls
// (as a sampling loop issues them, without host synchronisation), and the median over repeats is
// reported. Exits 0 with a message when no CUDA device is present.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "dit/harness.hpp"
#include "dit/measurements.hpp"
#include "dit/options.hpp"
#include "tstitch/cuda/dit.hpp"
#include "tstitch/cuda/kernels.hpp"
#include "tstitch/cuda/runtime.hpp"
#include "tstitch/models/dit/config.hpp"
#include "tstitch/models/dit/weights.hpp"
#include "tstitch/schedule/discrete.hpp"

namespace {

using namespace bench;
using tstitch::cuda::AttentionPath;

/// One run of every measurement: what the phases below share and fill in, in order.
struct Run {
  explicit Run(const Options& options) : opt(options), trajectory(schedule.trajectory(opt.steps)) {}

  const Options& opt;
  cudaStream_t stream = tstitch::cuda::default_stream();
  tstitch::cuda::DeviceInfo info;
  int cublas_version = 0;
  Json report;
  std::vector<std::string> needed; // the models to build: the timed ones, and S/2 and XL/2
  std::map<std::string, std::future<tstitch::dit::Weights>> pending;
  GemmPeak peak;
  const tstitch::DiscreteSchedule schedule;
  const tstitch::Trajectory trajectory;
  std::map<std::string, std::unique_ptr<DitModel>> models;
  std::unique_ptr<DitModel> small_twin; // a second DiT-S/2 instance, for the switch cost
  std::vector<ForwardRow> forward;
  std::map<std::string, double> gemms_alone_ms; // per model, at 8 images (NaN: it failed)
  Json memory = Json::object();
  std::vector<SwitchRow> switches;
  std::vector<StitchResult> stitches; // one per --sample-batch size that ran
};

void describe_device(Run& run) {
  run.info = tstitch::cuda::device_info();
  {
    cublasHandle_t h = nullptr;
    if (cublasCreate(&h) == CUBLAS_STATUS_SUCCESS) {
      (void)cublasGetVersion(h, &run.cublas_version);
      (void)cublasDestroy(h);
    }
  }
  const tstitch::cuda::DeviceInfo& info = run.info;
  std::printf("bench_dit_cuda on %s (sm_%d%d, %d SMs, %.1f GiB), cuBLAS %d\n", info.name.c_str(),
              info.compute_major, info.compute_minor, info.multiprocessors,
              static_cast<double>(info.memory_bytes) / (1024.0 * 1024.0 * 1024.0),
              run.cublas_version);
  std::fflush(stdout);
  run.report["device"] = {{"name", info.name},
                          {"sm", info.compute_major * 10 + info.compute_minor},
                          {"multiprocessors", info.multiprocessors},
                          {"memory_bytes", info.memory_bytes},
                          {"cublas_version", run.cublas_version}};
  run.report["repeats"] = run.opt.repeats;
}

// Random weights for every model, generated on the host in parallel while the GPU measures the
// GEMM peak (DiT-XL/2 alone is 675M values, about 10 s on one core).
void start_weights(Run& run) {
  run.needed = run.opt.models;
  auto want = [&](const std::string& m) {
    if (std::find(run.needed.begin(), run.needed.end(), m) == run.needed.end())
      run.needed.push_back(m);
  };
  if (run.opt.switch_cost || run.opt.stitch) {
    want("S/2");
    want("XL/2");
  }
  std::uint64_t seed = 2026;
  for (const std::string& m : run.needed)
    run.pending.emplace(m, std::async(std::launch::async, [m, s = seed++] {
                          return tstitch::dit::Weights::random(
                              tstitch::dit::Config::preset("DiT-" + m), s);
                        }));
}

// 1. GEMM peak.
void gemm_peak_phase(Run& run) {
  try {
    run.peak = measure_gemm_peak(run.opt.gemm, run.opt.repeats, run.stream);
    std::printf("bf16 GEMM peak: cublasGemmEx %d^3 (bf16 in/out, fp32 compute): %.3f ms, "
                "%.1f TFLOP/s\n",
                run.peak.n, run.peak.ms, run.peak.tflops);
  } catch (const std::exception& e) {
    std::printf("bf16 GEMM peak: FAILED: %s\n", e.what());
  }
  std::fflush(stdout);
  run.report["gemm_peak"] = {
      {"n", run.peak.n}, {"ms", number(run.peak.ms)}, {"tflops", number(run.peak.tflops)}};
}

// 1b. The seam kernel, each parameter staging, at the shapes of S/2, B/2 and XL/2 (rows = 2 x
// images x 256 tokens).
void seam_phase(Run& run) {
  Json seams = Json::array();
  for (const auto& [shape, rows, dim] :
       {std::tuple{"DiT-S/2, 8 images", std::int64_t{4096}, 384},
        std::tuple{"DiT-S/2, 64 images", std::int64_t{32768}, 384},
        std::tuple{"DiT-B/2, 8 images", std::int64_t{4096}, 768},
        std::tuple{"DiT-XL/2, 8 images", std::int64_t{4096}, 1152},
        std::tuple{"DiT-XL/2, 64 images", std::int64_t{32768}, 1152}}) {
    try {
      const SeamRow r = measure_seam(shape, rows, dim, run.stream);
      std::printf("seam kernel (residual_layernorm_modulate) %s (%lld x %d): parameters per warp "
                  "%.2f us, staged per block %.2f us (%.2fx)\n",
                  shape, static_cast<long long>(rows), dim, r.global_us, r.shared_us,
                  r.global_us / r.shared_us);
      seams.push_back({{"shape", r.shape},
                       {"rows", r.rows},
                       {"dim", r.dim},
                       {"global_us", number(r.global_us)},
                       {"shared_us", number(r.shared_us)}});
    } catch (const std::exception& e) {
      std::printf("seam kernel %s: FAILED: %s\n", shape, e.what());
    }
  }
  std::fflush(stdout);
  run.report["seam_kernel"] = seams;
}

// One row of phase 2: the forward, and again with cuDNN attention where that path runs.
ForwardRow forward_row(Run& run, DitModel& model, const std::string& m, int images) {
  ForwardRow row;
  try {
    row = measure_forward(model, m, images, run.opt.repeats, run.trajectory, run.peak.tflops);
    const int head_dim = static_cast<int>(model.config().head_dim());
    if (tstitch::cuda::kernels::attention_supported(AttentionPath::cudnn, head_dim)) {
      const AttentionPath before = model.attention();
      try {
        model.set_attention(AttentionPath::cudnn);
        row.ms_cudnn =
            measure_forward(model, m, images, run.opt.repeats, run.trajectory, run.peak.tflops).ms;
      } catch (const std::exception& e) {
        std::printf("forward DiT-%s batch %d with cuDNN attention: FAILED: %s\n", m.c_str(), images,
                    e.what());
      }
      model.set_attention(before);
    }
    std::printf("forward DiT-%s batch %d (rows %lld): %.3f ms, %.1f TFLOP/s, %.1f%% of "
                "peak; with cuDNN attention %.3f ms\n",
                m.c_str(), images, static_cast<long long>(row.rows), row.ms, row.tflops,
                100.0 * row.fraction_of_peak, row.ms_cudnn);
  } catch (const std::exception& e) {
    row.model = m;
    row.images = images;
    row.rows = 2 * static_cast<std::int64_t>(images);
    row.error = e.what();
    std::printf("forward DiT-%s batch %d: FAILED: %s\n", m.c_str(), images, e.what());
  }
  std::fflush(stdout);
  return row;
}

// 2. Forward per model x batch; keeps S/2 and XL/2 (and a second S/2) for phases 3 and 4.
void forward_phase(Run& run) {
  const Options& opt = run.opt;
  for (const std::string& m : run.needed) {
    const bool timed = std::find(opt.models.begin(), opt.models.end(), m) != opt.models.end();
    try {
      tstitch::dit::Weights weights = run.pending.at(m).get();
      auto model = std::make_unique<DitModel>(weights, "DiT-" + m);
      model->set_graphs(true);
      if (m == "S/2" && opt.switch_cost)
        run.small_twin = std::make_unique<DitModel>(weights, "DiT-S/2 (second)");
      // `weights` (host, float32) is released here: the model keeps its own bf16 copy.
      if (timed)
        for (int images : opt.batches)
          run.forward.push_back(forward_row(run, *model, m, images));
      if (timed && std::find(opt.batches.begin(), opt.batches.end(), 8) != opt.batches.end()) {
        try { // while the model lives: only S/2 and XL/2 are kept past this phase
          run.gemms_alone_ms[m] = measure_gemms_alone(*model, 8, opt.repeats);
        } catch (const std::exception& e) {
          run.gemms_alone_ms[m] = std::nan("");
          std::printf("GEMMs alone DiT-%s: FAILED: %s\n", m.c_str(), e.what());
        }
      }
      const tstitch::cuda::MemoryReport mem = model->memory();
      run.memory[m] = {{"weights", mem.weights},
                       {"activations", mem.activations},
                       {"workspace", mem.workspace},
                       {"total", mem.total()}};
      if (m == "S/2" || m == "XL/2")
        run.models[m] = std::move(model); // kept for the switch and the stitched runs
    } catch (const std::exception& e) {
      std::printf("DiT-%s: FAILED: %s\n", m.c_str(), e.what());
      run.memory[m] = {{"error", e.what()}};
    }
  }
  Json forward_json = Json::array();
  for (const ForwardRow& r : run.forward) {
    Json row = {{"model", "DiT-" + r.model},
                {"images", r.images},
                {"rows", r.rows},
                {"calls_per_repeat", r.calls_per_repeat},
                {"ms", number(r.ms)},
                {"tflops", number(r.tflops)},
                {"fraction_of_peak", number(r.fraction_of_peak)},
                {"ms_cudnn_attention", number(r.ms_cudnn)},
                {"first_call_ms", number(r.first_call_ms)},
                {"guided_two_calls_ms", number(r.two_calls_ms)},
                {"guided_one_call_ms", number(r.guided_ms)},
                {"flops", 2.0 * tstitch::dit::Config::preset("DiT-" + r.model).macs() *
                              static_cast<double>(r.rows)}};
    if (!r.error.empty())
      row["error"] = r.error;
    forward_json.push_back(row);
  }
  run.report["forward"] = forward_json;
  run.report["memory"] = run.memory;
}

// 2b. The GEMMs alone at 8 images (measured in forward_phase, from each model's own layers), the
// batch of the S/2 : XL/2 latency goal: XL/2's forward over S/2's GEMMs alone bounds the ratio of
// any S/2 that keeps its cuBLASLt GEMMs (from above: the other kernels would only lower it).
void gemms_alone_phase(Run& run) {
  const auto forward_ms = [&](const std::string& m, int images) {
    for (const ForwardRow& r : run.forward)
      if (r.model == m && r.images == images)
        return r.ms;
    return std::nan("");
  };
  Json gemms_alone = Json::array();
  for (const auto& [m, ms] : run.gemms_alone_ms) {
    if (!std::isfinite(ms))
      continue;
    const double whole = forward_ms(m, 8);
    std::printf("GEMMs alone DiT-%s 8 images (rows 16): %.3f ms, %.1f%% of its forward "
                "(%.3f ms)\n",
                m.c_str(), ms, 100.0 * ms / whole, whole);
    gemms_alone.push_back(
        {{"model", "DiT-" + m}, {"images", 8}, {"ms", number(ms)}, {"forward_ms", number(whole)}});
  }
  std::fflush(stdout);
  const auto small = run.gemms_alone_ms.find("S/2");
  if (small != run.gemms_alone_ms.end() && std::isfinite(small->second) &&
      std::isfinite(forward_ms("XL/2", 8)))
    std::printf("S/2 : XL/2 ratio bound at 8 images with these GEMMs: XL/2 forward %.3f ms / "
                "S/2 GEMMs alone %.3f ms = %.2f (goal 15)\n",
                forward_ms("XL/2", 8), small->second, forward_ms("XL/2", 8) / small->second);
  run.report["gemms_alone"] = gemms_alone;
}

// 3. Switch cost.
void switch_phase(Run& run) {
  auto& models = run.models;
  if (run.opt.switch_cost) {
    auto attempt = [&](DitModel* a, DitModel* b, const std::string& pair) {
      if (a == nullptr || b == nullptr) {
        std::printf("switch %s: skipped (model missing)\n", pair.c_str());
        return;
      }
      try {
        run.switches.push_back(measure_switch(*a, *b, pair, run.opt.repeats, run.trajectory));
        const SwitchRow& s = run.switches.back();
        std::printf("switch %s: same %.4f ms/call, alternating %.4f ms/call, cost %.2f us\n",
                    pair.c_str(), s.same_ms, s.alternating_ms, s.cost_us);
      } catch (const std::exception& e) {
        std::printf("switch %s: FAILED: %s\n", pair.c_str(), e.what());
      }
      std::fflush(stdout);
    };
    attempt(models.count("S/2") ? models["S/2"].get() : nullptr, run.small_twin.get(),
            "DiT-S/2 <-> DiT-S/2 (2nd instance)");
    attempt(models.count("S/2") ? models["S/2"].get() : nullptr,
            models.count("XL/2") ? models["XL/2"].get() : nullptr, "DiT-S/2 <-> DiT-XL/2");
  }
  run.small_twin.reset();
  Json switch_json = Json::array();
  for (const SwitchRow& s : run.switches)
    switch_json.push_back({{"pair", s.pair},
                           {"rows", 2},
                           {"calls", s.calls},
                           {"same_ms_per_call", number(s.same_ms)},
                           {"alternating_ms_per_call", number(s.alternating_ms)},
                           {"cost_us_per_switch", number(s.cost_us)}});
  run.report["switch"] = switch_json;
}

// 4. Stitched sampling, at each --sample-batch size.
Json stitch_json(const StitchResult& stitch) {
  Json rows = Json::array();
  for (const StitchRow& r : stitch.rows)
    rows.push_back({{"small_fraction", r.r},
                    {"ms", number(r.ms)},
                    {"speedup", number(r.speedup)},
                    {"ideal", number(r.ideal)},
                    {"deviation", number(r.deviation)},
                    {"predicted_ms", number(r.predicted_ms)},
                    {"prediction_error", number(r.prediction_error)}});
  return {{"mode", stitch.mode},
          {"steps", stitch.steps},
          {"images", stitch.images},
          {"small", "DiT-S/2"},
          {"large", "DiT-XL/2"},
          {"small_ms", number(stitch.small_ms)},
          {"large_ms", number(stitch.large_ms)},
          {"c", number(stitch.c)},
          {"small_eval_ms", number(stitch.small_eval_ms)},
          {"large_eval_ms", number(stitch.large_eval_ms)},
          {"fractions", rows}};
}

void stitch_phase(Run& run) {
  const bool have_pair = run.models.count("S/2") == 1 && run.models.count("XL/2") == 1;
  if (run.opt.stitch && have_pair) {
    for (int images : run.opt.sample_batches) {
      try {
        run.stitches.push_back(measure_stitch(*run.models["S/2"], *run.models["XL/2"], images,
                                              run.opt.steps, run.opt.repeats, run.schedule));
        const StitchResult& stitch = run.stitches.back();
        std::printf("stitched %d images (%s): c = %.4f (S/2 %.2f ms, XL/2 %.2f ms per %d-step "
                    "run)\n",
                    images, stitch.mode.c_str(), stitch.c, stitch.small_ms, stitch.large_ms,
                    stitch.steps);
      } catch (const std::exception& e) {
        std::printf("stitched %d images: FAILED: %s\n", images, e.what());
      }
      std::fflush(stdout);
    }
  } else if (run.opt.stitch) {
    std::puts("stitched: skipped (needs DiT-S/2 and DiT-XL/2)");
  }
  if (run.stitches.empty())
    return;
  // "stitched": the largest batch, as before; "stitched_runs": every batch size.
  const StitchResult* largest = &run.stitches.front();
  Json runs = Json::array();
  for (const StitchResult& stitch : run.stitches) {
    runs.push_back(stitch_json(stitch));
    if (stitch.images > largest->images)
      largest = &stitch;
  }
  run.report["stitched"] = stitch_json(*largest);
  run.report["stitched_runs"] = runs;
}

// 5. Per-sample routing (with the stitched runs: the same pair).
void row_routing_phase(Run& run) {
  if (!run.opt.stitch || run.models.count("S/2") != 1 || run.models.count("XL/2") != 1)
    return;
  try {
    const RowRoutingResult r = measure_row_routing(*run.models["S/2"], *run.models["XL/2"],
                                                   run.opt.steps, run.opt.repeats, run.schedule);
    std::printf(
        "row routing: gather + scatter of a 4/4 split step %s us = %s%% of a guided DiT-S/2 "
        "step at 8 images (%s us); mixed batch of %d at fractions 0.0/0.4/0.8 %s ms, "
        "three batches of 4 %s ms: %sx throughput\n",
        fixed(r.copies_us, 2).c_str(), fixed(100.0 * r.copies_share, 3).c_str(),
        fixed(r.small_step_us, 1).c_str(), r.images, fixed(r.mixed_ms, 1).c_str(),
        fixed(r.separate_ms, 1).c_str(), fixed(r.gain, 3).c_str());
    run.report["row_routing"] = {{"steps", r.steps},
                                 {"copies_us", number(r.copies_us)},
                                 {"small_step_us", number(r.small_step_us)},
                                 {"copies_share", number(r.copies_share)},
                                 {"images", r.images},
                                 {"mixed_ms", number(r.mixed_ms)},
                                 {"separate_ms", number(r.separate_ms)},
                                 {"gain", number(r.gain)}};
  } catch (const std::exception& e) {
    std::printf("row routing: FAILED: %s\n", e.what());
  }
  std::fflush(stdout);
}

// The table, last, so it survives a truncated log.
void print_table(const Run& run) {
  const tstitch::cuda::DeviceInfo& info = run.info;
  const GemmPeak& peak = run.peak;
  std::printf("\n== bench_dit_cuda: %s (sm_%d%d) ==\n", info.name.c_str(), info.compute_major,
              info.compute_minor);
  std::printf("bf16 GEMM peak (cublasGemmEx %d^3, fp32 accumulate): %s TFLOP/s\n", peak.n,
              fixed(peak.tflops, 1).c_str());
  std::printf("%-9s %6s %5s %10s %9s %7s %10s %10s %10s\n", "model", "images", "rows", "ms",
              "TFLOP/s", "%peak", "1st ms", "2 x N ms", "guided ms");
  for (const ForwardRow& r : run.forward)
    std::printf("%-9s %6d %5lld %10s %9s %7s %10s %10s %10s%s\n", ("DiT-" + r.model).c_str(),
                r.images, static_cast<long long>(r.rows), fixed(r.ms, 3).c_str(),
                fixed(r.tflops, 1).c_str(), fixed(100.0 * r.fraction_of_peak, 1).c_str(),
                fixed(r.first_call_ms, 1).c_str(), fixed(r.two_calls_ms, 3).c_str(),
                fixed(r.guided_ms, 3).c_str(), r.error.empty() ? "" : "  FAILED");
  for (const auto& [m, mem] : run.memory.items())
    if (mem.contains("total"))
      std::printf("memory DiT-%s: weights %.1f MiB, activations %.1f MiB, workspace %.1f MiB\n",
                  m.c_str(), mem["weights"].get<double>() / 1048576.0,
                  mem["activations"].get<double>() / 1048576.0,
                  mem["workspace"].get<double>() / 1048576.0);
  for (const SwitchRow& s : run.switches)
    std::printf("switch %s, batch 2: %s us per switch (same %s ms, alternating %s ms per call)\n",
                s.pair.c_str(), fixed(s.cost_us, 2).c_str(), fixed(s.same_ms, 4).c_str(),
                fixed(s.alternating_ms, 4).c_str());
  for (const StitchResult& stitch : run.stitches) {
    std::printf("stitched S/2 -> XL/2, %d images, %d steps, %s; c = %s\n", stitch.images,
                stitch.steps, stitch.mode.c_str(), fixed(stitch.c, 4).c_str());
    std::printf("planner's costs: one guided evaluation %s ms (S/2), %s ms (XL/2)\n",
                fixed(stitch.small_eval_ms, 4).c_str(), fixed(stitch.large_eval_ms, 4).c_str());
    std::printf("%6s %10s %8s %8s %10s %12s %10s\n", "r", "ms", "speedup", "ideal", "deviation",
                "predicted", "error");
    for (const StitchRow& r : stitch.rows)
      std::printf("%6.1f %10s %8s %8s %9s%% %12s %9s%%\n", r.r, fixed(r.ms, 2).c_str(),
                  fixed(r.speedup, 3).c_str(), fixed(r.ideal, 3).c_str(),
                  fixed(100.0 * r.deviation, 2).c_str(), fixed(r.predicted_ms, 2).c_str(),
                  fixed(100.0 * r.prediction_error, 2).c_str());
  }
}

int run_all(const Options& opt) {
  if (!tstitch::cuda::device_available()) {
    std::puts("bench_dit_cuda: no CUDA device; nothing measured");
    return 0;
  }
  if (!opt.profile.empty())
    return profile_one(opt.profile);
  Run run(opt);
  describe_device(run);
  start_weights(run);
  gemm_peak_phase(run);
  seam_phase(run);
  forward_phase(run);
  gemms_alone_phase(run);
  switch_phase(run);
  stitch_phase(run);
  row_routing_phase(run);
  print_table(run);
  if (!opt.json.empty()) {
    std::ofstream file(opt.json);
    file << run.report.dump(2) << '\n';
    if (!file)
      throw std::runtime_error("cannot write " + opt.json);
    std::printf("wrote %s\n", opt.json.c_str());
  }
  bool failed = !std::isfinite(run.peak.tflops);
  for (const ForwardRow& r : run.forward)
    failed = failed || !r.error.empty();
  return failed ? 1 : 0;
}

} // namespace

int main(int argc, char** argv) {
  try {
    return run_all(parse(argc, argv));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_dit_cuda: %s\n", e.what());
    return 2;
  }
}
