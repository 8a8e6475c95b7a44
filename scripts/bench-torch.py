#!/usr/bin/env python3
"""Times a fused model against its members with PyTorch, where a GPU is but
ONNX Runtime's CUDA provider is not (the common quick check: PyTorch and CUDA
installed, no onnxruntime-gpu, no network).

The fused ONNX model (`fusec fuse ... -o super.onnx`) and the members' ONNX
files (`fusec convert member.safetensors -o member.onnx`, or the members'
own torch.onnx exports) are loaded as PyTorch modules with onnx2torch, the
same converter and the same options for all, and timed one after another
(the baseline: every member in turn) against the fused model, in
interleaved rounds after warm-up, eager and with CUDA graphs, in fp32 and
fp16, batch as in the files. It prints the table `fusec bench` prints
(mean, p50, p95, p99, RPS, speedup with a 95% interval: a bootstrap over
the rounds, each round's latencies kept together) and checks the fused
outputs (MEMBER/OUTPUT) against each member's, per precision.

    python3 scripts/bench-torch.py --fused super.onnx \\
        --members coco.onnx aquarium.onnx vehicles.onnx --device cuda --runs 100
    python3 scripts/bench-torch.py --fused super.onnx --members a.onnx b.onnx \\
        --device cpu --runs 5 --precision fp32        # the CPU self-test

Needs torch, onnx and onnx2torch (pip install onnx2torch: pure Python).
Inputs: --input FILE.safetensors (named as the models' inputs), else
deterministic ones (floats uniform in [-1, 1], integers 1, as token ids).
"""
import argparse
import json
import os
import struct
import sys
import time

import numpy as np

DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32,
          "BOOL": np.bool_, "U8": np.uint8, "I8": np.int8}


def read_safetensors(path):
    """Tensors of a safetensors file as numpy arrays (no safetensors package needed)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        lo, hi = info["data_offsets"]
        out[name] = np.frombuffer(data[lo:hi], dtype=DTYPES[info["dtype"]]).reshape(info["shape"]).copy()
    return out


def io_names(path):
    import onnx
    m = onnx.load(path, load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    ins = []
    for i in m.graph.input:
        if i.name in inits:
            continue
        t = i.type.tensor_type
        ins.append((i.name, t.elem_type, [d.dim_value for d in t.shape.dim]))
    return ins, [o.name for o in m.graph.output]


def make_inputs(specs, given):
    import onnx
    out = {}
    for name, elem, shape in specs:
        if given is not None:
            if name not in given:
                sys.exit(f"error: --input has no tensor `{name}` (it holds {sorted(given)})")
            out[name] = given[name]
        elif elem in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
            out[name] = np.random.default_rng(0x5EED).uniform(-1, 1, shape).astype(np.float32)
        else:
            out[name] = np.ones(shape, dtype=np.int64)
    return out


def for_onnx2torch(path):
    """The model as onnx2torch reads it right: every zero-valued scalar
    attribute set explicitly (writers may omit a field equal to its
    default: fusec's protobuf encoder writes `axis=0` as a bare INT
    attribute, which ONNX Runtime reads as 0 but onnx2torch does not), and
    an Identity after each graph output a multi-output node makes (a
    Split's outputs as graph outputs come back from onnx2torch as one
    tuple, the others missing). Same computation, same names."""
    import onnx
    m = onnx.load(path)
    outputs = {o.name for o in m.graph.output}
    nodes = []
    for n in m.graph.node:
        nodes.append(n)
        if len(n.output) > 1:
            for i, o in enumerate(n.output):
                if o in outputs:
                    n.output[i] = o + "::before_identity"
                    nodes.append(onnx.helper.make_node("Identity", [n.output[i]], [o], name=o + "::identity"))
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    for n in m.graph.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.INT and not a.HasField("i"):
                a.i = 0
            elif a.type == onnx.AttributeProto.FLOAT and not a.HasField("f"):
                a.f = 0.0
            elif a.type == onnx.AttributeProto.STRING and not a.HasField("s"):
                a.s = b""
    return m


class Model:
    """One ONNX file as a PyTorch module, on a device, in a precision."""

    def __init__(self, path, device, half):
        from onnx2torch import convert
        self.name = os.path.splitext(os.path.basename(path))[0]
        self.inputs, self.outputs = io_names(path)
        self.module = convert(for_onnx2torch(path)).eval().to(device)
        self.half = half
        if half:
            self.module = self.module.half()
        self.device = device
        self.graph = None
        self.static_in = None
        self.static_out = None

    def feed(self, arrays):
        import torch
        ts = []
        for name, _, _ in self.inputs:
            t = torch.from_numpy(arrays[name]).to(self.device)
            if self.half and t.is_floating_point():
                t = t.half()
            ts.append(t)
        return ts

    def run(self, feed):
        import torch
        with torch.inference_mode():
            out = self.module(*feed)

        def flat(o):
            return [t for x in o for t in flat(x)] if isinstance(o, (tuple, list)) else [o]

        return flat(out)

    def capture(self, feed):
        """Records a CUDA graph of one forward pass on static inputs."""
        import torch
        self.static_in = [t.clone() for t in feed]
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                self.run(self.static_in)
        torch.cuda.current_stream().wait_stream(s)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_out = self.run(self.static_in)

    def replay(self):
        self.graph.replay()
        return self.static_out


def bootstrap(base, other, n=2000, seed=0):
    """95% interval of p50(base)/p50(other) over rounds resampled in pairs."""
    base, other = np.asarray(base), np.asarray(other)
    if len(base) < 2 or len(base) != len(other):
        return None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(base), size=(n, len(base)))
    ratios = np.median(base[idx], axis=1) / np.median(other[idx], axis=1)
    return float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))


def stats(ms):
    s = np.sort(np.asarray(ms))
    rank = lambda p: float(s[min(len(s), max(1, int(np.ceil(p * len(s))))) - 1])
    mean = float(s.mean())
    return {"mean_ms": mean, "p50_ms": rank(0.5), "p95_ms": rank(0.95), "p99_ms": rank(0.99), "rps": 1e3 / mean}


def lowering_of(path):
    """The lowering a fused model was made with (its `fusec.lowering` metadata)."""
    import onnx
    m = onnx.load(path, load_external_data=False)
    meta = {p.key: p.value for p in m.metadata_props}
    if "fusec.lowering" not in meta:
        sys.exit(f"error: {path} has no fusec.lowering metadata: fuse it with this fusec")
    return json.loads(meta["fusec.lowering"])


def lowering_name(path):
    lw = lowering_of(path)
    name = lw["lowering"] + (f" from {lw['group_from']:g}" if lw["lowering"] == "regions" else "")
    return name + (", BatchNorm kept" if lw["keep_bn"] else "")


def write_calibration(args, rows, where):
    """The fastest fp32 fused row (CUDA graphs when measured, else eager) as
    a `fusec fuse --calibration` file."""
    fp32 = [r for r in rows if r["fused"] and r["precision"] == "fp32"]
    if not fp32:
        sys.exit("error: --calibrate needs fp32 rows (--precision fp32)")
    mode = "cuda graphs" if any(r["mode"] == "cuda graphs" for r in fp32) else "eager"
    best = max((r for r in fp32 if r["mode"] == mode), key=lambda r: r["speedup_p50"])
    cal = {"config": best["config"], **lowering_of(best["fused"]), "speedup_p50": best["speedup_p50"],
           "device": f"torch ({where}), {mode}",
           "members": [os.path.splitext(os.path.basename(p))[0] for p in args.members]}
    with open(args.calibrate, "w") as f:
        json.dump(cal, f, indent=1)
    print(f"wrote {args.calibrate}: `{best['config']}` ({best['speedup_p50']:.2f}x); "
          f"use it with fusec fuse ... --calibration {args.calibrate}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fused", nargs="+", required=True,
                    help="the fused ONNX model from fusec fuse, or several (each lowering one file)")
    ap.add_argument("--members", nargs="+", required=True, help="the members' ONNX files (names: file stems)")
    ap.add_argument("--input", help="inputs, a safetensors file named as the models' inputs")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--precision", nargs="+", default=["fp32", "fp16"], choices=["fp32", "fp16"])
    ap.add_argument("--no-cuda-graphs", action="store_true", help="time eager only")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--atol", type=float, default=None, help="default 1e-4 (fp32), 1e-2 (fp16)")
    ap.add_argument("--json-out", help="also write the rows as JSON")
    ap.add_argument("--calibrate", metavar="FILE",
                    help="write the fastest fp32 lowering measured (of the --fused files) to FILE, "
                         "for fusec fuse --calibration FILE")
    args = ap.parse_args()

    import torch
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda but torch.cuda.is_available() is false (use --device cpu to self-test)")
    given = read_safetensors(args.input) if args.input else None
    spec, _ = io_names(args.fused[0])
    arrays = make_inputs(spec, given)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    modes = ["eager"] + ([] if args.no_cuda_graphs or device.type != "cuda" else ["cuda graphs"])

    rows, failed = [], []
    many = len(args.fused) > 1
    for precision in args.precision:
        half = precision == "fp16"
        members = [Model(p, device, half) for p in args.members]
        atol = args.atol if args.atol is not None else (1e-2 if half else 1e-4)
        fused_models = [Model(p, device, half) for p in args.fused]
        want = {}
        for m in members:
            for name, t in zip(m.outputs, m.run(m.feed(arrays))):
                want[f"{m.name}/{name}"] = t
        # Equivalence: every member's outputs against each fused MEMBER/OUTPUT.
        worst = {}
        for path, fused in zip(args.fused, fused_models):
            got = dict(zip(fused.outputs, fused.run(fused.feed(arrays))))
            worst[path] = 0.0
            for key, t in want.items():
                if key not in got:
                    sys.exit(f"error: {path} has no output `{key}`: was it fused from these members?")
                d = float((got[key].float() - t.float()).abs().max())
                worst[path] = max(worst[path], d)
                if d > atol + atol * float(t.float().abs().max()):
                    failed.append(f"{precision} {path} {key}: max abs {d:.3e}")
        for mode in modes:
            feeds_m = [m.feed(arrays) for m in members]
            feeds_f = [f.feed(arrays) for f in fused_models]
            if mode == "cuda graphs":
                try:
                    for m, f in zip(members, feeds_m):
                        m.capture(f)
                    for fm, f in zip(fused_models, feeds_f):
                        fm.capture(f)
                except Exception as e:  # noqa: BLE001 - reported, not hidden
                    print(f"note: {precision} {mode}: not capturable ({type(e).__name__}: {e})", file=sys.stderr)
                    continue
                runners = [lambda: [m.replay() for m in members]] + [fm.replay for fm in fused_models]
            else:
                runners = [lambda: [m.run(f) for m, f in zip(members, feeds_m)]]
                runners += [(lambda fm=fm, f=f: fm.run(f)) for fm, f in zip(fused_models, feeds_f)]
            times = [[] for _ in runners]
            for r in range(args.warmup + args.runs):
                for k, run in enumerate(runners):
                    sync()
                    t0 = time.perf_counter()
                    run()
                    sync()
                    if r >= args.warmup:
                        times[k].append((time.perf_counter() - t0) * 1e3)
            base = stats(times[0])
            names = ["members one after another"] + [
                f"fused ({lowering_name(p)})" if many else "fused" for p in args.fused]
            for k, name in enumerate(names):
                st = stats(times[k])
                ci = bootstrap(times[0], times[k]) if k > 0 else None
                rows.append({"config": f"{name}, {precision}, {mode}", "device": f"torch ({where})", **st,
                             "speedup_p50": base["p50_ms"] / st["p50_ms"], "speedup_p50_interval": ci,
                             "max_abs": worst[args.fused[k - 1]] if k > 0 else 0.0,
                             "fused": args.fused[k - 1] if k > 0 else None, "precision": precision, "mode": mode})

    print(f"{len(args.members)} members ({', '.join(os.path.splitext(os.path.basename(p))[0] for p in args.members)}) "
          f"on torch {torch.__version__} ({where}), onnx2torch modules: {args.warmup} warm-up + {args.runs} timed "
          f"rounds, interleaved\n")
    print("| config | device | mean ms | p50 ms | p95 ms | p99 ms | RPS | speedup (p50) | 95% interval | max abs |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ci = f"{r['speedup_p50_interval'][0]:.2f}–{r['speedup_p50_interval'][1]:.2f}x" if r["speedup_p50_interval"] else "-"
        print(f"| {r['config']} | {r['device']} | {r['mean_ms']:.2f} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | "
              f"{r['p99_ms']:.2f} | {r['rps']:.1f} | {r['speedup_p50']:.2f}x | {ci} | {r['max_abs']:.2e} |")
    print("\n(each speedup: the members one after another of the same precision and mode over the fused model)")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"members": args.members, "fused": args.fused, "runs": args.runs, "rows": rows}, f, indent=1)
    if args.calibrate:
        write_calibration(args, rows, where)
    if failed:
        print("outputs differ: " + "; ".join(failed), file=sys.stderr)
        return 1
    print("outputs: every member's equal the fused model's within the tolerance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
