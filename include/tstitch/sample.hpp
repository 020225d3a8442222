// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "tstitch/core/denoiser.hpp"
#include "tstitch/core/error.hpp"
#include "tstitch/core/host_backend.hpp"
#include "tstitch/core/philox.hpp"
#include "tstitch/schedule/trajectory.hpp"
#include "tstitch/solver/concept.hpp"
#include "tstitch/stitch/route.hpp"

namespace tstitch {

/// Classifier-free guidance: out = u + scale * (c - u) on the guided channels, where c and u are
/// the conditional and unconditional raw outputs; other channels (e.g. a learned variance) are
/// taken from the conditional output. Scale 1 means no guidance (no unconditional evaluation).
struct Guidance {
  double scale = 1.0;
  /// Number of leading channels guided; 0 = all latent channels (the standard form).
  std::int64_t guided_channels = 0;

  static Guidance standard(double scale) { return {scale, 0}; }
  /// The official DiT code's variant: only the first 3 channels are guided (for exact parity).
  static Guidance dit(double scale) { return {scale, 3}; }
};

/// What ran at one step.
struct StepRecord {
  int step = 0;
  std::size_t model = 0;     ///< index of the serving model (0 for a plain denoiser)
  double timestep = 0;       ///< model time at the step's first evaluation
  double sigma = 0;          ///< noise scale there
  double alpha = 0;          ///< signal scale there
  double guidance_scale = 1; ///< scale used at this step
  int evaluations = 0;       ///< denoiser calls (twice the solver's evaluations with guidance)
  double seconds = 0;        ///< wall time of the step, model and solver
  /// The model of each batch row, for a step routed per row (a RowStitcher); empty otherwise.
  std::vector<std::size_t> rows;
};

struct SampleOptions {
  int steps = 50;
  /// Start at this step of the n-step trajectory instead of 0, with x already at
  /// trajectory[start_step] (image-to-image: see add_noise). Steps before it are skipped.
  int start_step = 0;
  Guidance guidance{};
  /// The run's seed: the noise of stochastic solvers and, through fill_initial_noise(x, options),
  /// the initial latents x_T. Sample k of a run uses streams (seed, first_sample + k), so it gets
  /// the same noise in any batch.
  std::uint64_t seed = 0;
  std::uint32_t first_sample = 0;
  /// Called after every step; return false to stop (the result then says cancelled).
  std::function<bool(const StepRecord&)> on_step{};
  /// Called at every step with the current estimate of the clean sample x0 (N, C, H, W).
  std::function<void(const StepRecord&, ConstView x0)> on_preview{};
  /// Throw tstitch::numerical_error when NaN or Inf appears in the latents (one read per step).
  bool check_finite = true;
};

struct SampleResult {
  std::vector<StepRecord> records;
  int switches =
      0; ///< how often the serving model changed (routed per row: steps where any row's did)
  bool cancelled = false;
};

/// Fills x with standard normal noise from stream (seed, first_sample + row): the usual x_T.
/// Its own seed, for initial latents drawn apart from the run's (e.g. one x_T, several runs).
template <class Backend = HostBackend>
void fill_initial_noise(View x, std::uint64_t seed, std::uint32_t first_sample = 0,
                        const Backend& backend = {}) {
  backend.fill_normal(x, NoiseKey{seed, first_sample, 0, stream_initial_latents});
}

/// The same from the run's options: x_T from options.seed and options.first_sample, the seed that
/// also drives the solver's noise, so one number reproduces the whole run:
///     SampleOptions options;
///     options.seed = 42;
///     fill_initial_noise(x, options);
///     sample(model, schedule, solver, x, cond, options);
template <class Backend = HostBackend>
void fill_initial_noise(View x, const SampleOptions& options, const Backend& backend = {}) {
  fill_initial_noise(x, options.seed, options.first_sample, backend);
}

/// Noises clean latents to a point of a schedule: x = alpha * x + sigma * noise (diffusers'
/// add_noise), e.g. x at trajectory[start_step] for image-to-image sampling.
template <class Backend = HostBackend>
void add_noise(View x, ConstView noise, const TimePoint& point, const Backend& backend = {}) {
  backend.combine(x, Term{static_cast<float>(point.alpha), ConstView(x)},
                  Term{static_cast<float>(point.sigma), noise});
}

/// The sampling loop with its workspace. Reusing one Sampler for runs of the same batch and
/// shape allocates nothing after the first run.
template <class Backend = HostBackend> class Sampler {
public:
  explicit Sampler(Backend backend = {}) : backend_(std::move(backend)) {}

  /// Samples in place: x holds x_T on entry and the final sample on return. `uncond` is the
  /// unconditional condition for guidance (nullptr: none).
  template <Denoiser D, NoiseSchedule S, Solver<Backend> V>
  SampleResult run(D& denoiser, const S& schedule, V& solver, View x, const condition_of<D>& cond,
                   const condition_of<D>* uncond, const SampleOptions& options) {
    validate(denoiser, x, uncond, options);
    const Trajectory trajectory = trajectory_of(schedule, options.steps);
    prepare(x.batch(), x.shape(), raw_output_channels(denoiser), uncond != nullptr);
    if constexpr (routes_rows<D>) {
      // A RowStitcher's sub-batches must live where the backend's tensors do.
      if constexpr (requires { typename D::rows_type::buffer_type; })
        static_assert(std::is_same_v<typename D::rows_type::buffer_type, tensor_type>,
                      "tstitch: a RowStitcher's Rows must match the backend: HostRows on the host "
                      "backend, cuda::DeviceRows on the device sampler");
      else
        static_assert(std::is_same_v<Backend, HostBackend>,
                      "tstitch: per-row routing (a RowStitcher) runs on the host backend only");
      // One batch keeps one solver history: a reset at each row's switch cannot be honoured.
      if constexpr (requires { solver.options().history; })
        require(solver.options().history != HistoryPolicy::reset, "solver history", "reset",
                "per-row routing keeps one history for the whole batch; use HistoryPolicy::keep");
      rows_.resize(static_cast<std::size_t>(x.batch()));
      previous_rows_.clear();
    }
    solver.begin(backend_, trajectory, x.batch(), x.shape());

    SampleResult result;
    result.records.reserve(static_cast<std::size_t>(options.steps - options.start_step));
    std::optional<std::size_t> serving; // the model of this run's previous step
    for (int i = options.start_step; i < options.steps && !result.cancelled; ++i) {
      const auto started = std::chrono::steady_clock::now();
      StepState step =
          begin_step(denoiser, solver, trajectory, i, uncond, options, serving, result);
      evaluate_and_update(denoiser, solver, step, x, cond, uncond, options);
      finish_step(denoiser, step, x, options, started, result);
    }
    return result;
  }

  [[nodiscard]] Backend& backend() { return backend_; }

private:
  using tensor_type = typename Backend::tensor_type;

  /// One step of a run while it runs: what the denoiser is told, which model serves it, where the
  /// solver stands and what the record will say.
  struct StepState {
    StepContext ctx;
    Route route;
    SolverStep solver_step;
    StepRecord record;
  };

  // --- the phases of run() ----------------------------------------------------------------------

  /// Everything checked before the first step: step range, latent shape, guidance, finite input.
  template <Denoiser D>
  void validate(const D& denoiser, ConstView x, const void* uncond, const SampleOptions& options) {
    require(options.steps >= 1, "steps", options.steps, "must be at least 1");
    require(options.start_step >= 0 && options.start_step < options.steps, "start_step",
            options.start_step, detail::concat("must be in [0, steps = ", options.steps, ")"));
    const Shape shape = denoiser.latent_shape();
    if (x.shape() != shape || x.batch() < 1)
      throw_invalid_argument("x shape", shape_string(x),
                             detail::concat("must be [N, ", shape.channels, ", ", shape.height,
                                            ", ", shape.width, "] with N >= 1, the denoiser's"));
    check_guidance(options.guidance, options.guidance.scale, shape, uncond);
    if (options.check_finite) {
      const std::int64_t bad = backend_.find_nonfinite(x);
      if (bad >= 0)
        throw_invalid_argument("x", "NaN or Inf",
                               detail::concat("the initial latents hold a non-finite value at "
                                              "flat index ",
                                              bad));
    }
  }

  /// The schedule's n-step trajectory, with its maps for solvers that evaluate between points.
  template <NoiseSchedule S> static Trajectory trajectory_of(const S& schedule, int steps) {
    Trajectory trajectory = schedule.trajectory(steps);
    if (trajectory.steps() != steps)
      throw runtime_error(detail::concat("tstitch: the schedule returned ", trajectory.steps(),
                                         " steps for steps = ", steps));
    trajectory.point_at = [&schedule](double t) { return schedule.point(t); };
    trajectory.timestep_at = [&schedule](double s) {
      return static_cast<double>(schedule.timestep_at(s));
    };
    return trajectory;
  }

  /// Routes step i once (every evaluation of the step goes to that model), counts a switch of
  /// the serving model and tells the solver and the denoiser about it, and opens the record.
  template <Denoiser D, class V>
  StepState begin_step(D& denoiser, V& solver, const Trajectory& trajectory, int i,
                       const void* uncond, const SampleOptions& options,
                       std::optional<std::size_t>& serving, SampleResult& result) {
    StepState s{StepContext{i, options.steps, 0, trajectory[i]}, Route{},
                SolverStep{i, 0, &trajectory,
                           NoiseKey{options.seed, options.first_sample,
                                    static_cast<std::uint32_t>(i), stream_solver}},
                StepRecord{}};
    s.route = route_of(denoiser, s.ctx);
    if constexpr (routes_rows<D>) {
      // Rows switch models at different steps; the solver keeps every row's history (one batch,
      // one history), so the switch hooks are not called.
      denoiser.route_rows(s.ctx, std::span<std::size_t>(rows_));
      s.ctx.serving.rows = rows_;
      if (!previous_rows_.empty() && previous_rows_ != rows_)
        ++result.switches;
      previous_rows_.assign(rows_.begin(), rows_.end());
      s.record.rows.assign(rows_.begin(), rows_.end());
    } else if constexpr (routes_steps<D>) {
      s.ctx.serving.model = s.route.model;
    }
    if (!routes_rows<D> && serving && *serving != s.route.model) {
      ++result.switches;
      if constexpr (requires { solver.on_model_switch(); })
        solver.on_model_switch();
      announce_switch(denoiser, SwitchEvent{*serving, s.route.model, s.ctx});
    }
    serving = s.route.model;

    s.record.step = i;
    s.record.model = s.route.model;
    s.record.timestep = s.ctx.point.timestep;
    s.record.sigma = s.ctx.point.sigma;
    s.record.alpha = s.ctx.point.alpha;
    s.record.guidance_scale = s.route.guidance_scale.value_or(options.guidance.scale);
    if (s.route.guidance_scale)
      check_guidance(options.guidance, s.record.guidance_scale, denoiser.latent_shape(), uncond);
    return s;
  }

  /// The solver's evaluations of the step: each one asks the serving model (guided where the
  /// scale says so), converts its output and lets the solver update x.
  template <Denoiser D, class V>
  void evaluate_and_update(D& denoiser, V& solver, StepState& s, View x,
                           const condition_of<D>& cond, const condition_of<D>* uncond,
                           const SampleOptions& options) {
    const int evaluations = evaluations_of(solver, s.solver_step.step);
    for (int e = 0; e < evaluations; ++e) {
      s.solver_step.evaluation = e;
      s.ctx.evaluation = e;
      s.ctx.point = evaluation_point(solver, s.solver_step);
      const ConstView input = evaluation_input(solver, s.solver_step, x);
      const ModelOutput output =
          evaluate(denoiser, s.ctx, s.route, input, cond, uncond, options.guidance, s.record);
      if (e == 0 && options.on_preview)
        options.on_preview(s.record, output.x0);
      solver.update(backend_, s.solver_step, output, x);
    }
  }

  /// Checks the latents, closes the record and asks on_step whether to go on.
  template <Denoiser D>
  void finish_step(const D& denoiser, StepState& s, ConstView x, const SampleOptions& options,
                   std::chrono::steady_clock::time_point started, SampleResult& result) {
    if (options.check_finite) {
      const std::int64_t bad = backend_.find_nonfinite(x);
      if (bad >= 0)
        throw numerical_error(detail::concat(
            "tstitch: NaN or Inf in the latents after step ", s.ctx.step, " of ", options.steps,
            " (served by ", model_name_of(denoiser, s.route.model), ", timestep ",
            s.ctx.point.timestep, ", sigma ", s.ctx.point.sigma, "), first at flat index ", bad));
    }
    s.record.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    result.records.push_back(s.record);
    if (options.on_step && !options.on_step(s.record))
      result.cancelled = true;
  }

  // --- helpers
  // ------------------------------------------------------------------------------------

  template <class V> static TimePoint evaluation_point(const V& solver, const SolverStep& step) {
    if constexpr (requires {
                    { solver.evaluation_point(step) } -> std::same_as<TimePoint>;
                  })
      return solver.evaluation_point(step);
    else
      return step.from();
  }
  template <class V>
  static ConstView evaluation_input(const V& solver, const SolverStep& step, ConstView x) {
    if constexpr (requires {
                    { solver.evaluation_input(step, x) } -> std::same_as<ConstView>;
                  })
      return solver.evaluation_input(step, x);
    else
      return x;
  }

  static void check_guidance(const Guidance& guidance, double scale, Shape shape,
                             const void* uncond) {
    if (!std::isfinite(scale))
      throw_invalid_argument("guidance scale", scale, "must be finite");
    if (guidance.guided_channels < 0 || guidance.guided_channels > shape.channels)
      throw_invalid_argument(
          "guidance.guided_channels", guidance.guided_channels,
          detail::concat("must be in [0, ", shape.channels, "]: the latents have ", shape.channels,
                         shape.channels == 1 ? " channel" : " channels",
                         "; Guidance::dit(scale) guides DiT's first 3 of 4 channels, use "
                         "Guidance::standard(scale) to guide every channel"));
    if (scale != 1.0 && uncond == nullptr)
      throw_invalid_argument("guidance scale", scale,
                             "needs an unconditional condition: pass uncond to sample() or give "
                             "the denoiser an unconditional(cond) member");
  }

  void prepare(std::int64_t batch, Shape shape, std::int64_t raw_channels, bool guided) {
    const Shape raw_shape{raw_channels, shape.height, shape.width};
    auto ensure = [&](tensor_type& t, Shape s) {
      if (t.batch() != batch || t.shape() != s)
        t = backend_.allocate(batch, s);
    };
    ensure(raw_, raw_shape);
    if (guided)
      ensure(raw_uncond_, raw_shape);
    ensure(x0_, shape);
    ensure(eps_, shape);
  }

  template <Denoiser D>
  ModelOutput evaluate(D& denoiser, const StepContext& ctx, const Route& route, ConstView x,
                       const condition_of<D>& cond, const condition_of<D>* uncond,
                       const Guidance& guidance, StepRecord& record) {
    const Shape shape = x.shape();
    const std::int64_t channels = output_channels(route.prediction, shape.channels);
    const View raw = View(raw_.view()).channels(0, channels);
    if (record.guidance_scale == 1.0) {
      denoiser.predict(x, ctx, cond, raw);
      ++record.evaluations;
    } else {
      // Both branches in one call where the denoiser offers predict_guided (one 2N batch).
      const View raw_uncond = View(raw_uncond_.view()).channels(0, channels);
      predict_guided_of(denoiser, x, ctx, cond, *uncond, raw, raw_uncond);
      record.evaluations += 2;
      const std::int64_t guided =
          guidance.guided_channels == 0 ? shape.channels : guidance.guided_channels;
      backend_.map(raw.channels(0, guided), Guide{static_cast<float>(record.guidance_scale)},
                   ConstView(raw.channels(0, guided)), ConstView(raw_uncond.channels(0, guided)));
    }

    // x0 and eps from (x, m); when one of them *is* m, use m itself rather than a copy.
    const ConstView m = raw.channels(0, shape.channels);
    const PredictionConversion k = conversion(route.prediction, ctx.point.alpha, ctx.point.sigma);
    ModelOutput out{m, m, raw, route.prediction};
    if (!(k.x0_from_x == 0 && k.x0_from_m == 1)) {
      backend_.combine(x0_.view(), Term{static_cast<float>(k.x0_from_x), x},
                       Term{static_cast<float>(k.x0_from_m), m});
      out.x0 = x0_.view();
    }
    if (!(k.eps_from_x == 0 && k.eps_from_m == 1)) {
      backend_.combine(eps_.view(), Term{static_cast<float>(k.eps_from_x), x},
                       Term{static_cast<float>(k.eps_from_m), m});
      out.eps = eps_.view();
    }
    return out;
  }

public:
  // Public only because nvcc cannot instantiate a kernel template (cuda::Backend::map) with a
  // private nested type; not part of the API.
  /// DiT's arithmetic, u + s * (c - u), for bit-exact parity with its reference sampler.
  struct Guide {
    float scale;
    TSTITCH_HOST_DEVICE float operator()(float c, float u) const { return u + scale * (c - u); }
  };

private:
  Backend backend_;
  tensor_type raw_, raw_uncond_, x0_, eps_;
  std::vector<std::size_t> rows_, previous_rows_; // per-row routing: this step's and the last
};

namespace detail {

/// The schedule half of sample()'s checks: one static_assert per member (see check_denoiser).
template <class S> consteval bool check_schedule() {
  static_assert(maps_time_to_point<S>,
                "tstitch: a NoiseSchedule maps model time to a point: `TimePoint point(double t) "
                "const`");
  static_assert(maps_sigma_to_time<S>,
                "tstitch: a NoiseSchedule maps a VE sigma back to model time: "
                "`double timestep_at(double ve_sigma) const`");
  static_assert(produces_trajectory<S>,
                "tstitch: a NoiseSchedule gives the trajectory of an n-step run: "
                "`Trajectory trajectory(int n) const`");
  return NoiseSchedule<S>;
}

/// The solver half: its two members, and a solver that can change (it keeps state per run).
template <class V> consteval bool check_solver() {
  using S = std::remove_reference_t<V>;
  static_assert(!std::is_const_v<S>,
                "tstitch: sample() needs a solver it can change (it keeps per-run state): pass a "
                "non-const one or a temporary");
  static_assert(std::is_const_v<S> || prepares_for_a_run<S>,
                "tstitch: a Solver prepares for a run: `void begin(Backend&, const Trajectory&, "
                "std::int64_t batch, Shape shape)`");
  static_assert(std::is_const_v<S> || advances_latents<S>,
                "tstitch: a Solver advances the latents: `void update(Backend&, const "
                "SolverStep&, const ModelOutput&, View x)`");
  return !std::is_const_v<S> && Solver<S>;
}

template <class D, class S, class V> consteval bool check_sample_arguments() {
  static_assert(
      !std::is_const_v<D>,
      "tstitch: sample() needs a denoiser it can call predict() on: pass a non-const one");
  const bool denoiser = check_denoiser<std::remove_const_t<D>>();
  const bool schedule = check_schedule<S>();
  const bool solver = check_solver<V>();
  return !std::is_const_v<D> && denoiser && schedule && solver;
}

/// sample()'s condition parameter: the denoiser's condition type, or, for a type without one,
/// anything, so that such a call reaches the checks that say what is missing.
struct unchecked_condition {
  template <class T> unchecked_condition(const T&) {} // NOLINT: implicit by design
};
template <class D> struct condition_parameter { using type = unchecked_condition; };
template <has_condition_type D> struct condition_parameter<D> {
  using type = typename std::remove_cvref_t<D>::condition_type;
};
template <class D> using condition_parameter_t = typename condition_parameter<D>::type;

/// sample() as a function object: an unqualified call finds it and nothing else (no
/// argument-dependent lookup, so std::sample never joins an error message), and a call with
/// arguments of the wrong kind fails in the checks above, each naming what is missing.
struct sample_fn {
  /// Samples in place with the host backend: x holds x_T on entry (see fill_initial_noise) and
  /// the result on return. Guidance uses the denoiser's unconditional(cond) member. The solver
  /// may be a temporary (`DDIM{}`), like the schedule.
  template <class D, class S, class V>
  SampleResult operator()(D& denoiser, const S& schedule, V&& solver, View x,
                          const condition_parameter_t<D>& cond,
                          const SampleOptions& options = {}) const {
    if constexpr (check_sample_arguments<D, S, V>()) {
      const std::optional<condition_of<D>> uncond = unconditional_of(denoiser, cond);
      Sampler<> sampler;
      return sampler.run(denoiser, schedule, solver, x, cond, uncond ? &*uncond : nullptr, options);
    } else {
      return {};
    }
  }

  /// As above, with an explicit unconditional condition for classifier-free guidance.
  template <class D, class S, class V>
  SampleResult operator()(D& denoiser, const S& schedule, V&& solver, View x,
                          const condition_parameter_t<D>& cond,
                          const condition_parameter_t<D>& uncond,
                          const SampleOptions& options) const {
    if constexpr (check_sample_arguments<D, S, V>()) {
      Sampler<> sampler;
      return sampler.run(denoiser, schedule, solver, x, cond, &uncond, options);
    } else {
      return {};
    }
  }
};

} // namespace detail

/// Samples in place with the host backend (see detail::sample_fn for both forms):
///     sample(denoiser, schedule, solver, x, cond, options);
///     sample(denoiser, schedule, solver, x, cond, uncond, options);
inline constexpr detail::sample_fn sample{};

} // namespace tstitch
