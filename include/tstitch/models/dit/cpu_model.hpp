// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <new>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <Eigen/Core>

#ifdef _OPENMP
#include <omp.h>
#endif

#if __has_include(<unistd.h>)
#include <unistd.h>
#endif

#include "tstitch/core/cpu_isa.hpp"
#include "tstitch/core/denoiser.hpp"
#include "tstitch/core/error.hpp"
#include "tstitch/models/dit/attention.hpp"
#include "tstitch/models/dit/deterministic.hpp"
#include "tstitch/models/dit/layernorm.hpp"
#include "tstitch/models/dit/linear.hpp"
#include "tstitch/models/dit/parallel.hpp"
#include "tstitch/models/dit/weights.hpp"

namespace tstitch::dit {

/// DiT on the CPU in float32: the reference the CUDA backend is tested against, and a Denoiser in
/// its own right (prediction epsilon_learned_sigma, or epsilon without learn_sigma; condition: one
/// class label per batch row, num_classes meaning "no class" for guidance). The linear layers
/// (linear.hpp) and attention (attention.hpp) in oneDNN or Eigen (`Gemm`, gemm.hpp); LayerNorm in
/// tstitch's own code (layernorm.hpp, AVX2 or scalar by cpu_isa()); the embeddings in Eigen.
///
/// Activation buffers are allocated once per batch size and reused, so sampling allocates nothing
/// per step. Build with OpenMP (-fopenmp) to use several cores. With oneDNN, a batch of at least
/// two images per thread is cut into one slice per thread, each forwarded single-threaded (one
/// parallel region per forward); smaller batches run each layer threaded. `set_threads` sets the
/// thread count per model, `set_parallel_for` hands the work to the host application's pool.
///
/// Its output has the same bits wherever its buffers are allocated, and with Eigen at any OpenMP
/// thread count. oneDNN (the default) partitions a primitive by the thread count it was created
/// at and the batch is sliced by the thread count, so with it the same bits need the same thread
/// count (with an executor, the same task count). Both block rows by the row count, so an
/// image's output changes in the last bits with the batch it is in. `set_batch_invariant(true)`
/// removes both dependences, with either library. (Bits are for one machine: the libraries pick
/// kernels and blockings by the CPU's instruction set and caches.)
///
/// One predict at a time per model (the workspaces are reused): callers on several threads of
/// their own use one model each (loading an F32 file again maps the same pages). A second
/// concurrent predict is refused with tstitch::runtime_error rather than raced.
///
/// Before a forward allocates, its workspace is estimated (workspace_bytes) and refused above a
/// limit (memory_limit: physical memory unless set), so that a config whose attention scores
/// cannot fit fails with a message naming the model and the bytes rather than std::bad_alloc.
class CpuModel {
public:
  using condition_type = std::vector<int>;
  using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using Vector = Eigen::Matrix<float, 1, Eigen::Dynamic, Eigen::RowMajor>;

  /// `gemm` picks the library of the linear layers and attention; both give the same model to
  /// float32 rounding.
  explicit CpuModel(Weights weights, std::string name = "DiT", Gemm gemm = default_gemm())
      : weights_(std::move(weights)), name_(std::move(name)), gemm_(require_available(gemm)) {}

  [[nodiscard]] Prediction prediction() const {
    return config().learn_sigma ? Prediction::epsilon_learned_sigma : Prediction::epsilon;
  }
  [[nodiscard]] Shape latent_shape() const { return config().latent_shape(); }
  [[nodiscard]] std::string model_name(std::size_t) const { return name_; }
  /// The null class of classifier-free guidance, for every row.
  [[nodiscard]] condition_type unconditional(const condition_type& labels) const {
    return condition_type(labels.size(), static_cast<int>(config().num_classes));
  }
  [[nodiscard]] const Config& config() const { return weights_.config(); }
  [[nodiscard]] const Weights& weights() const { return weights_; }
  [[nodiscard]] Gemm gemm() const { return gemm_; }

  /// Whether each image's forward runs alone, single-threaded, the images shared among the threads
  /// (or the executor's tasks), so that an image's output has the same bits in any batch, at any
  /// position and at any thread count: for renderers that must reproduce an image whatever else was
  /// generated with it. Off by default: it costs 1.0-1.4x the batched time on small models
  /// (benchmarks/results/2026-11-26-batch-invariant-xeon.md) and uses one thread for a batch of
  /// one.
  void set_batch_invariant(bool invariant) { batch_invariant_ = invariant; }
  [[nodiscard]] bool batch_invariant() const { return batch_invariant_; }

  /// What runs each of the forward's operations at each shape run so far (the linear layers,
  /// then attention), once each. oneDNN picks kernels for the CPU when a shape is first run; where
  /// it would pick one of its reference kernels the model runs that shape in Eigen instead
  /// (gemm.hpp). TSTITCH_LOG_LEVEL=debug logs each choice as it is made.
  [[nodiscard]] std::vector<KernelChoice> kernels() const {
    std::vector<KernelChoice> all;
    const auto add = [&all](const std::vector<KernelChoice>& choices) {
      for (const KernelChoice& choice : choices)
        if (std::none_of(all.begin(), all.end(), [&](const KernelChoice& seen) {
              return seen.operation == choice.operation &&
                     seen.implementation == choice.implementation;
            }))
          all.push_back(choice);
    };
    for (const auto* workspaces : {&batched_, &slices_})
      for (const Workspace& w : *workspaces)
        add(w.linear.kernels());
    for (const auto* workspaces : {&batched_, &slices_})
      for (const Workspace& w : *workspaces)
        add(w.attention.kernels());
    return all;
  }

  /// Bytes of activation buffers currently allocated (they grow with the largest batch seen; a
  /// batch run in per-thread slices, or with set_batch_invariant, has a workspace per thread).
  [[nodiscard]] std::int64_t activation_bytes() const {
    std::int64_t bytes = 0;
    for (const Workspace& w : batched_)
      bytes += w.bytes();
    for (const Workspace& w : slices_)
      bytes += w.bytes();
    return bytes;
  }

  /// Bytes of workspace a forward of `images` images needs with the current settings (threads,
  /// executor, batch invariance): the activation buffers and the attention scores of every
  /// workspace it runs in, weights aside (and oneDNN's primitives' small scratchpads). Not counted
  /// either: what a larger batch run earlier left allocated. Saturates at INT64_MAX.
  [[nodiscard]] std::int64_t workspace_bytes(std::int64_t images) const {
    const int team = threads();
    if (!batch_invariant_ && !executor_ && !splits_batch(images, team)) {
#ifdef _OPENMP
      return one_workspace_bytes(images, team); // attention's scores: one slice per thread
#else
      return one_workspace_bytes(images, 1);
#endif
    }
    const std::int64_t tasks = std::max<std::int64_t>(1, std::min<std::int64_t>(team, images));
    const std::int64_t slice = batch_invariant_ ? 1 : (images + tasks - 1) / tasks;
    return saturating_mul(tasks, one_workspace_bytes(slice, 1)); // single-threaded slices
  }

  /// The most workspace a forward may need (workspace_bytes) before predict() refuses it: `bytes`
  /// > 0 sets it, 0 restores the default, the machine's physical memory (a forward that needs
  /// more would fail to allocate or be killed swapping).
  void set_memory_limit(std::int64_t bytes) {
    require(bytes >= 0, "CpuModel::set_memory_limit: bytes", bytes, "must be >= 0 (0: default)");
    memory_limit_ = bytes;
  }
  [[nodiscard]] std::int64_t memory_limit() const {
    return memory_limit_ > 0 ? memory_limit_ : physical_memory_bytes();
  }

  /// Writes the raw output (N, out_channels, H, W) for latents x (N, C, H, W) at model time
  /// ctx.point.timestep and labels (one per row, in [0, num_classes]). Throws
  /// tstitch::runtime_error when called while another call is running, when the forward's
  /// workspace exceeds memory_limit(), or when an allocation fails.
  void predict(ConstView x, const StepContext& ctx, const condition_type& labels, View out) {
    const InUse in_use(busy_, name_);
    check_forward(config(), x, out, labels, ctx.point.timestep, "DiT");
    run(x, Times{{}, static_cast<float>(ctx.point.timestep)}, labels, out);
  }

  /// predict() with one model time per row, as the official DiT's forward(x, t, y) takes them
  /// (the optional Denoiser member predict_timesteps, core/denoiser.hpp): row k of out is what
  /// predict() writes for row k at timestep timesteps[k]. With timesteps all equal it writes
  /// predict()'s bits; with set_batch_invariant, each row's bits are those of the row alone.
  void predict_timesteps(ConstView x, std::span<const double> timesteps,
                         const condition_type& labels, View out) {
    const InUse in_use(busy_, name_);
    check_forward(config(), x, out, labels, 0.0, "DiT");
    require(static_cast<std::int64_t>(timesteps.size()) == x.batch(), "timesteps.size()",
            timesteps.size(),
            detail::concat("must equal the batch, ", x.batch(), " (one timestep per image)"));
    for (std::size_t i = 0; i < timesteps.size(); ++i)
      require(std::isfinite(timesteps[i]), detail::concat("timesteps[", i, "]"), timesteps[i],
              "must be finite");
    run(x, Times{timesteps, 0.0f}, labels, out);
  }

  /// The number of threads this model's forwards use: `threads` > 0 sets it for this model alone
  /// (a small model may run best on fewer threads than a large one); 0, the default, follows
  /// OpenMP (omp_get_max_threads() of the calling thread, OMP_NUM_THREADS). With a host executor
  /// (set_parallel_for) it is the number of tasks a forward hands to it.
  void set_threads(int threads) {
    require(threads >= 0, "CpuModel::set_threads: threads", threads, "must be >= 0");
    threads_ = threads;
  }
  [[nodiscard]] int threads() const {
    if (threads_ > 0)
      return threads_;
    if (executor_)
      return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
  }

  /// Runs the model's parallel work on the host application's thread pool instead of OpenMP's:
  /// each forward hands `threads()` tasks to `executor`, slices of the batch that run
  /// single-threaded on whichever thread takes them, so the model starts no threads of its own.
  /// An empty executor restores OpenMP.
  void set_parallel_for(ParallelFor executor) { executor_ = std::move(executor); }

private:
  /// Set while a predict() runs. Copying or moving a model gives the copy a clear flag (the
  /// atomic itself can be neither), so models still go in vectors.
  struct BusyFlag {
    std::atomic<bool> busy{false};
    BusyFlag() = default;
    BusyFlag(const BusyFlag&) noexcept {}
    BusyFlag& operator=(const BusyFlag&) noexcept { return *this; }
  };

  /// Holds the flag for one predict() (RAII, so an exception releases it), or throws if another
  /// call holds it: concurrent calls would share the workspaces and race.
  class InUse {
  public:
    InUse(BusyFlag& flag, const std::string& name) : flag_(flag) {
      if (flag_.busy.exchange(true, std::memory_order_acquire))
        throw runtime_error(detail::concat("CpuModel '", name,
                                           "': predict() called from two threads at once; use one "
                                           "model per thread"));
    }
    ~InUse() { flag_.busy.store(false, std::memory_order_release); }
    InUse(const InUse&) = delete;
    InUse& operator=(const InUse&) = delete;

  private:
    BusyFlag& flag_;
  };

  /// Total physical memory (POSIX sysconf), read once; INT64_MAX where it cannot be read.
  static std::int64_t physical_memory_bytes() {
    static const std::int64_t bytes = [] {
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
      const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
      if (pages > 0 && page > 0)
        return saturating_mul(pages, page);
#endif
      return std::numeric_limits<std::int64_t>::max();
    }();
    return bytes;
  }

  /// "17.2 GB", "512.0 MB": decimal units, one decimal.
  static std::string format_bytes(std::int64_t bytes) {
    const auto b = static_cast<double>(bytes);
    const char* unit = b >= 1e9 ? "GB" : b >= 1e6 ? "MB" : b >= 1e3 ? "kB" : "bytes";
    const double scaled = b >= 1e9 ? b / 1e9 : b >= 1e6 ? b / 1e6 : b >= 1e3 ? b / 1e3 : b;
    char text[64];
    std::snprintf(text, sizeof text, "%.1f %s", scaled, unit);
    return text;
  }

  [[nodiscard]] std::string describe_need(std::int64_t images, std::int64_t needed) const {
    const std::string amount = needed == std::numeric_limits<std::int64_t>::max()
                                   ? std::string("2^63 bytes or more")
                                   : detail::concat(format_bytes(needed), " (", needed, " bytes)");
    return detail::concat(
        "CpuModel '", name_, "': a forward of ", images, images == 1 ? " image" : " images",
        " needs ", amount, " of workspace (activations and attention scores, weights aside; ",
        config().tokens(), " tokens of hidden size ", config().hidden_size, ", ",
        config().num_heads, " heads, ", threads(), threads() == 1 ? " thread)" : " threads)");
  }

  /// Refuses a forward whose workspace exceeds the limit, before anything is allocated.
  void check_memory(std::int64_t images, std::int64_t needed) const {
    const std::int64_t limit = memory_limit();
    if (needed <= limit && needed < std::numeric_limits<std::int64_t>::max())
      return;
    throw runtime_error(
        detail::concat(describe_need(images, needed), ", more than the ", format_bytes(limit), " (",
                       limit, " bytes) limit (",
                       memory_limit_ > 0 ? "set by CpuModel::set_memory_limit" : "physical memory",
                       "); use a smaller batch, fewer threads or a smaller input"));
  }

  [[nodiscard]] runtime_error out_of_memory(std::int64_t images, std::int64_t needed,
                                            const char* what) const {
    return runtime_error(detail::concat(describe_need(images, needed), ": ", what,
                                        " (out of memory); use a smaller batch, fewer threads or "
                                        "a smaller input"));
  }

  /// Bytes of one workspace forwarding `images` images with attention on `threads` threads.
  [[nodiscard]] std::int64_t one_workspace_bytes(std::int64_t images, int threads) const {
    const Config& c = config();
    std::int64_t floats = SelfAttention::scratch_floats(gemm_, images, c.tokens(), c.num_heads,
                                                        c.head_dim(), threads);
    for (const std::int64_t buffer : buffer_floats(images))
      floats = saturating_add(floats, buffer);
    return saturating_mul(floats, static_cast<std::int64_t>(sizeof(float)));
  }

  /// The model time of each row: one for the whole batch (rows empty), or one per row.
  struct Times {
    std::span<const double> rows;
    float uniform = 0;
    [[nodiscard]] float operator[](std::int64_t row) const {
      return rows.empty() ? uniform : static_cast<float>(rows[static_cast<std::size_t>(row)]);
    }
    [[nodiscard]] Times slice(std::int64_t first, std::int64_t count) const {
      return rows.empty() ? *this
                          : Times{rows.subspan(static_cast<std::size_t>(first),
                                               static_cast<std::size_t>(count)),
                                  uniform};
    }
  };

  /// A checked forward: refuses one that cannot fit, and names the model when memory runs out.
  void run(ConstView x, Times t, const condition_type& labels, View out) {
    const std::int64_t images = x.batch();
    const std::int64_t needed = workspace_bytes(images);
    check_memory(images, needed);
    try {
      forward_batch(x, t, labels, out);
    } catch (const std::bad_alloc&) { // from a buffer, Eigen's or oneDNN's internals
      throw out_of_memory(images, needed, "an allocation failed");
    } catch (const std::length_error&) { // a buffer beyond what std::vector can hold
      throw out_of_memory(images, needed, "a buffer exceeds what std::vector can hold");
    }
  }

  void forward_batch(ConstView x, Times t, const condition_type& labels, View out) {
    const std::int64_t images = x.batch();
    const int team = threads();
    if (!batch_invariant_ && !executor_ && !splits_batch(images, team)) {
      // One forward over the whole batch, each layer threaded on its own.
      if (batched_.empty())
        batched_.emplace_back(gemm_);
      const ThreadCountScope scope(threads_);
      forward(batched_.front(), x, t, labels, out);
      return;
    }
    // The batch in `tasks` contiguous slices, each forwarded single-threaded (SingleThreadedScope:
    // its OpenMP loops, Eigen and oneDNN all run on one thread) in a workspace of its own that a
    // batched forward never uses: oneDNN fixes a primitive's partitioning, and so its bits, by the
    // thread count it was created at. With set_batch_invariant a slice runs one image at a time,
    // so that an image's bits depend on nothing but the image.
    const auto tasks = static_cast<int>(std::min<std::int64_t>(team, images));
    while (static_cast<int>(slices_.size()) < tasks)
      slices_.emplace_back(gemm_);
    run_tasks(
        executor_, tasks,
        [&](std::int64_t task) {
          const std::int64_t first = images * task / tasks, last = images * (task + 1) / tasks;
          Workspace& w = slices_[static_cast<std::size_t>(task)];
          const SingleThreadedScope serial;
          const std::int64_t step = batch_invariant_ ? 1 : last - first;
          for (std::int64_t n = first; n < last; n += step)
            forward(w, x.samples(n, step), t.slice(n, step),
                    std::span(labels).subspan(static_cast<std::size_t>(n),
                                              static_cast<std::size_t>(step)),
                    out.samples(n, step));
        },
        tasks);
  }

  /// Whether a batch of `images` runs as `team` slices of whole images, one per thread, rather
  /// than as one forward with each layer threaded. Slices start no parallel region per layer and
  /// keep each thread's activations in its own cache: 1.05-1.5x faster on the Fashion DiTs and
  /// DiT-S/2 at 8-80 images (benchmarks/results/2026-12-07-cpu-amd-epyc.md). They need at least two
  /// images per thread, so that slices of unequal size cost little, and oneDNN: with Eigen the bits
  /// must not depend on the thread count (slices change a row's alignment in its buffer,
  /// deterministic.hpp).
  [[nodiscard]] bool splits_batch(std::int64_t images, int team) const {
    return gemm_ == Gemm::onednn && team > 1 && images >= 2 * static_cast<std::int64_t>(team);
  }

private:
  /// What a forward computes in: the activation buffers (grown to the largest batch seen, then
  /// reused; aligned, so that the bits do not depend on the allocator, deterministic.hpp) and the
  /// GEMM libraries' primitives and scratch.
  struct Workspace {
    explicit Workspace(Gemm gemm) : linear(gemm), attention(gemm) {}
    AlignedBuffer<float> tokens, h, qkv, attn, mlp, out, cond, silu, mod, patches, freq, temb;
    LinearLayers linear;
    SelfAttention attention;

    [[nodiscard]] std::int64_t bytes() const {
      return static_cast<std::int64_t>(sizeof(float)) *
                 static_cast<std::int64_t>(tokens.size() + h.size() + qkv.size() + attn.size() +
                                           mlp.size() + out.size() + cond.size() + silu.size() +
                                           mod.size() + patches.size() + freq.size() +
                                           temb.size()) +
             attention.scratch_bytes();
    }
  };

  using ConstMap = Eigen::Map<const Matrix>;
  using Map = Eigen::Map<Matrix>;
  using ConstVectorMap = Eigen::Map<const Vector>;

  static ConstMap matrix(const Param& p) { return ConstMap(p.data, p.rows, p.cols); }
  static ConstVectorMap vector(const Param& p) { return ConstVectorMap(p.data, p.cols); }

  static void resize(AlignedBuffer<float>& buffer, std::int64_t size) {
    if (static_cast<std::int64_t>(buffer.size()) < size)
      buffer.resize(static_cast<std::size_t>(size));
  }

  /// The floats of each activation buffer for a forward of n images, in Workspace's order from
  /// tokens to temb (saturating: the estimate checks them before reserve() allocates them).
  [[nodiscard]] std::array<std::int64_t, 12> buffer_floats(std::int64_t n) const {
    const Config& c = config();
    const auto mul = [](std::int64_t a, std::int64_t b) { return saturating_mul(a, b); };
    const std::int64_t rows = mul(n, c.tokens()), d = c.hidden_size;
    return {mul(rows, d),
            mul(rows, d),
            mul(rows, 3 * d),
            mul(rows, d),
            mul(rows, c.mlp_hidden()),
            mul(rows, c.patch_size * c.patch_size * c.out_channels()),
            mul(n, d),
            mul(n, d),
            mul(n, 6 * d),
            mul(rows, c.in_channels * c.patch_size * c.patch_size),
            mul(n, Config::frequency_embedding_size),
            mul(n, d)};
  }

  void forward(Workspace& w, ConstView x, Times t, std::span<const int> labels, View out) {
    const std::int64_t n = x.batch();
    reserve(w, n);
    embed_condition(w, t, labels);
    embed_patches(w, x);
    for (const BlockWeights& block : weights_.blocks)
      run_block(w, block, n);
    final_layer(w, n);
    unpatchify(w, out);
  }

  void reserve(Workspace& w, std::int64_t n) const {
    const std::array<std::int64_t, 12> floats = buffer_floats(n);
    AlignedBuffer<float>* buffers[12] = {&w.tokens, &w.h,    &w.qkv, &w.attn,    &w.mlp,  &w.out,
                                         &w.cond,   &w.silu, &w.mod, &w.patches, &w.freq, &w.temb};
    for (std::size_t i = 0; i < floats.size(); ++i)
      resize(*buffers[i], floats[i]);
  }

  /// y = x W^T + b for the first `rows` rows.
  static void linear(Workspace& w, const float* x, std::int64_t rows, const Param& weight,
                     const Param& bias, float* y) {
    w.linear.run(x, rows, weight, bias, y, Epilogue{});
  }

  /// c = t_embedder(t) + y_embedder(labels): the conditioning vector of every row (N, D), each
  /// row at its own time t[row] (the adaLN modulation that follows is per row already).
  void embed_condition(Workspace& w, Times t, std::span<const int> labels) const {
    const Config& c = config();
    const std::int64_t n = static_cast<std::int64_t>(labels.size()), d = c.hidden_size;
    const std::int64_t half = Config::frequency_embedding_size / 2;
    // Sinusoidal timestep features [cos(t f_k), sin(t f_k)], f_k = exp(-ln(10000) k / half), in
    // float32 as the reference computes them.
    const auto log_period = static_cast<float>(-std::log(10000.0));
    for (std::int64_t k = 0; k < half; ++k) {
      const float f = std::exp(log_period * static_cast<float>(k) / static_cast<float>(half));
      for (std::int64_t row = 0; row < n; ++row) {
        const float arg = t[row] * f;
        w.freq[static_cast<std::size_t>(row * 2 * half + k)] = std::cos(arg);
        w.freq[static_cast<std::size_t>(row * 2 * half + half + k)] = std::sin(arg);
      }
    }
    linear(w, w.freq.data(), n, weights_.t_fc1_weight, weights_.t_fc1_bias, w.temb.data());
    Map hidden(w.temb.data(), n, d);
    hidden = hidden.unaryExpr([](float v) { return silu(v); });
    linear(w, w.temb.data(), n, weights_.t_fc2_weight, weights_.t_fc2_bias, w.cond.data());
    Map cond(w.cond.data(), n, d);
    const ConstMap table = matrix(weights_.class_table);
    for (std::int64_t row = 0; row < n; ++row)
      cond.row(row) += table.row(labels[static_cast<std::size_t>(row)]);
    Map(w.silu.data(), n, d) = cond.unaryExpr([](float v) { return silu(v); });
  }

  /// Tokens (N*T, D) = patches x W^T + b + pos_embed: the stride-p convolution as a GEMM.
  void embed_patches(Workspace& w, ConstView x) const {
    const Config& c = config();
    const std::int64_t p = c.patch_size, g = c.grid(), t = c.tokens(), d = c.hidden_size;
    const std::int64_t patch_len = c.in_channels * p * p;
    for (std::int64_t n = 0; n < x.batch(); ++n)
      for (std::int64_t gy = 0; gy < g; ++gy)
        for (std::int64_t gx = 0; gx < g; ++gx) {
          float* patch = &w.patches[static_cast<std::size_t>(((n * g + gy) * g + gx) * patch_len)];
          for (std::int64_t ch = 0; ch < c.in_channels; ++ch) // kernel order (C, p, p)
            for (std::int64_t i = 0; i < p; ++i)
              for (std::int64_t j = 0; j < p; ++j)
                *patch++ = x.at(n, ch, gy * p + i, gx * p + j);
        }
    const std::int64_t rows = x.batch() * t;
    linear(w, w.patches.data(), rows, weights_.patch_weight, weights_.patch_bias, w.tokens.data());
    Map tokens(w.tokens.data(), rows, d);
    const ConstMap pos = matrix(weights_.pos_embed);
    for (std::int64_t n = 0; n < x.batch(); ++n)
      tokens.middleRows(n * t, t) += pos;
  }

  /// h = LayerNorm(x) * (1 + scale) + shift, per sample's shift/scale rows (eps 1e-6, no affine).
  void modulated_norm(Workspace& w, std::int64_t n, const float* shift, const float* scale,
                      std::int64_t mod_stride) const {
    const Config& c = config();
    const std::int64_t t = c.tokens(), d = c.hidden_size;
    const CpuIsa isa = cpu_isa();
    parallel_for(n * t, [&](std::int64_t row) {
      layernorm_modulate(isa, &w.tokens[static_cast<std::size_t>(row * d)],
                         shift + (row / t) * mod_stride, scale + (row / t) * mod_stride, d,
                         &w.h[static_cast<std::size_t>(row * d)]);
    });
  }

  void run_block(Workspace& w, const BlockWeights& b, std::int64_t n) const {
    const Config& c = config();
    const std::int64_t t = c.tokens(), d = c.hidden_size, rows = n * t;
    // adaLN modulation (N, 6D): shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp.
    linear(w, w.silu.data(), n, b.ada_weight, b.ada_bias, w.mod.data());
    const float* mod = w.mod.data();
    const std::int64_t stride = 6 * d;

    modulated_norm(w, n, mod, mod + d, stride);
    linear(w, w.h.data(), rows, b.qkv_weight, b.qkv_bias, w.qkv.data()); // (N*T, 3D)
    w.attention.run(w.qkv.data(), n, t, c.num_heads, c.head_dim(), w.attn.data());
    // tokens += gate_msa * proj(attn); w.h is free again and is the Eigen path's scratch.
    w.linear.run(w.attn.data(), rows, b.proj_weight, b.proj_bias, w.tokens.data(),
                 Epilogue::gated(mod + 2 * d, stride, t), w.h.data());

    modulated_norm(w, n, mod + 3 * d, mod + 4 * d, stride);
    w.linear.run(w.h.data(), rows, b.fc1_weight, b.fc1_bias, w.mlp.data(),
                 Epilogue{Epilogue::Kind::gelu_tanh}); // (N*T, 4D)
    w.linear.run(w.mlp.data(), rows, b.fc2_weight, b.fc2_bias, w.tokens.data(),
                 Epilogue::gated(mod + 5 * d, stride, t), w.h.data());
  }

  /// The final adaLN layer and linear projection to (N*T, p*p*out_channels).
  void final_layer(Workspace& w, std::int64_t n) const {
    const Config& c = config();
    const std::int64_t d = c.hidden_size;
    linear(w, w.silu.data(), n, weights_.final_ada_weight, weights_.final_ada_bias, w.mod.data());
    modulated_norm(w, n, w.mod.data(), w.mod.data() + d, 2 * d); // shift, scale
    linear(w, w.h.data(), n * c.tokens(), weights_.final_weight, weights_.final_bias, w.out.data());
  }

  /// Token (r, c) holds its p x p patch as [i][j][channel]; scatter back to (N, C', H, W).
  void unpatchify(const Workspace& w, View out) const {
    const Config& c = config();
    const std::int64_t p = c.patch_size, g = c.grid(), co = c.out_channels();
    for (std::int64_t n = 0; n < out.batch(); ++n)
      for (std::int64_t gy = 0; gy < g; ++gy)
        for (std::int64_t gx = 0; gx < g; ++gx) {
          const float* token =
              &w.out[static_cast<std::size_t>(((n * g + gy) * g + gx) * p * p * co)];
          for (std::int64_t i = 0; i < p; ++i)
            for (std::int64_t j = 0; j < p; ++j)
              for (std::int64_t ch = 0; ch < co; ++ch)
                out.at(n, ch, gy * p + i, gx * p + j) = token[(i * p + j) * co + ch];
        }
  }

  static float silu(float v) { return v / (1.0f + std::exp(-v)); }

  Weights weights_;
  std::string name_;
  bool batch_invariant_ = false;
  Gemm gemm_;
  int threads_ = 0;
  std::int64_t memory_limit_ = 0; // 0: physical memory
  BusyFlag busy_;
  ParallelFor executor_;
  std::vector<Workspace> batched_; // the batched forwards' (one, made at the first)
  std::vector<Workspace> slices_;  // the single-threaded slices', one per task
};

} // namespace tstitch::dit
