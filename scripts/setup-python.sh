#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Sets up the Python tools (tools/README.md): Debian's CPU PyTorch and numpy for the system
# python, and a venv that sees them (--system-site-packages) holding the pinned PyPI packages of
# tools/requirements.txt. Idempotent: apt only for missing packages, the venv only if missing, pip
# only when a pinned version or an import check fails; quiet and quick when all is present.
# Only needed to regenerate tests/data/dit or to benchmark: the C++ build and tests need no Python.
#
#   scripts/setup-python.sh            # venv in .venv (or $TSTITCH_VENV)
#   .venv/bin/python tools/make_dit_golden.py
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${TSTITCH_VENV:-$root/.venv}"
requirements="$root/tools/requirements.txt"
system_python=/usr/bin/python3  # Debian's python3-torch is for this one, not a pyenv/conda python

# 1. Debian packages.
packages=(python3 python3-venv python3-torch python3-numpy libopenblas0-pthread)
missing=()
for pkg in "${packages[@]}"; do
  if [[ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)" != "install ok installed" ]]; then
    missing+=("$pkg")
  fi
done
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "setup-python: installing ${missing[*]}"
  sudo_cmd=()
  if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo_cmd=(sudo)
    else
      echo "setup-python: missing packages (${missing[*]}), not root and no sudo" >&2
      exit 1
    fi
  fi
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# torch should do its GEMMs in OpenBLAS, not the reference BLAS (a warning only).
blas="$(readlink -f "$(ldconfig -p | awk '/libblas\.so\.3 /{print $NF; exit}')" 2>/dev/null || true)"
if [[ "$blas" != *openblas* ]]; then
  echo "setup-python: warning: libblas.so.3 is ${blas:-not found}, not OpenBLAS" \
       "(update-alternatives --config libblas.so.3-$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo '<arch>'))" >&2
fi

# 2. The venv, seeing the system site-packages (torch, numpy).
if [[ ! -x "$venv/bin/python" ]]; then
  echo "setup-python: creating $venv"
  "$system_python" -m venv --system-site-packages "$venv"
elif ! grep -qs '^include-system-site-packages *= *true' "$venv/pyvenv.cfg"; then
  echo "setup-python: $venv exists but does not see the system site-packages;" \
       "remove it and rerun" >&2
  exit 1
fi
py="$venv/bin/python"

# 3. Pinned PyPI packages, only when a check fails.
check() {
  "$py" - "$requirements" <<'PY'
import importlib, importlib.metadata as md, sys
bad = []
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if line:
        name, version = line.split("==")
        try:
            if md.version(name) != version:
                bad.append(f"{name} {md.version(name)} != {version}")
        except md.PackageNotFoundError:
            bad.append(f"{name} missing")
try:
    import numpy, torch, safetensors.torch, onnx, onnxruntime  # noqa: F401
    from diffusers import DiTTransformer2DModel  # noqa: F401
    if not torch.__file__.startswith("/usr/lib/python3/dist-packages/"):
        bad.append(f"torch comes from {torch.__file__}, not Debian's python3-torch")
except Exception as e:  # an incompatible version fails here, not always at import
    bad.append(f"import: {type(e).__name__}: {e}")
if bad:
    print("; ".join(bad))
    sys.exit(1)
PY
}
if ! problems="$(check 2>&1)"; then
  echo "setup-python: installing tools/requirements.txt (${problems##*$'\n'})"
  # Keep pip away from the system's torch and numpy: constrain them to the installed versions.
  constraints="$(mktemp)"
  trap 'rm -f "$constraints"' EXIT
  "$py" -c 'import importlib.metadata as md
for name in ("torch", "numpy"): print(name + "==" + md.version(name))' >"$constraints"
  "$py" -m pip install -q --disable-pip-version-check -r "$requirements" -c "$constraints"
  if ! problems="$(check 2>&1)"; then
    echo "setup-python: still broken after pip install: $problems" >&2
    exit 1
  fi
fi

echo "setup-python: ready: $py"
