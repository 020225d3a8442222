// SPDX-License-Identifier: Apache-2.0
#pragma once

// Test fixtures shared by the device sampling tests: a DiT small enough to sample in
// milliseconds, and weights under which the class label (and so guidance) visibly matters.
#include <cstdint>

#include "../support/dit_fixtures.hpp"
#include "tstitch/models/dit/config.hpp"
#include "tstitch/models/dit/weights.hpp"

namespace tstitch::test {

/// The CPU tests' tiny DiT (8x8x4 latents, patch 2) at hidden 128 with 2 heads: head dim 64,
/// which the flash kernel serves.
inline dit::Config tiny_config(std::int64_t depth) {
  dit::Config c = testing::tiny_dit_config();
  c.hidden_size = 128;
  c.num_heads = 2;
  c.depth = depth;
  return c;
}

/// Random weights whose class embeddings are large enough that the label visibly changes the
/// output (with Weights::random alone it barely does, and a swap of the two guidance halves
/// would go unseen).
inline dit::Weights label_sensitive_weights(const dit::Config& c, std::uint64_t seed) {
  dit::Weights w = dit::Weights::random(c, seed);
  float* table = const_cast<float*>(w.class_table.data); // random() owns its values
  for (std::int64_t i = 0; i < w.class_table.rows * w.class_table.cols; ++i)
    table[i] *= 40.0f;
  return w;
}

} // namespace tstitch::test
