# Runs the CUDA tests' sanitizer subset under compute-sanitizer --tool ${TOOL}; reports itself
# skipped (ctest SKIP_REGULAR_EXPRESSION) when ${PROBE} finds no CUDA device.
execute_process(COMMAND ${PROBE} RESULT_VARIABLE has_device)
if(NOT has_device EQUAL 0)
  message("ORTFLASH_SANITIZER_SKIPPED: no CUDA device")
  return()
endif()
execute_process(COMMAND ${SANITIZER} --tool ${TOOL} --error-exitcode 1
                        ${TEST_BINARY} --gtest_filter=CudaSanitizerSubset.*
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "compute-sanitizer --tool ${TOOL} reported errors (exit ${rc})")
endif()
