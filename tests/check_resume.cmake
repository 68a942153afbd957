# check_resume.cmake: a run stopped and resumed from its HDF5 checkpoint continues the uninterrupted run: 10 AdamW
# steps in one go under SAVE_LAYOUT; the same run stopped after step 5 (--stop-at) with a checkpoint; then steps
# 6-10 resumed from it under RESUME_LAYOUT. Steps 6-10 (loss, gradient norm) and the final parameters must agree
# within TOLERANCE (0: bit for bit, for the same layout). Both parts write one metrics file: the resumed run appends,
# so it must hold all ten steps, each once (kosmos_compare_runs refuses a step written twice).
# cmake -DKOSMOS=<exe> -DCOMPARE=<tool> -DMPIEXEC=<mpirun> -DOUT=<prefix> -DSAVE_RANKS=4 "-DSAVE_LAYOUT=--pp;2;--tp;2"
#       -DRESUME_RANKS=4 "-DRESUME_LAYOUT=--tp;4" -DTOLERANCE=1e-5 ["-DDATA=--data;DIR"] -P check_resume.cmake
if(NOT DEFINED DATA OR DATA STREQUAL "")
  set(DATA --length 40)
endif()
set(common train --preset tiny --steps 10 --seed 9 --global-batch 8 --micro-batches 2 --log-every 100 ${DATA})
function(run_kosmos ranks)
  if(ranks EQUAL 1)
    set(launcher "")
  else()
    set(launcher ${MPIEXEC} --allow-run-as-root --oversubscribe -np ${ranks} env OMP_NUM_THREADS=1)
  endif()
  execute_process(COMMAND ${launcher} ${KOSMOS} ${common} ${ARGN} RESULT_VARIABLE status OUTPUT_VARIABLE output
                  ERROR_VARIABLE output)
  if(NOT status EQUAL 0)
    message(FATAL_ERROR "kosmos ${ARGN} on ${ranks} ranks exited with ${status}:\n${output}")
  endif()
endfunction()

file(REMOVE_RECURSE ${OUT}_checkpoints)
run_kosmos(${SAVE_RANKS} ${SAVE_LAYOUT} --metrics ${OUT}_whole.jsonl --save-weights ${OUT}_whole.safetensors)
file(REMOVE ${OUT}_resumed.jsonl)
run_kosmos(${SAVE_RANKS} ${SAVE_LAYOUT} --stop-at 5 --save-dir ${OUT}_checkpoints --save-every 2 --keep 2
           --metrics ${OUT}_resumed.jsonl)
if(NOT EXISTS ${OUT}_checkpoints/step_00000005.h5 OR NOT EXISTS ${OUT}_checkpoints/step_00000004.h5 OR
   EXISTS ${OUT}_checkpoints/step_00000002.h5)
  message(FATAL_ERROR "expected the checkpoints of steps 4 and 5 (--keep 2) in ${OUT}_checkpoints")
endif()
run_kosmos(${RESUME_RANKS} ${RESUME_LAYOUT} --save-dir ${OUT}_checkpoints --resume auto
           --metrics ${OUT}_resumed.jsonl --save-weights ${OUT}_resumed.safetensors)
execute_process(COMMAND ${COMPARE} ${OUT}_whole.jsonl ${OUT}_resumed.jsonl ${OUT}_whole.safetensors
                        ${OUT}_resumed.safetensors ${TOLERANCE}
                RESULT_VARIABLE same)
file(STRINGS ${OUT}_resumed.jsonl resumed_lines)
list(LENGTH resumed_lines resumed_count)
if(NOT resumed_count EQUAL 10)
  message(FATAL_ERROR "${OUT}_resumed.jsonl holds ${resumed_count} lines; expected steps 1-5 of the stopped run and "
                      "6-10 of the resumed one")
endif()
if(NOT same EQUAL 0)
  message(FATAL_ERROR "resumed under '${RESUME_LAYOUT}' from a checkpoint of '${SAVE_LAYOUT}': steps 1-10 differ "
                      "from the uninterrupted run beyond ${TOLERANCE}")
endif()
