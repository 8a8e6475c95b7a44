#!/usr/bin/env python3
"""How much of the members' time is their matrix products by constant
weights (a transformer's projections): builds one model holding only those
products (every MatMul or Gemm whose second input is a 2-D initializer, at
the shapes the members run them, on random inputs), then times it against
the members one after another, interleaved, on ONNX Runtime (CPU). No
lowering that keeps the products as they are can make the members faster
than "members over products".

    python3 scripts/products-roofline.py r1.onnx r2.onnx r3.onnx --rounds 30

Members need static input shapes (fusec's exports have them). Inputs for
the members as scripts/time-onnx.py makes them. Needs numpy, onnx and
onnxruntime.
"""
import argparse
import importlib.util
import os
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper, shape_inference

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("time_onnx", os.path.join(HERE, "time-onnx.py"))
time_onnx = importlib.util.module_from_spec(spec)
spec.loader.exec_module(time_onnx)


def products(paths):
    """(M, K, N) of every product by a constant 2-D weight in the members."""
    shapes = []
    for p in paths:
        m = shape_inference.infer_shapes(onnx.load(p))
        g = m.graph
        consts = {t.name: t for t in g.initializer}
        known = {v.name: v for v in list(g.value_info) + list(g.input)}
        for n in g.node:
            if n.op_type not in ("MatMul", "Gemm") or n.input[1] not in consts:
                continue
            w = consts[n.input[1]]
            if len(w.dims) != 2 or n.input[0] not in known:
                continue
            a = [d.dim_value for d in known[n.input[0]].type.tensor_type.shape.dim]
            trans_b = any(x.name == "transB" and x.i == 1 for x in n.attribute)
            k, nn = (w.dims[1], w.dims[0]) if trans_b else (w.dims[0], w.dims[1])
            shapes.append((int(np.prod(a[:-1])), k, nn))
    return shapes


def products_model(shapes, rng):
    inputs, inits, nodes, outputs = {}, [], [], []
    for i, (m, k, n) in enumerate(shapes):
        x = f"x_{m}_{k}"
        inputs.setdefault(x, helper.make_tensor_value_info(x, TensorProto.FLOAT, [m, k]))
        inits.append(numpy_helper.from_array((rng.standard_normal((k, n)) * 0.02).astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [f"y{i}"]))
        outputs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [m, n]))
    g = helper.make_graph(nodes, "products", list(inputs.values()), outputs, inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    feeds = {x: rng.uniform(-1, 1, [d.dim_value for d in v.type.tensor_type.shape.dim]).astype(np.float32)
             for x, v in inputs.items()}
    return model.SerializeToString(), feeds


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("members", nargs="+")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    shapes = products(a.members)
    if not shapes:
        raise SystemExit("no MatMul or Gemm by a 2-D initializer with a known input shape in these members")
    flops = sum(2 * m * k * n for m, k, n in shapes)
    members = [time_onnx.session(p, a.threads) for p in a.members]
    x = time_onnx.make_inputs(members[0], rng)
    model, feeds = products_model(shapes, rng)
    prod = time_onnx.session(model, a.threads)
    tm, tp = [], []
    for r in range(a.warmup + a.rounds):
        t0 = time.perf_counter()
        for s in members:
            s.run(None, x)
        t1 = time.perf_counter()
        prod.run(None, feeds)
        t2 = time.perf_counter()
        if r >= a.warmup:
            tm.append(t1 - t0)
            tp.append(t2 - t1)
    tm, tp = np.median(tm), np.median(tp)
    print(f"members one after another: p50 {tm * 1e3:.1f} ms")
    print(f"their {len(shapes)} products by constant weights alone: p50 {tp * 1e3:.1f} ms "
          f"({flops / tp / 1e9:.0f} GFLOP/s), {tp / tm:.0%} of the members")
    print(f"members over products: {tm / tp:.2f}x (the most a lowering that keeps the products can gain)")


if __name__ == "__main__":
    main()
