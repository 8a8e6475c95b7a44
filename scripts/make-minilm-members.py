#!/usr/bin/env python3
"""Makes three fine-tuned cross-encoder members from all-MiniLM-L6-v2, for
benchmarks: HuggingFace BertForSequenceClassification folders
OUT/rerank1, OUT/rerank2, OUT/rerank3 (heads of 1, 2 and 3 labels), every
encoder weight moved by 2% of its spread (or, with --frozen, left
bit-identical, so the fused model computes the encoder once).

    python3 scripts/make-minilm-members.py minilm/ [--frozen]
    fusec bench minilm/rerank1 minilm/rerank2 minilm/rerank3 --threads 2

Needs numpy; the base comes from scripts/install-minilm.sh (run for you).
"""
import argparse, json, os, struct, subprocess, sys

import numpy as np

DTYPES = {"F32": np.float32, "I64": np.int64}


def read(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        lo, hi = info["data_offsets"]
        out[name] = np.frombuffer(data[lo:hi], dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
    return out


def write(path, tensors):
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        b = a.tobytes()
        dtype = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64"}[a.dtype]
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--frozen", action="store_true", help="keep the encoder bit-identical in every member")
    args = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    base = subprocess.run(["bash", os.path.join(root, "scripts/install-minilm.sh")], check=True,
                          capture_output=True, text=True).stdout.strip()
    weights = read(os.path.join(base, "model.safetensors"))
    config = json.load(open(os.path.join(base, "config.json")))
    hidden = config["hidden_size"]
    for labels in (1, 2, 3):
        rng = np.random.default_rng(labels)
        member = {}
        for name, w in weights.items():
            if w.dtype == np.float32 and not args.frozen:
                w = w + (0.02 * max(float(np.abs(w).max()), 1e-3) * rng.uniform(-1, 1, w.shape)).astype(np.float32)
            member["bert." + name] = w
        member["classifier.weight"] = (0.05 * rng.uniform(-1, 1, (labels, hidden))).astype(np.float32)
        member["classifier.bias"] = (0.01 * rng.uniform(-1, 1, labels)).astype(np.float32)
        out = os.path.join(args.out, f"rerank{labels}")
        os.makedirs(out, exist_ok=True)
        write(os.path.join(out, "model.safetensors"), member)
        cfg = dict(config, architectures=["BertForSequenceClassification"],
                   id2label={str(i): f"LABEL_{i}" for i in range(labels)})
        json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=2)
        print(out)


if __name__ == "__main__":
    sys.exit(main())
