#!/usr/bin/env python3
"""Times groups of ONNX models side by side on ONNX Runtime (CPU), the
first group being the baseline: each group's models run one after another
on the same input, the groups interleaved round by round (the order
rotating), one session per model. For quick A/B checks of hand-made
variants; `fusec bench` and `fusec verify` are the project's measurements.

    python3 scripts/time-onnx.py r1.onnx,r2.onnx,r3.onnx fused.onnx variant.onnx --rounds 30

A group is a comma-separated list of files. Inputs are made from the first
model's input specs (static shapes): floats uniform in [-1, 1]; int64/int32
inputs named like `*mask*` ones with the last fifth padding (0), `*type*`
0 then 1 from the middle, any other ids in [0, 1000). Prints each group's
p50 and its p50 speedup over the baseline with a 95% bootstrap interval
over the rounds. With --profile, then ONNX Runtime's kernel time per op
type of each model (its profiler, the rounds after the warm-up).

Needs numpy and onnxruntime.
"""
import argparse
import collections
import json
import os
import time

import numpy as np
import onnxruntime as ort

INT = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}


def session(path, threads, profiling=False):
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    o.log_severity_level = 3
    o.enable_profiling = profiling
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])


def profile(path, x, threads, warmup, rounds):
    """Kernel time per op type, ms per run, and node counts."""
    s = session(path, threads, profiling=True)
    for _ in range(warmup + rounds):
        s.run(None, x)
    f = s.end_profiling()
    with open(f) as fh:
        events = json.load(fh)
    os.remove(f)
    starts = sorted(e["ts"] for e in events if e["name"] == "model_run")
    ms, nodes = collections.Counter(), collections.Counter()
    for e in events:
        if e["ts"] >= starts[warmup] and e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            ms[e["args"]["op_name"]] += e["dur"] / 1e3 / rounds
            nodes[e["args"]["op_name"]] += 1
    return ms, {k: v // rounds for k, v in nodes.items()}


def make_inputs(s, rng):
    x = {}
    for i in s.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        if i.type in INT:
            name = i.name.lower()
            a = np.zeros(shape, INT[i.type])
            if "mask" in name:
                a[...] = 1
                a[..., shape[-1] - shape[-1] // 5:] = 0
            elif "type" in name:
                a[..., shape[-1] // 2:] = 1
            else:
                a = rng.integers(0, 1000, shape).astype(INT[i.type])
            x[i.name] = a
        else:
            x[i.name] = rng.uniform(-1, 1, shape).astype(np.float32)
    return x


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("groups", nargs="+", help="comma-separated ONNX files run one after another; the first group is the baseline")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--profile", action="store_true", help="then print each model's kernel time per op type")
    a = ap.parse_args()
    if len(a.groups) < 2:
        ap.error("give a baseline group and at least one group to compare")
    rng = np.random.default_rng(0)
    groups = [(g, [session(p, a.threads) for p in g.split(",")]) for g in a.groups]
    x = make_inputs(groups[0][1][0], rng)
    times = {g: [] for g, _ in groups}
    for r in range(a.warmup + a.rounds):
        k = r % len(groups)
        for g, sessions in groups[k:] + groups[:k]:
            t = time.perf_counter()
            for s in sessions:
                s.run(None, x)
            if r >= a.warmup:
                times[g].append(time.perf_counter() - t)
    base = np.array(times[a.groups[0]])
    print(f"{a.groups[0]} (baseline): p50 {np.median(base) * 1e3:.1f} ms, {a.rounds} rounds, {a.threads} threads")
    for g in a.groups[1:]:
        t = np.array(times[g])
        boot = [np.median(base[i]) / np.median(t[i]) for i in (rng.integers(0, len(t), len(t)) for _ in range(2000))]
        lo, hi = np.percentile(boot, [2.5, 97.5])
        print(f"{g}: p50 {np.median(t) * 1e3:.1f} ms, speedup p50 {np.median(base) / np.median(t):.3f}x (95% {lo:.3f}-{hi:.3f})")
    if a.profile:
        for path in dict.fromkeys(p for g in a.groups for p in g.split(",")):
            ms, nodes = profile(path, x, a.threads, a.warmup, a.rounds)
            print(f"{path}: kernel time {sum(ms.values()):.2f} ms a run")
            for op, t in ms.most_common():
                print(f"  {op:<28} {t:7.2f} ms  {nodes[op]:4d} nodes")


if __name__ == "__main__":
    main()
