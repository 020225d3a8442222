// SPDX-License-Identifier: Apache-2.0
// tstitch-sample: samples class-conditional DiT checkpoints (safetensors, tstitch-dit format) with
// trajectory stitching on the CPU, or on an NVIDIA GPU (--device cuda, in builds with CUDA), and
// writes a PNG grid and/or a .npy array.
//
//   tstitch-sample models/fashion_dit_s.safetensors models/fashion_dit_l.safetensors
//       --fraction 0.4 --steps 50 --guidance 2 --count 20 --png out.png
//
// Image i starts from the same Philox noise (seed, i) on either device and in any batch.
//
// Every error (bad argument, unreadable or mismatched model, unwritable output) ends the program
// with exit code 1 and a message naming the argument or file and the offending value.
#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <new>
#include <optional>
#include <sstream>
#include <string>
#include <system_error>
#include <utility>
#include <variant>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

#include "tstitch/io/png.hpp"

#include <CLI/CLI.hpp>

#include "tstitch/diffusers/scheduler_config.hpp"
#include "tstitch/io/npy.hpp"
#include "tstitch/models/dit/cpu_model.hpp"
#include "tstitch/tstitch.hpp"

#ifdef TSTITCH_SAMPLE_CUDA // tstitch::cuda_dit linked: plain C++ headers, the kernels are compiled
#include "tstitch/cuda/dit.hpp"
#include "tstitch/cuda/sampling.hpp"
#endif

using namespace tstitch;

namespace {

/// Thrown for a bad command-line value: the message names the option and the value.
struct usage_error : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

template <class... Parts> [[noreturn]] void bad(const Parts&... parts) {
  throw usage_error(detail::concat(parts...));
}

struct Options {
  std::vector<std::string> models;
  std::optional<double> fraction;
  std::vector<double> fractions;
  std::string rule = "fraction";
  std::string solver = "ddim";
  std::string scheduler_config;
  std::string sigmas;
  int steps = 50;
  double guidance = 1.0;
  std::uint64_t seed = 0;
  int count = 8;
  int batch = 16;
  std::string labels;
  std::string png;
  std::string npy;
  int columns = 0;
  bool quiet = false;
  bool batch_invariant = false;
  bool no_mmap = false;
  std::string device = "cpu";
  std::vector<std::string> names;
};

/// What the steps run on: the schedule and the solver (the DiT's training schedule and --solver,
/// or a diffusers --scheduler-config).
struct Sampling {
  AnySchedule schedule;
  AnySolver solver;
};

/// --sigmas: a named sigma rule over the DiT's training schedule.
SigmaRule parse_sigma_rule(const std::string& name) {
  std::string names;
  for (SigmaRule rule :
       {SigmaRule::ays_sd15, SigmaRule::ays_sdxl, SigmaRule::ays_svd, SigmaRule::gits,
        SigmaRule::sgm_uniform, SigmaRule::simple, SigmaRule::kl_optimal}) {
    if (name == sigma_rule_name(rule))
      return rule;
    names += (names.empty() ? "" : ", ") + std::string(sigma_rule_name(rule));
  }
  bad("--sigmas = '", name, "': must be one of ", names);
}

/// --scheduler-config, checked against the models: the config's prediction_type must be what the
/// DiTs output (epsilon for a DiT that also learns its variance: the solvers read its first C
/// channels, as diffusers' DiT pipeline does).
Sampling load_scheduler_config(const std::string& path, Prediction models_predict) {
  DiffusersScheduler config = [&] {
    try {
      return from_diffusers_config(path);
    } catch (const std::exception& e) {
      bad("--scheduler-config = '", path, "': ", e.what());
    }
  }();
  const bool compatible = config.prediction == models_predict ||
                          (config.prediction == Prediction::epsilon &&
                           models_predict == Prediction::epsilon_learned_sigma) ||
                          (config.prediction == Prediction::epsilon_learned_sigma &&
                           models_predict == Prediction::epsilon);
  const Trajectory probe = config.schedule.trajectory(2);
  if (probe[0].ve_sigma() < probe[2].ve_sigma())
    bad("--scheduler-config = '", path, "': ", config.class_name,
        " runs towards noise (an inversion); tstitch-sample samples from noise to images");
  if (!compatible || config.edm_sigma_data)
    bad("--scheduler-config = '", path, "': ", config.class_name, " is for models that predict ",
        config.edm_sigma_data ? "through EDM preconditioning" : to_string(config.prediction),
        "; the DiTs predict ", to_string(models_predict));
  return {std::move(config.schedule), std::move(config.solver)};
}

/// Any number of DiTs, each serving the steps the rule gives it; one instantiation of the sampling
/// loop per solver, whatever the number of models.
using ModelStitcher = RuntimeStitcher<DenoiserRef<std::vector<int>>, AnyPolicy>;

std::vector<int> parse_labels(const std::string& text, int num_classes) {
  std::vector<int> labels;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    std::size_t used = 0;
    int v = 0;
    try {
      v = std::stoi(item, &used);
    } catch (const std::exception&) {
      bad("--labels = '", text, "': '", item, "' is not an integer");
    }
    if (used != item.size())
      bad("--labels = '", text, "': '", item, "' is not an integer");
    if (v < 0 || v > num_classes)
      bad("--labels = '", text, "': label ", v, " must be in [0, ", num_classes, "] (", num_classes,
          " = no class)");
    labels.push_back(v);
  }
  if (labels.empty())
    bad("--labels = '", text, "': no labels");
  return labels;
}

dit::Weights load_weights(const std::string& path, std::size_t index, io::LoadMode mode) {
  if (!std::filesystem::exists(path))
    bad("model ", index + 1, " '", path, "': no such file");
  try {
    return dit::Weights::load(path, mode);
  } catch (const std::exception& e) {
    throw tstitch::runtime_error(
        detail::concat("model ", index + 1, " '", path, "' is not a readable DiT: ", e.what()));
  }
}

/// An error in setting up model `index` (e.g. no GPU memory left for its weights), naming it.
tstitch::runtime_error model_error(const Options& o, std::size_t index, const std::exception& e) {
  return tstitch::runtime_error(
      detail::concat("model ", index + 1, " '", o.models[index], "': ", e.what()));
}

/// What the run is doing, for an out-of-memory message that names what was being allocated.
std::string g_stage = "starting";

/// An output file, checked before anything is loaded or sampled: its directory exists and is
/// writable, it is not a directory, and it is no input (a model or the scheduler config, also
/// through a symlink or hard link), which writing it would replace.
void check_output_path(const Options& o, const std::string& option, const std::string& path) {
  if (path.empty())
    return;
  struct stat out {};
  const bool exists = ::stat(path.c_str(), &out) == 0; // follows symlinks, as the writers do
  if (exists && S_ISDIR(out.st_mode))
    bad(option, " = '", path, "': is a directory");
  if (exists) {
    std::vector<std::pair<std::string, std::string>> inputs; // (what, path)
    for (std::size_t i = 0; i < o.models.size(); ++i)
      inputs.emplace_back(detail::concat("model ", i + 1), o.models[i]);
    if (!o.scheduler_config.empty())
      inputs.emplace_back("--scheduler-config", o.scheduler_config);
    for (const auto& [what, input] : inputs) {
      struct stat in {};
      if (::stat(input.c_str(), &in) == 0 && in.st_dev == out.st_dev && in.st_ino == out.st_ino)
        bad(option, " = '", path, "': is the same file as ", what, " '", input,
            "'; writing it would replace the ", what == "--scheduler-config" ? "config" : "model");
    }
    if (S_ISCHR(out.st_mode) || S_ISFIFO(out.st_mode))
      return; // written directly (/dev/null, a pipe): no file is created next to it
  }
  // The writers create a temporary next to the file (a symlink's target) and rename it.
  std::error_code ignored;
  const std::filesystem::path resolved = std::filesystem::weakly_canonical(path, ignored);
  const std::filesystem::path parent =
      (resolved.empty() ? std::filesystem::absolute(path) : resolved).parent_path();
  if (!std::filesystem::is_directory(parent))
    bad(option, " = '", path, "': directory '", parent.string(), "' does not exist");
  if (::access(parent.c_str(), W_OK | X_OK) != 0)
    bad(option, " = '", path, "': directory '", parent.string(),
        "' is not writable: ", std::generic_category().message(errno));
}

/// --png and --npy naming one file would leave only the second.
void check_distinct_outputs(const Options& o) {
  if (o.png.empty() || o.npy.empty())
    return;
  std::error_code ignored;
  const std::filesystem::path png = std::filesystem::weakly_canonical(o.png, ignored);
  const std::filesystem::path npy = std::filesystem::weakly_canonical(o.npy, ignored);
  if (o.png == o.npy || (!png.empty() && png == npy))
    bad("--png = '", o.png, "' and --npy = '", o.npy, "' name the same file");
}

/// Bytes as "1.5 GiB".
std::string byte_string(double bytes) {
  const char* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int unit = 0;
  for (; bytes >= 1024.0 && unit < 6; ++unit)
    bytes /= 1024.0;
  char text[64];
  std::snprintf(text, sizeof text, unit == 0 ? "%.0f %s" : "%.1f %s", bytes, units[unit]);
  return text;
}

/// Refuses a --count whose latents (and labels and PNG grid) cannot fit in this machine's
/// memory, before anything that large is allocated or sampled.
void check_memory(const Options& o, const Shape& shape, const std::optional<io::GridSize>& grid) {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0)
    return; // unknown: the allocations report themselves
  // Doubles: exact enough for a bound, and no product can overflow.
  const double latents = static_cast<double>(o.count) * static_cast<double>(shape.numel()) * 4.0;
  const double labels = static_cast<double>(o.count) * sizeof(int);
  // image_grid's pixels, and stb's filtered rows and compressed output of about as many bytes.
  const double png = grid ? 3.0 * static_cast<double>(grid->width) *
                                static_cast<double>(grid->height) *
                                static_cast<double>(shape.channels)
                          : 0.0;
  const double need = latents + labels + png, limit = static_cast<double>(pages) * page;
  if (need > limit)
    bad("--count = ", o.count, ": the run needs ", byte_string(need), " (latents ", o.count, " x ",
        shape, " float32: ", byte_string(latents), ", labels ", byte_string(labels),
        grid ? ", PNG grid " + byte_string(png) : std::string(), "), more than this machine's ",
        byte_string(limit), " of memory");
}

/// The batch loop of both devices: each batch's x_T (Philox noise of its images), its options and
/// the progress line; sample_batch(part, labels, options) samples `part` (host memory) in place.
template <class Stitcher, class SampleBatch>
void sample_batches(const Options& o, const Stitcher& stitcher, const std::vector<int>& labels,
                    Tensor& x, SampleBatch&& sample_batch) {
  const std::vector<int> counts = stitcher.steps_per_model(DiscreteSchedule().trajectory(o.steps));
  std::string per_model, names;
  for (std::size_t k = 0; k < counts.size(); ++k) {
    per_model += (k ? ", " : "") + std::to_string(counts[k]);
    names += (k ? ", " : "") + stitcher.model_name(k);
  }
  std::fprintf(stderr, "steps per model: %s (%s)\n", per_model.c_str(), names.c_str());

  const bool tty = isatty(fileno(stderr)) != 0;
  // A batch larger than the count is the whole count (and --batch INT_MAX cannot overflow).
  const int batch = std::min(o.batch, o.count);
  const int batches = (o.count - 1) / batch + 1;
  g_stage = detail::concat("sampling batches of ", batch,
                           " images (a smaller --batch needs less memory)");
  const auto started = std::chrono::steady_clock::now();
  long long done_steps = 0;
  for (int b = 0; b < batches; ++b) {
    const int first = b * batch, size = std::min(batch, o.count - first);
    const View part = View(x.view()).samples(first, size);
    fill_initial_noise(part, o.seed, static_cast<std::uint32_t>(first));
    const std::vector<int> cond(labels.begin() + first, labels.begin() + first + size);
    SampleOptions options;
    options.steps = o.steps;
    options.seed = o.seed;
    options.first_sample = static_cast<std::uint32_t>(first);
    options.guidance = Guidance::standard(o.guidance);
    options.on_step = [&](const StepRecord& r) {
      ++done_steps;
      if (o.quiet || (!tty && r.step + 1 != o.steps))
        return true;
      const double elapsed =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      constexpr int width = 30;
      const int filled = (r.step + 1) * width / o.steps;
      std::fprintf(stderr, "%s[%s%s] batch %d/%d step %d/%d  %.1f steps/s  serving: %s%s",
                   tty ? "\r" : "", std::string(static_cast<std::size_t>(filled), '#').c_str(),
                   std::string(static_cast<std::size_t>(width - filled), '.').c_str(), b + 1,
                   batches, r.step + 1, o.steps, static_cast<double>(done_steps) / elapsed,
                   stitcher.model_name(r.model).c_str(), tty ? "   " : "\n");
      return true;
    };
    sample_batch(part, cond, options);
  }
  if (tty && !o.quiet)
    std::fprintf(stderr, "\n");
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::fprintf(stderr, "sampled %d images in %.2f s\n", o.count, seconds);
}

void sample_on_cpu(const Options& o, const AnyPolicy& rule, const Sampling& sampling,
                   std::vector<dit::Weights> weights, const std::vector<std::string>& names,
                   const std::vector<int>& labels, Tensor& x) {
  std::vector<dit::CpuModel> models;
  models.reserve(weights.size());
  for (std::size_t k = 0; k < weights.size(); ++k) {
    try {
      models.emplace_back(std::move(weights[k]), names[k]);
    } catch (const std::exception& e) {
      throw model_error(o, k, e);
    }
    models.back().set_batch_invariant(o.batch_invariant);
  }
  ModelStitcher stitcher(rule,
                         std::vector<DenoiserRef<std::vector<int>>>(models.begin(), models.end()));
  Sampler<> sampler;
  std::visit(
      [&](auto chosen) {
        sample_batches(o, stitcher, labels, x,
                       [&](View part, const std::vector<int>& cond, const SampleOptions& options) {
                         const std::optional<std::vector<int>> uncond =
                             o.guidance != 1.0 ? stitcher.unconditional(cond) // DiT's null class
                                               : std::nullopt;
                         sampler.run(stitcher, sampling.schedule, chosen, part, cond,
                                     uncond ? &*uncond : nullptr, options);
                       });
      },
      sampling.solver);
}

#ifdef TSTITCH_SAMPLE_CUDA
/// The same sampling with the latents on the GPU: each batch's x_T is made on the host (the same
/// noise as on the CPU), uploaded, sampled by cuda::DeviceSampler and downloaded. Weights are
/// uploaded once (bf16); the host copies are dropped.
void sample_on_cuda(const Options& o, const AnyPolicy& rule, const Sampling& sampling,
                    std::vector<dit::Weights> weights, const std::vector<std::string>& names,
                    const std::vector<int>& labels, Tensor& x) {
  const cuda::DeviceInfo device = cuda::device_info();
  std::fprintf(stderr, "device: %s (compute capability %d.%d)\n", device.name.c_str(),
               device.compute_major, device.compute_minor);
  std::vector<cuda::DitModel> models;
  models.reserve(weights.size());
  for (std::size_t k = 0; k < weights.size(); ++k) {
    try {
      models.emplace_back(weights[k], names[k]); // uploads the weights (bf16)
    } catch (const std::exception& e) {
      throw model_error(o, k, e);
    }
  }
  weights.clear(); // on the device now
  cuda::DeviceStitcher stitcher(rule,
                                std::vector<cuda::DeviceDenoiserRef>(models.begin(), models.end()));
  cuda::DeviceSampler sampler;
  cuda::DeviceTensor latents(std::min(o.batch, o.count), x.shape());
  sample_batches(o, stitcher, labels, x,
                 [&](View part, const std::vector<int>& cond, const SampleOptions& options) {
                   const View on_device = latents.view().samples(0, part.batch());
                   cuda::upload(on_device, part);
                   sampler.run(stitcher, sampling.schedule, sampling.solver, on_device, cond,
                               options);
                   cuda::download(part, on_device);
                 });
}
#endif

int run(const Options& o) {
  // --- arguments that need no model ---------------------------------------------------------
  if (o.models.size() < 2)
    bad("model files: got ", o.models.size(), "; stitching needs at least 2 (small first)");
  if (o.png.empty() && o.npy.empty())
    bad("no output: give --png or --npy (or both)");
  if (o.steps < 1 || o.steps > 1000)
    bad("--steps = ", o.steps, ": must be in [1, 1000] (the training schedule has 1000 steps)");
  if (o.count < 1)
    bad("--count = ", o.count, ": must be at least 1");
  if (o.batch < 1)
    bad("--batch = ", o.batch, ": must be at least 1");
  if (!std::isfinite(o.guidance))
    bad("--guidance = ", o.guidance, ": must be finite");
  if (o.columns < 0)
    bad("--columns = ", o.columns, ": must be >= 0 (0: one row per 10 images)");
  const std::size_t k = o.models.size();
  std::vector<double> fractions;
  if (!o.fractions.empty()) {
    if (o.fractions.size() != k)
      bad("--fractions: got ", o.fractions.size(), " values for ", k,
          " models; give one fraction per model");
    fractions = o.fractions;
  } else {
    const double r = o.fraction.value_or(0.5);
    if (!(r >= 0.0 && r <= 1.0))
      bad("--fraction = ", r, ": must be in [0, 1]");
    if (k != 2)
      bad("--fraction: one fraction stitches 2 models; with ", k, " models use --fractions");
    fractions = {r, 1.0 - r};
  }
  if (!o.names.empty() && o.names.size() != k)
    bad("--names: got ", o.names.size(), " names for ", k, " models");
  std::optional<AnyPolicy> rule;
  try {
    if (o.rule == "fraction")
      rule.emplace(StepFraction(fractions));
    else if (o.rule == "paper") {
      if (k != 2)
        bad("--rule = paper: the paper's timestep rule stitches exactly 2 models, got ", k);
      rule.emplace(PaperTimestep(fractions[0]));
    } else
      bad("--rule = '", o.rule, "': must be fraction or paper");
  } catch (const tstitch::invalid_argument& e) {
    bad(o.fractions.empty() ? "--fraction" : "--fractions", ": ", e.what());
  }
  AnySolver solver;
  try {
    solver = make_solver(o.solver);
  } catch (const tstitch::invalid_argument&) {
    bad("--solver = '", o.solver, "': must be one of ", solver_name_list());
  }
  if (std::holds_alternative<CMStochasticIterative>(solver))
    bad("--solver = 'cm': consistency-model sampling reads the raw output as the consistency "
        "function; the DiTs predict noise");
  if (o.device != "cpu" && o.device != "cuda")
    bad("--device = '", o.device, "': must be cpu or cuda");
  if (o.device == "cuda" && o.batch_invariant)
    bad("--batch-invariant: the CUDA DiT is not batch-invariant (its GEMM algorithms depend on "
        "the batch); use --device cpu");
  check_output_path(o, "--png", o.png);
  check_output_path(o, "--npy", o.npy);
  check_distinct_outputs(o);
  if (o.device == "cuda") {
#ifdef TSTITCH_SAMPLE_CUDA
    if (!cuda::device_available())
      throw tstitch::runtime_error("--device = cuda: no CUDA device available");
#else
    throw tstitch::runtime_error("--device = cuda: this tstitch-sample was built without CUDA "
                                 "(configure with -DTSTITCH_ENABLE_CUDA=ON and nvcc)");
#endif
  }

  // --- models ---------------------------------------------------------------------------------
  g_stage = "loading the models";
  std::vector<dit::Weights> weights;
  weights.reserve(k);
  // Each file as loaded: a model rewritten during the run must not yield results silently.
  std::vector<io::FileStamp> stamps;
  for (std::size_t i = 0; i < k; ++i) {
    weights.push_back(
        load_weights(o.models[i], i, o.no_mmap ? io::LoadMode::read : io::LoadMode::mmap));
    stamps.push_back(weights.back().stamp());
  }
  const dit::Config first = weights[0].config();
  for (std::size_t i = 1; i < k; ++i) {
    const dit::Config& c = weights[i].config();
    if (c.latent_shape() != first.latent_shape())
      bad("models disagree on latent shape: '", o.models[0], "' has ", first.latent_shape(), ", '",
          o.models[i], "' has ", c.latent_shape());
    if (c.num_classes != first.num_classes)
      bad("models disagree on the class count: '", o.models[0], "' has ", first.num_classes, ", '",
          o.models[i], "' has ", c.num_classes);
  }
  const Shape shape = first.latent_shape();
  if (!o.png.empty() && shape.channels != 1 && shape.channels != 3)
    bad("--png = '", o.png, "': the models make ", shape.channels,
        " channels images; a PNG needs 1 or 3 (use --npy for latents)");

  io::GridOptions grid;
  grid.columns = o.columns > 0 ? o.columns : std::min(o.count, 10);
  grid.scale = shape.height < 64 ? 2 : 1;
  std::optional<io::GridSize> grid_size;
  if (!o.png.empty()) {
    try {
      grid_size = io::grid_size(o.count, shape, grid); // before sampling, not after
    } catch (const tstitch::invalid_argument& e) {
      bad("--png = '", o.png, "': ", o.count, " images of ", shape,
          " make no PNG grid: ", e.what());
    }
  }
  check_memory(o, shape, grid_size);

  const int classes = static_cast<int>(first.num_classes);
  const std::vector<int> cycle =
      o.labels.empty() ? std::vector<int>{} : parse_labels(o.labels, classes);
  g_stage = detail::concat("allocating the labels (", o.count, " ints)");
  std::vector<int> labels;
  labels.reserve(static_cast<std::size_t>(o.count));
  for (int i = 0; i < o.count; ++i)
    labels.push_back(cycle.empty() ? i % classes
                                   : cycle[static_cast<std::size_t>(i) % cycle.size()]);

  // Each model's display name: --names, else its file's stem.
  std::vector<std::string> names = o.names;
  for (std::size_t i = names.size(); i < k; ++i)
    names.push_back(std::filesystem::path(o.models[i]).stem().string());
  const Prediction models_predict =
      first.learn_sigma ? Prediction::epsilon_learned_sigma : Prediction::epsilon;
  const Sampling sampling =
      !o.scheduler_config.empty()
          ? load_scheduler_config(o.scheduler_config, models_predict)
          : Sampling{o.sigmas.empty() ? AnySchedule(DiscreteSchedule{})
                                      : AnySchedule(SigmaSchedule(DiscreteSchedule{},
                                                                  parse_sigma_rule(o.sigmas))),
                     std::move(solver)};
  g_stage = detail::concat(
      "allocating the latents (", o.count, " x ", shape, " float32, ",
      byte_string(static_cast<double>(o.count) * static_cast<double>(shape.numel()) * 4.0), ")");
  Tensor x(o.count, shape);
  g_stage = "setting up the models";
#ifdef TSTITCH_SAMPLE_CUDA
  if (o.device == "cuda")
    sample_on_cuda(o, *rule, sampling, std::move(weights), names, labels, x);
  else
#endif
    sample_on_cpu(o, *rule, sampling, std::move(weights), names, labels, x);
  for (const io::FileStamp& stamp : stamps) // at the end of the run, before any output is written
    stamp.check_unchanged("model file");

  std::string wrote = detail::concat("wrote ", o.count, " samples");
  if (!o.png.empty()) {
    g_stage = detail::concat("writing the PNG grid '", o.png, "'");
    io::write_png_grid(o.png, x, grid);
    wrote += " to " + o.png;
  }
  if (!o.npy.empty()) {
    g_stage = detail::concat("writing '", o.npy, "'");
    io::write_npy(o.npy, x);
    wrote += (o.png.empty() ? " to " : " and ") + o.npy;
  }
  std::printf("%s\n", wrote.c_str());
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"tstitch-sample: sample class-conditional DiTs (tstitch-dit safetensors) with "
               "trajectory stitching on the CPU or a CUDA GPU. The first model serves the "
               "first, noisiest steps."};
  // No ExistingFile check here: CLI11 would run it on whatever an unknown option left behind
  // ("--step 1": "File does not exist: 1") before reporting the unknown option; load_weights
  // names a missing model instead.
  app.add_option("models", o.models, "model files, small first (2 or more)");
  auto* fraction = app.add_option("--fraction", o.fraction,
                                  "two models: the first (small) model's fraction of the steps, "
                                  "in [0, 1] (default 0.5)");
  app.add_option("--fractions", o.fractions, "k models: one fraction per model, summing to 1")
      ->delimiter(',')
      ->excludes(fraction);
  app.add_option("--rule", o.rule,
                 "switch rule: fraction (floor(c n) steps, exact) or paper (t/T >= 1 - r, the "
                 "official T-Stitch code, 2 models)")
      ->capture_default_str();
  auto* solver_option =
      app.add_option("--solver", o.solver, detail::concat("one of ", solver_name_list()))
          ->capture_default_str();
  app.add_option("--scheduler-config", o.scheduler_config,
                 "a diffusers scheduler_config.json (or a model folder holding one): its schedule "
                 "and solver replace the DiT's training schedule and --solver")
      ->excludes(solver_option);
  app.add_option("--sigmas", o.sigmas,
                 "a named sigma rule over the DiT's schedule (stable-diffusion.cpp's --scheduler): "
                 "ays_sd15, ays_sdxl, ays_svd, gits, sgm_uniform, simple or kl_optimal")
      ->excludes("--scheduler-config");
  app.add_option("--steps", o.steps, "sampling steps")->capture_default_str();
  app.add_option("--guidance", o.guidance, "classifier-free guidance scale (1: off)")
      ->capture_default_str();
  // CLI11 takes "-1" (wrapped to 2^64 - 1) and 2^64 (saturated) as seeds; from_chars refuses both.
  const CLI::Validator seed_range(
      [](std::string& text) -> std::string {
        std::uint64_t value = 0;
        const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
        if (text.empty() || error != std::errc() || end != text.data() + text.size())
          return detail::concat("value '", text, "' is not an integer in [0, ",
                                std::numeric_limits<std::uint64_t>::max(), "]");
        return {};
      },
      "UINT64");
  app.add_option("--seed", o.seed, "noise seed; image i gets the same noise in any batch")
      ->check(seed_range)
      ->capture_default_str();
  app.add_option("--count", o.count, "number of images")->capture_default_str();
  app.add_option("--batch", o.batch, "images per model call")->capture_default_str();
  app.add_option("--labels", o.labels,
                 "class labels, comma-separated, cycled over the images (default 0, 1, ..., "
                 "num_classes - 1 cycling)");
  app.add_option("--png", o.png, "write a PNG grid (1- or 3-channel models)");
  app.add_option("--npy", o.npy, "write the samples as float32 .npy [N, C, H, W]");
  app.add_option("--columns", o.columns, "PNG grid columns (default min(count, 10))");
  app.add_option("--names", o.names, "display names of the models, comma-separated")
      ->delimiter(',');
  app.add_flag("--quiet,-q", o.quiet, "no progress bar");
  app.add_flag("--batch-invariant", o.batch_invariant,
               "each image the same bits whatever --batch (one image per forward; slower; CPU "
               "only)");
  app.add_flag("--no-mmap", o.no_mmap,
               "read the model files into memory instead of mapping them: immune to a model "
               "file truncated or rewritten during the run (a mapped one may crash with SIGBUS)");
  app.add_option("--device", o.device,
                 "cpu, or cuda: the models on the GPU (bf16 weights; a build with CUDA)")
      ->capture_default_str();

  // A file size limit (ulimit -f) then fails the write with EFBIG, which names the file, instead
  // of killing the program; the old file is kept either way (writes are atomic).
  std::signal(SIGXFSZ, SIG_IGN);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ExtrasError&) {
    // Every positional argument is a model, so what is left over is an unknown option.
    std::string unknown;
    for (const std::string& arg : app.remaining())
      unknown += (unknown.empty() ? "" : " ") + arg;
    std::fprintf(stderr, "tstitch-sample: error: unknown option: %s (see --help)\n",
                 unknown.c_str());
    return 1;
  } catch (const CLI::ParseError& e) {
    // CLI11 names the option and value itself ("--steps: Value x not in range ...").
    const int code = app.exit(e);
    return code == 0 ? 0 : 1;
  }
  try {
    return run(o);
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "tstitch-sample: error: out of memory while %s\n", g_stage.c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tstitch-sample: error: %s\n", e.what());
    return 1;
  }
}
