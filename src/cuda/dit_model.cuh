// SPDX-License-Identifier: Apache-2.0
#pragma once

// The definitions of cuda::DitModel (declared in dit.hpp), compiled by nvcc in tstitch_cuda.cu.
// Its members are defined out of line (not inline), so include this in exactly one translation
// unit: that one emits them for every plain C++ user.
//
// One forward, for a batch of n samples and rows = n * tokens (the stage each member function
// of DitModel::Impl runs, named as in the CPU model):
//   prepare_inputs        x -> x_in, timestep, labels (the only per-call data; see predict)
//   embed_condition       freq(t) -> fc1 -> SiLU -> fc2 (+ table[y]) -> SiLU(c) -> all adaLN
//                         modulations of every block and the final layer in one GEMM
//   embed_patches         patchify -> GEMM -> + position
//   modulated_norm        the first block's input: LN-modulate
//   run_block (each)      qkv GEMM (+ bias, bf16 out) -> attention -> proj GEMM (bf16 out) ->
//                         [h += gate (y + b); LN-modulate] -> fc1 GEMM (+ bias, GELU, bf16 out)
//                         -> fc2 GEMM (bf16 out) -> [h += gate (y + b); LN-modulate of the next
//                         block or of the final layer]
//   final_layer           GEMM (+ bias, fp32 out)
//   unpatchify            tokens -> latents
// The block GEMMs run in cuBLASLt with their bias (and fc1's GELU) as epilogues; the bracketed
// pairs are one kernel (residual_layernorm_modulate). The conditioning GEMMs are tiny: their
// biases are folded into the weight as an extra input column (dit_kernels.cuh).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tstitch/cuda/device/gemm.cuh"
#include "tstitch/cuda/dit.hpp"
#include "tstitch/cuda/kernels.hpp"
#include "tstitch/io/half.hpp"

namespace tstitch::cuda {

namespace detail {

using kernels::bias_columns;

/// Where a linear layer keeps its bias on the device.
enum class BiasStorage {
  folded, ///< bf16, in weight column `in` (the input carries a 1 there: bias_columns)
  fp32,   ///< a float vector (the fp32 GEMM epilogue, the residual kernel)
  bf16,   ///< a bf16 vector (the epilogue of a GEMM with bf16 output)
};

/// A linear layer's weight on the device: bf16 [out, ld], ld = in (+ bias_columns when the bias
/// is folded into column `in`), and its bias vector when not folded.
struct Linear {
  DeviceBuffer<std::uint16_t> weight;
  DeviceBuffer<float> bias;              // BiasStorage::fp32
  DeviceBuffer<std::uint16_t> bias_bf16; // BiasStorage::bf16
  int out = 0;
  int in = 0;
  int ld = 0;

  [[nodiscard]] std::int64_t bytes() const {
    return weight.bytes() + bias.bytes() + bias_bf16.bytes();
  }

  /// Y [rows, out] (fp32) = X [rows, ld] W^T for a layer with its bias folded into column `in`
  /// (X carries a 1 there): a plain cuBLAS GEMM, no epilogue.
  void apply_folded(const Blas& blas, const std::uint16_t* x, float* y, std::int64_t rows) const {
    blas.linear(x, ld, weight.data(), ld, y, CUDA_R_32F, out, rows, out, ld);
  }

  /// Y [rows, out] (bf16 or fp32) = X [rows, in] W^T, then `epilogue` (cuBLASLt) with this
  /// layer's bias in Y's type. GemmEpilogue::none leaves the bias to the kernel that reads Y.
  void apply(Blas& blas, const std::uint16_t* x, void* y, cudaDataType_t y_type, std::int64_t rows,
             GemmEpilogue epilogue) const {
    const void* b = nullptr;
    if (epilogue != GemmEpilogue::none)
      b = y_type == CUDA_R_16BF ? static_cast<const void*>(bias_bf16.data())
                                : static_cast<const void*>(bias.data());
    blas.linear(x, in, weight.data(), ld, y, y_type, out, rows, out, in, epilogue, b);
  }
};

/// Offsets into a row of the modulation GEMM's output (every block's adaLN modulations, then the
/// final layer's), in DiT's chunk order: block i holds shift, scale and gate of its attention
/// (msa), then of its MLP, at i * 6 * hidden_size; the final layer its shift and scale after the
/// last block.
struct ShiftScale {
  int shift = 0;
  int scale = 0;
};
struct BlockModulation {
  int shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp;
  [[nodiscard]] ShiftScale msa() const { return {shift_msa, scale_msa}; }
  [[nodiscard]] ShiftScale mlp() const { return {shift_mlp, scale_mlp}; }
};
inline BlockModulation block_modulation(std::size_t block, int d) {
  const int base = static_cast<int>(block) * 6 * d;
  return {base, base + d, base + 2 * d, base + 3 * d, base + 4 * d, base + 5 * d};
}
inline ShiftScale final_modulation(std::size_t depth, int d) {
  const int base = static_cast<int>(depth) * 6 * d;
  return {base, base + d};
}

inline void upload_bits(std::uint16_t* device, const std::vector<std::uint16_t>& host) {
  TSTITCH_CUDA_CHECK(
      cudaMemcpy(device, host.data(), host.size() * sizeof(std::uint16_t), cudaMemcpyHostToDevice));
}

inline DeviceBuffer<float> upload_floats(std::span<const float> values) {
  DeviceBuffer<float> buffer(static_cast<std::int64_t>(values.size()));
  TSTITCH_CUDA_CHECK(cudaMemcpy(buffer.data(), values.data(), values.size() * sizeof(float),
                                cudaMemcpyHostToDevice));
  return buffer;
}

/// The product of `extents`, checked: throws tstitch::invalid_argument naming `owner` and
/// `what` when int64 cannot count it (a batch far too large), before anything is allocated.
inline std::int64_t count_of(std::initializer_list<std::int64_t> extents, std::string_view owner,
                             std::string_view what) {
  const std::optional<std::int64_t> count = tstitch::detail::checked_extent_product(extents);
  if (!count) {
    std::string product;
    for (const std::int64_t extent : extents)
      product += tstitch::detail::concat(product.empty() ? "" : " x ", extent);
    throw_invalid_argument(tstitch::detail::concat(owner, ": ", what), product,
                           "has more values than int64 can count");
  }
  return *count;
}

/// A device array of the product of `extents` values, named "<owner>: <what>" in its errors.
template <class T>
DeviceBuffer<T> device_array(std::initializer_list<std::int64_t> extents, std::string_view owner,
                             std::string_view what) {
  return DeviceBuffer<T>(count_of(extents, owner, what),
                         tstitch::detail::concat(owner, ": ", what));
}

/// Stacks the weights (and biases) of several layers with the same input into one [sum out, ld]
/// matrix: all adaLN modulations of a model become one GEMM.
inline Linear make_linear(std::span<const std::pair<dit::Param, dit::Param>> parts,
                          BiasStorage storage) {
  const bool fold = storage == BiasStorage::folded;
  Linear l;
  l.in = static_cast<int>(parts.front().first.cols);
  for (const auto& [w, b] : parts) {
    require(w.cols == l.in, "stacked linear input size", w.cols,
            tstitch::detail::concat("must equal ", l.in));
    l.out += static_cast<int>(w.rows);
  }
  l.ld = fold ? l.in + bias_columns : l.in;
  std::vector<std::uint16_t> host(static_cast<std::size_t>(l.out) * static_cast<std::size_t>(l.ld),
                                  0);
  std::vector<float> bias;
  std::int64_t row0 = 0;
  for (const auto& [w, b] : parts) {
    for (std::int64_t r = 0; r < w.rows; ++r) {
      std::uint16_t* dst = &host[static_cast<std::size_t>((row0 + r) * l.ld)];
      for (std::int64_t c = 0; c < w.cols; ++c)
        dst[c] = io::f32_to_bf16_rne(w.data[r * w.cols + c]);
      if (fold)
        dst[l.in] = io::f32_to_bf16_rne(b.data[r]);
      else
        bias.push_back(b.data[r]);
    }
    row0 += w.rows;
  }
  l.weight = DeviceBuffer<std::uint16_t>(static_cast<std::int64_t>(host.size()));
  upload_bits(l.weight.data(), host);
  if (storage == BiasStorage::fp32)
    l.bias = upload_floats(bias);
  if (storage == BiasStorage::bf16) {
    std::vector<std::uint16_t> bits(bias.size());
    std::transform(bias.begin(), bias.end(), bits.begin(), io::f32_to_bf16_rne);
    l.bias_bf16 = DeviceBuffer<std::uint16_t>(static_cast<std::int64_t>(bits.size()));
    upload_bits(l.bias_bf16.data(), bits);
  }
  return l;
}

inline Linear make_linear(const dit::Param& w, const dit::Param& b, BiasStorage storage) {
  const std::pair<dit::Param, dit::Param> part{w, b};
  return make_linear(std::span<const std::pair<dit::Param, dit::Param>>(&part, 1), storage);
}

struct Block {
  Linear qkv, proj, fc1, fc2;
};

/// The activation buffers of one batch size, and its captured forward.
struct Activations {
  int batch = 0;
  std::int64_t rows = 0;
  DeviceBuffer<float> x_in, t, temb_hidden, temb, mod, h, final_out, out;
  DeviceBuffer<int> labels;
  DeviceBuffer<std::uint16_t> freq, temb_hidden_bf16, cond, patches, a, qkv, attn, y, mlp; // bf16
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;

  Activations() = default;
  Activations(const Activations&) = delete;
  Activations& operator=(const Activations&) = delete;
  ~Activations() {
    if (exec != nullptr)
      (void)cudaGraphExecDestroy(exec);
    if (graph != nullptr)
      (void)cudaGraphDestroy(graph);
  }

  [[nodiscard]] std::int64_t bytes() const {
    return x_in.bytes() + t.bytes() + temb_hidden.bytes() + temb.bytes() + mod.bytes() + h.bytes() +
           y.bytes() + final_out.bytes() + out.bytes() + labels.bytes() + freq.bytes() +
           temb_hidden_bf16.bytes() + cond.bytes() + patches.bytes() + a.bytes() + qkv.bytes() +
           attn.bytes() + mlp.bytes();
  }
};

/// A label vector's device copy, uploaded once from pinned memory (asynchronously: no host wait).
struct LabelSet {
  std::vector<int> key;
  DeviceBuffer<int> device;
  int* pinned = nullptr;

  LabelSet() = default;
  LabelSet(const LabelSet&) = delete;
  LabelSet& operator=(const LabelSet&) = delete;
  ~LabelSet() {
    if (pinned != nullptr)
      (void)cudaFreeHost(pinned);
  }
};

} // namespace detail

struct DitModel::Impl {
  dit::Config config;
  std::string name;
  cudaStream_t stream;
  Blas blas;
  AttentionPath attention = AttentionPath::flash;
  bool graphs = true;

  detail::Linear patch, t_fc1, t_fc2, modulation, final_linear;
  std::vector<detail::Block> blocks;
  DeviceBuffer<float> class_table, position;
  std::map<int, std::unique_ptr<detail::Activations>> activations;
  std::vector<std::unique_ptr<detail::LabelSet>> label_sets;

  Impl(const dit::Weights& w, std::string model_name, cudaStream_t s)
      : config(w.config()), name(std::move(model_name)), stream(s), blas(s) {
    using detail::BiasStorage;
    using detail::make_linear;
    const std::int64_t d = config.hidden_size;
    // Refuse a model these kernels cannot run before uploading anything, not at the first predict.
    const auto head_dim = static_cast<int>(config.head_dim());
    if (!kernels::attention_supported(attention, head_dim))
      attention = AttentionPath::reference;
    require(
        kernels::attention_supported(attention, head_dim), "CUDA DiT head dimension", head_dim,
        "no attention path supports it (flash: multiples of 8 up to 128, reference: up to 256)");
    constexpr std::int64_t max_hidden = 4 * 32 * 32; // the LayerNorm kernels hold a row in a warp
    require(d <= max_hidden, "CUDA DiT hidden_size", d,
            tstitch::detail::concat("must be at most ", max_hidden));
    patch = make_linear(w.patch_weight, w.patch_bias, BiasStorage::folded);
    t_fc1 = make_linear(w.t_fc1_weight, w.t_fc1_bias, BiasStorage::folded);
    t_fc2 = make_linear(w.t_fc2_weight, w.t_fc2_bias, BiasStorage::folded);
    std::vector<std::pair<dit::Param, dit::Param>> ada;
    for (const dit::BlockWeights& b : w.blocks) {
      ada.emplace_back(b.ada_weight, b.ada_bias);
      blocks.push_back({make_linear(b.qkv_weight, b.qkv_bias, BiasStorage::bf16),
                        make_linear(b.proj_weight, b.proj_bias, BiasStorage::fp32),
                        make_linear(b.fc1_weight, b.fc1_bias, BiasStorage::bf16),
                        make_linear(b.fc2_weight, b.fc2_bias, BiasStorage::fp32)});
    }
    ada.emplace_back(w.final_ada_weight, w.final_ada_bias);
    modulation = make_linear(ada, BiasStorage::folded);
    final_linear = make_linear(w.final_weight, w.final_bias, BiasStorage::fp32);
    class_table = detail::upload_floats(
        {w.class_table.data, static_cast<std::size_t>(w.class_table.rows * w.class_table.cols)});
    position =
        detail::upload_floats({w.pos_embed.data, static_cast<std::size_t>(config.tokens() * d)});
    // cudaMemcpy from pageable memory may return before its DMA lands, and the model's stream is
    // non-blocking (not ordered after the legacy stream): wait once, here, for the uploads.
    TSTITCH_CUDA_CHECK(cudaDeviceSynchronize());
  }

  [[nodiscard]] std::int64_t weight_bytes() const {
    std::int64_t bytes = patch.bytes() + t_fc1.bytes() + t_fc2.bytes() + modulation.bytes() +
                         final_linear.bytes() + class_table.bytes() + position.bytes();
    for (const detail::Block& b : blocks)
      bytes += b.qkv.bytes() + b.proj.bytes() + b.fc1.bytes() + b.fc2.bytes();
    return bytes;
  }

  detail::Activations& activations_for(int n) {
    if (const auto found = activations.find(n); found != activations.end())
      return *found->second;
    const dit::Config& c = config;
    const int d = static_cast<int>(c.hidden_size);
    const std::int64_t rows = detail::count_of({n, c.tokens()}, name, "rows of a batch");
    const int patch_k = static_cast<int>(c.in_channels * c.patch_size * c.patch_size);
    auto act = std::make_unique<detail::Activations>();
    act->batch = n;
    act->rows = rows;
    // Every buffer is named after the model and the batch, so that a batch too large for the card
    // fails with "cannot allocate CUDA DiT '<name>' activations for batch <n>: <buffer>: <bytes>".
    const std::string owner =
        tstitch::detail::concat("CUDA DiT '", name, "' activations for batch ", n);
    using detail::device_array;
    act->x_in = device_array<float>({n, c.latent_shape().numel()}, owner, "x_in");
    act->t = device_array<float>({1}, owner, "t");
    act->labels = device_array<int>({n}, owner, "labels");
    act->freq = device_array<std::uint16_t>({n, t_fc1.ld}, owner, "freq");
    act->temb_hidden = device_array<float>({n, d}, owner, "temb_hidden");
    act->temb_hidden_bf16 = device_array<std::uint16_t>({n, t_fc2.ld}, owner, "temb_hidden_bf16");
    act->temb = device_array<float>({n, d}, owner, "temb");
    act->cond = device_array<std::uint16_t>({n, modulation.ld}, owner, "cond");
    act->mod = device_array<float>({n, modulation.out}, owner, "mod");
    act->patches = device_array<std::uint16_t>({rows, patch.ld}, owner, "patches");
    act->h = device_array<float>({rows, d}, owner, "h");
    act->a = device_array<std::uint16_t>({rows, d}, owner, "a");
    act->qkv = device_array<std::uint16_t>({rows, 3, d}, owner, "qkv");
    act->attn = device_array<std::uint16_t>({rows, d}, owner, "attn");
    act->y = device_array<std::uint16_t>({rows, d}, owner, "y");
    act->mlp = device_array<std::uint16_t>({rows, c.mlp_hidden()}, owner, "mlp");
    act->final_out = device_array<float>({rows, final_linear.out}, owner, "final_out");
    act->out = device_array<float>({n, c.out_channels(), c.input_size, c.input_size}, owner, "out");
    kernels::fill_bias_columns(act->freq.data(), t_fc1.ld, t_fc1.in, n, stream);
    kernels::fill_bias_columns(act->temb_hidden_bf16.data(), t_fc2.ld, t_fc2.in, n, stream);
    kernels::fill_bias_columns(act->cond.data(), modulation.ld, modulation.in, n, stream);
    kernels::fill_bias_columns(act->patches.data(), patch.ld, patch_k, rows, stream);
    // Entered only now, complete: a failed allocation above (out of memory) leaves no entry
    // behind for memory() or set_attention() to trip over, and a later call may retry.
    return *activations.emplace(n, std::move(act)).first->second;
  }

  /// The device copy of a label vector; uploaded (asynchronously, from pinned memory) the first
  /// time it is seen. Sampling sees two label vectors (the classes and the null class).
  const int* labels_on_device(const std::vector<int>& labels) {
    for (const auto& set : label_sets)
      if (set->key == labels)
        return set->device.data();
    constexpr std::size_t max_sets = 64; // bound the cache for callers cycling through labels
    if (label_sets.size() >= max_sets) {
      TSTITCH_CUDA_CHECK(cudaStreamSynchronize(stream)); // the evicted copy may still be in use
      label_sets.erase(label_sets.begin());
    }
    auto set = std::make_unique<detail::LabelSet>();
    set->key = labels;
    set->device = DeviceBuffer<int>(static_cast<std::int64_t>(labels.size()));
    TSTITCH_CUDA_CHECK(
        cudaMallocHost(reinterpret_cast<void**>(&set->pinned), labels.size() * sizeof(int)));
    std::memcpy(set->pinned, labels.data(), labels.size() * sizeof(int));
    TSTITCH_CUDA_CHECK(cudaMemcpyAsync(set->device.data(), set->pinned, labels.size() * sizeof(int),
                                       cudaMemcpyHostToDevice, stream));
    label_sets.push_back(std::move(set));
    return label_sets.back()->device.data();
  }

  /// Everything after prepare_inputs: reads x_in, t, labels of `act`, writes act.out. The
  /// stages of the CPU model (cpu_model.hpp), on the device.
  void forward(detail::Activations& act) {
    embed_condition(act);
    embed_patches(act);
    // Every block's input LayerNorm but the first is fused with the previous block's residual
    // (with no blocks, the final layer's shift and scale sit where block 0's would).
    modulated_norm(act, detail::block_modulation(0, hidden()).msa());
    for (std::size_t i = 0; i < blocks.size(); ++i)
      run_block(act, i);
    final_layer(act);
    unpatchify(act);
  }

  [[nodiscard]] int hidden() const { return static_cast<int>(config.hidden_size); }
  [[nodiscard]] int tokens() const { return static_cast<int>(config.tokens()); }

  /// Conditioning: SiLU(t_embedder(t) + table[y]), then every modulation at once (act.mod).
  void embed_condition(detail::Activations& act) {
    const int n = act.batch;
    const int d = hidden();
    kernels::timestep_frequencies(act.t.data(), act.freq.data(), t_fc1.ld, n, stream);
    t_fc1.apply_folded(blas, act.freq.data(), act.temb_hidden.data(), n);
    kernels::silu_to_bf16(act.temb_hidden.data(), d, act.temb_hidden_bf16.data(), t_fc2.ld, d, n,
                          stream);
    t_fc2.apply_folded(blas, act.temb_hidden_bf16.data(), act.temb.data(), n);
    kernels::condition(act.temb.data(), class_table.data(), act.labels.data(), act.cond.data(),
                       modulation.ld, d, n, stream);
    modulation.apply_folded(blas, act.cond.data(), act.mod.data(), n);
  }

  /// Patch embedding: patchify, the patch GEMM, + position (act.h, the residual stream).
  void embed_patches(detail::Activations& act) {
    const dit::Config& c = config;
    kernels::patchify(act.x_in.data(), act.patches.data(), patch.ld,
                      static_cast<int>(c.in_channels), static_cast<int>(c.input_size),
                      static_cast<int>(c.patch_size), act.batch, stream);
    patch.apply_folded(blas, act.patches.data(), act.h.data(), act.rows);
    kernels::add_position(act.h.data(), position.data(), tokens(), hidden(), act.rows, stream);
  }

  /// act.a = LayerNorm(h) * (1 + scale) + shift.
  void modulated_norm(detail::Activations& act, detail::ShiftScale m) {
    const int d = hidden();
    kernels::layernorm_modulate(act.h.data(), act.mod.data(), modulation.out, m.shift, m.scale,
                                act.a.data(), d, tokens(), d, act.rows, stream);
  }

  /// Block i, from act.a (its modulated input) to act.a (the next block's or the final layer's):
  /// attention and MLP, each ending in the seam kernel (gated residual + the next LayerNorm).
  void run_block(detail::Activations& act, std::size_t i) {
    const dit::Config& c = config;
    const detail::Block& b = blocks[i];
    const int d = hidden();
    const int mod_ld = modulation.out;
    const std::int64_t rows = act.rows;
    const detail::BlockModulation m = detail::block_modulation(i, d);
    const detail::ShiftScale next = i + 1 < blocks.size()
                                        ? detail::block_modulation(i + 1, d).msa()
                                        : detail::final_modulation(blocks.size(), d);
    b.qkv.apply(blas, act.a.data(), act.qkv.data(), CUDA_R_16BF, rows, GemmEpilogue::bias);
    kernels::attention(act.qkv.data(), act.attn.data(), act.batch, tokens(),
                       static_cast<int>(c.num_heads), static_cast<int>(c.head_dim()), attention,
                       stream);
    b.proj.apply(blas, act.attn.data(), act.y.data(), CUDA_R_16BF, rows, GemmEpilogue::none);
    kernels::residual_layernorm_modulate(act.h.data(), act.y.data(), b.proj.bias.data(),
                                         act.mod.data(), mod_ld, m.gate_msa, m.shift_mlp,
                                         m.scale_mlp, act.a.data(), d, tokens(), d, rows, stream);
    b.fc1.apply(blas, act.a.data(), act.mlp.data(), CUDA_R_16BF, rows, GemmEpilogue::bias_gelu);
    b.fc2.apply(blas, act.mlp.data(), act.y.data(), CUDA_R_16BF, rows, GemmEpilogue::none);
    kernels::residual_layernorm_modulate(act.h.data(), act.y.data(), b.fc2.bias.data(),
                                         act.mod.data(), mod_ld, m.gate_mlp, next.shift, next.scale,
                                         act.a.data(), d, tokens(), d, rows, stream);
  }

  /// The final layer's linear (its LayerNorm-modulate ran in the last block's seam): act.final_out.
  void final_layer(detail::Activations& act) {
    final_linear.apply(blas, act.a.data(), act.final_out.data(), CUDA_R_32F, act.rows,
                       GemmEpilogue::bias);
  }

  /// act.final_out's tokens back to latents: act.out.
  void unpatchify(detail::Activations& act) {
    const dit::Config& c = config;
    kernels::unpatchify(act.final_out.data(), act.out.data(), static_cast<int>(c.out_channels()),
                        static_cast<int>(c.input_size), static_cast<int>(c.patch_size), act.batch,
                        stream);
  }

  void capture(detail::Activations& act) {
    // One forward outside the capture first: the GEMMs of new shapes time their candidate
    // algorithms (Blas::linear) and cuDNN builds its plans, neither of which a capture allows
    // (both wait for the GPU or allocate). The captured forward then only reuses their choices.
    forward(act);
    TSTITCH_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    try {
      forward(act);
    } catch (...) {
      cudaGraph_t broken = nullptr;
      (void)cudaStreamEndCapture(stream, &broken);
      if (broken != nullptr)
        (void)cudaGraphDestroy(broken);
      throw;
    }
    TSTITCH_CUDA_CHECK(cudaStreamEndCapture(stream, &act.graph));
    if (const cudaError_t status = cudaGraphInstantiate(&act.exec, act.graph, 0);
        status != cudaSuccess) {
      (void)cudaGraphDestroy(act.graph); // the next call captures afresh
      act.graph = nullptr;
      act.exec = nullptr;
      check(status, "cudaGraphInstantiate(&act.exec, act.graph, 0)", __FILE__, __LINE__);
    }
  }

  void prepare(int n) {
    require(n >= 1, "DitModel::prepare batch", n, "must be at least 1");
    detail::Activations& act = activations_for(n);
    if (graphs && act.exec != nullptr)
      return;
    // The forward needs valid inputs, whatever they are (predict overwrites them before every
    // replay): zero latents at t = 0, class 0.
    TSTITCH_CUDA_CHECK(
        cudaMemsetAsync(act.x_in.data(), 0, static_cast<std::size_t>(act.x_in.bytes()), stream));
    TSTITCH_CUDA_CHECK(
        cudaMemsetAsync(act.t.data(), 0, static_cast<std::size_t>(act.t.bytes()), stream));
    TSTITCH_CUDA_CHECK(cudaMemsetAsync(act.labels.data(), 0,
                                       static_cast<std::size_t>(act.labels.bytes()), stream));
    if (graphs)
      capture(act);
    else
      forward(act); // times the GEMM algorithms of new shapes
    TSTITCH_CUDA_CHECK(cudaStreamSynchronize(stream));
  }

  /// The forward's GEMMs alone, in its order, on the activations of a prepared batch.
  void launch_gemms_only(int n) {
    const auto found = activations.find(n);
    require(found != activations.end(), "DitModel::launch_gemms_only batch", n,
            "was not prepared (call prepare(batch) first)");
    detail::Activations& act = *found->second;
    t_fc1.apply_folded(blas, act.freq.data(), act.temb_hidden.data(), n);
    t_fc2.apply_folded(blas, act.temb_hidden_bf16.data(), act.temb.data(), n);
    modulation.apply_folded(blas, act.cond.data(), act.mod.data(), n);
    patch.apply_folded(blas, act.patches.data(), act.h.data(), act.rows);
    for (const detail::Block& b : blocks) {
      b.qkv.apply(blas, act.a.data(), act.qkv.data(), CUDA_R_16BF, act.rows, GemmEpilogue::bias);
      b.proj.apply(blas, act.attn.data(), act.y.data(), CUDA_R_16BF, act.rows, GemmEpilogue::none);
      b.fc1.apply(blas, act.a.data(), act.mlp.data(), CUDA_R_16BF, act.rows,
                  GemmEpilogue::bias_gelu);
      b.fc2.apply(blas, act.mlp.data(), act.y.data(), CUDA_R_16BF, act.rows, GemmEpilogue::none);
    }
    final_layer(act);
  }

  /// The batch size of a forward of `rows` rows as the int the kernels take, checked.
  [[nodiscard]] static int batch_rows(std::int64_t rows) {
    require(rows <= std::numeric_limits<int>::max(), "CUDA DiT batch", rows,
            tstitch::detail::concat("must be at most ", std::numeric_limits<int>::max(),
                                    " rows per forward"));
    return static_cast<int>(rows);
  }

  void predict(ConstView x, const StepContext& ctx, const std::vector<int>& labels, View out) {
    dit::check_forward(config, x, out, labels, ctx.point.timestep, "CUDA DiT");
    const std::int64_t n = x.batch();
    detail::Activations& act = activations_for(batch_rows(n));
    const int* device_labels = labels_on_device(labels);
    kernels::prepare_inputs(x, act.x_in.data(), static_cast<float>(ctx.point.timestep),
                            act.t.data(), device_labels, act.labels.data(), stream);
    run(act);
    copy_output(act, 0, out);
  }

  /// Both guidance branches as one batch of 2N rows, as DiT's reference sampler runs them: rows
  /// [0, N) see (x, cond), rows [N, 2N) see (x, uncond).
  void predict_guided(ConstView x, const StepContext& ctx, const std::vector<int>& cond,
                      const std::vector<int>& uncond, View out_cond, View out_uncond) {
    dit::check_forward(config, x, out_cond, cond, ctx.point.timestep, "CUDA DiT");
    dit::check_forward(config, x, out_uncond, uncond, ctx.point.timestep,
                       "CUDA DiT (unconditional)");
    const std::int64_t n = x.batch();
    detail::Activations& act = activations_for(batch_rows(2 * n));
    std::vector<int> both(cond);
    both.insert(both.end(), uncond.begin(), uncond.end());
    const int* device_labels = labels_on_device(both);
    const float t = static_cast<float>(ctx.point.timestep);
    const std::int64_t per_sample = config.latent_shape().numel();
    kernels::prepare_inputs(x, act.x_in.data(), t, act.t.data(), device_labels, act.labels.data(),
                            stream);
    kernels::prepare_inputs(x, act.x_in.data() + n * per_sample, t, act.t.data(), device_labels + n,
                            act.labels.data() + n, stream);
    run(act);
    copy_output(act, 0, out_cond);
    copy_output(act, n, out_uncond);
  }

  /// Replays the batch's graph (capturing it at the first call), or launches the forward.
  void run(detail::Activations& act) {
    if (graphs) {
      if (act.exec == nullptr)
        capture(act);
      TSTITCH_CUDA_CHECK(cudaGraphLaunch(act.exec, stream));
    } else {
      forward(act);
    }
  }

  /// Rows [first, first + out.batch()) of the forward's output into out (a strided view).
  void copy_output(const detail::Activations& act, std::int64_t first, View out) {
    const std::int64_t per_sample = config.out_channels() * config.input_size * config.input_size;
    const std::size_t row_bytes = static_cast<std::size_t>(per_sample) * sizeof(float);
    TSTITCH_CUDA_CHECK(
        cudaMemcpy2DAsync(out.data(), static_cast<std::size_t>(out.batch_stride()) * sizeof(float),
                          act.out.data() + first * per_sample, row_bytes, row_bytes,
                          static_cast<std::size_t>(out.batch()), cudaMemcpyDeviceToDevice, stream));
  }
};

// ---- DitModel ------------------------------------------------------------------------------

DitModel::DitModel(const dit::Weights& weights, std::string name, cudaStream_t stream)
    : impl_(std::make_unique<Impl>(weights, std::move(name),
                                   stream != nullptr ? stream : default_stream())) {}
DitModel::~DitModel() = default;
DitModel::DitModel(DitModel&&) noexcept = default;
DitModel& DitModel::operator=(DitModel&&) noexcept = default;

Prediction DitModel::prediction() const {
  return impl_->config.learn_sigma ? Prediction::epsilon_learned_sigma : Prediction::epsilon;
}
Shape DitModel::latent_shape() const { return impl_->config.latent_shape(); }
std::string DitModel::model_name(std::size_t) const { return impl_->name; }
DitModel::condition_type DitModel::unconditional(const condition_type& labels) const {
  return condition_type(labels.size(), static_cast<int>(impl_->config.num_classes));
}
const dit::Config& DitModel::config() const { return impl_->config; }

void DitModel::predict(ConstView x, const StepContext& ctx, const condition_type& labels,
                       View out) {
  impl_->predict(x, ctx, labels, out);
}

void DitModel::predict_guided(ConstView x, const StepContext& ctx, const condition_type& cond,
                              const condition_type& uncond, View out_cond, View out_uncond) {
  impl_->predict_guided(x, ctx, cond, uncond, out_cond, out_uncond);
}

void DitModel::prepare(int batch) { impl_->prepare(batch); }
void DitModel::launch_gemms_only(int batch) { impl_->launch_gemms_only(batch); }

void DitModel::set_attention(AttentionPath path) {
  const int head_dim = static_cast<int>(impl_->config.head_dim());
  if (!kernels::attention_supported(path, head_dim))
    throw_invalid_argument("attention path", to_string(path),
                           tstitch::detail::concat("is not available for head dimension ", head_dim,
                                                   " in this build"));
  if (path != impl_->attention) {
    impl_->attention = path;
    for (auto& [batch, act] : impl_->activations) { // recapture with the new kernels
      if (act->exec != nullptr)
        TSTITCH_CUDA_CHECK(cudaGraphExecDestroy(act->exec));
      if (act->graph != nullptr)
        TSTITCH_CUDA_CHECK(cudaGraphDestroy(act->graph));
      act->exec = nullptr;
      act->graph = nullptr;
    }
  }
}
AttentionPath DitModel::attention() const { return impl_->attention; }
void DitModel::set_graphs(bool enabled) { impl_->graphs = enabled; }
bool DitModel::graphs() const { return impl_->graphs; }

MemoryReport DitModel::memory() const {
  MemoryReport report;
  report.weights = impl_->weight_bytes();
  for (const auto& [batch, act] : impl_->activations)
    report.activations += act->bytes();
  report.workspace = impl_->blas.workspace_bytes();
  return report;
}
cudaStream_t DitModel::stream() const { return impl_->stream; }

} // namespace tstitch::cuda
