# SPDX-License-Identifier: Apache-2.0
# Runner for tstitch_add_compile_fail_test(); usage:
#   cmake -DTSTITCH_CF_PARAMS=<generated parameter file> -P run_compile_fail_test.cmake
cmake_minimum_required(VERSION 3.25)

if(NOT TSTITCH_CF_PARAMS OR NOT EXISTS "${TSTITCH_CF_PARAMS}")
  message(FATAL_ERROR "run_compile_fail_test: TSTITCH_CF_PARAMS not set or missing")
endif()
include("${TSTITCH_CF_PARAMS}")

list(JOIN TSTITCH_CF_COMMAND " " _shown)
execute_process(
  COMMAND ${TSTITCH_CF_COMMAND}
  RESULT_VARIABLE _result
  OUTPUT_VARIABLE _output
  ERROR_VARIABLE _output)

if(_result EQUAL 0)
  message(FATAL_ERROR
    "compile_fail_${TSTITCH_CF_NAME}: the source compiled, but it must NOT compile.\n"
    "command: ${_shown}\n"
    "output:\n${_output}")
endif()

if(NOT _output MATCHES "${TSTITCH_CF_REGEX}")
  message(FATAL_ERROR
    "compile_fail_${TSTITCH_CF_NAME}: compilation failed as expected (result: ${_result}), "
    "but the diagnostics do not match the expected regex.\n"
    "regex: ${TSTITCH_CF_REGEX}\n"
    "command: ${_shown}\n"
    "output:\n${_output}")
endif()

message(STATUS "compile_fail_${TSTITCH_CF_NAME}: failed to compile as expected; "
               "matched \"${CMAKE_MATCH_0}\"")
