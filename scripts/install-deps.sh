#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs the Debian packages tstitch needs; idempotent, and a quick no-op when all are present.
set -euo pipefail

packages=(
  cmake g++ clang make
  libclang-rt-dev  # clang's sanitizer runtimes: scripts/test.sh runs the clang build under ASan + UBSan
  libeigen3-dev catch2 libbenchmark-dev nlohmann-json3-dev libcli11-dev libstb-dev
  libdnnl-dev  # oneDNN: the CPU DiT's GEMMs and attention (optional: Eigen is the fallback)
  libopenblas0-pthread
  libtorch-dev  # LibTorch: the TorchScript Denoiser adapter (optional, tstitch::libtorch)
  libopenmpi-dev openmpi-bin  # Open MPI: sampling across ranks (optional, tstitch::mpi)
  python3  # scripts/test.sh checks the documents' links (tools/check_links.py)
  python3-numpy python3-torch  # oracles: torch.randn parity, TorchScript export, npz checks
)

missing=()
for pkg in "${packages[@]}"; do
  status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
  if [[ "$status" != "install ok installed" ]]; then
    missing+=("$pkg")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "deps: all present"
  exit 0
fi

echo "deps: installing ${missing[*]}"
sudo_cmd=()
if [[ "$(id -u)" -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo_cmd=(sudo)
  else
    echo "deps: missing packages (${missing[*]}), not root and no sudo available" >&2
    exit 1
  fi
fi

export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
"${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y --no-install-recommends "${missing[@]}"
echo "deps: installed ${missing[*]}"
