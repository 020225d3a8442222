// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>

namespace tstitch {

/// Every exception tstitch throws derives from `tstitch::error` *and* from the matching standard
/// type, so callers can catch either `const tstitch::error&` (everything from this library) or
/// `const std::invalid_argument&` / `const std::runtime_error&` (everything of that kind).
class error {
public:
  virtual ~error() = default;
  [[nodiscard]] virtual const char* message() const noexcept = 0;
};

/// A caller passed a value that can never work: zero steps, fractions that do not sum to 1,
/// mismatched shapes. The message names the parameter and its value.
class invalid_argument : public std::invalid_argument, public error {
public:
  explicit invalid_argument(const std::string& what) : std::invalid_argument(what) {}
  [[nodiscard]] const char* message() const noexcept override { return what(); }
};

/// Something went wrong while running: a model produced NaN or Inf, a file could not be read.
class runtime_error : public std::runtime_error, public error {
public:
  explicit runtime_error(const std::string& what) : std::runtime_error(what) {}
  [[nodiscard]] const char* message() const noexcept override { return what(); }
};

/// NaN or Inf appeared in the latents or in a model output during sampling.
class numerical_error : public runtime_error {
public:
  using runtime_error::runtime_error;
};

namespace detail {

template <class... Parts> std::string concat(const Parts&... parts) {
  std::ostringstream out;
  out.precision(17);
  (out << ... << parts);
  return out.str();
}

} // namespace detail

/// Throws tstitch::invalid_argument with the message
/// "tstitch: <parameter> = <value>: <requirement>".
template <class Value>
[[noreturn]] void throw_invalid_argument(std::string_view parameter, const Value& value,
                                         std::string_view requirement) {
  throw invalid_argument(detail::concat("tstitch: ", parameter, " = ", value, ": ", requirement));
}

/// Checks a precondition on a named argument; see throw_invalid_argument.
template <class Value>
void require(bool condition, std::string_view parameter, const Value& value,
             std::string_view requirement) {
  if (!condition)
    throw_invalid_argument(parameter, value, requirement);
}

} // namespace tstitch
