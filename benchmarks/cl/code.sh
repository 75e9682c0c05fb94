#!/usr/bin/env bash
# The MIGU paper's continual instruction tuning on code, at this machine's
# scale: a Llama-style model that has learned general English text is then
# instruction-tuned on code, with and without MIGU, and we measure what it
# forgot of the general tasks (HellaSwag, ARC-Challenge, Winogrande as
# lm-evaluation-harness scores them, and the perplexity of held-out general
# text) and what it learned (HumanEval pass@1, and the perplexity of held-out
# code).
#
# Magicoder-Evol-Instruct cannot be downloaded here, so the code instructions
# come from the Python standard library: `migu data code-instructions` pairs
# each documented function's signature and docstring (the prompt, the shape of
# a HumanEval problem) with its body (the completion).
#
# The two stages are two `migu train` runs, the second starting from the
# first's model: `migu continual` trains classification tasks (sentence →
# label), while these stages are text and instruction data.
#
# Settings are environment variables (defaults below). Writes
# $OUT/results.md (and appends nothing to the repository); the numbers in
# benchmarks/cl/RESULTS.md were copied from such a run.
set -euo pipefail
cd "${MIGU_ROOT:-$(dirname "$0")/../..}"

SHARED=${SHARED:-$(cd .. && pwd)/shared/data}
OUT=${OUT:-runs/bench-code}
PRESET=${PRESET:-tiny}
CODE_ROWS=${CODE_ROWS:-1200}  # code instructions (the last 200 are held out)
TEXT_ROWS=${TEXT_ROWS:-4000}  # general sentences (the last 400 are held out)
EPOCHS=${EPOCHS:-1}
LR=${LR:-3e-3}
THREADS=${THREADS:-2}
LIMIT=${LIMIT:-300}           # rows of each multiple-choice task
HUMANEVAL_LIMIT=${HUMANEVAL_LIMIT:-164}
MIGU=${MIGU:-bin/migu}
if [ "$MIGU" = bin/migu ]; then go build -o bin/migu ./cmd/migu; fi
mkdir -p "$OUT"
log="$OUT/commands.sh"
: >"$log"
run() {
	printf '%s\n' "$*" >>"$log"
	"$@"
}

# 1. Data: code instructions from the standard library; general text from the
#    CL benchmark's sentences (news, reviews, encyclopedia), without labels.
STDLIB=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
run "$MIGU" data code-instructions --from "$STDLIB" --out "$OUT/code-all.jsonl" --format completion --limit "$CODE_ROWS"
python3 - "$OUT" "$SHARED/cl_benchmark" "$TEXT_ROWS" <<'EOF'
import json, os, random, sys
out, cl, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
code = [json.loads(l) for l in open(os.path.join(out, "code-all.jsonl"))]
random.Random(0).shuffle(code)
held = max(1, len(code) // 6)
with open(os.path.join(out, "code-train.jsonl"), "w") as f:
    for r in code[held:]:
        f.write(json.dumps({"prompt": r["prompt"], "completion": r["completion"]}) + "\n")
with open(os.path.join(out, "code-heldout.jsonl"), "w") as f:
    for r in code[:held]:
        f.write(json.dumps({"text": r["prompt"] + r["completion"]}) + "\n")
sents = []
for task in ["TC/agnews", "SC/yelp", "TC/dbpedia", "SC/amazon"]:
    p = os.path.join(cl, task, "train.json")
    if os.path.exists(p):
        sents += [" ".join(r["sentence"].split()) for r in json.load(open(p))]
random.Random(1).shuffle(sents)
sents = sents[:n]
held = max(1, len(sents) // 10)
for name, rows in [("text-train.jsonl", sents[held:]), ("text-heldout.jsonl", sents[:held])]:
    with open(os.path.join(out, name), "w") as f:
        for s in rows:
            f.write(json.dumps({"text": s}) + "\n")
with open(os.path.join(out, "tokenizer.txt"), "w") as f:
    for s in sents:
        f.write(s + "\n")
    for r in code:
        f.write(r["prompt"] + r["completion"] + "\n")
print(f"code: {len(code) - len(code) // 6} train, {len(code) // 6} held out; text: {len(sents) - held} train, {held} held out", file=sys.stderr)
EOF

# 2. The model: tokenizer over text and code, random weights, then stage 1:
#    general text (next-token loss on every token).
rm -rf "$OUT/hf" "$OUT/model" "$OUT/general" "$OUT/code-full" "$OUT/code-full-migu"
run "$MIGU" init --arch llama --preset "$PRESET" --seed 0 --corpus "$OUT/tokenizer.txt" --out "$OUT/hf"
run "$MIGU" export --from "$OUT/hf" --out "$OUT/model"
run "$MIGU" train --model "$OUT/model" --data "$OUT/text-train.jsonl" --out "$OUT/general" --epochs 2 \
	--batch-size 16 --lr "$LR" --schedule cosine --warmup 10 --max-len 128 --threads "$THREADS"

# 3. Stage 2: code instructions (loss on the completion), full vs full+MIGU.
#    MIGU masks from the start: this is the second task of the sequence.
run "$MIGU" train --model "$OUT/general/model" --data "$OUT/code-train.jsonl" --out "$OUT/code-full" \
	--epochs "$EPOCHS" --batch-size 8 --lr "$LR" --max-len 256 --threads "$THREADS"
run "$MIGU" train --model "$OUT/general/model" --data "$OUT/code-train.jsonl" --out "$OUT/code-full-migu" \
	--epochs "$EPOCHS" --batch-size 8 --lr "$LR" --max-len 256 --threads "$THREADS" --migu 0.7

# 4. Measurements of each model.
for m in general code-full code-full-migu; do
	dir="$OUT/$m/model"
	run "$MIGU" eval --model "$dir" --tasks hellaswag,arc_challenge,winogrande --data-dir "$SHARED/eval" --limit "$LIMIT" --threads "$THREADS" --json >"$OUT/$m-suite.json"
	run "$MIGU" eval --model "$dir" --task perplexity --data "$OUT/text-heldout.jsonl" --threads "$THREADS" --json >"$OUT/$m-text-ppl.json"
	run "$MIGU" eval --model "$dir" --task perplexity --data "$OUT/code-heldout.jsonl" --threads "$THREADS" --json >"$OUT/$m-code-ppl.json"
	run "$MIGU" eval --model "$dir" --task humaneval --data "$SHARED/eval/HumanEval.jsonl.gz" --limit "$HUMANEVAL_LIMIT" --max-new-tokens 128 --threads "$THREADS" --json >"$OUT/$m-humaneval.json"
done

# 5. One table.
python3 - "$OUT" <<'EOF'
import json, os, sys
out = sys.argv[1]
def scores(path):
    d = json.load(open(path))
    rows = d.get("scores") or d.get("results") or []
    return {(r["task"], r["metric"]): r["value"] for r in rows}
lines = ["| model | HellaSwag acc_norm | ARC-C acc_norm | Winogrande acc | suite avg | general-text ppl | code ppl | HumanEval pass@1 |", "|---|---|---|---|---|---|---|---|"]
for m in ["general", "code-full", "code-full-migu"]:
    s = scores(os.path.join(out, m + "-suite.json"))
    t = scores(os.path.join(out, m + "-text-ppl.json"))
    c = scores(os.path.join(out, m + "-code-ppl.json"))
    h = scores(os.path.join(out, m + "-humaneval.json"))
    def get(d, task, metric):
        for (tk, me), v in d.items():
            if tk.startswith(task) and me == metric:
                return v
        return float("nan")
    lines.append(f"| {m} | {100*get(s,'hellaswag','acc_norm'):.1f} | {100*get(s,'arc_challenge','acc_norm'):.1f} | {100*get(s,'winogrande','acc'):.1f} | "
                 f"{100*get(s,'suite','average'):.1f} | {get(t,'perplexity','token_perplexity'):.1f} | {get(c,'perplexity','token_perplexity'):.1f} | {100*get(h,'humaneval','pass@1'):.1f} |")
open(os.path.join(out, "results.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
