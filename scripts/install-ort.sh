#!/usr/bin/env bash
# Installs the ONNX Runtime shared library from the `onnxruntime` PyPI wheel
# into .cache/ort/ and prints the path to give ORT_DYLIB_PATH.
# Idempotent: does nothing when the library is already there.
set -euo pipefail
ORT_VERSION="${ORT_VERSION:-1.32.0}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.cache/ort"
lib="$dest/libonnxruntime.so.$ORT_VERSION"
if [[ ! -f "$lib" ]]; then
  mkdir -p "$dest/wheel"
  echo "installing ONNX Runtime $ORT_VERSION from PyPI into $dest" >&2
  python3 -m pip download --quiet --no-deps --dest "$dest/wheel" "onnxruntime==$ORT_VERSION" >&2
  wheel="$(ls "$dest"/wheel/onnxruntime-"$ORT_VERSION"-*.whl | head -n 1)"
  python3 - "$wheel" "$lib" <<'PY'
import sys, zipfile, shutil
wheel, out = sys.argv[1], sys.argv[2]
name = "onnxruntime/capi/libonnxruntime.so." + out.rsplit(".so.", 1)[1]
with zipfile.ZipFile(wheel) as z, z.open(name) as src, open(out + ".part", "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  mv "$lib.part" "$lib"
  rm -rf "$dest/wheel"
fi
echo "$lib"
