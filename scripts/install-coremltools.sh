#!/usr/bin/env bash
# Installs coremltools (the Core ML package validator the tests use) from
# PyPI into a venv in .cache/coremltools-venv and prints its python.
# Idempotent: does nothing when the venv already has coremltools.
set -euo pipefail
COREMLTOOLS_VERSION="${COREMLTOOLS_VERSION:-9.0}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.cache/coremltools-venv"
py="$venv/bin/python"
if ! "$py" -c "import coremltools, sys; sys.exit(coremltools.__version__ != '$COREMLTOOLS_VERSION')" >/dev/null 2>&1; then
  echo "installing coremltools $COREMLTOOLS_VERSION from PyPI into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$py" -m pip install --quiet --disable-pip-version-check "coremltools==$COREMLTOOLS_VERSION" >&2
fi
echo "$py"
