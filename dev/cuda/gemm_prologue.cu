// SPDX-License-Identifier: Apache-2.0
// Kernel lab: a DiT block's input GEMM (attention's qkv or the MLP's fc1) with the
// LayerNorm-modulate before it and the bias (+ tanh-GELU) after it,
//   out = bf16( act( LNmod(h) W^T + b ) ),  LNmod(h) = LayerNorm(h) * (1 + scale) + shift
// h fp32 [rows, hidden] (the residual stream), W bf16 [N, hidden], b [N], out bf16 [rows, N];
// shift and scale rows of the sample's adaLN modulation (mod[row / tokens] at their offsets, as
// the library's msa / mlp chunks); LayerNorm without affine, eps 1e-6; act identity (qkv, N = 3
// hidden) or GELU-tanh (fc1, N = 4 hidden).
//
// Versions:
//   1  what the CUDA DiT runs: kernels::layernorm_modulate (h -> bf16 a), then the cuBLASLt GEMM
//      with the bias (qkv) or bias + GELU (fc1) epilogue and a bf16 bias, as b.qkv.apply and
//      b.fc1.apply call it.
//   2  one kernel (gemm_prologue_kernel.cuh): 2-D tiles of 64 x BN, the rows' LayerNorm statistics
//      taken by each CTA before its main loop, A normalised from fp32 h on its way to shared
//      memory (rounded to bf16 as version 1's a is), W through a cp.async pipeline, mma.sync
//      m16n8k16, bias and GELU on the fp32 accumulators, bf16 out. BN = 128 where that still
//      gives one CTA per SM, else 64 (gp::tile_n_for). CTAs, rows / 64 x N / BN, on an H100's or
//      H200's 132 SMs (BN in brackets):
//                     1 image         8 images        64 images
//        S/2  qkv      72 (64)        288 (128)       2304 (128)
//        S/2  fc1      96 (64)        384 (128)       3072 (128)
//        XL/2 qkv     216 (64)        864 (128)       6912 (128)
//        XL/2 fc1     144 (128)      1152 (128)       9216 (128)
//      At 1 image BN = 128 would leave S/2 36 and 48 CTAs (a quarter and a third of the SMs);
//      where it fills the card, it halves the statistics passes (each CTA re-reads its 64 rows
//      of h, N / BN times per row block) and the A traffic per flop. "2t64" and "2t128" run
//      version 2 with the width the rule did not pick, checked and timed alike, to judge it.
//   3  version 2's GEMM reading the rows' (mean, rstd) from a first kernel (row_stats_kernel, one
//      warp per row, the same arithmetic) instead of taking them per CTA: two launches, but each
//      row's statistics are taken once, not N / BN times, and a is never written. It measures
//      what version 2's per-CTA statistics cost.
// Expected before any measurement: version 2 reads h from L2 three times per column tile (two
// statistics passes, then A in fp32), 3 x rows x K x 4 x N / BN bytes per call (printed per
// shape): 8 GB for XL/2's fc1 at 64 images against 2.7 GB of W, so it should lose to cuBLASLt at
// large batch whatever its mma rate; the contest is at 1 and 8 images, where version 1's two
// launches and a's round trip weigh most.
//
// Sizes versions 2 and 3 take: hidden a multiple of 32, N a multiple of the tile's columns, rows a
// multiple of 64; anything else is refused with the value named.
//
// Checked against an fp64 CPU reference from the same inputs (h, mod fp32; W and b rounded to
// bf16, the values both versions read); the reference does not round LNmod(h) to bf16. Every row
// at 1 image, 16 blocks of 16 rows spread over the batch at 8 and 64 images, all N columns; out
// must have no value left at its NaN fill. Bound: relative L2 error 1e-2, the lab's bf16 bound.
// Expected ~2.3e-3: rounding to bf16 (8 significant bits) leaves each value a relative error of
// rms ~1.6e-3 (uniform within half an ulp, an ulp 2^-8 to 2^-7 of the value), independent over the
// K products of a row of a, so y moves by ~1.6e-3 of its rms; rounding out adds as much again (the
// emulation measures 2.2-2.4e-3). An index or layout error (wrong row, sample, statistics, column)
// costs O(1), since h's rows are given different means and spreads and mod differs per sample.
//
// Printed: each check, then per shape the median of 21 samples (each 10 calls back to back, CUDA
// events) per version (2t64 / 2t128 included), the ratios v1/v2 and v1/v3, and lines
//   csv,gemm_prologue,<shape>,<version>,<us>,<max_err>,<ok>
// with max_err the relative L2 error of that version (us empty under --quick).
//
// Build: cmake -S . -B build -DTSTITCH_ENABLE_CUDA=ON -DTSTITCH_BUILD_CUDA_LAB=ON
//        cmake --build build --target lab_gemm_prologue
// Run:   build/dev/cuda/lab_gemm_prologue [version] [--quick]
//        --quick: check only (no timing), at 1 image: the run compute-sanitizer takes.
//        build/dev/cuda/lab_gemm_prologue --emulate: versions 2 and 3's kernel bodies run on the
//        CPU on some CTAs of small shapes (no device needed; see gemm_prologue_kernel.cuh).
// Exit: 0 every check passed, 1 a mismatch, 2 bad arguments or sizes, 77 no CUDA device (or one
// older than sm_80).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "common.cuh"
#include "gemm_prologue_kernel.cuh"
#include "tstitch/core/error.hpp"
#include "tstitch/cuda/device/gemm.cuh"
#include "tstitch/cuda/kernels.hpp"

namespace {

namespace gp = lab::gemm_prologue;
using tstitch::cuda::Blas;
using tstitch::cuda::GemmEpilogue;

// ---- the problem --------------------------------------------------------------------------------

struct Shape {
  const char* model; // S2 or XL2
  const char* layer; // qkv (N = 3 hidden) or fc1 (N = 4 hidden, GELU)
  int hidden, n, images, tokens;
  [[nodiscard]] bool gelu() const { return std::strcmp(layer, "fc1") == 0; }
  [[nodiscard]] std::string name() const {
    return std::string(model) + "_" + layer + "_i" + std::to_string(images);
  }
};

Shape make_shape(const char* model, const char* layer, int hidden, int images, int tokens = 256) {
  const bool fc1 = std::strcmp(layer, "fc1") == 0;
  return {model, layer, hidden, (fc1 ? 4 : 3) * hidden, images, tokens};
}

struct Problem {
  Shape shape;
  std::int64_t rows;
  int mod_ld, shift, scale; // one block's six chunks; qkv reads the msa pair, fc1 the mlp pair
  std::vector<float> h, mod, bias; // bias: bf16-rounded values
  std::vector<std::uint16_t> w, bias_bf16;
};

constexpr std::uint16_t kSentinel = 0x7fc1; // out's fill: a bf16 NaN

/// The problem's sizes and offsets, without its data.
Problem layout(const Shape& s) {
  const int d = s.hidden;
  const bool fc1 = s.gelu();
  return {s,
          std::int64_t{s.tokens} * s.images,
          6 * d,
          (fc1 ? 3 : 0) * d,
          (fc1 ? 4 : 1) * d,
          {},
          {},
          {},
          {},
          {}};
}

Problem make_problem(const Shape& s) {
  const int d = s.hidden;
  Problem p = layout(s);
  p.h = lab::residual_stream(p.rows, d);
  p.mod =
      lab::randn(static_cast<std::size_t>(s.images) * static_cast<std::size_t>(p.mod_ld), 43, 0.5f);
  // W scaled by 1 / sqrt(hidden): y ~ N(0, 1), where GELU is neither linear nor zero.
  p.w = lab::to_bf16(lab::randn(static_cast<std::size_t>(s.n) * static_cast<std::size_t>(d), 44,
                                1.0f / std::sqrt(static_cast<float>(d))));
  p.bias_bf16 = lab::to_bf16(lab::randn(static_cast<std::size_t>(s.n), 45, 0.5f));
  p.bias = lab::from_bf16(p.bias_bf16);
  return p;
}

/// fp64 out for `rows`, [rows.size()][N].
std::vector<double> reference(const Problem& p, const std::vector<std::int64_t>& rows) {
  const int d = p.shape.hidden, n = p.shape.n;
  std::vector<double> w(p.w.size()), a(static_cast<std::size_t>(d)), out;
  out.reserve(rows.size() * static_cast<std::size_t>(n));
  std::transform(p.w.begin(), p.w.end(), w.begin(),
                 [](std::uint16_t b) { return static_cast<double>(tstitch::io::bf16_to_f32(b)); });
  for (const std::int64_t r : rows) {
    const float* x = &p.h[static_cast<std::size_t>(r * d)];
    const float* m = &p.mod[static_cast<std::size_t>((r / p.shape.tokens) * p.mod_ld)];
    double mean = 0, var = 0;
    for (int c = 0; c < d; ++c)
      mean += x[c];
    mean /= d;
    for (int c = 0; c < d; ++c)
      var += (x[c] - mean) * (x[c] - mean);
    var /= d;
    const double rstd = 1.0 / std::sqrt(var + 1e-6);
    for (int c = 0; c < d; ++c)
      a[static_cast<std::size_t>(c)] =
          (x[c] - mean) * rstd * (1.0 + m[p.scale + c]) + static_cast<double>(m[p.shift + c]);
    for (int j = 0; j < n; ++j) {
      const double* wr = &w[static_cast<std::size_t>(j) * static_cast<std::size_t>(d)];
      double s0 = 0, s1 = 0, s2 = 0, s3 = 0; // 4 chains: the CPU pipelines them
      for (int i = 0; i < d; i += 4) {
        const auto u = static_cast<std::size_t>(i);
        s0 += a[u] * wr[u];
        s1 += a[u + 1] * wr[u + 1];
        s2 += a[u + 2] * wr[u + 2];
        s3 += a[u + 3] * wr[u + 3];
      }
      double y = (s0 + s1) + (s2 + s3) + p.bias[static_cast<std::size_t>(j)];
      if (p.shape.gelu())
        y = 0.5 * y * (1.0 + std::tanh(0.7978845608028654 * (y + 0.044715 * y * y * y)));
      out.push_back(y);
    }
  }
  return out;
}

constexpr double kBound = 1e-2; // see the header

// ---- on the device ------------------------------------------------------------------------------

struct Device {
  lab::DeviceBuffer<float> h, mod, bias, stats;
  lab::DeviceBuffer<std::uint16_t> w, bias_bf16, a, out;
};

Device upload(const Problem& p) {
  return {lab::to_device(p.h),
          lab::to_device(p.mod),
          lab::to_device(p.bias),
          lab::DeviceBuffer<float>(2 * p.rows, "lab stats"),
          lab::to_device(p.w),
          lab::to_device(p.bias_bf16),
          lab::DeviceBuffer<std::uint16_t>(p.rows * p.shape.hidden, "lab a"),
          lab::to_device(
              std::vector<std::uint16_t>(static_cast<std::size_t>(p.rows * p.shape.n), kSentinel))};
}

gp::Params params(const Problem& p, const Device& dev) {
  return {dev.h.data(),    reinterpret_cast<const __nv_bfloat16*>(dev.w.data()),
          dev.bias.data(), dev.mod.data(),
          p.mod_ld,        p.shift,
          p.scale,         reinterpret_cast<__nv_bfloat16*>(dev.out.data()),
          p.shape.hidden,  p.shape.n,
          p.shape.tokens,  p.rows,
          1e-6f,           nullptr};
}

/// Version 2's parameters for `p` without buffers: its sizes and offsets, for require_sizes.
gp::Params sizes_of(const Problem& p) {
  return {nullptr, nullptr,        nullptr,   nullptr,        p.mod_ld, p.shift, p.scale,
          nullptr, p.shape.hidden, p.shape.n, p.shape.tokens, p.rows,   1e-6f,   nullptr};
}

void run(int version, const Problem& p, Device& dev, Blas& blas, int tile_n) {
  const int d = p.shape.hidden, n = p.shape.n;
  if (version == 1) {
    tstitch::cuda::kernels::layernorm_modulate(dev.h.data(), dev.mod.data(), p.mod_ld, p.shift,
                                               p.scale, dev.a.data(), d, p.shape.tokens, d, p.rows,
                                               nullptr);
    blas.linear(dev.a.data(), d, dev.w.data(), d, dev.out.data(), CUDA_R_16BF, n, p.rows, n, d,
                p.shape.gelu() ? GemmEpilogue::bias_gelu : GemmEpilogue::bias,
                dev.bias_bf16.data());
  } else if (version == 2) {
    gp::gemm_prologue(params(p, dev), tile_n, p.shape.gelu(), nullptr);
  } else {
    gp::Params with_stats = params(p, dev);
    gp::row_stats(with_stats, dev.stats.data(), nullptr);
    with_stats.stats = dev.stats.data();
    gp::gemm_prologue(with_stats, tile_n, p.shape.gelu(), nullptr);
  }
}

struct Checked {
  bool ok;
  double err;
};

/// Runs `version` once on fresh buffers; compares the checked rows with the reference and
/// requires every value of out written.
Checked check(const char* label, int version, const Problem& p,
              const std::vector<std::int64_t>& rows, const std::vector<double>& want, Blas& blas,
              int tile_n) {
  const int n = p.shape.n;
  Device dev = upload(p);
  run(version, p, dev, blas, tile_n);
  const std::vector<std::uint16_t> out = lab::to_host(dev.out);
  std::vector<float> got;
  got.reserve(want.size());
  for (const std::int64_t r : rows)
    for (int c = 0; c < n; ++c)
      got.push_back(tstitch::io::bf16_to_f32(out[static_cast<std::size_t>(r * n + c)]));
  const auto unwritten = std::count(out.begin(), out.end(), kSentinel);
  const double err = lab::rel_l2(got, want);
  const bool ok = err < kBound && unwritten == 0;
  std::printf("  v%-5s out rel L2 %.3e (bound %.0e), %lld values unwritten %s\n", label, err,
              kBound, static_cast<long long>(unwritten), ok ? "ok" : "FAIL");
  return {ok, err};
}

// ---- --emulate: versions 2 and 3 on the CPU -----------------------------------------------------

/// Emulates the CTAs `tiles` ((tile_m, tile_n)) of version 2 (or 3: first the blocks of
/// row_stats_kernel that cover the tiles' rows) on `s` with BN columns per CTA and checks their
/// outputs against the reference (bound as on the device), and that the CTAs wrote every value
/// of their tiles and nothing else, with no access out of bounds.
template <int BN>
bool emulate(int version, const Shape& s, const std::vector<std::pair<unsigned, unsigned>>& tiles) {
  const Problem p = make_problem(s);
  std::vector<std::uint16_t> out(static_cast<std::size_t>(p.rows * s.n), kSentinel);
  const gp::Params params{p.h.data(),    reinterpret_cast<const __nv_bfloat16*>(p.w.data()),
                          p.bias.data(), p.mod.data(),
                          p.mod_ld,      p.shift,
                          p.scale,       reinterpret_cast<__nv_bfloat16*>(out.data()),
                          s.hidden,      s.n,
                          s.tokens,      p.rows,
                          1e-6f,         nullptr};
  // Version 3's statistics start as NaN: a row the stats kernel missed poisons its outputs.
  std::vector<float> stats(static_cast<std::size_t>(2 * p.rows), NAN);
#if defined(__CUDA_ARCH__) // the device pass sees this host function but compiles none of it
  const int faults = 1;
#else
  int faults = 0;
  gp::Params gemm = params;
  if (version == 3) {
    std::vector<unsigned> blocks;
    for (const auto& [tm, tn] : tiles)
      for (unsigned b = tm * gp::kBM / gp::kStatsWarps; b < (tm + 1) * gp::kBM / gp::kStatsWarps;
           ++b)
        if (std::find(blocks.begin(), blocks.end(), b) == blocks.end())
          blocks.push_back(b);
    faults += gp::emulate_row_stats(params, stats.data(), blocks);
    gemm.stats = stats.data();
  }
  faults += s.gelu() ? gp::emulate_tiles<BN, true>(gemm, p.mod.size(), tiles)
                     : gp::emulate_tiles<BN, false>(gemm, p.mod.size(), tiles);
#endif
  std::vector<std::int64_t> rows;
  for (const auto& [tm, tn] : tiles)
    for (int r = 0; r < gp::kBM; ++r)
      if (std::find(rows.begin(), rows.end(), std::int64_t{tm} * gp::kBM + r) == rows.end())
        rows.push_back(std::int64_t{tm} * gp::kBM + r);
  const std::vector<double> all = reference(p, rows);
  std::vector<float> got;
  std::vector<double> want;
  std::int64_t misplaced = 0; // values of the emulated tiles unwritten, or written outside them
  for (std::int64_t r = 0; r < p.rows; ++r)
    for (int c = 0; c < s.n; ++c) {
      bool mine = false;
      for (const auto& [tm, tn] : tiles)
        mine = mine || (r / gp::kBM == tm && c / BN == static_cast<int>(tn));
      const std::uint16_t v = out[static_cast<std::size_t>(r * s.n + c)];
      misplaced += mine == (v == kSentinel);
      if (mine) {
        const auto i =
            static_cast<std::size_t>(std::find(rows.begin(), rows.end(), r) - rows.begin());
        got.push_back(tstitch::io::bf16_to_f32(v));
        want.push_back(all[i * static_cast<std::size_t>(s.n) + static_cast<std::size_t>(c)]);
      }
    }
  const double err = lab::rel_l2(got, want);
  const bool ok = faults == 0 && misplaced == 0 && err < kBound;
  std::printf("v%d %s (tokens %d, 64 x %d tiles, %zu CTAs emulated): rel L2 %.3e (bound %.0e), "
              "%d faults, %lld values misplaced %s\n",
              version, s.name().c_str(), s.tokens, BN, tiles.size(), err, kBound, faults,
              static_cast<long long>(misplaced), ok ? "ok" : "FAIL");
  return ok;
}

int emulate_all() {
  bool ok = true;
  // Both tile widths and activations; the corner tiles and one inside; a row block spanning two
  // samples (tokens 32); both hidden sizes (12 and 36 k-tiles: the pipeline wraps many times).
  ok = emulate<64>(2, make_shape("S2", "qkv", 384, 1), {{0, 0}, {3, 17}, {2, 9}}) && ok;
  ok = emulate<128>(2, make_shape("S2", "fc1", 384, 4, 32), {{0, 0}, {1, 11}}) && ok;
  ok = emulate<64>(2, make_shape("S2", "fc1", 384, 2, 32), {{0, 23}}) && ok;
  ok = emulate<128>(2, make_shape("XL2", "qkv", 1152, 1), {{3, 26}}) && ok;
  ok = emulate<64>(2, make_shape("XL2", "fc1", 1152, 1), {{1, 71}}) && ok;
  // Version 3: its statistics kernel and the GEMM reading them, both widths and activations.
  ok = emulate<64>(3, make_shape("S2", "qkv", 384, 4, 32), {{1, 0}, {0, 17}}) && ok;
  ok = emulate<128>(3, make_shape("XL2", "fc1", 1152, 1), {{2, 35}}) && ok;
  // Sizes the kernel cannot take are refused, naming the value, before anything runs.
  for (const auto& [what, hidden, n, tokens, images] :
       {std::tuple{"hidden 100", 100, 300, 256, 1}, std::tuple{"N 1000", 384, 1000, 256, 1},
        std::tuple{"rows 96", 384, 1152, 96, 1}}) {
    Problem p = layout(make_shape("S2", "qkv", 384, 1));
    p.shape.hidden = hidden;
    p.shape.n = n;
    p.shape.tokens = tokens;
    p.rows = std::int64_t{tokens} * images;
    ok = lab::refuses(what, [&] { gp::require_sizes(sizes_of(p), 64); }) && ok;
  }
  std::printf("%s\n", ok ? "emulation matches" : "EMULATION MISMATCH");
  return ok ? 0 : 1;
}

int lab_main(int argc, char** argv) {
  const lab::Arguments args = lab::parse_arguments(argc, argv, 3);
  if (args.bad)
    return lab::usage(argv[0], 3);
  if (args.emulate)
    return emulate_all();
  const int only = args.only;
  const bool quick = args.quick;
  const cudaDeviceProp prop = lab::require_bf16_mma(argv[0]);
  lab::print_device(prop);
  Blas blas(nullptr);
  // Under --quick (the sanitizers' run) the heuristics' first algorithm is taken without timing
  // eight candidates, which would multiply the instrumented GEMMs.
  blas.set_autotune(!quick);
  std::vector<Shape> shapes;
  for (const int images : lab::image_counts(quick)) {
    for (const auto& [model, hidden] : lab::kDitWidths)
      for (const char* layer : {"qkv", "fc1"})
        shapes.push_back(make_shape(model, layer, hidden, images));
  }
  // Every shape's sizes are refused or accepted before anything runs (exit 2 with the value).
  for (const Shape& s : shapes) {
    const gp::Params sizes = sizes_of(layout(s));
    gp::require_sizes(sizes, gp::tile_n_for(sizes.rows, s.n, prop.multiProcessorCount));
  }
  bool ok = true;
  for (const Shape& s : shapes) {
    const Problem p = make_problem(s);
    const std::vector<std::int64_t> rows = lab::checked_rows(p.rows);
    const std::vector<double> want = reference(p, rows);
    const int tile_n = gp::tile_n_for(p.rows, s.n, prop.multiProcessorCount);
    // What version 2 reads from L2 per call, to read its time by: h three times per column tile
    // (two statistics passes, then A), all of W once per row block.
    const double h_mb = 3.0 * static_cast<double>(p.rows) * s.hidden * 4 * (s.n / tile_n) / 1e6;
    const double w_mb = static_cast<double>(p.rows / gp::kBM) * s.n * s.hidden * 2 / 1e6;
    std::printf("%s: rows %lld, K %d, N %d (checked rows %zu; version 2: 64 x %d tiles, %lld "
                "CTAs, h read %.0f MB and W %.0f MB from L2)\n",
                s.name().c_str(), static_cast<long long>(p.rows), s.hidden, s.n, rows.size(),
                tile_n, static_cast<long long>(p.rows / gp::kBM * (s.n / tile_n)), h_mb, w_mb);
    // Version 2 with the tile the rule picks ("2"), then with the other width ("2t64" or
    // "2t128", where N allows it), so the rule can be judged on the card.
    struct Run {
      std::string label;
      int version, tile_n;
    };
    std::vector<Run> runs;
    if (only == 0 || only == 1)
      runs.push_back({"1", 1, 0});
    if (only == 0 || only == 2) {
      runs.push_back({"2", 2, tile_n});
      if (const int other = tile_n == 64 ? 128 : 64; s.n % other == 0)
        runs.push_back({"2t" + std::to_string(other), 2, other});
    }
    if (only == 0 || only == 3)
      runs.push_back({"3", 3, tile_n});
    double us1 = 0, us2 = 0, us3 = 0;
    for (const Run& r : runs) {
      const Checked c = check(r.label.c_str(), r.version, p, rows, want, blas, r.tile_n);
      ok = ok && c.ok;
      std::string time;
      if (!quick) {
        Device dev = upload(p);
        const double us = lab::median_us(21, 10, [&] { run(r.version, p, dev, blas, r.tile_n); });
        std::printf("  v%-5s %10.2f us\n", r.label.c_str(), us);
        if (r.label == "1")
          us1 = us;
        else if (r.label == "2")
          us2 = us;
        else if (r.label == "3")
          us3 = us;
        time = lab::csv_time(us);
      }
      lab::print_csv("gemm_prologue", s.name(), r.label, time, c.err, c.ok);
    }
    if (us1 > 0 && us2 > 0)
      std::printf("  v1/v2 %.2f\n", us1 / us2);
    if (us1 > 0 && us3 > 0)
      std::printf("  v1/v3 %.2f\n", us1 / us3);
  }
  std::printf("%s\n", ok ? "all checks passed" : "MISMATCH");
  return ok ? 0 : 1;
}

} // namespace

int main(int argc, char** argv) { return lab::run_main(argc, argv, lab_main); }
