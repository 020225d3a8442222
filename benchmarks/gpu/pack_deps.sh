#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# shellcheck disable=SC2016  # sed scripts below write CMake ${...} references, not shell ones
# Copies tstitch's header-only dependencies, with their CMake package files, into a prefix folder
# (default: .deps/ in the repository root, git-ignored), so that a machine without the Debian
# packages (a GPU machine with nvcc, CMake and g++, but no network) configures with
#
#   cmake -S . -B build/gpu -DCMAKE_PREFIX_PATH=$PWD/.deps ...
#
# Run it here, on the development machine, before handing the working tree to the GPU machine
# (.deps/ is git-ignored: copy it along with the working tree).
#
#   benchmarks/gpu/pack_deps.sh [prefix]          # copy (about 15 MB) and verify
#   benchmarks/gpu/pack_deps.sh --verify [prefix] # only verify an existing prefix
#
# Layout inside the prefix mirrors /usr, because the package files locate the headers relative to
# themselves (e.g. Eigen3Targets.cmake goes three directories up from share/eigen3/cmake/):
#   include/{eigen3,nlohmann,catch2,CLI,stb}
#   share/eigen3/cmake  share/cmake/nlohmann_json  share/cmake/CLI11  lib/cmake/Catch2
#   lib/libCatch2WithMain.a   (Catch2's targets file checks that it exists)
#   cudnn/include/cudnn*.h    (cuDNN 9's headers, when this machine has them: the cudnn attention
#                             path is compiled against them and opens libcudnn at run time;
#                             CMake looks in <prefix>/cudnn/include of each CMAKE_PREFIX_PATH)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

verify_only=0
if [[ "${1:-}" == "--verify" ]]; then
  verify_only=1
  shift
fi
prefix="${1:-$root/.deps}"
mkdir -p "$prefix"
prefix="$(cd "$prefix" && pwd)"

# copy SRC DEST_RELATIVE: a directory or file, replaced as a whole (re-running is idempotent).
copy() {
  local src="$1" dest="$prefix/$2"
  if [[ ! -e "$src" ]]; then
    echo "pack_deps: missing $src" >&2
    return 1
  fi
  rm -rf "$dest"
  mkdir -p "$(dirname "$dest")"
  cp -rL "$src" "$dest"
}

# first_dir CANDIDATE...: the first that exists (package layouts differ between distributions).
first_dir() {
  local d
  for d in "$@"; do
    if [[ -e "$d" ]]; then
      echo "$d"
      return 0
    fi
  done
  echo "pack_deps: none of $* exists" >&2
  return 1
}

if [[ $verify_only == 0 ]]; then
  copy /usr/include/eigen3 include/eigen3
  copy "$(first_dir /usr/share/eigen3/cmake /usr/lib/cmake/eigen3)" share/eigen3/cmake
  copy /usr/include/nlohmann include/nlohmann
  copy "$(first_dir /usr/share/cmake/nlohmann_json /usr/lib/cmake/nlohmann_json)" \
    share/cmake/nlohmann_json
  copy /usr/include/catch2 include/catch2
  copy "$(first_dir /usr/lib/cmake/Catch2 /usr/share/cmake/Catch2)" lib/cmake/Catch2
  copy "$(first_dir /usr/lib/libCatch2WithMain.a /usr/lib/x86_64-linux-gnu/libCatch2WithMain.a)" \
    lib/libCatch2WithMain.a
  copy /usr/include/CLI include/CLI
  copy "$(first_dir /usr/share/cmake/CLI11 /usr/lib/cmake/CLI11)" share/cmake/CLI11
  copy /usr/include/stb include/stb

  # Absolute paths in the package files. Debian's are relocatable except Catch2's "/usr move"
  # guard, which compares the files' own location with /usr/lib/cmake/Catch2 and, when they
  # match, pins the prefix to /usr. Point the comparison at a path that never exists, so the
  # prefix is always computed from where the files are. (The ${...} are CMake's, not the shell's.)
  sed -i 's|set(PACKAGE_PREFIX_DIR "/usr")|set(PACKAGE_PREFIX_DIR "${PACKAGE_PREFIX_DIR}")|' \
    "$prefix"/lib/cmake/Catch2/Catch2Config.cmake
  sed -i 's|set(_IMPORT_PREFIX "/usr/lib/cmake/Catch2")|set(_IMPORT_PREFIX "${_IMPORT_PREFIX}")|' \
    "$prefix"/lib/cmake/Catch2/Catch2Targets.cmake
  sed -i 's|"/usr/lib/cmake/Catch2"|"${CMAKE_CURRENT_LIST_DIR}/.never-relocated"|' \
    "$prefix"/lib/cmake/Catch2/Catch2Config.cmake "$prefix"/lib/cmake/Catch2/Catch2Targets.cmake

  # cuDNN's headers only (about 1 MB): the GPU machines may have cuDNN as a Python wheel, which
  # ships no headers. Optional: without them the cudnn attention path is simply not compiled.
  rm -rf "$prefix/cudnn"
  cudnn_include=""
  for d in "${CUDNN_INCLUDE_DIR:-}" "${CUDA_HOME:-/usr/local/cuda}/include" /usr/local/cuda/include \
    /usr/include /usr/include/x86_64-linux-gnu; do
    if [[ -n "$d" && -f "$d/cudnn_graph.h" ]]; then
      cudnn_include="$d"
      break
    fi
  done
  if [[ -n "$cudnn_include" ]]; then
    mkdir -p "$prefix/cudnn/include"
    cp -L "$cudnn_include"/cudnn*.h "$prefix/cudnn/include/"
    echo "pack_deps: cuDNN headers from $cudnn_include ($(grep -E '^#define CUDNN_(MAJOR|MINOR|PATCHLEVEL) ' \
      "$cudnn_include/cudnn_version.h" | awk '{print $3}' | paste -sd. -))"
  else
    echo "pack_deps: no cudnn_graph.h here (CUDNN_INCLUDE_DIR, \$CUDA_HOME/include, /usr/include):" \
      "the cudnn attention path will not be compiled from this prefix" >&2
  fi
  echo "pack_deps: copied into $prefix ($(du -sh "$prefix" | cut -f1))"
fi

# Any absolute path left outside comments would tie the prefix to this machine.
leftover="$(grep -rn --include='*.cmake' '"/usr\|/usr/include\|/usr/lib\|/usr/share' "$prefix" \
  | grep -v '^[^:]*:[0-9]*:[[:space:]]*#' || true)"
if [[ -n "$leftover" ]]; then
  echo "pack_deps: absolute paths left in package files:" >&2
  echo "$leftover" >&2
  exit 1
fi

# Verify: find every package from the prefix alone (CMake's system paths switched off) and check
# that each imported target's include directories point into the prefix.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
cat >"$scratch/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.25)
project(pack_deps_check LANGUAGES CXX)
find_package(Eigen3 3.4 REQUIRED NO_MODULE)
find_package(nlohmann_json 3 REQUIRED)
find_package(Catch2 2.13 REQUIRED)
include(Catch) # catch_discover_tests comes from the package's module directory
find_package(CLI11 CONFIG REQUIRED)
find_path(STB_DIR stb/stb_image_write.h REQUIRED)
foreach(t Eigen3::Eigen nlohmann_json::nlohmann_json Catch2::Catch2 CLI11::CLI11)
  get_target_property(dirs ${t} INTERFACE_INCLUDE_DIRECTORIES)
  foreach(d IN LISTS dirs)
    if(NOT d MATCHES "^${DEPS_PREFIX}/" OR NOT EXISTS "${d}")
      message(FATAL_ERROR "${t}: include directory ${d} is not inside ${DEPS_PREFIX}")
    endif()
  endforeach()
  message(STATUS "${t}: ${dirs}")
endforeach()
if(NOT STB_DIR MATCHES "^${DEPS_PREFIX}/")
  message(FATAL_ERROR "stb found at ${STB_DIR}, not inside ${DEPS_PREFIX}")
endif()
message(STATUS "stb: ${STB_DIR}")
message(STATUS "Catch2_DIR: ${Catch2_DIR}")
# cuDNN headers, when packed: found the way tstitch's CMakeLists.txt looks for them.
if(EXISTS "${DEPS_PREFIX}/cudnn")
  set(_hints "")
  foreach(_p IN LISTS CMAKE_PREFIX_PATH)
    list(APPEND _hints "${_p}/cudnn/include")
  endforeach()
  find_path(CUDNN_DIR cudnn_graph.h HINTS ${_hints} REQUIRED)
  if(NOT CUDNN_DIR MATCHES "^${DEPS_PREFIX}/" OR NOT EXISTS "${CUDNN_DIR}/cudnn_version.h")
    message(FATAL_ERROR "cuDNN headers found at ${CUDNN_DIR}, not complete inside ${DEPS_PREFIX}")
  endif()
  message(STATUS "cudnn: ${CUDNN_DIR}")
endif()
EOF
if cmake -S "$scratch" -B "$scratch/build" -DCMAKE_PREFIX_PATH="$prefix" -DDEPS_PREFIX="$prefix" \
  -DCMAKE_FIND_USE_CMAKE_SYSTEM_PATH=OFF -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF \
  >"$scratch/log" 2>&1; then
  grep -- '-- .*::\|-- stb\|-- Catch2_DIR\|-- cudnn' "$scratch/log" | sed 's/^/pack_deps: /'
  echo "pack_deps: OK: every package is found inside $prefix with the system paths switched off"
else
  cat "$scratch/log" >&2
  echo "pack_deps: verification FAILED" >&2
  exit 1
fi
