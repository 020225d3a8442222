# SPDX-License-Identifier: Apache-2.0
# Subproject test driver (run by CTest, see tests/CMakeLists.txt):
#   cmake -DTSTITCH_BUILD_DIR=<tstitch build> -DTSTITCH_SOURCE_DIR=<tstitch source>
#         -DTSTITCH_CXX_COMPILER=<c++> -DTSTITCH_WORK_DIR=<scratch dir>
#         -DTSTITCH_MODE=add_subdirectory|fetchcontent [-DTSTITCH_GENERATOR=<gen>]
#         [-DTSTITCH_CONFIG=<cfg>] [-DTSTITCH_OPTIONS=<VAR=value|VAR=value...>]
#         [-DTSTITCH_CUDA_COMPILER=<nvcc>] -P run_subproject_test.cmake
# TSTITCH_OPTIONS: the build's component options (TSTITCH_WITH_*, TSTITCH_ENABLE_CUDA), '|'
# between them, given to tstitch in the consumer so that it has the same components.
#
# Installs the build under test into <scratch>/prefix and reads the names of its package's
# targets (tstitch::tstitch, tstitch::io, ...) off the exported target files; then configures
# tests/install/subproject, which takes tstitch from the source tree (add_subdirectory, or
# FetchContent from the local path) and checks that those targets exist under the same names and
# that tstitch's tests, examples and benchmarks stay out; builds its program and runs it.
cmake_minimum_required(VERSION 3.25)

foreach(_var TSTITCH_BUILD_DIR TSTITCH_SOURCE_DIR TSTITCH_CXX_COMPILER TSTITCH_WORK_DIR
             TSTITCH_MODE)
  if(NOT DEFINED ${_var} OR "${${_var}}" STREQUAL "")
    message(FATAL_ERROR "run_subproject_test: -D${_var}=... is required")
  endif()
endforeach()
if(NOT TSTITCH_CONFIG)
  set(TSTITCH_CONFIG Release)
endif()

function(_run step)
  execute_process(COMMAND ${ARGN}
                  RESULT_VARIABLE _result OUTPUT_VARIABLE _output ERROR_VARIABLE _output)
  if(NOT _result EQUAL 0)
    list(JOIN ARGN " " _shown)
    message(FATAL_ERROR "${step}: failed (${_result})\ncommand: ${_shown}\noutput:\n${_output}")
  endif()
  set(_last_output "${_output}" PARENT_SCOPE)
endfunction()

file(REMOVE_RECURSE "${TSTITCH_WORK_DIR}")
file(MAKE_DIRECTORY "${TSTITCH_WORK_DIR}")

# (a) What find_package(tstitch) gives: the targets of the installed package's export files.
set(_prefix "${TSTITCH_WORK_DIR}/prefix")
_run("install" "${CMAKE_COMMAND}" --install "${TSTITCH_BUILD_DIR}" --prefix "${_prefix}"
     --config "${TSTITCH_CONFIG}")
file(GLOB_RECURSE _exports "${_prefix}/*/tstitch*Targets.cmake")
set(_expected "")
foreach(_file IN LISTS _exports)
  file(STRINGS "${_file}" _lines REGEX "^add_library\\(tstitch::[A-Za-z0-9_]+ ")
  foreach(_line IN LISTS _lines)
    string(REGEX REPLACE "^add_library\\((tstitch::[A-Za-z0-9_]+) .*" "\\1" _name "${_line}")
    list(APPEND _expected "${_name}")
  endforeach()
endforeach()
if(NOT "tstitch::tstitch" IN_LIST _expected)
  message(FATAL_ERROR "install: no tstitch::tstitch in the exported targets (${_exports})")
endif()

# (b) The consumer, with tstitch inside its build.
set(_build "${TSTITCH_WORK_DIR}/build")
set(_configure "${CMAKE_COMMAND}" -S "${TSTITCH_SOURCE_DIR}/tests/install/subproject"
    -B "${_build}" "-DCMAKE_CXX_COMPILER=${TSTITCH_CXX_COMPILER}"
    "-DCMAKE_BUILD_TYPE=${TSTITCH_CONFIG}" "-DTSTITCH_CONSUMER_MODE=${TSTITCH_MODE}"
    "-DTSTITCH_CONSUMED_SOURCE_DIR=${TSTITCH_SOURCE_DIR}" "-DTSTITCH_EXPECTED_TARGETS=${_expected}")
# The same components as the build under test (CUDA's are found, not probed, when it had them).
if(TSTITCH_OPTIONS)
  string(REPLACE "|" ";" _options "${TSTITCH_OPTIONS}")
  foreach(_option IN LISTS _options)
    list(APPEND _configure "-D${_option}")
  endforeach()
endif()
if(TSTITCH_CUDA_COMPILER)
  list(APPEND _configure "-DCMAKE_CUDA_COMPILER=${TSTITCH_CUDA_COMPILER}")
endif()
if(TSTITCH_GENERATOR)
  list(APPEND _configure -G "${TSTITCH_GENERATOR}")
endif()
_run("configure the ${TSTITCH_MODE} consumer" ${_configure})
string(REGEX MATCH "${TSTITCH_MODE}: tstitch gives [^\n]*" _gives "${_last_output}")
message(STATUS "${_gives}")

# (c) Build only the consumer's program (not tstitch's CUDA library, which add_subdirectory puts
# in the consumer's default build), and run it.
_run("build the ${TSTITCH_MODE} consumer" "${CMAKE_COMMAND}" --build "${_build}"
     --config "${TSTITCH_CONFIG}" --target tstitch_consumer)
file(GLOB_RECURSE _exe LIST_DIRECTORIES FALSE "${_build}/tstitch_consumer"
     "${_build}/tstitch_consumer.exe")
list(FILTER _exe EXCLUDE REGEX "/CMakeFiles/")
if(NOT _exe)
  message(FATAL_ERROR "build: no tstitch_consumer executable in ${_build}")
endif()
list(GET _exe 0 _exe)
_run("run the ${TSTITCH_MODE} consumer" "${_exe}")
message(STATUS "subproject_${TSTITCH_MODE}: found ${_expected}; built and ran ${_exe}")
