// SPDX-License-Identifier: Apache-2.0
// Kernel lab: one whole DiT block forward,
//   h += gate_msa * (proj(attn(LNmod(h; shift_msa, scale_msa) Wqkv^T + bqkv)) + bproj)
//   h += gate_mlp * (fc2(GELU(LNmod(h; shift_mlp, scale_mlp) Wfc1^T + bfc1)) + bfc2)
// h fp32 [rows, hidden] (the residual stream), the six modulation chunks in DiT's order per
// sample (mod[row / tokens]: shift, scale, gate of attention, then of the MLP), LayerNorm without
// affine, eps 1e-6, tanh-GELU, attention softmax(q k^T / sqrt(head_dim)) v per (sample, head) on
// qkv [tokens, 3, heads, head_dim]: the library's block (src/cuda/dit_model.cuh, run_block).
//
// Versions:
//   1  what the CUDA DiT runs for one block: the qkv GEMM (cuBLASLt, bf16 bias epilogue), the
//      flash attention kernel, the proj GEMM (bf16 y), residual_layernorm_modulate, the fc1 GEMM
//      (bias + GELU epilogue), the fc2 GEMM, residual_layernorm_modulate: seven launches. Its
//      input a = LNmod(h; msa) comes from the previous block's seam (layernorm_modulate here, once,
//      untimed); its last seam writes the next block's a (here with this block's msa pair), the
//      work version 2 does in its next block's qkv prologue.
//   2  one persistent cooperative kernel (persistent_block_kernel.cuh): grid = SMs x the CTAs per
//      SM the occupancy API allows, five phases (LNmod + qkv, attention, proj + gated residual,
//      LNmod + fc1 + GELU, fc2 + gated residual) separated by four grid barriers, each phase
//      looping over its tiles (tile = CTA, += grid). Its tile bodies are the lab's own:
//      gemm_prologue's 64 x 64 tile (LayerNorm statistics per CTA) for qkv and fc1,
//      short_attention's body at 4 warps for attention, and a seam tile (64 x 64, A and W through
//      cp.async) whose epilogue is h_out = h_src + gate (bf16(y) + b). h goes h_in -> h_mid ->
//      h_out (three buffers; the kernel header says why).
// Expected before any measurement: at 1 and 8 images every kernel of version 1 is latency-bound
// (launch and ramp gaps between seven launches), which version 2 trades for four grid barriers
// (a few microseconds each) and tiles that are not tuned per phase: at 1 image the proj and fc2
// phases have only 24 tiles of 64 x 64 (fc2's with 48 k-tiles of 32 each, serial), and attention
// 24 CTAs, so those phases use a fifth of the SMs; it should win where the gaps dominate (1 image)
// and may lose at 8 images, where cuBLASLt's GEMMs fill the card better. The program prints the
// grid, the barriers and each phase's tiles, so the time can be read against that floor.
//
// Sizes version 2 takes: head dim 64 or 72, hidden = heads x head_dim a multiple of 64, tokens
// 64, 128, 192 or 256; anything else is refused with the value named. Timed: DiT-S/2 (hidden
// 384, 6 heads, head dim 64) and DiT-XL/2 (1152, 16, 72) at 256 tokens, 1 and 8 images.
//
// Checked against an fp64 CPU reference of the block from the same inputs (h, mod fp32; weights
// and biases rounded to bf16, the values both versions read), computed without any rounding, for
// samples 0 and the last (each sample's block is independent of the others). The measure is the
// block's update, h_out - h_in (relative L2): h itself is dominated by its mean (~20, given to the
// rows so the two-pass variance is exercised), which would hide an error in the update. Bound
// 1e-2, the lab's bf16 bound: the update passes through about five bf16 roundings in sequence on
// each branch (LNmod's a, qkv, P and attention's out, y; a, fc1's out, y), each a relative error
// of rms ~1.6e-3 (2^-8 to 2^-7 of a value, uniform within half an ulp), independent, and each
// GEMM after one averages part of it out: a few 1e-3 expected (the emulation measures 2.4e-3 to
// 2.7e-3 for the updates of h_out and h_mid); an index or layout error (wrong row, sample, head,
// chunk, column) costs O(1), since the rows differ in their statistics and mod differs per sample.
// Version 2 also reports h_mid's update against the reference's attention half. Every output and
// intermediate of version 2 starts as NaN: any value left unwritten fails the check (counted and
// printed).
//
// Printed: each check, the grid and each phase's tiles, then per shape the median of 21 samples
// (each 10 calls back to back, replayed from a CUDA graph as the model's forward is, so that
// version 1's seven launches cost no host time; direct launches where capture fails, as a
// cooperative launch may, and the line says so) per version, the ratio v1/v2, and lines
//   csv,persistent_block,<shape>,<version>,<us>,<max_err>,<ok>
// with max_err the relative L2 error of that version's update (us empty under --quick).
//
// Build: cmake -S . -B build -DTSTITCH_ENABLE_CUDA=ON -DTSTITCH_BUILD_CUDA_LAB=ON
//        cmake --build build --target lab_persistent_block
// Run:   build/dev/cuda/lab_persistent_block [version] [--quick]
//        --quick: check only (no timing), DiT-S/2 at 1 image: the run compute-sanitizer takes.
//        build/dev/cuda/lab_persistent_block --emulate: version 2's phases run on the CPU through
//        the lab's warp emulator (no device needed), every CTA of a small grid in order, phase
//        by phase, and are checked against the reference.
// Exit: 0 every check passed, 1 a mismatch, 2 bad arguments or sizes, 77 no CUDA device (or one
// older than sm_80, or without cooperative launch).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "common.cuh"
#include "persistent_block_kernel.cuh"
#include "tstitch/core/error.hpp"
#include "tstitch/cuda/device/gemm.cuh"
#include "tstitch/cuda/kernels.hpp"

namespace {

namespace pb = lab::persistent_block;
using bf16 = __nv_bfloat16;
using tstitch::cuda::Blas;
using tstitch::cuda::GemmEpilogue;

// ---- the problem --------------------------------------------------------------------------------

struct Shape {
  const char* model;
  int hidden, heads, head_dim, images, tokens;
  [[nodiscard]] std::int64_t rows() const { return std::int64_t{images} * tokens; }
  [[nodiscard]] std::string name() const {
    return std::string(model) + "_block_i" + std::to_string(images) +
           (tokens == 256 ? "" : "_t" + std::to_string(tokens));
  }
};

Shape s2(int images, int tokens = 256) { return {"S2", 384, 6, 64, images, tokens}; }
Shape xl2(int images, int tokens = 256) { return {"XL2", 1152, 16, 72, images, tokens}; }

/// A linear layer: weight bf16 [out, in] and bias (bf16-rounded), as floats and bf16 bits.
struct Layer {
  int out, in;
  std::vector<std::uint16_t> w, b_bf16;
  std::vector<float> b;
};

Layer make_layer(int out, int in, std::uint64_t seed) {
  Layer l{out, in, {}, {}, {}};
  l.w = lab::to_bf16(lab::randn(static_cast<std::size_t>(out) * static_cast<std::size_t>(in), seed,
                                1.0f / std::sqrt(static_cast<float>(in))));
  l.b_bf16 = lab::to_bf16(lab::randn(static_cast<std::size_t>(out), seed + 1, 0.5f));
  l.b = lab::from_bf16(l.b_bf16);
  return l;
}

struct Problem {
  Shape shape;
  int mod_ld;
  pb::Modulation m;
  std::vector<float> h, mod;
  Layer qkv, proj, fc1, fc2;
};

constexpr std::uint16_t kSentinel = 0x7fc1; // bf16 NaN: the intermediates' fill

/// The block's six chunks at the library's offsets (block_modulation of block 0).
pb::Modulation modulation(int d) { return {0, d, 2 * d, 3 * d, 4 * d, 5 * d}; }

Problem make_problem(const Shape& s) {
  const int d = s.hidden;
  const std::int64_t rows = s.rows();
  Problem p{s,
            6 * d,
            modulation(d),
            {},
            {},
            make_layer(3 * d, d, 51),
            make_layer(d, d, 53),
            make_layer(4 * d, d, 55),
            make_layer(d, 4 * d, 57)};
  p.h = lab::residual_stream(rows, d);
  p.mod =
      lab::randn(static_cast<std::size_t>(s.images) * static_cast<std::size_t>(p.mod_ld), 43, 0.5f);
  return p;
}

/// The samples the reference covers: all up to 2, else the first and the last.
std::vector<int> checked_samples(int images) {
  if (images <= 2) {
    std::vector<int> all;
    for (int i = 0; i < images; ++i)
      all.push_back(i);
    return all;
  }
  return {0, images - 1};
}

// ---- the fp64 reference -------------------------------------------------------------------------

std::vector<double> widen(const std::vector<std::uint16_t>& bits) {
  std::vector<double> out(bits.size());
  std::transform(bits.begin(), bits.end(), out.begin(),
                 [](std::uint16_t b) { return static_cast<double>(tstitch::io::bf16_to_f32(b)); });
  return out;
}

/// y [t, out] = x [t, in] W^T + b, fp64.
std::vector<double> linear(const std::vector<double>& x, int t, const std::vector<double>& w,
                           const Layer& l) {
  std::vector<double> y(static_cast<std::size_t>(t) * static_cast<std::size_t>(l.out));
  for (int r = 0; r < t; ++r) {
    const double* xr = &x[static_cast<std::size_t>(r) * static_cast<std::size_t>(l.in)];
    for (int j = 0; j < l.out; ++j) {
      const double* wr = &w[static_cast<std::size_t>(j) * static_cast<std::size_t>(l.in)];
      double s0 = 0, s1 = 0, s2 = 0, s3 = 0; // 4 chains: the CPU pipelines them
      for (int i = 0; i < l.in; i += 4) {
        const auto u = static_cast<std::size_t>(i);
        s0 += xr[u] * wr[u];
        s1 += xr[u + 1] * wr[u + 1];
        s2 += xr[u + 2] * wr[u + 2];
        s3 += xr[u + 3] * wr[u + 3];
      }
      y[static_cast<std::size_t>(r) * static_cast<std::size_t>(l.out) +
        static_cast<std::size_t>(j)] = (s0 + s1) + (s2 + s3) + l.b[static_cast<std::size_t>(j)];
    }
  }
  return y;
}

/// LayerNorm(x) (1 + scale) + shift per row, eps 1e-6, fp64.
std::vector<double> ln_modulate(const std::vector<double>& x, int t, int d, const float* shift,
                                const float* scale) {
  std::vector<double> out(x.size());
  for (int r = 0; r < t; ++r) {
    const double* xr = &x[static_cast<std::size_t>(r) * static_cast<std::size_t>(d)];
    double mean = 0, var = 0;
    for (int c = 0; c < d; ++c)
      mean += xr[c];
    mean /= d;
    for (int c = 0; c < d; ++c)
      var += (xr[c] - mean) * (xr[c] - mean);
    const double rstd = 1.0 / std::sqrt(var / d + 1e-6);
    for (int c = 0; c < d; ++c)
      out[static_cast<std::size_t>(r) * static_cast<std::size_t>(d) + static_cast<std::size_t>(c)] =
          (xr[c] - mean) * rstd * (1.0 + scale[c]) + static_cast<double>(shift[c]);
  }
  return out;
}

/// h after attention (mid) and after the MLP (out) of one sample, fp64 [tokens, hidden] each.
struct Reference {
  std::vector<double> mid, out;
};

Reference reference(const Problem& p, int sample) {
  const Shape& s = p.shape;
  const int d = s.hidden, t = s.tokens, hd = s.head_dim;
  const auto td = static_cast<std::size_t>(t) * static_cast<std::size_t>(d);
  const float* m = &p.mod[static_cast<std::size_t>(sample) * static_cast<std::size_t>(p.mod_ld)];
  std::vector<double> h(p.h.begin() + static_cast<std::ptrdiff_t>(sample * td),
                        p.h.begin() + static_cast<std::ptrdiff_t>((sample + 1) * td));
  const std::vector<double> qkv =
      linear(ln_modulate(h, t, d, m + p.m.shift_msa, m + p.m.scale_msa), t, widen(p.qkv.w), p.qkv);
  std::vector<double> o(td), score(static_cast<std::size_t>(t));
  const auto at = [&](int token, int part, int head, int c) {
    return qkv[static_cast<std::size_t>(token) * 3 * static_cast<std::size_t>(d) +
               static_cast<std::size_t>(part * d + head * hd + c)];
  };
  for (int head = 0; head < s.heads; ++head)
    for (int i = 0; i < t; ++i) {
      double top = -INFINITY, sum = 0;
      for (int j = 0; j < t; ++j) {
        double dot = 0;
        for (int c = 0; c < hd; ++c)
          dot += at(i, 0, head, c) * at(j, 1, head, c);
        score[static_cast<std::size_t>(j)] = dot / std::sqrt(static_cast<double>(hd));
        top = std::max(top, score[static_cast<std::size_t>(j)]);
      }
      for (double& v : score) {
        v = std::exp(v - top);
        sum += v;
      }
      for (int c = 0; c < hd; ++c) {
        double acc = 0;
        for (int j = 0; j < t; ++j)
          acc += score[static_cast<std::size_t>(j)] * at(j, 2, head, c);
        o[static_cast<std::size_t>(i * d + head * hd + c)] = acc / sum;
      }
    }
  const std::vector<double> y = linear(o, t, widen(p.proj.w), p.proj);
  Reference r;
  r.mid = h;
  for (std::size_t i = 0; i < td; ++i)
    r.mid[i] += m[p.m.gate_msa + static_cast<int>(i % static_cast<std::size_t>(d))] * y[i];
  std::vector<double> hidden = linear(
      ln_modulate(r.mid, t, d, m + p.m.shift_mlp, m + p.m.scale_mlp), t, widen(p.fc1.w), p.fc1);
  for (double& v : hidden)
    v = 0.5 * v * (1.0 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
  const std::vector<double> y2 = linear(hidden, t, widen(p.fc2.w), p.fc2);
  r.out = r.mid;
  for (std::size_t i = 0; i < td; ++i)
    r.out[i] += m[p.m.gate_mlp + static_cast<int>(i % static_cast<std::size_t>(d))] * y2[i];
  return r;
}

struct References {
  std::vector<int> samples;
  std::vector<Reference> of; // per checked sample
};

References references(const Problem& p) {
  References r{checked_samples(p.shape.images), {}};
  for (const int sample : r.samples)
    r.of.push_back(reference(p, sample));
  return r;
}

constexpr double kBound = 1e-2; // see the header

/// Relative L2 error of the update got - h_in against want - h_in over the checked samples.
double update_error(const Problem& p, const References& ref, const std::vector<float>& got,
                    bool mid) {
  const auto td =
      static_cast<std::size_t>(p.shape.tokens) * static_cast<std::size_t>(p.shape.hidden);
  std::vector<float> got_update;
  std::vector<double> want_update;
  for (std::size_t k = 0; k < ref.samples.size(); ++k) {
    const std::size_t first = static_cast<std::size_t>(ref.samples[k]) * td;
    const std::vector<double>& want = mid ? ref.of[k].mid : ref.of[k].out;
    for (std::size_t i = 0; i < td; ++i) {
      got_update.push_back(
          static_cast<float>(static_cast<double>(got[first + i]) - p.h[first + i]));
      want_update.push_back(want[i] - p.h[first + i]);
    }
  }
  return lab::rel_l2(got_update, want_update);
}

template <class T> long long count_unwritten(const std::vector<T>& v) {
  long long n = 0;
  for (const T& x : v) {
    if constexpr (std::is_same_v<T, float>)
      n += std::isnan(x) ? 1 : 0;
    else
      n += x == kSentinel ? 1 : 0;
  }
  return n;
}

/// Version 2's parameters on the buffers given (device or host).
pb::Params params(const Problem& p, const float* h_in, float* h_mid, float* h_out, const float* mod,
                  const std::uint16_t* const (&w)[4], const float* const (&b)[4],
                  std::uint16_t* qkv, std::uint16_t* attn, std::uint16_t* mlp) {
  const Shape& s = p.shape;
  const auto as_bf16 = [](const std::uint16_t* q) { return reinterpret_cast<const bf16*>(q); };
  return {h_in,
          h_mid,
          h_out,
          mod,
          p.mod_ld,
          p.m,
          as_bf16(w[0]),
          b[0],
          as_bf16(w[1]),
          b[1],
          as_bf16(w[2]),
          b[2],
          as_bf16(w[3]),
          b[3],
          reinterpret_cast<bf16*>(qkv),
          reinterpret_cast<bf16*>(attn),
          reinterpret_cast<bf16*>(mlp),
          s.hidden,
          s.heads,
          s.head_dim,
          s.tokens,
          s.rows(),
          1e-6f,
          static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(s.head_dim)))};
}

/// Version 2's sizes alone (null pointers), for require_sizes before anything is allocated.
pb::Params sizes_of(const Problem& p) {
  const std::uint16_t* const w[4] = {};
  const float* const b[4] = {};
  return params(p, nullptr, nullptr, nullptr, nullptr, w, b, nullptr, nullptr, nullptr);
}

// ---- --emulate: version 2 on the CPU ------------------------------------------------------------

struct Emulated {
  bool ok;
  double err;
};

/// Version 2 on the CPU at `s` with a grid of `grid` CTAs; checks h_out's and h_mid's updates
/// against the reference, every value of every buffer written, and no access out of bounds.
Emulated emulate(const Shape& s, int grid) {
  const Problem p = make_problem(s);
  const auto rows = static_cast<std::size_t>(s.rows());
  const auto d = static_cast<std::size_t>(s.hidden);
  std::vector<float> h_mid(rows * d, NAN), h_out(rows * d, NAN);
  std::vector<std::uint16_t> qkv(rows * 3 * d, kSentinel), attn(rows * d, kSentinel),
      mlp(rows * 4 * d, kSentinel);
  const std::uint16_t* const w[4] = {p.qkv.w.data(), p.proj.w.data(), p.fc1.w.data(),
                                     p.fc2.w.data()};
  const float* const b[4] = {p.qkv.b.data(), p.proj.b.data(), p.fc1.b.data(), p.fc2.b.data()};
  const pb::Params params_host = params(p, p.h.data(), h_mid.data(), h_out.data(), p.mod.data(), w,
                                        b, qkv.data(), attn.data(), mlp.data());
#if defined(__CUDA_ARCH__) // the device pass sees this host function but compiles none of it
  const int faults = 1;
  (void)params_host;
  (void)grid;
#else
  const int faults =
      s.head_dim == 64 ? pb::emulate<64>(params_host, grid) : pb::emulate<72>(params_host, grid);
#endif
  const References ref = references(p);
  const double err_mid = update_error(p, ref, h_mid, true);
  const double err = update_error(p, ref, h_out, false);
  const long long unwritten = count_unwritten(h_mid) + count_unwritten(h_out) +
                              count_unwritten(qkv) + count_unwritten(attn) + count_unwritten(mlp);
  const bool ok = faults == 0 && unwritten == 0 && err < kBound && err_mid < kBound;
  std::printf("v2 %s (hidden %d, %d heads x %d, %d tokens, grid %d): update rel L2 %.3e, h_mid's "
              "%.3e (bound %.0e), %d faults, %lld values unwritten %s\n",
              s.name().c_str(), s.hidden, s.heads, s.head_dim, s.tokens, grid, err, err_mid, kBound,
              faults, unwritten, ok ? "ok" : "FAIL");
  return {ok, err};
}

int emulate_all() {
  bool ok = true;
  // Small shapes first (two samples: the per-sample modulation rows; a grid smaller than every
  // phase's tiles, so each CTA loops), then DiT-S/2 at 1 image on an H100's grid of 2 x 132.
  ok = emulate({"S2like", 128, 2, 64, 2, 64}, 5).ok && ok;
  ok = emulate({"HD72", 576, 8, 72, 1, 64}, 7).ok && ok;
  ok = emulate(s2(1), 264).ok && ok;
  // Sizes the kernel cannot take are refused, naming the value, before anything runs.
  struct Refused {
    const char* what;
    Shape shape;
  };
  for (const auto& [what, bad] :
       {Refused{"tokens 100", {"S2", 384, 6, 64, 1, 100}},
        Refused{"head_dim 96", {"S2", 384, 4, 96, 1, 256}},
        Refused{"hidden 432 (6 x 72)", {"S2", 432, 6, 72, 1, 256}},
        Refused{"5 heads x 64 for hidden 384", {"S2", 384, 5, 64, 1, 256}}}) {
    ok = lab::refuses(what,
                      [&] {
                        pb::require_sizes(sizes_of(Problem{
                            bad, 6 * bad.hidden, modulation(bad.hidden), {}, {}, {}, {}, {}, {}}));
                      }) &&
         ok;
  }
  std::printf("%s\n", ok ? "emulation matches" : "EMULATION MISMATCH");
  return ok ? 0 : 1;
}

// ---- on the device ------------------------------------------------------------------------------

struct Device {
  lab::DeviceBuffer<float> h_in, h, h_mid, h_out, mod;
  lab::DeviceBuffer<std::uint16_t> w[4], b_bf16[4];
  lab::DeviceBuffer<float> b[4];
  lab::DeviceBuffer<std::uint16_t> a, y, qkv, attn, mlp;
};

Device upload(const Problem& p) {
  const Shape& s = p.shape;
  const std::int64_t rows = s.rows(), d = s.hidden;
  const auto nan_floats = std::vector<float>(static_cast<std::size_t>(rows * d), NAN);
  const auto nan_bf16 = [&](std::int64_t cols) {
    return lab::to_device(
        std::vector<std::uint16_t>(static_cast<std::size_t>(rows * cols), kSentinel));
  };
  const Layer* layers[4] = {&p.qkv, &p.proj, &p.fc1, &p.fc2};
  Device dev{lab::to_device(p.h),
             lab::to_device(p.h),
             lab::to_device(nan_floats),
             lab::to_device(nan_floats),
             lab::to_device(p.mod),
             {},
             {},
             {},
             nan_bf16(d),
             nan_bf16(d),
             nan_bf16(3 * d),
             nan_bf16(d),
             nan_bf16(4 * d)};
  for (int i = 0; i < 4; ++i) {
    dev.w[i] = lab::to_device(layers[i]->w);
    dev.b_bf16[i] = lab::to_device(layers[i]->b_bf16);
    dev.b[i] = lab::to_device(layers[i]->b);
  }
  return dev;
}

pb::Params device_params(const Problem& p, Device& dev) {
  const std::uint16_t* const w[4] = {dev.w[0].data(), dev.w[1].data(), dev.w[2].data(),
                                     dev.w[3].data()};
  const float* const b[4] = {dev.b[0].data(), dev.b[1].data(), dev.b[2].data(), dev.b[3].data()};
  return params(p, dev.h_in.data(), dev.h_mid.data(), dev.h_out.data(), dev.mod.data(), w, b,
                dev.qkv.data(), dev.attn.data(), dev.mlp.data());
}

/// Version 1's block on dev.h (in place) from dev.a, as run_block launches it; its last seam
/// writes the next block's a with this block's msa pair.
void run_library_block(const Problem& p, Device& dev, Blas& blas, cudaStream_t stream) {
  const Shape& s = p.shape;
  const int d = s.hidden;
  const std::int64_t rows = s.rows();
  namespace k = tstitch::cuda::kernels;
  blas.linear(dev.a.data(), d, dev.w[0].data(), d, dev.qkv.data(), CUDA_R_16BF, 3 * d, rows, 3 * d,
              d, GemmEpilogue::bias, dev.b_bf16[0].data());
  k::attention(dev.qkv.data(), dev.attn.data(), s.images, s.tokens, s.heads, s.head_dim,
               tstitch::cuda::AttentionPath::flash, stream);
  blas.linear(dev.attn.data(), d, dev.w[1].data(), d, dev.y.data(), CUDA_R_16BF, d, rows, d, d,
              GemmEpilogue::none, nullptr);
  k::residual_layernorm_modulate(dev.h.data(), dev.y.data(), dev.b[1].data(), dev.mod.data(),
                                 p.mod_ld, p.m.gate_msa, p.m.shift_mlp, p.m.scale_mlp, dev.a.data(),
                                 d, s.tokens, d, rows, stream);
  blas.linear(dev.a.data(), d, dev.w[2].data(), d, dev.mlp.data(), CUDA_R_16BF, 4 * d, rows, 4 * d,
              d, GemmEpilogue::bias_gelu, dev.b_bf16[2].data());
  blas.linear(dev.mlp.data(), 4 * d, dev.w[3].data(), 4 * d, dev.y.data(), CUDA_R_16BF, d, rows, d,
              4 * d, GemmEpilogue::none, nullptr);
  k::residual_layernorm_modulate(dev.h.data(), dev.y.data(), dev.b[3].data(), dev.mod.data(),
                                 p.mod_ld, p.m.gate_mlp, p.m.shift_msa, p.m.scale_msa, dev.a.data(),
                                 d, s.tokens, d, rows, stream);
}

/// The block's first a = LNmod(h; msa), which the previous block's seam would have written.
void first_input(const Problem& p, Device& dev) {
  const Shape& s = p.shape;
  tstitch::cuda::kernels::layernorm_modulate(dev.h.data(), dev.mod.data(), p.mod_ld, p.m.shift_msa,
                                             p.m.scale_msa, dev.a.data(), s.hidden, s.tokens,
                                             s.hidden, s.rows(), nullptr);
}

/// Version 2 on `grid` CTAs; returns the grid it ran with (pb::launch).
int launch_v2(const Problem& p, Device& dev, int grid, cudaStream_t stream = nullptr) {
  const pb::Params params_dev = device_params(p, dev);
  return p.shape.head_dim == 64 ? pb::launch<64>(params_dev, grid, stream)
                                : pb::launch<72>(params_dev, grid, stream);
}

struct Checked {
  bool ok;
  double err;
};

/// Runs `version` once on fresh buffers and checks it; version 2 may lower `grid` (launch_v2).
Checked check(int version, const Problem& p, const References& ref, Blas& blas, int& grid) {
  Device dev = upload(p);
  double err = 0, err_mid = 0;
  long long unwritten = 0;
  if (version == 1) {
    first_input(p, dev);
    run_library_block(p, dev, blas, nullptr);
    err = update_error(p, ref, lab::to_host(dev.h), false);
  } else {
    if (const int used = launch_v2(p, dev, grid); used != grid) {
      std::printf("  v2 ran on a grid of %d: %d CTAs were refused as co-resident\n", used, grid);
      grid = used;
    }
    TSTITCH_CUDA_CHECK(cudaGetLastError());
    const std::vector<float> h_out = lab::to_host(dev.h_out), h_mid = lab::to_host(dev.h_mid);
    err = update_error(p, ref, h_out, false);
    err_mid = update_error(p, ref, h_mid, true);
    unwritten = count_unwritten(h_out) + count_unwritten(h_mid) +
                count_unwritten(lab::to_host(dev.qkv)) + count_unwritten(lab::to_host(dev.attn)) +
                count_unwritten(lab::to_host(dev.mlp));
  }
  const bool ok = err < kBound && err_mid < kBound && unwritten == 0;
  if (version == 1)
    std::printf("  v1 update rel L2 %.3e (bound %.0e) %s\n", err, kBound, ok ? "ok" : "FAIL");
  else
    std::printf("  v2 update rel L2 %.3e, h_mid's %.3e (bound %.0e), %lld values unwritten %s\n",
                err, err_mid, kBound, unwritten, ok ? "ok" : "FAIL");
  return {ok, err};
}

int lab_main(int argc, char** argv) {
  const lab::Arguments args = lab::parse_arguments(argc, argv, 2);
  if (args.bad)
    return lab::usage(argv[0], 2);
  if (args.emulate)
    return emulate_all();
  const cudaDeviceProp prop = lab::require_bf16_mma(argv[0]);
  if (prop.cooperativeLaunch == 0) {
    std::printf("%s: %s has no cooperative launch; skipped\n", argv[0], prop.name);
    return 77;
  }
  lab::print_device(prop);
  Blas blas(nullptr);
  blas.set_autotune(!args.quick); // as gemm_prologue: no candidate timing under the sanitizers
  // Timing runs on a stream of its own, replayed from a CUDA graph as the model runs its forward
  // (lab::median_us_graphed): version 1's seven launches then pay no host launch cost either.
  cudaStream_t stream = nullptr;
  TSTITCH_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  Blas stream_blas(stream);
  stream_blas.set_autotune(!args.quick);
  std::vector<Shape> shapes;
  for (const int images : args.quick ? std::vector<int>{1} : std::vector<int>{1, 8}) {
    shapes.push_back(s2(images));
    if (!args.quick)
      shapes.push_back(xl2(images));
  }
  for (const Shape& s : shapes) // refused before anything runs (exit 2 with the value)
    pb::require_sizes(
        sizes_of(Problem{s, 6 * s.hidden, modulation(s.hidden), {}, {}, {}, {}, {}, {}}));
  const int grid64 = pb::cooperative_grid<64>(prop.multiProcessorCount);
  const int grid72 = pb::cooperative_grid<72>(prop.multiProcessorCount);
  bool ok = true;
  for (const Shape& s : shapes) {
    const Problem p = make_problem(s);
    const References ref = references(p);
    int grid = s.head_dim == 64 ? grid64 : grid72;
    const pb::Params sizes = sizes_of(p);
    std::printf("%s: rows %lld, hidden %d, %d heads x %d (checked samples %zu); version 2: grid "
                "%d (%d per SM), %d grid barriers; tiles per phase (busy CTAs x tiles each):",
                s.name().c_str(), static_cast<long long>(s.rows()), s.hidden, s.heads, s.head_dim,
                ref.samples.size(), grid, grid / prop.multiProcessorCount, pb::kPhases - 1);
    for (int phase = 0; phase < pb::kPhases; ++phase) {
      const int tiles = pb::phase_tiles(phase, sizes);
      std::printf(" %s %d (%d x %d)", pb::kPhaseNames[phase], tiles, std::min(tiles, grid),
                  (tiles + grid - 1) / grid);
    }
    std::printf("\n");
    double us[3] = {0, 0, 0};
    for (int version = 1; version <= 2; ++version) {
      if (args.only != 0 && args.only != version)
        continue;
      const Checked c = check(version, p, ref, blas, grid);
      ok = ok && c.ok;
      std::string time;
      if (!args.quick) {
        Device dev = upload(p);
        if (version == 1)
          first_input(p, dev);
        TSTITCH_CUDA_CHECK(cudaDeviceSynchronize()); // the timing stream does not wait for stream 0
        bool graphed = false;
        us[version] = lab::median_us_graphed(
            [&] {
              if (version == 1)
                run_library_block(p, dev, stream_blas, stream);
              else
                (void)launch_v2(p, dev, grid, stream);
            },
            stream, graphed, 21, 10);
        std::printf("  v%d %10.2f us (%s)\n", version, us[version],
                    graphed ? "CUDA graph" : "direct launches: capture failed");
        time = lab::csv_time(us[version]);
      }
      lab::print_csv("persistent_block", s.name(), std::to_string(version), time, c.err, c.ok);
    }
    if (us[1] > 0 && us[2] > 0)
      std::printf("  v1/v2 %.2f\n", us[1] / us[2]);
  }
  TSTITCH_CUDA_CHECK(cudaStreamDestroy(stream));
  std::printf("%s\n", ok ? "all checks passed" : "MISMATCH");
  return ok ? 0 : 1;
}

} // namespace

int main(int argc, char** argv) { return lab::run_main(argc, argv, lab_main); }
