// SPDX-License-Identifier: Apache-2.0
// T-Stitch on a real model pair: two class-conditional DiTs trained in this repository on
// Fashion-MNIST (tools/train_dit.py), a small one (DiT-S: depth 4, hidden 48) and a large one
// (DiT-L: depth 6, hidden 128, about 9x the multiply-accumulates). The small model serves the
// first, noisiest fraction of the DDIM steps and the large one the rest.
//
// For each fraction 0.0, 0.1, ..., 1.0 it samples the same N images (same initial noise, labels
// cycling 0..9), times the run, and measures quality as the Frechet distance (FD) between the
// generated images and the 60000 training images in a fixed 32-dimensional PCA feature space
// (models/fashion_fd_stats.safetensors, tools/make_fd_stats.py). FD from N samples carries a
// bias that grows as N shrinks, so the table also prints the FD of N real test images: the best
// any generator can score at this N. Rows of the PNG grid are fractions, columns the same seeds.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include <CLI/CLI.hpp>

#include "tstitch/io/png.hpp"
#include "tstitch/metrics/classifier.hpp"
#include "tstitch/metrics/frechet.hpp"
#include "tstitch/models/dit/cpu_model.hpp"
#include "tstitch/tstitch.hpp"

using namespace tstitch;

namespace {

#ifndef TSTITCH_MODELS_DIR
#define TSTITCH_MODELS_DIR "models"
#endif

struct Args {
  std::filesystem::path models_dir = TSTITCH_MODELS_DIR;
  std::filesystem::path small, large, stats, classifier; // default: files in models_dir
  std::filesystem::path png = "fashion_stitch.png";
  int count = 80;
  int steps = 50;
  int batch = 80;
  double guidance = 1.25; // the shipped pair's recommended scale, as tstitch-sample's default
  std::uint64_t seed = 1;
  int bootstrap = 50;
};

/// Command-line options (CLI11, as tstitch-sample); --help lists them with their defaults.
Args parse(int argc, char** argv) {
  Args args;
  CLI::App app{"fashion_demo: T-Stitch on the DiT pair trained on Fashion-MNIST (models/): time "
               "and quality of every small-model fraction 0.0, 0.1, ..., 1.0"};
  app.add_option(
         "--models", args.models_dir,
         "where fashion_dit_s/_l, fashion_fd_stats and fashion_classifier .safetensors live")
      ->capture_default_str();
  app.add_option("--small", args.small,
                 "small model (default: <models>/fashion_dit_s.safetensors)");
  app.add_option("--large", args.large,
                 "large model (default: <models>/fashion_dit_l.safetensors)");
  app.add_option("--stats", args.stats,
                 "PCA FD statistics (default: <models>/fashion_fd_stats.safetensors)");
  app.add_option("--classifier", args.classifier,
                 "classifier (default: <models>/fashion_classifier.safetensors)");
  app.add_option("--count", args.count, "images per fraction (80: about 3 min on 2 cores)")
      ->capture_default_str();
  app.add_option("--steps", args.steps, "DDIM steps")->capture_default_str();
  app.add_option("--guidance", args.guidance,
                 "classifier-free guidance scale (1.25: the large model's best FD)")
      ->capture_default_str();
  app.add_option("--batch", args.batch, "images per model call")->capture_default_str();
  app.add_option("--seed", args.seed, "noise seed")->capture_default_str();
  app.add_option("--png", args.png, "grid of the first 10 images of every fraction")
      ->capture_default_str();
  app.add_option("--bootstrap", args.bootstrap,
                 "bootstrap resamples for FD's standard error (0: off)")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    std::exit(app.exit(e));
  }
  require(args.count >= 2, "--count", args.count, "must be at least 2 (FD needs a covariance)");
  require(args.steps >= 1, "--steps", args.steps, "must be at least 1");
  require(args.batch >= 1, "--batch", args.batch, "must be at least 1");
  require(args.bootstrap >= 0, "--bootstrap", args.bootstrap, "must be >= 0");
  if (args.small.empty())
    args.small = args.models_dir / "fashion_dit_s.safetensors";
  if (args.large.empty())
    args.large = args.models_dir / "fashion_dit_l.safetensors";
  if (args.stats.empty())
    args.stats = args.models_dir / "fashion_fd_stats.safetensors";
  if (args.classifier.empty())
    args.classifier = args.models_dir / "fashion_classifier.safetensors";
  return args;
}

/// Standard deviation of FD over bootstrap resamples of the sample rows: the sampling noise of
/// one FD value at this N (a fixed seed keeps the demo's output reproducible).
double bootstrap_sd(const Eigen::MatrixXd& features, const metrics::FeatureStats& real,
                    int resamples) {
  if (resamples < 2)
    return std::nan("");
  std::mt19937_64 rng(12345);
  std::uniform_int_distribution<Eigen::Index> pick(0, features.rows() - 1);
  std::vector<double> values;
  Eigen::MatrixXd resampled(features.rows(), features.cols());
  for (int r = 0; r < resamples; ++r) {
    for (Eigen::Index i = 0; i < features.rows(); ++i)
      resampled.row(i) = features.row(pick(rng));
    values.push_back(metrics::frechet_distance(metrics::feature_stats(resampled), real));
  }
  double mean = 0, sq = 0;
  for (double v : values)
    mean += v;
  mean /= static_cast<double>(values.size());
  for (double v : values)
    sq += (v - mean) * (v - mean);
  return std::sqrt(sq / static_cast<double>(values.size() - 1));
}

/// "+- 1.234", or nothing without a bootstrap.
std::string plus_minus(double sd) {
  if (std::isnan(sd))
    return "";
  char text[32];
  std::snprintf(text, sizeof text, "+- %.3f", sd);
  return text;
}

dit::CpuModel load_model(const std::filesystem::path& path, const char* name) {
  if (!std::filesystem::exists(path))
    throw tstitch::runtime_error(
        detail::concat("fashion_demo: model file '", path.string(),
                       "' does not exist; train it with tools/train_dit.py (models/README.md) or "
                       "pass --models/--small/--large"));
  return dit::CpuModel(dit::Weights::load(path), name);
}

/// The two models and the two scorers, checked against each other.
struct Setup {
  dit::CpuModel small, large;
  metrics::PcaFeatures features;
  metrics::MlpClassifier classifier;
  Shape shape;
  int classes = 0;
};

Setup load_setup(const Args& args) {
  Setup s{load_model(args.small, "DiT-S"),
          load_model(args.large, "DiT-L"),
          metrics::PcaFeatures::load(args.stats),
          metrics::MlpClassifier::load(args.classifier),
          Shape{},
          0};
  s.shape = s.large.latent_shape();
  s.classes = static_cast<int>(s.large.config().num_classes);
  if (s.small.latent_shape() != s.shape)
    throw tstitch::invalid_argument(detail::concat(
        "fashion_demo: the models' image shapes differ: ", args.small.string(), " has ",
        s.small.latent_shape(), ", ", args.large.string(), " has ", s.shape));
  if (s.small.config().num_classes != s.large.config().num_classes)
    throw tstitch::invalid_argument(detail::concat(
        "fashion_demo: the models' class counts differ: ", s.small.config().num_classes, " vs ",
        s.large.config().num_classes));
  if (s.shape.numel() != s.classifier.pixels())
    throw tstitch::invalid_argument(
        detail::concat("fashion_demo: classifier '", args.classifier.string(), "' is for ",
                       s.classifier.pixels(), " pixels; the models make ", s.shape));
  if (s.shape.numel() != s.features.pixels())
    throw tstitch::invalid_argument(detail::concat("fashion_demo: FD stats '", args.stats.string(),
                                                   "' are for ", s.features.pixels(),
                                                   " pixels; the models make ", s.shape));
  return s;
}

/// What the run is and how it is scored, printed and flushed before the first (slow) row.
void print_header(const Args& args, const Setup& s, double cost_ratio) {
  std::printf("tstitch demo: T-Stitch on two DiTs trained on Fashion-MNIST (tools/train_dit.py)\n");
  std::printf("  small %s: %s, %.1f M MACs/image\n  large %s: %s, %.1f M MACs/image (%.1fx)\n",
              args.small.filename().string().c_str(), detail::concat(s.small.config()).c_str(),
              s.small.config().macs() / 1e6, args.large.filename().string().c_str(),
              detail::concat(s.large.config()).c_str(), s.large.config().macs() / 1e6,
              1.0 / cost_ratio);
  std::printf("  DDIM %d steps (x0 clipped to [-1, 1]), classifier-free guidance %.3g, %d images "
              "per fraction (labels 0..%d cycling, seed %llu)\n",
              args.steps, args.guidance, args.count, s.classes - 1,
              static_cast<unsigned long long>(args.seed));
  std::printf("  FD-pca: Frechet distance to the training images in a %lld-d PCA space (%s)\n",
              static_cast<long long>(s.features.dims()), args.stats.filename().string().c_str());
  std::printf("  FD-cls: the same in the %lld-d penultimate features of an MLP classifier (%s); "
              "acc: how many images it assigns to their conditioning class\n",
              static_cast<long long>(s.classifier.dims()),
              args.classifier.filename().string().c_str());
  std::printf("  lower FD is better; +- is the bootstrap standard deviation at this N\n\n");
  std::fflush(stdout);
}

/// The noise floor: `n` real held-out images scored the same way.
void print_noise_floor(const char* name, const Eigen::MatrixXd& test,
                       const metrics::FeatureStats& real, int n, int bootstrap) {
  if (test.rows() < n)
    return;
  const Eigen::MatrixXd real_rows = test.topRows(n);
  const double floor = metrics::frechet_distance(metrics::feature_stats(real_rows), real);
  const double floor_sd = bootstrap_sd(real_rows, real, bootstrap);
  std::printf("noise floor: %s of %d real test images (t10k) = %.3f%s\n", name, n, floor,
              (" " + plus_minus(floor_sd)).c_str());
  std::fflush(stdout);
}

/// One row of the table: a fraction's steps per model, time and scores.
struct Row {
  double fraction = 0;
  std::vector<int> counts;
  double seconds = 0, fd = 0, sd = 0, fd_cls = 0, sd_cls = 0, accuracy = 0;
};

/// Samples every image at one fraction, in batches, showing the row's progress on a terminal;
/// fills the row's steps per model and wall time.
void sample_fraction(const Args& args, Setup& s, Sampler<>& sampler, const std::vector<int>& labels,
                     Tensor& x, Row& row) {
  const double fraction = row.fraction;
  TrajectoryStitcher stitcher(s.small, s.large, fraction);
  stitcher.set_names({"DiT-S", "DiT-L"});
  const DiscreteSchedule schedule; // DDPM linear betas 1e-4..0.02, 1000 steps: the training one
  // Pixel-space model: clip the x0 estimate to the data range [-1, 1], as diffusers' DDIM does
  // for pixel-space DDPMs (clip_sample).
  DDIM solver(DDIMOptions{0.0, 1.0f});
  row.counts = stitcher.steps_per_model(schedule.trajectory(args.steps));
  const int n = args.count;
  const bool tty = isatty(fileno(stderr)) != 0;
  SampleOptions options;
  options.steps = args.steps;
  options.seed = args.seed;
  options.guidance = Guidance::standard(args.guidance);
  const auto started = std::chrono::steady_clock::now();
  for (int first = 0; first < n; first += args.batch) {
    const int b = std::min(args.batch, n - first);
    const View part = View(x.view()).samples(first, b);
    const std::vector<int> part_labels(labels.begin() + first, labels.begin() + first + b);
    const std::vector<int> uncond = stitcher.unconditional(part_labels);
    options.first_sample = static_cast<std::uint32_t>(first);
    options.on_step = [&](const StepRecord& r) {
      if (tty) // within the row: images done, step, serving model (erased when the row prints)
        std::fprintf(stderr, "\r  %.1f  images %d-%d of %d  step %d/%d  %s   ", fraction, first + 1,
                     first + b, n, r.step + 1, args.steps, stitcher.model_name(r.model).c_str());
      return true;
    };
    sampler.run(stitcher, schedule, solver, part, part_labels, &uncond, options);
  }
  if (tty)
    std::fprintf(stderr, "\r%72s\r", "");
  row.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
}

/// The row's scores: both FDs with their bootstrap deviations, and the classifier's accuracy.
void score_fraction(const Args& args, const Setup& s, const std::vector<int>& labels,
                    const Tensor& x, Row& row) {
  const Eigen::MatrixXd f = s.features.project(x);
  row.fd = metrics::frechet_distance(metrics::feature_stats(f), s.features.real_stats());
  row.sd = bootstrap_sd(f, s.features.real_stats(), args.bootstrap);
  const Eigen::MatrixXd fc = s.classifier.features(x);
  row.fd_cls = metrics::frechet_distance(metrics::feature_stats(fc), s.classifier.real_stats());
  row.sd_cls = bootstrap_sd(fc, s.classifier.real_stats(), args.bootstrap);
  const std::vector<int> predicted = s.classifier.predict(x);
  int correct = 0;
  for (std::size_t i = 0; i < predicted.size(); ++i)
    correct += predicted[i] == labels[i];
  row.accuracy = 100.0 * correct / args.count;
}

void print_row(const Row& row, const Row& large_only, double cost_ratio, int steps) {
  const double mac_cost = (row.counts[1] + cost_ratio * row.counts[0]) / steps;
  std::printf("  %.1f     %4d   %4d   %6.1f   %5.2fx     %5.2fx   %7.2f %-9s %4.2f   %7.2f %-9s"
              " %4.2f   %3.0f%%\n",
              row.fraction, row.counts[0], row.counts[1], row.seconds,
              large_only.seconds / row.seconds, 1.0 / mac_cost, row.fd, plus_minus(row.sd).c_str(),
              row.fd / large_only.fd, row.fd_cls, plus_minus(row.sd_cls).c_str(),
              row.fd_cls / large_only.fd_cls, row.accuracy);
  std::fflush(stdout);
}

/// Untimed warm-up: two steps that call both models at the sampling batch size, so that the first
/// row's time does not include sizing activation buffers and building oneDNN primitives.
void warm_up(const Args& args, Setup& s, Sampler<>& sampler, const std::vector<int>& labels,
             const Tensor& noise) {
  TrajectoryStitcher stitcher(s.small, s.large, 0.5);
  Tensor x = noise;
  const int b = std::min(args.batch, args.count);
  const View part = View(x.view()).samples(0, b);
  const std::vector<int> part_labels(labels.begin(), labels.begin() + b);
  const std::vector<int> uncond = stitcher.unconditional(part_labels);
  SampleOptions options;
  options.steps = 2;
  options.guidance = Guidance::standard(args.guidance);
  DDIM solver(DDIMOptions{0.0, 1.0f});
  sampler.run(stitcher, DiscreteSchedule{}, solver, part, part_labels, &uncond, options);
}

// Digits and the point in a 3x5 pixel font, one row of 3 bits per line, for the grid's labels.
constexpr int glyph_rows[11][5] = {{7, 5, 5, 5, 7}, {2, 6, 2, 2, 7}, {7, 1, 7, 4, 7},
                                   {7, 1, 7, 1, 7}, {5, 5, 7, 1, 1}, {7, 4, 7, 1, 7},
                                   {7, 4, 7, 5, 7}, {7, 1, 1, 1, 1}, {7, 5, 7, 5, 7},
                                   {7, 5, 7, 1, 7}, {0, 0, 0, 0, 2}};

/// The grid with a strip on its left naming each row's fraction ("0.3"), drawn in white.
io::Image8 label_rows(const io::Image8& grid, const io::GridOptions& options, Shape shape,
                      int rows) {
  constexpr int pixel = 3, strip = 4 * 3 * pixel + 2;
  io::Image8 out;
  out.width = grid.width + strip;
  out.height = grid.height;
  out.channels = grid.channels;
  out.pixels.assign(static_cast<std::size_t>(out.width * out.height * out.channels),
                    options.padding_value);
  for (std::int64_t y = 0; y < grid.height; ++y)
    std::copy_n(grid.pixels.begin() + y * grid.width * grid.channels, grid.width * grid.channels,
                out.pixels.begin() + (y * out.width + strip) * out.channels);
  const std::int64_t tile = shape.height * options.scale;
  for (int r = 0; r < rows; ++r) {
    const std::string text = detail::concat(r / 10, ".", r % 10);
    const std::int64_t top =
        options.padding + r * (tile + options.padding) + (tile - 5 * pixel) / 2;
    for (std::size_t g = 0; g < text.size(); ++g) {
      const int glyph = text[g] == '.' ? 10 : text[g] - '0';
      for (int gy = 0; gy < 5 * pixel; ++gy)
        for (int gx = 0; gx < 3 * pixel; ++gx)
          if ((glyph_rows[glyph][gy / pixel] >> (2 - gx / pixel)) & 1)
            for (std::int64_t c = 0; c < out.channels; ++c)
              out.pixels[static_cast<std::size_t>(
                  ((top + gy) * out.width + 2 + static_cast<std::int64_t>(g) * 4 * pixel + gx) *
                      out.channels +
                  c)] = 255;
    }
  }
  return out;
}

int run(const Args& args) {
  Setup s = load_setup(args);
  const int n = args.count;
  std::vector<int> labels(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i)
    labels[static_cast<std::size_t>(i)] = i % s.classes;
  Tensor noise(n, s.shape);
  fill_initial_noise(noise, args.seed);
  const double cost_ratio = s.small.config().macs() / s.large.config().macs();

  print_header(args, s, cost_ratio);
  print_noise_floor("FD-pca", s.features.test_features(), s.features.real_stats(), n,
                    args.bootstrap);
  print_noise_floor("FD-cls", s.classifier.test_features(), s.classifier.real_stats(), n,
                    args.bootstrap);
  std::printf("\n");

  const int columns = std::min(n, s.classes);
  Tensor grid(11 * columns, s.shape);
  std::printf("fraction  small  large   wall s  speedup  MAC speedup     FD-pca (x large)"
              "          FD-cls (x large)    acc\n");
  std::fflush(stdout);
  Sampler<> sampler;
  warm_up(args, s, sampler, labels, noise);
  Row large_only;
  for (int tenth = 0; tenth <= 10; ++tenth) {
    Tensor x = noise;
    Row row;
    row.fraction = tenth / 10.0;
    sample_fraction(args, s, sampler, labels, x, row);
    score_fraction(args, s, labels, x, row);
    if (tenth == 0)
      large_only = row;
    print_row(row, large_only, cost_ratio, args.steps);
    std::copy(x.data(), x.data() + columns * s.shape.numel(),
              grid.data() + tenth * columns * s.shape.numel());
  }

  io::GridOptions grid_options;
  grid_options.columns = columns;
  grid_options.scale = 2;
  io::write_png(args.png,
                label_rows(io::image_grid(grid, grid_options), grid_options, s.shape, 11));
  std::printf("\nwrote %s: rows = fractions 0.0 (top, large only) .. 1.0 (bottom, small only), "
              "labelled on the left; columns = the same %d seeds (labels 0..%d)\n",
              std::filesystem::absolute(args.png).string().c_str(), columns, columns - 1);
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  try {
    return run(parse(argc, argv));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
