// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include <Eigen/Core>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "tstitch/core/cpu_isa.hpp"
#include "tstitch/core/error.hpp"
#include "tstitch/core/log.hpp"
#include "tstitch/models/dit/attention_fused.hpp"
#include "tstitch/models/dit/config.hpp"
#include "tstitch/models/dit/deterministic.hpp"
#include "tstitch/models/dit/gemm.hpp"
#include "tstitch/models/dit/parallel.hpp"

namespace tstitch::dit {

/// Multi-head self-attention softmax(q k^T / sqrt(head_dim)) v of the CPU DiT, from qkv
/// [samples, T, 3 D] laid out [q heads | k heads | v heads] per token (the qkv linear layer's
/// output) into out [samples, T, D] (heads side by side, the proj layer's input).
///
/// - Eigen: one (sample, head) pair per OpenMP task, its T x T scores in a per-thread buffer.
/// - oneDNN: a chunk of samples at a time, all their heads at once, as two batched matmuls reading
///   q, k and v where they lie (strided views of qkv) around oneDNN's softmax, the chunk's scores
///   in one buffer [samples, heads, T, T] of about 1 MiB. Heads of at most 32 on CPUs with AVX2
///   run in tstitch's fused kernel instead (uses_fused_kernel, attention_fused.hpp).
///
/// The scores buffer and the oneDNN primitives (one per chunk size) are built on the first call
/// and reused. Not thread-safe.
class SelfAttention {
public:
  explicit SelfAttention(Gemm gemm = default_gemm()) : gemm_(require_available(gemm)) {}

  [[nodiscard]] Gemm gemm() const { return gemm_; }
  /// Bytes of the scores buffer.
  [[nodiscard]] std::int64_t scratch_bytes() const {
    return static_cast<std::int64_t>(sizeof(float) * scores_.size());
  }

  void run(const float* qkv, std::int64_t samples, std::int64_t tokens, std::int64_t heads,
           std::int64_t head_dim, float* out) {
#ifdef TSTITCH_HAS_ONEDNN
    if (gemm_ == Gemm::onednn && uses_fused_kernel(tokens, head_dim)) {
      fused(qkv, samples, tokens, heads, head_dim, out);
      return;
    }
    if (gemm_ == Gemm::onednn) {
      onednn_.run(qkv, samples, tokens, heads, head_dim, out, scores_,
                  [&](const float* chunk_qkv, std::int64_t count, float* chunk_out) {
                    eigen(chunk_qkv, count, tokens, heads, head_dim, chunk_out);
                  });
      return;
    }
#endif
    eigen(qkv, samples, tokens, heads, head_dim, out);
  }

  /// The floats of scores run() sizes for this shape when it runs on `threads` threads (its
  /// omp_get_max_threads()), saturating at INT64_MAX: what CpuModel checks a forward's memory by
  /// before it allocates. oneDNN's own primitives' scratchpads are not counted.
  [[nodiscard]] static std::int64_t
  scratch_floats([[maybe_unused]] Gemm gemm, [[maybe_unused]] std::int64_t samples,
                 std::int64_t tokens, [[maybe_unused]] std::int64_t heads,
                 [[maybe_unused]] std::int64_t head_dim, int threads) {
#ifdef TSTITCH_HAS_ONEDNN
    if (gemm == Gemm::onednn && uses_fused_kernel(tokens, head_dim))
      return fused_floats(samples, tokens, head_dim, threads);
    // A chunk's scores, or Eigen's per-thread scores where oneDNN offers only reference kernels.
    if (gemm == Gemm::onednn)
      return std::max(OneDnn::scores_floats(samples, tokens, heads), eigen_floats(tokens, threads));
#endif
    return eigen_floats(tokens, threads);
  }

  /// What runs each shape seen so far, in the order first run. With Eigen, one entry for all.
  [[nodiscard]] std::vector<KernelChoice> kernels() const {
    if (gemm_ == Gemm::eigen)
      return {{"attention", "Eigen", false}};
    std::vector<KernelChoice> choices = fused_choices_;
#ifdef TSTITCH_HAS_ONEDNN
    const std::vector<KernelChoice> library = onednn_.kernels();
    choices.insert(choices.end(), library.begin(), library.end());
#endif
    return choices;
  }

  /// Whether the oneDNN path hands attention of this shape to tstitch's fused kernel
  /// (attention_fused.hpp): heads of at most 32 with at most 1024 tokens, where one (sample,
  /// head) pair's k, v and scores stay in L1 and the kernel beats oneDNN's three primitives
  /// (1.4-1.7x single-threaded on the Fashion DiTs' 64-token heads of 16 and 32), and only on
  /// AVX2 + FMA within tstitch's dispatch cap (cpu_isa()): its scalar path is a test reference,
  /// slower than oneDNN.
  [[nodiscard]] static bool uses_fused_kernel(std::int64_t tokens, std::int64_t head_dim) {
    return head_dim <= 32 && tokens <= 1024 && cpu_isa() == CpuIsa::avx2;
  }

private:
  using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using Map = Eigen::Map<Matrix>;
  using Strided = Eigen::Map<const Matrix, 0, Eigen::OuterStride<>>;
  using StridedOut = Eigen::Map<Matrix, 0, Eigen::OuterStride<>>;

  /// Floats of one thread's T x T scores in the Eigen path, padded to whole packets.
  static std::int64_t eigen_stride(std::int64_t t) {
    const std::int64_t square = saturating_mul(t, t);
    return square > std::numeric_limits<std::int64_t>::max() / 2 ? square : aligned_stride(square);
  }
  static std::int64_t eigen_floats(std::int64_t t, int threads) {
    return saturating_mul(threads, eigen_stride(t));
  }
  /// The fused kernel's scratch per thread, on at most one thread per sample.
  static std::int64_t fused_stride(std::int64_t t, std::int64_t hd) {
    return aligned_stride(fused_attention_scratch_floats(t, hd));
  }
  static std::int64_t fused_floats(std::int64_t samples, std::int64_t t, std::int64_t hd,
                                   int threads) {
    return saturating_mul(std::min<std::int64_t>(threads, samples), fused_stride(t, hd));
  }

  /// Grows the scores buffer to `floats` (never shrinks it: shapes share it).
  void reserve_scores(std::int64_t floats) {
    if (static_cast<std::int64_t>(scores_.size()) < floats)
      scores_.resize(static_cast<std::size_t>(floats));
  }

  void eigen(const float* qkv, std::int64_t samples, std::int64_t t, std::int64_t heads,
             std::int64_t hd, float* out) {
    const std::int64_t d = heads * hd;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    // Each thread's T x T scores start aligned, so that a (sample, head) pair's softmax rounds the
    // same on whichever thread it runs (deterministic.hpp).
    const std::int64_t per_thread = eigen_stride(t);
    reserve_scores(eigen_floats(t, threads));
    parallel_for(
        samples * heads,
        [&](std::int64_t job) {
          int thread = 0;
#ifdef _OPENMP
          thread = omp_get_thread_num();
#endif
          const std::int64_t sample = job / heads, head = job % heads;
          const SingleThreadedScope serial; // Eigen must not thread (and so block) a product itself
          const float* base = qkv + sample * t * 3 * d + head * hd;
          const Strided q(base, t, hd, Eigen::OuterStride<>(3 * d));
          const Strided k(base + d, t, hd, Eigen::OuterStride<>(3 * d));
          const Strided v(base + 2 * d, t, hd, Eigen::OuterStride<>(3 * d));
          Map scores(&scores_[static_cast<std::size_t>(thread * per_thread)], t, t);
          scores.noalias() = (q * k.transpose()) * scale;
          for (std::int64_t i = 0; i < t; ++i) {
            auto row = scores.row(i);
            const float top = row.maxCoeff();
            row = (row.array() - top).exp();
            row /= row.sum();
          }
          StridedOut o(out + sample * t * d + head * hd, t, hd, Eigen::OuterStride<>(d));
          o.noalias() = scores * v;
        },
        threads); // at most `threads` threads: one scores slice each
  }

  /// One sample at a time through the fused kernel, each thread with its own scratch.
  void fused(const float* qkv, std::int64_t samples, std::int64_t t, std::int64_t heads,
             std::int64_t hd, float* out) {
    int threads = 1;
#ifdef _OPENMP
    threads = static_cast<int>(std::min<std::int64_t>(omp_get_max_threads(), samples));
#endif
    const std::int64_t per_thread = fused_stride(t, hd);
    reserve_scores(fused_floats(samples, t, hd, threads));
    const auto key = std::make_tuple(samples, t, heads, hd);
    if (std::find(fused_shapes_.begin(), fused_shapes_.end(), key) == fused_shapes_.end()) {
      fused_shapes_.push_back(key);
      fused_choices_.push_back({detail::concat("attention over ", samples, " x ", heads,
                                               " heads of [", t, ", ", hd, "]"),
                                "tstitch fused kernel (avx2)", false});
      if (log_enabled(LogLevel::debug))
        log(LogLevel::debug, detail::concat("DiT ", fused_choices_.back().operation, ": ",
                                            fused_choices_.back().implementation));
    }
    parallel_for(
        samples,
        [&](std::int64_t n) {
          int thread = 0;
#ifdef _OPENMP
          thread = omp_get_thread_num();
#endif
          fused_attention(FusedAttentionPath::avx2, qkv, n, n + 1, t, heads, hd, out,
                          &scores_[static_cast<std::size_t>(thread * per_thread)]);
        },
        threads);
  }

#ifdef TSTITCH_HAS_ONEDNN
  /// scores = (q k^T) * scale as a matmul [samples, heads, T, hd] x [samples, heads, hd, T]
  /// (k^T is k's view with swapped strides), the softmax over the last axis in place, then
  /// out = scores v, [samples, heads, T, T] x [samples, heads, T, hd], written with out's strides.
  class OneDnn {
  public:
    /// Samples go through in chunks whose scores fit in about 1 MiB, so that they stay in cache
    /// between the three steps: a whole batch's scores would not (12.6 MB for DiT-S/2 at batch 8;
    /// measured 1.2x slower), and one sample per call is all overhead for small models (64
    /// tokens: 48 KB of scores per sample).
    static constexpr std::int64_t chunk_bytes = std::int64_t{1} << 20;

    /// Samples per chunk: as many as fit in chunk_bytes of scores, at least one.
    static std::int64_t chunk_samples(std::int64_t samples, std::int64_t t, std::int64_t heads) {
      const std::int64_t per_sample = saturating_mul(heads, saturating_mul(t, t));
      return std::clamp<std::int64_t>(
          chunk_bytes / saturating_mul(per_sample, static_cast<std::int64_t>(sizeof(float))), 1,
          samples);
    }
    /// Floats of one chunk's scores [chunk, heads, T, T].
    static std::int64_t scores_floats(std::int64_t samples, std::int64_t t, std::int64_t heads) {
      return saturating_mul(chunk_samples(samples, t, heads),
                            saturating_mul(heads, saturating_mul(t, t)));
    }

    /// `eigen(qkv, samples, out)` runs a chunk whose primitives would be reference kernels.
    template <class EigenChunk>
    void run(const float* qkv, std::int64_t samples, std::int64_t t, std::int64_t heads,
             std::int64_t hd, float* out, AlignedBuffer<float>& scores, EigenChunk&& eigen) {
      const std::int64_t chunk = chunk_samples(samples, t, heads);
      const std::int64_t floats = scores_floats(samples, t, heads);
      if (static_cast<std::int64_t>(scores.size()) < floats)
        scores.resize(static_cast<std::size_t>(floats));
      const std::int64_t d = heads * hd;
      for (std::int64_t first = 0; first < samples; first += chunk) {
        const std::int64_t count = std::min(chunk, samples - first);
        Entry& e = find(count, t, heads, hd);
        if (e.eigen) {
          eigen(qkv + first * t * 3 * d, count, out + first * t * d);
          continue;
        }
        auto* input = const_cast<float*>(qkv + first * t * 3 * d);
        e.q.set_data_handle(input);
        e.k.set_data_handle(input + d);
        e.v.set_data_handle(input + 2 * d);
        e.scores.set_data_handle(scores.data());
        e.out.set_data_handle(out + first * t * d);
        const auto describe = [&] {
          return detail::concat("attention ", shape(count, t, heads, hd));
        };
        const dnnl_exec_arg_t products[4] = {{DNNL_ARG_SRC, e.q.get()},
                                             {DNNL_ARG_WEIGHTS, e.k.get()},
                                             {DNNL_ARG_DST, e.scores.get()},
                                             {DNNL_ARG_SCRATCHPAD, e.scores_scratch.get()}};
        detail::execute(e.scores_product, stream_, products, 4, describe);
        const dnnl_exec_arg_t softmax[3] = {{DNNL_ARG_SRC, e.scores.get()},
                                            {DNNL_ARG_DST, e.scores.get()},
                                            {DNNL_ARG_SCRATCHPAD, e.softmax_scratch.get()}};
        detail::execute(e.softmax, stream_, softmax, 3, describe);
        const dnnl_exec_arg_t values[4] = {{DNNL_ARG_SRC, e.scores.get()},
                                           {DNNL_ARG_WEIGHTS, e.v.get()},
                                           {DNNL_ARG_DST, e.out.get()},
                                           {DNNL_ARG_SCRATCHPAD, e.value_scratch.get()}};
        detail::execute(e.value_product, stream_, values, 4, describe);
      }
    }

    [[nodiscard]] std::vector<KernelChoice> kernels() const {
      std::vector<KernelChoice> choices;
      for (const Key& key : order_)
        choices.push_back(entries_.at(key).choice);
      return choices;
    }

  private:
    using Key = std::tuple<std::int64_t, std::int64_t, std::int64_t, std::int64_t>;
    struct Entry {
      bool eigen = false; // one of the three primitives would be a reference kernel
      KernelChoice choice;
      dnnl::matmul scores_product, value_product;
      dnnl::softmax_forward softmax;
      dnnl::memory q, k, v, scores, out;
      // Each primitive's scratchpad, owned here (user mode, as the linear layers): nothing of a
      // workspace's primitives lives in oneDNN's per-thread state, whichever thread runs them.
      dnnl::memory scores_scratch, softmax_scratch, value_scratch;
    };

    static std::string shape(std::int64_t samples, std::int64_t t, std::int64_t heads,
                             std::int64_t hd) {
      return detail::concat("over ", samples, " x ", heads, " heads of [", t, ", ", hd, "]");
    }

    Entry& find(std::int64_t samples, std::int64_t t, std::int64_t heads, std::int64_t hd) {
      const Key key{samples, t, heads, hd};
      auto it = entries_.find(key);
      if (it != entries_.end())
        return it->second;
      Entry& e = entries_.emplace(key, create(samples, t, heads, hd)).first->second;
      order_.push_back(key);
      e.choice.operation = detail::concat("attention ", shape(samples, t, heads, hd));
      if (log_enabled(LogLevel::debug))
        log(LogLevel::debug,
            detail::concat("DiT ", e.choice.operation, ": ", e.choice.implementation));
      return e;
    }

    Entry create(std::int64_t samples, std::int64_t t, std::int64_t heads, std::int64_t hd) {
      using dims = dnnl::memory::dims;
      using tag = dnnl::memory::format_tag;
      constexpr auto f32 = dnnl::memory::data_type::f32;
      const std::int64_t d = heads * hd;
      const dims shape_of_heads{samples, heads, t, hd};
      const dnnl::memory::desc q(shape_of_heads, f32, dims{t * 3 * d, hd, 3 * d, 1});
      const dnnl::memory::desc k_transposed(dims{samples, heads, hd, t}, f32,
                                            dims{t * 3 * d, hd, 1, 3 * d});
      const dnnl::memory::desc v(shape_of_heads, f32, dims{t * 3 * d, hd, 3 * d, 1});
      const dnnl::memory::desc s(dims{samples, heads, t, t}, f32, tag::abcd);
      const dnnl::memory::desc o(shape_of_heads, f32, dims{t * d, hd, d, 1});
      Entry e;
      try {
        // Two attributes: a copy of a primitive_attr shares the underlying one.
        dnnl::primitive_attr user_scratch, scaled;
        user_scratch.set_scratchpad_mode(dnnl::scratchpad_mode::user);
        scaled.set_scratchpad_mode(dnnl::scratchpad_mode::user);
        scaled.set_output_scales(0, {1.0f / std::sqrt(static_cast<float>(hd))});
        const dnnl::matmul::primitive_desc scores_pd(dnnl::matmul::desc(q, k_transposed, s), scaled,
                                                     engine_);
        const dnnl::softmax_forward::primitive_desc softmax_pd(
            dnnl::softmax_forward::desc(dnnl::prop_kind::forward_inference, s, 3), user_scratch,
            engine_);
        const dnnl::matmul::primitive_desc value_pd(dnnl::matmul::desc(s, v, o), user_scratch,
                                                    engine_);
        const std::string kernels[3] = {scores_pd.impl_info_str(), softmax_pd.impl_info_str(),
                                        value_pd.impl_info_str()};
        const std::string described =
            detail::concat("q k^T ", kernels[0], ", softmax ", kernels[1], ", p v ", kernels[2]);
        if (std::any_of(std::begin(kernels), std::end(kernels), detail::is_reference_kernel)) {
          e.eigen = true;
          e.choice.implementation = detail::concat("Eigen (oneDNN offered ", described, ")");
          return e;
        }
        e.choice.implementation = "oneDNN " + described;
        e.scores_product = dnnl::matmul(scores_pd);
        e.softmax = dnnl::softmax_forward(softmax_pd);
        e.value_product = dnnl::matmul(value_pd);
        e.scores_scratch = dnnl::memory(scores_pd.scratchpad_desc(), engine_);
        e.softmax_scratch = dnnl::memory(softmax_pd.scratchpad_desc(), engine_);
        e.value_scratch = dnnl::memory(value_pd.scratchpad_desc(), engine_);
      } catch (const dnnl::error& failure) {
        throw runtime_error(detail::concat("oneDNN could not create the attention primitives ",
                                           shape(samples, t, heads, hd), ": ", failure.what()));
      }
      e.q = dnnl::memory(q, engine_, nullptr);
      e.k = dnnl::memory(k_transposed, engine_, nullptr);
      e.v = dnnl::memory(v, engine_, nullptr);
      e.scores = dnnl::memory(s, engine_, nullptr);
      e.out = dnnl::memory(o, engine_, nullptr);
      return e;
    }

    dnnl::engine engine_{dnnl::engine::kind::cpu, 0};
    dnnl::stream stream_{engine_};
    std::map<Key, Entry> entries_;
    std::vector<Key> order_; // the keys in the order they were first run
  };
  OneDnn onednn_;
#endif

  Gemm gemm_;
  AlignedBuffer<float> scores_;
  std::vector<std::tuple<std::int64_t, std::int64_t, std::int64_t, std::int64_t>> fused_shapes_;
  std::vector<KernelChoice> fused_choices_;
};

} // namespace tstitch::dit
