#!/usr/bin/env python3
"""Checks fusec's Core ML mapping of LSTM against coremltools' own: the
same torch `nn.LSTM` weights, once through `torch.onnx` and `fusec fuse`
(ONNX's gate order input, output, forget, cell), once through coremltools'
torch converter (from torch's input, forget, cell, output); both MIL
programs' `lstm` ops must hold the same constants (weights, the summed
biases, initial states) and the same attributes. Core ML runs only on
macOS, so this is how the gate order is checked on Linux.

    python3 scripts/check-coreml-lstm.py target/release/fusec [--forward]

Needs torch and coremltools (PyPI) in this python. Prints each input's
largest difference and exits 1 on any mismatch.
"""
import os
import sys
import tempfile
import subprocess
import warnings

warnings.filterwarnings("ignore")
import numpy as np  # noqa: E402
import torch  # noqa: E402
import coremltools as ct  # noqa: E402
from coremltools.converters.mil.frontend.milproto import load as milproto  # noqa: E402

SEQ, BATCH, INPUT, HIDDEN = 5, 2, 8, 6


class Seq(torch.nn.Module):
    def __init__(self, bidirectional):
        super().__init__()
        self.lstm = torch.nn.LSTM(INPUT, HIDDEN, bidirectional=bidirectional)
        d = 2 if bidirectional else 1
        # Non-zero initial states, so that their layout is checked too.
        self.register_buffer("h0", torch.randn(d, BATCH, HIDDEN))
        self.register_buffer("c0", torch.randn(d, BATCH, HIDDEN))

    def forward(self, x):
        y, _ = self.lstm(x, (self.h0, self.c0))
        return y


def lstm_op(path):
    spec = ct.utils.load_spec(path)
    weights = os.path.join(path, "Data", "com.apple.CoreML", "weights")
    prog = milproto.load(spec, spec.specificationVersion, file_weights_dir=weights)
    ops = [op for op in prog.functions["main"].operations if op.op_type == "lstm"]
    if len(ops) != 1:
        raise SystemExit(f"{path}: {len(ops)} lstm ops, expected 1")
    return ops[0]


def main():
    fusec = sys.argv[1]
    bidirectional = "--forward" not in sys.argv[2:]
    torch.manual_seed(0)
    model = Seq(bidirectional).eval()
    x = torch.randn(SEQ, BATCH, INPUT)
    tmp = tempfile.mkdtemp()
    onnx_path = os.path.join(tmp, "m.onnx")
    torch.onnx.export(model, (x,), onnx_path, opset_version=17, dynamo=False)
    # Two members with the same weights: fusec shares the LSTM (one op).
    ours = os.path.join(tmp, "fusec.mlpackage")
    subprocess.run([fusec, "fuse", onnx_path, onnx_path, "-o", ours], check=True, capture_output=True)
    theirs = os.path.join(tmp, "coremltools.mlpackage")
    traced = torch.jit.trace(model, x)
    ct.convert(
        traced,
        inputs=[ct.TensorType(name="x", shape=x.shape)],
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS15,
        compute_precision=ct.precision.FLOAT32,
    ).save(theirs)
    a, b = lstm_op(ours), lstm_op(theirs)
    bad = 0
    for name in sorted(set(a.inputs) | set(b.inputs)):
        if name == "x":
            continue
        va, vb = a.inputs.get(name), b.inputs.get(name)
        if va is None or vb is None:
            print(f"{name}: only in {'coremltools' if va is None else 'fusec'}")
            bad += 1
            continue
        if va.val is None or vb.val is None:
            print(f"{name}: not a constant in {'fusec' if va.val is None else 'coremltools'}")
            bad += 1
            continue
        xa, xb = np.asarray(va.val), np.asarray(vb.val)
        if xa.dtype.kind in "fc":
            if xa.shape != xb.shape:
                print(f"{name}: shape {xa.shape} against coremltools' {xb.shape}")
                bad += 1
                continue
            diff = float(np.max(np.abs(xa - xb))) if xa.size else 0.0
            ok = diff <= 1e-6
            print(f"{name}: {list(xa.shape)}, max abs difference {diff:.2e}{'' if ok else '  MISMATCH'}")
        else:
            ok = np.array_equal(xa, xb)
            print(f"{name}: {xa} {'' if ok else f'against coremltools {xb}  MISMATCH'}")
        bad += not ok
    if bad:
        raise SystemExit(f"{bad} of the lstm's inputs differ from coremltools' own conversion")
    print(f"ok: fusec's lstm ({'bidirectional' if bidirectional else 'forward'}) holds what coremltools' torch converter writes")


if __name__ == "__main__":
    main()
