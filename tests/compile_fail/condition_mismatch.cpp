// SPDX-License-Identifier: Apache-2.0
// Must NOT compile: stitching denoisers whose condition types differ is a compile-time error
// that names both types.
#include "tstitch/stitch/stitcher.hpp"

struct TextEmbedding {};
struct ClassLabel {};

template <class Cond> struct Model {
  using condition_type = Cond;
  tstitch::Prediction prediction() const { return tstitch::Prediction::epsilon; }
  tstitch::Shape latent_shape() const { return {4, 8, 8}; }
  void predict(tstitch::ConstView, const tstitch::StepContext&, const Cond&, tstitch::View) {}
};

int main() {
  Model<ClassLabel> small;
  Model<TextEmbedding> large;
  tstitch::TrajectoryStitcher stitcher(small, large, 0.5);
  (void)stitcher;
}
