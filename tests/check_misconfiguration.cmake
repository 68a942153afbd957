# check_misconfiguration.cmake: a bad layout or command line under mpirun exits non-zero within the timeout, and
# every rank prints the one error naming the problem. cmake -DKOSMOS=<exe> -DMPIEXEC=<mpirun> -DRANKS=6
#   "-DARGS=--pp;4" "-DEXPECT=does not divide the 6 ranks" ["-DSUBCOMMAND=generate"] -P check_misconfiguration.cmake
# (SUBCOMMAND defaults to `train --preset tiny --steps 1`; ARGS follow it.)
if(NOT DEFINED SUBCOMMAND OR SUBCOMMAND STREQUAL "")
  set(SUBCOMMAND train --preset tiny --steps 1)
endif()
execute_process(COMMAND ${MPIEXEC} --allow-run-as-root --oversubscribe -np ${RANKS} env OMP_NUM_THREADS=1
                        ${KOSMOS} ${SUBCOMMAND} ${ARGS}
                RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 120)
if(status EQUAL 0)
  message(FATAL_ERROR "${ARGS} on ${RANKS} ranks exited with 0; expected an error:\n${out}${err}")
endif()
if(NOT status MATCHES "^[0-9]+$")
  message(FATAL_ERROR "${ARGS} on ${RANKS} ranks did not exit: ${status}")
endif()
string(REGEX MATCHALL "\\[rank [0-9]+[^]]*\\] error: [^[]*${EXPECT}" reports "${out}${err}")
list(LENGTH reports count)
if(NOT count EQUAL RANKS)
  message(FATAL_ERROR "expected ${RANKS} ranks to report '${EXPECT}', found ${count}:\n${out}${err}")
endif()
message(STATUS "${ARGS}: every one of the ${RANKS} ranks reported '${EXPECT}' and the run exited with ${status}")
