// SPDX-License-Identifier: Apache-2.0
#pragma once

// PNDM (Liu et al. 2022, "Pseudo Numerical Methods for Diffusion Models on Manifolds"):
// diffusers' PNDMScheduler on a tstitch trajectory. Every update is DDIM's transfer
//   x_s = (alpha_s / alpha_t) x + (sigma_s - alpha_s sigma_t / alpha_t) e
// from the step's start point t, with e a combination of noise predictions: Runge-Kutta stages
// (PRK) while the history is short, then the linear multistep (PLMS, 4-step Adams-Bashforth).

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <initializer_list>

#include "tstitch/core/error.hpp"
#include "tstitch/core/prediction.hpp"
#include "tstitch/solver/concept.hpp"
#include "tstitch/solver/multistep.hpp"

namespace tstitch {

/// Which model times PNDM evaluates at and moves the latents to, besides the trajectory's points.
enum class PNDMTimesteps {
  /// diffusers' integer arithmetic, with r = N // n and h = r // 2 (N = num_train_timesteps,
  /// n = steps): a PRK step from t to t_next evaluates at t_next + h (twice) and moves its stages
  /// to t - h, t_next + h and t_next + h - h; a PLMS step moves to t - r (the final point below 0);
  /// the start step moves its predictor to t - r and its corrector from t_next + r to t_next.
  /// For leading spacing with r even, and trailing spacing with N / n an even integer, all of these
  /// are trajectory points or step midpoints. Otherwise (linspace, odd r, uneven trailing steps)
  /// the latents leave the trajectory exactly as in diffusers, and the model is told the
  /// trajectory's timesteps. Needs a schedule with integer model times (DDPM's).
  diffusers,
  /// For any schedule (continuous, flow matching): every step ends on its trajectory point, and
  /// the PRK half point is the midpoint (t + t_next) / 2 in model time.
  trajectory
};

/// Options of PNDM; the defaults are those of diffusers' PNDMScheduler. set_alpha_to_one,
/// steps_offset and timestep_spacing belong to the schedule (DiscreteScheduleOptions::final_point,
/// steps_offset, spacing); prediction_type to the denoiser.
struct PNDMOptions {
  /// Start with one Heun-like step (two evaluations) instead of three 4-evaluation Runge-Kutta
  /// steps (diffusers' skip_prk_steps; true in Stable Diffusion's scheduler configs).
  bool skip_prk_steps = false;
  PNDMTimesteps timesteps = PNDMTimesteps::diffusers;
  /// At a model switch: keep the previous model's noise predictions (the multistep continues), or
  /// restart with the warm-up, as a run that starts at the switch.
  HistoryPolicy history = HistoryPolicy::keep;

  friend bool operator==(const PNDMOptions&, const PNDMOptions&) = default;
};

/// diffusers' PNDMScheduler as a tstitch solver. What a step does depends on how many noise
/// predictions the history holds when it starts (diffusers' `ets`):
///
///  - PRK (skip_prk_steps = false, fewer than 3 stored): four evaluations, at t on x, at the half
///    point on y1, at the half point on y2, at t_next on y3, where each y is DDIM's transfer of x
///    with the previous stage's prediction (y1, y2 to the half point, y3 to t_next); then
///    x_next = DDIM(x, (e1 + 2 e2 + 2 e3 + e4) / 6). e1 joins the history. These are diffusers'
///    prk_timesteps: 900, 850, 850, 800 for the first step of a 10-step leading run.
///  - start (skip_prk_steps = true, history empty): two evaluations, at t on x and at t_next on
///    y = DDIM(x, e1); x_next = DDIM(x, (e1 + e2) / 2). Only e1 joins the history. The next
///    step evaluates at t_next again, on x_next: diffusers' duplicated plms timestep
///    (900, 800, 800, 700, ...).
///  - PLMS (otherwise): one evaluation at t, which joins the history; e = the Adams-Bashforth
///    combination of the newest k = min(size, 4) predictions (1; 3/2, -1/2; (23, -16, 5) / 12;
///    (55, -59, 37, -9) / 24).
/// A warm-up step that would end the trajectory (a run, or a reset, that starts there) is a PLMS
/// step instead, so no model is evaluated at the final point.
///
/// v-prediction: diffusers combines the raw v outputs and converts the combination into a noise
/// prediction with the step's start point and latents, eps = alpha_t v + sigma_t x. So do we: a
/// history entry holds v when its model predicts v and is converted where it is used (the
/// combination weights sum to 1, so this is diffusers' conversion exactly); other predictions are
/// stored as the loop's eps.
class PNDM {
public:
  explicit PNDM(PNDMOptions options = {}) : options_(options) {}

  [[nodiscard]] const PNDMOptions& options() const { return options_; }

  /// What the latest step was: 4 (PRK), 2 (the start step) or -k for a PLMS step of order k
  /// (-1 .. -4); 0 before any.
  [[nodiscard]] int last_kind() const { return last_kind_; }

  template <class Backend>
  void begin(Backend& backend, const Trajectory& trajectory, std::int64_t batch, Shape shape) {
    // Messages are built only on failure: begin() runs every run and allocates nothing else.
    for (int i = 0; i < trajectory.steps(); ++i)
      if (!(trajectory[i].alpha > 0))
        throw_invalid_argument("trajectory alpha", trajectory[i].alpha,
                               detail::concat("must be > 0 at every point but the last for PNDM "
                                              "(point ",
                                              i, "): DDIM's transfer divides by it"));
    ratio_ = std::floor(trajectory.num_train_timesteps / trajectory.steps());
    half_ = std::floor(ratio_ / 2);
    const bool diffusers = options_.timesteps == PNDMTimesteps::diffusers;
    if (diffusers && !(ratio_ >= (options_.skip_prk_steps ? 1 : 2)))
      throw_invalid_argument(
          "PNDMOptions::timesteps", "diffusers",
          detail::concat("needs num_train_timesteps // steps >= ", options_.skip_prk_steps ? 1 : 2,
                         " (num_train_timesteps ", trajectory.num_train_timesteps, ", steps ",
                         trajectory.steps(), "); use PNDMTimesteps::trajectory for this schedule"));
    if (!options_.skip_prk_steps || diffusers)
      require(static_cast<bool>(trajectory.point_at), "Trajectory::point_at", "empty",
              "PNDM evaluates or lands between the trajectory's points; sample through "
              "tstitch::sample, or set the map");
    if (diffusers && !options_.skip_prk_steps)
      for (int i = 0; i + 1 < trajectory.steps(); ++i)
        if (!(trajectory[i + 1].timestep + half_ < trajectory[i].timestep))
          throw_invalid_argument(
              "PNDMOptions::timesteps", "diffusers",
              detail::concat("puts the half point of step ", i,
                             " at t = ", trajectory[i + 1].timestep + half_,
                             ", not below the step's start t = ", trajectory[i].timestep,
                             "; use PNDMTimesteps::trajectory"));
    history_.reserve(backend, 4, batch, shape);
    v_entry_ = {};
    ensure_workspace(backend, stage_, batch, shape);
    if (!options_.skip_prk_steps)
      ensure_workspace(backend, accumulated_, batch, shape);
    steps_ = trajectory.steps();
    last_kind_ = 0;
    kind_ = 0;
  }

  /// Under HistoryPolicy::reset, forgets the stored predictions: the next step starts the warm-up
  /// again, exactly as a run that starts there (SampleOptions::start_step).
  void on_model_switch() {
    if (options_.history == HistoryPolicy::reset) {
      history_.clear();
      v_entry_ = {};
    }
  }

  /// 4 for a PRK step, 2 for the start step, else 1 (see the class comment). It depends on the
  /// history, so it answers for the step about to start, which is when the sampling loop asks.
  [[nodiscard]] int evaluations(int step) const {
    const int kind = kind_at(step);
    return kind == prk ? 4 : (kind == start ? 2 : 1);
  }

  [[nodiscard]] TimePoint evaluation_point(const SolverStep& step) const {
    const int kind = step.evaluation == 0 ? kind_at(step.step) : kind_;
    if (kind == prk && (step.evaluation == 1 || step.evaluation == 2))
      return half_point(step);
    if ((kind == prk && step.evaluation == 3) || (kind == start && step.evaluation == 1))
      return step.to();
    return step.from();
  }

  /// Evaluation 0 sees x; the later ones the stage built by the previous update.
  [[nodiscard]] ConstView evaluation_input(const SolverStep& step, ConstView x) const {
    return step.evaluation == 0 ? x : ConstView(stage_.view());
  }

  template <class Backend>
  void update(Backend& backend, const SolverStep& step, const ModelOutput& out, View x) {
    const TimePoint& from = step.from();
    const bool v = out.prediction == Prediction::v;
    // The sampling loop reuses its output buffers, so what a later evaluation needs is copied.
    const ConstView e = v ? out.raw.channels(0, x.shape().channels) : out.eps;
    if (step.evaluation == 0) {
      kind_ = kind_at(step.step);
      backend.copy(history_.incoming(), e);
      history_.push(from);
      for (std::size_t j = v_entry_.size() - 1; j > 0; --j)
        v_entry_[j] = v_entry_[j - 1];
      v_entry_[0] = v;
    }
    if (kind_ == prk) {
      constexpr double sixth = 1.0 / 6.0;
      switch (step.evaluation) {
      case 0: // y1: to the half point (diffusers: t - h) with e1
        transfer(backend, stage_.view(), x, from,
                 diffusers() ? at(step, from.timestep - half_) : half_point(step),
                 {Entry{1.0, e, v}}, 1);
        return;
      case 1: // y2: to the half point with e2
        backend.combine(accumulated_.view(), Term{0.5f, e});
        transfer(backend, stage_.view(), x, from, half_point(step), {Entry{1.0, e, v}}, 1);
        return;
      case 2: // y3: to t_next with e3
        backend.combine(accumulated_.view(), Term{1.0f, ConstView(accumulated_.view())},
                        Term{0.5f, e});
        transfer(backend, stage_.view(), x, from, step.to(), {Entry{1.0, e, v}}, 1);
        return;
      default: // x_next with (e1 + 2 e2 + 2 e3 + e4) / 6
        transfer(backend, x, x, from, step.to(),
                 {Entry{sixth, history_[0], v}, Entry{2.0 / 3.0, ConstView(accumulated_.view()), v},
                  Entry{sixth, e, v}},
                 3);
        last_kind_ = 4;
        return;
      }
    }
    if (kind_ == start) {
      if (step.evaluation == 0) { // the predictor y = DDIM(x, e1), evaluated at t_next
        transfer(backend, stage_.view(), x, from, landing(step), {Entry{1.0, e, v}}, 1);
        return;
      }
      // diffusers starts this transfer at t_next + r (not t where they differ).
      transfer(backend, x, x, diffusers() ? at(step, step.to().timestep + ratio_) : from, step.to(),
               {Entry{0.5, e, v}, Entry{0.5, history_[0], v_entry_[0]}}, 2);
      last_kind_ = 2;
      return;
    }
    // PLMS: Adams-Bashforth over the newest k = min(size, 4) predictions.
    static constexpr std::array<std::array<double, 4>, 4> ab{
        {{1.0, 0, 0, 0},
         {1.5, -0.5, 0, 0},
         {23.0 / 12, -16.0 / 12, 5.0 / 12, 0},
         {55.0 / 24, -59.0 / 24, 37.0 / 24, -9.0 / 24}}};
    const int k = history_.size();
    std::array<Entry, 4> entries{};
    for (int j = 0; j < k; ++j) {
      const auto uj = static_cast<std::size_t>(j);
      entries[uj] = Entry{ab[static_cast<std::size_t>(k - 1)][uj], history_[j], v_entry_[uj]};
    }
    transfer(backend, x, x, from, landing(step), entries, k);
    last_kind_ = -k;
  }

private:
  static constexpr int plms = 1, start = 2, prk = 3;

  /// One term of the noise prediction e of a transfer.
  struct Entry {
    double weight = 0;
    ConstView tensor{};
    bool v = false; ///< a raw v prediction, converted with the step's start point and x
  };

  /// The kind of step `step` when it starts with the current history.
  [[nodiscard]] int kind_at(int step) const {
    if (step + 1 >= steps_) // never evaluate at the final point
      return plms;
    if (options_.skip_prk_steps)
      return history_.size() == 0 ? start : plms;
    return history_.size() < 3 ? prk : plms;
  }

  [[nodiscard]] bool diffusers() const { return options_.timesteps == PNDMTimesteps::diffusers; }

  /// Where a PRK step evaluates between its points.
  [[nodiscard]] TimePoint half_point(const SolverStep& step) const {
    const double t = step.from().timestep, t_next = step.to().timestep;
    return step.trajectory->point_at(diffusers() ? t_next + half_ : 0.5 * (t + t_next));
  }

  /// The point at model time t for a transfer of `step`: a trajectory point where t is one,
  /// the final point below 0 (diffusers' final_alpha_cumprod), else the schedule's point_at(t).
  [[nodiscard]] static TimePoint at(const SolverStep& step, double t) {
    if (t == step.to().timestep)
      return step.to();
    if (t == step.from().timestep)
      return step.from();
    if (t < 0)
      return step.trajectory->points.back();
    return step.trajectory->point_at(t);
  }

  /// Where the latents of the step's last transfer land: t - r under diffusers' rule.
  [[nodiscard]] TimePoint landing(const SolverStep& step) const {
    return diffusers() ? at(step, step.from().timestep - ratio_) : step.to();
  }

  /// out = DDIM's transfer of x from `from` to `to` with e = sum of the entries' weight * tensor,
  /// a v entry converted to eps with (from, x) as diffusers does. `out` may be x.
  template <class Backend, std::size_t N>
  static void transfer(Backend& backend, View out, ConstView x, const TimePoint& from,
                       const TimePoint& to, const std::array<Entry, N>& entries, int count) {
    const double x_coeff = to.alpha / from.alpha;
    const double e_coeff = to.sigma - to.alpha * (from.sigma / from.alpha);
    const PredictionConversion v = conversion(Prediction::v, from.alpha, from.sigma);
    std::array<Term, 5> terms{};
    double on_x = x_coeff;
    for (int j = 0; j < count; ++j) {
      const Entry& entry = entries[static_cast<std::size_t>(j)];
      const double w = e_coeff * entry.weight;
      if (entry.v)
        on_x += w * v.eps_from_x;
      terms[static_cast<std::size_t>(j) + 1] =
          Term{static_cast<float>(entry.v ? w * v.eps_from_m : w), entry.tensor};
    }
    terms[0] = Term{static_cast<float>(on_x), x};
    multistep::combine(backend, out, terms, count + 1);
  }
  template <class Backend>
  static void transfer(Backend& backend, View out, ConstView x, const TimePoint& from,
                       const TimePoint& to, std::initializer_list<Entry> entries, int count) {
    std::array<Entry, 4> a{};
    std::size_t j = 0;
    for (const Entry& entry : entries)
      a[j++] = entry;
    transfer(backend, out, x, from, to, a, count);
  }

  PNDMOptions options_;
  multistep::History history_;    ///< diffusers' ets, newest first
  std::array<bool, 4> v_entry_{}; ///< whether history_[j] holds a raw v prediction
  AnyTensor stage_;               ///< the input of the step's next evaluation
  AnyTensor accumulated_;         ///< (e2 + e3) / 2 of a PRK step (an entry of weight 2/3)
  double ratio_ = 0;              ///< diffusers' r = N // n
  double half_ = 0;               ///< diffusers' h = r // 2
  int steps_ = 0;
  int kind_ = 0; ///< the kind of the current step, fixed at its first evaluation
  int last_kind_ = 0;
};

} // namespace tstitch
