// SPDX-License-Identifier: Apache-2.0
#pragma once

// Reads a planner's quality table (tstitch/plan/quality_table.hpp) from JSON:
//     {"metric": "FD-cls", "fractions": [0.0, 0.1, ...], "values": {"FD-cls": [37.9, ...]},
//      "steps": 50, "date": "...", "machine": "...", "command": "..."}
// The file is untrusted: its size and nesting are bounded before anything recursive runs,
// duplicate keys are refused, and every error names the key and the value.

#include <cmath>
#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "tstitch/core/error.hpp"
#include "tstitch/io/json_keys.hpp"
#include "tstitch/io/mapped_file.hpp"
#include "tstitch/plan/quality_table.hpp"

namespace tstitch::plan {

namespace quality_table_limits {
inline constexpr std::size_t max_bytes = 1 << 16; // 64 KiB: a table is a few hundred bytes
inline constexpr int max_depth = 4; // the format nests 2 levels: {"values": {"m": []}}
} // namespace quality_table_limits

namespace quality_table_detail {

// Parses with a depth limit and duplicate-key check; the callback runs as the parser meets each
// token, so a hostile file is refused before a deep value exists.
[[nodiscard]] inline nlohmann::json parse_quality_json(std::string_view text) {
  using nlohmann::json;
  require(text.size() <= quality_table_limits::max_bytes, "quality table size (bytes)", text.size(),
          tstitch::detail::concat("must be at most ", quality_table_limits::max_bytes));
  io::detail::DuplicateKeyFinder keys;
  const json::parser_callback_t check = [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth > quality_table_limits::max_depth)
      throw_invalid_argument("quality table nesting", depth,
                             tstitch::detail::concat("must be at most ",
                                                     quality_table_limits::max_depth,
                                                     " (nested deeper than the format)"));
    keys.on_event(depth, event, parsed);
    if (const auto& duplicate = keys.duplicate())
      throw_invalid_argument("quality table key", '"' + duplicate->key + '"', "is a duplicate key");
    return true;
  };
  try {
    return json::parse(text.begin(), text.end(), check);
  } catch (const json::exception& e) {
    std::string why = e.what();
    if (why.size() > 200) // nlohmann quotes the last token read, which a hostile file controls
      why = why.substr(0, 200) + "...";
    throw invalid_argument(
        tstitch::detail::concat("tstitch: quality table: not valid JSON: ", why));
  }
}

[[nodiscard]] inline std::vector<double> quality_numbers(const nlohmann::json& array,
                                                         std::string_view key) {
  if (!array.is_array())
    throw_invalid_argument(tstitch::detail::concat("quality table key \"", key, "\""),
                           array.type_name(), "must be an array of numbers");
  std::vector<double> out;
  for (std::size_t i = 0; i < array.size(); ++i) {
    if (!array[i].is_number())
      throw_invalid_argument(tstitch::detail::concat("quality table ", key, "[", i, "]"),
                             array[i].type_name(), "must be a finite number");
    out.push_back(array[i].get<double>());
  }
  return out;
}

[[nodiscard]] inline std::string quality_text(const nlohmann::json& root, const char* key) {
  const auto it = root.find(key);
  if (it == root.end())
    return {};
  if (!it->is_string())
    throw_invalid_argument(tstitch::detail::concat("quality table key \"", key, "\""),
                           it->type_name(), "must be a string");
  return it->get<std::string>();
}

} // namespace quality_table_detail

/// Reads a quality table from JSON text. `metric` picks one of "values" (empty: the file's
/// "metric"). Other keys are ignored (notes, provenance).
[[nodiscard]] inline QualityTable parse_quality_table(std::string_view text,
                                                      std::string_view metric = {}) {
  const nlohmann::json root = quality_table_detail::parse_quality_json(text);
  if (!root.is_object())
    throw_invalid_argument("quality table", root.type_name(), "must be an object");
  auto find = [&](const nlohmann::json& object, const char* key) -> const nlohmann::json& {
    const auto it = object.find(key);
    if (it == object.end())
      throw_invalid_argument(tstitch::detail::concat("quality table key \"", key, "\""), "missing",
                             "is required");
    return *it;
  };

  QualityTable table;
  table.metric =
      metric.empty() ? quality_table_detail::quality_text(root, "metric") : std::string(metric);
  table.date = quality_table_detail::quality_text(root, "date");
  table.machine = quality_table_detail::quality_text(root, "machine");
  table.command = quality_table_detail::quality_text(root, "command");
  if (const auto it = root.find("steps"); it != root.end()) {
    if (!it->is_number())
      throw_invalid_argument("quality table key \"steps\"", it->type_name(),
                             "must be a whole number in [1, 1000000]");
    const double steps = it->get<double>();
    if (!(steps >= 1 && steps <= 1e6 && std::floor(steps) == steps))
      throw_invalid_argument("quality table key \"steps\"", steps,
                             "must be a whole number in [1, 1000000]");
    table.steps = static_cast<int>(steps);
  }
  const std::vector<double> fractions =
      quality_table_detail::quality_numbers(find(root, "fractions"), "fractions");
  const nlohmann::json& values = find(root, "values");
  if (!values.is_object())
    throw_invalid_argument("quality table key \"values\"", values.type_name(),
                           "must map metric names to arrays");
  const auto it = values.find(table.metric);
  if (it == values.end())
    throw_invalid_argument("quality table metric", '"' + table.metric + '"',
                           "is not a key of \"values\"");
  const std::vector<double> metric_values =
      quality_table_detail::quality_numbers(*it, table.metric);
  require(metric_values.size() == fractions.size(),
          tstitch::detail::concat("quality table ", table.metric, " length"), metric_values.size(),
          tstitch::detail::concat("must equal the number of fractions, ", fractions.size()));
  for (std::size_t i = 0; i < fractions.size(); ++i)
    table.entries.push_back({fractions[i], metric_values[i]});
  table.validate();
  return table;
}

/// Reads a quality table file (a regular file of at most 64 KiB); see parse_quality_table.
[[nodiscard]] inline QualityTable load_quality_table(const std::filesystem::path& path,
                                                     std::string_view metric = {}) {
  const io::MappedFile file(path, io::LoadMode::read);
  require(file.size() <= quality_table_limits::max_bytes,
          tstitch::detail::concat("quality table \"", path.string(), "\" size (bytes)"),
          file.size(),
          tstitch::detail::concat("must be at most ", quality_table_limits::max_bytes));
  const std::string_view text(reinterpret_cast<const char*>(file.data()), file.size());
  try {
    return parse_quality_table(text, metric);
  } catch (const invalid_argument& e) {
    throw invalid_argument(
        tstitch::detail::concat("tstitch: quality table \"", path.string(), "\": ", e.what()));
  }
}

} // namespace tstitch::plan
