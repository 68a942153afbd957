// cudnn_attention.h: what the CUDA build's cuDNN attention (cudnn_attention.cu, the backend cuda-cudnn) offers
// outside the kernels: a check of its graphs that needs cuDNN's library but no GPU.
#pragma once

#include <cstdint>
#include <string>

namespace kosmos::cuda {

// What cuDNN made of one attention graph (check_cudnn_attention_graph).
struct CudnnGraphCheck {
  std::string refused;            // why cuDNN's library cannot be opened, or a descriptor it refused ("": none)
  int64_t engines_offered = 0;    // by cuDNN's heuristics, for the device described (none described: 0)
  bool plan_made = false;         // by one of them (where the CUDA driver can load the kernel it compiled)
  // Engines that compiled their kernel and made no plan only because the driver could not load it
  // (CUDNN_STATUS_EXECUTION_FAILED_CUDA_DRIVER: the toolkit's stub of the driver, where there is no GPU), and those
  // that refused for any other reason.
  int64_t compiled_unloaded = 0, other_refusals = 0;
  std::string reasons;            // the engines' statuses and cuDNN's messages
};

// Builds the attention graph (forward or backward) for [batch, heads, length, head_dim] operands laid out as the
// model's (q, k and v, and their gradients, column windows of the q | k | v rows; the output and its gradient in
// [B, T, H, dh] rows) through the operation graph, which cuDNN checks descriptor by descriptor as it is made. With
// `device_json` (cuDNN's JSON of a device's properties), also asks cuDNN's heuristics for engines for that device
// and has each make its plan, as cuDNN 9.8 and later allow without the device.
CudnnGraphCheck check_cudnn_attention_graph(int64_t batch, int64_t heads, int64_t length, int64_t head_dim, bool causal,
                                            float dropout_p, bool backward, const std::string & device_json = "");

}  // namespace kosmos::cuda
