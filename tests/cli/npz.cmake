# SPDX-License-Identifier: Apache-2.0
# tstitch-sample --npz (included from tests/cli/CMakeLists.txt, whose variables it uses): the
# evaluation-set .npz of the Fashion pair loads in numpy as uint8 [N, 32, 32, 1] (the models make
# the 28x28 images padded to 32x32, as they were trained) and equals DiT's conversion of the same
# run's float32 .npy; -o with an .npz name writes the same bytes. The numpy check is skipped
# (exit 77) without numpy for /usr/bin/python3.
set(_fashion "${PROJECT_SOURCE_DIR}/models/fashion_dit_s.safetensors"
             "${PROJECT_SOURCE_DIR}/models/fashion_dit_l.safetensors")
set(_npz_run ${_fashion} --fraction 0.5 --steps 3 --count 5 --batch 3 --seed 5 -q)
add_test(NAME cli_npz_write
  COMMAND ${_cli} ${_npz_run} --npz "${_work}/fashion.npz" --npy "${_work}/fashion_npz.npy")
add_test(NAME cli_npz_by_extension COMMAND ${_cli} ${_npz_run} -o "${_work}/fashion_o.npz")
set_tests_properties(cli_npz_write cli_npz_by_extension PROPERTIES
  PASS_REGULAR_EXPRESSION "wrote 5 samples" FIXTURES_SETUP cli_npz_files)
add_test(NAME cli_npz_same_bytes
  COMMAND "${CMAKE_COMMAND}" -E compare_files "${_work}/fashion.npz" "${_work}/fashion_o.npz")
set_tests_properties(cli_npz_same_bytes PROPERTIES FIXTURES_REQUIRED cli_npz_files)
if(EXISTS /usr/bin/python3)
  add_test(NAME cli_npz_numpy
    COMMAND /usr/bin/python3 "${CMAKE_CURRENT_SOURCE_DIR}/check_npz.py" "${_work}/fashion.npz"
            "${_work}/fashion_npz.npy" 5 32 32 1)
  set_tests_properties(cli_npz_numpy PROPERTIES SKIP_RETURN_CODE 77
    FIXTURES_REQUIRED cli_npz_files)
endif()
tstitch_cli_error(cli_npz_wrong_extension "--npz = '.*x\\.npy': a \\.npy name for a \\.npz output"
  ${_pair} --steps 2 --count 1 --npz "${_work}/x.npy")
