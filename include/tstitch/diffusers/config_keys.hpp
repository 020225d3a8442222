// SPDX-License-Identifier: Apache-2.0
#pragma once

// Reading a diffusers scheduler_config.json key by key. Every key a config holds must be read by
// the class it names; whatever is left at the end is either a key of another diffusers scheduler
// (diffusers ignores those too, so tstitch logs and ignores them) or a key no scheduler has, which
// is an error. A key whose value tstitch cannot honour is an error naming the key and the value.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "tstitch/core/error.hpp"
#include "tstitch/core/log.hpp"

namespace tstitch::diffusers_config {

using json = nlohmann::json;

/// Every constructor argument of diffusers' schedulers (0.31): keys that some class takes. A key
/// outside this list is a typo or a key of something else, never silently accepted.
// clang-format off
inline constexpr auto known_keys = std::to_array<std::string_view>({
    "algorithm_type", "alpha_cum_end", "alpha_cum_start", "base_image_seq_len", "base_shift",
    "beta_end", "beta_schedule", "beta_start", "clip_denoised", "clip_sample", "clip_sample_range",
    "correct_steps", "corrector_order", "disable_corrector", "dynamic_thresholding_ratio", "eta",
    "euler_at_final", "final_sigmas_type", "flow_shift", "gamma_cum_end", "gamma_cum_start",
    "interpolation_type", "invert_sigmas", "lambda_min_clipped", "lower_order_final",
    "mask_token_id", "masking_schedule", "max_image_seq_len", "max_shift", "noise_sampler_seed",
    "num_train_timesteps", "num_vec_classes", "original_inference_steps", "predict_x0",
    "prediction_type", "predictor_order", "rescale_betas_zero_snr", "rho", "s", "s_noise",
    "sample_max_value", "sampling_eps", "scaler", "set_alpha_to_one", "set_alpha_to_zero", "shift",
    "shift_terminal", "sigma_data", "sigma_max", "sigma_min", "sigma_schedule", "skip_prk_steps",
    "snr", "snr_shift_scale", "solver_order", "solver_p", "solver_type", "steps_offset",
    "stochastic_sampling", "tau_func", "thresholding", "time_shift_type", "timestep_scaling",
    "timestep_spacing", "timestep_type", "trained_betas", "use_beta_sigmas",
    "use_dynamic_shifting", "use_exponential_sigmas", "use_flow_sigmas", "use_karras_sigmas",
    "use_lu_lambdas", "variance_type",
});
// clang-format on

/// Python's json module writes non-finite floats as the bare tokens NaN, Infinity and -Infinity
/// (DPM-Solver's lambda_min_clipped = -inf is saved so), which strict JSON rejects. Outside
/// strings they become the strings "nan", "inf" and "-inf", which number() reads.
[[nodiscard]] inline std::string quote_python_tokens(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 16);
  bool in_string = false;
  int depth = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      out += c;
      if (c == '\\' && i + 1 < text.size())
        out += text[++i];
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
      out += c;
      continue;
    }
    // A scheduler config nests two levels at most; a deeply nested hostile file is refused here,
    // before any recursive code (a JSON library's destructor, say) could run out of stack.
    constexpr int max_depth = 32;
    if (c == '[' || c == '{') {
      if (++depth > max_depth)
        throw_invalid_argument("scheduler config", "(not shown)",
                               detail::concat("nests deeper than ", max_depth,
                                              " levels; a scheduler config is a flat object"));
    } else if (c == ']' || c == '}') {
      --depth;
    }
    bool replaced = false;
    for (auto [token, as] : {std::pair{"-Infinity", "\"-inf\""}, std::pair{"Infinity", "\"inf\""},
                             std::pair{"NaN", "\"nan\""}}) {
      if (text.substr(i).starts_with(token)) {
        out += as;
        i += std::string_view(token).size() - 1;
        replaced = true;
        break;
      }
    }
    if (!replaced)
      out += c;
  }
  return out;
}

/// The text of a config: `path_or_json` itself when it starts with '{' (or '[', to refuse it as
/// JSON rather than as a path), otherwise the file it
/// names, or <dir>/scheduler_config.json, or <dir>/scheduler/scheduler_config.json for a model
/// folder. Only regular files are opened (a FIFO would block), at most 1 MiB.
[[nodiscard]] inline std::string config_text(std::string_view path_or_json) {
  const auto first = path_or_json.find_first_not_of(" \t\r\n");
  if (first != std::string_view::npos && (path_or_json[first] == '{' || path_or_json[first] == '['))
    return std::string(path_or_json);
  namespace fs = std::filesystem;
  fs::path path{std::string(path_or_json)};
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    for (const fs::path& candidate :
         {path / "scheduler_config.json", path / "scheduler" / "scheduler_config.json"})
      if (fs::exists(candidate, ec)) {
        path = candidate;
        break;
      }
    if (fs::is_directory(path, ec))
      throw_invalid_argument("scheduler config", path.string(),
                             "is a directory without scheduler_config.json or "
                             "scheduler/scheduler_config.json");
  }
  if (!fs::exists(path, ec))
    throw_invalid_argument("scheduler config", path.string(), "no such file");
  if (!fs::is_regular_file(path, ec))
    throw_invalid_argument("scheduler config", path.string(), "is not a regular file");
  const auto size = fs::file_size(path, ec);
  if (ec)
    throw runtime_error(detail::concat("tstitch: cannot read scheduler config ", path.string(),
                                       ": ", ec.message()));
  constexpr std::uintmax_t limit = 1u << 20;
  if (size > limit)
    throw_invalid_argument(
        "scheduler config", path.string(),
        detail::concat("is ", size, " bytes; a scheduler config is at most ", limit));
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  if (!in && !in.eof())
    throw runtime_error(detail::concat("tstitch: cannot read scheduler config ", path.string()));
  return text.str();
}

/// The keys of one config, read by name and checked off as they are read.
class ConfigKeys {
public:
  explicit ConfigKeys(std::string_view path_or_json) {
    const std::string text = quote_python_tokens(config_text(path_or_json));
    // quote_python_tokens has refused deep nesting; values are only read by type.
    json parsed = json::parse(text, nullptr, false);
    if (parsed.is_discarded() || !parsed.is_object())
      throw_invalid_argument("scheduler config", "(not shown)",
                             "is not a JSON object; expected a diffusers scheduler_config.json");
    config_ = std::move(parsed);
  }

  /// "_class_name": which diffusers scheduler the config is for.
  [[nodiscard]] std::string class_name() {
    const std::string name = text("_class_name", "");
    if (name.empty())
      throw_invalid_argument("_class_name", "(missing)",
                             "a diffusers scheduler config names its class in _class_name");
    return name;
  }

  [[nodiscard]] bool has(std::string_view key) const {
    const auto it = config_.find(key);
    return it != config_.end() && !it->is_null();
  }

  /// A number; JSON null or a missing key gives `fallback`. "inf", "-inf" and "nan" are read as
  /// the Python tokens they stand for.
  [[nodiscard]] double number(std::string_view key, double fallback) {
    return optional_number(key).value_or(fallback);
  }

  [[nodiscard]] std::optional<double> optional_number(std::string_view key) {
    const json* v = take(key);
    if (v == nullptr)
      return std::nullopt;
    if (v->is_number())
      return v->get<double>();
    if (v->is_string()) {
      const auto& s = v->get_ref<const std::string&>();
      if (s == "inf")
        return std::numeric_limits<double>::infinity();
      if (s == "-inf")
        return -std::numeric_limits<double>::infinity();
      if (s == "nan")
        return std::numeric_limits<double>::quiet_NaN();
    }
    throw_invalid_argument(key, shown(*v), "must be a number");
  }

  [[nodiscard]] int integer(std::string_view key, int fallback) {
    const json* v = take(key);
    if (v == nullptr)
      return fallback;
    if (v->is_number_unsigned() && v->get<unsigned long long>() > std::numeric_limits<int>::max())
      throw_invalid_argument(key, shown(*v), "must be an integer that fits in 32 bits");
    if (v->is_number_integer()) {
      const auto i = v->get<long long>();
      if (i >= std::numeric_limits<int>::min() && i <= std::numeric_limits<int>::max())
        return static_cast<int>(i);
    }
    throw_invalid_argument(key, shown(*v), "must be an integer that fits in 32 bits");
  }

  [[nodiscard]] bool boolean(std::string_view key, bool fallback) {
    const json* v = take(key);
    if (v == nullptr)
      return fallback;
    if (!v->is_boolean())
      throw_invalid_argument(key, shown(*v), "must be true or false");
    return v->get<bool>();
  }

  [[nodiscard]] std::string text(std::string_view key, std::string_view fallback) {
    const json* v = take(key);
    if (v == nullptr)
      return std::string(fallback);
    if (!v->is_string())
      throw_invalid_argument(key, shown(*v), "must be a string");
    return v->get<std::string>();
  }

  /// One of `allowed`; anything else is an error listing them.
  template <std::size_t N>
  [[nodiscard]] std::string choice(std::string_view key, std::string_view fallback,
                                   const std::array<std::string_view, N>& allowed) {
    std::string value = text(key, fallback);
    if (std::find(allowed.begin(), allowed.end(), value) == allowed.end()) {
      std::string list;
      for (std::string_view a : allowed)
        list += (list.empty() ? "" : ", ") + std::string(a);
      throw_invalid_argument(key, detail::concat('"', value, '"'),
                             detail::concat("tstitch supports ", list, " here"));
    }
    return value;
  }

  [[nodiscard]] std::vector<double> numbers(std::string_view key) {
    const json* v = take(key);
    if (v == nullptr)
      return {};
    if (!v->is_array())
      throw_invalid_argument(key, shown(*v), "must be a list of numbers or null");
    std::vector<double> out;
    out.reserve(v->size());
    for (const json& e : *v) {
      if (!e.is_number())
        throw_invalid_argument(key, shown(*v), "must be a list of numbers or null");
      out.push_back(e.get<double>());
    }
    return out;
  }

  [[nodiscard]] std::vector<int> integers(std::string_view key) {
    std::vector<int> out;
    for (double d : numbers(key)) {
      if (d != std::floor(d) || std::abs(d) > 1e9)
        throw_invalid_argument(key, d, "must be a list of integers");
      out.push_back(static_cast<int>(d));
    }
    return out;
  }

  /// A key this class has in diffusers whose only value tstitch honours is `supported` (or null):
  /// any other value is an error naming the key, the value and `why`.
  void only(std::string_view key, const json& supported, std::string_view why) {
    const json* v = take(key);
    if (v != nullptr && *v != supported)
      throw_invalid_argument(key, shown(*v), why);
  }

  /// Checks off the keys diffusers' class does not use either (`_class_name` and the metadata
  /// keys, and keys of other schedulers, which diffusers ignores with a warning). Throws on a key
  /// no diffusers scheduler has. Returns the keys ignored, each also logged as a warning.
  [[nodiscard]] std::vector<std::string> finish(std::string_view class_name) {
    std::vector<std::string> ignored;
    for (const auto& [key, value] : config_.items()) {
      if (read_.contains(key) || key.starts_with("_"))
        continue;
      if (std::find(known_keys.begin(), known_keys.end(), key) == known_keys.end())
        throw_invalid_argument(key, shown(value),
                               detail::concat("is not a key of any diffusers scheduler; ",
                                              class_name, " cannot honour it"));
      ignored.push_back(key);
      log(LogLevel::warning,
          detail::concat("scheduler config key ", key, " = ", shown(value), " is not used by ",
                         class_name, " (diffusers ignores it too)"));
    }
    return ignored;
  }

private:
  /// The value of `key`, marked as read; nullptr when absent or null.
  const json* take(std::string_view key) {
    read_.insert(std::string(key));
    const auto it = config_.find(key);
    if (it == config_.end() || it->is_null())
      return nullptr;
    return &*it;
  }

  /// A value for an error message, cut short: it may come from a hostile file.
  [[nodiscard]] static std::string shown(const json& v) {
    std::string s = v.is_structured() ? (v.is_array() ? "[...]" : "{...}") : v.dump();
    if (s.size() > 80)
      s = s.substr(0, 77) + "...";
    return s;
  }

  json config_;
  std::set<std::string, std::less<>> read_;
};

} // namespace tstitch::diffusers_config
