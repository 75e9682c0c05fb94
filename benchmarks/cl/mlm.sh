#!/usr/bin/env bash
# The MIGU paper's continual pre-training setting, at this machine's scale: a
# RoBERTa-style model is pre-trained with masked-language modelling on one
# text domain after another (the sentences of CL-benchmark tasks, without
# their labels: news, reviews, encyclopedia), with and without MIGU, and after
# every domain we measure its masked-LM loss on held-out text of every
# domain: a matrix like the accuracy matrix of `migu continual`, where a loss
# that rises on an earlier domain is forgetting.
#
# The paper then fine-tunes a classification head per domain and reports
# end-task accuracy. A model folder trained with MLM has no classification
# head (the exporter builds heads from Hugging Face checkpoints only), so the
# end task is scored with the MLM head itself: after every domain, `migu eval
# --task cl --cl-mode rank` on the first $TEST rows of every domain's test
# file picks, for each row, the label with the highest pseudo-log-likelihood
# after the CL prompt (each label token masked in turn; Salazar et al. 2020).
# This is zero-shot accuracy (no labelled training), written to
# $OUT/accuracy.tsv and the second table of results.md.
#
# The held-out loss is measured with `migu train --lr 0` (every weight stays
# as it is; the loss of each batch is logged), with one fixed masking seed so
# that every model sees the same masked positions.
#
# Settings are environment variables (defaults below); writes $OUT/results.md.
set -euo pipefail
cd "${MIGU_ROOT:-$(dirname "$0")/../..}"

CL=${MIGU_CL_DATA:-$(cd .. && pwd)/shared/data/cl_benchmark}
OUT=${OUT:-runs/bench-mlm}
DOMAINS=${DOMAINS:-TC/agnews SC/yelp TC/dbpedia}
ROWS=${ROWS:-1500}     # training sentences per domain
HELD=${HELD:-200}      # held-out sentences per domain
TEST=${TEST:-200}      # test rows per domain for end-task rank accuracy (0: skip)
LR=${LR:-1e-3}
THREADS=${THREADS:-2}
MIGU=${MIGU:-bin/migu}
if [ "$MIGU" = bin/migu ]; then go build -o bin/migu ./cmd/migu; fi
mkdir -p "$OUT"
log="$OUT/commands.sh"
: >"$log"
run() {
	printf '%s\n' "$*" >>"$log"
	"$@"
}

python3 - "$CL" "$OUT" "$ROWS" "$HELD" $DOMAINS <<'EOF'
import json, os, random, sys
cl, out, rows, held, domains = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5:]
corpus = []
for d in domains:
    name = d.split("/")[-1]
    sents = [" ".join(r["sentence"].split()) for r in json.load(open(os.path.join(cl, d, "train.json")))]
    random.Random(0).shuffle(sents)
    for fname, part in [(name + "-train.jsonl", sents[held:held + rows]), (name + "-heldout.jsonl", sents[:held])]:
        with open(os.path.join(out, fname), "w") as f:
            for s in part:
                f.write(json.dumps({"text": s}) + "\n")
    corpus += sents[:held + rows]
with open(os.path.join(out, "tokenizer.txt"), "w") as f:
    f.write("\n".join(corpus) + "\n")
EOF
names=()
for d in $DOMAINS; do names+=("${d##*/}"); done

rm -rf "$OUT/hf" "$OUT/model" "$OUT/full" "$OUT/full+migu" "$OUT/eval"
run "$MIGU" init --arch roberta --preset tiny --seed 0 --corpus "$OUT/tokenizer.txt" --out "$OUT/hf"
run "$MIGU" export --from "$OUT/hf" --out "$OUT/model"

# mlm_loss MODEL DOMAIN TAG: mean masked-LM loss of MODEL on DOMAIN's held-out text.
mlm_loss() {
	local dir="$OUT/eval/$3-$2"
	rm -rf "$dir"
	"$MIGU" train --model "$1" --data "$OUT/$2-heldout.jsonl" --out "$dir" --lr 0 --weight-decay 0 \
		--batch-size 16 --seed 7 --max-len 128 --threads "$THREADS" >/dev/null
	python3 -c 'import json,sys; L=[json.loads(l)["loss"] for l in open(sys.argv[1])]; print(f"{sum(L)/len(L):.4f}")' "$dir/metrics.jsonl"
}

# cl_acc MODEL DOMAIN: pseudo-log-likelihood rank accuracy of MODEL on the
# first $TEST rows of DOMAIN's CL test file.
cl_acc() {
	local d
	for d in $DOMAINS; do [ "${d##*/}" = "$2" ] && break; done
	"$MIGU" eval --model "$1" --task cl --cl-mode rank --data "$CL/$d/test.json" --limit "$TEST" \
		--threads "$THREADS" --json | python3 -c 'import json,sys; print("%.4f" % [s["value"] for s in json.load(sys.stdin)["scores"] if s["metric"] == "acc_rank"][0])'
}

results="$OUT/losses.tsv"
accuracy="$OUT/accuracy.tsv"
printf 'method\tafter\t%s\n' "$(IFS=$'\t'; echo "${names[*]}")" | tee "$results" >"$accuracy"
row="start"
for n in "${names[@]}"; do row+=$'\t'$(mlm_loss "$OUT/model" "$n" start); done
printf 'both\t%s\n' "$row" >>"$results"
if [ "$TEST" -gt 0 ]; then
	row="start"
	for n in "${names[@]}"; do row+=$'\t'$(cl_acc "$OUT/model" "$n"); done
	printf 'both\t%s\n' "$row" >>"$accuracy"
fi
for method in full full+migu; do
	model="$OUT/model"
	for i in "${!names[@]}"; do
		n=${names[$i]}
		flags=()
		if [ "$method" = full+migu ]; then
			flags=(--migu 0.7)
			if [ "$i" = 0 ]; then flags+=(--migu-unmasked); fi # the first domain is trained without a mask
		fi
		run "$MIGU" train --model "$model" --data "$OUT/$n-train.jsonl" --out "$OUT/$method/$((i + 1))-$n" \
			--epochs 1 --batch-size 16 --lr "$LR" --max-len 128 --seed 1 --threads "$THREADS" "${flags[@]}"
		model="$OUT/$method/$((i + 1))-$n/model"
		row="$n"
		for m in "${names[@]}"; do row+=$'\t'$(mlm_loss "$model" "$m" "$method-$((i + 1))"); done
		printf '%s\t%s\n' "$method" "$row" >>"$results"
		if [ "$TEST" -gt 0 ]; then
			row="$n"
			for m in "${names[@]}"; do row+=$'\t'$(cl_acc "$model" "$m"); done
			printf '%s\t%s\n' "$method" "$row" >>"$accuracy"
		fi
	done
done

python3 - "$results" "$OUT/results.md" "$accuracy" <<'EOF'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
acc = [l.rstrip("\n").split("\t") for l in open(sys.argv[3])]
head, body = rows[0], rows[1:]
names = head[2:]
out = ["| method | after | " + " | ".join(f"{n} loss" for n in names) + " |", "|---|---|" + "---|" * len(names)]
for r in body:
    out.append("| " + " | ".join(r) + " |")
start = [float(x) for x in body[0][2:]]
out.append("")
for method in ["full", "full+migu"]:
    mat = [[float(x) for x in r[2:]] for r in body if r[0] == method]
    T = len(mat)
    # Forgetting: how much each earlier domain's loss rose from just after it
    # was trained to the end (positive = forgotten); learning: each domain's
    # loss drop from the start to just after it was trained.
    forget = sum(mat[-1][j] - mat[j][j] for j in range(T - 1)) / max(T - 1, 1)
    learn = sum(start[j] - mat[j][j] for j in range(T)) / T
    final = sum(mat[-1]) / T
    out.append(f"- {method}: mean final loss {final:.3f}; learning (start − just after) {learn:.3f}; forgetting (end − just after, earlier domains) {forget:+.3f}")
if len(acc) > 1:
    # End-task accuracy (pseudo-log-likelihood rank, zero-shot) per domain,
    # with the same learning/forgetting summary, signs flipped (higher is better).
    out += ["", "| method | after | " + " | ".join(f"{n} acc" for n in names) + " |", "|---|---|" + "---|" * len(names)]
    for r in acc[1:]:
        out.append("| " + " | ".join(r) + " |")
    out.append("")
    start = [float(x) for x in acc[1][2:]]
    for method in ["full", "full+migu"]:
        mat = [[float(x) for x in r[2:]] for r in acc[1:] if r[0] == method]
        T = len(mat)
        forget = sum(mat[j][j] - mat[-1][j] for j in range(T - 1)) / max(T - 1, 1)
        learn = sum(mat[j][j] - start[j] for j in range(T)) / T
        final = sum(mat[-1]) / T
        out.append(f"- {method}: mean final accuracy {final:.3f}; gain (just after − start) {learn:+.3f}; forgetting (just after − end, earlier domains) {forget:+.3f}")
open(sys.argv[2], "w").write("\n".join(out) + "\n")
print("\n".join(out))
EOF
