"""Writes the text the CL benchmark's model starts from, out of the train
files of the tasks given: the tokenizer corpus (sentences, labels and the
benchmark's prompt lines, one per line) and the pre-training data (the
sentences as JSON-lines text records, without labels). Standard library only.

usage: corpus.py DATA_DIR OUT_DIR TYPE/DATASET...
"""
import json
import os
import random
import sys

data_dir, out_dir, tasks = sys.argv[1], sys.argv[2], sys.argv[3:]
os.makedirs(out_dir, exist_ok=True)
rng = random.Random(0)
sentences, prompt_lines = [], []
for task in tasks:
    path = os.path.join(data_dir, task, "train.json")
    if not os.path.exists(path):
        print(f"corpus: {path} absent, skipped", file=sys.stderr)
        continue
    rows = json.load(open(path, encoding="utf-8"))
    labels = json.load(open(os.path.join(data_dir, task, "labels.json"), encoding="utf-8"))
    kind, name = task.split("/")
    sentences += [r["sentence"] for r in rows]
    prompt_lines += [f"Task:{kind}", f"Dataset:{name}", "Option: " + ", ".join(labels) + " ", "Answer:"] + labels
rng.shuffle(sentences)
with open(os.path.join(out_dir, "tokenizer.txt"), "w", encoding="utf-8") as f:
    for s in sentences[:20000] + prompt_lines * 50:
        f.write(" ".join(s.split()) + "\n")
with open(os.path.join(out_dir, "pretrain.jsonl"), "w", encoding="utf-8") as f:
    for s in sentences[: int(os.environ.get("PRETRAIN_ROWS", "4000"))]:
        f.write(json.dumps({"text": s}) + "\n")
print(f"corpus: {len(sentences)} sentences from {len(tasks)} task(s)", file=sys.stderr)
