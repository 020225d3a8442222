// SPDX-License-Identifier: Apache-2.0
// tstitch::mpi on its own, run under mpirun -n 3: the queue hands out every task exactly once
// across ranks, the completion map gathers every rank's marks and checksums, the shared file holds
// every rank's blocks at their offsets, disagreeing ranks are named, and the journal reads back
// what was written and refuses damaged files. Any failure prints it and aborts the job.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include "tstitch/mpi/agreement.hpp"
#include "tstitch/mpi/block_file.hpp"
#include "tstitch/mpi/block_queue.hpp"
#include "tstitch/mpi/environment.hpp"
#include "tstitch/mpi/journal.hpp"
#include "tstitch/mpi/launcher.hpp"

namespace {

const tstitch::mpi::Environment* g_env = nullptr;

void expect(bool ok, const std::string& what) {
  if (!ok)
    g_env->abort("test_mpi_library", "FAIL: " + what);
}

template <class F> void expect_throws(F&& f, const std::string& needle, const std::string& what) {
  try {
    f();
  } catch (const std::exception& e) {
    expect(std::string(e.what()).find(needle) != std::string::npos,
           what + ": message '" + e.what() + "' lacks '" + needle + "'");
    return;
  }
  expect(false, what + ": no exception");
}

void test_queue(int rank, int size) {
  constexpr std::int64_t tasks = 50;
  tstitch::mpi::BlockQueue queue(MPI_COMM_WORLD, tasks);
  std::vector<std::int64_t> mine;
  while (const std::optional<std::int64_t> t = queue.next()) {
    mine.push_back(*t);
    queue.add_done(1);
  }
  expect(!queue.next(), "an exhausted queue stays exhausted");
  const int count = static_cast<int>(mine.size());
  std::vector<int> counts(static_cast<std::size_t>(size)), offsets(static_cast<std::size_t>(size));
  MPI_Gather(&count, 1, MPI_INT, counts.data(), 1, MPI_INT, 0, MPI_COMM_WORLD);
  int total = 0;
  for (int r = 0; r < size; ++r) {
    offsets[static_cast<std::size_t>(r)] = total;
    total += counts[static_cast<std::size_t>(r)];
  }
  std::vector<std::int64_t> all(static_cast<std::size_t>(rank == 0 ? total : 0));
  MPI_Gatherv(mine.data(), count, MPI_INT64_T, all.data(), counts.data(), offsets.data(),
              MPI_INT64_T, 0, MPI_COMM_WORLD);
  if (rank == 0) {
    std::sort(all.begin(), all.end());
    std::vector<std::int64_t> expected(tasks);
    for (std::int64_t i = 0; i < tasks; ++i)
      expected[static_cast<std::size_t>(i)] = i;
    expect(all == expected, "every task handed out exactly once across ranks");
  }
  MPI_Barrier(MPI_COMM_WORLD);
  expect(queue.done() == tasks, "the done counter sums every rank's work");
}

void test_completion_map(int rank, int size) {
  constexpr std::int64_t blocks = 10;
  std::vector<std::uint64_t> initial(blocks, 0);
  initial[3] = tstitch::mpi::block_complete | 0x33u; // as from a journal (rank 0's counts)
  tstitch::mpi::CompletionMap map(MPI_COMM_WORLD,
                                  rank == 0 ? initial : std::vector<std::uint64_t>{});
  expect(map.blocks() == blocks, "every rank learns the block count from rank 0");
  for (std::int64_t b = rank; b < blocks; b += size)
    if (b != 3)
      map.mark(b, static_cast<std::uint32_t>(0xA0 + b));
  MPI_Barrier(MPI_COMM_WORLD);
  const std::vector<std::uint64_t> entries = map.snapshot();
  for (std::int64_t b = 0; b < blocks; ++b) {
    const std::uint64_t e = entries[static_cast<std::size_t>(b)];
    expect(tstitch::mpi::is_complete(e), "block " + std::to_string(b) + " complete");
    expect(tstitch::mpi::checksum_of(e) == (b == 3 ? 0x33u : 0xA0u + b),
           "block " + std::to_string(b) + "'s checksum");
  }
}

void test_block_file(int rank, int size, const std::filesystem::path& dir) {
  const std::filesystem::path path = dir / "blocks.bin";
  constexpr std::uint64_t blocks = 12, bytes = 1000;
  {
    tstitch::mpi::BlockFile file(MPI_COMM_WORLD, path, blocks * bytes, true);
    for (std::uint64_t b = static_cast<std::uint64_t>(rank); b < blocks; b += size) {
      const std::string block(bytes, static_cast<char>('a' + b));
      file.write_at(b * bytes, block.data(), block.size());
    }
    file.close();
  }
  if (rank == 0) {
    std::ifstream in(path, std::ios::binary);
    const std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    expect(all.size() == blocks * bytes, "the file has its final size");
    for (std::uint64_t i = 0; i < all.size(); ++i)
      if (all[i] != static_cast<char>('a' + i / bytes))
        expect(false, "byte " + std::to_string(i) + " holds its block's value");
  }
  // A resume reopens the file as it is; one of another size is another run's.
  expect_throws([&] { tstitch::mpi::BlockFile(MPI_COMM_WORLD, path, blocks * bytes + 1, false); },
                "the run it resumes writes", "a resumed file of the wrong size");
}

void test_agreement(int rank, int size) {
  expect(tstitch::mpi::disagreeing_ranks(MPI_COMM_WORLD, 42).empty(), "agreeing ranks");
  const std::vector<int> differ =
      tstitch::mpi::disagreeing_ranks(MPI_COMM_WORLD, rank == 2 ? 7 : 42);
  expect(differ == (size > 2 ? std::vector<int>{2} : std::vector<int>{}), "rank 2 named");
  expect(tstitch::mpi::hex(tstitch::mpi::fnv1a("a")) == "af63dc4c8601ec8c", "FNV-1a of 'a'");
}

void test_journal(const std::filesystem::path& dir) {
  const std::filesystem::path path = dir / "run.journal";
  expect(!tstitch::mpi::read_journal(path), "no journal: nothing");
  const tstitch::mpi::JournalState state{
      "0123456789abcdef",
      {0, tstitch::mpi::block_complete | 0xdeadbeefu, 0, tstitch::mpi::block_complete}};
  tstitch::mpi::write_journal(path, state);
  const std::optional<tstitch::mpi::JournalState> back = tstitch::mpi::read_journal(path);
  expect(back && back->identity == state.identity && back->blocks == state.blocks,
         "a journal reads back as written");
  expect(back->completed() == 2, "two blocks complete");
  const auto damaged = [&](const std::string& text, const std::string& needle) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
    expect_throws([&] { (void)tstitch::mpi::read_journal(path); }, needle,
                  "journal '" + text + "'");
  };
  damaged("not a journal\n", "bad first line");
  damaged("tstitch journal 1\nidentity x\nblocks 2\n-\n", "fewer block entries than blocks");
  damaged("tstitch journal 1\nidentity x\nblocks 1\n-\n-\n", "more block entries than blocks");
  damaged("tstitch journal 1\nidentity x\nblocks 1\n12345\n", "neither '-' nor 8 hex digits");
  damaged("tstitch journal 1\nidentity x\nblocks 1\nxyzxyzxy\n", "neither '-' nor 8 hex digits");
}

} // namespace

int main(int argc, char** argv) {
  if (!tstitch::mpi::launched_by_mpi()) {
    std::fprintf(stderr, "test_mpi_library: run it under mpirun\n");
    return 1;
  }
  tstitch::mpi::Environment env(&argc, &argv);
  g_env = &env;
  const std::filesystem::path dir = argc > 1 ? argv[1] : ".";
  if (env.rank() == 0) { // a fresh directory: no journal of an earlier run
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  try {
    test_queue(env.rank(), env.size());
    test_completion_map(env.rank(), env.size());
    test_block_file(env.rank(), env.size(), dir);
    test_agreement(env.rank(), env.size());
    if (env.rank() == 0)
      test_journal(dir);
  } catch (const std::exception& e) {
    env.abort("test_mpi_library", e.what());
  }
  MPI_Barrier(MPI_COMM_WORLD);
  if (env.rank() == 0)
    std::printf("test_mpi_library: all passed on %d ranks\n", env.size());
  return 0;
}
