# check_split_invariance.cmake: the same step's samples split into one micro-batch of 6 or two of 3 give the same
# dropout masks (they are keyed by global sample and image indices), so the step's loss and gradient norm agree up
# to the order of the float sums. cmake -DKOSMOS=<exe> -DOUT=<prefix> -P check_split_invariance.cmake
foreach(split "6;1" "3;2")
  list(GET split 0 batch)
  list(GET split 1 micro)
  execute_process(COMMAND ${KOSMOS} train --preset tiny --steps 2 --seed 4 --length 48 --batch ${batch}
                          --micro-batches ${micro} --log-every 100 --metrics ${OUT}_${micro}.jsonl
                  RESULT_VARIABLE status OUTPUT_QUIET)
  if(NOT status EQUAL 0)
    message(FATAL_ERROR "kosmos train --batch ${batch} --micro-batches ${micro} exited with ${status}")
  endif()
  file(STRINGS ${OUT}_${micro}.jsonl lines)
  list(GET lines 0 first)
  string(JSON loss_${micro} GET ${first} loss)
  string(JSON norm_${micro} GET ${first} grad_norm)
endforeach()
message(STATUS "loss ${loss_1} vs ${loss_2}, gradient norm ${norm_1} vs ${norm_2}")
execute_process(COMMAND awk "BEGIN { d = ${loss_1} - ${loss_2}; e = ${norm_1} - ${norm_2};
                                     exit !(d * d < 1e-10 * ${loss_1} * ${loss_1} && e * e < 1e-8 * ${norm_1} * ${norm_1}) }"
                RESULT_VARIABLE same)
if(NOT same EQUAL 0)
  message(FATAL_ERROR "splitting the step into micro-batches changed it: loss ${loss_1} vs ${loss_2}, "
                      "gradient norm ${norm_1} vs ${norm_2}")
endif()
