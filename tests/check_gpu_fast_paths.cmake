# check_gpu_fast_paths.cmake: one training step of the small preset (its heads 64 wide in the decoder, the vision
# tower and the resampler, as kosmos1's) on the emulated GPU with the paper-size step's flags (--precision bf16
# --recompute ffn) and --profile, whose op names say where an op left its fast path: a product cuBLASLt declined or
# that matmul.cu's layout rules kept from it runs as "(own GEMM)", a bf16 attention widened to the f32 kernels as
# "(f32 kernels)". Neither may appear: on a GPU either costs many times the op's time. The profile must list the
# products and the attention, so that a run printing none of it cannot pass, and their shapes; the decoder's
# input-gradient products into its pre-LNs and its projections before the residual add write bf16.
# cmake -DKOSMOS=<exe> -DBACKEND=<emulated|emulated-wmma> -P check_gpu_fast_paths.cmake
execute_process(COMMAND ${KOSMOS} train --preset small --backend ${BACKEND} --precision bf16 --recompute ffn
                        --steps 1 --warmup 0 --batch 2 --length 96 --seed 3 --profile
                RESULT_VARIABLE status OUTPUT_VARIABLE output ERROR_VARIABLE output)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "the profiled step on ${BACKEND} exited with ${status}:\n${output}")
endif()
foreach(expected "matmul" "attention_forward" "attention_backward")
  string(FIND "${output}" "  ${expected}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "the profile on ${BACKEND} lists no ${expected}:\n${output}")
  endif()
endforeach()
# ... and, as a GPU's profile does, the products and attention by the shape they ran at.
if(NOT output MATCHES "matmul and attention by shape [^\n]*\n  (matmul|attention_forward|attention_backward) \\[[0-9]")
  message(FATAL_ERROR "the profile on ${BACKEND} lists no matmul or attention shape:\n${output}")
endif()
# The decoder's fc1 and q | k | v input-gradient products (the small preset's 256 wide, 1024 and 768 deep) write the
# gradient at their pre-LN's output in bf16, as PyTorch's autocast does (model/layers.cpp
# take_layernorm_output_gradient): in f32 they wrote, and the LayerNorm read, twice the bytes.
foreach(depth 1024 768)
  if(NOT output MATCHES "matmul \\[[0-9]+, ${depth}\\] x \\[${depth}, 256\\] bf16 -> bf16")
    message(FATAL_ERROR "the profile on ${BACKEND} lists no ${depth}-deep input-gradient product into bf16:\n${output}")
  endif()
endforeach()
# ... and its out_proj and fc2 products (256 and 1024 deep) their outputs before the residual add, likewise.
foreach(depth 256 1024)
  if(NOT output MATCHES "matmul \\[[0-9]+, ${depth}\\] x \\[256, ${depth}\\]\\^T bf16 -> bf16")
    message(FATAL_ERROR "the profile on ${BACKEND} lists no ${depth}-deep projection into bf16:\n${output}")
  endif()
endforeach()
foreach(slow "(own GEMM)" "(f32 kernels)")
  string(FIND "${output}" "${slow}" at)
  if(NOT at EQUAL -1)
    message(FATAL_ERROR "an op on ${BACKEND} left its fast path, ${slow}:\n${output}")
  endif()
endforeach()
message(STATUS "every product on cuBLASLt and every attention on the bf16 tensor-core kernels (${BACKEND})")
