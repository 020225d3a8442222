// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

namespace tstitch {

/// How much tstitch reports about itself. `debug` names choices made once per shape or per
/// model (which kernel runs a layer, say); nothing is logged per step.
enum class LogLevel { debug = 0, info = 1, warning = 2, off = 3 };

[[nodiscard]] constexpr const char* to_string(LogLevel level) {
  switch (level) {
  case LogLevel::debug:
    return "debug";
  case LogLevel::info:
    return "info";
  case LogLevel::warning:
    return "warning";
  case LogLevel::off:
    return "off";
  }
  return "?";
}

/// Receives each message at or above the current level; called under a lock, from whichever
/// thread logs.
using LogSink = std::function<void(LogLevel, std::string_view)>;

namespace detail {

/// TSTITCH_LOG_LEVEL (debug, info, warning, off) at the first use; warning when unset or unknown.
inline LogLevel log_level_from_environment() {
  const char* value = std::getenv("TSTITCH_LOG_LEVEL");
  if (value == nullptr)
    return LogLevel::warning;
  const std::string_view v(value);
  for (LogLevel level : {LogLevel::debug, LogLevel::info, LogLevel::warning, LogLevel::off})
    if (v == to_string(level))
      return level;
  return LogLevel::warning;
}

struct LogState {
  std::mutex mutex;
  LogLevel level = log_level_from_environment();
  LogSink sink;
};

inline LogState& log_state() {
  static LogState state;
  return state;
}

} // namespace detail

/// Messages below `level` are dropped (and not even formatted by the library).
inline void set_log_level(LogLevel level) {
  auto& state = detail::log_state();
  const std::lock_guard lock(state.mutex);
  state.level = level;
}

[[nodiscard]] inline LogLevel log_level() {
  auto& state = detail::log_state();
  const std::lock_guard lock(state.mutex);
  return state.level;
}

/// Where messages go; an empty sink restores the default, one line "tstitch <level>: ..." on
/// stderr.
inline void set_log_sink(LogSink sink) {
  auto& state = detail::log_state();
  const std::lock_guard lock(state.mutex);
  state.sink = std::move(sink);
}

[[nodiscard]] inline bool log_enabled(LogLevel level) {
  return level != LogLevel::off && level >= log_level();
}

inline void log(LogLevel level, std::string_view message) {
  auto& state = detail::log_state();
  const std::lock_guard lock(state.mutex);
  if (level == LogLevel::off || level < state.level)
    return;
  if (state.sink)
    state.sink(level, message);
  else
    std::fprintf(stderr, "tstitch %s: %.*s\n", to_string(level), static_cast<int>(message.size()),
                 message.data());
}

} // namespace tstitch
