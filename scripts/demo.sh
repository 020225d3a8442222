#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds (build/gcc, Release) and runs the stitch_demo example; arguments go to the demo.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

./scripts/install-deps.sh >&2

cmake -S . -B build/gcc -DCMAKE_CXX_COMPILER=g++ -DCMAKE_BUILD_TYPE=Release >&2
cmake --build build/gcc -j 2 --target stitch_demo >&2

exec build/gcc/examples/stitch_demo "$@"
