#!/usr/bin/env python3
"""Why a fused model that keeps every member apart can run slower than the
members on ONNX Runtime (CPU): its memory planner lets a value reuse any
freed buffer of exactly the same shape, so a member's buffers are taken
over by the next member's same-shaped values and none returns to the
arena until the last member has run. Where activations are large
(DenseNet-121) the fused session's arena grows several times past one
member's.

This script merges the members' ONNX files into one model two ways and
compares them with the members, in one process:

- flat: every member's nodes and weights in one graph (what `fusec fuse
  --lowering separate` writes, less fusec's rewrites);
- scan: each member's nodes and weights in the body of its own one-step
  `Scan` (a subgraph: its own memory plan, freed when it ends).

It prints the arena each session reserves (ONNX Runtime's verbose log,
"Total allocated bytes", one run) and the p50 speedup of each against the
members one after another (2 threads, spinning off, interleaved rounds;
`enable_mem_reuse=False` on the flat model as a third row).

    python3 scripts/ort-memory-reuse.py members/densenet121/m{2,5,9}.onnx --rounds 15

Needs onnx, onnxruntime and numpy (PyPI); CI does not use it.
"""
import argparse
import copy
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
from onnx import TensorProto, helper


def prefixed(graph, prefix, keep):
    g = copy.deepcopy(graph)

    def ren(n):
        return n if (n == "" or n in keep) else prefix + n

    for n in g.node:
        n.name = prefix + n.name
        n.input[:] = [ren(x) for x in n.input]
        n.output[:] = [ren(x) for x in n.output]
    for t in g.initializer:
        t.name = ren(t.name)
    for v in list(g.value_info) + list(g.output):
        v.name = ren(v.name)
    return g


def merge(models, scan):
    inp = models[0].graph.input[0]
    nodes, inits, outs, infos = [], [], [], []
    if scan:
        inits.append(helper.make_tensor("fuse_ticks", TensorProto.FLOAT, [1], [0.0]))
        inits.append(helper.make_tensor("fuse_axis0", TensorProto.INT64, [1], [0]))
    for k, m in enumerate(models):
        if [i.name for i in m.graph.input] != [inp.name]:
            sys.exit(f"member {k}: expected one input named {inp.name!r}")
        g = prefixed(m.graph, f"m{k}/", {inp.name})
        outs += g.output
        if not scan:
            nodes += g.node
            inits += g.initializer
            infos += g.value_info
            continue
        body_nodes = list(g.node) + [helper.make_node("Identity", [o.name], [o.name + "@body"]) for o in g.output]
        body = helper.make_graph(
            body_nodes,
            f"member{k}",
            [helper.make_tensor_value_info(f"m{k}/tick", TensorProto.FLOAT, [])],
            [helper.make_tensor_value_info(o.name + "@body", o.type.tensor_type.elem_type, None) for o in g.output],
            initializer=list(g.initializer),
            value_info=list(g.value_info),
        )
        stacked = [o.name + "@scan" for o in g.output]
        nodes.append(helper.make_node("Scan", ["fuse_ticks"], stacked, body=body, num_scan_inputs=1, name=f"m{k}/scan"))
        nodes += [helper.make_node("Squeeze", [s, "fuse_axis0"], [o.name]) for s, o in zip(stacked, g.output)]
    graph = helper.make_graph(nodes, "fused", [inp], outs, initializer=inits, value_info=infos)
    out = helper.make_model(graph, opset_imports=models[0].opset_import)
    out.ir_version = models[0].ir_version
    return out


ARENA = r"""
import sys, numpy as np, onnxruntime as ort
ort.set_default_logger_severity(0)
o = ort.SessionOptions(); o.intra_op_num_threads = 2; o.enable_mem_pattern = False
o.enable_mem_reuse = sys.argv[2] == "reuse"
s = ort.InferenceSession(sys.argv[1], o, providers=["CPUExecutionProvider"])
i = s.get_inputs()[0]
print("=== run", flush=True)
s.run(None, {i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32)})
"""


def arena_bytes(path, reuse=True):
    """Bytes the session's CPU arena holds after one run (verbose log)."""
    r = subprocess.run([sys.executable, "-c", ARENA, path, "reuse" if reuse else "no"], capture_output=True, text=True)
    log = (r.stdout + r.stderr).split("=== run", 1)[-1]
    got = [int(line.rsplit(" ", 1)[1]) for line in log.splitlines() if "Total allocated bytes:" in line]
    return max(got) if got else 0


def session(path, reuse=True):
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads = 2
    o.inter_op_num_threads = 1
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    o.enable_mem_reuse = reuse
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("members", nargs="+")
    ap.add_argument("--rounds", type=int, default=15)
    a = ap.parse_args()
    models = [onnx.load(p) for p in a.members]
    tmp = tempfile.mkdtemp(prefix="ort-memory-reuse-")
    flat, scan = os.path.join(tmp, "flat.onnx"), os.path.join(tmp, "scan.onnx")
    onnx.save(merge(models, scan=False), flat)
    onnx.save(merge(models, scan=True), scan)
    mb = lambda b: f"{b / 2**20:.1f} MB"
    print(f"arena after one run: one member {mb(arena_bytes(a.members[0]))}, flat {mb(arena_bytes(flat))}, "
          f"flat without reuse {mb(arena_bytes(flat, reuse=False))}, scan {mb(arena_bytes(scan))}")
    members = [session(p) for p in a.members]
    fused = {"flat": session(flat), "flat, enable_mem_reuse=False": session(flat, reuse=False), "scan": session(scan)}
    i = members[0].get_inputs()[0]
    feed = {i.name: np.random.default_rng(0).standard_normal([d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32)}
    want = [o for s in members for o in s.run(None, feed)]
    for name, s in fused.items():
        err = max(float(np.max(np.abs(x - y))) for x, y in zip(want, s.run(None, feed)))
        print(f"{name}: outputs max abs diff against the members {err:.2g}")
    times = {k: [] for k in ["members", *fused]}
    for _ in range(a.rounds):
        for k in times:
            t0 = time.perf_counter()
            if k == "members":
                for s in members:
                    s.run(None, feed)
            else:
                fused[k].run(None, feed)
            times[k].append(time.perf_counter() - t0)
    print(f"members one after another: p50 {statistics.median(times['members']) * 1e3:.1f} ms")
    for k in fused:
        ratio = sorted(m / f for m, f in zip(times["members"], times[k]))
        print(f"{k}: p50 {statistics.median(times[k]) * 1e3:.1f} ms, speedup p50 {statistics.median(ratio):.3f}x "
              f"(quartiles {ratio[len(ratio) // 4]:.3f}-{ratio[3 * len(ratio) // 4]:.3f})")


if __name__ == "__main__":
    main()
