// SPDX-License-Identifier: Apache-2.0
#pragma once

// tstitch-sample under an MPI launcher (mpirun -n K, srun): the --count samples go out in blocks
// of --batch samples through a dynamic queue (tstitch/mpi/block_queue.hpp), each rank samples its
// blocks exactly as the single-process run samples the same batches (same noise streams, same
// batch composition), and writes them at their offsets into one output file. The file is the
// same bytes for any K and as without MPI. A journal next to the output lists the completed
// blocks; --resume continues from it. Memory holds one block, whatever --count is.
//
// Files: OUT.part while the run lasts (renamed to OUT when every block is in), OUT.journal (removed
// at the end). Rank 0 shows one progress bar for the job. Any rank's error ends the job with its
// rank and cause (MPI_Abort).

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <unistd.h>

#include "cli_fd.hpp"
#include "sample_outputs.hpp"
#include "tstitch/core/tensor.hpp"

namespace tstitch_sample {

/// One output of an MPI run: the option that named it, its path and its format.
struct MpiOutput {
  std::string option, path;
  Format format = Format::unknown;
};

/// What an MPI run needs to know about the job; every field is the same on every rank.
struct MpiSpec {
  std::string identity;            // the options that decide the output, as text
  std::vector<std::string> models; // their headers are hashed into the identity
  std::int64_t count = 0;          // samples
  std::int64_t block = 0;          // samples per block (the single-process run's batch)
  tstitch::Shape shape;            // one sample (C, H, W)
  std::optional<tstitch::io::ImageRegion> crop; // --crop: the part of each 8-bit sample kept
  std::vector<MpiOutput> outputs;
  bool resume = false;
  bool quiet = false;
  std::string rng = "philox";                                  // --rng
  std::uint64_t seed = 0;                                      // recorded in each PNG
  std::string parameters;                                      // recorded in each PNG
  const tstitch::metrics::MlpClassifier* classifier = nullptr; // --fd: FD-cls of the samples
  std::string classifier_path;
  std::function<void(const std::filesystem::path&)> write_sidecar; // rank 0, for each .npy
};

} // namespace tstitch_sample

#ifndef TSTITCH_SAMPLE_MPI
namespace tstitch_sample {

/// A build without MPI: no job ever exists, so the sampling loop's MPI branches are never taken.
class MpiJob {
public:
  void start(const MpiSpec&) {}
  [[nodiscard]] std::uint64_t broadcast_seed(std::uint64_t seed) { return seed; }
  [[nodiscard]] int next_block() { return -1; }
  void block_done(int, int, tstitch::ConstView) {}
  void tick() {}
  [[nodiscard]] std::string finish() { return {}; }
};
inline MpiJob* mpi_job = nullptr;
[[nodiscard]] inline bool mpi_launched() { return false; }
template <class Run, class Stage> int run_under_mpi(bool, Stage&&, Run&& run) { return run(); }

} // namespace tstitch_sample
#else

#include "tstitch/io/npy.hpp"
#include "tstitch/io/npz.hpp"
#include "tstitch/mpi/agreement.hpp"
#include "tstitch/mpi/block_file.hpp"
#include "tstitch/mpi/block_queue.hpp"
#include "tstitch/mpi/environment.hpp"
#include "tstitch/mpi/journal.hpp"

#ifdef TSTITCH_SAMPLE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "tstitch/mpi/launcher.hpp"

namespace tstitch_sample {

/// Whether this process is one rank of an MPI job (started by mpirun, mpiexec or srun).
[[nodiscard]] inline bool mpi_launched() { return tstitch::mpi::launched_by_mpi(); }

/// The safetensors header of a model file (8-byte length, then JSON): what the model is, cheaply.
inline std::string model_header(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  unsigned char size[8] = {};
  if (!in.read(reinterpret_cast<char*>(size), 8))
    return "unreadable " + path;
  std::uint64_t length = 0;
  for (int i = 7; i >= 0; --i)
    length = length << 8 | size[i];
  length = std::min<std::uint64_t>(length, std::uint64_t{1} << 26);
  std::string header(static_cast<std::size_t>(length), '\0');
  in.read(header.data(), static_cast<std::streamsize>(length));
  std::error_code ignored;
  return header + " bytes " + std::to_string(std::filesystem::file_size(path, ignored));
}

/// An MPI job of tstitch-sample: the environment, the queue, the output files and the journal.
class MpiJob {
public:
  MpiJob() : env_(nullptr, nullptr) {}

  [[nodiscard]] const tstitch::mpi::Environment& env() const { return env_; }

  /// Rank 0's seed on every rank (a random seed is drawn on each rank; rank 0's is used).
  [[nodiscard]] std::uint64_t broadcast_seed(std::uint64_t seed) {
    tstitch::mpi::check(MPI_Bcast(&seed, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD), "MPI_Bcast (seed)");
    return seed;
  }

  /// Collective: checks that every rank runs the same job, then opens (or, resuming, reopens) the
  /// outputs and the journal and builds the queue of the blocks still to do.
  void start(MpiSpec spec) {
    spec_ = std::move(spec);
    check_same_job();
    check_rng_and_outputs();
    blocks_ = (spec_.count + spec_.block - 1) / spec_.block;
    std::filesystem::path first_output =
        std::filesystem::path(spec_.outputs.front().path).lexically_normal();
    if (first_output.filename().empty()) // a --png-dir "out/": its journal is out.journal
      first_output = first_output.parent_path();
    journal_ = first_output.string() + ".journal";

    std::vector<std::uint64_t> entries(static_cast<std::size_t>(blocks_), 0);
    const bool fresh = read_journal_entries(entries);
    queue_pending_blocks(entries);
    open_outputs(fresh);
    if (spec_.classifier != nullptr)
      moments_.emplace(fd_moments(*spec_.classifier));
    map_.emplace(MPI_COMM_WORLD, entries);
    queue_.emplace(MPI_COMM_WORLD, static_cast<std::int64_t>(pending_.size()));
    started_ = std::chrono::steady_clock::now();
  }

  /// The next block for this rank, or -1 when none is left.
  [[nodiscard]] int next_block() {
    const Timer timer(queue_seconds_);
    const std::optional<std::int64_t> ticket = queue_->next();
    return ticket ? static_cast<int>(pending_[static_cast<std::size_t>(*ticket)]) : -1;
  }

  /// Block b (samples first..first+size) is sampled in `part`: writes it, flushes it, marks it.
  void block_done(int b, int first, tstitch::ConstView part) {
    const Timer timer(write_seconds_);
    ++blocks_done_;
    const tstitch::Shape s = part.shape();
    std::uint32_t checksum = 0;
    for (Output& out : outputs_) {
      if (out.format == Format::npy) {
        const std::size_t bytes = static_cast<std::size_t>(s.numel()) * sizeof(float);
        for (std::int64_t n = 0; n < part.batch(); ++n)
          out.file->write_at(npy_data_offset() + static_cast<std::uint64_t>(first + n) * bytes,
                             part.data() + n * part.batch_stride(), bytes);
      } else if (out.format == Format::png_dir) {
        write_png_samples(out.path, part, first, spec_.count, spec_.seed, spec_.parameters,
                          spec_.crop);
        continue; // each file is already fsync'ed and renamed into place
      } else {
        pixels_.clear();
        tstitch::io::append_nhwc_uint8(part, pixels_, spec_.crop);
        checksum = tstitch::io::crc32(pixels_.data(), pixels_.size());
        out.file->write_at(npz_layout().sample_offset(first), pixels_.data(), pixels_.size());
      }
      out.file->flush();
    }
    if (moments_)
      moments_->add(fd_features(*spec_.classifier, part));
    map_->mark(b, checksum);
    tstitch::mpi::write_journal(journal_, {identity_, map_->snapshot()});
    queue_->add_done(part.batch());
    if (kill_after_ == b)
      std::raise(SIGKILL);
  }

  /// Rank 0: the job's progress bar, at most a few times a second (called between steps).
  void tick(bool force = false) {
    if (env_.rank() != 0 || spec_.quiet)
      return;
    const auto now = std::chrono::steady_clock::now();
    if (!force && now - shown_ < std::chrono::milliseconds(tty_ ? 250 : 5000))
      return;
    shown_ = now;
    const std::int64_t done = queue_->done();
    const double elapsed = std::chrono::duration<double>(now - started_).count();
    const double rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0.0;
    const double left = rate > 0 ? static_cast<double>(pending_samples_ - done) / rate : -1.0;
    const std::int64_t resumed = spec_.count - pending_samples_;
    constexpr int width = 30;
    const int filled =
        static_cast<int>((resumed + done) * width / std::max<std::int64_t>(1, spec_.count));
    std::fprintf(stderr, "%s[%s%s] %lld/%lld samples  %.2f images/s  %s left  (%d ranks)%s",
                 tty_ ? "\r" : "", std::string(static_cast<std::size_t>(filled), '#').c_str(),
                 std::string(static_cast<std::size_t>(width - filled), '.').c_str(),
                 static_cast<long long>(resumed + done), static_cast<long long>(spec_.count), rate,
                 left < 0 ? "?" : (std::to_string(static_cast<long long>(left)) + " s").c_str(),
                 env_.size(), tty_ ? "   " : "\n");
  }

  /// Collective, after this rank's last block: closes the files; rank 0 finishes the .npz,
  /// renames every output into place, writes the sidecars and removes the journal.
  std::string finish() {
    if (env_.rank() == 0 && !spec_.quiet) { // the bar to the end, reading the shared counter
      while (queue_->done() < pending_samples_) {
        tick();
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      tick(true);
      if (tty_)
        std::fprintf(stderr, "\n");
    }
    if (std::getenv("TSTITCH_MPI_PROFILE") != nullptr) // for benchmarks: this rank's overhead
      std::fprintf(
          stderr, "rank %d: %lld blocks in %.4f s; queue %.6f s, write+flush+journal %.6f s\n",
          env_.rank(), static_cast<long long>(blocks_done_),
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count(),
          queue_seconds_, write_seconds_);
    tstitch::mpi::check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
    const std::vector<std::uint64_t> entries = map_->snapshot();
    for (Output& out : outputs_) {
      if (out.format == Format::png_dir)
        continue;
      if (env_.rank() == 0 && out.format == Format::npz) {
        const tstitch::io::NpzLayout layout = npz_layout();
        std::uint32_t crc = 0;
        for (std::int64_t b = 0; b < blocks_; ++b) {
          const std::int64_t size = std::min(spec_.block, spec_.count - b * spec_.block);
          crc = tstitch::io::crc32_combine(
              crc, tstitch::mpi::checksum_of(entries[static_cast<std::size_t>(b)]),
              static_cast<std::uint64_t>(size) * layout.sample_bytes());
        }
        const std::string header = layout.header(crc), trailer = layout.trailer(crc);
        out.file->write_at(0, header.data(), header.size());
        out.file->write_at(layout.trailer_offset(), trailer.data(), trailer.size());
      }
      out.file->close();
    }
    if (moments_) { // every rank's feature moments, summed on rank 0 in double-double
      const std::optional<double> fd = reduced_fd();
      if (fd)
        print_fd(*fd, spec_.count, spec_.classifier_path);
    }
    std::string wrote = tstitch::detail::concat("wrote ", spec_.count, " samples");
    if (env_.rank() == 0) {
      for (std::size_t i = 0; i < outputs_.size(); ++i) {
        const Output& out = outputs_[i];
        wrote += (i == 0 ? " to " : " and ") + out.path;
        if (out.format == Format::png_dir)
          continue;
        if (std::rename(part_of(out.path).c_str(), out.path.c_str()) != 0)
          throw tstitch::runtime_error(tstitch::detail::concat(
              "cannot rename '", part_of(out.path).string(), "' to '", out.path, "'"));
        if (out.format == Format::npy && spec_.write_sidecar)
          spec_.write_sidecar(out.path);
      }
      std::error_code ignored;
      std::filesystem::remove(journal_, ignored); // finished: nothing to resume
    }
    tstitch::mpi::check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
    queue_.reset();
    map_.reset();
    return env_.rank() == 0 ? wrote : std::string();
  }

private:
  /// Collective: every rank was given the same options and model files (a hash of them, which
  /// also names the run in its journal), or rank 0 throws naming the ranks that differ.
  void check_same_job() {
    using tstitch::detail::concat;
    std::uint64_t hash = tstitch::mpi::fnv1a(spec_.identity);
    for (const std::string& m : spec_.models)
      hash = tstitch::mpi::fnv1a(model_header(m), hash);
    identity_ = tstitch::mpi::hex(hash);
    const std::vector<int> differ = tstitch::mpi::disagreeing_ranks(MPI_COMM_WORLD, hash);
    if (!differ.empty()) {
      if (env_.rank() != 0)
        MPI_Barrier(MPI_COMM_WORLD); // rank 0 reports, naming them; its MPI_Abort ends this wait
      std::string ranks;
      for (const int r : differ)
        ranks += (ranks.empty() ? "" : ", ") + std::to_string(r);
      throw tstitch::runtime_error(
          concat("ranks ", ranks, " run other options or model files than rank 0 (identity ",
                 identity_, " here); every rank must be given the same arguments and models"));
    }
  }

  /// What MPI sampling cannot do, refused before any file is touched: a stateful generator, an
  /// image grid, an output that is not a regular file.
  void check_rng_and_outputs() {
    using tstitch::detail::concat;
    if (spec_.rng != "philox") // a stateful generator: a block's noise depends on the blocks before
      throw tstitch::runtime_error(concat(
          "--rng = '", spec_.rng,
          "': PyTorch's generator draws the batches in sequence, so a "
          "block's noise would depend on which blocks its rank sampled before; under MPI use "
          "--rng philox (noise keyed by the sample index)"));
    for (const auto& [option, path, format] : spec_.outputs) {
      if (format != Format::npy && format != Format::npz && format != Format::png_dir)
        throw tstitch::runtime_error(
            concat(option, " = '", path,
                   "': an image grid needs every sample in one process; under MPI "
                   "write .npy, .npz or --png-dir (the grid can be made from them afterwards)"));
      std::error_code ignored;
      const std::filesystem::file_status status = std::filesystem::status(path, ignored);
      const bool regular_or_new =
          !std::filesystem::exists(status) || std::filesystem::is_regular_file(status) ||
          (format == Format::png_dir && std::filesystem::is_directory(status));
      if (!regular_or_new) // OUT.part is renamed over OUT: never over a device or a pipe
        throw tstitch::runtime_error(concat(option, " = '", path,
                                            "': not a regular file; under MPI the ranks write a "
                                            "file next to it and rename it into place"));
      outputs_.push_back({path, format, nullptr});
    }
  }

  /// Rank 0 reads the journal (checking, with --resume, that it is this run's); every rank gets
  /// its entries. Returns whether the run starts afresh.
  bool read_journal_entries(std::vector<std::uint64_t>& entries) {
    using tstitch::detail::concat;
    int fresh = 1;
    if (env_.rank() == 0) {
      const std::optional<tstitch::mpi::JournalState> old = tstitch::mpi::read_journal(journal_);
      if (spec_.resume && old) {
        if (old->identity != identity_ || static_cast<std::int64_t>(old->blocks.size()) != blocks_)
          throw tstitch::runtime_error(
              concat("--resume: journal '", journal_.string(), "' is of another run (identity ",
                     old->identity, ", ", old->blocks.size(), " blocks; this run: ", identity_,
                     ", ", blocks_, " blocks); run without --resume to start over"));
        for (const Output& out : outputs_)
          if (out.format != Format::png_dir && !std::filesystem::exists(part_of(out.path)))
            throw tstitch::runtime_error(concat("--resume: '", part_of(out.path).string(),
                                                "' is missing; run without --resume to start "
                                                "over"));
        if (spec_.classifier != nullptr && old->completed() > 0)
          throw tstitch::runtime_error(concat(
              "--fd with --resume: ", old->completed(),
              " blocks were sampled before the "
              "interruption and their features are not kept; score the finished file instead"));
        entries = old->blocks;
        fresh = 0;
        std::fprintf(stderr, "resuming: %lld of %lld blocks already done\n",
                     static_cast<long long>(old->completed()), static_cast<long long>(blocks_));
      } else {
        if (spec_.resume)
          std::fprintf(stderr, "--resume: no journal '%s'; starting from the first block\n",
                       journal_.c_str());
        std::error_code ignored;
        std::filesystem::remove(journal_, ignored); // an older run's: stale from here on
      }
    }
    tstitch::mpi::check(MPI_Bcast(&fresh, 1, MPI_INT, 0, MPI_COMM_WORLD), "MPI_Bcast");
    tstitch::mpi::check(MPI_Bcast(entries.data(), static_cast<int>(entries.size()), MPI_UINT64_T, 0,
                                  MPI_COMM_WORLD),
                        "MPI_Bcast");
    return fresh != 0;
  }

  /// The blocks not yet complete, in order.
  void queue_pending_blocks(const std::vector<std::uint64_t>& entries) {
    // Test hook: a job cancelled mid-run. The rank that completes block b kills itself (SIGKILL)
    // once it is journaled, and no rank takes a block after b, so later blocks stay undone.
    if (const char* kill = std::getenv("TSTITCH_MPI_TEST_KILL_AFTER_BLOCK"))
      kill_after_ = std::atoll(kill);
    for (std::int64_t b = 0; b < blocks_ && (kill_after_ < 0 || b <= kill_after_); ++b)
      if (!tstitch::mpi::is_complete(entries[static_cast<std::size_t>(b)])) {
        pending_.push_back(b);
        pending_samples_ += std::min(spec_.block, spec_.count - b * spec_.block);
      }
  }

  /// Creates (fresh) or reopens each output's OUT.part; rank 0 writes the .npy header.
  void open_outputs(bool fresh) {
    for (Output& out : outputs_) {
      if (out.format == Format::png_dir) {
        if (env_.rank() == 0)
          std::filesystem::create_directories(out.path);
        continue; // the barriers below order this before any rank writes into it
      }
      const std::uint64_t size =
          out.format == Format::npy ? npy_data_offset() + data_bytes(4) : npz_layout().file_size();
      out.file =
          std::make_unique<tstitch::mpi::BlockFile>(MPI_COMM_WORLD, part_of(out.path), size, fresh);
      if (fresh && env_.rank() == 0 && out.format == Format::npy) {
        const std::string header = npy_header();
        out.file->write_at(0, header.data(), header.size());
      }
    }
  }

  static void add_pairs(void* in, void* inout, int* pairs, MPI_Datatype*) {
    tstitch::metrics::FeatureMoments::add_packed(static_cast<const double*>(in),
                                                 static_cast<double*>(inout),
                                                 static_cast<std::size_t>(*pairs));
  }

  /// Collective: FD-cls of the job's samples on rank 0 (nothing elsewhere).
  std::optional<double> reduced_fd() {
    const std::vector<double> mine = moments_->packed();
    std::vector<double> sum(mine.size());
    MPI_Datatype pair = MPI_DATATYPE_NULL;
    MPI_Op op = MPI_OP_NULL;
    MPI_Type_contiguous(2, MPI_DOUBLE, &pair);
    MPI_Type_commit(&pair);
    MPI_Op_create(&add_pairs, 1, &op);
    const int code = MPI_Reduce(mine.data(), sum.data(), static_cast<int>(mine.size() / 2), pair,
                                op, 0, MPI_COMM_WORLD);
    MPI_Op_free(&op);
    MPI_Type_free(&pair);
    tstitch::mpi::check(code, "MPI_Reduce (feature moments)");
    if (env_.rank() != 0)
      return std::nullopt;
    const tstitch::metrics::FeatureMoments all =
        tstitch::metrics::FeatureMoments::unpack(sum, spec_.classifier->real_stats().mean);
    return tstitch::metrics::frechet_distance(all.stats(), spec_.classifier->real_stats());
  }

  /// Adds the seconds of its lifetime to a total.
  struct Timer {
    double& total;
    std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
    explicit Timer(double& t) : total(t) {}
    Timer(const Timer&) = delete;
    Timer& operator=(const Timer&) = delete;
    ~Timer() {
      total += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
  };

  struct Output {
    std::string path;
    Format format;
    std::unique_ptr<tstitch::mpi::BlockFile> file;
  };

  static std::filesystem::path part_of(const std::string& path) { return path + ".part"; }

  [[nodiscard]] std::uint64_t data_bytes(std::uint64_t element) const {
    return static_cast<std::uint64_t>(spec_.count) *
           static_cast<std::uint64_t>(spec_.shape.numel()) * element;
  }
  [[nodiscard]] std::string npy_header() const {
    const std::vector<std::int64_t> shape{spec_.count, spec_.shape.channels, spec_.shape.height,
                                          spec_.shape.width};
    return tstitch::io::npy_header(shape);
  }
  [[nodiscard]] std::uint64_t npy_data_offset() const { return npy_header().size(); }
  [[nodiscard]] tstitch::io::NpzLayout npz_layout() const {
    const tstitch::io::ImageRegion r = spec_.crop.value_or(tstitch::io::whole_image(spec_.shape));
    return {spec_.count, r.height, r.width, spec_.shape.channels};
  }

  tstitch::mpi::Environment env_;
  MpiSpec spec_;
  std::string identity_;
  std::vector<Output> outputs_;
  std::filesystem::path journal_;
  std::int64_t blocks_ = 0, pending_samples_ = 0, kill_after_ = -1, blocks_done_ = 0;
  double queue_seconds_ = 0.0, write_seconds_ = 0.0;
  std::vector<std::int64_t> pending_;
  std::optional<tstitch::mpi::CompletionMap> map_;
  std::optional<tstitch::mpi::BlockQueue> queue_;
  std::optional<tstitch::metrics::FeatureMoments> moments_;
  std::vector<std::uint8_t> pixels_;
  bool tty_ = isatty(fileno(stderr)) != 0;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now(), shown_{};
};

/// The MPI job of this process; null in a plain run.
inline MpiJob* mpi_job = nullptr;

/// Runs `run()` as one rank of an MPI job: MPI is initialised around it, a CUDA run takes the GPU
/// of its node-local rank, and any exception ends the whole job with this rank's name and the
/// cause (stage() says what an out-of-memory happened in).
template <class Run, class Stage> int run_under_mpi(bool cuda, Stage&& stage, Run&& run) {
  MpiJob job;
  mpi_job = &job;
  try {
#ifdef TSTITCH_SAMPLE_CUDA
    int devices = 0;
    if (cuda && cudaGetDeviceCount(&devices) == cudaSuccess && devices > 0)
      cudaSetDevice(job.env().local_rank() % devices);
#else
    (void)cuda;
#endif
    const int code = run();
    mpi_job = nullptr;
    return code;
  } catch (const std::bad_alloc&) {
    job.env().abort("tstitch-sample", "out of memory while " + std::string(stage()));
  } catch (const std::exception& e) {
    job.env().abort("tstitch-sample", e.what());
  }
}

} // namespace tstitch_sample
#endif // TSTITCH_SAMPLE_MPI
