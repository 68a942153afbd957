// dnnl_compat.h: every oneDNN primitive-descriptor creation the CPU backend uses, written once for oneDNN 2.x
// (Debian 12 ships 2.6.3: op descriptors, then primitive_desc(desc, attr, engine)) and once for 3.x
// (primitive_desc(engine, mds..., attr)). Nothing else in the backend depends on the oneDNN major version.
#pragma once

#include <dnnl.hpp>

namespace kosmos::cpu::dnnl_compat {

using dnnl::algorithm;
using dnnl::memory;
using dnnl::primitive_attr;
using dnnl::prop_kind;

// dst = scale-free sum post-op (adds `scale` * the old dst) for fused accumulation.
inline void append_sum(dnnl::post_ops & ops, float scale) { ops.append_sum(scale); }

inline void append_eltwise(dnnl::post_ops & ops, algorithm alg, float alpha, float beta) {
#if DNNL_VERSION_MAJOR >= 3
  ops.append_eltwise(alg, alpha, beta);
#else
  ops.append_eltwise(1.0f, alg, alpha, beta);
#endif
}

inline dnnl::matmul::primitive_desc matmul_pd(const dnnl::engine & engine, const memory::desc & src,
                                              const memory::desc & weights, const memory::desc * bias,
                                              const memory::desc & dst, const primitive_attr & attr) {
#if DNNL_VERSION_MAJOR >= 3
  return bias ? dnnl::matmul::primitive_desc(engine, src, weights, *bias, dst, attr)
              : dnnl::matmul::primitive_desc(engine, src, weights, dst, attr);
#else
  const dnnl::matmul::desc desc = bias ? dnnl::matmul::desc(src, weights, *bias, dst)
                                       : dnnl::matmul::desc(src, weights, dst);
  return dnnl::matmul::primitive_desc(desc, attr, engine);
#endif
}

inline dnnl::normalization_flags layernorm_affine_flags() {
  return dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift;
}

inline dnnl::layer_normalization_forward::primitive_desc layernorm_forward_pd(const dnnl::engine & engine,
                                                                              const memory::desc & data,
                                                                              const memory::desc & stats,
                                                                              float eps) {
#if DNNL_VERSION_MAJOR >= 3
  return dnnl::layer_normalization_forward::primitive_desc(engine, prop_kind::forward_training, data, data, stats,
                                                           eps, layernorm_affine_flags());
#else
  const dnnl::layer_normalization_forward::desc desc(prop_kind::forward_training, data, stats, eps,
                                                     layernorm_affine_flags());
  return dnnl::layer_normalization_forward::primitive_desc(desc, engine);
#endif
}

inline dnnl::layer_normalization_backward::primitive_desc layernorm_backward_pd(
    const dnnl::engine & engine, const memory::desc & data, const memory::desc & stats, float eps,
    const dnnl::layer_normalization_forward::primitive_desc & hint) {
#if DNNL_VERSION_MAJOR >= 3
  return dnnl::layer_normalization_backward::primitive_desc(engine, prop_kind::backward, data, data, data, stats,
                                                            eps, layernorm_affine_flags(), hint);
#else
  const dnnl::layer_normalization_backward::desc desc(prop_kind::backward, data, data, stats, eps,
                                                      layernorm_affine_flags());
  return dnnl::layer_normalization_backward::primitive_desc(desc, engine, hint);
#endif
}

inline dnnl::eltwise_forward::primitive_desc eltwise_forward_pd(const dnnl::engine & engine, prop_kind prop,
                                                                algorithm alg, const memory::desc & data,
                                                                float alpha, float beta) {
#if DNNL_VERSION_MAJOR >= 3
  return dnnl::eltwise_forward::primitive_desc(engine, prop, alg, data, data, alpha, beta);
#else
  const dnnl::eltwise_forward::desc desc(prop, alg, data, alpha, beta);
  return dnnl::eltwise_forward::primitive_desc(desc, engine);
#endif
}

inline dnnl::eltwise_backward::primitive_desc eltwise_backward_pd(const dnnl::engine & engine, algorithm alg,
                                                                  const memory::desc & data, float alpha, float beta,
                                                                  const dnnl::eltwise_forward::primitive_desc & hint) {
#if DNNL_VERSION_MAJOR >= 3
  return dnnl::eltwise_backward::primitive_desc(engine, alg, data, data, data, alpha, beta, hint);
#else
  const dnnl::eltwise_backward::desc desc(alg, data, data, alpha, beta);
  return dnnl::eltwise_backward::primitive_desc(desc, engine, hint);
#endif
}

inline dnnl::binary::primitive_desc binary_pd(const dnnl::engine & engine, algorithm alg, const memory::desc & src0,
                                              const memory::desc & src1, const memory::desc & dst) {
#if DNNL_VERSION_MAJOR >= 3
  return dnnl::binary::primitive_desc(engine, alg, src0, src1, dst);
#else
  const dnnl::binary::desc desc(alg, src0, src1, dst);
  return dnnl::binary::primitive_desc(desc, engine);
#endif
}

}  // namespace kosmos::cpu::dnnl_compat
