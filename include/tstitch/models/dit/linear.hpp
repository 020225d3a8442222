// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include <Eigen/Core>

#include "tstitch/core/error.hpp"
#include "tstitch/core/log.hpp"
#include "tstitch/models/dit/deterministic.hpp"
#include "tstitch/models/dit/gemm.hpp"
#include "tstitch/models/dit/parallel.hpp"
#include "tstitch/models/dit/weights.hpp"

namespace tstitch::dit {

/// What a linear layer does with y = x W^T + b before it stores it.
struct Epilogue {
  enum class Kind {
    store,         // out = y
    gelu_tanh,     // out = GELU(y), tanh approximation
    gated_residual // out += gate * y, with one gate row per sample (DiT's gated residuals)
  };
  Kind kind = Kind::store;
  const float* gate = nullptr;      // gated_residual: the first sample's gate row
  std::int64_t gate_stride = 0;     // floats from one sample's gate row to the next
  std::int64_t rows_per_sample = 1; // rows of x (tokens) that share a gate row

  static Epilogue gated(const float* gate, std::int64_t gate_stride, std::int64_t rows_per_sample) {
    return {Kind::gated_residual, gate, gate_stride, rows_per_sample};
  }
};

/// The linear layers of the CPU DiT: out = epilogue(x W^T + b) for x [rows, in] row-major,
/// W [out, in] and b [out] as stored in the checkpoint. One object per model; not thread-safe (a
/// model runs one forward at a time). oneDNN primitives are built on the first call with a shape
/// and reused.
class LinearLayers {
public:
  explicit LinearLayers(Gemm gemm = default_gemm()) : gemm_(require_available(gemm)) {}

  [[nodiscard]] Gemm gemm() const { return gemm_; }

  /// What runs each shape seen so far, in the order first run. With Eigen, one entry for all.
  [[nodiscard]] std::vector<KernelChoice> kernels() const {
#ifdef TSTITCH_HAS_ONEDNN
    if (gemm_ == Gemm::onednn)
      return onednn_.kernels();
#endif
    return {{"linear layers", "Eigen", false}};
  }

  /// `out` must not alias `x`. For gated_residual, rows is a multiple of rows_per_sample and `out`
  /// holds the residual stream it adds to, and `scratch` (rows x out floats) holds x W^T + b.
  void run(const float* x, std::int64_t rows, const Param& weight, const Param& bias, float* out,
           const Epilogue& epilogue, float* scratch = nullptr) {
    if (epilogue.kind == Epilogue::Kind::gated_residual &&
        (epilogue.rows_per_sample <= 0 || rows % epilogue.rows_per_sample != 0))
      throw invalid_argument(detail::concat(
          "LinearLayers::run: rows = ", rows,
          " is not a whole number of samples of rows_per_sample = ", epilogue.rows_per_sample));
#ifdef TSTITCH_HAS_ONEDNN
    if (gemm_ == Gemm::onednn && onednn_.run(x, rows, weight, bias, out, epilogue, scratch))
      return;
#endif
    run_eigen(x, rows, weight, bias, out, epilogue, scratch);
  }

private:
  using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using Map = Eigen::Map<Matrix>;
  using ConstMap = Eigen::Map<const Matrix>;
  using Vector = Eigen::Matrix<float, 1, Eigen::Dynamic, Eigen::RowMajor>;
  using ConstVectorMap = Eigen::Map<const Vector>;

  static void run_eigen(const float* x, std::int64_t rows, const Param& weight, const Param& bias,
                        float* out, const Epilogue& epilogue, float* scratch) {
    if (epilogue.kind == Epilogue::Kind::gated_residual) {
      eigen_linear(x, rows, weight, bias, require_scratch(scratch));
    } else {
      eigen_linear(x, rows, weight, bias, out);
    }
    apply_epilogue(rows, weight.rows, epilogue, scratch, out);
  }

  static float* require_scratch(float* scratch) {
    if (scratch == nullptr)
      throw invalid_argument("LinearLayers::run: a gated residual computed apart from its GEMM "
                             "needs a scratch buffer of rows x out floats");
    return scratch;
  }

  /// The epilogue as a pass of its own over y = x W^T + b, which lies in `out` (store, GELU) or
  /// in `scratch` (gated residual).
  static void apply_epilogue(std::int64_t rows, std::int64_t cols, const Epilogue& epilogue,
                             const float* scratch, float* out) {
    if (epilogue.kind == Epilogue::Kind::gelu_tanh)
      gelu_tanh(Map(out, rows, cols));
    else if (epilogue.kind == Epilogue::Kind::gated_residual)
      gated_residual(scratch, rows, cols, epilogue, out);
  }

  /// GELU, tanh approximation, in place; Eigen's vectorised tanh (a few ulp) keeps this from
  /// costing as much as the GEMM around it.
  static void gelu_tanh(Map values) {
    constexpr float k = 0.7978845608028654f; // sqrt(2 / pi)
    constexpr std::int64_t block = 64;       // rows per task
    const std::int64_t rows = values.rows();
    parallel_for((rows + block - 1) / block, [&](std::int64_t index) {
      const std::int64_t first = index * block;
      auto v = values.middleRows(first, std::min(block, rows - first)).array();
      v = 0.5f * v * (1.0f + (k * (v + 0.044715f * v.cube())).tanh());
    });
  }

  /// y = x W^T + b, in tiles of 64 output columns, each a single-threaded GEMM on its rows of W
  /// (with OpenMP the tiles are shared among the threads): at DiT's sizes (a few hundred rows)
  /// this scales better than Eigen's own parallel GEMM, and the bias is added while the tile is in
  /// cache. The tiles are the same for any thread count because Eigen's result for a column
  /// depends on the width of the GEMM it is computed in (with AVX-512, columns past the last
  /// whole 16 go through other kernels), and the bits must not depend on the thread count.
  static void eigen_linear(const float* x, std::int64_t rows, const Param& weight,
                           const Param& bias, float* y) {
    constexpr std::int64_t tile = 64;
    const ConstMap in(x, rows, weight.cols);
    Map result(y, rows, weight.rows);
    const ConstMap w(weight.data, weight.rows, weight.cols);
    const ConstVectorMap b(bias.data, bias.cols);
    const std::int64_t tiles = (weight.rows + tile - 1) / tile;
    // Below ~1 MMAC per thread the fork costs more than it saves.
    const bool threaded = tiles > 1 && rows * weight.rows * weight.cols >= (std::int64_t{1} << 21);
    parallel_for(
        tiles,
        [&](std::int64_t index) {
          const std::int64_t first = index * tile, count = std::min(tile, weight.rows - first);
          const SingleThreadedScope serial; // Eigen must not thread (and so block) a tile itself
          auto slice = result.middleCols(first, count);
          slice.noalias() = in * w.middleRows(first, count).transpose();
          slice.rowwise() += b.segment(first, count);
        },
        threaded ? 0 : 1);
  }

  /// out += gate * y, each sample's rows with that sample's gate row.
  static void gated_residual(const float* y, std::int64_t rows, std::int64_t cols,
                             const Epilogue& e, float* out) {
    parallel_for(rows, [&](std::int64_t row) {
      const float* g = e.gate + (row / e.rows_per_sample) * e.gate_stride;
      const float* in = y + row * cols;
      float* o = out + row * cols;
      for (std::int64_t k = 0; k < cols; ++k)
        o[k] += g[k] * in[k];
    });
  }

#ifdef TSTITCH_HAS_ONEDNN
  /// oneDNN matmul primitives with the bias, one per shape and shared by every block of that
  /// shape, followed by tstitch's own epilogue pass (GELU, gated residual). The memory objects are
  /// created with the primitive and re-pointed per call (set_data_handle), so a call allocates
  /// nothing on tstitch's side (oneDNN's own bookkeeping may).
  ///
  /// The epilogues are not oneDNN post-ops: its gemm-based matmul (all it has below AVX-512)
  /// runs them as a slow pass of its own (DiT's fc1 with GELU at AVX2: 2.9 ms against 0.7 ms
  /// without), and it fuses the gated residual's per-sample gate nowhere but in its AVX-512
  /// brgemm kernels, falling back to a reference kernel that takes seconds. Fused brgemm was no
  /// faster than the separate pass on the Fashion DiTs or DiT-S/2 either
  /// (benchmarks/results/2026-12-07-cpu-amd-epyc.md). A shape whose matmul would still be a
  /// reference kernel runs in Eigen (run() returns false).
  class OneDnn {
  public:
    /// Returns false when this shape is left to Eigen.
    bool run(const float* x, std::int64_t rows, const Param& weight, const Param& bias, float* out,
             const Epilogue& e, float* scratch) {
      Entry& entry = find(rows, weight.cols, weight.rows);
      if (entry.eigen)
        return false;
      float* y = e.kind == Epilogue::Kind::gated_residual ? require_scratch(scratch) : out;
      entry.src.set_data_handle(const_cast<float*>(x));
      entry.weights.set_data_handle(const_cast<float*>(weight.data));
      entry.bias.set_data_handle(const_cast<float*>(bias.data));
      entry.dst.set_data_handle(y);
      const dnnl_exec_arg_t args[5] = {{DNNL_ARG_SRC, entry.src.get()},
                                       {DNNL_ARG_WEIGHTS, entry.weights.get()},
                                       {DNNL_ARG_BIAS, entry.bias.get()},
                                       {DNNL_ARG_DST, entry.dst.get()},
                                       {DNNL_ARG_SCRATCHPAD, entry.scratchpad.get()}};
      detail::execute(entry.primitive, stream_, args, 5,
                      [&] { return detail::concat("matmul ", describe(rows, weight)); });
      apply_epilogue(rows, weight.rows, e, y, out);
      return true;
    }

    [[nodiscard]] std::vector<KernelChoice> kernels() const {
      std::vector<KernelChoice> choices;
      choices.reserve(order_.size());
      for (const Key& key : order_)
        choices.push_back(entries_.at(key).choice);
      return choices;
    }

  private:
    struct Entry {
      bool eigen = false; // oneDNN has only a reference kernel for this shape
      KernelChoice choice;
      dnnl::matmul primitive;
      dnnl::memory src, weights, bias, dst, scratchpad;
    };
    using Key = std::tuple<std::int64_t, std::int64_t, std::int64_t>;

    static std::string describe(std::int64_t rows, const Param& weight) {
      return detail::concat("[", rows, ", ", weight.cols, "] x [", weight.rows, ", ", weight.cols,
                            "]^T + bias");
    }

    Entry& find(std::int64_t rows, std::int64_t in, std::int64_t out) {
      const Key key{rows, in, out};
      if (auto it = entries_.find(key); it != entries_.end())
        return it->second;
      const std::string operation = "linear " + describe(rows, Param{nullptr, out, in});
      try {
        Entry& entry = entries_.emplace(key, create(rows, in, out)).first->second;
        order_.push_back(key);
        entry.choice.operation = operation;
        if (log_enabled(LogLevel::debug))
          log(LogLevel::debug,
              detail::concat("DiT ", operation, ": ", entry.choice.implementation));
        return entry;
      } catch (const dnnl::error& failure) {
        throw runtime_error(detail::concat("oneDNN could not create a matmul for ", operation, ": ",
                                           failure.what()));
      }
    }

    /// x [rows, in] . W^T + b, W [out, in] row-major = a [in, out] matrix in "ba" order.
    Entry create(std::int64_t rows, std::int64_t in, std::int64_t out) const {
      using dims = dnnl::memory::dims;
      using tag = dnnl::memory::format_tag;
      constexpr auto f32 = dnnl::memory::data_type::f32;
      const dnnl::memory::desc src(dims{rows, in}, f32, tag::ab),
          weights(dims{in, out}, f32, tag::ba), bias(dims{1, out}, f32, tag::ab),
          dst(dims{rows, out}, f32, tag::ab);
      dnnl::primitive_attr attr;
      attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
      const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, weights, bias, dst), attr,
                                            engine_);
      Entry entry;
      const std::string impl = pd.impl_info_str();
      if (detail::is_reference_kernel(impl)) {
        entry.eigen = true;
        entry.choice.implementation = "Eigen (oneDNN offered only " + impl + ")";
        return entry;
      }
      entry.choice.implementation = "oneDNN " + impl;
      entry.primitive = dnnl::matmul(pd);
      entry.src = dnnl::memory(src, engine_, nullptr);
      entry.weights = dnnl::memory(weights, engine_, nullptr);
      entry.bias = dnnl::memory(bias, engine_, nullptr);
      entry.dst = dnnl::memory(dst, engine_, nullptr);
      entry.scratchpad = dnnl::memory(pd.scratchpad_desc(), engine_); // owns its buffer
      return entry;
    }

    dnnl::engine engine_{dnnl::engine::kind::cpu, 0};
    dnnl::stream stream_{engine_};
    std::map<Key, Entry> entries_;
    std::vector<Key> order_; // the keys in the order they were first run
  };
  OneDnn onednn_;
#endif

  Gemm gemm_;
};

} // namespace tstitch::dit
