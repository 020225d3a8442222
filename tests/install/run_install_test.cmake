# SPDX-License-Identifier: Apache-2.0
# Install test driver (run by CTest, see tests/CMakeLists.txt):
#   cmake -DTSTITCH_BUILD_DIR=<tstitch build> -DTSTITCH_SOURCE_DIR=<tstitch source>
#         -DTSTITCH_CXX_COMPILER=<c++> -DTSTITCH_WORK_DIR=<scratch dir>
#         [-DTSTITCH_GENERATOR=<gen>] [-DTSTITCH_CONFIG=<cfg>] [-DTSTITCH_MODE=consumer|version_mismatch]
#         -P run_install_test.cmake
#
# consumer:         install into <scratch>/prefix, configure tests/install/consumer against it with
#                   find_package(tstitch 0.1 REQUIRED), build it and run the executable; run the
#                   installed tstitch-sample (where built); configure and install a second, unbuilt
#                   tree, and find it.
# version_mismatch: same install, but the consumer asks for tstitch 0.2; configuring must FAIL
#                   because the installed 0.1.0 is not compatible (SameMinorVersion).
cmake_minimum_required(VERSION 3.25)

foreach(_var TSTITCH_BUILD_DIR TSTITCH_SOURCE_DIR TSTITCH_CXX_COMPILER TSTITCH_WORK_DIR)
  if(NOT DEFINED ${_var} OR "${${_var}}" STREQUAL "")
    message(FATAL_ERROR "run_install_test: -D${_var}=... is required")
  endif()
endforeach()
if(NOT TSTITCH_MODE)
  set(TSTITCH_MODE consumer)
endif()
if(NOT TSTITCH_CONFIG)
  set(TSTITCH_CONFIG Release)
endif()

set(_prefix "${TSTITCH_WORK_DIR}/prefix")
set(_consumer_build "${TSTITCH_WORK_DIR}/consumer-build")

# Runs a command; on failure (or unexpected success) stops with its output.
function(_run step expect_failure)
  execute_process(COMMAND ${ARGN}
                  RESULT_VARIABLE _result OUTPUT_VARIABLE _output ERROR_VARIABLE _output)
  list(JOIN ARGN " " _shown)
  if(expect_failure)
    if(_result EQUAL 0)
      message(FATAL_ERROR "${step}: expected to FAIL but succeeded\n"
                          "command: ${_shown}\noutput:\n${_output}")
    endif()
  elseif(NOT _result EQUAL 0)
    message(FATAL_ERROR "${step}: failed (${_result})\ncommand: ${_shown}\noutput:\n${_output}")
  endif()
  set(_last_output "${_output}" PARENT_SCOPE)
endfunction()

file(REMOVE_RECURSE "${TSTITCH_WORK_DIR}")
file(MAKE_DIRECTORY "${TSTITCH_WORK_DIR}")

# (a) install
_run("install" FALSE
     "${CMAKE_COMMAND}" --install "${TSTITCH_BUILD_DIR}" --prefix "${_prefix}"
     --config "${TSTITCH_CONFIG}")

file(GLOB_RECURSE _config_files "${_prefix}/*/tstitchConfig.cmake")
file(GLOB_RECURSE _version_files "${_prefix}/*/tstitchConfigVersion.cmake")
file(GLOB_RECURSE _targets_files "${_prefix}/*/tstitchTargets.cmake")
if(NOT _config_files OR NOT _version_files OR NOT _targets_files)
  message(FATAL_ERROR "install: tstitchConfig.cmake / tstitchConfigVersion.cmake / "
                      "tstitchTargets.cmake missing under ${_prefix}")
endif()

# (b) configure the consumer against the scratch prefix only (no package registries).
if(TSTITCH_MODE STREQUAL "version_mismatch")
  set(_requested 0.2)
  set(_expect_failure TRUE)
else()
  set(_requested 0.1)
  set(_expect_failure FALSE)
endif()
set(_configure
    "${CMAKE_COMMAND}"
    -S "${TSTITCH_SOURCE_DIR}/tests/install/consumer"
    -B "${_consumer_build}"
    "-DCMAKE_CXX_COMPILER=${TSTITCH_CXX_COMPILER}"
    "-DCMAKE_PREFIX_PATH=${_prefix}"
    "-DCMAKE_BUILD_TYPE=${TSTITCH_CONFIG}"
    "-DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF"
    "-DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF"
    "-DTSTITCH_REQUESTED_VERSION=${_requested}")
if(TSTITCH_GENERATOR)
  list(APPEND _configure -G "${TSTITCH_GENERATOR}")
endif()
_run("configure consumer (find_package(tstitch ${_requested}))" ${_expect_failure} ${_configure})

if(TSTITCH_MODE STREQUAL "version_mismatch")
  # It must fail because of the version, not for some unrelated reason.
  if(NOT _last_output MATCHES "compatible with requested version \"0\\.2\""
     OR NOT _last_output MATCHES "0\\.1\\.0")
    message(FATAL_ERROR "configure consumer: failed, but not with the expected version "
                        "mismatch (wanted 0.2, installed 0.1.0).\noutput:\n${_last_output}")
  endif()
  message(STATUS "install_version_mismatch: find_package(tstitch 0.2) rejected 0.1.0 as expected")
  return()
endif()

# The package must have come from the scratch prefix, not from anywhere else on the machine.
file(STRINGS "${_consumer_build}/CMakeCache.txt" _dir_line REGEX "^tstitch_DIR:")
string(REGEX REPLACE "^tstitch_DIR:[A-Z]+=" "" _found_dir "${_dir_line}")
file(REAL_PATH "${_prefix}" _real_prefix)
file(REAL_PATH "${_found_dir}" _real_found)
string(FIND "${_real_found}" "${_real_prefix}/" _at)
if(NOT _at EQUAL 0)
  message(FATAL_ERROR "configure consumer: tstitch was found at '${_found_dir}', "
                      "not under the scratch prefix '${_prefix}'")
endif()

# (c) build
_run("build consumer" FALSE
     "${CMAKE_COMMAND}" --build "${_consumer_build}" --config "${TSTITCH_CONFIG}")

# (d) run
file(GLOB_RECURSE _exe LIST_DIRECTORIES FALSE
     "${_consumer_build}/tstitch_consumer" "${_consumer_build}/tstitch_consumer.exe")
list(FILTER _exe EXCLUDE REGEX "/CMakeFiles/")
if(NOT _exe)
  message(FATAL_ERROR "build consumer: no tstitch_consumer executable in ${_consumer_build}")
endif()
list(GET _exe 0 _exe)
_run("run consumer" FALSE "${_exe}")
# The CUDA consumer, built when the package has tstitch::cuda_dit.
file(GLOB_RECURSE _cuda_exe LIST_DIRECTORIES FALSE "${_consumer_build}/tstitch_cuda_consumer")
list(FILTER _cuda_exe EXCLUDE REGEX "/CMakeFiles/")
if(_cuda_exe)
  list(GET _cuda_exe 0 _cuda_exe)
  _run("run CUDA consumer" FALSE "${_cuda_exe}")
  message(STATUS "install_consumer: ${_last_output}")
endif()
# The MPI consumer, built when the package has tstitch::mpi (run without a launcher).
file(GLOB_RECURSE _mpi_exe LIST_DIRECTORIES FALSE "${_consumer_build}/tstitch_mpi_consumer")
list(FILTER _mpi_exe EXCLUDE REGEX "/CMakeFiles/")
if(_mpi_exe)
  list(GET _mpi_exe 0 _mpi_exe)
  _run("run MPI consumer" FALSE "${_mpi_exe}")
  message(STATUS "install_consumer: ${_last_output}")
endif()
message(STATUS "install_consumer: installed, found (${_found_dir}), built and ran ${_exe}")

# (e) The command line, where the build has it, runs from the prefix on the tiny test models.
if(EXISTS "${TSTITCH_BUILD_DIR}/apps/tstitch-sample")
  set(_installed_cli "${_prefix}/bin/tstitch-sample")
  if(NOT EXISTS "${_installed_cli}")
    message(FATAL_ERROR "install: ${_installed_cli} missing (the build has apps/tstitch-sample)")
  endif()
  set(_tiny "${TSTITCH_SOURCE_DIR}/tests/data/dit/tiny_dit_p4.safetensors")
  _run("run the installed tstitch-sample" FALSE
       "${_installed_cli}" "${_tiny}" "${_tiny}" --steps 2 --count 2 -q -t 1
       -o "${TSTITCH_WORK_DIR}/installed_cli.png")
  if(NOT _last_output MATCHES "wrote 2 samples to .*installed_cli\\.png"
     OR NOT EXISTS "${TSTITCH_WORK_DIR}/installed_cli.png")
    message(FATAL_ERROR "the installed tstitch-sample wrote no grid:\n${_last_output}")
  endif()
  message(STATUS "install_consumer: ran ${_installed_cli}")
endif()

# (f) Configure and install with nothing built (the CUDA DiT library included, where nvcc makes
# it part of the build): the install must succeed, and the package must still be found.
set(_unbuilt "${TSTITCH_WORK_DIR}/unbuilt")
set(_unbuilt_configure
    "${CMAKE_COMMAND}" -S "${TSTITCH_SOURCE_DIR}" -B "${_unbuilt}/build"
    "-DCMAKE_CXX_COMPILER=${TSTITCH_CXX_COMPILER}" "-DCMAKE_BUILD_TYPE=${TSTITCH_CONFIG}"
    -DTSTITCH_BUILD_TESTS=OFF -DTSTITCH_BUILD_EXAMPLES=OFF -DTSTITCH_BUILD_BENCHMARKS=OFF)
if(TSTITCH_GENERATOR)
  list(APPEND _unbuilt_configure -G "${TSTITCH_GENERATOR}")
endif()
_run("configure tstitch (not built)" FALSE ${_unbuilt_configure})
_run("install tstitch without building it" FALSE
     "${CMAKE_COMMAND}" --install "${_unbuilt}/build" --prefix "${_unbuilt}/prefix"
     --config "${TSTITCH_CONFIG}")
set(_unbuilt_consumer
    "${CMAKE_COMMAND}" -S "${TSTITCH_SOURCE_DIR}/tests/install/consumer"
    -B "${_unbuilt}/consumer-build" "-DCMAKE_CXX_COMPILER=${TSTITCH_CXX_COMPILER}"
    "-DCMAKE_PREFIX_PATH=${_unbuilt}/prefix" "-DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF"
    "-DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF")
if(TSTITCH_GENERATOR)
  list(APPEND _unbuilt_consumer -G "${TSTITCH_GENERATOR}")
endif()
_run("configure the consumer against the unbuilt install" FALSE ${_unbuilt_consumer})
message(STATUS "install_consumer: an unbuilt configure installs and is found")
