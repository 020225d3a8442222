// SPDX-License-Identifier: Apache-2.0
#pragma once

// Whether this process was started by an MPI launcher (mpirun/mpiexec of Open MPI, MPICH or
// Intel MPI, or Slurm's srun), read from the environment the launcher sets. A plain run then skips
// MPI_Init entirely, so it starts as fast as a build without MPI and needs no MPI runtime.

#include <cstdlib>
#include <initializer_list>

namespace tstitch::mpi {

/// True when a variable that an MPI launcher sets for each process is present.
[[nodiscard]] inline bool launched_by_mpi() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMI_RANK", "PMIX_RANK",
                           "MPI_LOCALNRANKS", "SLURM_PROCID"})
    if (std::getenv(name) != nullptr)
      return true;
  return false;
}

} // namespace tstitch::mpi
