#!/usr/bin/env bash
# Make Triton's perf_analyzer (shipped in the tritonclient==2.51.0 wheel as .venv/bin/perf_analyzer)
# runnable WITHOUT root and without touching the system. It links against two libraries that a
# plain Debian machine lacks:
#
#   libb64.so.0d     Debian package libb64-0d: `apt-get download` fetches the .deb into the current
#                    folder (no root needed) and `dpkg-deb -x` unpacks it into .perf_analyzer/libb64
#                    (fallbacks: without apt, the pinned bookworm .deb is fetched from deb.debian.org and
#                    checked against its SHA256; without dpkg-deb, Python unpacks the ar/tar archive)
#   libcudart.so.12  the nvidia-cuda-runtime-cu12 wheel, pip-installed with --target into
#                    .perf_analyzer/cuda (12.6.77: the CUDA release Triton 24.10 / client 2.51.0 uses;
#                    no GPU is needed: perf_analyzer only calls into it for CUDA shared memory)
#
# Nothing is installed system-wide: lmrec.benchmarks.triton_perf.find_perf_analyzer() points
# LD_LIBRARY_PATH at these folders when it runs the binary. Idempotent; re-run with --force to redo.
# Usage: benchmarks/peers/setup_perf_analyzer.sh [--force]     (from anywhere; paths are repo-relative)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="${PERF_ANALYZER_LIBS:-$REPO/.perf_analyzer}"
VENV="${VENV:-$REPO/.venv}"
PYTHON="${PYTHON:-$VENV/bin/python}"
BINARY="$VENV/bin/perf_analyzer"
LIBB64_PACKAGE="libb64-0d"
# Fallback when `apt-get download` cannot run (Debian bookworm's build; SHA256 from its Packages index).
LIBB64_DEB_URL="http://deb.debian.org/debian/pool/main/libb/libb64/libb64-0d_1.2-5%2bb1_amd64.deb"
LIBB64_DEB_SHA256="b0e1d6fde8bdccc18c3884144aede064dc82464dd4777275fa80e74c05583e82"
CUDART_SPEC="nvidia-cuda-runtime-cu12==12.6.77"
FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

say() { echo "[setup_perf_analyzer] $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

[[ -x "$BINARY" ]] || die "$BINARY not found: install tritonclient==2.51.0 into $VENV (pip install -e '.[dev]')"
if [[ $FORCE == 1 ]]; then rm -rf "$DEST"; fi
mkdir -p "$DEST"
# Keep the folder out of git without editing .gitignore: a .gitignore inside it ignores everything.
printf '*\n' > "$DEST/.gitignore"

say "before: $(ldd "$BINARY" | grep -c 'not found') missing libraries"
ldd "$BINARY" | grep 'not found' >&2 || true

LIBB64_DIR="$DEST/libb64/usr/lib/x86_64-linux-gnu"
if [[ ! -e "$LIBB64_DIR/libb64.so.0d" ]]; then
  say "fetching $LIBB64_PACKAGE with apt-get download (no root needed) ..."
  WORK="$(mktemp -d)"
  trap 'rm -rf "$WORK"' EXIT
  # apt drops privileges to _apt when it can; from a folder _apt cannot write it warns and goes on.
  if ! ( cd "$WORK" && apt-get download "$LIBB64_PACKAGE" >&2 ); then
    # No apt (or no package lists, and `apt-get update` needs root): fetch the pinned bookworm .deb
    # straight from the Debian mirror and check it against the checksum of bookworm's Packages index.
    say "apt-get download failed; fetching $LIBB64_DEB_URL ..."
    "$PYTHON" - "$LIBB64_DEB_URL" "$WORK/${LIBB64_PACKAGE}_1.2-5+b1_amd64.deb" "$LIBB64_DEB_SHA256" <<'PY' \
      || die "could not fetch $LIBB64_PACKAGE: download it by hand and run: dpkg-deb -x FILE $DEST/libb64"
import hashlib, sys, urllib.request
url, path, expected = sys.argv[1:]
data = urllib.request.urlopen(url, timeout=60).read()
if hashlib.sha256(data).hexdigest() != expected:
    sys.exit(f"checksum mismatch for {url}")
open(path, "wb").write(data)
PY
  fi
  DEB="$(ls "$WORK"/${LIBB64_PACKAGE}_*.deb | head -n1)"
  if command -v dpkg-deb >/dev/null; then
    dpkg-deb -x "$DEB" "$DEST/libb64"
  else  # not Debian: a .deb is an ar archive holding data.tar.*
    "$PYTHON" - "$DEB" "$DEST/libb64" <<'PY'
import io, sys, tarfile
blob, out = open(sys.argv[1], "rb").read(), sys.argv[2]
assert blob[:8] == b"!<arch>\n", "not a .deb"
pos = 8
while pos < len(blob):
    name, size = blob[pos:pos + 16].decode().strip().rstrip("/"), int(blob[pos + 48:pos + 58])
    if name.startswith("data.tar"):
        tarfile.open(fileobj=io.BytesIO(blob[pos + 60:pos + 60 + size])).extractall(out, filter="data")
        break
    pos += 60 + size + (size % 2)
else:
    sys.exit("no data.tar in the .deb")
PY
  fi
  say "unpacked $(basename "$DEB") into $DEST/libb64"
else
  say "libb64.so.0d already in $LIBB64_DIR"
fi

CUDART_DIR="$DEST/cuda/nvidia/cuda_runtime/lib"
if [[ ! -e "$CUDART_DIR/libcudart.so.12" ]]; then
  say "installing $CUDART_SPEC into $DEST/cuda (pip --target, outside the venv) ..."
  "$PYTHON" -m pip install --quiet --no-deps --disable-pip-version-check --target "$DEST/cuda" "$CUDART_SPEC"
else
  say "libcudart.so.12 already in $CUDART_DIR"
fi

export LD_LIBRARY_PATH="$LIBB64_DIR:$CUDART_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if ldd "$BINARY" | grep 'not found' >&2; then
  die "perf_analyzer still misses libraries (listed above)"
fi
say "after: every library resolves:"
ldd "$BINARY" | grep -E 'libb64|libcudart' >&2
"$BINARY" --help >/dev/null 2>&1 || "$BINARY" --version >/dev/null 2>&1 || true
say "ok: LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
