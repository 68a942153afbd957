# check_mixed_precision.cmake: --precision bf16 trains the same model as fp32 to within bf16's rounding, and does
# round: 5 AdamW steps of the tiny preset (dropout on, same seed and batch) in both precisions; every step's loss and
# gradient norm and every final parameter agree within 2e-2 relative (a bf16 operand carries 2^-9 relative error),
# and they do not agree bit for bit (which would mean the matmuls never saw bf16).
# cmake -DKOSMOS=<exe> -DCOMPARE=<tool> -DOUT=<prefix> -P check_mixed_precision.cmake
set(common train --preset tiny --steps 5 --seed 9 --global-batch 8 --length 40 --micro-batches 2 --log-every 100)
foreach(precision fp32 bf16)
  execute_process(COMMAND ${KOSMOS} ${common} --precision ${precision} --metrics ${OUT}_${precision}.jsonl
                          --save-weights ${OUT}_${precision}.safetensors
                  RESULT_VARIABLE status OUTPUT_VARIABLE output)
  if(NOT status EQUAL 0)
    message(FATAL_ERROR "the --precision ${precision} run exited with ${status}:\n${output}")
  endif()
endforeach()
string(FIND "${output}" "precision: bf16" announced)
if(announced EQUAL -1)
  message(FATAL_ERROR "the bf16 run does not say it computes in bf16:\n${output}")
endif()
set(files ${OUT}_fp32.jsonl ${OUT}_bf16.jsonl ${OUT}_fp32.safetensors ${OUT}_bf16.safetensors)
execute_process(COMMAND ${COMPARE} ${files} 2e-2 RESULT_VARIABLE close)
if(NOT close EQUAL 0)
  message(FATAL_ERROR "the bf16 run is further than 2e-2 relative from the fp32 run")
endif()
execute_process(COMMAND ${COMPARE} ${files} 0 RESULT_VARIABLE identical OUTPUT_QUIET)
if(identical EQUAL 0)
  message(FATAL_ERROR "the bf16 run is bit-identical to the fp32 run: its matmuls did not compute in bf16")
endif()
