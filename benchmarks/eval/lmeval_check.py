"""Runs lm-evaluation-harness itself as the reference for `migu eval`.

lm-eval (installed in a throwaway virtual environment by lmeval_check.sh,
never in the project's .venv) scores a Hugging Face checkpoint on the local
task files with its own hellaswag, arc_challenge and winogrande task
definitions (their YAML is included unchanged; only the dataset location is
overridden), and `migu eval --log-samples` scores the ONNX export of the same
checkpoint. The script compares every request's log-likelihood and every
item's acc and acc_norm, and appends a Markdown section to --append.

HellaSwag rows in ../shared/data/eval carry `ctx` but not `ctx_a`/`ctx_b`,
which lm-eval's process_docs reads; they are given ctx_a = ctx and
ctx_b = "", which yields the same query after lm-eval's preprocess (its
strip removes the extra trailing space).
"""

import argparse
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
import time

import lm_eval
import lm_eval.tasks
from lm_eval.tasks import TaskManager

FILES = {
    "hellaswag": "hellaswag_validation.jsonl",
    "arc_challenge": "arc_challenge_test.jsonl",
    "winogrande": "winogrande_xl_validation.jsonl",
}


def task_yamls(tmp, data):
    """Local-file variants of lm-eval's own task configs."""
    tasks_dir = os.path.dirname(lm_eval.tasks.__file__)
    hs = os.path.join(tmp, "hellaswag.jsonl")
    with open(os.path.join(data, FILES["hellaswag"])) as src, open(hs, "w") as dst:
        for line in src:
            if line.strip():
                row = json.loads(line)
                if "ctx_a" not in row:
                    row["ctx_a"], row["ctx_b"] = row["ctx"], ""
                dst.write(json.dumps(row) + "\n")
    configs = {
        "hellaswag": (os.path.join(tasks_dir, "hellaswag", "hellaswag.yaml"), "validation", hs),
        "arc_challenge": (os.path.join(tasks_dir, "arc", "arc_challenge.yaml"), "test", os.path.join(data, FILES["arc_challenge"])),
        "winogrande": (os.path.join(tasks_dir, "winogrande", "default.yaml"), "validation", os.path.join(data, FILES["winogrande"])),
    }
    for name, (include, split, path) in configs.items():
        with open(os.path.join(tmp, f"{name}_local.yaml"), "w") as f:
            f.write(f"include: {include}\n")
            f.write(f"task: {name}_local\n")
            f.write("dataset_path: json\ndataset_name: null\n")
            f.write(f"dataset_kwargs:\n  data_files:\n    {split}: {path}\n")
            f.write("training_split: null\n")
            f.write(f"validation_split: {'validation' if split == 'validation' else 'null'}\n")
            f.write(f"test_split: {'test' if split == 'test' else 'null'}\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hf", required=True, help="Hugging Face checkpoint folder")
    ap.add_argument("--model", required=True, help="its migu model folder")
    ap.add_argument("--migu", required=True, help="migu binary")
    ap.add_argument("--data", required=True, help="folder with the task files")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--append", help="Markdown file to append the results to")
    ap.add_argument("--label", default="", help="model label for the report")
    ap.add_argument("--command", default="", help="command line to quote in the report")
    args = ap.parse_args()
    names = list(FILES)

    with tempfile.TemporaryDirectory() as tmp:
        task_yamls(tmp, args.data)
        start = time.time()
        out = lm_eval.simple_evaluate(
            model="hf",
            model_args=f"pretrained={args.hf},dtype=float32",
            tasks=[n + "_local" for n in names],
            num_fewshot=0,
            batch_size=args.batch,
            limit=args.limit,
            device="cpu",
            log_samples=True,
            task_manager=TaskManager(include_path=tmp),
        )
        lm_sec = time.time() - start
        samples_path = os.path.join(tmp, "migu_samples.jsonl")
        start = time.time()
        subprocess.run(
            [args.migu, "eval", "--model", args.model, "--tasks", ",".join(names), "--data-dir", args.data,
             "--limit", str(args.limit), "--batch-size", str(args.batch), "--log-samples", samples_path, "--json"],
            check=True, stdout=subprocess.DEVNULL,
        )
        migu_sec = time.time() - start
        migu = {}
        with open(samples_path) as f:
            for line in f:
                row = json.loads(line)
                migu.setdefault(row["task"], []).append(row)

    rows = []
    ok, same_scores = True, True
    for name in names:
        ref = sorted(out["samples"][name + "_local"], key=lambda s: s["doc_id"])
        got = migu[name]
        max_diff, acc_mismatch, norm_mismatch, greedy_mismatch = 0.0, 0, 0, 0
        for s, g in zip(ref, got):
            lls = [r[0][0] for r in s["resps"]]
            greedy = [bool(r[0][1]) for r in s["resps"]]
            max_diff = max([max_diff] + [abs(a - b) for a, b in zip(lls, g["logliks"])])
            greedy_mismatch += greedy != g["greedy"]
            acc_mismatch += s["acc"] != g["acc"]
            if "acc_norm" in s:
                norm_mismatch += s["acc_norm"] != g["acc_norm"]
        res = out["results"][name + "_local"]
        same = len(ref) == len(got) and acc_mismatch == 0 and norm_mismatch == 0
        same_scores = same_scores and same
        ok = ok and same and max_diff <= 1e-4
        rows.append(
            f"| {name} | {len(ref)} | {max_diff:.1e} | {res.get('acc,none', float('nan')):.4f} | "
            f"{sum(g['acc'] for g in got) / len(got):.4f} | {res.get('acc_norm,none', float('nan')):.4f} | "
            f"{(sum(g.get('acc_norm', 0) for g in got) / len(got)) if 'acc_norm' in got[0] else float('nan'):.4f} | "
            f"{acc_mismatch}/{norm_mismatch}/{greedy_mismatch} |"
        )
    if ok:
        verdict = "every log-likelihood within 1e-4 and every item's acc and acc_norm identical."
    elif same_scores:
        verdict = "every item's acc and acc_norm identical, but some log-likelihood differs by more than 1e-4 (see the table)."
    else:
        verdict = "MISMATCH: some item scores differently (see the table)."
    versions = f"lm-eval {importlib.metadata.version('lm_eval')}"
    try:
        import torch, transformers

        versions += f", torch {torch.__version__}, transformers {transformers.__version__}"
    except ImportError:
        pass
    md = [
        f"## lm-evaluation-harness as the reference{(' — ' + args.label) if args.label else ''}",
        "",
        *([f"Command: `{args.command}`", ""] if args.command else []),
        f"lm-eval's own task definitions on the local files (first {args.limit} rows per task, zero-shot, batch {args.batch}; {versions}; "
        f"{lm_sec:.0f} s) against `migu eval --log-samples` on the ONNX export ({migu_sec:.0f} s, including start-up).",
        "",
        "| task | items | max \\|Δ log-lik\\| | lm-eval acc | migu acc | lm-eval acc_norm | migu acc_norm | items differing (acc/acc_norm/greedy) |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Verdict: " + verdict,
        "",
    ]
    text = "\n".join(md)
    print(text)
    if args.append:
        with open(args.append, "a") as f:
            f.write(text + "\n")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
