// SPDX-License-Identifier: Apache-2.0
#pragma once

// Reading DiT config values from safetensors metadata, which holds strings only: every writer
// turns its numbers and booleans into text, and Python's writers spell them in several ways.

#include <charconv>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

#include "tstitch/core/error.hpp"

namespace tstitch::dit {

/// A metadata value as error messages show it: quoted, cut after 64 characters (a hostile file
/// may hold megabytes there), so that stray spaces and empty strings are visible.
[[nodiscard]] inline std::string shown_metadata_value(std::string_view value) {
  constexpr std::size_t shown = 64;
  if (value.size() <= shown)
    return detail::concat("'", value, "'");
  return detail::concat("'", value.substr(0, shown), "...' (", value.size(), " characters)");
}

/// A boolean as Python's and PyTorch's tools write it into string metadata: "true"/"false"
/// (json.dumps, tstitch's own writers), "True"/"False" (str(True)), "1"/"0" (str(int(b))).
/// Nothing else, in particular no other capitalisation and no whitespace.
[[nodiscard]] inline std::optional<bool> parse_metadata_bool(std::string_view text) {
  if (text == "true" || text == "True" || text == "1")
    return true;
  if (text == "false" || text == "False" || text == "0")
    return false;
  return std::nullopt;
}

/// Why parse_metadata_integer refused a value.
enum class MetadataIntegerError { not_a_number, not_integral, out_of_range };

/// What parse_metadata_integer read: the value, or why it refused the text.
struct MetadataInteger {
  std::int64_t value = 0;
  std::optional<MetadataIntegerError> error;
};

/// An integer as str(int) writes it ("4", "-4"; a leading "+" is allowed too), or an integral
/// float as str(float) writes it ("4.0": DiT's own mlp_ratio is the float 4.0): decimal digits,
/// then optionally "." and one or more zeros. Refused: whitespace (Python's writers emit none,
/// and a value padded by hand is more likely a mistake than a number), exponents ("4e0"), hex,
/// "4." and ".5", fractions ("4.5"), and values outside int64.

[[nodiscard]] inline MetadataInteger parse_metadata_integer(std::string_view text) {
  std::size_t i = 0;
  const bool negative = !text.empty() && text[0] == '-';
  if (!text.empty() && (text[0] == '+' || text[0] == '-'))
    ++i;
  const auto is_digit = [](char c) { return c >= '0' && c <= '9'; };
  const std::size_t digits_begin = i;
  while (i < text.size() && is_digit(text[i]))
    ++i;
  const std::string_view digits = text.substr(digits_begin, i - digits_begin);
  if (digits.empty())
    return {0, MetadataIntegerError::not_a_number};
  if (i < text.size()) {
    if (text[i] != '.' || i + 1 == text.size())
      return {0, MetadataIntegerError::not_a_number};
    for (std::size_t k = i + 1; k < text.size(); ++k) {
      if (!is_digit(text[k]))
        return {0, MetadataIntegerError::not_a_number};
      if (text[k] != '0')
        return {0, MetadataIntegerError::not_integral};
    }
  }
  // The magnitude in uint64, so that INT64_MIN's magnitude fits; from_chars reports overflow.
  std::uint64_t magnitude = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), magnitude);
  constexpr auto max = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  if (ec == std::errc::result_out_of_range || magnitude > max + (negative ? 1 : 0))
    return {0, MetadataIntegerError::out_of_range};
  if (ec != std::errc{} || end != digits.data() + digits.size())
    return {0, MetadataIntegerError::not_a_number};
  if (negative)
    return {magnitude == max + 1 ? std::numeric_limits<std::int64_t>::min()
                                 : -static_cast<std::int64_t>(magnitude),
            std::nullopt};
  return {static_cast<std::int64_t>(magnitude), std::nullopt};
}

/// The integer under `key`, or tstitch::invalid_argument naming the source, the key and the value.
[[nodiscard]] inline std::int64_t metadata_integer(std::string_view source, std::string_view key,
                                                   std::string_view text) {
  const MetadataInteger parsed = parse_metadata_integer(text);
  if (!parsed.error)
    return parsed.value;
  const char* why = *parsed.error == MetadataIntegerError::out_of_range
                        ? "is outside the 64-bit integer range"
                    : *parsed.error == MetadataIntegerError::not_integral
                        ? "is not a whole number"
                        : "is not an integer (decimal digits as Python's str(int) writes them, "
                          "or an integral float such as '4.0'; no spaces)";
  throw invalid_argument(detail::concat("tstitch: ", source, ": DiT metadata '", key,
                                        "' = ", shown_metadata_value(text), " ", why));
}

/// The boolean under `key`, or tstitch::invalid_argument naming the source, the key and the value.
[[nodiscard]] inline bool metadata_bool(std::string_view source, std::string_view key,
                                        std::string_view text) {
  if (const std::optional<bool> parsed = parse_metadata_bool(text))
    return *parsed;
  throw invalid_argument(detail::concat(
      "tstitch: ", source, ": DiT metadata '", key, "' = ", shown_metadata_value(text),
      " is not a boolean (true/false, True/False as Python's str(bool) writes "
      "them, or 1/0)"));
}

} // namespace tstitch::dit
