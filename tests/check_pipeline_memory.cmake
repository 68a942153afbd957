# check_pipeline_memory.cmake: a pipeline stage holds the activations of the micro-batches its schedule has in
# flight, not the whole step's: pp 2 with 8 micro-batches of the tiny preset, the ranks' largest device peak of the
# last of 3 steps (the arenas settled) under 1F1B (the first stage holds 2 micro-batches) at most 0.6 of GPipe's (all
# 8; measured 0.38). cmake -DKOSMOS=<exe> -DMPIEXEC=<mpirun> -DOUT=<prefix> -P check_pipeline_memory.cmake
include(${CMAKE_CURRENT_LIST_DIR}/decimal.cmake)
foreach(schedule 1f1b gpipe)
  execute_process(COMMAND ${MPIEXEC} --allow-run-as-root --oversubscribe -np 2 env OMP_NUM_THREADS=1
                          ${KOSMOS} train --preset tiny --length 64 --steps 3 --global-batch 16 --pp 2
                          --micro-batches 8 --schedule ${schedule} --log-every 100 --metrics ${OUT}_${schedule}.jsonl
                  RESULT_VARIABLE status OUTPUT_QUIET ERROR_VARIABLE errors TIMEOUT 120)
  if(NOT status EQUAL 0)
    message(FATAL_ERROR "pp 2 with ${schedule} exited with ${status}:\n${errors}")
  endif()
  file(STRINGS ${OUT}_${schedule}.jsonl steps)
  list(GET steps -1 last)
  string(JSON peak GET "${last}" device_peak_gib)
  decimal_to_nano(${peak} peak_${schedule})
  message(STATUS "${schedule}: the ranks' largest device peak ${peak} GiB")
endforeach()
math(EXPR limit "${peak_gpipe} * 6 / 10")
if(peak_1f1b GREATER limit)
  message(FATAL_ERROR "1F1B peaked at ${peak_1f1b} nGiB, more than 0.6 of GPipe's ${peak_gpipe}: a stage holds "
                      "more micro-batches than 1F1B has in flight")
endif()
