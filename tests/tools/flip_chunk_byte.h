// flip_chunk_byte.h: damages a checkpoint the way a bad disk or a stray write would: one bit of a byte inside the
// first chunk of a dataset's stored data (found with HDF5's chunk index), which its Fletcher32 checksum must catch.
// For the unit tests and the kosmos_flip_chunk_byte tool of the end-to-end resume test.
#pragma once

#include <string>

namespace kosmos::testing {

// Flips bit 4 of the byte 37 bytes into the first chunk of `dataset` in the HDF5 file `path`; returns "" or what
// went wrong (no such dataset, not chunked, a chunk too small).
std::string flip_chunk_byte(const std::string & path, const std::string & dataset);

}  // namespace kosmos::testing
