// agreement.cpp: the ranks agree on an error only some of them saw (first_error_over, declared in comm.h), so that
// every rank fails with the same message, or none does.
#include <cstring>
#include <string>
#include <vector>

#include "parallel/comm.h"

namespace kosmos::parallel {

std::string first_error_over(Comm & world, const std::string & error, Stream & stream) {
  float negated_rank = -static_cast<float>(error.empty() ? world.size() : world.rank());  // the max is the lowest
  world.all_reduce(make_view(&negated_rank, DType::kF32, {1}), ReduceOp::kMax, stream);
  const int root = static_cast<int>(-negated_rank);
  if (root == world.size()) return "";
  int32_t length = static_cast<int32_t>(error.size());
  world.broadcast(make_view(&length, DType::kI32, {1}), root, stream);
  std::vector<int32_t> words((static_cast<size_t>(length) + 3) / 4 + 1, 0);  // the message, 4 bytes a word
  std::memcpy(words.data(), error.data(), world.rank() == root ? error.size() : 0);
  world.broadcast(make_view(words.data(), DType::kI32, {static_cast<int64_t>(words.size())}), root, stream);
  return std::string(reinterpret_cast<const char *>(words.data()), static_cast<size_t>(length));
}

}  // namespace kosmos::parallel
