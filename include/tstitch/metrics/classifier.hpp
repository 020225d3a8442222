// SPDX-License-Identifier: Apache-2.0
#pragma once

// A small MLP classifier as a feature space for the Frechet distance and as a judge of class
// accuracy: the penultimate ReLU features respond to whether an image is recognisably an object
// of its class, which a pixel-space PCA barely sees (tools/train_classifier.py says more).
#include <Eigen/Dense>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "tstitch/core/error.hpp"
#include "tstitch/core/tensor.hpp"
#include "tstitch/io/safetensors.hpp"
#include "tstitch/metrics/frechet.hpp"

namespace tstitch::metrics {

/// features(x) = ReLU(W2 ReLU(W1 x + b1) + b2), logits = W3 features + b3, on flattened images,
/// as written by tools/train_classifier.py (format "tstitch-classifier").
class MlpClassifier {
public:
  /// Reads a classifier file; errors name the file and the tensor.
  [[nodiscard]] static MlpClassifier load(const std::filesystem::path& path) {
    io::SafetensorsFile file(path);
    const auto fail = [&](const std::string& what) {
      throw runtime_error(tstitch::detail::concat("tstitch: classifier file '", path.string(),
                                                  "': ", what));
    };
    const auto format = file.metadata().find("format");
    if (format == file.metadata().end() || format->second != "tstitch-classifier")
      fail("metadata 'format' must be 'tstitch-classifier' (written by tools/train_classifier.py)");
    for (const char* name : {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight",
                             "fc3.bias", "feature_mean", "feature_cov"})
      if (!file.contains(name))
        fail(tstitch::detail::concat("tensor '", name, "' is missing"));
    const auto shape = [&](const char* name) {
      const std::vector<std::int64_t>& s = file.info(name).shape;
      if (s.size() != 2 || s[0] < 1 || s[1] < 1)
        fail(tstitch::detail::concat("tensor '", name, "' has shape ", io::shape_string(s),
                                     "; expected [out, in]"));
      return s;
    };
    const auto s1 = shape("fc1.weight"), s2 = shape("fc2.weight"), s3 = shape("fc3.weight");
    file.expect("fc2.weight", {s2[0], s1[0]});
    file.expect("fc3.weight", {s3[0], s2[0]});
    file.expect("fc1.bias", {s1[0]});
    file.expect("fc2.bias", {s2[0]});
    file.expect("fc3.bias", {s3[0]});
    file.expect("feature_mean", {s2[0]});
    file.expect("feature_cov", {s2[0], s2[0]});

    MlpClassifier c;
    c.w1_ = matrix(file, "fc1.weight");
    c.w2_ = matrix(file, "fc2.weight");
    c.w3_ = matrix(file, "fc3.weight");
    c.b1_ = vector(file, "fc1.bias");
    c.b2_ = vector(file, "fc2.bias");
    c.b3_ = vector(file, "fc3.bias");
    c.real_ = FeatureStats{vector(file, "feature_mean").cast<double>(),
                           matrix(file, "feature_cov").cast<double>(), 0};
    c.real_.covariance = 0.5 * (c.real_.covariance + c.real_.covariance.transpose());
    detail::check_stats(c.real_, "real");
    if (file.contains("test_features")) {
      const auto& t = file.info("test_features").shape;
      if (t.size() != 2 || t[1] != s2[0])
        fail(tstitch::detail::concat("tensor 'test_features' has shape ", io::shape_string(t),
                                     "; expected [T, ", s2[0], "]"));
      c.test_features_ = matrix(file, "test_features").cast<double>();
    }
    return c;
  }

  [[nodiscard]] std::int64_t pixels() const { return w1_.cols(); }
  [[nodiscard]] std::int64_t dims() const { return w2_.rows(); }
  [[nodiscard]] std::int64_t classes() const { return w3_.rows(); }
  [[nodiscard]] const FeatureStats& real_stats() const { return real_; }
  /// Features of held-out real images (may be empty): the FD noise floor at a given N.
  [[nodiscard]] const Eigen::MatrixXd& test_features() const { return test_features_; }

  /// Penultimate features of a batch (N, C, H, W) with C*H*W = pixels(): an N x dims() matrix.
  [[nodiscard]] Eigen::MatrixXd features(ConstView images) const {
    return hidden(images).cast<double>();
  }

  /// The most likely class of every image.
  [[nodiscard]] std::vector<int> predict(ConstView images) const {
    const Matrix logits = (hidden(images) * w3_.transpose()).rowwise() + b3_.transpose();
    std::vector<int> labels(static_cast<std::size_t>(logits.rows()));
    for (Eigen::Index n = 0; n < logits.rows(); ++n)
      logits.row(n).maxCoeff(&labels[static_cast<std::size_t>(n)]);
    return labels;
  }

private:
  using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using Vector = Eigen::VectorXf;

  Matrix hidden(ConstView images) const {
    const Matrix x = detail::flatten_images<float>(images, pixels(), "the classifier");
    const Matrix h1 = ((x * w1_.transpose()).rowwise() + b1_.transpose()).cwiseMax(0.0f);
    return ((h1 * w2_.transpose()).rowwise() + b2_.transpose()).cwiseMax(0.0f);
  }

  static Matrix matrix(const io::SafetensorsFile& file, const char* name) {
    const std::vector<std::int64_t>& s = file.info(name).shape;
    const std::vector<float> v = file.read_f32(name);
    return Eigen::Map<const Matrix>(v.data(), s[0], s[1]);
  }
  static Vector vector(const io::SafetensorsFile& file, const char* name) {
    const std::vector<float> v = file.read_f32(name);
    return Eigen::Map<const Vector>(v.data(), static_cast<Eigen::Index>(v.size()));
  }

  Matrix w1_, w2_, w3_;
  Vector b1_, b2_, b3_;
  FeatureStats real_;
  Eigen::MatrixXd test_features_;
};

} // namespace tstitch::metrics
