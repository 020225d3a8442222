#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# One case of tstitch-sample's MPI tests (see CMakeLists.txt here):
#   run_mpi_cli.sh CASE TSTITCH_SAMPLE MODELS_DIR WORK_DIR MPIEXEC PYTHON3
set -u
case_name=$1 sample=$2 models=$3 work=$4 mpiexec=$5 python=$6
rm -rf "$work" && mkdir -p "$work" && cd "$work" || exit 1
# The Fashion DiTs make 1-channel 32x32 images (the 28x28 items padded).
# Root in CI containers; one slot per rank whatever the core count.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
args=("$models/fashion_dit_s.safetensors" "$models/fashion_dit_l.safetensors" --steps 3
      --count 11 --batch 2 --fraction 0.4 --seed 7 -t 1 -q)
fail() { echo "FAIL: $*"; exit 1; }
mpi() { local n=$1; shift; "$mpiexec" -n "$n" --oversubscribe "$@"; }
same() { cmp "$1" "$2" || fail "$2 differs from $1"; }
# The same PNG directory: the same names, each file the same bytes.
same_dir() {
  [ "$(ls "$1")" = "$(ls "$2")" ] || fail "$2 holds other files than $1"
  for f in "$1"/*; do same "$f" "$2/$(basename "$f")"; done
}
# A finished run leaves the output (and an .npy's sidecar) and no journal or partial file.
finished() {
  for f in "$@"; do
    [ -f "$f" ] || fail "$f missing"
    [ -e "$f.part" ] && fail "$f.part left behind"
  done
  [ -e "$1.journal" ] && fail "$1.journal left behind"
  return 0
}

case $case_name in
identical)
  "$sample" "${args[@]}" --npy ref.npy --png-dir ref.d -o ref.npz > ref.log 2>&1 ||
    { cat ref.log; fail "plain run"; }
  [ "$(ls ref.d | head -1)" = 000000.png ] && [ "$(ls ref.d | tail -1)" = 000010.png ] &&
    [ "$(ls ref.d | wc -l)" = 11 ] || fail "ref.d does not hold 000000.png ... 000010.png"
  for n in 1 2 3; do
    mpi "$n" "$sample" "${args[@]}" --npy "k$n.npy" --png-dir "k$n.d" -o "k$n.npz" > "k$n.log" 2>&1 ||
      { cat "k$n.log"; fail "mpirun -n $n"; }
    grep -q "wrote 11 samples to k$n.npy and k$n.d and k$n.npz" "k$n.log" ||
      { cat "k$n.log"; fail "-n $n: no 'wrote' line"; }
    same_dir ref.d "k$n.d"
    finished "k$n.npy" "k$n.npz"
    same ref.npy "k$n.npy"
    same ref.npz "k$n.npz"
    # The sidecar names the same run (seed, steps, labels...).
    same ref.npy.json "k$n.npy.json"
  done
  # Without -q rank 0 shows the job's bar (samples done of all), and no rank its own batches'.
  noisy=()
  for a in "${args[@]}"; do [ "$a" = -q ] || noisy+=("$a"); done
  mpi 2 "$sample" "${noisy[@]}" --npy bar.npy > bar.log 2>&1 || { cat bar.log; fail "run with a bar"; }
  grep -q "\] 11/11 samples .* images/s .*(2 ranks)" bar.log || { cat bar.log; fail "no job bar"; }
  grep -q "batch [0-9]*/[0-9]* step" bar.log && { cat bar.log; fail "a rank showed its own bar"; }
  same ref.npy bar.npy
  # --crop 28: Fashion-MNIST's 28x28 items, the same bytes from 1 process and from 3 ranks.
  "$sample" "${args[@]}" --crop 28 --png-dir crop.d -o crop.npz > crop.log 2>&1 ||
    { cat crop.log; fail "plain run with --crop 28"; }
  mpi 3 "$sample" "${args[@]}" --crop 28 --png-dir crop3.d -o crop3.npz > crop3.log 2>&1 ||
    { cat crop3.log; fail "mpirun -n 3 with --crop 28"; }
  same crop.npz crop3.npz
  same_dir crop.d crop3.d
  "$python" - <<'PY' || fail "numpy check"
import numpy as np
a = np.load("k3.npz")["arr_0"]
assert a.shape == (11, 32, 32, 1) and a.dtype == np.uint8, (a.shape, a.dtype)
x = np.load("k3.npy")
assert x.shape == (11, 1, 32, 32) and x.dtype == np.float32, (x.shape, x.dtype)
# The npz pixels are the npy samples as DiT's sample_ddp.py converts them.
ref = np.clip(np.float32(127.5) * x + np.float32(128.0), 0, 255).astype(np.uint8)
assert (ref.transpose(0, 2, 3, 1) == a).all()
c = np.load("crop3.npz")["arr_0"]
assert c.shape == (11, 28, 28, 1) and c.dtype == np.uint8, (c.shape, c.dtype)
assert (c == a[:, 2:30, 2:30, :]).all()
PY
  ;;
resume)
  "$sample" "${args[@]}" --npy ref.npy --png-dir ref.d -o ref.npz > ref.log 2>&1 ||
    { cat ref.log; fail "plain run"; }
  # The rank that completes block 2 kills itself (SIGKILL) after journaling it: the job must end.
  TSTITCH_MPI_TEST_KILL_AFTER_BLOCK=2 mpi 2 -x TSTITCH_MPI_TEST_KILL_AFTER_BLOCK \
    "$sample" "${args[@]}" --npy out.npy --png-dir out.d -o out.npz > killed.log 2>&1 && fail "the killed run succeeded"
  [ -f out.npy.journal ] || { cat killed.log; fail "no journal after the kill"; }
  [ -e out.npy ] && fail "out.npy exists after the kill"
  # A resume with other settings is refused: it would mix two runs in one file.
  mpi 2 "$sample" "${args[@]}" --guidance 2 --npy out.npy --png-dir out.d -o out.npz --resume > other.log 2>&1 &&
    fail "a resume with other options succeeded"
  grep -q "journal 'out.npy.journal' is of another run" other.log || { cat other.log; fail "no refusal message"; }
  # The resume (with another rank count) skips the journaled blocks and ends with the same bytes.
  mpi 3 "$sample" "${args[@]}" --npy out.npy --png-dir out.d -o out.npz --resume > resumed.log 2>&1 ||
    { cat resumed.log; fail "the resume failed"; }
  grep -Eq "resuming: [1-3] of 6 blocks already done" resumed.log || { cat resumed.log; fail "no blocks resumed"; }
  finished out.npy out.npz
  same ref.npy out.npy
  same ref.npz out.npz
  same ref.npy.json out.npy.json
  same_dir ref.d out.d
  ;;
disagree)
  # Rank 1 is given other options: refused at start, naming it.
  "$mpiexec" -n 1 "$sample" "${args[@]}" --npy out.npy : -n 1 "$sample" "${args[@]}" --guidance 2 \
    --npy out.npy > run.log 2>&1 && fail "disagreeing ranks ran"
  grep -q "rank 0 of 2.*ranks 1 run other options or model files than rank 0" run.log ||
    { cat run.log; fail "no message naming rank 1"; }
  [ -e out.npy ] && fail "out.npy written"
  ;;
failing_rank)
  # Rank 1 cannot load its model: the job ends (no hang) with the rank and the cause.
  "$mpiexec" -n 1 "$sample" "${args[@]}" --npy out.npy : -n 1 "$sample" \
    "$models/no_such_model.safetensors" "$models/fashion_dit_l.safetensors" --steps 3 --count 11 \
    --batch 2 --fraction 0.4 --seed 7 -t 1 -q --npy out.npy > run.log 2>&1 && fail "the job succeeded"
  grep -q "error: rank 1 of 2 (.*): model 1 '.*no_such_model.safetensors': no such file" run.log ||
    { cat run.log; fail "no message naming rank 1 and the file"; }
  ;;
fd)
  # FD-cls from the ranks' reduced feature moments equals the plain run's FD on the gathered
  # features to 1e-9 relative. 96 samples of 64 features: a full-rank covariance (with fewer
  # samples than features the FD's matrix square root of a singular covariance amplifies rounding).
  fd_args=("$models/fashion_dit_s.safetensors" "$models/fashion_dit_l.safetensors" --steps 2
           --count 96 --batch 16 --seed 7 -t 1 -q --fd "$models/fashion_classifier.safetensors")
  "$sample" "${fd_args[@]}" --npy ref.npy > ref.log 2>&1 || { cat ref.log; fail "plain run"; }
  for n in 2 3; do
    mpi "$n" "$sample" "${fd_args[@]}" --npy "k$n.npy" > "k$n.log" 2>&1 ||
      { cat "k$n.log"; fail "mpirun -n $n"; }
    same ref.npy "k$n.npy"
  done
  "$python" - <<'PY' || fail "FD check"
import re
def fd(log):
    m = re.search(r"FD-cls: (\S+) \(96 samples", open(log).read())
    assert m, log + ": no FD-cls line"
    return float(m.group(1))
ref = fd("ref.log")
for n in (2, 3):
    got = fd(f"k{n}.log")
    assert abs(got - ref) <= 1e-9 * abs(ref), (n, got, ref)
PY
  ;;
refused)
  # Under MPI: a grid needs every image in one process; a stateful (PyTorch) generator would make
  # a block's noise depend on the blocks its rank sampled before; an output must be a file.
  mpi 2 "$sample" "${args[@]}" -o grid.png > grid.log 2>&1 && fail "a grid under MPI ran"
  grep -q "an image grid needs every sample in one process" grid.log || { cat grid.log; fail "no grid message"; }
  mpi 2 "$sample" "${args[@]}" --rng torch-cpu --npy out.npy > rng.log 2>&1 &&
    fail "--rng torch-cpu under MPI ran"
  grep -q "under MPI use --rng philox" rng.log || { cat rng.log; fail "no rng message"; }
  # OUT.part is renamed over OUT: a device (or a pipe) is refused, and left as it is.
  mpi 2 "$sample" "${args[@]}" --npy /dev/null > null.log 2>&1 && fail "--npy /dev/null under MPI ran"
  grep -q "'/dev/null': not a regular file" null.log || { cat null.log; fail "no /dev/null message"; }
  [ -c /dev/null ] || fail "/dev/null is no longer a device"
  ;;
*)
  fail "unknown case $case_name"
  ;;
esac
echo "PASS $case_name"
