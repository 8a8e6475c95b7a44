#!/usr/bin/env bash
# The README's test command: runs every test, ONNX Runtime and Core ML ones
# included, on a machine that has never built the project. Installs the
# ONNX Runtime library (scripts/install-ort.sh) and points ORT_DYLIB_PATH at
# it; installs coremltools, the Core ML package validator
# (scripts/install-coremltools.sh), and points FUSEC_COREML_PYTHON at it;
# installs the real all-MiniLM-L6-v2 (scripts/install-minilm.sh) and points
# FUSEC_MINILM_DIR at it.
# Needs ../shared/reference beside the checkout (or FUSEC_REFERENCE_DIR).
# Extra arguments go to `cargo test`. Then the wheel's tests
# (scripts/test-wheel.sh: maturin, pip, pytest, all from PyPI).
#
# The tests build in the release profile, the one `cargo build --release`
# and `cargo run --release` use for the main job: the dependencies (tract,
# mostly) are compiled once for both, and the tests drive the very `fusec`
# binary a user runs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ORT_DYLIB_PATH="$(bash scripts/install-ort.sh)"
export ORT_DYLIB_PATH
FUSEC_COREML_PYTHON="$(bash scripts/install-coremltools.sh)"
export FUSEC_COREML_PYTHON
# The real all-MiniLM-L6-v2, for transformer tests (scripts/install-minilm.sh).
FUSEC_MINILM_DIR="$(bash scripts/install-minilm.sh)"
export FUSEC_MINILM_DIR
# The fuzz crate (fuzz/) has its own lock file: it must follow the
# workspace. (This resolves and downloads its dependencies, as a fresh
# machine must; only a lock file that needs changing is reported as such.)
if ! out="$(cargo metadata --locked --format-version 1 --manifest-path fuzz/Cargo.toml 2>&1 >/dev/null)"; then
  echo "$out" >&2
  if grep -q -- "--locked" <<<"$out"; then
    echo "fuzz/Cargo.lock is out of date: run (cd fuzz && cargo metadata --format-version 1 >/dev/null) and commit it" >&2
  fi
  exit 1
fi
# Snapshot mismatches fail; nothing is rewritten.
export INSTA_UPDATE=no
cargo test --workspace --release --locked "$@"
# The wheel: built from the same release build, installed with pip into a
# fresh virtual environment, tested with pytest as a user runs it.
bash scripts/test-wheel.sh
