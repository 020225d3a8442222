// SPDX-License-Identifier: Apache-2.0
#pragma once

// A quality table: small-model fraction -> metric (lower is better, e.g. a Frechet distance),
// measured for one model pair, step count and solver, and read from a small JSON file such as
// models/fashion_quality.json. The reader is self-contained (the core library has no JSON
// dependency) and accepts only what the format needs: bounded size, depth and lengths, no string
// escapes beyond \" and \\, finite numbers. Every error names the key and the value.

#include <cmath>
#include <cstddef>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "tstitch/core/error.hpp"

namespace tstitch {
namespace plan {

struct QualityEntry {
  double fraction = 0; ///< small-model fraction of the steps, in [0, 1]
  double value = 0;    ///< the metric there; lower is better
};

struct QualityTable {
  std::string metric;                ///< e.g. "FD-cls"
  std::vector<QualityEntry> entries; ///< strictly increasing fractions
  int steps = 0;                     ///< the step count the table was measured at (0: unknown)
  std::string date, machine, command;

  /// Throws tstitch::invalid_argument naming the first bad entry.
  void validate() const {
    require(!entries.empty(), "quality table entries", "[]", "must hold at least one entry");
    for (std::size_t i = 0; i < entries.size(); ++i) {
      const QualityEntry& e = entries[i];
      if (!(e.fraction >= 0.0 && e.fraction <= 1.0))
        throw_invalid_argument(detail::concat("quality table fractions[", i, "]"), e.fraction,
                               "must be in [0, 1]");
      if (!std::isfinite(e.value))
        throw_invalid_argument(detail::concat("quality table ", metric, "[", i, "]"), e.value,
                               "must be finite");
      if (i > 0 && !(e.fraction > entries[i - 1].fraction))
        throw_invalid_argument(detail::concat("quality table fractions[", i, "]"), e.fraction,
                               "fractions must increase strictly");
    }
  }
};

} // namespace plan

namespace detail::json_lite {

inline constexpr std::size_t max_text = 1 << 16; // 64 KiB: a table is a few hundred bytes
inline constexpr int max_depth = 4;
inline constexpr std::size_t max_items = 1024;
inline constexpr std::size_t max_string = 1024;

struct Value;
using Object = std::map<std::string, Value, std::less<>>;
using Array = std::vector<Value>;
struct Value {
  std::variant<std::nullptr_t, bool, double, std::string, std::shared_ptr<Array>,
               std::shared_ptr<Object>>
      v;
};

class Parser {
public:
  explicit Parser(std::string_view text) : s_(text) {
    require(text.size() <= max_text, "quality table size (bytes)", text.size(),
            detail::concat("must be at most ", max_text));
  }

  Value document() {
    Value v = value(0);
    skip();
    if (i_ != s_.size())
      fail("trailing characters after the JSON value");
    return v;
  }

private:
  [[noreturn]] void fail(std::string_view what) const {
    const std::string near(s_.substr(i_, 20));
    throw_invalid_argument(detail::concat("quality table JSON at byte ", i_), '"' + near + '"',
                           what);
  }
  void skip() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\r' || s_[i_] == '\t'))
      ++i_;
  }
  bool eat(char c) {
    skip();
    if (i_ < s_.size() && s_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  void expect(char c) {
    if (!eat(c))
      fail(detail::concat("expected '", c, "'"));
  }
  bool word(std::string_view w) {
    if (s_.substr(i_, w.size()) != w)
      return false;
    i_ += w.size();
    return true;
  }

  std::string string() {
    expect('"');
    std::string out;
    while (true) {
      if (i_ >= s_.size())
        fail("unterminated string");
      const char c = s_[i_++];
      if (c == '"')
        break;
      if (c == '\\') {
        if (i_ < s_.size() && (s_[i_] == '"' || s_[i_] == '\\'))
          out.push_back(s_[i_++]);
        else
          fail("only the escapes \\\" and \\\\ are accepted");
      } else if (static_cast<unsigned char>(c) < 0x20) {
        fail("control character in a string");
      } else {
        out.push_back(c);
      }
      if (out.size() > max_string)
        fail(detail::concat("string longer than ", max_string, " bytes"));
    }
    return out;
  }

  double number() {
    const std::size_t begin = i_;
    while (i_ < s_.size() && i_ - begin < 64 &&
           (std::isdigit(static_cast<unsigned char>(s_[i_])) || s_[i_] == '-' || s_[i_] == '+' ||
            s_[i_] == '.' || s_[i_] == 'e' || s_[i_] == 'E'))
      ++i_;
    const std::string token(s_.substr(begin, i_ - begin));
    char* end = nullptr;
    const double v = token.empty() ? 0.0 : std::strtod(token.c_str(), &end);
    if (token.empty() || end != token.c_str() + token.size() || !std::isfinite(v)) {
      i_ = begin;
      fail("expected a finite number");
    }
    return v;
  }

  Value value(int depth) {
    if (depth > max_depth)
      fail(detail::concat("nested deeper than ", max_depth));
    skip();
    if (i_ >= s_.size())
      fail("unexpected end of text");
    const char c = s_[i_];
    if (c == '"')
      return {string()};
    if (c == '{') {
      ++i_;
      auto obj = std::make_shared<Object>();
      if (!eat('}')) {
        do {
          skip();
          std::string key = string();
          expect(':');
          if (obj->count(key))
            fail(detail::concat("duplicate key \"", key, "\""));
          if (obj->size() >= max_items)
            fail("too many keys");
          obj->emplace(std::move(key), value(depth + 1));
        } while (eat(','));
        expect('}');
      }
      return {obj};
    }
    if (c == '[') {
      ++i_;
      auto arr = std::make_shared<Array>();
      if (!eat(']')) {
        do {
          if (arr->size() >= max_items)
            fail(detail::concat("array longer than ", max_items));
          arr->push_back(value(depth + 1));
        } while (eat(','));
        expect(']');
      }
      return {arr};
    }
    if (word("true"))
      return {true};
    if (word("false"))
      return {false};
    if (word("null"))
      return {nullptr};
    return {number()};
  }

  std::string_view s_;
  std::size_t i_ = 0;
};

} // namespace detail::json_lite

namespace plan {

/// Reads a quality table from JSON text:
///     {"metric": "FD-cls", "fractions": [0.0, 0.1, ...], "values": {"FD-cls": [37.9, ...]},
///      "steps": 50, "date": "...", "machine": "...", "command": "..."}
/// `metric` picks one of "values" (empty: the file's "metric"). Other keys are ignored (notes).
[[nodiscard]] inline QualityTable parse_quality_table(std::string_view text,
                                                      std::string_view metric = {}) {
  using namespace detail::json_lite;
  const Value doc = Parser(text).document();
  const auto* root = std::get_if<std::shared_ptr<Object>>(&doc.v);
  if (!root)
    throw_invalid_argument("quality table", "the JSON document", "must be an object");
  auto find = [&](const Object& o, std::string_view key) -> const Value& {
    const auto it = o.find(key);
    if (it == o.end())
      throw_invalid_argument(detail::concat("quality table key \"", key, "\""), "missing",
                             "is required");
    return it->second;
  };
  auto text_of = [&](std::string_view key) -> std::string {
    const auto it = (*root)->find(key);
    if (it == (*root)->end())
      return {};
    const auto* s = std::get_if<std::string>(&it->second.v);
    if (!s)
      throw_invalid_argument(detail::concat("quality table key \"", key, "\""), "not a string",
                             "must be a string");
    return *s;
  };
  auto numbers = [&](const Value& v, std::string_view key) {
    const auto* a = std::get_if<std::shared_ptr<Array>>(&v.v);
    if (!a)
      throw_invalid_argument(detail::concat("quality table key \"", key, "\""), "not an array",
                             "must be an array of numbers");
    std::vector<double> out;
    for (std::size_t i = 0; i < (*a)->size(); ++i) {
      const auto* d = std::get_if<double>(&(**a)[i].v);
      if (!d)
        throw_invalid_argument(detail::concat("quality table ", key, "[", i, "]"), "not a number",
                               "must be a finite number");
      out.push_back(*d);
    }
    return out;
  };

  QualityTable table;
  table.metric = metric.empty() ? text_of("metric") : std::string(metric);
  table.date = text_of("date");
  table.machine = text_of("machine");
  table.command = text_of("command");
  if (const auto it = (*root)->find("steps"); it != (*root)->end()) {
    const auto* d = std::get_if<double>(&it->second.v);
    if (!d || !(*d >= 1 && *d <= 1e6 && std::floor(*d) == *d))
      throw_invalid_argument("quality table key \"steps\"", d ? *d : -1.0,
                             "must be a whole number in [1, 1000000]");
    table.steps = static_cast<int>(*d);
  }
  const std::vector<double> fractions = numbers(find(**root, "fractions"), "fractions");
  const Value& values = find(**root, "values");
  const auto* by_metric = std::get_if<std::shared_ptr<Object>>(&values.v);
  if (!by_metric)
    throw_invalid_argument("quality table key \"values\"", "not an object",
                           "must map metric names to arrays");
  const auto it = (*by_metric)->find(table.metric);
  if (it == (*by_metric)->end())
    throw_invalid_argument("quality table metric", '"' + table.metric + '"',
                           "is not a key of \"values\"");
  const std::vector<double> metric_values = numbers(it->second, table.metric);
  require(metric_values.size() == fractions.size(),
          detail::concat("quality table ", table.metric, " length"), metric_values.size(),
          detail::concat("must equal the number of fractions, ", fractions.size()));
  for (std::size_t i = 0; i < fractions.size(); ++i)
    table.entries.push_back({fractions[i], metric_values[i]});
  table.validate();
  return table;
}

/// Reads a quality table file; see parse_quality_table.
[[nodiscard]] inline QualityTable load_quality_table(const std::string& path,
                                                     std::string_view metric = {}) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw runtime_error(detail::concat("tstitch: quality table \"", path, "\": cannot open"));
  std::string text(detail::json_lite::max_text + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<std::size_t>(in.gcount()));
  return parse_quality_table(text, metric);
}

} // namespace plan
} // namespace tstitch
