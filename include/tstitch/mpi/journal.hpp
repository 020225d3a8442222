// SPDX-License-Identifier: Apache-2.0
#pragma once

// Resumable runs: which blocks of an output are complete, kept in two places.
//  - CompletionMap: one entry per block in an RMA window on rank 0, holding whether the block is
//    complete and a 32-bit checksum of its bytes (the .npz writer combines the blocks' CRC-32s,
//    also those of blocks written before a resume). A rank marks its block after the block's bytes
//    are written and flushed, and reads the whole map back, with atomic accumulate operations
//    (ranks mark and read concurrently).
//  - The journal file: a snapshot of the map, replaced atomically (write_file_atomically), written
//    by the rank that just completed a block. Snapshots may land out of order, but each one lists
//    only blocks that were complete when it was taken, so a journal never claims a block whose
//    bytes are missing; a block it misses is simply sampled again, to the same bytes.
// The journal also records the run's identity (a hash of its options and models), so a resume
// with other settings is refused instead of mixing two runs in one file.

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "tstitch/mpi/mpi_c.hpp"

#include "tstitch/core/error.hpp"
#include "tstitch/io/atomic_write.hpp"
#include "tstitch/mpi/environment.hpp"

namespace tstitch::mpi {

/// A block's entry: 0 while incomplete, else block_complete | its 32-bit checksum.
inline constexpr std::uint64_t block_complete = std::uint64_t{1} << 32;

[[nodiscard]] inline bool is_complete(std::uint64_t entry) { return (entry & block_complete) != 0; }
[[nodiscard]] inline std::uint32_t checksum_of(std::uint64_t entry) {
  return static_cast<std::uint32_t>(entry);
}

/// A journal's contents: the run's identity and one entry per block.
struct JournalState {
  std::string identity;
  std::vector<std::uint64_t> blocks;

  [[nodiscard]] std::int64_t completed() const {
    std::int64_t n = 0;
    for (const std::uint64_t b : blocks)
      n += is_complete(b);
    return n;
  }
};

inline constexpr const char* journal_magic = "tstitch journal 1";

/// Writes the journal atomically: the old journal or the new one, never a torn mix.
inline void write_journal(const std::filesystem::path& path, const JournalState& state) {
  // One token per block: '-' while incomplete, else its checksum in 8 hex digits.
  std::string text = detail::concat(journal_magic, "\nidentity ", state.identity, "\nblocks ",
                                    state.blocks.size(), "\n");
  text.reserve(text.size() + 9 * state.blocks.size());
  char token[16];
  for (const std::uint64_t b : state.blocks) {
    if (is_complete(b))
      std::snprintf(token, sizeof token, "%08x\n", static_cast<unsigned>(checksum_of(b)));
    else
      std::snprintf(token, sizeof token, "-\n");
    text += token;
  }
  io::write_file_atomically(path, [&](io::AtomicWriter& out) { out.write(text); });
}

/// Reads a journal; nothing when the file does not exist. Throws tstitch::runtime_error naming the
/// file when it is not a journal this code wrote.
[[nodiscard]] inline std::optional<JournalState> read_journal(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::error_code ignored;
    if (!std::filesystem::exists(path, ignored))
      return std::nullopt;
    throw runtime_error(detail::concat("journal '", path.string(), "': cannot be read"));
  }
  const auto fail = [&](const char* what) -> runtime_error {
    return runtime_error(detail::concat("journal '", path.string(), "': ", what,
                                        " (not a tstitch journal, or damaged; delete it to "
                                        "start over)"));
  };
  std::string magic, key, token;
  JournalState state;
  std::int64_t blocks = -1;
  if (!std::getline(in, magic) || magic != journal_magic)
    throw fail("bad first line");
  if (!(in >> key >> state.identity) || key != "identity")
    throw fail("no identity line");
  if (!(in >> key >> blocks) || key != "blocks" || blocks < 0)
    throw fail("no block count");
  state.blocks.reserve(static_cast<std::size_t>(std::min<std::int64_t>(blocks, 1 << 24)));
  for (std::int64_t b = 0; b < blocks; ++b) {
    if (!(in >> token))
      throw fail("fewer block entries than blocks");
    if (token == "-") {
      state.blocks.push_back(0);
      continue;
    }
    std::uint32_t checksum = 0;
    const auto [end, error] =
        std::from_chars(token.data(), token.data() + token.size(), checksum, 16);
    if (token.size() != 8 || error != std::errc() || end != token.data() + token.size())
      throw fail("a block entry is neither '-' nor 8 hex digits");
    state.blocks.push_back(block_complete | checksum);
  }
  if (in >> token)
    throw fail("more block entries than blocks");
  return state;
}

/// One entry per block in a window on rank 0; see the file comment.
class CompletionMap {
public:
  /// Collective over `comm`; rank 0's `initial` (e.g. a journal's entries) seeds the map, the
  /// other ranks' `initial` is ignored.
  CompletionMap(MPI_Comm comm, const std::vector<std::uint64_t>& initial) {
    int rank = 0;
    MPI_Comm_rank(comm, &rank);
    std::int64_t blocks = static_cast<std::int64_t>(initial.size());
    check(MPI_Bcast(&blocks, 1, MPI_INT64_T, 0, comm), "MPI_Bcast (completion map)");
    blocks_ = blocks;
    const MPI_Aint bytes =
        rank == 0 ? static_cast<MPI_Aint>(blocks) * static_cast<MPI_Aint>(sizeof(std::uint64_t))
                  : 0;
    check(MPI_Win_allocate(bytes, sizeof(std::uint64_t), MPI_INFO_NULL, comm, &entries_, &window_),
          "MPI_Win_allocate (completion map)");
    if (rank == 0)
      for (std::int64_t b = 0; b < blocks; ++b)
        entries_[b] = initial[static_cast<std::size_t>(b)];
    MPI_Win_lock_all(MPI_MODE_NOCHECK, window_);
    check(MPI_Barrier(comm), "MPI_Barrier (completion map)");
  }
  CompletionMap(const CompletionMap&) = delete;
  CompletionMap& operator=(const CompletionMap&) = delete;
  ~CompletionMap() { // collective; skipped while unwinding (see BlockQueue)
    if (std::uncaught_exceptions() > 0)
      return;
    MPI_Win_unlock_all(window_);
    MPI_Win_free(&window_);
  }

  /// Marks block b complete with its checksum (call after its bytes are written and flushed).
  void mark(std::int64_t b, std::uint32_t checksum = 0) {
    if (b < 0 || b >= blocks_)
      throw_invalid_argument("CompletionMap block", b,
                             detail::concat("must be in [0, ", blocks_, ")"));
    const std::uint64_t entry = block_complete | checksum;
    check(MPI_Accumulate(&entry, 1, MPI_UINT64_T, 0, b, 1, MPI_UINT64_T, MPI_REPLACE, window_),
          "MPI_Accumulate (completion map)");
    check(MPI_Win_flush(0, window_), "MPI_Win_flush (completion map)");
  }

  /// Every block's entry as of now.
  [[nodiscard]] std::vector<std::uint64_t> snapshot() {
    std::vector<std::uint64_t> entries(static_cast<std::size_t>(blocks_));
    // In pieces: a count is an int.
    constexpr std::int64_t piece = 1 << 30;
    for (std::int64_t first = 0; first < blocks_; first += piece) {
      const int n = static_cast<int>(std::min(piece, blocks_ - first));
      check(MPI_Get_accumulate(nullptr, 0, MPI_UINT64_T, entries.data() + first, n, MPI_UINT64_T, 0,
                               first, n, MPI_UINT64_T, MPI_NO_OP, window_),
            "MPI_Get_accumulate (completion map)");
    }
    check(MPI_Win_flush(0, window_), "MPI_Win_flush (completion map)");
    return entries;
  }

  [[nodiscard]] std::int64_t blocks() const { return blocks_; }

private:
  std::int64_t blocks_ = 0;
  std::uint64_t* entries_ = nullptr;
  MPI_Win window_ = MPI_WIN_NULL;
};

} // namespace tstitch::mpi
