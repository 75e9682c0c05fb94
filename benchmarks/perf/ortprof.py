"""Summarise an ONNX Runtime profile (SessionOptions.ProfilePrefix): time
per kernel class (matrix products, migu's fused kernels, elementwise,
layout, reductions) and per operator type, the heaviest nodes, and the
speed of the matrix products by role (forward, input gradient, weight
gradient, attention), over the last --runs model runs (the first runs are
warm-up).
Usage: ortprof.py PROFILE.json [--runs 2] [--top 25]."""

import argparse
import collections
import json
import math

MATMULS = ("Gemm", "MatMul", "FusedMatMul", "MatMulBF16", "MatMulF32", "BatchMatMul")

# Kernel classes by operator type; the profile does not name an op's
# domain, so migu's fused kernels are listed by name (onnx/kernels).
FUSED = {
    "RMSNorm", "RMSNormGrad", "LayerNorm", "LayerNormGrad", "SwiGLU", "SwiGLUGrad", "Gelu", "GeluGrad",
    "Rotary", "RotaryGrad", "Softmax", "SoftmaxGrad", "PickLogSoftmax", "PickLogSoftmaxGrad", "AbsColSum",
    "SwiGLUTaps", "GeluTaps",
}
LAYOUT = {
    "Transpose", "Reshape", "Concat", "Slice", "Split", "Gather", "GatherElements", "Expand", "Unsqueeze",
    "Squeeze", "Shape", "ConstantOfShape", "ScatterElements", "ScatterND", "Identity", "Tile", "Range",
    "Trilu", "Flatten", "Pad", "MemcpyFromHost", "MemcpyToHost",
}
REDUCTIONS = {"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceL2", "ReduceSumSquare", "LogSoftmax",
              "ArgMax", "CumSum"}


def kernel_class(op):
    """The class of an operator type. ORT's profile names an op without its
    domain, so ai.migu.Softmax and ONNX's Softmax share a row (with the
    kernel library, every attention softmax is migu's)."""
    if op in MATMULS:
        return "matrix products"
    if op in FUSED:
        return "fused kernels (ai.migu)"
    if op in LAYOUT:
        return "layout and indexing"
    if op in REDUCTIONS:
        return "reductions"
    return "elementwise and other"


def shapes(args, key):
    return [list(d.values())[0] for d in args.get(key, [])]


def matmul_flops(op, args):
    """2·M·N·K of a (batched) matrix product from its recorded shapes: the
    output gives M (all but the last axis) and N; A's size over M gives K,
    whatever A's transposition. BatchMatMul's operands and output are in
    any axis order (its perms): K is a size that A and B have twice more
    than the output and that leaves two of the output's axes as the batch,
    the largest where several do (attention's batch axes, sequences and
    heads, are the small ones)."""
    ins, outs = shapes(args, "input_type_shape"), shapes(args, "output_type_shape")
    if len(ins) < 2 or not outs or not outs[0]:
        return 0
    out = outs[0]
    if op == "BatchMatMul":
        left = collections.Counter(ins[0]) + collections.Counter(ins[1]) - collections.Counter(out)
        pa, pb, py = math.prod(ins[0]), math.prod(ins[1]), math.prod(out)
        pairs = {out[i] * out[j] for i in range(len(out)) for j in range(i + 1, len(out))}
        # |A|·|B| / |Y| = batch·K², and the batch is two of Y's axes.
        ks = [k for k, c in left.items() if c >= 2 and k > 0 and (pa * pb) % (py * k * k) == 0
              and (pa * pb) // (py * k * k) in pairs]
        return 2 * py * max(ks) if ks else 0
    rows = math.prod(out[:-1])
    return 2 * math.prod(out) * (math.prod(ins[0]) / rows) if rows else 0


def role(name, args):
    """How the product is used: weight gradients (the gradient graph names
    them after the weight), attention (4-D outputs: one matrix per head),
    and the rest (linear layers' outputs and input gradients)."""
    out = (shapes(args, "output_type_shape") or [[]])[0]
    if len(out) == 4:
        kind = "attention"
    elif ".weight/" in name or "weight_t" in name:
        kind = "weight gradient"
    else:
        kind = "other"
    return ("backward " if name.startswith("bw/") else "forward ") + kind


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("profile")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    ev = json.load(open(args.profile))
    runs = [e for e in ev if e.get("name") == "model_run"]
    runs = runs[-args.runs:]
    lo = min(r["ts"] for r in runs)
    total_run = sum(r["dur"] for r in runs) / len(runs)
    by_op, by_node, count = collections.Counter(), collections.Counter(), collections.Counter()
    mm_time, mm_flops, mm_count = collections.Counter(), collections.Counter(), collections.Counter()
    for e in ev:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time") or e["ts"] < lo:
            continue
        op = e["args"].get("op_name", "?")
        name = e["name"][: -len("_kernel_time")]
        by_op[op] += e["dur"]
        count[op] += 1
        by_node[name + " (" + op + ")"] += e["dur"]
        if op in MATMULS:
            r = role(name, e["args"])
            mm_time[r] += e["dur"]
            mm_flops[r] += matmul_flops(op, e["args"])
            mm_count[r] += 1
    n = len(runs)
    tot = sum(by_op.values()) / n
    print(f"model_run {total_run/1000:.1f} ms; kernels {tot/1000:.1f} ms per run")
    by_class, class_count = collections.Counter(), collections.Counter()
    for op, d in by_op.items():
        by_class[kernel_class(op)] += d
        class_count[kernel_class(op)] += count[op]
    print("by kernel class:")
    for c, d in by_class.most_common():
        print(f"  {c:36s} {d/n/1000:8.1f} ms {100*d/n/tot:5.1f}%  x{class_count[c]//n}")
    for op, d in by_op.most_common():
        print(f"  {op:28s} {d/n/1000:8.1f} ms {100*d/n/tot:5.1f}%  x{count[op]//n}")
    mm_total = sum(mm_time.values()) / n
    print(f"matrix products: {mm_total/1000:.1f} ms, {100*mm_total/tot:.1f}% of kernel time")
    for r, d in mm_time.most_common():
        print(f"  {r:28s} {d/n/1000:8.1f} ms {mm_flops[r]/n/1e9:7.2f} GFLOP {mm_flops[r]/d/1e3:7.1f} GFLOP/s  x{mm_count[r]//n}")
    print("top nodes:")
    for name, d in by_node.most_common(args.top):
        print(f"  {d/n/1000:8.1f} ms  {name}")


if __name__ == "__main__":
    main()
