// SPDX-License-Identifier: Apache-2.0
// T-Stitch on analytic denoisers: the speed/quality trade-off of serving the first, noisiest
// steps with a cheaper model, on data where the truth is known exactly.
//
// Data: a class-conditional mixture of diagonal Gaussians over image-shaped latents [4, 16, 16].
// Each class mean is a coarse pattern plus fine detail.
//   large model: the exact denoiser of the data.
//   small model: the exact denoiser of a blurred copy (coarse means only, the detail folded into
//                the variance): it knows the layout of each class but not the detail, the way a
//                small network does. Its cost is set to DiT-S/2 : DiT-XL/2 = 6.1 : 118.6 GMACs.
// At high noise the detail is invisible, so the small model is as good as the large one there;
// the Frechet distance (FD) of the generated classes to the true ones stays flat while the small
// model serves the early steps and rises once it serves the steps where detail forms.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "tstitch/tstitch.hpp"

#include "support/gaussian_mixture.hpp" // exact denoisers for known data (tests/support)

using namespace tstitch;

namespace {

constexpr Shape latent{4, 16, 16};
constexpr int num_classes = 8;
constexpr double small_cost = 6.1 / 118.6; // DiT-S/2 vs DiT-XL/2 GMACs per forward

struct Args {
  int steps = 50;
  int samples_per_class = 100;
  double guidance = 1.0;
  std::string solver = "ddim";
};

Args parse(int argc, char** argv) {
  Args args;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc)
        throw tstitch::invalid_argument("stitch_demo: " + a + " needs a value");
      return argv[++i];
    };
    if (a == "--steps")
      args.steps = std::stoi(value());
    else if (a == "--samples-per-class")
      args.samples_per_class = std::stoi(value());
    else if (a == "--guidance")
      args.guidance = std::stod(value());
    else if (a == "--solver")
      args.solver = value();
    else if (a == "--help" || a == "-h") {
      std::printf("usage: stitch_demo [--steps N] [--samples-per-class M] [--guidance S] "
                  "[--solver ddim|ddpm|euler]\n");
      std::exit(0);
    } else
      throw tstitch::invalid_argument("stitch_demo: unknown argument '" + a + "'");
  }
  require(args.samples_per_class >= 2, "--samples-per-class", args.samples_per_class,
          "must be at least 2");
  return args;
}

/// The true classes and their blurred copies.
struct Data {
  std::vector<analytic::DiagonalGaussian> exact, blurred;
};

Data make_data() {
  Data d;
  const auto n = static_cast<std::size_t>(latent.numel());
  for (int k = 0; k < num_classes; ++k) {
    analytic::DiagonalGaussian exact, blurred;
    for (std::size_t e = 0; e < n; ++e) {
      const double c = static_cast<double>(e / 256), y = static_cast<double>((e / 16) % 16),
                   x = static_cast<double>(e % 16);
      const double coarse = 0.8 * std::sin(0.35 * x + 0.9 * k + c) * std::cos(0.3 * y - 0.5 * k);
      const double detail = 0.35 * std::sin(2.1 * x + 1.7 * y + 2.3 * k + 0.7 * c);
      const double variance = 0.02 + 0.03 * (0.5 + 0.5 * std::cos(0.8 * k + c));
      exact.mean.push_back(coarse + detail);
      exact.variance.push_back(variance);
      blurred.mean.push_back(coarse);
      blurred.variance.push_back(variance + detail * detail);
    }
    d.exact.push_back(exact);
    d.blurred.push_back(blurred);
  }
  return d;
}

/// Mean over classes of the Frechet distance between the Gaussian fitted to the generated samples
/// of a class and the true class Gaussian (both diagonal: exact denoisers of Gaussian classes
/// produce diagonal Gaussians), per latent element.
double frechet_distance(const Tensor& x, const std::vector<int>& labels, const Data& data) {
  const std::int64_t dims = latent.numel();
  double total = 0;
  for (int k = 0; k < num_classes; ++k) {
    double fd = 0;
    for (std::int64_t e = 0; e < dims; ++e) {
      double sum = 0, sum2 = 0, count = 0;
      for (std::size_t n = 0; n < labels.size(); ++n)
        if (labels[n] == k) {
          const double v = x[static_cast<std::int64_t>(n) * dims + e];
          sum += v;
          sum2 += v * v;
          count += 1;
        }
      const double mean = sum / count, var = (sum2 - sum * sum / count) / (count - 1);
      const auto u = static_cast<std::size_t>(e);
      const auto& g = data.exact[static_cast<std::size_t>(k)];
      fd += std::pow(mean - g.mean[u], 2) + std::pow(std::sqrt(var) - std::sqrt(g.variance[u]), 2);
    }
    total += fd / static_cast<double>(dims);
  }
  return total / num_classes;
}

template <class SolverT> void run_table(const Args& args, SolverT solver, const Data& data) {
  const std::vector<double> weights(num_classes, 1.0);
  analytic::ExactDenoiser large(latent, data.exact, weights);
  analytic::ExactDenoiser small(latent, data.blurred, weights);
  const DiscreteSchedule schedule; // DDPM linear betas, 1000 training steps, leading spacing

  std::vector<int> labels;
  for (int k = 0; k < num_classes; ++k)
    for (int i = 0; i < args.samples_per_class; ++i)
      labels.push_back(k);
  const auto batch = static_cast<std::int64_t>(labels.size());
  Tensor noise(batch, latent);
  fill_initial_noise(noise, /*seed=*/2024);

  std::printf("fraction  small  large  rel. cost  speedup     FD    (x large-only)  wall ms\n");
  double large_only_fd = 0;
  for (int tenth = 0; tenth <= 10; ++tenth) {
    const double fraction = tenth / 10.0;
    TrajectoryStitcher stitcher(small, large, fraction);
    const std::vector<int> counts = stitcher.steps_per_model(schedule.trajectory(args.steps));
    Tensor x = noise;
    SampleOptions options;
    options.steps = args.steps;
    options.seed = 7;
    options.guidance = Guidance::standard(args.guidance);
    const auto started = std::chrono::steady_clock::now();
    sample(stitcher, schedule, solver, x, labels, options);
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started)
            .count();
    const double cost = (counts[1] + small_cost * counts[0]) / args.steps;
    const double fd = frechet_distance(x, labels, data);
    if (tenth == 0)
      large_only_fd = fd;
    std::printf("  %.1f     %4d   %4d     %.3f     %5.2fx   %.5f     %6.2f      %8.1f\n", fraction,
                counts[0], counts[1], cost, 1.0 / cost, fd, fd / large_only_fd, ms);
  }
}

} // namespace

int main(int argc, char** argv) {
  try {
    const Args args = parse(argc, argv);
    const Data data = make_data();
    std::printf("tstitch demo: T-Stitch on exact denoisers of an %d-class Gaussian mixture, "
                "latents [4, 16, 16]\n",
                num_classes);
    std::printf("%s, %d steps, guidance %.2g, %d samples per class; small model cost = %.4f of "
                "the large (DiT-S/2 : DiT-XL/2 GMACs)\n",
                args.solver.c_str(), args.steps, args.guidance, args.samples_per_class, small_cost);
    std::printf("rel. cost and speedup count model cost only; FD is per latent element, averaged "
                "over classes (lower is better);\nwall ms is this run's measured time, in which "
                "both analytic models cost the same\n\n");
    if (args.solver == "ddim")
      run_table(args, DDIM{}, data);
    else if (args.solver == "ddpm")
      run_table(args, DDPM{}, data);
    else if (args.solver == "euler")
      run_table(args, Euler{}, data);
    else
      throw tstitch::invalid_argument("stitch_demo: --solver = '" + args.solver +
                                      "': must be ddim, ddpm or euler");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
