# SPDX-License-Identifier: Apache-2.0
# tstitch-sample and the habits of stable-diffusion.cpp and diffusers users: aliases that mean the
# same, hints or "unknown option" otherwise, the seed in use printed and recorded, the output
# format following the extension, the thread count, the progress line's time left and the
# guidance default. Included from tests/cli/CMakeLists.txt (uses _cli, _pair, _work, _close and
# tstitch_cli_error).

# Aliases give the same bits as the options they stand for.
set(_alias ${_pair} --fraction 0.4 --steps 3 --count 3 -q)
add_test(NAME cli_alias_guidance COMMAND ${_cli} ${_alias} --guidance 2 --seed 5
  --npy "${_work}/alias_guidance.npy")
add_test(NAME cli_alias_cfg_scale COMMAND ${_cli} ${_alias} --cfg-scale 2 -s 5
  -o "${_work}/alias_cfg_scale.npy")
add_test(NAME cli_alias_solver COMMAND ${_cli} ${_alias} --solver kdpm2
  --npy "${_work}/alias_solver.npy")
add_test(NAME cli_alias_sampling_method COMMAND ${_cli} ${_alias} --sampling-method dpm2
  --npy "${_work}/alias_sampling_method.npy")
add_test(NAME cli_alias_steps COMMAND ${_cli} ${_pair} --fraction 0.4 --num-inference-steps 3
  -b 3 -q --npy "${_work}/alias_steps.npy")
add_test(NAME cli_alias_plain COMMAND ${_cli} ${_alias} --npy "${_work}/alias_plain.npy")
set_tests_properties(cli_alias_guidance cli_alias_cfg_scale cli_alias_solver
  cli_alias_sampling_method cli_alias_steps cli_alias_plain PROPERTIES
  PASS_REGULAR_EXPRESSION "wrote 3 samples" FIXTURES_SETUP cli_alias_files)
foreach(_pair_of_files "alias_guidance;alias_cfg_scale" "alias_solver;alias_sampling_method"
        "alias_plain;alias_steps")
  list(GET _pair_of_files 0 _a)
  list(GET _pair_of_files 1 _b)
  add_test(NAME cli_same_${_b}
    COMMAND "${CMAKE_COMMAND}" -E compare_files "${_work}/${_a}.npy" "${_work}/${_b}.npy")
  set_tests_properties(cli_same_${_b} PROPERTIES FIXTURES_REQUIRED cli_alias_files)
endforeach()
# The sampling method is really the solver: DDIM differs from KDPM2.
add_test(NAME cli_sampling_method_differs
  COMMAND ${_close} "${_work}/alias_sampling_method.npy" "${_work}/alias_plain.npy" 1e-3
          --expect-different)
set_tests_properties(cli_sampling_method_differs PROPERTIES FIXTURES_REQUIRED cli_alias_files)
# ddim_trailing: DDIM on trailing timesteps.
add_test(NAME cli_sampling_method_trailing COMMAND ${_cli} ${_alias} --sampling-method ddim_trailing
  --npy "${_work}/trailing.npy")
set_tests_properties(cli_sampling_method_trailing PROPERTIES
  PASS_REGULAR_EXPRESSION "wrote 3 samples")
tstitch_cli_error(cli_sampling_method_unknown
  "--sampling-method = 'ipndm_v': stable-diffusion.cpp's names with a tstitch solver are .*dpm2"
  ${_pair} --sampling-method ipndm_v)
tstitch_cli_error(cli_sampling_method_and_solver "excludes" ${_pair} --sampling-method euler
  --solver ddim)

# Options of other tools that mean something else here: "unknown option" with a hint.
tstitch_cli_error(cli_unknown_prompt
  "unknown option: --prompt.*class-conditional: use --labels; see --help" ${_pair} --prompt cat)
tstitch_cli_error(cli_unknown_scheduler "unknown option: --scheduler.*--sigmas" ${_pair}
  --scheduler karras)

# The seed: a negative one is random, printed, recorded in every output, and reproduces the run.
add_test(NAME cli_seed_random
  COMMAND "${CMAKE_COMMAND}" "-DCLI=${_cli}" "-DWORK=${_work}/seed_random"
          "-DMODEL=${_p4}" -P "${CMAKE_CURRENT_SOURCE_DIR}/check_recorded_seed.cmake")

# The output format follows the extension; a name of another format is refused.
tstitch_cli_error(cli_png_named_jpg "--png = '.*x.jpg': a JPEG name for a PNG output; use -o"
  ${_pair} --png ${_work}/x.jpg)
tstitch_cli_fails(cli_npy_named_png "--npy = '.*x.png': a PNG name for a .npy output"
  ${_cli} ${_pair} --npy ${_work}/x.png)
tstitch_cli_fails(cli_output_unknown_extension
  "-o = '.*x.bmp': the format follows the extension; use .png, .jpg, .jpeg or .npy"
  ${_cli} ${_pair} -o ${_work}/x.bmp)

# Threads per model: the count in use is printed (queried from the model), bad values refused.
add_test(NAME cli_threads COMMAND ${_cli} ${_pair} --steps 1 --count 4 -t 3 -q
  --npy "${_work}/threads.npy")
set_tests_properties(cli_threads PROPERTIES
  PASS_REGULAR_EXPRESSION "threads: 3 per model \\(--threads\\)")
add_test(NAME cli_threads_default COMMAND ${_cli} ${_pair} --steps 1 --count 1 -q
  --npy "${_work}/threads_default.npy")
set_tests_properties(cli_threads_default PROPERTIES
  PASS_REGULAR_EXPRESSION "threads: 1 per model \\(OpenMP's default") # OMP_NUM_THREADS=1 below
tstitch_cli_error(cli_threads_negative "--threads = -1: must be >= 0" ${_pair} --threads=-1)
tstitch_cli_error(cli_threads_text "--threads" ${_pair} -t two)
tstitch_cli_error(cli_threads_cuda "--threads = 2: the CPU models' thread count" ${_pair}
  --device cuda -t 2)

# Progress: the time left, and the guidance in use with where it came from.
add_test(NAME cli_progress_time_left COMMAND ${_cli} ${_pair} --steps 2 --count 2
  --npy "${_work}/progress.npy")
set_tests_properties(cli_progress_time_left PROPERTIES PASS_REGULAR_EXPRESSION
  "guidance: 1.25 \\(the default, recommended for the shipped Fashion pair.*step 2/2 .* s left")
add_test(NAME cli_guidance_given COMMAND ${_cli} ${_pair} --steps 1 --count 1 --guidance 1 -q
  --npy "${_work}/guidance_given.npy")
set_tests_properties(cli_guidance_given PROPERTIES PASS_REGULAR_EXPRESSION "guidance: 1 \\(off\\)")

# A special file as the .npy output gets no sidecar (none can be made beside /dev/null).
if(EXISTS /dev/null)
  add_test(NAME cli_npy_dev_null COMMAND ${_cli} ${_pair} --steps 1 --count 1 -q --npy /dev/null)
  set_tests_properties(cli_npy_dev_null PROPERTIES
    PASS_REGULAR_EXPRESSION "wrote 1 samples to /dev/null")
endif()
