#!/usr/bin/env bash
# The wheel's tests: builds the `fusec` wheel with maturin (from PyPI, into
# .cache/maturin-venv) reusing the release build, installs it with pip into
# a fresh virtual environment (which pulls onnxruntime from PyPI), and runs
# tests/python with pytest there, as a user would: `fusec` on PATH, no
# ORT_DYLIB_PATH. Run by scripts/test.sh after the Rust tests.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
tools="$root/.cache/maturin-venv"
if [[ ! -x "$tools/bin/maturin" ]]; then
  echo "installing maturin from PyPI into $tools" >&2
  python3 -m venv "$tools"
  "$tools/bin/pip" install --quiet "maturin>=1.5,<2" >&2
fi
dist="$(mktemp -d)"
venv="$(mktemp -d)"
# An empty tune cache: a plan kept by an earlier run must not answer for a
# measurement a test asserts.
cache="$(mktemp -d)"
trap 'rm -rf "$dist" "$venv" "$cache"' EXIT
"$tools/bin/maturin" build --release --locked --quiet -o "$dist" >&2
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet "$dist"/fusec-*.whl pytest safetensors >&2
(unset ORT_DYLIB_PATH; FUSEC_CACHE_DIR="$cache" VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" "$venv/bin/python" -m pytest -q tests/python)
