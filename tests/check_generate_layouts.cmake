# check_generate_layouts.cmake: `kosmos generate` takes the same tokens whether the model runs on one rank or split
# over pp 2, tp 2 or pp 2 x tp 2, and on one rank of each of BACKENDS (the emulated GPU's: its kernels' prompt pass
# and decoding steps with the KV cache): a model trained briefly on the demo dataset, a picture of the demo corpus,
# 12 greedy tokens. cmake -DKOSMOS=<exe> -DMPIEXEC=<mpirun> -DDATA=<demo_data folder> -DOUT=<prefix>
#   ["-DBACKENDS=emulated;emulated-rocm"] -P check_generate_layouts.cmake
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
