# check_emulated_gpu.cmake: the CUDA backend's training, on the emulated GPU (its kernels on the host's cores), as
# bench/device_check.sh checks it on a real one: 5 AdamW steps of the tiny preset with the decoder's heads at 32
# wide (so that bf16 attention runs on the mma.sync kernels, the vision tower's and the resampler's 16 on WMMA)
#   1. emulated fp32 trains what the CPU trains (losses, gradient norms and final parameters within 1e-4), and so
#      does emulated-rocm (the ROCm build's kernels, in waves of 64);
#   2. --precision bf16 on emulated, emulated-wmma and emulated-rocm, and fp16 (dynamic loss scaling) on emulated,
#      within 2e-2, 2e-2, 2e-2 and 1e-2 of the CPU's fp32 run (over the whole model, as check_mixed_precision.cmake
#      compares);
#   3. --recompute attention on emulated trains bit for bit what it trains without, and so does --recompute ffn
#      under --precision bf16 (the paper-size step's flags in device_check.sh); --attention-backward atomic (dq
#      added up by atomics, in another order) within 1e-3 of the bf16 run at 160 positions (2 steps: 6 s each);
#   4. a checkpoint of 3 steps on the CPU resumes on emulated to step 6, and the reverse, within 1e-4 of 6 steps on
#      the CPU (the HDF5 checkpoint does not depend on the backend);
#   5. --gemm-tuning 3 under --precision bf16 trains bit for bit what the untuned run trains (the emulated library's
#      algorithms compute alike: the timed runs must leave every product's C as it was, the weight gradients that
#      add to theirs included), and its output says what the tuning chose.
# cmake -DKOSMOS=<exe> -DCOMPARE=<tool> -DOUT=<prefix> -DMODEL=<tiny_head32.json> -P check_emulated_gpu.cmake
set(common train --preset tiny --seed 1 --log-every 100 --model-config ${MODEL})

# run(NAME ARGS...): kosmos with the common arguments and ARGS, metrics and weights under OUT_NAME; its output in
# the caller's NAME_output.
function(run name)
  execute_process(COMMAND ${KOSMOS} ${common} ${ARGN} --metrics ${OUT}_${name}.jsonl
                          --save-weights ${OUT}_${name}.safetensors
                  RESULT_VARIABLE status OUTPUT_VARIABLE output ERROR_VARIABLE output)
  if(NOT status EQUAL 0)
    message(FATAL_ERROR "the ${name} run (${ARGN}) exited with ${status}:\n${output}")
  endif()
  set(${name}_output "${output}" PARENT_SCOPE)
endfunction()

# agree(A B TOLERANCE [--whole-model]): B's steps and weights against A's.
function(agree a b tolerance)
  execute_process(COMMAND ${COMPARE} ${OUT}_${a}.jsonl ${OUT}_${b}.jsonl ${OUT}_${a}.safetensors
                          ${OUT}_${b}.safetensors ${tolerance} ${ARGN}
                  RESULT_VARIABLE same OUTPUT_VARIABLE report ERROR_VARIABLE report)
  if(NOT same EQUAL 0)
    message(FATAL_ERROR "${b} does not train what ${a} trains within ${tolerance}:\n${report}")
  endif()
  message(STATUS "${b} against ${a}: within ${tolerance}")
endfunction()

run(cpu --steps 5 --backend cpu)
run(emulated --steps 5 --backend emulated)
agree(cpu emulated 1e-4)
run(emulated_bf16 --steps 5 --backend emulated --precision bf16)
agree(cpu emulated_bf16 2e-2 --whole-model)
run(emulated_wmma_bf16 --steps 5 --backend emulated-wmma --precision bf16)
agree(cpu emulated_wmma_bf16 2e-2 --whole-model)
run(emulated_fp16 --steps 5 --backend emulated --precision fp16)
agree(cpu emulated_fp16 1e-2 --whole-model)
run(emulated_rocm --steps 5 --backend emulated-rocm)
agree(cpu emulated_rocm 1e-4)
run(emulated_rocm_bf16 --steps 5 --backend emulated-rocm --precision bf16)
agree(cpu emulated_rocm_bf16 2e-2 --whole-model)
run(emulated_recompute --steps 5 --backend emulated --recompute attention)
agree(emulated emulated_recompute 0)
run(emulated_bf16_recompute_ffn --steps 5 --backend emulated --precision bf16 --recompute ffn)
agree(emulated_bf16 emulated_bf16_recompute_ffn 0)
run(emulated_bf16_tuned --steps 5 --backend emulated --precision bf16 --gemm-tuning 3)
agree(emulated_bf16 emulated_bf16_tuned 0)
if(NOT emulated_bf16_tuned_output MATCHES "GEMM tuning: [0-9]+ product plans [^\n]* timed up to 3 of cuBLASLt's")
  message(FATAL_ERROR "the --gemm-tuning run does not report its tuning:\n${emulated_bf16_tuned_output}")
endif()
if(emulated_bf16_output MATCHES "GEMM tuning")
  message(FATAL_ERROR "the run without --gemm-tuning reports a tuning:\n${emulated_bf16_output}")
endif()
# (at 160 positions, three blocks of 64, so that dq's sums meet)
run(emulated_bf16_160 --steps 2 --backend emulated --precision bf16 --length 160)
run(emulated_bf16_160_atomic --steps 2 --backend emulated --precision bf16 --length 160 --attention-backward atomic)
agree(emulated_bf16_160 emulated_bf16_160_atomic 1e-3 --whole-model)

run(cpu_6 --steps 6 --backend cpu)
foreach(pair "cpu;emulated" "emulated;cpu")
  list(POP_FRONT pair first second)
  file(REMOVE_RECURSE ${OUT}_${first}_to_${second})
  execute_process(COMMAND ${KOSMOS} ${common} --steps 6 --backend ${first} --stop-at 3
                          --save-dir ${OUT}_${first}_to_${second}
                  RESULT_VARIABLE status OUTPUT_VARIABLE output ERROR_VARIABLE output)
  if(NOT status EQUAL 0)
    message(FATAL_ERROR "the 3 steps on ${first} exited with ${status}:\n${output}")
  endif()
  run(${first}_to_${second} --steps 6 --backend ${second} --save-dir ${OUT}_${first}_to_${second} --resume auto)
  agree(cpu_6 ${first}_to_${second} 1e-4)
endforeach()
