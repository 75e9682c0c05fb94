"""Summarise an ONNX Runtime profile (SessionOptions.ProfilePrefix): time
per operator type and the heaviest nodes, over the last --runs model runs
(the first runs are warm-up). Usage: ortprof.py PROFILE.json [--runs 2]."""

import argparse
import collections
import json


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
    for e in ev:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time") or e["ts"] < lo:
            continue
        op = e["args"].get("op_name", "?")
        by_op[op] += e["dur"]
        count[op] += 1
        by_node[e["name"][: -len("_kernel_time")] + " (" + op + ")"] += e["dur"]
    n = len(runs)
    tot = sum(by_op.values()) / n
    print(f"model_run {total_run/1000:.1f} ms; kernels {tot/1000:.1f} ms per run")
    for op, d in by_op.most_common():
        print(f"  {op:28s} {d/n/1000:8.1f} ms {100*d/n/tot:5.1f}%  x{count[op]//n}")
    print("top nodes:")
    for name, d in by_node.most_common(args.top):
        print(f"  {d/n/1000:8.1f} ms  {name}")


if __name__ == "__main__":
    main()
