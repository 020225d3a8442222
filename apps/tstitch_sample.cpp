// SPDX-License-Identifier: Apache-2.0
// tstitch-sample: samples class-conditional DiT checkpoints (safetensors, tstitch-dit format) with
// trajectory stitching on the CPU, or on an NVIDIA GPU (--device cuda, in builds with CUDA), and
// writes a PNG or JPEG grid and/or a .npy array (the format follows the file's extension).
//
//   tstitch-sample models/fashion_dit_s.safetensors models/fashion_dit_l.safetensors
//       --fraction 0.4 --steps 50 --count 20 -o grid.png
//
// Image i starts from the same Philox noise (seed, i) on either device and in any batch. The seed
// in use is printed and written into every output (PNG text, JPEG comment, the .npy's sidecar).
// stable-diffusion.cpp's and diffusers' option names are accepted where they mean the same
// (--cfg-scale, -s, -o, --sampling-method, -t); others get a hint or "unknown option".
//
// Every error (bad argument, unreadable or mismatched model, unwritable output) ends the program
// with exit code 1 and a message naming the argument or file and the offending value.
#include "sample_outputs.hpp" // first: includes tstitch/io/png.hpp, which compiles stb

#include "cli_mpi.hpp" // under mpirun/srun: the samples split across ranks into one output file

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
#include <random>
#include <sstream>
#include <string>
#include <system_error>
#include <utility>
#include <variant>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "tstitch/diffusers/scheduler_config.hpp"
#include "tstitch/io/npy.hpp"
#include "tstitch/models/dit/cpu_model.hpp"
#include "tstitch/tstitch.hpp"

#include "cli_plan.hpp"
#include "cli_rng.hpp"

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

/// The guidance scale used when none is given: the shipped Fashion pair's recommended scale (the
/// large model's best FD-cls in the demo; examples/fashion_demo.cpp and the README use the same).
constexpr double default_guidance = 1.25;

/// The output file used when none is given (stable-diffusion.cpp's default name).
constexpr const char* default_output = "output.png";

struct Options {
  std::vector<std::string> models;
  std::optional<double> fraction;
  std::vector<double> fractions;
  std::string rule = "fraction";
  std::string solver = "ddim";
  std::string sampling_method;
  std::string scheduler_config;
  std::string sigmas;
  int steps = 50;
  std::optional<double> guidance;
  std::string seed = "0"; // negative: a random seed
  std::string rng = "philox";
  int count = 8;
  int batch = 16;
  std::string labels;
  std::string png;
  std::string npy;
  std::string npz;
  std::string png_dir;
  std::string crop; // --crop H or HxW: the centred region of each 8-bit sample output
  std::string fd;   // --fd: the classifier file
  std::string output;
  int columns = 0;
  int threads = 0;
  bool quiet = false;
  bool batch_invariant = false;
  bool no_mmap = false;
  std::string device = "cpu";
  bool resume = false; // under MPI: continue from the output's journal
  std::vector<std::string> names;
  tstitch_sample::PlanRequest planning; // --target-speedup, --deadline-ms
};

/// One output file: the option that named it, its path and its format.
struct Output {
  std::string option;
  std::string path;
  tstitch_sample::Format format;
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
  // Absolute first: weakly_canonical leaves a relative name with no existing part relative.
  const std::filesystem::path resolved =
      std::filesystem::weakly_canonical(std::filesystem::absolute(path), ignored);
  const std::filesystem::path parent =
      (resolved.empty() ? std::filesystem::absolute(path) : resolved).parent_path();
  if (!std::filesystem::is_directory(parent))
    bad(option, " = '", path, "': directory '", parent.string(), "' does not exist");
  if (::access(parent.c_str(), W_OK | X_OK) != 0)
    bad(option, " = '", path, "': directory '", parent.string(),
        "' is not writable: ", std::generic_category().message(errno));
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

/// The run's settings as resolved from the options: what every phase after the argument checks
/// needs, and what the outputs record.
struct Plan {
  std::size_t k = 0; // models
  std::optional<AnyPolicy> rule;
  std::string rule_text; // "fraction 0.4,0.6"
  AnySolver solver;
  std::optional<DiscreteSchedule> schedule; // --sampling-method ddim_trailing: trailing spacing
  std::string solver_text;
  double guidance = default_guidance;
  std::uint64_t seed = 0;
  NoiseSource noise; // --rng
  std::vector<Output> outputs;
  std::optional<io::ImageRegion> crop; // --crop, resolved against the models' shape
};

/// --seed: an unsigned 64-bit integer, or a negative one for a random seed (as in
/// stable-diffusion.cpp). CLI11 would wrap "-1" to 2^64 - 1 and saturate 2^64; from_chars refuses
/// both.
std::uint64_t resolve_seed(const std::string& text) {
  const char* const first = text.data();
  const char* const last = text.data() + text.size();
  if (!text.empty() && text[0] == '-') {
    std::int64_t negative = 0;
    const auto [end, error] = std::from_chars(first, last, negative);
    if (error != std::errc() || end != last)
      bad("--seed = '", text, "': not an integer (a negative seed picks a random one)");
    std::random_device device;
    return (static_cast<std::uint64_t>(device()) << 32) ^ device();
  }
  std::uint64_t value = 0;
  const auto [end, error] = std::from_chars(first, last, value);
  if (text.empty() || error != std::errc() || end != last)
    bad("--seed = '", text, "': not an integer in [0, ", std::numeric_limits<std::uint64_t>::max(),
        "] (a negative seed picks a random one)");
  return value;
}

/// --sampling-method: stable-diffusion.cpp's sampler names, mapped to the solver of the same
/// method (solver_names records each solver's sd.cpp name); ddim_trailing is DDIM on trailing
/// timesteps.
void resolve_sampling_method(const std::string& method, Plan& plan) {
  std::string known;
  for (const SolverName& s : solver_names) {
    const std::string_view sd = s.sd_cpp.substr(0, s.sd_cpp.find(' '));
    if (sd == "-")
      continue;
    known += (known.empty() ? "" : ", ") + std::string(sd);
    if (method != sd)
      continue;
    plan.solver = s.make();
    plan.solver_text = detail::concat(s.name, " (--sampling-method ", method, ")");
    if (method == "ddim_trailing") {
      DiscreteScheduleOptions trailing;
      trailing.spacing = TimestepSpacing::trailing;
      plan.schedule.emplace(trailing);
    }
    return;
  }
  bad("--sampling-method = '", method, "': stable-diffusion.cpp's names with a tstitch solver are ",
      known,
      " (its ipndm, ipndm_v and dpm++2mv2 are other variants); --solver takes tstitch's "
      "names");
}

/// The output files, each with the format its extension asks for. --png and --npy keep their
/// format (a name with another format's extension is refused); -o follows the extension; with no
/// output option at all, -o output.png.
std::vector<Output> resolve_outputs(const Options& o) {
  using tstitch_sample::Format;
  std::vector<Output> outputs;
  const auto add = [&](const std::string& option, const std::string& path, Format format) {
    check_output_path(o, option, path);
    const Format named = tstitch_sample::format_of(path);
    if (option == "-o" && named == Format::unknown)
      bad("-o = '", path,
          "': the format follows the extension; use .png, .jpg, .jpeg, .npy or .npz");
    if (option != "-o" && named != Format::unknown && named != format)
      bad(option, " = '", path, "': a ", tstitch_sample::format_name(named), " name for a ",
          tstitch_sample::format_name(format), " output; use -o '", path,
          "' (the format follows the extension)");
    for (const Output& other : outputs) {
      std::error_code ignored;
      const std::filesystem::path a = std::filesystem::weakly_canonical(other.path, ignored);
      const std::filesystem::path b = std::filesystem::weakly_canonical(path, ignored);
      if (other.path == path || (!a.empty() && a == b))
        bad(other.option, " = '", other.path, "' and ", option, " = '", path,
            "' name the same file");
    }
    outputs.push_back({option, path, option == "-o" ? named : format});
  };
  if (!o.png.empty())
    add("--png", o.png, Format::png);
  if (!o.npy.empty())
    add("--npy", o.npy, Format::npy);
  if (!o.npz.empty())
    add("--npz", o.npz, Format::npz);
  if (!o.png_dir.empty()) { // created if missing; its files are replaced one by one
    std::error_code ignored;
    std::filesystem::path dir = std::filesystem::absolute(o.png_dir).lexically_normal();
    if (dir.filename().empty()) // "out/"
      dir = dir.parent_path();
    if (std::filesystem::exists(dir, ignored) && !std::filesystem::is_directory(dir, ignored))
      bad("--png-dir = '", o.png_dir, "': exists and is not a directory");
    if (!std::filesystem::is_directory(dir.parent_path(), ignored))
      bad("--png-dir = '", o.png_dir, "': directory '", dir.parent_path().string(),
          "' does not exist");
    outputs.push_back({"--png-dir", o.png_dir, Format::png_dir});
  }
  if (!o.output.empty() || outputs.empty())
    add("-o", o.output.empty() ? default_output : o.output, Format::unknown);
  for (const Output& out : outputs) {
    struct stat st {};
    const bool special = ::stat(out.path.c_str(), &st) == 0 && !S_ISREG(st.st_mode);
    if (out.format == Format::npy && !special) // the sidecar is an output too (not for /dev/null)
      check_output_path(o, out.option + " (its sidecar)",
                        tstitch_sample::sidecar_of(out.path).string());
  }
  return outputs;
}

/// The stitching rule, built and checked against the model count by the policy itself.
void resolve_rule(const Options& o, Plan& plan) {
  const bool many = !o.fractions.empty();
  const char* option = many ? "--fractions" : "--fraction";
  try {
    if (!many && plan.k != 2)
      bad("--fraction: one fraction stitches 2 models; with ", plan.k, " models use --fractions");
    const double r = o.fraction.value_or(0.5);
    std::vector<double> fractions = many ? o.fractions : std::vector<double>{r, 1.0 - r};
    if (o.rule == "fraction")
      plan.rule.emplace(many ? StepFraction(fractions) : StepFraction::small_fraction(r));
    else if (o.rule == "paper")
      plan.rule.emplace(PaperTimestep(fractions[0]));
    else
      bad("--rule = '", o.rule, "': must be fraction or paper");
    plan.rule->check(plan.k);
    std::string listed;
    for (const double f : fractions)
      listed += (listed.empty() ? "" : ",") + detail::concat(f);
    plan.rule_text = o.rule + " " + listed;
  } catch (const tstitch::invalid_argument& e) {
    if (o.rule == "paper")
      bad("--rule = paper: ", e.what());
    bad(option, ": ", e.what());
  }
}

/// Phase 1: every argument that needs no model, checked before anything is loaded.
Plan check_arguments(const Options& o) {
  Plan plan;
  plan.k = o.models.size();
  if (plan.k < 2)
    bad("model files: got ", plan.k, "; stitching needs at least 2 (small first)");
  if (o.steps < 1 || o.steps > 1000)
    bad("--steps = ", o.steps, ": must be in [1, 1000] (the training schedule has 1000 steps)");
  if (o.count < 1)
    bad("--count = ", o.count, ": must be at least 1");
  if (o.batch < 1)
    bad("--batch = ", o.batch, ": must be at least 1");
  if (o.threads < 0)
    bad("--threads = ", o.threads, ": must be >= 0 (0: OpenMP's default, OMP_NUM_THREADS)");
  plan.guidance = o.guidance.value_or(default_guidance);
  if (!std::isfinite(plan.guidance))
    bad("--guidance = ", plan.guidance, ": must be finite");
  if (o.columns < 0)
    bad("--columns = ", o.columns, ": must be >= 0 (0: one row per 10 images)");
  if (!o.names.empty() && o.names.size() != plan.k)
    bad("--names: got ", o.names.size(), " names for ", plan.k, " models");
  tstitch_sample::check_plan_request(o.planning, plan.k, o.rule, o.device);
  resolve_rule(o, plan);
  if (!o.sampling_method.empty()) {
    resolve_sampling_method(o.sampling_method, plan);
  } else {
    try {
      plan.solver = make_solver(o.solver);
    } catch (const tstitch::invalid_argument&) {
      bad("--solver = '", o.solver, "': must be one of ", solver_name_list());
    }
    plan.solver_text = o.solver;
  }
  if (std::holds_alternative<CMStochasticIterative>(plan.solver))
    bad("--solver = 'cm': consistency-model sampling reads the raw output as the consistency "
        "function; the DiTs predict noise");
  if (o.device != "cpu" && o.device != "cuda")
    bad("--device = '", o.device, "': must be cpu or cuda");
  if (o.device == "cuda" && o.batch_invariant)
    bad("--batch-invariant: the CUDA DiT is not batch-invariant (its GEMM algorithms depend on "
        "the batch); use --device cpu");
  if (o.device == "cuda" && o.threads > 0)
    bad("--threads = ", o.threads, ": the CPU models' thread count; --device cuda runs on the GPU");
  plan.outputs = resolve_outputs(o);
  plan.seed = resolve_seed(o.seed);
  plan.noise = tstitch_sample::noise_source(o.rng, plan.seed, o.device);
  if (o.device == "cuda") {
#ifdef TSTITCH_SAMPLE_CUDA
    if (!cuda::device_available())
      throw tstitch::runtime_error("--device = cuda: no CUDA device available");
#else
    throw tstitch::runtime_error("--device = cuda: this tstitch-sample was built without CUDA "
                                 "(configure with -DTSTITCH_ENABLE_CUDA=ON and nvcc)");
#endif
  }
  return plan;
}

/// Phase 2: the model files, loaded and checked against each other.
struct Models {
  std::vector<dit::Weights> weights;
  std::vector<io::FileStamp> stamps; // each file as loaded, checked again before writing
  std::vector<std::string> names;    // --names, else each file's stem
  Shape shape;
  int classes = 0;
  Prediction prediction = Prediction::epsilon;
};

Models load_models(const Options& o) {
  g_stage = "loading the models";
  Models m;
  const std::size_t k = o.models.size();
  m.weights.reserve(k);
  for (std::size_t i = 0; i < k; ++i) {
    m.weights.push_back(
        load_weights(o.models[i], i, o.no_mmap ? io::LoadMode::read : io::LoadMode::mmap));
    m.stamps.push_back(m.weights.back().stamp());
  }
  const dit::Config first = m.weights[0].config();
  for (std::size_t i = 1; i < k; ++i) {
    const dit::Config& c = m.weights[i].config();
    if (c.latent_shape() != first.latent_shape())
      bad("models disagree on latent shape: '", o.models[0], "' has ", first.latent_shape(), ", '",
          o.models[i], "' has ", c.latent_shape());
    if (c.num_classes != first.num_classes)
      bad("models disagree on the class count: '", o.models[0], "' has ", first.num_classes, ", '",
          o.models[i], "' has ", c.num_classes);
  }
  m.shape = first.latent_shape();
  m.classes = static_cast<int>(first.num_classes);
  m.prediction = first.learn_sigma ? Prediction::epsilon_learned_sigma : Prediction::epsilon;
  m.names = o.names;
  for (std::size_t i = m.names.size(); i < k; ++i)
    m.names.push_back(std::filesystem::path(o.models[i]).stem().string());
  return m;
}

/// Phase 3: what the models' shape decides before sampling: image outputs need 1 or 3 channels and
/// a grid that can be made, and the run must fit in memory.
io::GridOptions check_shape_fits(const Options& o, const Plan& plan, const Shape& shape) {
  io::GridOptions grid;
  grid.columns = o.columns > 0 ? o.columns : std::min(o.count, 10);
  grid.scale = shape.height < 64 ? 2 : 1;
  std::optional<io::GridSize> grid_size;
  for (const Output& out : plan.outputs) {
    if (out.format == tstitch_sample::Format::npy || out.format == tstitch_sample::Format::npz)
      continue;
    const char* what = tstitch_sample::format_name(out.format);
    if (shape.channels != 1 && shape.channels != 3)
      bad(out.option, " = '", out.path, "': the models make ", shape.channels,
          " channels images; a ", what, " needs 1 or 3 (use --npy for latents)");
    if (out.format == tstitch_sample::Format::png_dir)
      continue; // one image per file: no grid
    try {
      grid_size = io::grid_size(o.count, shape, grid); // before sampling, not after
    } catch (const tstitch::invalid_argument& e) {
      bad(out.option, " = '", out.path, "': ", o.count, " images of ", shape, " make no ", what,
          " grid: ", e.what());
    }
  }
  if (tstitch_sample::mpi_job == nullptr) // under MPI a rank holds one batch, whatever --count
    check_memory(o, shape, grid_size);
  return grid;
}

/// --crop "H" or "HxW" against the models' shape: the centred region the 8-bit sample outputs
/// (--npz, --png-dir) keep, e.g. Fashion-MNIST's 28 x 28 items inside the models' 32 x 32.
std::optional<io::ImageRegion> resolve_crop(const Options& o, const Plan& plan,
                                            const Shape& shape) {
  if (o.crop.empty())
    return std::nullopt;
  const bool per_sample =
      std::any_of(plan.outputs.begin(), plan.outputs.end(), [](const Output& out) {
        return out.format == tstitch_sample::Format::npz ||
               out.format == tstitch_sample::Format::png_dir;
      });
  if (!per_sample)
    bad("--crop = '", o.crop, "': crops the 8-bit sample outputs; give --npz or --png-dir");
  const std::size_t x = o.crop.find('x');
  const std::string height = o.crop.substr(0, x);
  const std::string width = x == std::string::npos ? height : o.crop.substr(x + 1);
  std::int64_t h = 0, w = 0;
  const auto parse = [](const std::string& text, std::int64_t& value) {
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    return ec == std::errc{} && end == text.data() + text.size() && !text.empty();
  };
  if (!parse(height, h) || !parse(width, w) || h < 1 || w < 1)
    bad("--crop = '", o.crop, "': must be a size in pixels, H or HxW (e.g. 28)");
  if (h > shape.height || w > shape.width)
    bad("--crop = '", o.crop, "': larger than the models' ", shape.height, "x", shape.width,
        " images");
  return io::centred_region(shape, h, w);
}

/// --labels cycled over the images, or every class in turn.
std::vector<int> make_labels(const Options& o, int classes) {
  const std::vector<int> cycle =
      o.labels.empty() ? std::vector<int>{} : parse_labels(o.labels, classes);
  g_stage = detail::concat("allocating the labels (", o.count, " ints)");
  std::vector<int> labels;
  labels.reserve(static_cast<std::size_t>(o.count));
  for (int i = 0; i < o.count; ++i)
    labels.push_back(cycle.empty() ? i % classes
                                   : cycle[static_cast<std::size_t>(i) % cycle.size()]);
  return labels;
}

/// The schedule and the solver: a diffusers --scheduler-config, else the DiT's training schedule
/// (with --sigmas' rule, or --sampling-method's spacing) and the chosen solver.
Sampling make_sampling(const Options& o, Plan& plan, Prediction models_predict) {
  if (!o.scheduler_config.empty())
    return load_scheduler_config(o.scheduler_config, models_predict);
  const DiscreteSchedule base = plan.schedule.value_or(DiscreteSchedule{});
  return Sampling{o.sigmas.empty() ? AnySchedule(base)
                                   : AnySchedule(SigmaSchedule(base, parse_sigma_rule(o.sigmas))),
                  std::move(plan.solver)};
}

/// How long a duration is, for the progress line: "42 s", "3 min 5 s".
std::string duration_string(double seconds) {
  if (!(seconds >= 0) || seconds > 1e7)
    return "?";
  const auto s = static_cast<long long>(std::lround(seconds));
  return s < 60 ? detail::concat(s, " s") : detail::concat(s / 60, " min ", s % 60, " s");
}

/// The progress line on stderr: a bar, the batch and step, the speed, the time left (from the
/// speed so far over every batch's steps) and the serving model.
struct Progress {
  bool show = false, tty = false;
  int steps = 0, batches = 0;
  long long done = 0;
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();

  void step(int batch, int step_index, const std::string& serving) {
    ++done;
    if (!show || (!tty && step_index + 1 != steps))
      return;
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    const double rate = static_cast<double>(done) / elapsed;
    const double left = static_cast<double>(static_cast<long long>(batches) * steps - done) / rate;
    constexpr int width = 30;
    const int filled = (step_index + 1) * width / steps;
    std::fprintf(stderr, "%s[%s%s] batch %d/%d step %d/%d  %.1f steps/s  %s left  serving: %s%s",
                 tty ? "\r" : "", std::string(static_cast<std::size_t>(filled), '#').c_str(),
                 std::string(static_cast<std::size_t>(width - filled), '.').c_str(), batch + 1,
                 batches, step_index + 1, steps, rate, duration_string(left).c_str(),
                 serving.c_str(), tty ? "   " : "\n");
  }
};

/// The batch loop of both devices: each batch's x_T (Philox noise of its images), its options and
/// the progress line; sample_batch(part, labels, options) samples `part` (host memory) in place.
template <class Stitcher, class SampleBatch>
void sample_batches(const Options& o, const Plan& plan, const Sampling& sampling,
                    const Stitcher& stitcher, const std::vector<int>& labels, Tensor& x,
                    SampleBatch&& sample_batch) {
  // The run's own schedule: a threshold rule splits trailing or config timesteps differently.
  const std::vector<int> counts = stitcher.steps_per_model(sampling.schedule.trajectory(o.steps));
  std::string per_model, names;
  for (std::size_t k = 0; k < counts.size(); ++k) {
    per_model += (k ? ", " : "") + std::to_string(counts[k]);
    names += (k ? ", " : "") + stitcher.model_name(k);
  }
  std::fprintf(stderr, "steps per model: %s (%s)\n", per_model.c_str(), names.c_str());

  // A batch larger than the count is the whole count (and --batch INT_MAX cannot overflow).
  const int batch = std::min(o.batch, o.count);
  Progress progress;
  progress.tty = isatty(fileno(stderr)) != 0;
  progress.show = !o.quiet;
  progress.steps = o.steps;
  progress.batches = (o.count - 1) / batch + 1;
  g_stage = detail::concat("sampling batches of ", batch,
                           " images (a smaller --batch needs less memory)");
  // Under MPI the job's queue hands out the batches, x holds one at a time, and rank 0 shows the
  // job's progress instead.
  tstitch_sample::MpiJob* const job = tstitch_sample::mpi_job;
  progress.show = progress.show && job == nullptr;
  const auto next = [&](int b) { return job != nullptr ? job->next_block() : b + 1; };
  int sampled = 0; // by this process
  for (int b = next(-1); b >= 0 && b < progress.batches; b = next(b)) {
    const int first = b * batch, size = std::min(batch, o.count - first);
    sampled += size;
    const View part = View(x.view()).samples(job != nullptr ? 0 : first, size);
    fill_initial_noise(part, plan.seed, static_cast<std::uint32_t>(first), HostBackend{plan.noise});
    const std::vector<int> cond(labels.begin() + first, labels.begin() + first + size);
    SampleOptions options;
    options.steps = o.steps;
    options.seed = plan.seed;
    options.first_sample = static_cast<std::uint32_t>(first);
    options.guidance = Guidance::standard(plan.guidance);
    options.on_step = [&](const StepRecord& r) {
      progress.step(b, r.step, stitcher.model_name(r.model));
      if (job != nullptr)
        job->tick();
      return true;
    };
    sample_batch(part, cond, options);
    if (job != nullptr)
      job->block_done(b, first, part);
  }
  if (progress.tty && progress.show)
    std::fprintf(stderr, "\n");
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - progress.started).count();
  std::fprintf(stderr, "sampled %d images in %.2f s\n", sampled, seconds);
}

void sample_on_cpu(const Options& o, Plan& plan, const Sampling& sampling, Models models_in,
                   const std::vector<int>& labels, Tensor& x) {
  std::vector<dit::CpuModel> models;
  models.reserve(models_in.weights.size());
  for (std::size_t k = 0; k < models_in.weights.size(); ++k) {
    try {
      models.emplace_back(std::move(models_in.weights[k]), models_in.names[k]);
    } catch (const std::exception& e) {
      throw model_error(o, k, e);
    }
    models.back().set_batch_invariant(o.batch_invariant);
    models.back().set_threads(o.threads);
  }
  std::fprintf(stderr, "threads: %d per model%s\n", models.front().threads(),
               o.threads > 0 ? " (--threads)" : " (OpenMP's default; -t to set)");
  std::optional<tstitch_sample::PlannedRun> planned; // the rule from measured costs
  if (o.planning.active()) {
    planned =
        tstitch_sample::plan_run(o.planning, models, o.models, sampling.schedule, sampling.solver,
                                 o.steps, o.count, o.batch, labels, plan.guidance, plan.seed);
    plan.rule.emplace(planned->plan.policy());
    plan.rule_text = planned->rule_text;
  }
  ModelStitcher stitcher(*plan.rule,
                         std::vector<DenoiserRef<std::vector<int>>>(models.begin(), models.end()));
  Sampler<> sampler(HostBackend{plan.noise});
  const auto started = std::chrono::steady_clock::now();
  std::visit(
      [&](auto chosen) {
        sample_batches(o, plan, sampling, stitcher, labels, x,
                       [&](View part, const std::vector<int>& cond, const SampleOptions& options) {
                         const std::optional<std::vector<int>> uncond =
                             plan.guidance != 1.0 ? stitcher.unconditional(cond) // the null class
                                                  : std::nullopt;
                         sampler.run(stitcher, sampling.schedule, chosen, part, cond,
                                     uncond ? &*uncond : nullptr, options);
                       });
      },
      sampling.solver);
  if (planned) {
    const std::chrono::duration<double> seconds = std::chrono::steady_clock::now() - started;
    std::printf("%s\n", tstitch_sample::plan_report(*planned, seconds.count()).c_str());
  }
}

#ifdef TSTITCH_SAMPLE_CUDA
/// The same sampling with the latents on the GPU: each batch's x_T is made on the host (the same
/// noise as on the CPU), uploaded, sampled by cuda::DeviceSampler and downloaded. Weights are
/// uploaded once (bf16); the host copies are dropped.
void sample_on_cuda(const Options& o, const Plan& plan, const Sampling& sampling, Models models_in,
                    const std::vector<int>& labels, Tensor& x) {
  const cuda::DeviceInfo device = cuda::device_info();
  std::fprintf(stderr, "device: %s (compute capability %d.%d)\n", device.name.c_str(),
               device.compute_major, device.compute_minor);
  std::vector<cuda::DitModel> models;
  models.reserve(models_in.weights.size());
  for (std::size_t k = 0; k < models_in.weights.size(); ++k) {
    try {
      models.emplace_back(models_in.weights[k], models_in.names[k]); // uploads the weights (bf16)
    } catch (const std::exception& e) {
      throw model_error(o, k, e);
    }
  }
  models_in.weights.clear(); // on the device now
  cuda::DeviceStitcher stitcher(*plan.rule,
                                std::vector<cuda::DeviceDenoiserRef>(models.begin(), models.end()));
  cuda::DeviceSampler sampler;
  cuda::DeviceTensor latents(std::min(o.batch, o.count), x.shape());
  sample_batches(o, plan, sampling, stitcher, labels, x,
                 [&](View part, const std::vector<int>& cond, const SampleOptions& options) {
                   const View on_device = latents.view().samples(0, part.batch());
                   cuda::upload(on_device, part);
                   sampler.run(stitcher, sampling.schedule, sampling.solver, on_device, cond,
                               options);
                   cuda::download(part, on_device);
                 });
}
#endif

/// The run's parameters as one line, for the PNG text chunk and the JPEG comment.
std::string parameters_line(const Options& o, const Plan& plan) {
  std::string models;
  for (const std::string& m : o.models)
    models += (models.empty() ? "" : ", ") + std::filesystem::path(m).filename().string();
  return detail::concat(
      "tstitch-sample; seed: ", plan.seed, "; steps: ", o.steps, "; solver: ", plan.solver_text,
      "; guidance: ", plan.guidance, "; rule: ", plan.rule_text,
      "; labels: ", o.labels.empty() ? std::string("every class in turn") : o.labels,
      "; count: ", o.count, "; models: ", models);
}

/// The .npy's sidecar: the same parameters as JSON, with each image's label.
void write_sidecar(const std::filesystem::path& npy, const Options& o, const Plan& plan,
                   const std::vector<int>& labels) {
  nlohmann::json j;
  j["seed"] = plan.seed;
  j["steps"] = o.steps;
  j["solver"] = plan.solver_text;
  j["guidance"] = plan.guidance;
  j["rule"] = plan.rule_text;
  j["models"] = o.models;
  j["labels"] = labels;
  j["generator"] = "tstitch-sample";
  const std::string text = j.dump(2) + "\n";
  io::write_file_atomically(tstitch_sample::sidecar_of(npy),
                            [&](io::AtomicWriter& out) { out.write(text.data(), text.size()); });
}

/// Phase 5: the model files must be unchanged, then every output is written.
void write_outputs(const Options& o, const Plan& plan, const Models& models,
                   const io::GridOptions& grid, const std::vector<int>& labels, const Tensor& x) {
  for (const io::FileStamp& stamp : models.stamps) // before any output is written
    stamp.check_unchanged("model file");
  std::string wrote = detail::concat("wrote ", o.count, " samples");
  for (std::size_t i = 0; i < plan.outputs.size(); ++i) {
    const Output& out = plan.outputs[i];
    g_stage = detail::concat("writing '", out.path, "'");
    if (out.format == tstitch_sample::Format::npy) {
      io::write_npy(out.path, x);
      struct stat st {};
      if (::stat(out.path.c_str(), &st) == 0 && S_ISREG(st.st_mode)) // not /dev/null, a pipe
        write_sidecar(out.path, o, plan, labels);
    } else if (out.format == tstitch_sample::Format::npz) {
      tstitch_sample::write_npz(out.path, x, plan.crop);
    } else if (out.format == tstitch_sample::Format::png_dir) {
      std::filesystem::create_directories(out.path);
      tstitch_sample::write_png_samples(out.path, x, 0, o.count, plan.seed,
                                        parameters_line(o, plan), plan.crop);
    } else {
      tstitch_sample::write_image_grid(out.path, out.format, x, grid, plan.seed,
                                       parameters_line(o, plan));
    }
    wrote += (i == 0 ? " to " : " and ") + out.path;
  }
  std::printf("%s\n", wrote.c_str());
}

/// Under MPI: what decides the output (every rank must agree), and the outputs to write.
tstitch_sample::MpiSpec mpi_spec(const Options& o, const Plan& plan, const Models& models,
                                 const std::vector<int>& labels) {
  tstitch_sample::MpiSpec spec;
  spec.identity = detail::concat(parameters_line(o, plan), "; batch: ", o.batch,
                                 "; device: ", o.device, "; batch-invariant: ", o.batch_invariant,
                                 "; sigmas: ", o.sigmas, "; sampling method: ", o.sampling_method,
                                 "; scheduler config: ", o.scheduler_config, "; fd: ", o.fd,
                                 "; rng: ", o.rng, "; crop: ", o.crop, "; outputs:");
  for (const Output& out : plan.outputs) {
    spec.identity += " " + out.path;
    spec.outputs.push_back({out.option, out.path, out.format});
  }
  spec.models = o.models;
  spec.count = o.count;
  spec.block = std::min(o.batch, o.count);
  spec.shape = models.shape;
  spec.crop = plan.crop;
  spec.resume = o.resume;
  spec.rng = o.rng;
  spec.seed = plan.seed;
  spec.parameters = parameters_line(o, plan);
  spec.quiet = o.quiet;
  spec.write_sidecar = [&](const std::filesystem::path& npy) {
    write_sidecar(npy, o, plan, labels);
  };
  return spec;
}

int run_job(const Options& o) {
  tstitch_sample::MpiJob* const job = tstitch_sample::mpi_job; // null: a plain run
  Plan plan = check_arguments(o);
  if (job != nullptr)
    plan.seed = job->broadcast_seed(plan.seed); // a random seed: rank 0's
  std::fprintf(stderr, "seed: %llu%s\n", static_cast<unsigned long long>(plan.seed),
               !o.seed.empty() && o.seed[0] == '-' ? " (random)" : "");
  Models models = load_models(o);
  const io::GridOptions grid = check_shape_fits(o, plan, models.shape);
  plan.crop = resolve_crop(o, plan, models.shape);
  const std::vector<int> labels = make_labels(o, models.classes);
  const Sampling sampling = make_sampling(o, plan, models.prediction);
  std::fprintf(stderr, "guidance: %g%s\n", plan.guidance,
               o.guidance ? (plan.guidance == 1.0 ? " (off)" : "")
                          : " (the default, recommended for the shipped Fashion pair; "
                            "--guidance 1 turns it off)");
  g_stage = detail::concat(
      "allocating the latents (", o.count, " x ", models.shape, " float32, ",
      byte_string(static_cast<double>(o.count) * static_cast<double>(models.shape.numel()) * 4.0),
      ")");
  const std::optional<metrics::MlpClassifier> classifier =
      tstitch_sample::load_fd_classifier(o.fd, models.shape);
  if (job != nullptr) {
    tstitch_sample::MpiSpec spec = mpi_spec(o, plan, models, labels);
    spec.classifier = classifier ? &*classifier : nullptr;
    spec.classifier_path = o.fd;
    job->start(std::move(spec));
  }
  Tensor x(job != nullptr ? std::min(o.batch, o.count) : o.count, models.shape);
  g_stage = "setting up the models";
  const std::vector<io::FileStamp> stamps = models.stamps;
#ifdef TSTITCH_SAMPLE_CUDA
  if (o.device == "cuda")
    sample_on_cuda(o, plan, sampling, std::move(models), labels, x);
  else
#endif
    sample_on_cpu(o, plan, sampling, std::move(models), labels, x);
  models.stamps = stamps;
  if (job != nullptr) {
    for (const io::FileStamp& stamp : models.stamps)
      stamp.check_unchanged("model file");
    const std::string wrote = job->finish();
    if (!wrote.empty())
      std::printf("%s\n", wrote.c_str());
    return 0;
  }
  write_outputs(o, plan, models, grid, labels, x);
  if (classifier)
    tstitch_sample::print_fd(
        tstitch_sample::gathered_fd(*classifier, x, std::min(o.batch, o.count)), o.count, o.fd);
  return 0;
}

int run(const Options& o) {
  if (!tstitch_sample::mpi_launched())
    return run_job(o);
  return tstitch_sample::run_under_mpi(
      o.device == "cuda", [] { return g_stage; }, [&] { return run_job(o); });
}

/// Options of stable-diffusion.cpp and diffusers that mean something else here, or nothing: the
/// hint printed with "unknown option".
std::string hint_for(const std::string& option) {
  if (option == "-p" || option == "--prompt" || option == "-n" || option == "--negative-prompt")
    return "these DiTs are class-conditional: use --labels";
  if (option == "-W" || option == "-H" || option == "--width" || option == "--height")
    return "the image size is the models' own";
  if (option == "--scheduler")
    return "use --sigmas (a sigma rule) or --scheduler-config (a diffusers config)";
  if (option == "-m" || option == "--model" || option == "--diffusion-model")
    return "give the model files as arguments, small first";
  return "";
}

/// Every option, with stable-diffusion.cpp's and diffusers' names as aliases where they mean the
/// same. Longer than our usual limit: a flat list of declarations, read (and kept in step with
/// --help) top to bottom; split, the options would only be scattered.
void add_options(CLI::App& app, Options& o) {
  app.description("tstitch-sample: sample class-conditional DiTs (tstitch-dit safetensors) with "
                  "trajectory stitching on the CPU or a CUDA GPU. The first model serves the "
                  "first, noisiest steps.");
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
  auto* method_option =
      app.add_option("--sampling-method", o.sampling_method,
                     "stable-diffusion.cpp's sampler name (euler, euler_a, heun, dpm2, dpm++2m, "
                     "dpm++2s_a, lcm, tcd, ddim_trailing), mapped to the same solver")
          ->excludes(solver_option);
  app.add_option("--scheduler-config", o.scheduler_config,
                 "a diffusers scheduler_config.json (or a model folder holding one): its schedule "
                 "and solver replace the DiT's training schedule and --solver")
      ->excludes(solver_option)
      ->excludes(method_option);
  app.add_option("--sigmas", o.sigmas,
                 "a named sigma rule over the DiT's schedule (stable-diffusion.cpp's --scheduler): "
                 "ays_sd15, ays_sdxl, ays_svd, gits, sgm_uniform, simple or kl_optimal")
      ->excludes("--scheduler-config");
  app.add_option("--steps,--num-inference-steps", o.steps, "sampling steps")->capture_default_str();
  app.add_option("--guidance,--cfg-scale,--guidance-scale", o.guidance,
                 detail::concat("classifier-free guidance scale (default ", default_guidance,
                                ", recommended for the shipped Fashion pair; 1: off)"));
  app.add_option("-s,--seed", o.seed,
                 "noise seed, an integer in [0, 2^64); negative: a random seed. Image i gets the "
                 "same noise in any batch; the seed is printed and recorded in every output")
      ->capture_default_str();
  app.add_option("--count,-b,--batch-count", o.count, "number of images")->capture_default_str();
  app.add_option("--batch", o.batch, "images per model call")->capture_default_str();
  app.add_option("--labels", o.labels,
                 "class labels, comma-separated, cycled over the images (default 0, 1, ..., "
                 "num_classes - 1 cycling)");
  app.add_option("-o,--output", o.output,
                 detail::concat("output file; the format follows the extension: .png or .jpg/.jpeg "
                                "(a grid) or .npy (float32 [N, C, H, W]). Default ",
                                default_output, " when no output is given"));
  app.add_option("--png", o.png, "write a PNG grid (1- or 3-channel models)");
  app.add_option("--fd", o.fd,
                 "a classifier file (models/fashion_classifier.safetensors for the Fashion pair): "
                 "print FD-cls of the samples against its real-image statistics");
  app.add_option("--png-dir", o.png_dir,
                 "write one PNG per sample into this directory (000000.png, 000001.png, ...; "
                 "created if missing), 8-bit as in an .npz");
  app.add_option("--crop", o.crop,
                 "H or HxW: keep the centred H x W pixels of each sample in --npz and --png-dir "
                 "(28 for Fashion-MNIST's items inside the shipped models' 32 x 32)");
  app.add_option("--npy", o.npy,
                 "write the samples as float32 .npy [N, C, H, W], with the run's parameters in "
                 "FILE.json");
  app.add_option("--npz", o.npz,
                 "write the samples as an .npz holding arr_0, uint8 [N, H, W, C] (pixels as DiT's "
                 "sample_ddp.py converts them), the FID evaluators' input");
  app.add_option("--columns", o.columns, "image grid columns (default min(count, 10))");
  app.add_option("--names", o.names, "display names of the models, comma-separated")
      ->delimiter(',');
  app.add_option("-t,--threads", o.threads,
                 "threads per model on the CPU (0: OpenMP's default, OMP_NUM_THREADS)")
      ->capture_default_str();
  app.add_flag("--quiet,-q", o.quiet, "no progress bar");
  app.add_flag("--resume", o.resume,
               "under mpirun/srun: continue an interrupted run from OUTPUT.journal (the finished "
               "file is the same bytes as an uninterrupted run's)");
  app.add_flag("--batch-invariant", o.batch_invariant,
               "each image the same bits whatever --batch (one image per forward; slower; CPU "
               "only)");
  app.add_flag("--no-mmap", o.no_mmap,
               "read the model files into memory instead of mapping them: immune to a model "
               "file truncated or rewritten during the run (a mapped one may crash with SIGBUS)");
  tstitch_sample::add_plan_options(app, o.planning);
  tstitch_sample::add_rng_option(app, o.rng);
  app.add_option("--device", o.device,
                 "cpu, or cuda: the models on the GPU (bf16 weights; a build with CUDA)")
      ->capture_default_str();
}

} // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app;
  add_options(app, o);

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
    const std::string hint = app.remaining().empty() ? "" : hint_for(app.remaining().front());
    std::fprintf(stderr, "tstitch-sample: error: unknown option: %s (%s%ssee --help)\n",
                 unknown.c_str(), hint.c_str(), hint.empty() ? "" : "; ");
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
