// SPDX-License-Identifier: Apache-2.0
#pragma once

// <mpi.h> with the C API alone: the MPI C++ bindings (deprecated since MPI 2.2, removed in 3.0)
// are not used, and Open MPI's warn under -Wextra.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>
