// SPDX-License-Identifier: Apache-2.0
#pragma once

// tstitch-sample --fd CLASSIFIER: FD-cls of the generated samples, the Frechet distance between
// their penultimate features under a small MLP classifier (tools/train_classifier.py; the Fashion
// pair's is models/fashion_classifier.safetensors) and the real images' statistics stored in the
// same file. A plain run scores the gathered samples (metrics::feature_stats); an MPI run sums each
// rank's features (count, sums, outer products: metrics::FeatureMoments) and reduces them, so no
// image leaves its rank.

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>

#include <Eigen/Core>

#include "tstitch/core/error.hpp"
#include "tstitch/core/tensor.hpp"
#include "tstitch/metrics/classifier.hpp"
#include "tstitch/metrics/feature_moments.hpp"
#include "tstitch/metrics/frechet.hpp"

namespace tstitch_sample {

/// The --fd classifier, checked against the models' images before anything is sampled; nothing
/// when --fd is not given.
inline std::optional<tstitch::metrics::MlpClassifier>
load_fd_classifier(const std::string& path, const tstitch::Shape& shape) {
  if (path.empty())
    return std::nullopt;
  if (!std::filesystem::exists(path))
    throw tstitch::runtime_error(tstitch::detail::concat("--fd = '", path, "': no such file"));
  tstitch::metrics::MlpClassifier classifier = [&] {
    try {
      return tstitch::metrics::MlpClassifier::load(path);
    } catch (const std::exception& e) {
      throw tstitch::runtime_error(tstitch::detail::concat("--fd = '", path, "': ", e.what()));
    }
  }();
  if (classifier.pixels() != shape.numel())
    throw tstitch::runtime_error(
        tstitch::detail::concat("--fd = '", path, "': the classifier is for ", classifier.pixels(),
                                " pixels; the models make ", shape));
  return classifier;
}

/// Moments about the real features' mean (known to every rank), so the sums stay small.
inline tstitch::metrics::FeatureMoments fd_moments(const tstitch::metrics::MlpClassifier& c) {
  return tstitch::metrics::FeatureMoments(c.real_stats().mean);
}

inline void print_fd(double fd, std::int64_t count, const std::string& path) {
  std::printf("FD-cls: %.17g (%lld samples against the real statistics in %s)\n", fd,
              static_cast<long long>(count), std::filesystem::path(path).filename().c_str());
}

/// The classifier's features of `images` on one thread: Eigen's multithreaded GEMM may round
/// differently per thread count, and an MPI rank (bound to a core) and a plain run differ in it.
inline Eigen::MatrixXd fd_features(const tstitch::metrics::MlpClassifier& classifier,
                                   tstitch::ConstView images) {
  const int threads = Eigen::nbThreads();
  Eigen::setNbThreads(1);
  Eigen::MatrixXd features = classifier.features(images);
  Eigen::setNbThreads(threads);
  return features;
}

/// FD-cls of every sample, gathered in one process. Features are computed batch by batch as the
/// samples were made (the classifier's GEMMs may round differently for another row count), so
/// they are the same features an MPI run computes block by block.
inline double gathered_fd(const tstitch::metrics::MlpClassifier& classifier,
                          tstitch::ConstView images, std::int64_t batch) {
  Eigen::MatrixXd features(images.batch(), classifier.dims());
  for (std::int64_t first = 0; first < images.batch(); first += batch) {
    const std::int64_t size = std::min(batch, images.batch() - first);
    features.middleRows(first, size) = fd_features(classifier, images.samples(first, size));
  }
  return tstitch::metrics::frechet_distance(tstitch::metrics::feature_stats(features),
                                            classifier.real_stats());
}

} // namespace tstitch_sample
