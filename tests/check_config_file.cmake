# check_config_file.cmake: --print-config writes the effective options as TOML; --config reads them back, and the
# command line overrides the file. An option on unless --no-NAME is given is written as on (CLI11 would write a
# flag it was not given as "false", which read back turns it off), and as off where --no-NAME was given.
# cmake -DKOSMOS=<exe> -DOUT=<prefix> -P check_config_file.cmake
execute_process(COMMAND ${KOSMOS} train --preset tiny --steps 7 --seed 5 --log-every 1 --print-config
                RESULT_VARIABLE status OUTPUT_VARIABLE printed)
if(NOT status EQUAL 0 OR NOT printed MATCHES "\\[train\\]" OR NOT printed MATCHES "steps=7" OR NOT printed MATCHES "seed=5")
  message(FATAL_ERROR "--print-config exited with ${status} and printed:\n${printed}")
endif()
file(WRITE ${OUT}.toml "${printed}")
execute_process(COMMAND ${KOSMOS} train --config ${OUT}.toml --steps 3 --metrics ${OUT}.jsonl
                RESULT_VARIABLE status OUTPUT_VARIABLE log)
file(STRINGS ${OUT}.jsonl steps)
list(LENGTH steps count)
if(NOT status EQUAL 0 OR NOT count EQUAL 3 OR NOT log MATCHES "seed 5")
  message(FATAL_ERROR "--config with --steps 3 exited with ${status}, ran ${count} steps (expected 3, seed 5):\n${log}")
endif()
foreach(flags "train;overlap-reduce=true" "train;--no-overlap-reduce;overlap-reduce=false"
              "data;prepare;--out;${OUT}_unused;--stream;a=unused.jsonl;progress=true"
              "data;prepare;--out;${OUT}_unused;--stream;a=unused.jsonl;--no-progress;progress=false")
  list(POP_BACK flags expected)
  execute_process(COMMAND ${KOSMOS} ${flags} --print-config RESULT_VARIABLE status OUTPUT_VARIABLE printed)
  if(NOT status EQUAL 0 OR NOT printed MATCHES "\n${expected}\n")
    message(FATAL_ERROR "kosmos ${flags} --print-config exited with ${status}; expected ${expected} in:\n${printed}")
  endif()
endforeach()
