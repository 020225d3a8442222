# SPDX-License-Identifier: Apache-2.0
# Test discovery for catch_discover_tests(): a drop-in replacement for Catch2 2.13's
# CatchAddTests.cmake (tests/CMakeLists.txt points _CATCH_DISCOVER_TESTS_SCRIPT here). It reads
# the same -D TEST_* variables that Catch.cmake passes. Differences from upstream:
#  * Test names may contain ] [ ; (e.g. "... on (0, 1] ..."). Upstream turns the name list into a
#    CMake list, where an unbalanced bracket swallows every following ';' separator: all later
#    names merge into ONE bogus test whose filter matches nothing -- and Catch2 2.x exits 0 when
#    nothing matches, so those test cases silently never ran. Here the output is split on
#    newlines by hand and every name is written as a bracket argument.
#  * Every test runs with `--warn NoTests`, so a filter that matches no test case FAILS.
#  * --reporter/--out are passed as separate arguments (upstream passes "--reporter x" as one).
cmake_minimum_required(VERSION 3.25)

# Smallest bracket argument [=*[ ... ]=*] that can hold `value` verbatim.
function(_tstitch_bracket out_var value)
  # The closing delimiter must first occur where it is appended: a value ending in "]" would
  # otherwise close "[[...]]]" one character early.
  set(_eq "")
  string(LENGTH "${value}" _length)
  while(TRUE)
    string(FIND "${value}]${_eq}]" "]${_eq}]" _at)
    if(_at EQUAL _length)
      break()
    endif()
    string(APPEND _eq "=")
  endwhile()
  set(${out_var} "[${_eq}[${value}]${_eq}]" PARENT_SCOPE)
endfunction()

# Appends the arguments, each as a bracket argument, to the variable named by out_var.
function(_tstitch_append_args out_var)
  set(_text "${${out_var}}")
  math(EXPR _last "${ARGC} - 1")
  if(_last GREATER_EQUAL 1)
    foreach(_i RANGE 1 ${_last})
      _tstitch_bracket(_arg "${ARGV${_i}}")
      string(APPEND _text " ${_arg}")
    endforeach()
  endif()
  set(${out_var} "${_text}" PARENT_SCOPE)
endfunction()

if(NOT EXISTS "${TEST_EXECUTABLE}")
  message(FATAL_ERROR "Specified test executable '${TEST_EXECUTABLE}' does not exist")
endif()

execute_process(
  COMMAND ${TEST_EXECUTOR} "${TEST_EXECUTABLE}" ${TEST_SPEC} --list-test-names-only
  OUTPUT_VARIABLE _output
  RESULT_VARIABLE _result
  WORKING_DIRECTORY "${TEST_WORKING_DIR}")
# Catch2 2.x exits with the number of listed tests, so 0 means "no tests".
if(NOT _result MATCHES "^[0-9]+$")
  message(FATAL_ERROR "Error running test executable '${TEST_EXECUTABLE}':\n"
                      "  Result: ${_result}\n  Output: ${_output}\n")
elseif(_result EQUAL 0)
  message(WARNING "Test executable '${TEST_EXECUTABLE}' contains no tests!\n")
endif()

set(_fixed_args --warn NoTests ${TEST_EXTRA_ARGS})
if(TEST_REPORTER)
  list(APPEND _fixed_args --reporter "${TEST_REPORTER}")
endif()
if(TEST_OUTPUT_DIR AND NOT IS_ABSOLUTE "${TEST_OUTPUT_DIR}")
  set(TEST_OUTPUT_DIR "${TEST_WORKING_DIR}/${TEST_OUTPUT_DIR}")
endif()
if(TEST_OUTPUT_DIR)
  file(MAKE_DIRECTORY "${TEST_OUTPUT_DIR}")
endif()

set(_script "")
set(_all_names "")
set(_count 0)
set(_remaining "${_output}")
while(NOT _remaining STREQUAL "")
  string(FIND "${_remaining}" "\n" _nl)
  if(_nl EQUAL -1)
    set(_line "${_remaining}")
    set(_remaining "")
  else()
    string(SUBSTRING "${_remaining}" 0 ${_nl} _line)
    math(EXPR _next "${_nl} + 1")
    string(SUBSTRING "${_remaining}" ${_next} -1 _remaining)
  endif()
  string(REGEX REPLACE "\r$" "" _line "${_line}")
  if(_line STREQUAL "")
    continue()
  endif()

  # Catch2 test-spec syntax: escape \ , [ ] so the name is matched literally.
  set(_filter "${_line}")
  foreach(_char "\\" "," "[" "]")
    string(REPLACE "${_char}" "\\${_char}" _filter "${_filter}")
  endforeach()

  set(_name "${TEST_PREFIX}${_line}${TEST_SUFFIX}")
  set(_args ${_fixed_args})
  if(TEST_OUTPUT_DIR)
    string(REGEX REPLACE "[^A-Za-z0-9_]" "_" _clean "${_line}")
    list(APPEND _args --out
         "${TEST_OUTPUT_DIR}/${TEST_OUTPUT_PREFIX}${_clean}${TEST_OUTPUT_SUFFIX}")
  endif()

  set(_cmd "add_test(")
  _tstitch_append_args(_cmd "${_name}")
  _tstitch_append_args(_cmd ${TEST_EXECUTOR} "${TEST_EXECUTABLE}" "${_filter}" ${_args})
  string(APPEND _script "${_cmd})\n")

  set(_cmd "set_tests_properties(")
  _tstitch_append_args(_cmd "${_name}")
  _tstitch_append_args(_cmd PROPERTIES WORKING_DIRECTORY "${TEST_WORKING_DIR}" ${TEST_PROPERTIES})
  string(APPEND _script "${_cmd})\n")

  _tstitch_append_args(_all_names "${_name}")
  math(EXPR _count "${_count} + 1")
endwhile()

if(TEST_LIST)
  string(APPEND _script "set(${TEST_LIST}${_all_names})\n")
endif()

file(WRITE "${CTEST_FILE}" "${_script}")
