#!/usr/bin/env bash
# Installs ONNX Runtime with the CUDA execution provider for NVIDIA GPUs:
# the `onnxruntime-gpu` PyPI wheel (1.31.1, built for CUDA 13) with the
# CUDA 13 and cuDNN libraries it loads, from their PyPI wheels (the
# wheel's `cuda` and `cudnn` extras name them), into .cache/ort-gpu/.
# Prints the two lines to run before `fusec ... --device cuda`:
#
#   eval "$(bash scripts/install-ort-gpu.sh)"
#   fusec bench a.onnx b.onnx --runtime ort --device cuda
#
# Idempotent: does nothing when the library is already there. Needs pip
# and a few GB of disk (cuDNN and cuBLAS are most of it); no GPU is needed
# to install, only to run.
set -euo pipefail
ORT_GPU_VERSION="${ORT_GPU_VERSION:-1.31.1}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.cache/ort-gpu/$ORT_GPU_VERSION"
lib="$dest/onnxruntime/capi/libonnxruntime.so.$ORT_GPU_VERSION"
if [[ ! -f "$lib" ]]; then
  echo "installing onnxruntime-gpu $ORT_GPU_VERSION with CUDA 13 and cuDNN from PyPI into $dest" >&2
  rm -rf "$dest.part"
  python3 -m pip install --quiet --no-warn-script-location --target "$dest.part" \
    "onnxruntime-gpu[cuda,cudnn]==$ORT_GPU_VERSION" >&2
  rm -rf "$dest"
  mv "$dest.part" "$dest"
fi
# The provider and the CUDA/cuDNN libraries it dlopens.
libdirs="$dest/onnxruntime/capi"
for d in "$dest"/nvidia/*/lib; do
  [[ -d "$d" ]] && libdirs="$libdirs:$d"
done
echo "export ORT_DYLIB_PATH=$lib"
echo "export LD_LIBRARY_PATH=$libdirs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
