// SPDX-License-Identifier: Apache-2.0
#pragma once

// Ranks must run the same job: every rank hashes what decides its output (options, model file
// headers) and the ranks whose hash differs from rank 0's are found at start, before any work,
// instead of writing a file that mixes two runs.

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "tstitch/mpi/mpi_c.hpp"

#include "tstitch/mpi/environment.hpp"

namespace tstitch::mpi {

/// FNV-1a, 64 bits: a fingerprint to compare, not a cryptographic hash.
[[nodiscard]] inline std::uint64_t fnv1a(std::string_view bytes,
                                         std::uint64_t hash = 14695981039346656037ull) {
  for (const char c : bytes) {
    hash ^= static_cast<std::uint8_t>(c);
    hash *= 1099511628211ull;
  }
  return hash;
}

/// 16 lowercase hex digits.
[[nodiscard]] inline std::string hex(std::uint64_t value) {
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(value));
  return text;
}

/// Collective over `comm`: the ranks whose `identity` differs from rank 0's (the same list on
/// every rank; empty when all agree).
[[nodiscard]] inline std::vector<int> disagreeing_ranks(MPI_Comm comm, std::uint64_t identity) {
  int size = 1;
  MPI_Comm_size(comm, &size);
  std::vector<std::uint64_t> all(static_cast<std::size_t>(size));
  check(MPI_Allgather(&identity, 1, MPI_UINT64_T, all.data(), 1, MPI_UINT64_T, comm),
        "MPI_Allgather (identity)");
  std::vector<int> differ;
  for (int r = 1; r < size; ++r)
    if (all[static_cast<std::size_t>(r)] != all[0])
      differ.push_back(r);
  return differ;
}

} // namespace tstitch::mpi
