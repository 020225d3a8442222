// SPDX-License-Identifier: Apache-2.0
#pragma once

// Per-sample stitching: each batch row follows its own routing. Every evaluation splits the batch
// into one sub-batch per model, runs each model once on its rows and writes the outputs back in
// place; the solver then advances the whole batch at once. Where the sub-batches live and how
// rows move is the Rows parameter: host memory by default, cuda::DeviceRows on the GPU (see
// docs/stitching-rows.md).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "tstitch/core/denoiser.hpp"
#include "tstitch/core/error.hpp"
#include "tstitch/core/tensor.hpp"
#include "tstitch/stitch/route.hpp"
#include "tstitch/stitch/row_policy.hpp"
#include "tstitch/stitch/stitcher.hpp"

namespace tstitch {

/// How a condition is cut to some rows of its batch, for a RowStitcher. Specialise it for a
/// condition type that has one entry per row:
///     static void gather(const C& c, std::int64_t batch, std::span<const std::int64_t> rows,
///                        C& out);  // out = the entries of `rows`, reusing out's storage
/// std::vector<T> (e.g. class labels) is provided: one entry per row is gathered, an empty
/// vector (no condition) stays empty.
template <class C> struct ConditionRows; // no default: an unsliceable condition is refused

template <class T> struct ConditionRows<std::vector<T>> {
  static void gather(const std::vector<T>& c, std::int64_t batch,
                     std::span<const std::int64_t> rows, std::vector<T>& out) {
    out.clear();
    if (c.empty())
      return;
    require(static_cast<std::int64_t>(c.size()) == batch, "condition size", c.size(),
            detail::concat("must equal the batch size, ", batch, ", or be 0, to route per row"));
    for (std::int64_t r : rows)
      out.push_back(c[static_cast<std::size_t>(r)]);
  }
};

/// Sub-batch buffers in host memory, rows moved by memcpy: a RowStitcher's default Rows.
/// Another Rows (cuda::DeviceRows) offers the same members for its own memory:
///   buffer_type                          an owning batch ([N, C, H, W])
///   ensure(buffer, batch, shape)         grows buffer to at least `batch` samples of `shape`
///   view(buffer)                         the buffer as a View
///   gather(src, rows, dst)               dst sample i = src sample rows[i]
///   scatter(src, rows, dst)              dst sample rows[i] = src sample i
struct HostRows {
  using buffer_type = Tensor;

  static void ensure(Tensor& t, std::int64_t batch, Shape shape) {
    if (t.batch() < batch || t.shape() != shape)
      t = Tensor(batch, shape);
  }
  static View view(Tensor& t) { return t.view(); }
  void gather(ConstView src, std::span<const std::int64_t> rows, View dst) const {
    for (std::size_t i = 0; i < rows.size(); ++i)
      copy_row(src, rows[i], dst, static_cast<std::int64_t>(i));
  }
  void scatter(ConstView src, std::span<const std::int64_t> rows, View dst) const {
    for (std::size_t i = 0; i < rows.size(); ++i)
      copy_row(src, static_cast<std::int64_t>(i), dst, rows[i]);
  }

private:
  /// Copies sample `from` of src to sample `to` of dst (a sample is contiguous within a view).
  static void copy_row(ConstView src, std::int64_t from, View dst, std::int64_t to) {
    std::memcpy(dst.data() + to * dst.batch_stride(), src.data() + from * src.batch_stride(),
                static_cast<std::size_t>(src.shape().numel()) * sizeof(float));
  }
};

template <class C>
concept row_sliceable_condition = requires(const C& c, std::span<const std::int64_t> rows, C& out) {
  ConditionRows<C>::gather(c, std::int64_t{1}, rows, out);
};

/// k models of one type (e.g. DenoiserRef<Cond>, held by value like RuntimeStitcher) routed per
/// batch row by a RowPolicy:
///     RowStitcher<DenoiserRef<Labels>, PerRow<StepFraction>> s(row_fractions({0, 0.4, 0.8}),
///                                                              {small, large});
/// Every model must predict the same thing (the loop converts the whole batch at once) and the
/// condition type must have a ConditionRows specialisation. Rows says where the sub-batches live
/// (HostRows, or cuda::DeviceRows with its stream for device models).
template <Denoiser Model, RowPolicy Policy, class Rows = HostRows> class RowStitcher {
  static_assert(row_sliceable_condition<condition_of<Model>>,
                "tstitch: RowStitcher cuts the condition to each model's rows: specialise "
                "tstitch::ConditionRows<condition_type> with a static gather(c, batch, rows, out)");

public:
  using condition_type = condition_of<Model>;
  using model_type = Model;
  using policy_type = Policy;
  using rows_type = Rows;

  RowStitcher(Policy policy, std::vector<Model> models, Rows rows = Rows{})
      : policy_(std::move(policy)), models_(std::move(models)), rows_(std::move(rows)) {
    require(!models_.empty(), "number of models", models_.size(), "must be at least 1");
    if constexpr (requires { policy_.check(models_.size()); })
      policy_.check(models_.size());
    for (std::size_t k = 1; k < models_.size(); ++k) {
      if (models_[k].latent_shape() != models_[0].latent_shape())
        throw invalid_argument(detail::concat(
            "tstitch: stitched models disagree on latent shape: ", model_name(0), " has ",
            models_[0].latent_shape(), ", ", model_name(k), " has ", models_[k].latent_shape()));
      if (models_[k].prediction() != models_[0].prediction())
        throw invalid_argument(detail::concat(
            "tstitch: a RowStitcher's models must predict the same thing (", model_name(0), ": ",
            models_[0].prediction(), ", ", model_name(k), ": ", models_[k].prediction(), ")"));
    }
    scratch_.resize(models_.size());
  }

  RowStitcher& set_names(std::vector<std::string> names) {
    require(names.size() == models_.size(), "names.size()", names.size(),
            detail::concat("must equal the number of models, ", models_.size()));
    names_ = std::move(names);
    return *this;
  }

  // --- the Denoiser interface ------------------------------------------------------------------

  [[nodiscard]] Prediction prediction() const { return models_[0].prediction(); }
  [[nodiscard]] Shape latent_shape() const { return models_[0].latent_shape(); }
  [[nodiscard]] std::int64_t output_channels() const {
    std::int64_t channels = 0;
    for (const Model& m : models_)
      channels = std::max(channels, raw_output_channels(m));
    return channels;
  }
  [[nodiscard]] auto unconditional(const condition_type& c) const requires
      requires(const Model& m) {
    unconditional_of(m, c);
  }
  { return unconditional_of(models_[0], c); }

  /// The step's route for the loop: the common prediction, and row 0's model (what a record's
  /// `model` shows; StepRecord::rows holds every row's).
  [[nodiscard]] Route route(const StepContext& ctx) const {
    return Route{model_for_row(ctx, 0), prediction(), std::nullopt};
  }
  /// The model of each row of step ctx, into out (one entry per batch row).
  void route_rows(const StepContext& ctx, std::span<std::size_t> out) const {
    if constexpr (requires { policy_.rows(); })
      require(static_cast<std::int64_t>(out.size()) == policy_.rows(), "batch size", out.size(),
              detail::concat("must equal the row policy's number of rows, ", policy_.rows()));
    for (std::size_t r = 0; r < out.size(); ++r)
      out[r] = model_for_row(ctx, static_cast<std::int64_t>(r));
  }

  void predict(ConstView x, const StepContext& ctx, const condition_type& c, View out) {
    dispatch(x, ctx, c, nullptr, out, nullptr);
  }
  void predict_guided(ConstView x, const StepContext& ctx, const condition_type& cond,
                      const condition_type& uncond, View out_cond, View out_uncond) {
    dispatch(x, ctx, cond, &uncond, out_cond, &out_uncond);
  }

  // --- queries --------------------------------------------------------------------------------

  [[nodiscard]] std::size_t size() const { return models_.size(); }
  [[nodiscard]] Model& model(std::size_t k) { return models_.at(k); }
  [[nodiscard]] const Policy& policy() const { return policy_; }
  /// How sub-batch rows are moved (a device Rows holds the stream it copies on).
  [[nodiscard]] const Rows& row_copier() const { return rows_; }
  [[nodiscard]] std::string model_name(std::size_t k) const {
    if (k >= models_.size())
      return "model " + std::to_string(k);
    if (!names_.empty())
      return names_[k];
    return detail::name_in_stitch(models_[k], k);
  }

private:
  /// Per model: its rows of this evaluation and its sub-batch buffers (kept at the full batch
  /// size once grown, so later steps allocate nothing).
  struct Scratch {
    std::vector<std::int64_t> rows;
    typename Rows::buffer_type x, out, out_uncond;
    condition_type cond{}, uncond{};
  };

  [[nodiscard]] std::size_t model_for_row(const StepContext& ctx, std::int64_t row) const {
    const auto k = static_cast<std::size_t>(policy_.model_for_row(ctx, row, models_.size()));
    if (k >= models_.size())
      throw invalid_argument(detail::concat("tstitch: row policy chose model ", k, " for row ", row,
                                            " at step ", ctx.step, "; there are ", models_.size(),
                                            " models"));
    return k;
  }

  /// The loop's assignment, checked, or (a context built by hand) the policy's.
  std::span<const std::size_t> assignment(const StepContext& ctx, std::int64_t batch) {
    std::span<const std::size_t> rows = ctx.serving.rows;
    if (rows.empty()) {
      own_rows_.resize(static_cast<std::size_t>(batch));
      for (std::int64_t r = 0; r < batch; ++r)
        own_rows_[static_cast<std::size_t>(r)] = model_for_row(ctx, r);
      rows = own_rows_;
    }
    if (static_cast<std::int64_t>(rows.size()) != batch)
      throw_invalid_argument("StepContext::serving.rows.size()", rows.size(),
                             detail::concat("must equal the batch size, ", batch));
    for (std::size_t r = 0; r < rows.size(); ++r)
      if (rows[r] >= models_.size())
        throw_invalid_argument(
            detail::concat("StepContext::serving.rows[", r, "]"), rows[r],
            detail::concat("must be below the number of models, ", models_.size()));
    return rows;
  }

  void dispatch(ConstView x, const StepContext& ctx, const condition_type& cond,
                const condition_type* uncond, View out, View* out_uncond) {
    const std::int64_t batch = x.batch();
    const std::span<const std::size_t> rows = assignment(ctx, batch);
    StepContext inner = ctx;
    inner.serving = {}; // a model that is itself a stitcher decides for itself
    const bool one_model =
        std::all_of(rows.begin(), rows.end(), [&](std::size_t k) { return k == rows.front(); });
    if (one_model) { // the whole batch to one model: no copies
      run(models_[rows.front()], x, inner, cond, uncond, out, out_uncond);
      return;
    }
    for (Scratch& s : scratch_) {
      s.rows.clear();
      s.rows.reserve(rows.size());
    }
    for (std::size_t r = 0; r < rows.size(); ++r)
      scratch_[rows[r]].rows.push_back(static_cast<std::int64_t>(r));
    for (std::size_t k = 0; k < models_.size(); ++k) {
      Scratch& s = scratch_[k];
      const auto n = static_cast<std::int64_t>(s.rows.size());
      if (n == 0)
        continue;
      rows_.ensure(s.x, batch, x.shape());
      rows_.ensure(s.out, batch, out.shape());
      const View sub_x = rows_.view(s.x).samples(0, n);
      const View sub_out = rows_.view(s.out).samples(0, n);
      rows_.gather(x, s.rows, sub_x);
      ConditionRows<condition_type>::gather(cond, batch, s.rows, s.cond);
      View sub_uncond{};
      if (uncond) {
        rows_.ensure(s.out_uncond, batch, out_uncond->shape());
        sub_uncond = rows_.view(s.out_uncond).samples(0, n);
        ConditionRows<condition_type>::gather(*uncond, batch, s.rows, s.uncond);
      }
      run(models_[k], sub_x, inner, s.cond, uncond ? &s.uncond : nullptr, sub_out,
          uncond ? &sub_uncond : nullptr);
      rows_.scatter(sub_out, s.rows, out);
      if (uncond)
        rows_.scatter(sub_uncond, s.rows, *out_uncond);
    }
  }

  static void run(Model& model, ConstView x, const StepContext& ctx, const condition_type& cond,
                  const condition_type* uncond, View out, View* out_uncond) {
    if (uncond)
      predict_guided_of(model, x, ctx, cond, *uncond, out, *out_uncond);
    else
      model.predict(x, ctx, cond, out);
  }

  Policy policy_;
  std::vector<Model> models_;
  Rows rows_;
  std::vector<std::string> names_;
  std::vector<Scratch> scratch_;
  std::vector<std::size_t> own_rows_;
};

} // namespace tstitch
