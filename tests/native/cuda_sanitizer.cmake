# Runs the CUDA tests' sanitizer subset under compute-sanitizer --tool ${TOOL}; reports itself
# skipped (ctest SKIP_REGULAR_EXPRESSION) when ${PROBE} finds no CUDA device. Passing needs more than
# exit 0: the tool's summary of 0 errors and a subset that ran (a device the sanitizer refuses,
# as under some virtual machines, makes the tests skip themselves, and that is no pass).
execute_process(COMMAND ${PROBE} RESULT_VARIABLE has_device)
if(NOT has_device EQUAL 0)
  message("ORTFLASH_SANITIZER_SKIPPED: no CUDA device")
  return()
endif()
execute_process(COMMAND ${SANITIZER} --tool ${TOOL} --error-exitcode 1
                        ${TEST_BINARY} --gtest_filter=CudaSanitizerSubset.*
                RESULT_VARIABLE rc OUTPUT_VARIABLE output ERROR_VARIABLE output)
message("${output}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "compute-sanitizer --tool ${TOOL} reported errors (exit ${rc})")
endif()
# memcheck ends with "ERROR SUMMARY: 0 errors", racecheck with "RACECHECK SUMMARY: 0 hazards displayed (0 errors, ...".
if(NOT output MATCHES "(ERROR SUMMARY: 0 errors|RACECHECK SUMMARY: 0 hazards displayed \\(0 errors)")
  message(FATAL_ERROR "compute-sanitizer --tool ${TOOL} printed no summary of 0 errors")
endif()
if(output MATCHES "\\[  SKIPPED \\]" OR NOT output MATCHES "\\[  PASSED  \\] [1-9]")
  message(FATAL_ERROR "under compute-sanitizer --tool ${TOOL} the sanitizer subset did not run (skipped or no test passed)")
endif()
