"""Writes benchmarks/cl/RESULTS.md from a `migu continual` run's results.json:
the exact commands, the comparison per method (mean ± std over seeds of
average accuracy, backward transfer and forgetting), each seed's numbers, the
final accuracy per task against chance, and the wall times. Standard library
only.

usage: results.py RESULTS_JSON COMMANDS_FILE TIMES_FILE OUT_MD
"""
import json
import math
import os
import platform
import subprocess
import sys
import time

MARKER = "<!-- Everything below is kept when run.sh rewrites this file. -->"
results_path, commands_path, times_path, out_path = sys.argv[1:5]
res = json.load(open(results_path))
commands = open(commands_path).read().strip()
times = dict(line.split("=", 1) for line in open(times_path).read().split() if "=" in line)
score = res["scores"][0]
tasks = res["tasks"]


def pct(v):
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def stat(s):
    if not s:
        return "–"
    if s.get("n", 1) > 1:
        return f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}"
    return f"{100 * s['mean']:.1f}"


def chance(task_dir):
    try:
        return 1 / len(json.load(open(os.path.join(task_dir, "labels.json"))))
    except OSError:
        return None


cpu = "unknown CPU"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
except OSError:
    pass
load = os.getloadavg() if hasattr(os, "getloadavg") else None

out = []
w = out.append
w("# Continual-learning benchmark, reduced (order over the CL benchmark, tiny Llama, several seeds)\n")
w("Written by `benchmarks/cl/run.sh` from `" + results_path + "`; rerun the script to reproduce it.\n")
w("## Commands\n")
w("```sh\n" + commands + "\n```\n")
w("## Setup\n")
cfg = res["config"]
job = cfg.get("job", {})
train = job.get("train", {})
w(f"- Sequence `{res['sequence']}`: {' → '.join(tasks)}.")
for s in res.get("skipped") or []:
    w(f"- Skipped: {s['task']} ({s['reason']}).")
w(f"- Training rows per task: {cfg.get('train_samples') or 'all'} (drawn per seed); test rows per task: {cfg.get('test_samples') or 'all'} (the same for every method and seed).")
w(f"- Methods {', '.join(cfg['methods'])}; seeds {', '.join(str(s) for s in cfg['seeds'])}.")
w(f"- Per task: {job.get('epochs', 1)} epoch(s), batch {job.get('batch_size')}, max length {job.get('max_len')}, learning rate {train.get('optim', {}).get('lr')}, "
  f"schedule {train.get('schedule') or 'constant'}, MIGU T = {train.get('t', 0.7)} ({train.get('mode') or 'grad'} mode), "
  f"LoRA r = {job.get('lora', {}).get('R') or job.get('lora', {}).get('r')} on {job.get('lora', {}).get('Targets') or job.get('lora', {}).get('targets')}.")
w(f"- Accuracy: {score} (" + ("the label with the highest log-likelihood" if score == "rank" else "exact match of the greedy answer") + ").")
w(f"- Machine: {os.cpu_count()} cores ({cpu}), {platform.system()}; load average at the end {', '.join(f'{x:.1f}' for x in load) if load else 'unknown'} (the machine is shared).")
w("- Wall time: " + ", ".join(f"{k} {float(v) / 60:.1f} min" for k, v in times.items()) + ".\n")

w("## Comparison (mean ± std over seeds, percent)\n")
w("| method | AA | BWT | forgetting | final accuracy per task (" + ", ".join(tasks) + ") |")
w("|---|---|---|---|---|")
for s in res["summary"]:
    if s["score"] != score:
        continue
    mm = s.get("mean_matrix", {}).get("r") or []
    last = " / ".join(pct(v) for v in mm[-1]) if mm else "–"
    w(f"| {s['method']} | {stat(s['aa'])} | {stat(s.get('bwt'))} | {stat(s.get('forgetting'))} | {last} |")
w("")
base = None
for s in res["summary"]:
    if s["score"] == score:
        base = s.get("mean_matrix", {}).get("base")
        break
data_dir = os.environ.get("DATA_DIR", "")
task_dirs = os.environ.get("TASK_DIRS", "").split()
chances = {}
for td in task_dirs:
    name = td.split("/")[-1]
    chances[name] = chance(os.path.join(data_dir, td))
w("Starting model (after pre-training, before any task): " + ", ".join(f"{t} {pct(v)}" for t, v in zip(tasks, base or [])) + ".")
w("Chance (one over the number of labels): " + ", ".join(f"{t} {pct(chances.get(t))}" for t in tasks) + ".\n")

w("## Per seed\n")
w("| method | seed | AA | BWT | forgetting | accuracy matrix R[i][j] (row: after task i; column: task j) |")
w("|---|---|---|---|---|---|")
for r in res["runs"]:
    m = r["metrics"].get(score, {})
    mat = r["matrices"].get(score, {}).get("r") or []
    rows = "; ".join("[" + " ".join(pct(v) for v in row) + "]" for row in mat)
    w(f"| {r['method']} | {r['seed']} | {pct(m.get('aa'))} | {pct(m.get('bwt'))} | {pct(m.get('forgetting'))} | {rows} |")
w("")
w("## Training per task (mean over seeds)\n")
w("| method | task | steps | first loss | last loss | seconds |")
w("|---|---|---|---|---|---|")
agg = {}
for r in res["runs"]:
    for t in r["tasks"]:
        agg.setdefault((r["method"], t["task"]), []).append(t)
for (method, task), ts in agg.items():
    n = len(ts)
    w(f"| {method} | {task} | {sum(t['steps'] for t in ts) / n:.0f} | {sum(t['first_loss'] for t in ts) / n:.3f} | "
      f"{sum(t['last_loss'] for t in ts) / n:.3f} | {sum(t['train_seconds'] for t in ts) / n:.1f} |")
w("")
w(f"_Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}._\n")
# Text after the marker (the other settings, notes) survives a rerun.
kept = ""
if os.path.exists(out_path):
    old = open(out_path).read()
    if MARKER in old:
        kept = old[old.index(MARKER):]
with open(out_path, "w") as f:
    f.write("\n".join(out) + ("\n" + kept if kept else ""))
print(f"wrote {out_path}", file=sys.stderr)
