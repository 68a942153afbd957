# check_deterministic.cmake: two `kosmos train` runs with one seed (dropout on, two micro-batches) must give the same
# loss and gradient norm at every step. cmake -DKOSMOS=<exe> -DOUT=<prefix> -P check_deterministic.cmake
foreach(run a b)
  execute_process(COMMAND ${KOSMOS} train --preset tiny --steps 12 --seed 11 --micro-batches 2 --batch 3
                          --log-every 100 --metrics ${OUT}_${run}.jsonl
                  RESULT_VARIABLE status OUTPUT_QUIET)
  if(NOT status EQUAL 0)
    message(FATAL_ERROR "kosmos train (run ${run}) exited with ${status}")
  endif()
  file(STRINGS ${OUT}_${run}.jsonl lines_${run})
  set(values_${run} "")
  foreach(line IN LISTS lines_${run})
    string(JSON loss GET ${line} loss)
    string(JSON norm GET ${line} grad_norm)
    list(APPEND values_${run} "${loss}/${norm}")
  endforeach()
endforeach()
list(LENGTH values_a count)
if(NOT count EQUAL 12 OR NOT "${values_a}" STREQUAL "${values_b}")
  message(FATAL_ERROR "the two runs differ:\n${values_a}\n${values_b}")
endif()
message(STATUS "12 identical steps")
