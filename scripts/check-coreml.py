#!/usr/bin/env python3
"""Loads a Core ML ML program package with coremltools and type-checks it.

    check-coreml.py super.mlpackage [--ops]

Reads Data/com.apple.CoreML/model.mlmodel, rebuilds the MIL program with
coremltools.converters.mil.frontend.milproto.load (every operation is built
by coremltools' own op definitions, its output type inferred and compared
with the type the file declares; weights are read from weight.bin), and
checks the model description against the program's inputs and outputs,
and that no tensor has more than 5 dimensions (Core ML's limit, which
coremltools checks only when it converts, not when it loads).
Prints a summary (inputs, outputs, op histogram; with --ops every
non-const op with its output types) and exits 0; any failure raises.
This is what can be checked on Linux: running the model needs macOS.
"""
import collections
import logging
import os
import sys
import warnings

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
# coremltools prints "Failed to load _MLModelProxy" on Linux; keep stderr for real errors.
_stderr = os.dup(2)
os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
import coremltools as ct  # noqa: E402
from coremltools.converters.mil.frontend.milproto import load as milproto  # noqa: E402
from coremltools.converters.mil.mil import types  # noqa: E402
os.dup2(_stderr, 2)


def fmt(var):
    t = var.sym_type
    if types.is_tensor(t):
        return f"{types.builtin_to_string(t.get_primitive())}{list(t.get_shape())}"
    return types.builtin_to_string(t)


def main():
    path = sys.argv[1]
    show_ops = "--ops" in sys.argv[2:]
    spec = ct.utils.load_spec(path)
    if spec.WhichOneof("Type") != "mlProgram":
        raise SystemExit(f"{path}: not an ML program")
    weights = os.path.join(path, "Data", "com.apple.CoreML", "weights")
    prog = milproto.load(spec, spec.specificationVersion, file_weights_dir=weights)
    main_fn = prog.functions["main"]
    desc_in = [i.name for i in spec.description.input]
    desc_out = [o.name for o in spec.description.output]
    got_in = list(main_fn.inputs.keys())
    got_out = [v.name for v in main_fn.outputs]
    if desc_in != got_in or desc_out != got_out:
        raise SystemExit(f"{path}: description {desc_in} -> {desc_out} != program {got_in} -> {got_out}")
    for o, v in zip(spec.description.output, main_fn.outputs):
        shape = list(o.type.multiArrayType.shape)
        if shape != list(v.shape):
            raise SystemExit(f"{path}: output {o.name} declared {shape}, program gives {list(v.shape)}")
    print(f"spec {spec.specificationVersion}, opset {spec.mlProgram.functions['main'].opset}")
    for name, var in main_fn.inputs.items():
        print(f"input {name} {fmt(var)}")
    for v in main_fn.outputs:
        print(f"output {v.name} {fmt(v)}")
    for op in main_fn.operations:
        for v in op.outputs:
            if types.is_tensor(v.sym_type) and len(v.sym_type.get_shape()) > 5:
                raise SystemExit(f"{path}: {op.op_type} {op.name} gives {fmt(v)}: Core ML tensors have at most 5 dimensions")
    hist = collections.Counter(op.op_type for op in main_fn.operations)
    for op_type, n in sorted(hist.items()):
        print(f"op {op_type} {n}")
    if show_ops:
        for op in main_fn.operations:
            if op.op_type != "const":
                print(f"{op.op_type} {' '.join(fmt(v) for v in op.outputs)}")
    print(f"ok: {sum(hist.values())} operations load and type-check in coremltools {ct.__version__}")


if __name__ == "__main__":
    main()
