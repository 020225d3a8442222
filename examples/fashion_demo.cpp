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
  double guidance = 1.25;
  std::uint64_t seed = 1;
  int bootstrap = 50;
};

/// Command-line options (CLI11, as tstitch-sample); --help lists them with their defaults.
Args parse(int argc, char** argv) {
  Args args;
  CLI::App app{"fashion_demo: T-Stitch on the DiT pair trained on Fashion-MNIST (models/): time "
               "and quality of every small-model fraction 0.0, 0.1, ..., 1.0"};
  app.add_option("--models", args.models_dir,
                 "where fashion_dit_s/_l, fashion_fd_stats and fashion_classifier .safetensors live")
      ->capture_default_str();
  app.add_option("--small", args.small, "small model (default: <models>/fashion_dit_s.safetensors)");
  app.add_option("--large", args.large, "large model (default: <models>/fashion_dit_l.safetensors)");
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

int run(const Args& args) {
  dit::CpuModel small = load_model(args.small, "DiT-S");
  dit::CpuModel large = load_model(args.large, "DiT-L");
  const metrics::PcaFeatures features = metrics::PcaFeatures::load(args.stats);
  const metrics::MlpClassifier classifier = metrics::MlpClassifier::load(args.classifier);
  const Shape shape = large.latent_shape();
  if (small.latent_shape() != shape)
    throw tstitch::invalid_argument(detail::concat("fashion_demo: the models' image shapes differ: ",
                                                   args.small.string(), " has ",
                                                   small.latent_shape(), ", ", args.large.string(),
                                                   " has ", shape));
  if (small.config().num_classes != large.config().num_classes)
    throw tstitch::invalid_argument(detail::concat(
        "fashion_demo: the models' class counts differ: ", small.config().num_classes, " vs ",
        large.config().num_classes));
  if (shape.numel() != classifier.pixels())
    throw tstitch::invalid_argument(detail::concat("fashion_demo: classifier '",
                                                   args.classifier.string(), "' is for ",
                                                   classifier.pixels(), " pixels; the models make ",
                                                   shape));
  if (shape.numel() != features.pixels())
    throw tstitch::invalid_argument(detail::concat("fashion_demo: FD stats '", args.stats.string(),
                                                   "' are for ", features.pixels(),
                                                   " pixels; the models make ", shape));

  const int n = args.count;
  const int classes = static_cast<int>(large.config().num_classes);
  std::vector<int> labels(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i)
    labels[static_cast<std::size_t>(i)] = i % classes;
  Tensor noise(n, shape);
  fill_initial_noise(noise, args.seed);

  const DiscreteSchedule schedule; // DDPM linear betas 1e-4..0.02, 1000 steps: the training one
  // Pixel-space model: clip the x0 estimate to the data range [-1, 1], as diffusers' DDIM does
  // for pixel-space DDPMs (clip_sample).
  DDIM solver(DDIMOptions{0.0, 1.0f});
  const double cost_ratio = small.config().macs() / large.config().macs();

  std::printf("tstitch demo: T-Stitch on two DiTs trained on Fashion-MNIST (tools/train_dit.py)\n");
  std::printf("  small %s: %s, %.1f M MACs/image\n  large %s: %s, %.1f M MACs/image (%.1fx)\n",
              args.small.filename().string().c_str(),
              detail::concat(small.config()).c_str(), small.config().macs() / 1e6,
              args.large.filename().string().c_str(), detail::concat(large.config()).c_str(),
              large.config().macs() / 1e6, 1.0 / cost_ratio);
  std::printf("  DDIM %d steps (x0 clipped to [-1, 1]), classifier-free guidance %.3g, %d images "
              "per fraction (labels 0..%d cycling, seed %llu)\n",
              args.steps, args.guidance, n, classes - 1,
              static_cast<unsigned long long>(args.seed));
  std::printf("  FD-pca: Frechet distance to the training images in a %lld-d PCA space (%s)\n",
              static_cast<long long>(features.dims()), args.stats.filename().string().c_str());
  std::printf("  FD-cls: the same in the %lld-d penultimate features of an MLP classifier (%s); "
              "acc: how many images it assigns to their conditioning class\n",
              static_cast<long long>(classifier.dims()),
              args.classifier.filename().string().c_str());
  std::printf("  lower FD is better; +- is the bootstrap standard deviation at this N\n\n");

  // The noise floor: real held-out images scored the same way, at the same N.
  const Eigen::MatrixXd& test = features.test_features();
  if (test.rows() >= n) {
    const Eigen::MatrixXd real_rows = test.topRows(n);
    const double floor = metrics::frechet_distance(metrics::feature_stats(real_rows),
                                                   features.real_stats());
    const double floor_sd = bootstrap_sd(real_rows, features.real_stats(), args.bootstrap);
    std::printf("noise floor: FD-pca of %d real test images (t10k) = %.3f%s\n", n, floor,
                (" " + plus_minus(floor_sd)).c_str());
  }
  const Eigen::MatrixXd& test_cls = classifier.test_features();
  if (test_cls.rows() >= n) {
    const Eigen::MatrixXd real_rows = test_cls.topRows(n);
    const double floor = metrics::frechet_distance(metrics::feature_stats(real_rows),
                                                   classifier.real_stats());
    const double floor_sd = bootstrap_sd(real_rows, classifier.real_stats(), args.bootstrap);
    std::printf("noise floor: FD-cls of %d real test images (t10k) = %.3f%s\n", n, floor,
                (" " + plus_minus(floor_sd)).c_str());
  }
  std::printf("\n");

  const int columns = std::min(n, classes);
  Tensor grid(11 * columns, shape);
  std::printf("fraction  small  large   wall s  speedup  MAC speedup     FD-pca (x large)"
              "          FD-cls (x large)    acc\n");
  double large_seconds = 0, large_fd = 0, large_fd_cls = 0;
  Sampler<> sampler;
  {
    // Untimed warm-up: two steps that call both models at the sampling batch size, so that the
    // first row's time does not include sizing activation buffers and building oneDNN primitives.
    TrajectoryStitcher warm_up(small, large, 0.5);
    Tensor x = noise;
    const int b = std::min(args.batch, n);
    const View part = View(x.view()).samples(0, b);
    const std::vector<int> part_labels(labels.begin(), labels.begin() + b);
    const std::vector<int> uncond = warm_up.unconditional(part_labels);
    SampleOptions options;
    options.steps = 2;
    options.guidance = Guidance::standard(args.guidance);
    sampler.run(warm_up, schedule, solver, part, part_labels, &uncond, options);
  }
  for (int tenth = 0; tenth <= 10; ++tenth) {
    const double fraction = tenth / 10.0;
    TrajectoryStitcher stitcher(small, large, fraction);
    stitcher.set_names({"DiT-S", "DiT-L"});
    const std::vector<int> counts = stitcher.steps_per_model(schedule.trajectory(args.steps));
    Tensor x = noise;
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
      sampler.run(stitcher, schedule, solver, part, part_labels, &uncond, options);
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    const Eigen::MatrixXd f = features.project(x);
    const double fd = metrics::frechet_distance(metrics::feature_stats(f), features.real_stats());
    const double sd = bootstrap_sd(f, features.real_stats(), args.bootstrap);
    const Eigen::MatrixXd fc = classifier.features(x);
    const double fd_cls =
        metrics::frechet_distance(metrics::feature_stats(fc), classifier.real_stats());
    const double sd_cls = bootstrap_sd(fc, classifier.real_stats(), args.bootstrap);
    const std::vector<int> predicted = classifier.predict(x);
    int correct = 0;
    for (std::size_t i = 0; i < predicted.size(); ++i)
      correct += predicted[i] == labels[i];
    if (tenth == 0) {
      large_seconds = seconds;
      large_fd = fd;
      large_fd_cls = fd_cls;
    }
    const double mac_cost = (counts[1] + cost_ratio * counts[0]) / args.steps;
    std::printf("  %.1f     %4d   %4d   %6.1f   %5.2fx     %5.2fx   %7.2f %-9s %4.2f   %7.2f %-9s"
                " %4.2f   %3.0f%%\n",
                fraction, counts[0], counts[1], seconds, large_seconds / seconds, 1.0 / mac_cost,
                fd, plus_minus(sd).c_str(), fd / large_fd, fd_cls, plus_minus(sd_cls).c_str(),
                fd_cls / large_fd_cls, 100.0 * correct / n);
    std::fflush(stdout);
    std::copy(x.data(), x.data() + columns * shape.numel(),
              grid.data() + tenth * columns * shape.numel());
  }

  io::GridOptions grid_options;
  grid_options.columns = columns;
  grid_options.scale = 2;
  io::write_png_grid(args.png, grid, grid_options);
  std::printf("\nwrote %s: rows = fractions 0.0 (top, large only) .. 1.0 (bottom, small only), "
              "columns = the same %d seeds (labels 0..%d)\n",
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
