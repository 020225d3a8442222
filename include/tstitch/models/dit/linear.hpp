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

  /// What runs each (shape, epilogue) seen so far, in the order they were first run. With Eigen,
  /// one entry for all.
  [[nodiscard]] std::vector<KernelChoice> kernels() const {
#ifdef TSTITCH_HAS_ONEDNN
    if (gemm_ == Gemm::onednn)
      return onednn_.kernels();
#endif
    return {{"linear layers", "Eigen", false}};
  }

  /// `out` must not alias `x`. For gated_residual, rows is a multiple of rows_per_sample and `out`
  /// holds the residual stream it adds to; `scratch` (rows x out floats) is used by the Eigen path.
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
  /// oneDNN matmul primitives, one per (shape, epilogue) and shared by every block of that shape.
  /// The memory objects are created with the primitive and re-pointed per call (set_data_handle),
  /// so a call allocates nothing on tstitch's side (oneDNN's own bookkeeping may).
  ///
  /// Each (shape, epilogue) runs in the first of three forms that has a JIT kernel on this CPU,
  /// never in one of oneDNN's reference kernels (a reference matmul takes seconds where a JIT one
  /// takes microseconds). oneDNN 2.6 fuses the gated residual's per-sample gate only in its
  /// AVX-512 "brgemm" matmul, for one.
  ///   1. fused: one matmul with the epilogue as post-ops;
  ///   2. plain: a matmul with the bias only, then tstitch's own epilogue pass;
  ///   3. Eigen, then tstitch's epilogue (run() returns false and the caller runs it).
  class OneDnn {
  public:
    /// Returns false when this shape is left to Eigen (form 3).
    bool run(const float* x, std::int64_t rows, const Param& weight, const Param& bias, float* out,
             const Epilogue& e, float* scratch) {
      Entry& entry = find(rows, weight.cols, weight.rows, e);
      if (entry.form == Form::eigen)
        return false;
      const bool gated = e.kind == Epilogue::Kind::gated_residual;
      float* y = entry.form == Form::plain && gated ? require_scratch(scratch) : out;
      entry.src.set_data_handle(const_cast<float*>(x));
      entry.weights.set_data_handle(const_cast<float*>(weight.data));
      entry.bias.set_data_handle(const_cast<float*>(bias.data));
      entry.dst.set_data_handle(y);
      dnnl_exec_arg_t args[6] = {{DNNL_ARG_SRC, entry.src.get()},
                                 {DNNL_ARG_WEIGHTS, entry.weights.get()},
                                 {DNNL_ARG_BIAS, entry.bias.get()},
                                 {DNNL_ARG_DST, entry.dst.get()},
                                 {DNNL_ARG_SCRATCHPAD, entry.scratchpad.get()},
                                 {}};
      int count = 5;
      if (entry.form == Form::fused && gated) {
        const std::int64_t out_cols = weight.rows;
        for (std::size_t sample = 0; sample * out_cols < entry.gate_rows.size(); ++sample)
          std::copy_n(e.gate + static_cast<std::int64_t>(sample) * e.gate_stride, out_cols,
                      entry.gate_rows.begin() + static_cast<std::ptrdiff_t>(sample * out_cols));
        entry.gate.set_data_handle(entry.gate_rows.data());
        args[count++] = {DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, entry.gate.get()};
      }
      detail::execute(entry.primitive, stream_, args, count,
                      [&] { return detail::concat("matmul ", describe(rows, weight, e)); });
      if (entry.form == Form::plain)
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
    enum class Form { fused, plain, eigen };
    struct Entry {
      Form form = Form::fused;
      KernelChoice choice;
      dnnl::matmul primitive;
      dnnl::memory src, weights, bias, dst, gate, scratchpad;
      // The gates, one row per sample, packed: oneDNN 2.6 reads a binary post-op's input as
      // dense whatever strides its descriptor gives (the DiT's gates are 6 D apart), so a strided
      // view gives wrong sums without an error; the tests catch exactly that.
      std::vector<float> gate_rows;
    };
    using Key = std::tuple<std::int64_t, std::int64_t, std::int64_t, Epilogue::Kind, std::int64_t>;

    static const char* epilogue_name(Epilogue::Kind kind) {
      return kind == Epilogue::Kind::gelu_tanh        ? "GELU"
             : kind == Epilogue::Kind::gated_residual ? "gated residual"
                                                      : "";
    }

    static std::string describe(std::int64_t rows, const Param& weight, const Epilogue& e) {
      std::string text = detail::concat("[", rows, ", ", weight.cols, "] x [", weight.rows, ", ",
                                        weight.cols, "]^T");
      if (e.kind == Epilogue::Kind::gelu_tanh)
        text += " + GELU";
      else if (e.kind == Epilogue::Kind::gated_residual)
        text += detail::concat(" gated residual (", rows / e.rows_per_sample, " samples)");
      return text;
    }

    Entry& find(std::int64_t rows, std::int64_t in, std::int64_t out, const Epilogue& e) {
      const bool gated = e.kind == Epilogue::Kind::gated_residual;
      const Key key{rows, in, out, e.kind, gated ? e.rows_per_sample : 0};
      if (auto it = entries_.find(key); it != entries_.end())
        return it->second;
      const std::string operation =
          detail::concat("linear ", describe(rows, Param{nullptr, out, in}, e));
      try {
        Entry& entry = entries_.emplace(key, create(rows, in, out, e)).first->second;
        order_.push_back(key);
        entry.choice.operation = operation;
        if (log_enabled(LogLevel::debug))
          log(LogLevel::debug, detail::concat("DiT ", operation, ": ",
                                              entry.choice.implementation));
        return entry;
      } catch (const dnnl::error& failure) {
        throw runtime_error(detail::concat("oneDNN could not create a matmul for ", operation,
                                           ": ", failure.what()));
      }
    }

    /// The first form with a JIT kernel: fused, plain, else Eigen.
    Entry create(std::int64_t rows, std::int64_t in, std::int64_t out, const Epilogue& e) {
      std::string refused;
      for (const Form form : {Form::fused, Form::plain}) {
        if (form == Form::plain && e.kind == Epilogue::Kind::store)
          break; // a plain matmul is the fused form of a store
        const dnnl::matmul::primitive_desc pd = describe_matmul(rows, in, out, e, form);
        const std::string impl = pd.impl_info_str();
        if (detail::is_reference_kernel(impl)) {
          refused += detail::concat(refused.empty() ? "" : ", ", impl, " for the ",
                                    form == Form::fused ? "fused" : "plain", " form");
          continue;
        }
        Entry entry = instantiate(pd, rows, out, e, form);
        entry.choice.implementation =
            form == Form::fused || e.kind == Epilogue::Kind::store
                ? detail::concat("oneDNN ", impl,
                                 e.kind == Epilogue::Kind::store ? "" : ", fused epilogue")
                : detail::concat("oneDNN ", impl, " + tstitch ", epilogue_name(e.kind));
        if (!refused.empty())
          entry.choice.implementation += detail::concat(" (oneDNN offered ", refused, ")");
        return entry;
      }
      Entry entry;
      entry.form = Form::eigen;
      entry.choice.implementation =
          detail::concat("Eigen", e.kind == Epilogue::Kind::store ? "" : " + tstitch ",
                         epilogue_name(e.kind), " (oneDNN offered ", refused, ")");
      return entry;
    }

    /// x [rows, in] . W^T, W [out, in] row-major = a [in, out] matrix in "ba" order. The fused
    /// gated residual runs as a batch of samples, [samples, T, in] . [1, in, out], so that its
    /// gate [samples, 1, out] broadcasts over the T rows; its post-ops are gate * y, then + out.
    /// The plain form has the bias only.
    dnnl::matmul::primitive_desc describe_matmul(std::int64_t rows, std::int64_t in,
                                                 std::int64_t out, const Epilogue& e,
                                                 Form form) const {
      using dims = dnnl::memory::dims;
      using tag = dnnl::memory::format_tag;
      constexpr auto f32 = dnnl::memory::data_type::f32;
      dnnl::post_ops post_ops;
      dnnl::memory::desc src, weights, bias, dst;
      if (form == Form::fused && e.kind == Epilogue::Kind::gated_residual) {
        const std::int64_t samples = rows / e.rows_per_sample, t = e.rows_per_sample;
        src = dnnl::memory::desc(dims{samples, t, in}, f32, tag::abc);
        weights = dnnl::memory::desc(dims{1, in, out}, f32, dims{in * out, 1, in});
        bias = dnnl::memory::desc(dims{1, 1, out}, f32, tag::abc);
        dst = dnnl::memory::desc(dims{samples, t, out}, f32, tag::abc);
        post_ops.append_binary(dnnl::algorithm::binary_mul,
                               dnnl::memory::desc(dims{samples, 1, out}, f32, tag::abc));
        post_ops.append_sum(1.0f);
      } else {
        src = dnnl::memory::desc(dims{rows, in}, f32, tag::ab);
        weights = dnnl::memory::desc(dims{in, out}, f32, tag::ba);
        bias = dnnl::memory::desc(dims{1, out}, f32, tag::ab);
        dst = dnnl::memory::desc(dims{rows, out}, f32, tag::ab);
        if (form == Form::fused && e.kind == Epilogue::Kind::gelu_tanh)
          post_ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_gelu_tanh, 0.0f, 0.0f);
      }
      dnnl::primitive_attr attr;
      attr.set_post_ops(post_ops);
      attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
      return {dnnl::matmul::desc(src, weights, bias, dst), attr, engine_};
    }

    Entry instantiate(const dnnl::matmul::primitive_desc& pd, std::int64_t rows, std::int64_t out,
                      const Epilogue& e, Form form) const {
      Entry entry;
      entry.form = form;
      entry.primitive = dnnl::matmul(pd);
      entry.src = dnnl::memory(pd.src_desc(), engine_, nullptr);
      entry.weights = dnnl::memory(pd.weights_desc(), engine_, nullptr);
      entry.bias = dnnl::memory(pd.bias_desc(), engine_, nullptr);
      entry.dst = dnnl::memory(pd.dst_desc(), engine_, nullptr);
      if (form == Form::fused && e.kind == Epilogue::Kind::gated_residual) {
        const std::int64_t samples = rows / e.rows_per_sample;
        entry.gate = dnnl::memory({{samples, 1, out}, dnnl::memory::data_type::f32,
                                   dnnl::memory::format_tag::abc},
                                  engine_, nullptr);
        entry.gate_rows.resize(static_cast<std::size_t>(samples * out));
      }
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
