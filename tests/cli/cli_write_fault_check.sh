#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# usage: cli_write_fault_check.sh efbig|enospc WORK_DIR CLI ARGS...
# Runs CLI ARGS --npy WORK_DIR/.../kept.npy where the write fails part way, and checks that the
# CLI fails, that its message names the file and the OS reason, and that the old kept.npy is
# intact with no temporary left beside it. efbig: a file size limit (ulimit -f); enospc: a full
# disk, an 8 KiB tmpfs in a private user and mount namespace (prints SKIPPED where the machine
# allows none).
set -u
mode=$1
work=$2
shift 2

case $mode in
efbig)
  dir=$work/efbig
  reason="File too large"
  ;;
enospc)
  if [ "${TSTITCH_IN_NAMESPACE:-}" != 1 ]; then
    mkdir -p "$work/enospc"
    if ! unshare -rm true 2>/dev/null; then
      echo "SKIPPED: no user and mount namespaces here"
      exit 0
    fi
    TSTITCH_IN_NAMESPACE=1 exec unshare -rm "$0" enospc "$work" "$@"
  fi
  dir=$work/enospc
  if ! mount -t tmpfs -o size=8k tmpfs "$dir" 2>/dev/null; then
    echo "SKIPPED: cannot mount a tmpfs"
    exit 0
  fi
  reason="No space left on device"
  ;;
*)
  echo "unknown mode '$mode'"
  exit 2
  ;;
esac

mkdir -p "$dir"
target=$dir/kept.npy
rm -f "$dir"/.kept.npy.* "$target"
printf 'the old file' >"$target"
if [ "$mode" = efbig ]; then
  output=$( (ulimit -f 4 && exec "$@" --npy "$target") 2>&1)
else
  output=$("$@" --npy "$target" 2>&1)
fi
status=$?
echo "$output"
failed=0
[ $status -ne 0 ] || { echo "FAIL: exit code 0"; failed=1; }
case $output in
*"cannot write '$target': $reason"*) ;;
*) echo "FAIL: no \"cannot write '$target': $reason\" in the output"; failed=1 ;;
esac
[ "$(cat "$target")" = 'the old file' ] || { echo "FAIL: the old file was changed"; failed=1; }
[ "$(ls -A "$dir")" = kept.npy ] || { echo "FAIL: files left: $(ls -A "$dir")"; failed=1; }
[ $failed -eq 0 ] && echo "PASSED: old file kept, $reason reported"
exit $failed
