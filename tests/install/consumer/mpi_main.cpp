// SPDX-License-Identifier: Apache-2.0
// tstitch::mpi from an installed package: its headers and Open MPI's (through the package config's
// find_dependency) compile, and the program links. A plain run starts no MPI runtime.
#include <cstdio>

#include "tstitch/mpi/block_queue.hpp"
#include "tstitch/mpi/launcher.hpp"

int main() {
  // The queue's type holds MPI handles, so this needs Open MPI's headers from the package config.
  constexpr auto queue_bytes = sizeof(tstitch::mpi::BlockQueue);
  std::printf("tstitch::mpi consumer: launched by MPI: %s (BlockQueue: %zu bytes)\n",
              tstitch::mpi::launched_by_mpi() ? "yes" : "no", queue_bytes);
  return 0;
}
