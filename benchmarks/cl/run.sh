#!/usr/bin/env bash
# A reduced continual-learning benchmark: one task order of the CL benchmark
# (../shared/data/cl_benchmark), a tiny Llama-style model, several seeds and
# the four methods full, full+migu, lora, lora+migu, with `migu continual`;
# writes benchmarks/cl/RESULTS.md with the exact commands and the numbers.
#
# The model starts from what this machine can afford: `migu init` (tiny
# preset) with a tokenizer trained on the order's training sentences, then
# one epoch of next-token pre-training on those sentences without labels,
# so that the task runs start from a model that has read the domains.
#
# Every setting is an environment variable (defaults below), e.g.
#   SEEDS=1 METHODS=full,full+migu benchmarks/cl/run.sh
# ORDER=generated runs the demo's generated tasks (wordsent → compare →
# length) instead, which a tiny model does learn; the demo's settings are
#   ORDER=generated TRAIN_SAMPLES=240 TEST_SAMPLES=100 EPOCHS=5 benchmarks/cl/run.sh
# A run interrupted during `migu continual` continues with RESUME=1.
set -euo pipefail
# MIGU_ROOT lets a copy of this script run (bash reads a script while it runs,
# so editing the checkout's copy during a long run would break that run).
cd "${MIGU_ROOT:-$(dirname "$0")/../..}"

DATA_DIR=${MIGU_CL_DATA:-$(cd .. && pwd)/shared/data/cl_benchmark}
ORDER=${ORDER:-order1}
SEEDS=${SEEDS:-1,2,3}
METHODS=${METHODS:-full,full+migu,lora,lora+migu}
TRAIN_SAMPLES=${TRAIN_SAMPLES:-500}
TEST_SAMPLES=${TEST_SAMPLES:-40}
EPOCHS=${EPOCHS:-1}
LR=${LR:-3e-3}
BATCH=${BATCH:-8}
MAX_LEN=${MAX_LEN:-128}
PRETRAIN_ROWS=${PRETRAIN_ROWS:-3000}
THREADS=${THREADS:-2}
OUT=${OUT:-runs/bench-cl}
RESULTS=${RESULTS:-benchmarks/cl/RESULTS.md}
RESUME=${RESUME:-0}
MIGU=${MIGU:-bin/migu}

SEQUENCE=$ORDER
case $ORDER in
generated)
	# The demo's generated tasks, written under $OUT (see `migu data tasks`).
	DATA_DIR=$OUT/tasks
	SEQUENCE=$OUT/generated.yaml
	TASK_DIRS="SC/wordsent SYN/compare SYN/length"
	;;
order1) TASK_DIRS="TC/dbpedia SC/amazon TC/yahoo TC/agnews" ;;
order2) TASK_DIRS="TC/dbpedia SC/amazon TC/agnews TC/yahoo" ;;
order3) TASK_DIRS="TC/yahoo SC/amazon TC/agnews TC/dbpedia" ;;
*)
	echo "run.sh: ORDER must be order1, order2, order3 or generated (the long orders take far longer than this benchmark's budget)" >&2
	exit 2
	;;
esac
if [ "$ORDER" != generated ] && [ ! -d "$DATA_DIR" ]; then
	echo "run.sh: the CL benchmark data is not at $DATA_DIR; set MIGU_CL_DATA" >&2
	exit 2
fi

if [ "$MIGU" = bin/migu ]; then go build -o bin/migu ./cmd/migu; fi
mkdir -p "$OUT"
commands="$OUT/commands.sh"
times="$OUT/times.txt"
run() { # run and record a command
	printf '%s\n' "$*" >>"$commands"
	"$@"
}
elapsed() { echo $(($(date +%s) - $1)); }

start=$(date +%s)
if [ "$RESUME" != 1 ]; then
	rm -rf "$OUT/text" "$OUT/hf" "$OUT/model" "$OUT/pretrain" "$OUT/continual"
	: >"$commands"
	: >"$times"
	if [ "$ORDER" = generated ]; then
		run "$MIGU" data tasks --out "$DATA_DIR" --tasks wordsent,compare,length --train "$TRAIN_SAMPLES" --test "$TEST_SAMPLES" --seed 0
		{
			echo "name: generated"
			echo "tasks:"
			for t in $TASK_DIRS; do
				echo "  - {name: ${t##*/}, train: $DATA_DIR/$t/train.json, test: $DATA_DIR/$t/test.json}"
			done
		} >"$SEQUENCE"
	fi
	run env PRETRAIN_ROWS="$PRETRAIN_ROWS" python3 benchmarks/cl/corpus.py "$DATA_DIR" "$OUT/text" $TASK_DIRS
	run "$MIGU" init --arch llama --preset tiny --seed 0 --corpus "$OUT/text/tokenizer.txt" --out "$OUT/hf"
	run "$MIGU" export --from "$OUT/hf" --out "$OUT/model"
	run "$MIGU" train --model "$OUT/model" --data "$OUT/text/pretrain.jsonl" --out "$OUT/pretrain" \
		--epochs 1 --batch-size 16 --lr 3e-3 --schedule cosine --warmup 10 --max-len 128 --threads "$THREADS"
	echo "pre-training=$(elapsed "$start")" >>"$times"
fi
cl_start=$(date +%s)
resume=()
if [ "$RESUME" = 1 ]; then resume=(--resume); fi
run "$MIGU" continual --model "$OUT/pretrain/model" --sequence "$SEQUENCE" --data-dir "$DATA_DIR" \
	--methods "$METHODS" --seeds "$SEEDS" --train-samples "$TRAIN_SAMPLES" --test-samples "$TEST_SAMPLES" \
	--epochs "$EPOCHS" --batch-size "$BATCH" --lr "$LR" --lora-targets all --max-len "$MAX_LEN" \
	--score rank --threads "$THREADS" --out "$OUT/continual" "${resume[@]}"
echo "continual=$(elapsed "$cl_start")" >>"$times"
echo "total=$(elapsed "$start")" >>"$times"
# The commands with this checkout's paths made relative.
sed -i -e "s#^$MIGU #bin/migu #" "$commands"
if [ "$ORDER" != generated ]; then sed -i -e "s#$DATA_DIR#\$MIGU_CL_DATA#g" "$commands"; fi
DATA_DIR="$DATA_DIR" TASK_DIRS="$TASK_DIRS" python3 benchmarks/cl/results.py "$OUT/continual/results.json" "$commands" "$times" "$RESULTS"
