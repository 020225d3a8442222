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
    if (gemm_ == Gemm::onednn) {
      onednn_.run(x, rows, weight, bias, out, epilogue);
      return;
    }
#endif
    switch (epilogue.kind) {
    case Epilogue::Kind::store:
      eigen_linear(x, rows, weight, bias, out);
      break;
    case Epilogue::Kind::gelu_tanh:
      eigen_linear(x, rows, weight, bias, out);
      gelu_tanh(Map(out, rows, weight.rows));
      break;
    case Epilogue::Kind::gated_residual:
      if (scratch == nullptr)
        throw invalid_argument(
            "LinearLayers::run: the Eigen gated residual needs a scratch buffer");
      eigen_linear(x, rows, weight, bias, scratch);
      gated_residual(scratch, rows, weight.rows, epilogue, out);
      break;
    }
  }

private:
  using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using Map = Eigen::Map<Matrix>;
  using ConstMap = Eigen::Map<const Matrix>;
  using Vector = Eigen::Matrix<float, 1, Eigen::Dynamic, Eigen::RowMajor>;
  using ConstVectorMap = Eigen::Map<const Vector>;

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
  class OneDnn {
  public:
    void run(const float* x, std::int64_t rows, const Param& weight, const Param& bias, float* out,
             const Epilogue& e) {
      Entry& entry = find(rows, weight.cols, weight.rows, e);
      entry.src.set_data_handle(const_cast<float*>(x));
      entry.weights.set_data_handle(const_cast<float*>(weight.data));
      entry.bias.set_data_handle(const_cast<float*>(bias.data));
      entry.dst.set_data_handle(out);
      dnnl_exec_arg_t args[6] = {{DNNL_ARG_SRC, entry.src.get()},
                                 {DNNL_ARG_WEIGHTS, entry.weights.get()},
                                 {DNNL_ARG_BIAS, entry.bias.get()},
                                 {DNNL_ARG_DST, entry.dst.get()},
                                 {DNNL_ARG_SCRATCHPAD, entry.scratchpad.get()},
                                 {}};
      int count = 5;
      if (e.kind == Epilogue::Kind::gated_residual) {
        const std::int64_t out_cols = weight.rows;
        for (std::size_t sample = 0; sample * out_cols < entry.gate_rows.size(); ++sample)
          std::copy_n(e.gate + static_cast<std::int64_t>(sample) * e.gate_stride, out_cols,
                      entry.gate_rows.begin() + static_cast<std::ptrdiff_t>(sample * out_cols));
        entry.gate.set_data_handle(entry.gate_rows.data());
        args[count++] = {DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, entry.gate.get()};
      }
      detail::execute(entry.primitive, stream_, args, count,
                      [&] { return detail::concat("matmul ", describe(rows, weight, e)); });
    }

  private:
    struct Entry {
      dnnl::matmul primitive;
      dnnl::memory src, weights, bias, dst, gate, scratchpad;
      // The gates, one row per sample, packed: oneDNN 2.6 reads a binary post-op's input as
      // dense whatever strides its descriptor gives (the DiT's gates are 6 D apart), so a strided
      // view gives wrong sums without an error; the tests catch exactly that.
      std::vector<float> gate_rows;
    };
    using Key = std::tuple<std::int64_t, std::int64_t, std::int64_t, Epilogue::Kind, std::int64_t>;

    static std::string describe(std::int64_t rows, const Param& weight, const Epilogue& e) {
      const char* epilogue = e.kind == Epilogue::Kind::gelu_tanh        ? " + GELU"
                             : e.kind == Epilogue::Kind::gated_residual ? " gated residual"
                                                                        : "";
      return detail::concat("[", rows, ", ", weight.cols, "] x [", weight.rows, ", ", weight.cols,
                            "]^T", epilogue);
    }

    Entry& find(std::int64_t rows, std::int64_t in, std::int64_t out, const Epilogue& e) {
      const bool gated = e.kind == Epilogue::Kind::gated_residual;
      const Key key{rows, in, out, e.kind, gated ? e.rows_per_sample : 0};
      if (auto it = entries_.find(key); it != entries_.end())
        return it->second;
      try {
        return entries_.emplace(key, create(rows, in, out, e)).first->second;
      } catch (const dnnl::error& failure) {
        throw runtime_error(detail::concat("oneDNN could not create a matmul for ",
                                           describe(rows, Param{nullptr, out, in}, e), ": ",
                                           failure.what()));
      }
    }

    /// x [rows, in] . W^T, W [out, in] row-major = a [in, out] matrix in "ba" order. The gated
    /// residual runs as a batch of samples, [samples, T, in] . [1, in, out], so that its gate
    /// [samples, 1, out] broadcasts over the T rows; its post-ops are gate * y, then + out.
    Entry create(std::int64_t rows, std::int64_t in, std::int64_t out, const Epilogue& e) {
      using dims = dnnl::memory::dims;
      using tag = dnnl::memory::format_tag;
      constexpr auto f32 = dnnl::memory::data_type::f32;
      dnnl::post_ops post_ops;
      dnnl::memory::desc src, weights, bias, dst, gate;
      if (e.kind == Epilogue::Kind::gated_residual) {
        const std::int64_t samples = rows / e.rows_per_sample, t = e.rows_per_sample;
        src = dnnl::memory::desc(dims{samples, t, in}, f32, tag::abc);
        weights = dnnl::memory::desc(dims{1, in, out}, f32, dims{in * out, 1, in});
        bias = dnnl::memory::desc(dims{1, 1, out}, f32, tag::abc);
        dst = dnnl::memory::desc(dims{samples, t, out}, f32, tag::abc);
        gate = dnnl::memory::desc(dims{samples, 1, out}, f32, tag::abc);
        post_ops.append_binary(dnnl::algorithm::binary_mul, gate);
        post_ops.append_sum(1.0f);
      } else {
        src = dnnl::memory::desc(dims{rows, in}, f32, tag::ab);
        weights = dnnl::memory::desc(dims{in, out}, f32, tag::ba);
        bias = dnnl::memory::desc(dims{1, out}, f32, tag::ab);
        dst = dnnl::memory::desc(dims{rows, out}, f32, tag::ab);
        if (e.kind == Epilogue::Kind::gelu_tanh)
          post_ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_gelu_tanh, 0.0f, 0.0f);
      }
      dnnl::primitive_attr attr;
      attr.set_post_ops(post_ops);
      attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
      const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, weights, bias, dst), attr,
                                            engine_);
      Entry entry;
      entry.primitive = dnnl::matmul(pd);
      entry.src = dnnl::memory(src, engine_, nullptr);
      entry.weights = dnnl::memory(weights, engine_, nullptr);
      entry.bias = dnnl::memory(bias, engine_, nullptr);
      entry.dst = dnnl::memory(dst, engine_, nullptr);
      if (e.kind == Epilogue::Kind::gated_residual) {
        entry.gate = dnnl::memory(gate, engine_, nullptr);
        entry.gate_rows.resize(static_cast<std::size_t>(rows / e.rows_per_sample * out));
      }
      entry.scratchpad = dnnl::memory(pd.scratchpad_desc(), engine_); // owns its buffer
      return entry;
    }

    dnnl::engine engine_{dnnl::engine::kind::cpu, 0};
    dnnl::stream stream_{engine_};
    std::map<Key, Entry> entries_;
  };
  OneDnn onednn_;
#endif

  Gemm gemm_;
};

} // namespace tstitch::dit
