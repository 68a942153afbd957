// flip_chunk_byte.cpp: one flipped bit inside a dataset's first chunk (flip_chunk_byte.h), and, with
// KOSMOS_FLIP_CHUNK_BYTE_MAIN, the command `kosmos_flip_chunk_byte FILE DATASET`.
#include "tests/tools/flip_chunk_byte.h"

#include <hdf5.h>

#include <cstdio>
#include <fstream>

namespace kosmos::testing {

std::string flip_chunk_byte(const std::string & path, const std::string & dataset) {
  haddr_t address = HADDR_UNDEF;
  hsize_t size = 0;
  {
    const hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) return path + ": cannot open it as HDF5";
    const hid_t data = H5Dopen2(file, dataset.c_str(), H5P_DEFAULT);
    hsize_t offset[H5S_MAX_RANK] = {};
    unsigned filter_mask = 0;
    const herr_t found = data < 0 ? -1 : H5Dget_chunk_info_by_coord(data, offset, &filter_mask, &address, &size);
    if (data >= 0) H5Dclose(data);
    H5Fclose(file);
    if (found < 0 || address == HADDR_UNDEF) return path + ": no chunked dataset " + dataset;
  }
  if (size <= 100) return path + ": the first chunk of " + dataset + " is too small to damage inside";
  std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
  file.seekg(static_cast<std::streamoff>(address + 37));
  char byte = 0;
  file.read(&byte, 1);
  byte = static_cast<char>(byte ^ 0x10);
  file.seekp(static_cast<std::streamoff>(address + 37));
  file.write(&byte, 1);
  return file ? "" : path + ": cannot write the damaged byte";
}

}  // namespace kosmos::testing

#ifdef KOSMOS_FLIP_CHUNK_BYTE_MAIN
int main(int argc, char ** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s CHECKPOINT.h5 DATASET\n", argv[0]);
    return 2;
  }
  const std::string error = kosmos::testing::flip_chunk_byte(argv[1], argv[2]);
  if (!error.empty()) std::fprintf(stderr, "kosmos_flip_chunk_byte: %s\n", error.c_str());
  return error.empty() ? 0 : 1;
}
#endif
