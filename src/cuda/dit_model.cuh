// SPDX-License-Identifier: Apache-2.0
#pragma once

// The definitions of cuda::DitModel (declared in dit.hpp), compiled by nvcc in tstitch_cuda.cu.
// Its members are defined out of line (not inline), so include this in exactly one translation
// unit: that one emits them for every plain C++ user.
//
// One forward, for a batch of n samples and rows = n * tokens:
//   prepare_inputs        x -> x_in, timestep, labels (the only per-call data; see predict)
//   conditioning          freq(t) -> fc1 -> SiLU -> fc2 (+ table[y]) -> SiLU(c) -> all adaLN
//                         modulations of every block and the final layer in one GEMM
//   patch embedding       patchify -> GEMM -> + position
//   first block's input   LN-modulate
//   per block             qkv GEMM (+ bias, bf16 out) -> attention -> proj GEMM (bf16 out) ->
//                         [h += gate (y + b); LN-modulate] -> fc1 GEMM (+ bias, GELU, bf16 out)
//                         -> fc2 GEMM (bf16 out) -> [h += gate (y + b); LN-modulate of the next
//                         block or of the final layer]
//   final layer           GEMM (+ bias, fp32 out) -> unpatchify
// The block GEMMs run in cuBLASLt with their bias (and fc1's GELU) as epilogues; the bracketed
// pairs are one kernel (residual_layernorm_modulate). The conditioning GEMMs are tiny: their
// biases are folded into the weight as an extra input column (dit_kernels.cuh).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <span>
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
};

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
    const std::int64_t rows = n * c.tokens();
    const int patch_k = static_cast<int>(c.in_channels * c.patch_size * c.patch_size);
    auto act = std::make_unique<detail::Activations>();
    act->batch = n;
    act->rows = rows;
    act->x_in = DeviceBuffer<float>(n * c.latent_shape().numel());
    act->t = DeviceBuffer<float>(1);
    act->labels = DeviceBuffer<int>(n);
    act->freq = DeviceBuffer<std::uint16_t>(n * t_fc1.ld);
    act->temb_hidden = DeviceBuffer<float>(static_cast<std::int64_t>(n) * d);
    act->temb_hidden_bf16 = DeviceBuffer<std::uint16_t>(static_cast<std::int64_t>(n) * t_fc2.ld);
    act->temb = DeviceBuffer<float>(static_cast<std::int64_t>(n) * d);
    act->cond = DeviceBuffer<std::uint16_t>(static_cast<std::int64_t>(n) * modulation.ld);
    act->mod = DeviceBuffer<float>(static_cast<std::int64_t>(n) * modulation.out);
    act->patches = DeviceBuffer<std::uint16_t>(rows * patch.ld);
    act->h = DeviceBuffer<float>(rows * d);
    act->a = DeviceBuffer<std::uint16_t>(rows * d);
    act->qkv = DeviceBuffer<std::uint16_t>(rows * 3 * d);
    act->attn = DeviceBuffer<std::uint16_t>(rows * d);
    act->y = DeviceBuffer<std::uint16_t>(rows * d);
    act->mlp = DeviceBuffer<std::uint16_t>(rows * c.mlp_hidden());
    act->final_out = DeviceBuffer<float>(rows * final_linear.out);
    act->out = DeviceBuffer<float>(n * c.out_channels() * c.input_size * c.input_size);
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

  /// Everything after prepare_inputs: reads x_in, t, labels of `act`, writes act.out.
  void forward(detail::Activations& act) {
    const dit::Config& c = config;
    const int n = act.batch;
    const int d = static_cast<int>(c.hidden_size);
    const int tokens = static_cast<int>(c.tokens());
    const std::int64_t rows = act.rows;
    const int mod_ld = modulation.out;
    cudaStream_t s = stream;

    // Conditioning: SiLU(t_embedder(t) + table[y]), then every modulation at once.
    kernels::timestep_frequencies(act.t.data(), act.freq.data(), t_fc1.ld, n, s);
    blas.linear(act.freq.data(), t_fc1.ld, t_fc1.weight.data(), t_fc1.ld, act.temb_hidden.data(),
                CUDA_R_32F, d, n, t_fc1.out, t_fc1.ld);
    kernels::silu_to_bf16(act.temb_hidden.data(), d, act.temb_hidden_bf16.data(), t_fc2.ld, d, n,
                          s);
    blas.linear(act.temb_hidden_bf16.data(), t_fc2.ld, t_fc2.weight.data(), t_fc2.ld,
                act.temb.data(), CUDA_R_32F, d, n, t_fc2.out, t_fc2.ld);
    kernels::condition(act.temb.data(), class_table.data(), act.labels.data(), act.cond.data(),
                       modulation.ld, d, n, s);
    blas.linear(act.cond.data(), modulation.ld, modulation.weight.data(), modulation.ld,
                act.mod.data(), CUDA_R_32F, mod_ld, n, modulation.out, modulation.ld);

    // Patch embedding.
    kernels::patchify(act.x_in.data(), act.patches.data(), patch.ld,
                      static_cast<int>(c.in_channels), static_cast<int>(c.input_size),
                      static_cast<int>(c.patch_size), n, s);
    blas.linear(act.patches.data(), patch.ld, patch.weight.data(), patch.ld, act.h.data(),
                CUDA_R_32F, d, rows, patch.out, patch.ld);
    kernels::add_position(act.h.data(), position.data(), tokens, d, rows, s);

    // Every block's input LayerNorm but the first is fused with the previous block's residual
    // (with no blocks, offsets 0 and d are the final layer's shift and scale).
    kernels::layernorm_modulate(act.h.data(), act.mod.data(), mod_ld, 0, d, act.a.data(), d, tokens,
                                d, rows, s);
    const int mlp = static_cast<int>(c.mlp_hidden());
    const int final_base = static_cast<int>(blocks.size()) * 6 * d; // shift, scale
    for (std::size_t i = 0; i < blocks.size(); ++i) {
      const detail::Block& b = blocks[i];
      const int base = static_cast<int>(i) * 6 * d; // shift1 scale1 gate1 shift2 scale2 gate2
      const int next = i + 1 < blocks.size() ? base + 6 * d : final_base; // its shift, scale
      blas.linear(act.a.data(), d, b.qkv.weight.data(), b.qkv.ld, act.qkv.data(), CUDA_R_16BF,
                  3 * d, rows, b.qkv.out, d, GemmEpilogue::bias, b.qkv.bias_bf16.data());
      kernels::attention(act.qkv.data(), act.attn.data(), n, tokens, static_cast<int>(c.num_heads),
                         static_cast<int>(c.head_dim()), attention, s);
      blas.linear(act.attn.data(), d, b.proj.weight.data(), b.proj.ld, act.y.data(), CUDA_R_16BF, d,
                  rows, d, d, GemmEpilogue::none, nullptr);
      kernels::residual_layernorm_modulate(act.h.data(), act.y.data(), b.proj.bias.data(),
                                           act.mod.data(), mod_ld, base + 2 * d, base + 3 * d,
                                           base + 4 * d, act.a.data(), d, tokens, d, rows, s);
      blas.linear(act.a.data(), d, b.fc1.weight.data(), b.fc1.ld, act.mlp.data(), CUDA_R_16BF, mlp,
                  rows, mlp, d, GemmEpilogue::bias_gelu, b.fc1.bias_bf16.data());
      blas.linear(act.mlp.data(), mlp, b.fc2.weight.data(), b.fc2.ld, act.y.data(), CUDA_R_16BF, d,
                  rows, d, mlp, GemmEpilogue::none, nullptr);
      kernels::residual_layernorm_modulate(act.h.data(), act.y.data(), b.fc2.bias.data(),
                                           act.mod.data(), mod_ld, base + 5 * d, next, next + d,
                                           act.a.data(), d, tokens, d, rows, s);
    }
    blas.linear(act.a.data(), d, final_linear.weight.data(), final_linear.ld, act.final_out.data(),
                CUDA_R_32F, final_linear.out, rows, final_linear.out, d, GemmEpilogue::bias,
                final_linear.bias.data());
    kernels::unpatchify(act.final_out.data(), act.out.data(), static_cast<int>(c.out_channels()),
                        static_cast<int>(c.input_size), static_cast<int>(c.patch_size), n, s);
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

  void predict(ConstView x, const StepContext& ctx, const std::vector<int>& labels, View out) {
    dit::check_forward(config, x, out, labels, ctx.point.timestep, "CUDA DiT");
    const std::int64_t n = x.batch();
    detail::Activations& act = activations_for(static_cast<int>(n));
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
    detail::Activations& act = activations_for(static_cast<int>(2 * n));
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
