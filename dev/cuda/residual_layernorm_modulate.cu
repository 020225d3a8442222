// SPDX-License-Identifier: Apache-2.0
// Kernel lab: the seam between two sublayers of a DiT block,
//   h += gate * (y + bias);  out = LayerNorm(h) * (1 + scale) + shift
// h is the fp32 residual stream [rows, dim], y the sublayer's GEMM output, out the bf16 input of
// the next GEMM; bias, gate, shift and scale are rows of the sample's adaLN modulation.
//
// Versions:
//   1  two kernels: gated_residual (one block per row, float4 accesses; y in fp32) then the
//      library's layernorm_modulate (one warp per row). h is read three times and written once.
//      The CUDA DiT's first seam; superseded by 2.
//   2  the library's fused kernel (kernels::residual_layernorm_modulate, ParamStaging::global):
//      one warp per row keeps h + gate * (y + bias) in registers for both LayerNorm passes;
//      bias, gate, shift and scale read per warp from global memory.
//   3  the same kernel with those parameters staged per block of 8 rows in shared memory
//      (ParamStaging::shared): what the library picks where it applies.
//
// Build: cmake -S . -B build -DTSTITCH_ENABLE_CUDA=ON -DTSTITCH_BUILD_CUDA_LAB=ON
//        cmake --build build --target lab_residual_layernorm_modulate
// Run:   build/dev/cuda/lab_residual_layernorm_modulate [version] [--quick]   (default: every
//        version; --quick: DiT-S/2 only, the check alone, no timing)
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <vector>

#include "common.cuh"
#include "tstitch/cuda/kernels.hpp"

namespace {

namespace k = tstitch::cuda::kernels;

// ---- version 1's own kernel -------------------------------------------------------------------

// h += gate * (y + bias): a block's output joins the residual stream (the gate of adaLN-Zero).
// One thread block per row, threads striding over 4-column groups.
__global__ void gated_residual_kernel(float* h, const float* y, const float* bias, const float* mod,
                                      int mod_ld, int gate_offset, int tokens, int dim) {
  const std::int64_t row = blockIdx.x;
  float4* x = reinterpret_cast<float4*>(h + row * dim);
  const float4* in = reinterpret_cast<const float4*>(y + row * dim);
  const float4* b = reinterpret_cast<const float4*>(bias);
  const float4* g = reinterpret_cast<const float4*>(mod + (row / tokens) * mod_ld + gate_offset);
  for (int c = static_cast<int>(threadIdx.x); c < dim / 4; c += static_cast<int>(blockDim.x)) {
    float4 v = x[c];
    const float4 u = in[c], bb = b[c], gg = g[c];
    v.x += gg.x * (u.x + bb.x);
    v.y += gg.y * (u.y + bb.y);
    v.z += gg.z * (u.z + bb.z);
    v.w += gg.w * (u.w + bb.w);
    x[c] = v;
  }
}

void gated_residual(float* h, const float* y, const float* bias, const float* mod, int mod_ld,
                    int gate_offset, int tokens, int dim, std::int64_t rows) {
  const int threads = std::min(256, std::max(32, (dim / 4 + 31) / 32 * 32));
  gated_residual_kernel<<<static_cast<unsigned>(rows), threads>>>(h, y, bias, mod, mod_ld,
                                                                  gate_offset, tokens, dim);
  TSTITCH_CUDA_CHECK(cudaGetLastError());
}

// ---- the problem --------------------------------------------------------------------------------

struct Problem {
  int tokens, dim, batch;
  std::int64_t rows;
  int mod_ld, gate, shift, scale, ld;
  std::vector<float> h, y, bias, mod; // y as the bf16 values every version reads
  std::vector<std::uint16_t> y_bf16;
};

Problem make_problem(int tokens, int dim, int batch) {
  Problem p{tokens,   dim,     batch,   static_cast<std::int64_t>(batch) * tokens,
            12 * dim, 2 * dim, 7 * dim, 8 * dim,
            dim + 8,  {},      {},      {},
            {},       {}};
  p.h = lab::randn(static_cast<std::size_t>(p.rows * dim), 11);
  for (float& v : p.h)
    v += 20.0f; // a large mean, as the residual stream has: the variance is taken around it
  p.y_bf16 = lab::to_bf16(lab::randn(p.h.size(), 12, 3.0f));
  p.y = lab::from_bf16(p.y_bf16);
  p.bias = lab::randn(static_cast<std::size_t>(dim), 13);
  p.mod = lab::randn(static_cast<std::size_t>(batch * p.mod_ld), 14, 0.5f);
  return p;
}

// The CPU reference in fp64: the new h, and out (columns past dim untouched, so not compared).
void reference(const Problem& p, std::vector<double>& want_h, std::vector<double>& want_out) {
  want_h.assign(p.h.size(), 0.0);
  want_out.assign(static_cast<std::size_t>(p.rows * p.ld), 0.0);
  for (std::int64_t r = 0; r < p.rows; ++r) {
    const float* m = &p.mod[static_cast<std::size_t>((r / p.tokens) * p.mod_ld)];
    double mean = 0, var = 0;
    for (int c = 0; c < p.dim; ++c) {
      const auto i = static_cast<std::size_t>(r * p.dim + c);
      want_h[i] = p.h[i] + static_cast<double>(m[p.gate + c]) *
                               (static_cast<double>(p.y[i]) + p.bias[static_cast<std::size_t>(c)]);
      mean += want_h[i];
    }
    mean /= p.dim;
    for (int c = 0; c < p.dim; ++c)
      var += std::pow(want_h[static_cast<std::size_t>(r * p.dim + c)] - mean, 2);
    var /= p.dim;
    for (int c = 0; c < p.dim; ++c)
      want_out[static_cast<std::size_t>(r * p.ld + c)] =
          (want_h[static_cast<std::size_t>(r * p.dim + c)] - mean) / std::sqrt(var + 1e-6) *
              (1.0 + m[p.scale + c]) +
          m[p.shift + c];
  }
}

struct Device {
  lab::DeviceBuffer<float> h, y_f32, bias, mod;
  lab::DeviceBuffer<std::uint16_t> y_bf16, out;
};

Device upload(const Problem& p) {
  return {lab::to_device(p.h),      lab::to_device(p.y),
          lab::to_device(p.bias),   lab::to_device(p.mod),
          lab::to_device(p.y_bf16), lab::DeviceBuffer<std::uint16_t>(p.rows * p.ld, "lab out")};
}

void run(int version, const Problem& p, Device& d) {
  switch (version) {
  case 1:
    gated_residual(d.h.data(), d.y_f32.data(), d.bias.data(), d.mod.data(), p.mod_ld, p.gate,
                   p.tokens, p.dim, p.rows);
    k::layernorm_modulate(d.h.data(), d.mod.data(), p.mod_ld, p.shift, p.scale, d.out.data(), p.ld,
                          p.tokens, p.dim, p.rows, nullptr);
    break;
  case 2:
  case 3:
    k::residual_layernorm_modulate(
        d.h.data(), d.y_bf16.data(), d.bias.data(), d.mod.data(), p.mod_ld, p.gate, p.shift,
        p.scale, d.out.data(), p.ld, p.tokens, p.dim, p.rows, nullptr, 1e-6f,
        version == 2 ? k::ParamStaging::global : k::ParamStaging::shared);
    break;
  default:
    break;
  }
}

const char* const names[] = {"", "1 gated_residual + layernorm_modulate", "2 fused, params global",
                             "3 fused, params staged"};

} // namespace

int main(int argc, char** argv) {
  const bool quick = lab::take_flag(argc, argv, "--quick");
  lab::require_device(argv[0]);
  const int only = lab::version_argument(argc, argv, 3);
  bool ok = true;
  // DiT-S/2, -B/2 and -XL/2 at 256x256 (256 tokens), batch 8.
  for (const int dim : {384, 768, 1152}) {
    if (quick && dim != 384)
      continue;
    const Problem p = make_problem(256, dim, 8);
    std::vector<double> want_h, want_out;
    reference(p, want_h, want_out);
    std::printf("dim %d, %lld rows\n", dim, static_cast<long long>(p.rows));
    for (int v = 1; v <= 3; ++v) {
      if (only != 0 && v != only)
        continue;
      Device d = upload(p);
      run(v, p, d);
      const std::vector<float> got_h = lab::to_host(d.h);
      const std::vector<float> got_out = lab::from_bf16(lab::to_host(d.out));
      ok = lab::validate(names[v], got_h, want_h, 1e-5) && ok;
      ok = lab::validate(names[v], got_out, want_out, 1e-2,
                         [&](std::size_t i) { return static_cast<int>(i % p.ld) < p.dim; }) &&
           ok;
      if (quick)
        continue;
      // Timed on the same buffers: h keeps growing by gate * (y + bias), which costs nothing.
      const double ms = lab::time_ms(200, [&] { run(v, p, d); });
      std::printf("  %-32s %8.2f us\n", names[v], ms * 1e3);
    }
  }
  return ok ? 0 : 1;
}
