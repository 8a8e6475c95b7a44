#!/usr/bin/env bash
# Runs every test, ONNX Runtime ones included, on a fresh machine:
# installs the ONNX Runtime library (scripts/install-ort.sh) and points
# ORT_DYLIB_PATH at it; installs coremltools, the Core ML package
# validator (scripts/install-coremltools.sh), and points
# FUSEC_COREML_PYTHON at it. Needs ../shared/reference beside the
# checkout (or FUSEC_REFERENCE_DIR). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ORT_DYLIB_PATH="$(bash scripts/install-ort.sh)"
export ORT_DYLIB_PATH
FUSEC_COREML_PYTHON="$(bash scripts/install-coremltools.sh)"
export FUSEC_COREML_PYTHON
# The fuzz crate (fuzz/) has its own lock file: it must follow the workspace.
cargo metadata --locked --offline --format-version 1 --manifest-path fuzz/Cargo.toml >/dev/null \
  || { echo "fuzz/Cargo.lock is out of date: run (cd fuzz && cargo metadata --format-version 1 >/dev/null) and commit it" >&2; exit 1; }
# Snapshot mismatches fail; nothing is rewritten.
export INSTA_UPDATE=no
cargo test --workspace --locked "$@"
