// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <memory>
#include <type_traits>
#include <utility>

#include "tstitch/schedule/trajectory.hpp"

namespace tstitch {

/// Any NoiseSchedule as one type (it holds a shared, immutable copy): for interfaces compiled
/// once, such as cuda::DeviceSampler, which takes its schedule as an AnySchedule so that
/// DiscreteSchedule, FlowMatchSchedule, LCMSchedule, ContinuousSchedule and a user's own schedule
/// all reach it. Every member forwards to the held schedule, so the numbers are its numbers.
class AnySchedule {
public:
  template <NoiseSchedule S>
  requires(!std::same_as<std::remove_cvref_t<S>, AnySchedule>) AnySchedule(S schedule) // NOLINT
      : schedule_(std::make_shared<const S>(std::move(schedule))),
        point_([](const void* s, double t) { return static_cast<const S*>(s)->point(t); }),
        timestep_at_([](const void* s, double ve_sigma) -> double {
          return static_cast<const S*>(s)->timestep_at(ve_sigma);
        }),
        trajectory_([](const void* s, int n) { return static_cast<const S*>(s)->trajectory(n); }) {}

  [[nodiscard]] TimePoint point(double t) const { return point_(schedule_.get(), t); }
  [[nodiscard]] double timestep_at(double ve_sigma) const {
    return timestep_at_(schedule_.get(), ve_sigma);
  }
  [[nodiscard]] Trajectory trajectory(int n) const { return trajectory_(schedule_.get(), n); }

private:
  std::shared_ptr<const void> schedule_;
  TimePoint (*point_)(const void*, double);
  double (*timestep_at_)(const void*, double);
  Trajectory (*trajectory_)(const void*, int);
};

static_assert(NoiseSchedule<AnySchedule>);

} // namespace tstitch
