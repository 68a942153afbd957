// cudnn_attention.h: what the CUDA build's cuDNN attention (cudnn_attention.cu, the backend cuda-cudnn) offers
// outside the kernels: a check of its graphs that needs cuDNN's library but no GPU.
#pragma once

#include <cstdint>
#include <string>

namespace kosmos::cuda {

// Builds the attention graph (forward or backward) for [batch, heads, length, head_dim] operands laid out as the
// model's (q, k and v column windows of the q | k | v rows), through the operation graph, which cuDNN checks as it is
// made (the heuristics and plans need a GPU); "" where every descriptor was accepted, else what cuDNN refused
// (or why its library cannot be opened).
std::string cudnn_attention_graph_problem(int64_t batch, int64_t heads, int64_t length, int64_t head_dim,
                                          bool causal, float dropout_p, bool backward);

}  // namespace kosmos::cuda
