"""Writes a frozen-backbone member set for `fusec bench`: coco as is, and
aquarium and vehicles with every `backbone.*` tensor taken from coco (the
set tests/fuse.rs makes in Rust). Needs numpy and safetensors (pip).

    python3 scripts/make-frozen-members.py OUTDIR
"""
import os
import shutil
import sys

from safetensors.numpy import load_file, save_file

ref = os.environ.get("FUSEC_REFERENCE_DIR", os.path.join(os.path.dirname(__file__), "../../shared/reference/efficientdet_d0"))
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
coco = load_file(f"{ref}/coco.safetensors")
shutil.copy(f"{ref}/coco.safetensors", f"{out}/coco.safetensors")
for m in ["aquarium", "vehicles"]:
    t = load_file(f"{ref}/{m}.safetensors")
    for k in t:
        if k.startswith("backbone."):
            t[k] = coco[k]
    save_file(t, f"{out}/{m}.safetensors")
print(f"wrote {out}/coco.safetensors, aquarium.safetensors, vehicles.safetensors")
