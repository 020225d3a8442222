# SPDX-License-Identifier: Apache-2.0
# tstitch-sample --npz (included from tests/cli/CMakeLists.txt, whose variables it uses): the
# evaluation-set .npz of the Fashion pair loads in numpy as uint8 [N, 32, 32, 1] (the models make
# the 28x28 images padded to 32x32, as they were trained) and equals DiT's conversion of the same
# run's float32 .npy, and --crop 28 keeps its centred 28x28 items; -o with an .npz name writes the
# same bytes. The numpy checks are skipped (exit 77) without numpy for /usr/bin/python3.
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
  # --crop 28: Fashion-MNIST's 28x28 items, the centre of the same run's samples.
  add_test(NAME cli_npz_crop
    COMMAND ${_cli} ${_npz_run} --crop 28 --npz "${_work}/fashion_28.npz"
            --npy "${_work}/fashion_28.npy")
  set_tests_properties(cli_npz_crop PROPERTIES PASS_REGULAR_EXPRESSION "wrote 5 samples"
    FIXTURES_SETUP cli_npz_crop_files)
  add_test(NAME cli_npz_crop_numpy
    COMMAND /usr/bin/python3 "${CMAKE_CURRENT_SOURCE_DIR}/check_npz.py" "${_work}/fashion_28.npz"
            "${_work}/fashion_28.npy" 5 28 28 1)
  set_tests_properties(cli_npz_crop_numpy PROPERTIES SKIP_RETURN_CODE 77
    FIXTURES_REQUIRED cli_npz_crop_files)
endif()
tstitch_cli_error(cli_npz_crop_needs_npz "--crop = '28': crops the 8-bit sample outputs" ${_pair}
  --steps 2 --count 1 --crop 28)
tstitch_cli_error(cli_npz_crop_too_large "--crop = '40x28': larger than the models' 32x32 images"
  ${_fashion} --steps 2 --count 1 --crop 40x28 --npz "${_work}/crop.npz")
tstitch_cli_error(cli_npz_crop_not_a_size "--crop = '28y': must be a size in pixels" ${_pair}
  --steps 2 --count 1 --crop 28y --npz "${_work}/crop.npz")
tstitch_cli_error(cli_npz_wrong_extension "--npz = '.*x\\.npy': a \\.npy name for a \\.npz output"
  ${_pair} --steps 2 --count 1 --npz "${_work}/x.npy")
