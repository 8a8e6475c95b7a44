#!/usr/bin/env bash
# Measures import + export on the reference models: each NAME.onnx (imported
# and exported once) and each NAME.safetensors state_dict (graph built by the
# EfficientDet registry) runs on tract and on ONNX Runtime and is compared
# with PyTorch's outputs. Prints the worst tensor per source and runtime, and
# the wall time of each whole `fusec run` process.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ref="${FUSEC_REFERENCE_DIR:-../shared/reference/efficientdet_d0}"
ORT_DYLIB_PATH="$(bash scripts/install-ort.sh)"
export ORT_DYLIB_PATH
cargo build --release --locked -q
fusec=target/release/fusec
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
printf '| source | runtime | worst max abs | worst rel L2 | fusec run wall |\n|---|---|---|---|---|\n'
for m in coco aquarium vehicles; do
  "$fusec" convert "$ref/$m.onnx" -o "$tmp/$m.onnx" 2>/dev/null
  for src in "$tmp/$m.onnx" "$ref/$m.safetensors"; do
    for rt in tract ort; do
      start=$(date +%s%N)
      "$fusec" run "$src" --input "$ref/input.safetensors" --runtime "$rt" -o "$tmp/out.safetensors" 2>/dev/null
      end=$(date +%s%N)
      "$fusec" compare "$tmp/out.safetensors" "$ref/$m.outputs.safetensors" > "$tmp/cmp.txt"
      read -r abs rel < <(awk 'NR>1 && NF==4 { if ($2>a) a=$2; if ($3>r) r=$3 } END { printf "%.2e %.2e\n", a, r }' "$tmp/cmp.txt")
      kind=onnx; [[ "$src" == *.safetensors ]] && kind=safetensors
      printf '| %s.%s | %s | %s | %s | %d ms |\n' "$m" "$kind" "$rt" "$abs" "$rel" $(( (end - start) / 1000000 ))
    done
  done
done
