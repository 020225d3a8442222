# SPDX-License-Identifier: Apache-2.0
# ctest script: runs tstitch-sample with ARGS (|-separated) on the GPU (--device cuda) and on the
# CPU, and requires the two .npy outputs to agree within relative L2 1e-2 (tstitch_npy_close):
# the same Philox noise and stitching, bf16 weights and GEMM inputs on the GPU. Prints SKIPPED
# (ctest: Skipped) where there is no CUDA device or the CLI was built without CUDA, unless the
# environment sets TSTITCH_REQUIRE_CUDA (benchmarks/gpu/run.sh does on a GPU machine: there a
# missing device is a failure, not a skip).
#   cmake -DCLI=... -DCLOSE=... -DWORK=dir -DARGS='a|b|c' -P cli_cuda_check.cmake
string(REPLACE "|" ";" args "${ARGS}")
file(MAKE_DIRECTORY "${WORK}")
execute_process(COMMAND "${CLI}" ${args} --device cuda --quiet --npy "${WORK}/cuda.npy"
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  if(err MATCHES "no CUDA device available|built without CUDA" AND NOT DEFINED ENV{TSTITCH_REQUIRE_CUDA})
    message("SKIPPED: ${err}")
    return()
  endif()
  message(FATAL_ERROR "tstitch-sample --device cuda failed (exit ${rc}):\n${out}${err}")
endif()
message("--device cuda:\n${err}${out}")
execute_process(COMMAND "${CLI}" ${args} --quiet --npy "${WORK}/cpu.npy"
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "tstitch-sample --device cpu failed (exit ${rc}):\n${out}${err}")
endif()
message("--device cpu:\n${err}${out}")
execute_process(COMMAND "${CLOSE}" "${WORK}/cpu.npy" "${WORK}/cuda.npy" 1e-2
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message("cuda against cpu: ${out}${err}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the GPU samples differ from the CPU samples")
endif()
