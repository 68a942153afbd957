# check_layout_invariance.cmake: a layout under mpirun computes the same training function as one rank: 5 AdamW
# steps with dropout on, the same global batch and seed; the losses, gradient norms and final parameters agree
# within 1e-5 relative (or -DTOLERANCE). cmake -DKOSMOS=<exe> -DCOMPARE=<tool> -DMPIEXEC=<mpirun> -DRANKS=2
#   -DOUT=<prefix> "-DLAYOUT=--dp;2" ["-DBOTH=--micro-batches;4"] -P check_layout_invariance.cmake (BOTH: both runs)
# -DEXPECT_OVERLAP=1 also asks every step of the layout's metrics for a data-parallel reduction that started while
# the backward still ran (reduce_overlap > 0). -DGLOBAL_BATCH=N: N sequences per step instead of 8. -DLENGTH=N:
# N positions per sequence instead of 40.
if(NOT DEFINED BOTH OR BOTH STREQUAL "")
  set(BOTH --micro-batches 2)
endif()
if(NOT DEFINED TOLERANCE OR TOLERANCE STREQUAL "")
  set(TOLERANCE 1e-5)
endif()
if(NOT DEFINED GLOBAL_BATCH OR GLOBAL_BATCH STREQUAL "")
  set(GLOBAL_BATCH 8)
endif()
if(NOT DEFINED LENGTH OR LENGTH STREQUAL "")
  set(LENGTH 40)
endif()
set(common train --preset tiny --steps 5 --seed 9 --global-batch ${GLOBAL_BATCH} --length ${LENGTH} --log-every 100
           ${BOTH})
execute_process(COMMAND ${KOSMOS} ${common} --metrics ${OUT}_single.jsonl --save-weights ${OUT}_single.safetensors
                RESULT_VARIABLE status OUTPUT_QUIET)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "the single-rank run exited with ${status}")
endif()
execute_process(COMMAND ${MPIEXEC} --allow-run-as-root --oversubscribe -np ${RANKS} env OMP_NUM_THREADS=1
                        ${KOSMOS} ${common} ${LAYOUT} --metrics ${OUT}_layout.jsonl
                        --save-weights ${OUT}_layout.safetensors
                RESULT_VARIABLE status OUTPUT_QUIET)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "the run with ${LAYOUT} on ${RANKS} ranks exited with ${status}")
endif()
execute_process(COMMAND ${COMPARE} ${OUT}_single.jsonl ${OUT}_layout.jsonl ${OUT}_single.safetensors
                        ${OUT}_layout.safetensors ${TOLERANCE}
                RESULT_VARIABLE same)
if(NOT same EQUAL 0)
  message(FATAL_ERROR "${LAYOUT} on ${RANKS} ranks does not match the single-rank run")
endif()
if(EXPECT_OVERLAP)
  file(STRINGS ${OUT}_layout.jsonl steps)
  foreach(step IN LISTS steps)
    string(REGEX MATCH "\"reduce_overlap\":([0-9.eE+-]+)" found "${step}")
    if(NOT found OR CMAKE_MATCH_1 LESS_EQUAL 0)
      message(FATAL_ERROR "a step's gradient reduction did not overlap the backward (${found}): ${step}")
    endif()
  endforeach()
endif()
