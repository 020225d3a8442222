# SPDX-License-Identifier: Apache-2.0
# ctest script: tstitch-sample with a negative (random) seed prints the seed it used and records it
# in the PNG (tEXt "seed"), the JPEG (comment) and the .npy's JSON sidecar; running again with that
# seed gives the same bits.
#   cmake -DCLI=... -DWORK=dir -DMODEL=tiny.safetensors -P check_recorded_seed.cmake
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}")
set(args "${MODEL}" "${MODEL}" --steps 2 --count 2 -q)
execute_process(COMMAND "${CLI}" ${args} -s -1 --png "${WORK}/grid.png" -o "${WORK}/grid.jpg"
                        --npy "${WORK}/random.npy"
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "tstitch-sample -s -1 failed (exit ${rc}):\n${out}${err}")
endif()
if(NOT err MATCHES "seed: ([0-9]+) \\(random\\)")
  message(FATAL_ERROR "no 'seed: N (random)' line:\n${err}")
endif()
set(seed "${CMAKE_MATCH_1}")

# PNG: a tEXt chunk "seed" NUL <seed>, as hex.
file(READ "${WORK}/grid.png" png HEX)
string(HEX "tEXtseed" key_hex)
string(HEX "${seed}" seed_hex)
if(NOT png MATCHES "^89504e47" OR NOT png MATCHES "${key_hex}00${seed_hex}")
  message(FATAL_ERROR "grid.png has no tEXt chunk 'seed' = ${seed}")
endif()
# JPEG: the JPEG signature, then a comment naming the seed.
file(READ "${WORK}/grid.jpg" jpg HEX)
string(HEX "seed: ${seed};" comment_hex)
if(NOT jpg MATCHES "^ffd8fffe" OR NOT jpg MATCHES "${comment_hex}")
  message(FATAL_ERROR "grid.jpg is not a JPEG with a comment naming seed ${seed}")
endif()
# The .npy's sidecar.
file(READ "${WORK}/random.npy.json" sidecar)
string(JSON recorded GET "${sidecar}" seed)
if(NOT recorded STREQUAL seed)
  message(FATAL_ERROR "random.npy.json records seed '${recorded}', the run printed ${seed}")
endif()

# The recorded seed reproduces the run.
execute_process(COMMAND "${CLI}" ${args} --seed "${seed}" --npy "${WORK}/again.npy"
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "tstitch-sample --seed ${seed} failed (exit ${rc}):\n${out}${err}")
endif()
execute_process(COMMAND "${CMAKE_COMMAND}" -E compare_files "${WORK}/random.npy" "${WORK}/again.npy"
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "--seed ${seed} did not reproduce the random-seed run")
endif()
message("seed ${seed}: printed, recorded in PNG, JPEG and sidecar, and reproduced")
