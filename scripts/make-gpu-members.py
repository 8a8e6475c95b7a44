#!/usr/bin/env python3
"""Makes N EfficientDet-D0 members for scaling runs (the GPU issue): from
one effdet state_dict (the reference coco.safetensors, 16 MB, small enough
to carry to a GPU machine), member k gets every float weight perturbed by
a relative N(0, 2%) (seeded k: a fine-tuned copy) and its own class head,
with its own class count (90, 7, 20, 5, 12, ... classes), so no two members
share a layer and the heads differ as real task heads do. BatchNorm
statistics stay valid (running_var kept positive). Writes
OUTDIR/m01.safetensors ... mNN.safetensors, state_dicts fusec reads as it
reads effdet's; `fusec convert` gives each member's ONNX file.

    python3 scripts/make-gpu-members.py --base coco.safetensors -n 8 members8/

Needs numpy and safetensors (pip; timm installs safetensors).
"""
import argparse
import os
import sys

import numpy as np
from safetensors.numpy import load_file, save_file

CLASSES = [90, 7, 20, 5, 12, 3, 30, 9, 15, 2, 40, 6, 25, 11, 4, 18]
ANCHORS = 9
HEAD = "class_net.predict.conv_pw."


def member(base, k, classes, noise):
    rng = np.random.default_rng(1000 + k)
    out = {}
    for name, t in base.items():
        if not np.issubdtype(t.dtype, np.floating) or name.startswith(HEAD):
            out[name] = t
            continue
        p = t * (1 + noise * rng.standard_normal(t.shape).astype(t.dtype))
        if name.endswith("running_var"):
            p = np.abs(p) + 1e-3
        out[name] = p.astype(t.dtype)
    w = base[HEAD + "weight"]
    fan_in = w.shape[1]
    out[HEAD + "weight"] = (rng.standard_normal((classes * ANCHORS, fan_in, 1, 1)) / np.sqrt(fan_in)).astype(w.dtype)
    # effdet's prior-probability bias init: sigmoid(b) = 0.01.
    out[HEAD + "bias"] = np.full((classes * ANCHORS,), -np.log((1 - 0.01) / 0.01), dtype=w.dtype)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir")
    ap.add_argument("--base", required=True, help="an effdet EfficientDet-D0 state_dict (.safetensors)")
    ap.add_argument("-n", type=int, required=True, help=f"members, 2 to {len(CLASSES)}")
    ap.add_argument("--noise", type=float, default=0.02, help="relative weight perturbation (default 0.02)")
    args = ap.parse_args()
    if not 2 <= args.n <= len(CLASSES):
        sys.exit(f"error: -n must be 2 to {len(CLASSES)}, not {args.n}")
    base = load_file(args.base)
    if HEAD + "weight" not in base:
        sys.exit(f"error: {args.base} has no `{HEAD}weight`: not an effdet EfficientDet state_dict")
    os.makedirs(args.outdir, exist_ok=True)
    paths = []
    for k in range(args.n):
        path = os.path.join(args.outdir, f"m{k + 1:02d}.safetensors")
        save_file(member(base, k, CLASSES[k], args.noise), path)
        paths.append(path)
    print(" ".join(paths))


if __name__ == "__main__":
    main()
