// mpi_handle.h: the MPI communicator under a Comm, for the libraries that take one themselves (parallel HDF5's
// MPI-IO driver). Only io/checkpoint uses it; everything else talks through Comm.
#pragma once

#include <mpi.h>

#include "parallel/comm.h"

namespace kosmos::parallel {

// The MPI_Comm of an MPI-backed Comm; an error for any other transport.
MPI_Comm mpi_handle(Comm & comm);

}  // namespace kosmos::parallel
