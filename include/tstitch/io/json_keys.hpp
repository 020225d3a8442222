// SPDX-License-Identifier: Apache-2.0
#pragma once

// nlohmann::json keeps the last of two equal keys silently; an untrusted file that repeats a key
// is ambiguous, so the readers find the first repeat while the parser runs.

#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace tstitch::io::detail {

/// Feed it every event of nlohmann's parser callback; duplicate() then names the first repeat.
class DuplicateKeyFinder {
public:
  /// A repeated key and the top-level key it sits under ("" for a key of the top level).
  struct Duplicate {
    std::string context, key;
  };

  void on_event(int depth, nlohmann::json::parse_event_t event, const nlohmann::json& parsed) {
    using event_t = nlohmann::json::parse_event_t;
    if (event == event_t::object_start) {
      open_objects_.emplace_back();
    } else if (event == event_t::object_end) {
      if (!open_objects_.empty())
        open_objects_.pop_back();
    } else if (event == event_t::key && !open_objects_.empty()) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (depth == 1)
        top_level_key_ = key;
      if (!open_objects_.back().insert(key).second && !duplicate_)
        duplicate_ = Duplicate{depth == 1 ? std::string() : top_level_key_, key};
    }
  }

  [[nodiscard]] const std::optional<Duplicate>& duplicate() const { return duplicate_; }

private:
  std::vector<std::set<std::string>> open_objects_; // the keys seen in each open object
  std::string top_level_key_;
  std::optional<Duplicate> duplicate_;
};

} // namespace tstitch::io::detail
