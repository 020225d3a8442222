// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <torch/cuda.h>
#include <torch/script.h>

#include "tstitch/core/denoiser.hpp"
#include "tstitch/core/error.hpp"
#include "tstitch/core/prediction.hpp"
#include "tstitch/core/step.hpp"
#include "tstitch/core/tensor.hpp"

namespace tstitch::libtorch {

/// The floating-point type a TorchScript module runs in.
enum class DType : std::uint8_t { f32, f16, bf16 };

[[nodiscard]] constexpr std::string_view to_string(DType d) {
  switch (d) {
  case DType::f32:
    return "f32";
  case DType::f16:
    return "f16";
  case DType::bf16:
    return "bf16";
  }
  return "unknown";
}

[[nodiscard]] inline torch::ScalarType scalar_type(DType d) {
  switch (d) {
  case DType::f16:
    return torch::kHalf;
  case DType::bf16:
    return torch::kBFloat16;
  case DType::f32:
    break;
  }
  return torch::kFloat;
}

/// How a TorchScript module is called as a denoiser: method(latents, timestep[, condition]) by
/// argument name, returning the raw prediction (N, output_channels, H, W).
struct Options {
  Prediction prediction = Prediction::epsilon;
  Shape latent_shape{}; ///< [C, H, W] of one latent sample; required
  std::string name = "LibTorch";
  std::string method = "forward";
  std::string latents_input = "x";   ///< latents (N, C, H, W) in `dtype`
  std::string timestep_input = "t";  ///< model time, float32 (N), one value per row
  std::string condition_input = "y"; ///< labels as int64 (N), or the condition tensor
  /// Empty: the method returns the prediction tensor. Otherwise it returns a Dict[str, Tensor]
  /// and this names the entry holding the prediction.
  std::string output;
  /// The dtype latents are passed in and the output must have (converted back to float32).
  DType dtype = DType::f32;
  torch::Device device = torch::kCPU;
  /// Whether x and out point to memory on `device` (tstitch's CUDA sampling loop) rather than host
  /// memory (its CPU loop); with a CPU device they are host memory either way.
  bool views_on_device = false;
  /// Converts the module's floating-point parameters and buffers to `dtype` on `device`; off: the
  /// module is used as it was loaded.
  bool convert_module = true;
  /// The class label meaning "no class" for classifier-free guidance (a labels condition).
  std::optional<int> null_label;
  /// The unconditional condition tensor (a tensor condition): one row, repeated for every row of
  /// the batch, or one per row. Undefined: no guidance.
  torch::Tensor null_condition;
};

namespace text {

inline std::string shape_of(const torch::Tensor& t) {
  std::ostringstream out;
  out << '[';
  for (std::int64_t d = 0; d < t.dim(); ++d)
    out << (d ? ", " : "") << t.size(d);
  out << ']';
  return out.str();
}

inline std::string describe(const torch::Tensor& t) {
  return shape_of(t) + " " + std::string(c10::toString(t.scalar_type()));
}

/// The first line of a c10::Error: its message without the C++ backtrace.
inline std::string first_line(const c10::Error& e) {
  const std::string message = e.what_without_backtrace();
  return message.substr(0, message.find('\n'));
}

/// The last line of an error from the TorchScript interpreter ("RuntimeError: ..."), which follows
/// the module's tracebacks.
inline std::string last_line(const std::exception& e) {
  std::string message = e.what();
  while (!message.empty() && (message.back() == '\n' || message.back() == ' '))
    message.pop_back();
  const std::size_t end = message.rfind('\n');
  return end == std::string::npos ? message : message.substr(end + 1);
}

} // namespace text

/// A TorchScript module (torch::jit::Module, e.g. exported with torch.jit.trace or
/// torch.jit.script) as a tstitch Denoiser. Condition is std::vector<int> (one class label per
/// row, passed as int64), torch::Tensor (any batch-first tensor, floating ones in `dtype`) or
/// NoCondition (no condition argument).
///
/// Float32 latents on the module's device are handed to it without a copy (torch::from_blob over
/// tstitch's buffer, batch stride included); the module must not write to its inputs. Other dtypes
/// and devices are converted on the way in, and the output is copied into `out` once.
template <class Condition = std::vector<int>> class TorchScriptDenoiser {
  static_assert(std::is_same_v<Condition, std::vector<int>> ||
                    std::is_same_v<Condition, torch::Tensor> ||
                    std::is_same_v<Condition, NoCondition>,
                "tstitch::libtorch::TorchScriptDenoiser: the condition is std::vector<int> "
                "(class labels), torch::Tensor or NoCondition");

public:
  using condition_type = Condition;

  /// Checks the module against the options: the method exists, it takes every input named in
  /// them, and every other input it requires has a default.
  TorchScriptDenoiser(torch::jit::Module module, Options options)
      : module_(std::move(module)), options_(std::move(options)) {
    const Shape s = options_.latent_shape;
    require(s.channels > 0 && s.height > 0 && s.width > 0, where("latent_shape"), s,
            "must be positive (set Options::latent_shape)");
    if (options_.device.is_cuda() && !torch::cuda::is_available())
      throw invalid_argument(detail::concat("tstitch: ", where("device"), " = ",
                                            options_.device.str(),
                                            ": this LibTorch has no CUDA device"));
    check_schema();
    module_.eval();
    if (options_.convert_module)
      module_.to(options_.device, scalar_type(options_.dtype));
  }

  /// Loads a TorchScript file (torch.jit.save) onto options.device.
  [[nodiscard]] static TorchScriptDenoiser load(const std::string& path, Options options) {
    torch::jit::Module module;
    try {
      module = torch::jit::load(path, options.device);
    } catch (const c10::Error& e) {
      throw runtime_error(detail::concat("tstitch: LibTorch module '", options.name, "': file '",
                                         path, "' does not load: ", text::first_line(e)));
    }
    return TorchScriptDenoiser(std::move(module), std::move(options));
  }

  [[nodiscard]] Prediction prediction() const { return options_.prediction; }
  [[nodiscard]] Shape latent_shape() const { return options_.latent_shape; }
  [[nodiscard]] std::string model_name(std::size_t) const { return options_.name; }
  [[nodiscard]] const Options& options() const { return options_; }
  [[nodiscard]] torch::jit::Module& module() { return module_; }

  /// The unconditional condition of classifier-free guidance, where the options give one.
  [[nodiscard]] std::optional<condition_type> unconditional(const condition_type& c) const {
    if constexpr (std::is_same_v<Condition, std::vector<int>>) {
      if (options_.null_label)
        return condition_type(c.size(), *options_.null_label);
    } else if constexpr (std::is_same_v<Condition, torch::Tensor>) {
      if (options_.null_condition.defined()) {
        const torch::Tensor& null = options_.null_condition;
        if (null.dim() >= 1 && null.size(0) == 1 && c.dim() >= 1) {
          std::vector<std::int64_t> sizes(null.sizes().begin(), null.sizes().end());
          sizes[0] = c.size(0);
          return null.expand(sizes);
        }
        return null;
      }
    }
    return std::nullopt;
  }

  /// Writes the module's prediction for latents x (N, C, H, W) at ctx.point.timestep into out
  /// (N, output_channels, H, W).
  void predict(ConstView x, const StepContext& ctx, const condition_type& c, View out) {
    check_views(x, out);
    const std::int64_t n = x.batch();
    const c10::InferenceMode inference;
    const torch::ScalarType dtype = scalar_type(options_.dtype);
    const torch::Device views = options_.views_on_device ? options_.device : torch::kCPU;

    torch::jit::Kwargs args;
    args[options_.latents_input] = wrap(x, views).to(options_.device, dtype);
    args[options_.timestep_input] =
        torch::full({n}, ctx.point.timestep, torch::dtype(torch::kFloat).device(options_.device));
    if constexpr (!std::is_same_v<Condition, NoCondition>)
      args[options_.condition_input] = condition_tensor(c, n);

    c10::IValue result;
    try {
      result = module_.get_method(options_.method)(std::vector<c10::IValue>{}, args);
    } catch (const c10::Error& e) {
      throw runtime_error(detail::concat("tstitch: ", where(""), "method '", options_.method,
                                         "' failed on ", describe_inputs(args), ": ",
                                         text::first_line(e)));
    } catch (const std::exception& e) { // the interpreter's errors carry the module's traceback
      throw runtime_error(detail::concat("tstitch: ", where(""), "method '", options_.method,
                                         "' failed on ", describe_inputs(args), ": ",
                                         text::last_line(e)));
    }
    const torch::Tensor prediction = output_tensor(result);
    const auto oc = output_channels(options_.prediction, options_.latent_shape.channels);
    const std::vector<std::int64_t> expected{n, oc, options_.latent_shape.height,
                                             options_.latent_shape.width};
    if (prediction.scalar_type() != dtype)
      throw runtime_error(detail::concat("tstitch: ", where(""),
                                         "output dtype = ", c10::toString(prediction.scalar_type()),
                                         ": expected ", c10::toString(dtype), " (Options::dtype ",
                                         to_string(options_.dtype), ")"));
    if (prediction.sizes() != c10::IntArrayRef(expected))
      throw runtime_error(
          detail::concat("tstitch: ", where(""), "output shape = ", text::shape_of(prediction),
                         ": expected [", n, ", ", oc, ", ", expected[2], ", ", expected[3], "] (",
                         to_string(options_.prediction), " prediction)"));
    // copy_ converts back to float32 and moves the output to where `out` lives.
    wrap(out, views).copy_(prediction);
  }

private:
  [[nodiscard]] std::string where(std::string_view parameter) const {
    std::string text = "LibTorch module '" + options_.name + "': ";
    return parameter.empty() ? text : text + "Options::" + std::string(parameter);
  }

  /// The method must exist and take the inputs the options name.
  void check_schema() const {
    const auto method = module_.find_method(options_.method);
    if (!method) {
      std::string names;
      for (const torch::jit::Method& m : module_.get_methods())
        names += (names.empty() ? "" : ", ") + m.name();
      throw invalid_argument(detail::concat(
          "tstitch: ", where("method"), " = '", options_.method,
          "': the module has no such method (its methods: ", names.empty() ? "none" : names, ")"));
    }
    const std::vector<c10::Argument>& arguments = method->function().getSchema().arguments();
    std::vector<std::string> inputs; // without self
    for (std::size_t i = 1; i < arguments.size(); ++i)
      inputs.push_back(arguments[i].name());
    std::string listed;
    for (const std::string& name : inputs)
      listed += (listed.empty() ? "" : ", ") + name;
    std::vector<std::pair<const char*, std::string>> given{
        {"latents_input", options_.latents_input}, {"timestep_input", options_.timestep_input}};
    if constexpr (!std::is_same_v<Condition, NoCondition>)
      given.emplace_back("condition_input", options_.condition_input);
    for (const auto& [option, name] : given)
      if (std::find(inputs.begin(), inputs.end(), name) == inputs.end())
        throw invalid_argument(detail::concat("tstitch: ", where(option), " = '", name,
                                              "': method '", options_.method,
                                              "' has no input of that name (its "
                                              "inputs: ",
                                              listed, ")"));
    for (std::size_t i = 1; i < arguments.size(); ++i) {
      const c10::Argument& a = arguments[i];
      const bool passed = std::any_of(given.begin(), given.end(),
                                      [&](const auto& g) { return g.second == a.name(); });
      if (!passed && !a.default_value())
        throw invalid_argument(detail::concat(
            "tstitch: ", where(""), "method '", options_.method, "' requires input '", a.name(),
            "', which tstitch does not pass (it passes ", options_.latents_input, ", ",
            options_.timestep_input,
            std::is_same_v<Condition, NoCondition> ? std::string()
                                                   : ", " + options_.condition_input,
            ")"));
    }
  }

  void check_views(ConstView x, View out) const {
    require(x.shape() == options_.latent_shape, where("") + "x shape", x.shape(),
            detail::concat("must equal Options::latent_shape ", options_.latent_shape));
    const Shape expected{output_channels(options_.prediction, options_.latent_shape.channels),
                         options_.latent_shape.height, options_.latent_shape.width};
    require(out.batch() == x.batch() && out.shape() == expected, where("") + "out",
            shape_string(out),
            detail::concat("must be [", x.batch(), ", ", expected.channels, ", ", expected.height,
                           ", ", expected.width, "]"));
  }

  /// A tstitch view as a float32 tensor over the same memory (no copy): its batch stride is the
  /// tensor's first stride.
  template <class T> static torch::Tensor wrap(BasicView<T> v, torch::Device device) {
    const Shape s = v.shape();
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-const-cast): LibTorch has no const tensors.
    auto* data = const_cast<float*>(v.data());
    return torch::from_blob(data, {v.batch(), s.channels, s.height, s.width},
                            {v.batch_stride(), s.height * s.width, s.width, 1},
                            torch::dtype(torch::kFloat).device(device));
  }

  [[nodiscard]] torch::Tensor condition_tensor(const condition_type& c, std::int64_t n) const {
    if constexpr (std::is_same_v<Condition, std::vector<int>>) {
      require(static_cast<std::int64_t>(c.size()) == n, where("") + "labels", c.size(),
              detail::concat("must be one per latent row (", n, ")"));
      std::vector<std::int64_t> labels(c.begin(), c.end());
      return torch::tensor(labels, torch::dtype(torch::kLong)).to(options_.device);
    } else {
      require(c.defined() && c.dim() >= 1 && c.size(0) == n, where("") + "condition",
              c.defined() ? text::describe(c) : std::string("undefined"),
              detail::concat("must be a tensor with one row per latent row (", n, ")"));
      return c.is_floating_point() ? c.to(options_.device, scalar_type(options_.dtype))
                                   : c.to(options_.device);
    }
  }

  [[nodiscard]] static std::string describe_inputs(const torch::jit::Kwargs& args) {
    std::string text;
    for (const auto& [name, value] : args)
      text += (text.empty() ? "" : ", ") + name + " " + text::describe(value.toTensor());
    return text;
  }

  /// The prediction tensor out of what the method returned.
  [[nodiscard]] torch::Tensor output_tensor(const c10::IValue& result) const {
    if (options_.output.empty()) {
      if (!result.isTensor())
        throw runtime_error(detail::concat("tstitch: ", where(""), "method '", options_.method,
                                           "' returned ", result.type()->str(),
                                           ": expected a Tensor (or set Options::output to the "
                                           "name of an entry of a returned Dict[str, Tensor])"));
      return result.toTensor();
    }
    if (!result.isGenericDict())
      throw runtime_error(detail::concat("tstitch: ", where("output"), " = '", options_.output,
                                         "': method '", options_.method, "' returned ",
                                         result.type()->str(), ", not a Dict[str, Tensor]"));
    std::string keys;
    for (const auto& entry : result.toGenericDict()) {
      if (entry.key().isString() && entry.key().toStringRef() == options_.output) {
        if (!entry.value().isTensor())
          throw runtime_error(detail::concat("tstitch: ", where("output"), " = '", options_.output,
                                             "': the entry is ", entry.value().type()->str(),
                                             ", not a Tensor"));
        return entry.value().toTensor();
      }
      keys += (keys.empty() ? "'" : ", '") +
              (entry.key().isString() ? entry.key().toStringRef() : std::string("?")) + "'";
    }
    throw runtime_error(detail::concat(
        "tstitch: ", where("output"), " = '", options_.output, "': method '", options_.method,
        "' returned no such entry (its entries: ", keys.empty() ? "none" : keys, ")"));
  }

  torch::jit::Module module_;
  Options options_;
};

} // namespace tstitch::libtorch
