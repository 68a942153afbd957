# check_inference_layouts.cmake: a model trained briefly on the demo dataset gives the same answers however it is
# split: `kosmos generate` the same 12 greedy tokens from a picture of the demo corpus on one rank, split over pp 2,
# tp 2 or pp 2 x tp 2, and on one rank of each of BACKENDS (the emulated GPU's: its kernels' prompt pass and decoding
# steps with the KV cache); `kosmos eval --data` the same perplexity (within 1e-5 relative) on one rank, pp 2, tp 2,
# dp 2 (each replica half of every batch) and pp 2 x tp 2. cmake -DKOSMOS=<exe> -DMPIEXEC=<mpirun>
#   -DDATA=<demo_data folder> -DOUT=<prefix> ["-DBACKENDS=emulated;emulated-rocm"] -P check_inference_layouts.cmake
file(REMOVE_RECURSE ${OUT}_run)
execute_process(COMMAND ${KOSMOS} train --data ${DATA}/dataset --steps 30 --global-batch 8 --save-dir ${OUT}_run
                        --log-every 100
                RESULT_VARIABLE status OUTPUT_QUIET)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "training the model to generate from exited with ${status}")
endif()
set(generate generate --checkpoint ${OUT}_run --image ${DATA}/corpus/images/000000.png --prompt "a"
             --max-new-tokens 12 --ignore-eos --print-ids)
execute_process(COMMAND ${KOSMOS} ${generate} RESULT_VARIABLE status OUTPUT_VARIABLE expected)
if(NOT status EQUAL 0 OR expected STREQUAL "")
  message(FATAL_ERROR "generate on one rank exited with ${status}")
endif()
# same_tokens(WHAT TIMEOUT COMMAND...): COMMAND (generate, one way) gives the one-rank CPU run's tokens.
function(same_tokens what timeout)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE status OUTPUT_VARIABLE got ERROR_VARIABLE errors
                  TIMEOUT ${timeout})
  if(NOT status EQUAL 0)
    message(FATAL_ERROR "generate ${what} exited with ${status}:\n${errors}")
  endif()
  if(NOT got STREQUAL expected)
    message(FATAL_ERROR "generate ${what} gave ${got} but one rank on the CPU gave ${expected}")
  endif()
  message(STATUS "${what}: ${got}")
endfunction()
foreach(layout "2;--pp;2" "2;--tp;2" "4;--pp;2;--tp;2")
  list(POP_FRONT layout ranks)
  same_tokens("with ${layout}" 120 ${MPIEXEC} --allow-run-as-root --oversubscribe -np ${ranks} env OMP_NUM_THREADS=1
              ${KOSMOS} ${generate} ${layout})
endforeach()
foreach(backend IN LISTS BACKENDS)
  same_tokens("on --backend ${backend}" 300 ${KOSMOS} ${generate} --backend ${backend})
endforeach()

# The perplexity's loss per token from an eval --out file, in units of 1e-9.
include(${CMAKE_CURRENT_LIST_DIR}/decimal.cmake)
function(eval_loss file out)
  file(READ ${file} text)
  string(JSON loss GET "${text}" perplexity loss)
  decimal_to_nano(${loss} nano)
  set(${out} ${nano} PARENT_SCOPE)
endfunction()
set(eval eval --checkpoint ${OUT}_run --data ${DATA}/dataset --batches 2 --batch 4)
execute_process(COMMAND ${KOSMOS} ${eval} --out ${OUT}_eval.json RESULT_VARIABLE status ERROR_QUIET OUTPUT_QUIET)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "eval --data on one rank exited with ${status}")
endif()
eval_loss(${OUT}_eval.json expected_loss)
foreach(layout "2;--pp;2" "2;--tp;2" "2" "4;--pp;2;--tp;2")
  list(POP_FRONT layout ranks)
  set(shown "${layout}")
  if(shown STREQUAL "")
    set(shown "data-parallel replicas")
  endif()
  execute_process(COMMAND ${MPIEXEC} --allow-run-as-root --oversubscribe -np ${ranks} env OMP_NUM_THREADS=1
                          ${KOSMOS} ${eval} ${layout} --out ${OUT}_eval_layout.json
                  RESULT_VARIABLE status OUTPUT_QUIET ERROR_VARIABLE errors TIMEOUT 120)
  if(NOT status EQUAL 0)
    message(FATAL_ERROR "eval --data on ${ranks} ranks with ${shown} exited with ${status}:\n${errors}")
  endif()
  eval_loss(${OUT}_eval_layout.json loss)
  math(EXPR difference "${loss} - ${expected_loss}")
  string(REGEX REPLACE "^-" "" difference "${difference}")
  math(EXPR limit "${expected_loss} / 100000")  # 1e-5 relative
  if(difference GREATER limit)
    message(FATAL_ERROR "eval --data on ${ranks} ranks with ${shown}: loss ${loss} but one rank's is "
                        "${expected_loss} (units of 1e-9)")
  endif()
  message(STATUS "eval --data on ${ranks} ranks with ${shown}: loss ${loss} (one rank: ${expected_loss}) x 1e-9")
endforeach()
