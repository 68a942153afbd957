# check_mixed_precision.cmake: --precision bf16 or fp16 trains the same model as fp32 to within the 16-bit rounding,
# and does round: 5 AdamW steps of the tiny preset (dropout on, same seed and batch) in fp32 and in PRECISION; every
# step's loss and gradient norm, and the final parameters, agree within TOLERANCE relative (a bf16 operand carries
# 2^-9 relative error, an f16 one 2^-12), and they do not agree bit for bit (which would mean the matmuls never saw
# 16 bits). fp16 runs with dynamic loss scaling, which its metrics must show (a loss scale of 65536); started at a
# scale of 2^40 its gradients overflow f16 (not f32: the same run in fp32 skips nothing), so the first steps are
# skipped with the scale halving each time until the gradients are finite, and training then goes on.
# cmake -DKOSMOS=<exe> -DCOMPARE=<tool> -DOUT=<prefix> -DPRECISION=bf16|fp16 -DTOLERANCE=2e-2 -P check_mixed_precision.cmake
set(common train --preset tiny --steps 5 --seed 9 --global-batch 8 --length 40 --micro-batches 2 --log-every 100)
foreach(precision fp32 ${PRECISION})
  execute_process(COMMAND ${KOSMOS} ${common} --precision ${precision} --metrics ${OUT}_${precision}.jsonl
                          --save-weights ${OUT}_${precision}.safetensors
                  RESULT_VARIABLE status OUTPUT_VARIABLE output)
  if(NOT status EQUAL 0)
    message(FATAL_ERROR "the --precision ${precision} run exited with ${status}:\n${output}")
  endif()
endforeach()
string(FIND "${output}" "precision: ${PRECISION}" announced)
if(announced EQUAL -1)
  message(FATAL_ERROR "the ${PRECISION} run does not say it computes in ${PRECISION}:\n${output}")
endif()
if(PRECISION STREQUAL "fp16")
  file(STRINGS ${OUT}_fp16.jsonl steps)
  foreach(step IN LISTS steps)
    string(REGEX MATCH "\"loss_scale\":([0-9.eE+-]+)" found "${step}")
    if(NOT found OR NOT CMAKE_MATCH_1 EQUAL 65536)
      message(FATAL_ERROR "an fp16 step without dynamic loss scaling from 65536 (${found}): ${step}")
    endif()
  endforeach()
endif()
if(PRECISION STREQUAL "fp16")
  foreach(precision fp32 fp16)
    execute_process(COMMAND ${KOSMOS} train --preset tiny --steps 25 --seed 9 --log-every 100 --precision ${precision}
                            --non-finite reduce-scale --loss-scale 1099511627776
                            --metrics ${OUT}_${precision}_overflow.jsonl
                    RESULT_VARIABLE status OUTPUT_VARIABLE output)
    if(NOT status EQUAL 0)
      message(FATAL_ERROR "the --precision ${precision} run from a loss scale of 2^40 exited with ${status}:\n${output}")
    endif()
    file(STRINGS ${OUT}_${precision}_overflow.jsonl steps)
    list(GET steps 0 first)
    list(GET steps -1 last)
    string(REGEX MATCH "\"skipped_steps\":([0-9]+)" found "${last}")
    set(skipped ${CMAKE_MATCH_1})
    string(REGEX MATCH "\"skipped\":([a-z]+)" found "${last}")
    set(last_skipped ${CMAKE_MATCH_1})
    message(STATUS "${precision} from a loss scale of 2^40: ${skipped} of 25 steps skipped")
    if(precision STREQUAL "fp32" AND NOT skipped EQUAL 0)
      message(FATAL_ERROR "fp32 skipped ${skipped} steps at a loss scale of 2^40; only f16 should overflow")
    endif()
    if(precision STREQUAL "fp16" AND (skipped LESS 1 OR skipped GREATER 24 OR NOT last_skipped STREQUAL "false"))
      message(FATAL_ERROR "fp16 from a loss scale of 2^40 skipped ${skipped} of 25 steps (the last skipped: "
                          "${last_skipped}); expected the first to overflow and the scale to come down until none "
                          "do:\n${first}\n${last}")
    endif()
  endforeach()
endif()
set(files ${OUT}_fp32.jsonl ${OUT}_${PRECISION}.jsonl ${OUT}_fp32.safetensors ${OUT}_${PRECISION}.safetensors)
# The parameters over the whole model (see compare_runs.cpp: AdamW makes a flipped near-zero gradient sign a full
# step, and with fp16 one bias element in a few seeds' runs does so).
execute_process(COMMAND ${COMPARE} ${files} ${TOLERANCE} --whole-model RESULT_VARIABLE close)
if(NOT close EQUAL 0)
  message(FATAL_ERROR "the ${PRECISION} run is further than ${TOLERANCE} relative from the fp32 run")
endif()
execute_process(COMMAND ${COMPARE} ${files} 0 RESULT_VARIABLE identical OUTPUT_QUIET)
if(identical EQUAL 0)
  message(FATAL_ERROR "the ${PRECISION} run is bit-identical to the fp32 run: its matmuls did not compute in ${PRECISION}")
endif()
