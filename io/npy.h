// npy.h: NumPy .npy files (format 1.0/2.0, little-endian float32 or integer, C order): what `kosmos forward` reads
// for preprocessed images and writes for logits, so a PyTorch user compares with np.load.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kosmos::io {

struct NpyArray {
  std::vector<int64_t> shape;
  std::vector<float> values;  // converted to f32 from <f4, <f8, <i4 or <i8
};

// Reads an array; anything else (big-endian, Fortran order, objects, a short file) is an error naming the file.
NpyArray read_npy(const std::string & path);
void write_npy(const std::string & path, const std::vector<int64_t> & shape, const std::vector<float> & values);

}  // namespace kosmos::io
