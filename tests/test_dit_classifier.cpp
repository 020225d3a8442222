// SPDX-License-Identifier: Apache-2.0
// metrics::MlpClassifier against a hand-computed forward on a crafted 4-pixel, 3-hidden,
// 2-feature, 2-class network, and its file validation.
#include <catch2/catch.hpp>

#include <filesystem>
#include <string>
#include <vector>

#include "tstitch/io/safetensors.hpp"
#include "tstitch/metrics/classifier.hpp"

using namespace tstitch;

namespace {

std::filesystem::path write_classifier(const std::string& name, bool drop_fc3_bias = false,
                                       std::string format = "tstitch-classifier") {
  // fc1: 4 -> 3, fc2: 3 -> 2, fc3: 2 -> 2.
  const std::vector<float> w1{1, 0, 0, 0, /**/ 0, 1, -1, 0, /**/ 0.5f, 0.5f, 0.5f, 0.5f};
  const std::vector<float> b1{0, 0, -1};
  const std::vector<float> w2{1, 1, 0, /**/ 0, -1, 2};
  const std::vector<float> b2{0.5f, 0};
  const std::vector<float> w3{1, -1, /**/ -1, 1};
  const std::vector<float> b3{0, 0.25f};
  const std::vector<float> mean{1, 2};
  const std::vector<float> cov{2, 0.5f, 0.5f, 1};
  std::vector<io::TensorData> t{
      io::f32_tensor("fc1.weight", {3, 4}, w1), io::f32_tensor("fc1.bias", {3}, b1),
      io::f32_tensor("fc2.weight", {2, 3}, w2), io::f32_tensor("fc2.bias", {2}, b2),
      io::f32_tensor("fc3.weight", {2, 2}, w3), io::f32_tensor("feature_mean", {2}, mean),
      io::f32_tensor("feature_cov", {2, 2}, cov)};
  if (!drop_fc3_bias)
    t.push_back(io::f32_tensor("fc3.bias", {2}, b3));
  const auto path =
      std::filesystem::temp_directory_path() / ("tstitch_test_classifier_" + name + ".safetensors");
  io::write_safetensors(path, t, {{"format", format}});
  return path;
}

} // namespace

TEST_CASE("MLP classifier features and predictions follow the stored layers", "[classifier]") {
  const metrics::MlpClassifier c = metrics::MlpClassifier::load(write_classifier("ok"));
  CHECK(c.pixels() == 4);
  CHECK(c.dims() == 2);
  CHECK(c.classes() == 2);
  // Image a = [2, 1, 3, 0]: h1 = relu([2, -2, 3 - 1]) = [2, 0, 2];
  //   f = relu([2 + 0 + 0.5, 0 - 0 + 4]) = [2.5, 4]; logits = [-1.5, 1.75] -> class 1.
  // Image b = [1, 3, 0, 0]: h1 = relu([1, 3, 2 - 1]) = [1, 3, 1];
  //   f = relu([4 + 0.5, -3 + 2]) = [4.5, 0]; logits = [4.5, -4.25] -> class 0.
  const std::vector<float> images{2, 1, 3, 0, 1, 3, 0, 0};
  const ConstView v(images.data(), 2, Shape{1, 2, 2});
  const Eigen::MatrixXd f = c.features(v);
  CHECK(f(0, 0) == 2.5);
  CHECK(f(0, 1) == 4.0);
  CHECK(f(1, 0) == 4.5);
  CHECK(f(1, 1) == 0.0);
  CHECK(c.predict(v) == std::vector<int>{1, 0});
  CHECK(c.real_stats().mean(1) == 2.0);
  CHECK(c.real_stats().covariance(0, 1) == 0.5);
}

TEST_CASE("MLP classifier rejects bad files and inputs, naming them", "[classifier][errors]") {
  CHECK_THROWS_WITH(metrics::MlpClassifier::load(write_classifier("nobias", true)),
                    Catch::Contains("'fc3.bias' is missing") && Catch::Contains("nobias"));
  CHECK_THROWS_WITH(metrics::MlpClassifier::load(write_classifier("format", false, "other")),
                    Catch::Contains("tstitch-classifier"));
  const metrics::MlpClassifier c = metrics::MlpClassifier::load(write_classifier("ok2"));
  const std::vector<float> wrong(9, 0.0f);
  CHECK_THROWS_WITH(c.features(ConstView(wrong.data(), 1, Shape{1, 3, 3})),
                    Catch::Contains("image shape"));
  std::vector<float> nan_image{0, 0, NAN, 0};
  CHECK_THROWS_WITH(c.predict(ConstView(nan_image.data(), 1, Shape{1, 2, 2})),
                    Catch::Contains("image 0 pixel 2"));
}
