#!/usr/bin/env bash
# The GPU measurement of the GPU issue, as one prepared script for a machine
# with PyTorch and CUDA but no onnxruntime-gpu and no network (the device
# machine this project can borrow). Makes EfficientDet-D0 members from one
# state_dict (scripts/make-gpu-members.py), fuses them with the fusec binary
# (every lowering for N = 3, the default for the larger N), converts the
# members to ONNX with the same binary, and times members one after another
# against the fused models with scripts/bench-torch.py (onnx2torch modules,
# eager and CUDA graphs, fp32 and fp16 for N = 3; fp32 for the rest).
# Tables go to OUT/bench-N.md (and .json); N = 3's fastest lowering to
# OUT/lowering-3.json, for `fusec fuse --calibration`.
#
#   FUSEC=target/release/fusec BASE=.cache/gpu/coco.safetensors \
#     WHEELS=.cache/gpu/wheels OUT=$OUT bash scripts/gpu-bench.sh
#
# Environment: FUSEC (the binary), BASE (an effdet D0 state_dict), WHEELS
# (a folder with the onnx2torch wheel, installed with --no-index; skipped if
# onnx2torch imports), OUT (results), DEVICE (cuda; cpu to try the script),
# RUNS (100), SIZES ("3 8 16"), PYTHON (python3).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
FUSEC="${FUSEC:-target/release/fusec}"
BASE="${BASE:-.cache/gpu/coco.safetensors}"
OUT="${OUT:-gpu-results}"
DEVICE="${DEVICE:-cuda}"
RUNS="${RUNS:-100}"
SIZES="${SIZES:-3 8 16}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$OUT"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if ! "$PYTHON" -c "import onnx2torch" 2>/dev/null; then
  "$PYTHON" -m pip install --quiet --no-index --find-links "${WHEELS:-.cache/gpu/wheels}" onnx2torch >&2
fi
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" | tee "$OUT/device.txt"
for n in $SIZES; do
  dir="$work/m$n"
  t0=$(date +%s)
  read -r -a members <<<"$("$PYTHON" scripts/make-gpu-members.py --base "$BASE" -n "$n" "$dir")"
  onnx=()
  for m in "${members[@]}"; do
    "$FUSEC" convert "$m" --arch efficientdet_d0 -o "${m%.safetensors}.onnx" 2>/dev/null
    onnx+=("${m%.safetensors}.onnx")
  done
  fused=()
  if [[ "$n" == 3 ]]; then
    lowerings=("regions --group-from 0.25" "grouped" "separate" "regions --group-from 0.5" "grouped --keep-bn")
    precisions=(fp32 fp16)
  else
    lowerings=("regions --group-from 0.25")
    precisions=(fp32)
  fi
  for l in "${lowerings[@]}"; do
    f="$dir/super-$(echo "$l" | tr -c 'a-z0-9.' '_').onnx"
    read -r -a largs <<<"--lowering $l"
    "$FUSEC" fuse "${members[@]}" --arch efficientdet_d0 -o "$f" "${largs[@]}" 2>>"$OUT/fuse-$n.log"
    fused+=("$f")
  done
  cal=()
  [[ "$n" == 3 ]] && cal=(--calibrate "$OUT/lowering-3.json")
  "$PYTHON" scripts/bench-torch.py --fused "${fused[@]}" --members "${onnx[@]}" --device "$DEVICE" \
    --runs "$RUNS" --warmup 10 --precision "${precisions[@]}" --json-out "$OUT/bench-$n.json" "${cal[@]}" \
    | tee "$OUT/bench-$n.md"
  echo "N=$n: $(( $(date +%s) - t0 )) s" | tee -a "$OUT/times.txt"
done
