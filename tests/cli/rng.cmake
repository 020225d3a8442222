# SPDX-License-Identifier: Apache-2.0
# tstitch-sample --rng (included from tests/cli/CMakeLists.txt, whose variables it uses): a bad
# name and a torch generator with --device cuda fail naming the value; torch-cpu is reproducible
# and its images differ from Philox's and from torch-cuda's (the flag reaches the sampler). The
# bits themselves are checked against python3-torch by test_torch_rng.cpp.
tstitch_cli_error(cli_rng_unknown "--rng = 'mt19937': must be philox, torch-cpu or torch-cuda"
  ${_pair} --steps 2 --count 1 --rng mt19937)
tstitch_cli_error(cli_rng_torch_on_cuda "--rng = 'torch-cpu'.*--device cpu"
  ${_pair} --steps 2 --count 1 --rng torch-cpu --device cuda)

set(_rng_run ${_pair} --fraction 0.5 --steps 3 --count 2 --solver ddpm --seed 7)
foreach(_rng IN ITEMS philox torch-cpu torch-cuda)
  add_test(NAME cli_rng_${_rng}
    COMMAND ${_cli} ${_rng_run} --rng ${_rng} --npy "${_work}/rng_${_rng}.npy")
endforeach()
add_test(NAME cli_rng_torch-cpu_again
  COMMAND ${_cli} ${_rng_run} --rng torch-cpu --npy "${_work}/rng_torch-cpu_again.npy")
set_tests_properties(cli_rng_philox cli_rng_torch-cpu cli_rng_torch-cuda cli_rng_torch-cpu_again
  PROPERTIES PASS_REGULAR_EXPRESSION "wrote 2 samples" FIXTURES_SETUP cli_rng_files)
add_test(NAME cli_rng_torch_cpu_reproducible
  COMMAND "${CMAKE_COMMAND}" -E compare_files "${_work}/rng_torch-cpu.npy"
          "${_work}/rng_torch-cpu_again.npy")
add_test(NAME cli_rng_torch_cpu_not_philox
  COMMAND ${_close} "${_work}/rng_torch-cpu.npy" "${_work}/rng_philox.npy" 1e-2 --expect-different)
add_test(NAME cli_rng_torch_cpu_not_cuda
  COMMAND ${_close} "${_work}/rng_torch-cpu.npy" "${_work}/rng_torch-cuda.npy" 1e-2
          --expect-different)
set_tests_properties(cli_rng_torch_cpu_reproducible cli_rng_torch_cpu_not_philox
  cli_rng_torch_cpu_not_cuda PROPERTIES FIXTURES_REQUIRED cli_rng_files)
