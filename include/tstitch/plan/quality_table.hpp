// SPDX-License-Identifier: Apache-2.0
#pragma once

// A quality table: small-model fraction -> metric (lower is better, e.g. a Frechet distance),
// measured for one model pair, step count and solver. tstitch/io/quality_table.hpp reads one from
// a JSON file such as models/fashion_quality.json (it needs nlohmann-json, this header nothing).

#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "tstitch/core/error.hpp"

namespace tstitch {
namespace plan {

struct QualityEntry {
  double fraction = 0; ///< small-model fraction of the steps, in [0, 1]
  double value = 0;    ///< the metric there; lower is better
};

struct QualityTable {
  std::string metric;                ///< e.g. "FD-cls"
  std::vector<QualityEntry> entries; ///< strictly increasing fractions
  int steps = 0;                     ///< the step count the table was measured at (0: unknown)
  std::string date, machine, command;

  /// Throws tstitch::invalid_argument naming the first bad entry.
  void validate() const {
    require(!entries.empty(), "quality table entries", "[]", "must hold at least one entry");
    for (std::size_t i = 0; i < entries.size(); ++i) {
      const QualityEntry& e = entries[i];
      if (!(e.fraction >= 0.0 && e.fraction <= 1.0))
        throw_invalid_argument(detail::concat("quality table fractions[", i, "]"), e.fraction,
                               "must be in [0, 1]");
      if (!std::isfinite(e.value))
        throw_invalid_argument(detail::concat("quality table ", metric, "[", i, "]"), e.value,
                               "must be finite");
      if (i > 0 && !(e.fraction > entries[i - 1].fraction))
        throw_invalid_argument(detail::concat("quality table fractions[", i, "]"), e.fraction,
                               "fractions must increase strictly");
    }
  }
};

} // namespace plan
} // namespace tstitch
