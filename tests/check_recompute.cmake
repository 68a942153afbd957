# check_recompute.cmake: activation recomputation changes memory, not the training function: 3 AdamW steps of the
# small preset (dropout on, same seed and batch) with --recompute none, ffn, attention and layer; every loss,
# gradient norm and final parameter agrees bit for bit (the recomputed forward runs the same ops on the same values
# with the same dropout keys), and the last step's device memory peak falls from each setting to the next.
# cmake -DKOSMOS=<exe> -DCOMPARE=<tool> -DOUT=<prefix> -P check_recompute.cmake
set(common train --preset small --steps 3 --seed 5 --batch 4 --length 128 --log-every 100)
set(previous_peak "")
foreach(recompute none ffn attention layer)
  execute_process(COMMAND ${KOSMOS} ${common} --recompute ${recompute} --metrics ${OUT}_${recompute}.jsonl
                          --save-weights ${OUT}_${recompute}.safetensors
                  RESULT_VARIABLE status OUTPUT_VARIABLE output ERROR_VARIABLE output)
  if(NOT status EQUAL 0)
    message(FATAL_ERROR "the --recompute ${recompute} run exited with ${status}:\n${output}")
  endif()
  if(NOT recompute STREQUAL "none")
    execute_process(COMMAND ${COMPARE} ${OUT}_none.jsonl ${OUT}_${recompute}.jsonl ${OUT}_none.safetensors
                            ${OUT}_${recompute}.safetensors 0
                    RESULT_VARIABLE same)
    if(NOT same EQUAL 0)
      message(FATAL_ERROR "--recompute ${recompute} does not train bit for bit like --recompute none")
    endif()
  endif()
  file(STRINGS ${OUT}_${recompute}.jsonl steps)
  list(GET steps -1 last)
  string(REGEX MATCH "\"device_peak_gib\":([0-9.eE+-]+)" found "${last}")
  if(NOT found)
    message(FATAL_ERROR "no device_peak_gib in the --recompute ${recompute} metrics: ${last}")
  endif()
  set(peak ${CMAKE_MATCH_1})
  message(STATUS "--recompute ${recompute}: device memory peak ${peak} GiB")
  if(NOT previous_peak STREQUAL "" AND NOT peak LESS previous_peak)
    message(FATAL_ERROR "--recompute ${recompute} peaks at ${peak} GiB, not below the previous setting's "
                        "${previous_peak} GiB")
  endif()
  set(previous_peak ${peak})
endforeach()
