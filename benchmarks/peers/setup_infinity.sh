#!/usr/bin/env bash
# Install the peer embedding server `infinity-emb` into its own venv, .venv-infinity/ at the repo root,
# so its pins (torch, transformers, fastapi, ...) never touch the project's .venv.
#
#   bash benchmarks/peers/setup_infinity.sh          # then: lmrec bench encoder (path "infinity-emb")
#
# Torch engine + HTTP server only (extras `torch` and `server`), CPU torch: a CPU torch wheel in pip's
# find-links folder (/opt/wheels here, or TORCH_WHEELS) is installed first and pinned, so pip never
# swaps in a CUDA build while resolving infinity-emb's requirements.
# Re-running is safe: an existing venv is reused and satisfied requirements are skipped.
set -euo pipefail

INFINITY_VERSION="${INFINITY_VERSION:-0.0.78}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${INFINITY_VENV:-$ROOT/.venv-infinity}"
PYTHON="${PYTHON:-python3}"
WHEELS="${TORCH_WHEELS:-/opt/wheels}"

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/pip" install --progress-bar off --disable-pip-version-check)
"${PIP[@]}" --upgrade pip wheel >/dev/null

torch_wheel=""
if [ -d "$WHEELS" ]; then
  torch_wheel="$(ls "$WHEELS"/torch-*+cpu-*.whl 2>/dev/null | sort -V | tail -n 1 || true)"
fi
if [ -n "$torch_wheel" ]; then
  echo "installing CPU torch from $torch_wheel"
  "${PIP[@]}" "$torch_wheel"
  # Keep that exact torch while resolving infinity-emb's own requirements.
  torch_pin="torch==$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
else
  torch_pin="torch"  # no local CPU wheel: whatever torch pip's configured indexes offer
fi

"${PIP[@]}" "infinity-emb[torch,server]==${INFINITY_VERSION}" "$torch_pin"

"$VENV/bin/infinity_emb" --help >/dev/null
echo "infinity-emb ${INFINITY_VERSION} ready: $VENV/bin/infinity_emb"
