#!/usr/bin/env bash
# Measures `fusec fuse` on the reference 3x D0 set (release build): wall
# time and peak resident memory (GNU time) of the whole process, from the
# three state_dicts, from the three ONNX files, and mixed, against the
# members' total file size. Runs each case 3 times and prints every run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ref="${FUSEC_REFERENCE_DIR:-../shared/reference/efficientdet_d0}"
cargo build --release --locked -q
fusec=target/release/fusec
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
printf '| members | inputs total | run | wall | peak RSS | output |\n|---|---|---|---|---|---|\n'
for kind in safetensors onnx mixed; do
  case $kind in
    mixed) files=("$ref/coco.onnx" "$ref/aquarium.safetensors" "$ref/vehicles.onnx") ;;
    *) files=("$ref/coco.$kind" "$ref/aquarium.$kind" "$ref/vehicles.$kind") ;;
  esac
  total=$(du -cb "${files[@]}" | tail -1 | cut -f1)
  for run in 1 2 3; do
    /usr/bin/time -f '%e %M' -o "$tmp/time" "$fusec" fuse "${files[@]}" -o "$tmp/super.onnx" 2>/dev/null
    read -r wall rss < "$tmp/time"
    size=$(stat -c %s "$tmp/super.onnx")
    printf '| 3x D0 %s | %.1f MB | %d | %.2f s | %.1f MB | %.1f MB |\n' "$kind" "$(echo "$total/1000000" | bc -l)" "$run" "$wall" "$(echo "$rss/1000" | bc -l)" "$(echo "$size/1000000" | bc -l)"
  done
done
